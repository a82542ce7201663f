//! Every merge method against an independent f64 reference written here, on small random tensors,
//! plus the edge cases: all-zero task vectors, density 0 and 1, equal magnitudes, sign ties, one
//! expert, and determinism of the random methods.

use rand::Rng as _;
use rand_distr::StandardNormal;
use std::collections::BTreeMap;

use mergesearch::checkpoint::{BlockPosition, Dtype};
use mergesearch::merge::engine::bits::{StreamKey, uniform};
use mergesearch::merge::engine::{HostRows, HostStore, Store};
use mergesearch::merge::{GroupParams, MergePlan, Method, ParamValue, TensorMeta, tensor_job};
use mergesearch::rng::Rng;

const NAME: &str = "model.layers.1.mlp.up_proj.weight";

/// A merge problem: base and experts of one tensor.
struct Case {
    shape: Vec<usize>,
    base: Vec<f32>,
    experts: Vec<Vec<f32>>,
}

impl Case {
    fn random(shape: &[usize], experts: usize, seed: u64) -> Case {
        let n: usize = shape.iter().product();
        let mut rng = Rng::new(seed);
        let base: Vec<f32> = (0..n)
            .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
            .collect();
        let experts = (0..experts)
            .map(|_| {
                base.iter()
                    .map(|b| b + 0.1 * rng.sample::<f64, _>(StandardNormal) as f32)
                    .collect()
            })
            .collect();
        Case {
            shape: shape.to_vec(),
            base,
            experts,
        }
    }

    fn n(&self) -> usize {
        self.base.len()
    }

    fn taus(&self) -> Vec<Vec<f64>> {
        self.experts
            .iter()
            .map(|e| {
                e.iter()
                    .zip(&self.base)
                    .map(|(x, b)| f64::from(x - b))
                    .collect()
            })
            .collect()
    }

    fn base64(&self) -> Vec<f64> {
        self.base.iter().map(|&b| f64::from(b)).collect()
    }

    /// The tensor's description, as an `f32` tensor named [`NAME`].
    fn meta(&self, block: Option<BlockPosition>) -> TensorMeta {
        TensorMeta {
            name: NAME.to_string(),
            shape: self.shape.clone(),
            block,
            dtype: Dtype::F32,
            experts: self.experts.len(),
        }
    }

    /// The base, then each expert, one after the other (as a store holds them).
    fn rows(&self) -> Vec<f32> {
        let mut rows = self.base.clone();
        self.experts.iter().for_each(|e| rows.extend_from_slice(e));
        rows
    }

    fn merge(
        &self,
        method: Method,
        p: &GroupParams,
        seed: u64,
        block: Option<BlockPosition>,
    ) -> Vec<f32> {
        let meta = self.meta(block);
        let mut store = HostStore::new();
        store.push(meta.clone(), HostRows::from_f32(self.rows()));
        let job = tensor_job(method, &meta, p, seed, || store.slerp_sums(0));
        f32_values(store.run(0, &job, Dtype::F32))
    }
}

/// The values of merged rows asked for in `f32`.
fn f32_values(rows: HostRows) -> Vec<f32> {
    match rows {
        HostRows::F32(values) => values,
        other => panic!("asked for f32, got {:?}", other.dtype()),
    }
}

/// Resolves a plan for one group: shared parameters, then per-expert ones.
fn params(
    method: Method,
    shared: &[(&str, ParamValue)],
    experts: &[Vec<(&str, f64)>],
) -> GroupParams {
    let mut plan = MergePlan::new(method, experts.len(), 0);
    plan.shared = shared
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    plan.experts = experts
        .iter()
        .map(|e| {
            e.iter()
                .map(|(k, v)| (k.to_string(), ParamValue::Number(*v)))
                .collect::<BTreeMap<_, _>>()
        })
        .collect();
    let groups = ["g".to_string()];
    plan.resolve(&groups, &[])
        .expect("test plan is valid")
        .groups
        .remove(0)
}

fn num(v: f64) -> ParamValue {
    ParamValue::Number(v)
}

