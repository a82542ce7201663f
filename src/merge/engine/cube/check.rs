//! The GPU kernels against the host engine on the same synthetic tensors: every method (two
//! parameter sets each), every stored and output dtype, odd sizes, a tensor large enough for
//! bucketed rank codes and one with rows too long for 16-bit row ranks.
//!
//! On CUDA the two must agree bit for bit (`mergesearch check-device`). On wgpu they cannot:
//! Vulkan lets `fma` round twice (Mesa's lavapipe does), so there the comparison separates what
//! is exact on every device — each expert's kept entries, rank bounds, random draws and rescale
//! factors — from the merged values, which must agree within a stated bound.

use cubecl::prelude::*;
use rand::Rng as _;
use rand_distr::StandardNormal;

use super::CubeStore;
use crate::checkpoint::Dtype;
use crate::merge::engine::{Gta, HostRows, HostStore, Job, Mix, Store, TensorMeta};
use crate::merge::{GroupParams, MergePlan, Method, ParamValue, tensor_job};
use crate::rng::Rng;

/// Relative bound on merged values where `fma` may round twice: `|gpu - host| <= BOUND * M`,
/// with `M = |base| + 10 * sum_i |tau_i|` at that element.
pub const BOUND: f64 = 1e-6;

/// One comparison: a method's merge, or one expert's kept entries.
#[derive(Debug, Clone)]
pub struct Case {
    /// What was compared.
    pub what: String,
    /// Elements compared.
    pub elements: usize,
    /// Elements whose bits differ.
    pub differing: usize,
    /// Elements beyond the bound (for kept entries: any difference).
    pub beyond_bound: usize,
    /// Whether the merge makes a discrete decision on a rounded sum (a TIES election, a consensus
    /// vote), which may go the other way where the sum lies within rounding of the threshold and
    /// `fma` rounds twice.
    pub decides: bool,
}

/// Every comparison made.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Merged tensors, per method, dtype, shape and parameter set.
    pub merges: Vec<Case>,
    /// Kept entries of each expert of each sparsifying job.
    pub masks: Vec<Case>,
}

impl Report {
    /// Whether every comparison was bit-identical.
    pub fn bit_identical(&self) -> bool {
        self.merges
            .iter()
            .chain(&self.masks)
            .all(|c| c.differing == 0)
    }
}

/// Parameters of `method` for `k` experts, two variants (densities 0 and 1 among them, rescale on
/// and off, several vote thresholds).
pub fn test_params(method: Method, k: usize, variant: usize) -> GroupParams {
    let mut plan = MergePlan::new(method, k, 0);
    let number = ParamValue::Number;
    for (i, e) in plan.experts.iter_mut().enumerate() {
        let x = i as f64;
        if method != Method::Slerp {
            e.insert(
                "weight".into(),
                number([0.7, -0.4, 1.2][i % 3] + 0.1 * variant as f64),
            );
        }
        match method {
            Method::Ties | Method::DareTies | Method::DareLinear => {
                e.insert(
                    "density".into(),
                    number([0.2, 0.0, 1.0, 0.55][(i + variant) % 4]),
                );
            }
            Method::Breadcrumbs | Method::BreadcrumbsTies => {
                e.insert("density".into(), number(0.3 + 0.1 * x));
                e.insert("gamma".into(), number(0.05));
            }
            Method::Della | Method::DellaLinear => {
                e.insert("density".into(), number(0.4 + 0.1 * x));
                e.insert("epsilon".into(), number(0.1));
            }
            Method::Consensus => {
                e.insert("mask_lambda".into(), number(0.8 + 0.2 * x));
            }
            _ => {}
        }
    }
    match method {
        Method::Slerp => {
            plan.shared.insert("t".into(), number(0.35));
        }
        Method::Lines => {
            plan.shared.insert("beta".into(), number(0.5));
        }
        Method::Ties | Method::DareTies | Method::Della => {
            plan.shared
                .insert("rescale".into(), ParamValue::Flag(variant == 1));
            plan.shared.insert("lambda".into(), number(1.1));
        }
        Method::Consensus => {
            plan.shared.insert("k".into(), number(1.0 + variant as f64));
        }
        _ => {}
    }
    plan.resolve(&["g".to_string()], &[])
        .expect("the test plans are valid")
        .groups
        .remove(0)
}

/// Rows of a tensor of `n` elements with `k` experts, representable in `dtype`, as
/// little-endian bytes: half of each expert's entries equal the base (ties at zero).
pub fn test_rows(n: usize, k: usize, dtype: Dtype, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let base: Vec<f32> = (0..n)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect();
    (0..=k)
        .map(|r| {
            let values: Vec<f32> = if r == 0 {
                base.clone()
            } else {
                base.iter()
                    .map(|&b| {
                        if rng.random::<f64>() < 0.5 {
                            b
                        } else {
                            b + 0.05 * rng.sample::<f64, _>(StandardNormal) as f32
                        }
                    })
                    .collect()
            };
            let mut bytes = Vec::new();
            dtype.encode_into(&values, &mut bytes);
            bytes
        })
        .collect()
}

/// Shapes compared: odd sizes, bucketed rank codes (75 000 elements: buckets of two), and an odd
/// row too long for 16-bit row ranks (also bucketed).
pub const SHAPES: [&[usize]; 4] = [&[7], &[33, 65], &[250, 300], &[1, 65_601]];

fn values(rows: &HostRows) -> Vec<f32> {
    match rows {
        HostRows::F32(v) => v.clone(),
        HostRows::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
        HostRows::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
    }
}