fn flag(b: bool) -> ParamValue {
    ParamValue::Flag(b)
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 2e-5 * (1.0 + w.abs());
        assert!(
            (f64::from(g) - w).abs() <= tol,
            "{what}: element {j}: got {g}, want {w}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The reference: straightforward f64 code following the methods' definitions.

/// Ascending rank of each |x|, ties broken by position (earlier first).
fn ranks(x: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].abs().partial_cmp(&x[b].abs()).unwrap());
    let mut rank = vec![0; x.len()];
    for (r, &j) in order.iter().enumerate() {
        rank[j] = r;
    }
    rank
}

fn keep_rank_range(x: &[f64], lo: usize, hi: usize) -> Vec<f64> {
    let r = ranks(x);
    x.iter()
        .zip(&r)
        .map(|(&v, &r)| if r >= lo && r < hi { v } else { 0.0 })
        .collect()
}

fn ref_magnitude(x: &[f64], density: f64) -> Vec<f64> {
    let n = x.len();
    let k = (density * n as f64) as usize;
    keep_rank_range(x, n - k, n)
}

fn ref_outliers(x: &[f64], density: f64, gamma: f64) -> Vec<f64> {
    let n = x.len();
    let target = (density * n as f64) as usize;
    let top = ((gamma * n as f64) as usize).min(n - target);
    keep_rank_range(x, n - target - top, n - top)
}

fn stream(seed: u64, expert: usize, n: usize) -> Vec<f32> {
    let key = StreamKey::new(seed, NAME, expert);
    (0..n as u32).map(|j| uniform(key, j)).collect()
}

fn ref_random(x: &[f64], density: f64, seed: u64, expert: usize) -> Vec<f64> {
    let u = stream(seed, expert, x.len());
    x.iter()
        .zip(&u)
        .map(|(&v, &u)| if u < density as f32 { v } else { 0.0 })
        .collect()
}

fn ref_della(
    x: &[f64],
    shape: &[usize],
    density: f64,
    eps: f64,
    seed: u64,
    expert: usize,
) -> Vec<f64> {
    let rows = if shape.len() >= 2 { shape[0] } else { 1 };
    let cols = x.len() / rows;
    let u = stream(seed, expert, x.len());
    let mut out = vec![0.0; x.len()];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let rk = ranks(row);
        for c in 0..cols {
            let p = (density - eps) + 2.0 * eps * rk[c] as f64 / (cols - 1).max(1) as f64;
            if f64::from(u[r * cols + c]) < p {
                out[r * cols + c] = row[c];
            }
        }
    }
    out
}

fn ref_rescale(original: &[f64], masked: Vec<f64>) -> Vec<f64> {
    let a: f64 = original.iter().map(|v| v.abs()).sum();
    let b: f64 = masked.iter().map(|v| v.abs()).sum();
    if a < 1e-7 || b < 1e-7 {
        masked
    } else {
        masked.iter().map(|v| v * a / b).collect()
    }
}

/// The generalized task arithmetic mix of already-sparsified task vectors.
fn ref_mix(
    base: &[f64],
    deltas: &[Vec<f64>],
    w: &[f64],
    consensus: bool,
    normalize: bool,
    lambda: f64,
) -> Vec<f64> {
    (0..base.len())
        .map(|j| {
            let weighted: Vec<f64> = deltas.iter().zip(w).map(|(d, w)| d[j] * w).collect();
            let (mixed, div) = if consensus {
                let elected = if weighted.iter().sum::<f64>() >= 0.0 {
                    1.0
                } else {
                    -1.0
                };
                let mut mixed = 0.0;
                let mut div = 0.0;
                for (i, &x) in weighted.iter().enumerate() {
                    if x != 0.0 && x.signum() == elected {
                        mixed += x;
                        div += w[i];
                    }
                }
                (mixed, if div == 0.0 { 1.0 } else { div })
            } else {
                let div: f64 = w.iter().sum();
                (
                    weighted.iter().sum(),
                    if div.abs() < 1e-8 { 1.0 } else { div },
                )
            };
            base[j] + lambda * if normalize { mixed / div } else { mixed }
        })
        .collect()
}

fn ref_slerp(v0: &[f64], v1: &[f64], t: f64) -> Vec<f64> {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (n0, n1) = (norm(v0), norm(v1));
    let (d0, d1) = (
        if n0 > 1e-8 { n0 } else { 1.0 },
        if n1 > 1e-8 { n1 } else { 1.0 },
    );
    let dot: f64 = v0.iter().zip(v1).map(|(a, b)| (a / d0) * (b / d1)).sum();
    let (s0, s1) = if dot.abs() > 0.9995 {
        (1.0 - t, t)
    } else {
        let a = dot.acos();
        (((1.0 - t) * a).sin() / a.sin(), (t * a).sin() / a.sin())
    };
    v0.iter().zip(v1).map(|(a, b)| s0 * a + s1 * b).collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn linear_and_task_arithmetic_match_the_reference() {
    let case = Case::random(&[5, 8], 3, 1);
    let (base, taus) = (case.base64(), case.taus());
    let w = [0.5, -0.25, 1.5];
    let ew = |w: &[f64]| w.iter().map(|&x| vec![("weight", x)]).collect::<Vec<_>>();

    for normalize in [true, false] {
        let p = params(Method::Linear, &[("normalize", flag(normalize))], &ew(&w));
        let sum: f64 = w.iter().sum();
        let want: Vec<f64> = (0..case.n())
            .map(|j| {
                let mix: f64 = (0..3).map(|i| w[i] * (base[j] + taus[i][j])).sum();
                if normalize { mix / sum } else { mix }
            })
            .collect();
        assert_close(&case.merge(Method::Linear, &p, 0, None), &want, "linear");
    }
    for normalize in [false, true] {
        let p = params(
            Method::TaskArithmetic,
            &[("lambda", num(0.7)), ("normalize", flag(normalize))],
            &ew(&w),
        );
        let want = ref_mix(&base, &taus, &w, false, normalize, 0.7);
        assert_close(
            &case.merge(Method::TaskArithmetic, &p, 0, None),
            &want,
            "task_arithmetic",
        );
    }
}

#[test]
fn ties_matches_the_reference_over_densities_and_seeds() {
    for seed in 0..5 {
        let case = Case::random(&[6, 7], 3, 100 + seed);
        let (base, taus) = (case.base64(), case.taus());
        let w = [0.6, 0.3, 1.0];
        for density in [0.0, 0.1, 0.2, 0.55, 1.0] {
            for (normalize, rescale) in [(true, false), (false, false), (true, true)] {
                let experts: Vec<_> = w
                    .iter()
                    .map(|&x| vec![("weight", x), ("density", density)])
                    .collect();
                let shared = [
                    ("lambda", num(1.3)),
                    ("normalize", flag(normalize)),
                    ("rescale", flag(rescale)),
                ];
                let p = params(Method::Ties, &shared, &experts);
                let deltas: Vec<Vec<f64>> = taus
                    .iter()
                    .map(|t| {
                        let m = ref_magnitude(t, density);
                        if rescale && density < 1.0 {
                            ref_rescale(t, m)
                        } else {
                            m
                        }
                    })
                    .collect();
                let want = ref_mix(&base, &deltas, &w, true, normalize, 1.3);
                let what = format!(
                    "ties seed {seed} density {density} normalize {normalize} rescale {rescale}"
                );
                assert_close(&case.merge(Method::Ties, &p, 0, None), &want, &what);
            }
        }
    }
}

#[test]
fn dare_matches_the_reference_and_is_deterministic() {
    let case = Case::random(&[4, 9], 2, 7);
    let (base, taus) = (case.base64(), case.taus());
    let w = [0.8, 0.4];
    for (method, consensus) in [(Method::DareLinear, false), (Method::DareTies, true)] {
        for density in [0.0, 0.3, 0.9, 1.0] {
            let experts: Vec<_> = w
                .iter()
                .map(|&x| vec![("weight", x), ("density", density)])
                .collect();
            let p = params(method, &[], &experts);
            let seed = 42;
            let deltas: Vec<Vec<f64>> = taus
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if density >= 1.0 {
                        t.clone()
                    } else {
                        ref_rescale(t, ref_random(t, density, seed, i))
                    }
                })
                .collect();
            let want = ref_mix(&base, &deltas, &w, consensus, false, 1.0);
            let got = case.merge(method, &p, seed, None);
            assert_close(&got, &want, &format!("{method} density {density}"));
            assert_eq!(
                got,
                case.merge(method, &p, seed, None),
                "{method}: same plan, same tensors"
            );
            if density > 0.0 && density < 1.0 {
                assert_ne!(
                    got,
                    case.merge(method, &p, seed + 1, None),
                    "{method}: the seed changes the masks"
                );
            }
        }
    }
}