/// Compares `host` and `gpu` outputs of one job; `magnitude[j]` scales the bound at `j`, and
/// `exact` makes any difference count as beyond it.
fn compare(what: String, host: &HostRows, gpu: &HostRows, magnitude: &[f64], exact: bool) -> Case {
    let (h, g) = (values(host), values(gpu));
    let half_ulp = match host.dtype() {
        Dtype::F32 => 0.0,
        Dtype::BF16 => 2f64.powi(-8),
        Dtype::F16 => 2f64.powi(-11),
    };
    let mut case = Case {
        what,
        elements: h.len(),
        differing: 0,
        beyond_bound: 0,
        decides: false,
    };
    for (j, (a, b)) in h.iter().zip(&g).enumerate() {
        if a.to_bits() != b.to_bits() {
            case.differing += 1;
            let (a, b) = (f64::from(*a), f64::from(*b));
            let bound = BOUND * magnitude[j] + 2.0 * half_ulp * a.abs().max(b.abs());
            if exact || (a - b).abs() > bound {
                case.beyond_bound += 1;
            }
        }
    }
    case
}

/// The output dtypes compared for inputs of `dtype`: `f32` (what evaluators take) and the
/// inputs' own (what is written).
fn outputs(dtype: Dtype) -> Vec<Dtype> {
    if dtype == Dtype::F32 {
        vec![Dtype::F32]
    } else {
        vec![Dtype::F32, dtype]
    }
}

/// Runs every comparison on the device of `client`, calling `progress` with each tensor's
/// description.
pub fn compare_engines<R: Runtime>(client: &ComputeClient<R>, progress: impl Fn(&str)) -> Report {
    let mut report = Report::default();
    let k = 3;
    for (s, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16] {
            progress(&format!("{dtype} {shape:?}"));
            let data = test_rows(n, k, dtype, 11 + s as u64);
            let rows: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let host_rows = HostRows::decode(dtype, &rows);
            let magnitude: Vec<f64> = {
                let v = values(&host_rows);
                (0..n)
                    .map(|j| {
                        let b = f64::from(v[j]);
                        b.abs()
                            + 10.0
                                * (1..=k)
                                    .map(|r| (f64::from(v[r * n + j]) - b).abs())
                                    .sum::<f64>()
                    })
                    .collect()
            };
            for experts in [k, 1] {
                let meta = TensorMeta {
                    name: format!("model.layers.{s}.mlp.up_proj.weight"),
                    shape: shape.to_vec(),
                    block: None,
                    dtype,
                    experts,
                };
                let mut host = HostStore::new();
                host.push(meta.clone(), HostRows::decode(dtype, &rows[..=experts]));
                let mut gpu = CubeStore::new(client.clone());
                gpu.push(meta.clone(), &rows[..=experts]);
                let (hs, gs) = (host.slerp_sums(0), gpu.slerp_sums(0));
                if experts == 1 {
                    report.masks.push(Case {
                        what: format!("slerp sums, {dtype} {shape:?}"),
                        elements: 3,
                        differing: hs
                            .iter()
                            .zip(&gs)
                            .filter(|(a, b)| a.to_bits() != b.to_bits())
                            .count(),
                        beyond_bound: hs
                            .iter()
                            .zip(&gs)
                            .filter(|(a, b)| a.to_bits() != b.to_bits())
                            .count(),
                        decides: false,
                    });
                }
                for method in Method::ALL {
                    // SLERP takes exactly one expert; the others are compared with three.
                    if (method == Method::Slerp) != (experts == 1) {
                        continue;
                    }
                    for variant in 0..2 {
                        let p = test_params(method, experts, variant);
                        let job = tensor_job(method, &meta, &p, 9, || hs);
                        for out in outputs(dtype) {
                            let what = format!("{method} ({variant}) {dtype} {shape:?} -> {out}");
                            let h = host.run(0, &job, out);
                            let g = gpu.read(&gpu.run(0, &job, out));
                            let mut case = compare(what, &h, &g, &magnitude, false);
                            case.decides = matches!(
                                &job,
                                Job::Consensus(_)
                                    | Job::Gta(Gta {
                                        mix: Mix::Elect { .. },
                                        ..
                                    })
                            );
                            report.merges.push(case);
                        }
                        if let Job::Gta(_) = &job {
                            // A one-shot merge resolves bounds and row ranks on the host.
                            let resolved = crate::with_rows!(&host_rows, |all: E| {
                                let rows = crate::merge::engine::host::Rows::split(all, k);
                                crate::merge::engine::host::Resolved::new(
                                    &job,
                                    &rows,
                                    meta.row_width(),
                                )
                            });
                            let cached = gpu.read(&gpu.run(0, &job, Dtype::F32));
                            let once =
                                gpu.read(&gpu.run_with(0, &job, Dtype::F32, Some(&resolved)));
                            let what = format!("{method} ({variant}) {dtype} {shape:?}, one-shot");
                            report
                                .masks
                                .push(compare(what, &cached, &once, &magnitude, true));
                        }
                        if let Job::Gta(g) = &job {
                            for i in 0..experts {
                                let kept = Job::Gta(Gta {
                                    masks: g.masks.clone(),
                                    weights: (0..experts)
                                        .map(|j| f32::from(u8::from(i == j)))
                                        .collect(),
                                    rescale: g.rescale,
                                    mix: Mix::Sum { base: 0.0 },
                                });
                                let what = format!(
                                    "{method} ({variant}) {dtype} {shape:?}, expert {i} kept"
                                );
                                let h = host.run(0, &kept, Dtype::F32);
                                let gk = gpu.read(&gpu.run(0, &kept, Dtype::F32));
                                report.masks.push(compare(what, &h, &gk, &magnitude, true));
                            }
                        }
                    }
                }
            }
        }
    }
    report
}