#[test]
fn dare_keeps_about_density_of_the_entries() {
    // A stochastic property, checked over seeds: the kept fraction is within 3 points of density.
    let case = Case::random(&[100, 100], 1, 3);
    let mut close = 0;
    for seed in 0..20 {
        let p = params(
            Method::DareLinear,
            &[("rescale", flag(false))],
            &[vec![("weight", 1.0), ("density", 0.3)]],
        );
        let merged = case.merge(Method::DareLinear, &p, seed, None);
        let kept = merged
            .iter()
            .zip(&case.base)
            .filter(|(m, b)| m != b)
            .count() as f64
            / case.n() as f64;
        if (kept - 0.3).abs() < 0.03 {
            close += 1;
        }
    }
    assert!(
        close >= 19,
        "kept fraction near density in only {close}/20 seeds"
    );
}

#[test]
fn breadcrumbs_match_the_reference() {
    for seed in 0..4 {
        let case = Case::random(&[6, 10], 3, 200 + seed);
        let (base, taus) = (case.base64(), case.taus());
        let w = [1.0, 0.5, 0.25];
        for (method, consensus) in [
            (Method::Breadcrumbs, false),
            (Method::BreadcrumbsTies, true),
        ] {
            for (density, gamma) in [
                (0.5, 0.1),
                (0.9, 0.2),
                (0.3, 0.0),
                (0.0, 0.1),
                (1.0, 0.3),
                (0.95, 0.01),
            ] {
                let experts: Vec<_> = w
                    .iter()
                    .map(|&x| vec![("weight", x), ("density", density), ("gamma", gamma)])
                    .collect();
                let p = params(method, &[("lambda", num(0.9))], &experts);
                let deltas: Vec<Vec<f64>> = taus
                    .iter()
                    .map(|t| {
                        if density >= 1.0 {
                            t.clone()
                        } else {
                            ref_outliers(t, density, gamma)
                        }
                    })
                    .collect();
                let want = ref_mix(&base, &deltas, &w, consensus, false, 0.9);
                let what = format!("{method} density {density} gamma {gamma}");
                assert_close(&case.merge(method, &p, 0, None), &want, &what);
            }
        }
    }
}

#[test]
fn della_matches_the_reference() {
    for shape in [vec![5, 12], vec![30]] {
        let case = Case::random(&shape, 2, 11);
        let (base, taus) = (case.base64(), case.taus());
        let w = [0.7, 0.6];
        for (method, consensus, normalize) in [
            (Method::Della, true, true),
            (Method::DellaLinear, false, false),
        ] {
            for (density, eps) in [(0.5, 0.15), (0.3, 0.1), (1.0, 0.15), (0.0, 0.15)] {
                let experts: Vec<_> = w
                    .iter()
                    .map(|&x| vec![("weight", x), ("density", density), ("epsilon", eps)])
                    .collect();
                let p = params(method, &[], &experts);
                let seed = 5;
                let deltas: Vec<Vec<f64>> = taus
                    .iter()
                    .enumerate()
                    .map(|(i, t)| match density {
                        d if d >= 1.0 => t.clone(),
                        d if d <= 0.0 => vec![0.0; t.len()],
                        d => ref_rescale(t, ref_della(t, &shape, d, eps, seed, i)),
                    })
                    .collect();
                let want = ref_mix(&base, &deltas, &w, consensus, normalize, 1.0);
                assert_close(
                    &case.merge(method, &p, seed, None),
                    &want,
                    &format!("{method} {shape:?} {density}"),
                );
            }
        }
    }
}

#[test]
fn slerp_matches_the_reference() {
    let case = Case::random(&[8, 8], 1, 9);
    let base = case.base64();
    let expert: Vec<f64> = case.experts[0].iter().map(|&x| f64::from(x)).collect();
    for t in [0.0, 0.25, 0.5, 1.0] {
        let p = params(Method::Slerp, &[("t", num(t))], &[vec![]]);
        assert_close(
            &case.merge(Method::Slerp, &p, 0, None),
            &ref_slerp(&base, &expert, t),
            &format!("slerp t {t}"),
        );
    }
    // Far-apart vectors take the spherical branch (the case above is nearly colinear).
    let far = Case::random(&[16], 1, 10);
    let mut far = far;
    far.experts[0] = far.base.iter().rev().copied().collect();
    let (b, e) = (
        far.base64(),
        far.experts[0]
            .iter()
            .map(|&x| f64::from(x))
            .collect::<Vec<_>>(),
    );
    let p = params(Method::Slerp, &[("t", num(0.3))], &[vec![]]);
    assert_close(
        &far.merge(Method::Slerp, &p, 0, None),
        &ref_slerp(&b, &e, 0.3),
        "slerp, spherical branch",
    );
}

#[test]
fn consensus_matches_the_reference() {
    let case = Case::random(&[7, 6], 4, 13);
    let (base, taus) = (case.base64(), case.taus());
    let w = [1.0, 0.5, 1.0, 0.8];
    let ml = [0.4, 0.6, 0.5, 1.0];
    for k in [0.0, 1.0, 2.0, 3.0] {
        let experts: Vec<_> = (0..4)
            .map(|i| vec![("weight", w[i]), ("mask_lambda", ml[i])])
            .collect();
        let p = params(
            Method::Consensus,
            &[("k", num(k)), ("lambda", num(0.8))],
            &experts,
        );
        let want: Vec<f64> = (0..case.n())
            .map(|j| {
                let mtl: f64 = (0..4).map(|i| w[i] * taus[i][j]).sum();
                let votes = (0..4)
                    .filter(|&i| taus[i][j].abs() > ml[i] * (mtl - taus[i][j]).abs())
                    .count();
                base[j] + if votes as f64 >= k { 0.8 * mtl } else { 0.0 }
            })
            .collect();
        assert_close(
            &case.merge(Method::Consensus, &p, 0, None),
            &want,
            &format!("consensus k {k}"),
        );
    }
}

#[test]
fn lines_scales_with_block_depth() {
    let case = Case::random(&[4, 4], 2, 17);
    let (base, taus) = (case.base64(), case.taus());
    let experts = vec![vec![("weight", 1.0)], vec![("weight", 0.5)]];
    let p = params(Method::Lines, &[("beta", num(0.6))], &experts);
    assert!(
        (p.alpha - 0.5).abs() < 1e-12,
        "alpha defaults to 1 / experts"
    );
    for (block, depth) in [
        (None, 0.0),
        (Some(BlockPosition { index: 0, count: 4 }), 0.0),
        (Some(BlockPosition { index: 3, count: 4 }), 1.0),
        (Some(BlockPosition { index: 1, count: 4 }), 1.0 / 3.0),
    ] {
        let scale = 0.5 + 0.6 * depth;
        let want: Vec<f64> = (0..case.n())
            .map(|j| base[j] + scale * (taus[0][j] + 0.5 * taus[1][j]))
            .collect();
        assert_close(
            &case.merge(Method::Lines, &p, 0, block),
            &want,
            &format!("lines at {block:?}"),
        );
    }
}

#[test]
fn every_method_returns_the_base_when_task_vectors_are_zero() {
    let mut case = Case::random(&[5, 5], 2, 19);
    case.experts = vec![case.base.clone(), case.base.clone()];
    for method in Method::ALL {
        let n_experts = if method == Method::Slerp { 1 } else { 2 };
        let mut experts = vec![Vec::new(); n_experts];
        for (i, e) in experts.iter_mut().enumerate() {
            if method.param("weight").is_some() {
                e.push(("weight", 0.5 + i as f64));
            }
            if method.param("density").is_some() {
                e.push(("density", 0.4));
            }
        }
        let shared: Vec<(&str, ParamValue)> = match method {
            Method::Slerp => vec![("t", num(0.5))],
            Method::Lines => vec![("beta", num(0.5))],
            _ => vec![],
        };
        let mut c = Case {
            shape: case.shape.clone(),
            base: case.base.clone(),
            experts: case.experts[..n_experts].to_vec(),
        };
        c.experts.truncate(n_experts);
        let p = params(method, &shared, &experts);
        assert_eq!(
            c.merge(method, &p, 3, None),
            case.base,
            "{method} with zero task vectors"
        );
    }
    case.experts.clear();
}

#[test]
fn equal_magnitudes_keep_exactly_k_by_position() {
    // Every |tau| is 0.5: trimming to density 0.25 must keep exactly 3 of 12, the last three.
    let base = vec![0.0f32; 12];
    let expert: Vec<f32> = (0..12)
        .map(|j| if j % 2 == 0 { 0.5 } else { -0.5 })
        .collect();
    let case = Case {
        shape: vec![12],
        base,
        experts: vec![expert.clone()],
    };
    let p = params(
        Method::Ties,
        &[],
        &[vec![("weight", 1.0), ("density", 0.25)]],
    );
    let got = case.merge(Method::Ties, &p, 0, None);
    let kept: Vec<usize> = (0..12).filter(|&j| got[j] != 0.0).collect();
    assert_eq!(kept, [9, 10, 11]);
    // Breadcrumbs with ties at both ends of the window.
    let mixed: Vec<f32> = [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5].to_vec();
    let case = Case {
        shape: vec![12],
        base: vec![0.0; 12],
        experts: vec![mixed.clone()],
    };
    let p = params(
        Method::Breadcrumbs,
        &[],
        &[vec![("weight", 1.0), ("density", 0.5), ("gamma", 0.25)]],
    );
    let got = case.merge(Method::Breadcrumbs, &p, 0, None);
    let want = ref_outliers(
        &mixed.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
        0.5,
        0.25,
    );
    assert_close(&got, &want, "breadcrumbs with tied magnitudes");
    assert_eq!(got.iter().filter(|&&x| x != 0.0).count(), 6);
}

#[test]
fn sign_ties_elect_positive() {
    // Two experts pull one entry in opposite directions with equal force: the sum is 0, the
    // elected sign is +, and only the positive expert survives (normalized by its weight).
    let case = Case {
        shape: vec![2],
        base: vec![1.0, 1.0],
        experts: vec![vec![1.5, 1.2], vec![0.5, 1.2]],
    };
    let p = params(
        Method::Ties,
        &[],
        &[vec![("weight", 1.0)], vec![("weight", 1.0)]],
    );
    let got = case.merge(Method::Ties, &p, 0, None);
    assert_close(&got, &[1.5, 1.2], "sign tie");
}

#[test]
fn one_expert_at_full_weight_reproduces_it() {
    let case = Case::random(&[3, 5], 1, 23);
    let expert: Vec<f64> = case.experts[0].iter().map(|&x| f64::from(x)).collect();
    for method in [
        Method::TaskArithmetic,
        Method::Ties,
        Method::Linear,
        Method::Breadcrumbs,
        Method::DareLinear,
    ] {
        let p = params(method, &[], &[vec![("weight", 1.0)]]);
        assert_close(
            &case.merge(method, &p, 0, None),
            &expert,
            &format!("{method} with one expert"),
        );
    }
}

#[test]
fn large_tied_tensors_match_the_reference_cached_and_one_shot_alike() {
    // 300 000 elements: the cached ranks share one code per 8 elements, and bf16 values tie at
    // every threshold; the one-shot path (selection, no cache) must give the same bits.
    use mergesearch::merge::engine::host::{Ranks, Resolved, Rows, run_to_vec};
    let mut case = Case::random(&[600, 500], 2, 77);
    let to_bf16 = |v: &mut Vec<f32>| {
        v.iter_mut()
            .for_each(|x| *x = half::bf16::from_f32(*x).to_f32())
    };
    to_bf16(&mut case.base);
    case.experts.iter_mut().for_each(to_bf16);
    let (base, taus) = (case.base64(), case.taus());
    let w = [0.8, 0.5];
    let (meta, all) = (case.meta(None), case.rows());
    for (method, extra) in [
        (Method::Ties, vec![("density", 0.2)]),
        (
            Method::BreadcrumbsTies,
            vec![("density", 0.3), ("gamma", 0.05)],
        ),
        (Method::Della, vec![("density", 0.4), ("epsilon", 0.1)]),
    ] {
        let experts: Vec<_> = w
            .iter()
            .map(|&x| {
                let mut e = vec![("weight", x)];
                e.extend(extra.iter().copied());
                e
            })
            .collect();
        let p = params(method, &[], &experts);
        let cached = case.merge(method, &p, 4, None);
        let job = tensor_job(method, &meta, &p, 4, || unreachable!());
        let rows = Rows::split(&all, 2);
        let resolved = Resolved::new(&job, &rows, meta.row_width());
        let one_shot: Vec<f32> = run_to_vec(&job, &rows, &Ranks::Resolved(&resolved));
        assert!(
            cached
                .iter()
                .zip(&one_shot)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{method}: cached and one-shot differ"
        );
        let deltas: Vec<Vec<f64>> = taus
            .iter()
            .enumerate()
            .map(|(i, t)| match method {
                Method::Ties => ref_magnitude(t, 0.2),
                Method::BreadcrumbsTies => ref_outliers(t, 0.3, 0.05),
                _ => ref_rescale(t, ref_della(t, &case.shape, 0.4, 0.1, 4, i)),
            })
            .collect();
        let normalize = method != Method::BreadcrumbsTies;
        let want = ref_mix(&base, &deltas, &w, true, normalize, 1.0);
        assert_close(&cached, &want, &format!("{method} on 300k tied elements"));
    }
}

#[test]
fn cached_draw_codes_give_the_generators_masks_at_every_density_and_seed() {
    // One store serves DARE and DELLA candidates at densities on and off the codes' 1/256 grid;
    // its cached draw codes must decide every element as the generator does (the one-shot path
    // draws every value). A second seed's stream is not the cached one and must be drawn too.
    use mergesearch::merge::engine::host::{Ranks, Resolved, Rows, run_to_vec};
    let case = Case::random(&[300, 400], 3, 5);
    let (meta, all) = (case.meta(None), case.rows());
    let mut store = HostStore::new();
    store.push(meta.clone(), HostRows::from_f32(all.clone()));
    let rows = Rows::split(&all, 3);
    let grid = 64.0 / 256.0;
    for (method, density, seed) in [
        (Method::DareTies, 0.3, 11),
        (Method::DareTies, grid, 11),
        (
            Method::DareLinear,
            f64::from(f32::from_bits((grid as f32).to_bits() + 1)),
            11,
        ),
        (Method::Della, 0.4, 11),
        (Method::DellaLinear, 0.7, 11),
        (Method::DareTies, 0.3, 12),
        (Method::Della, 0.4, 12),
    ] {
        let experts: Vec<_> = (0..3)
            .map(|i| vec![("weight", 0.4 + 0.2 * f64::from(i)), ("density", density)])
            .collect();
        let p = params(method, &[], &experts);
        let job = tensor_job(method, &meta, &p, seed, || unreachable!());
        let cached = f32_values(store.run(0, &job, Dtype::F32));
        let resolved = Resolved::new(&job, &rows, meta.row_width());
        let drawn: Vec<f32> = run_to_vec(&job, &rows, &Ranks::Resolved(&resolved));
        let differ = cached
            .iter()
            .zip(&drawn)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{method}, density {density}, seed {seed}");
    }
}
