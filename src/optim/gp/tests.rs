use super::acquisition::{log_ei_grad, log_h, norm_cdf};
use super::hyper::{default_theta, fit, log_marginal_likelihood, random_theta};
use super::model::Gp;
use super::*;
use crate::optim::RandomSearch;
use crate::pareto::hypervolume;
use rand::Rng as _;
use rand_distr::StandardNormal;

/// Options small enough for a debug build.
fn quick(multi_objective: bool) -> GpOptions {
    GpOptions {
        multi_objective,
        restarts: 2,
        max_iters: 25,
        candidates: 200,
        refine: 2,
        acquisition_iters: 15,
        ..GpOptions::default()
    }
}

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-300)
}

#[test]
fn normal_cdf_and_log_h_match_high_precision_values() {
    // (z, ln h(z), Φ(z)) from mpmath at 50 digits.
    let reference = [
        (-1e4, -50000019.33961931, 0.0),
        (-300.0, -45012.32653681455, 0.0),
        (-40.0, -808.29856835662, 0.0),
        (-10.0, -55.55312203612235, 7.619853024160525e-24),
        (-5.0, -16.74430116266099, 2.866515718791939e-07),
        (-3.0001, -7.870039297756779, 0.0013494549132607172),
        (-2.9999, -7.869332830253237, 0.0013503412829549248),
        (-1.0, -2.4851210257126413, 0.15865525393145705),
        (0.0, -0.9189385332046728, 0.5),
        (1.0, 0.08002621884930694, 0.8413447460685429),
        (2.5, 0.9170920655921645, 0.9937903346742238),
        (5.0, 1.6094379231264313, 0.9999997133484281),
    ];
    for (z, lh, cdf) in reference {
        let (got, _) = log_h(z);
        assert!(
            rel_close(got, lh, 1e-12),
            "ln h({z}) = {got}, expected {lh}"
        );
        if cdf > 0.0 {
            // Φ(-40) ≈ 3.7e-350 underflows f64 (ln h does not); relative accuracy elsewhere.
            assert!(
                rel_close(norm_cdf(z), cdf, 1e-12),
                "Φ({z}) = {}",
                norm_cdf(z)
            );
        }
    }
}

#[test]
fn log_ei_matches_the_closed_form_and_stays_finite_in_the_far_tail() {
    let (mean, var): (f64, f64) = (0.3, 0.04);
    let sd: f64 = var.sqrt();
    let mut previous = f64::NEG_INFINITY;
    for k in 0..=400 {
        let best = mean - 2.0 + k as f64 * 0.01; // z from -10 to 10
        let z = (best - mean) / sd;
        let ei =
            sd * (z * norm_cdf(z) + (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt());
        let got = super::acquisition::log_ei(mean, var, best);
        if ei > 1e-300 {
            assert!(
                (got - ei.ln()).abs() < 1e-9 * ei.ln().abs().max(1.0),
                "z {z}: {got} vs {}",
                ei.ln()
            );
        }
        assert!(got > previous, "log EI must grow with the incumbent");
        previous = got;
    }
    // Far in the tail plain EI underflows to 0; log EI follows -z²/2 - ln √(2π) - 2 ln |z|.
    for z in [-50.0, -1e3, -1e6, -1e100] {
        let (lh, ratio) = log_h(z);
        let asymptote = -0.5 * z * z
            - 0.5 * (2.0 * std::f64::consts::PI).ln()
            - 2.0 * (-z).ln()
            - 3.0 / (z * z);
        assert!(lh.is_finite() && ratio.is_finite(), "z {z}");
        assert!(
            (lh - asymptote).abs() <= 20.0 / z.powi(4) + 1e-15 * asymptote.abs(),
            "z {z}: {lh} vs {asymptote}"
        );
        // d ln h / dz ≈ |z| there.
        assert!(rel_close(ratio, -z, 3.0 / (z * z)), "z {z}: {ratio}");
    }
}

/// `n` points of `d` coordinates and values of a smooth function with a little noise.
fn data(n: usize, d: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let x: Vec<f64> = (0..n * d).map(|_| rng.random::<f64>()).collect();
    let y = x
        .chunks_exact(d)
        .map(|p| {
            p.iter()
                .enumerate()
                .map(|(l, v)| (3.0 * v + l as f64).sin())
                .sum::<f64>()
                + 0.01 * rng.sample::<f64, _>(StandardNormal)
        })
        .collect();
    (x, y)
}

#[test]
fn lml_gradient_matches_finite_differences() {
    let d = 3;
    let (x, y) = data(25, d, 3);
    let y = standardize(&y).y;
    let mut rng = Rng::new(8);
    for _ in 0..3 {
        let theta = random_theta(d, &mut rng);
        let (lml, grad) = log_marginal_likelihood(&x, &y, d, &theta).unwrap();
        assert!(lml.is_finite());
        for j in 0..d + 2 {
            let h = 1e-5;
            let mut plus = theta.clone();
            plus[j] += h;
            let mut minus = theta.clone();
            minus[j] -= h;
            let fd = (log_marginal_likelihood(&x, &y, d, &plus).unwrap().0
                - log_marginal_likelihood(&x, &y, d, &minus).unwrap().0)
                / (2.0 * h);
            assert!(
                (fd - grad[j]).abs() <= 1e-5 * (1.0 + fd.abs()),
                "parameter {j}: analytic {} vs finite difference {fd}",
                grad[j]
            );
        }
    }
}

#[test]
fn log_ei_gradient_matches_finite_differences() {
    let d = 3;
    let (x, y) = data(20, d, 4);
    let y = standardize(&y).y;
    let theta = fit(&x, &y, d, &[default_theta(d)], 30);
    let gp = Gp::fit(&x, &y, d, &theta).unwrap();
    let best = gp.train_means().into_iter().fold(f64::INFINITY, f64::min);
    let mut rng = Rng::new(5);
    for _ in 0..5 {
        let p: Vec<f64> = (0..d).map(|_| 0.1 + 0.8 * rng.random::<f64>()).collect();
        let (v, g) = log_ei_grad(&gp, &p, best);
        for l in 0..d {
            let h = 1e-6;
            let mut a = p.clone();
            a[l] += h;
            let mut b = p.clone();
            b[l] -= h;
            let fd = (log_ei_grad(&gp, &a, best).0 - log_ei_grad(&gp, &b, best).0) / (2.0 * h);
            assert!(
                (fd - g[l]).abs() <= 1e-4 * (1.0 + fd.abs()),
                "{v}: {} vs {fd}",
                g[l]
            );
        }
    }
}

#[test]
fn gp_predicts_a_smooth_one_dimensional_function() {
    let f = |x: f64| (6.0 * x).sin() + 0.5 * x;
    let x: Vec<f64> = (0..12).map(|i| i as f64 / 11.0).collect();
    let values: Vec<f64> = x.iter().map(|&v| f(v)).collect();
    let t = standardize(&values);
    let mut rng = Rng::new(1);
    let starts = vec![
        default_theta(1),
        random_theta(1, &mut rng),
        random_theta(1, &mut rng),
    ];
    let theta = fit(&x, &t.y, 1, &starts, 50);
    let gp = Gp::fit(&x, &t.y, 1, &theta).unwrap();
    for k in 0..=50 {
        let p = k as f64 / 50.0;
        let (m, v) = gp.predict(&[p]);
        let pred = t.mean + t.sd * m;
        assert!((pred - f(p)).abs() < 0.03, "at {p}: {pred} vs {}", f(p));
        assert!(v.sqrt() * t.sd < 0.1, "sd {}", v.sqrt() * t.sd);
    }
    // Noise fitted small for noiseless data; fantasies leave the mean there unchanged.
    assert!(theta[2].exp() < 1e-2, "noise {}", theta[2].exp());
    let mut believed = gp.clone();
    let m = believed.mean(&[0.37]);
    believed.add(&[0.37], m);
    assert!((believed.mean(&[0.37]) - m).abs() < 1e-6);
    assert!(believed.predict(&[0.37]).1 <= gp.predict(&[0.37]).1);
}

/// A shifted, scaled sphere in `d` coordinates (minimum 0 at 0.3, 0.4, ...).
fn sphere(p: &[f64]) -> f64 {
    p.iter()
        .enumerate()
        .map(|(l, v)| (v - 0.3 - 0.1 * (l % 5) as f64).powi(2) * (1.0 + l as f64))
        .sum()
}

fn run_best(opt: &mut dyn Optimizer, f: &dyn Fn(&[f64]) -> f64, budget: usize) -> f64 {
    let mut best = f64::INFINITY;
    let mut used = 0;
    while used < budget {
        let points = opt.ask();
        let told: Vec<Told> = points
            .into_iter()
            .take(budget - used)
            .map(|p| {
                let v = f(&p);
                best = best.min(v);
                Told::scalar(p, Some(v))
            })
            .collect();
        used += told.len();
        opt.tell(&told);
    }
    best
}

#[test]
fn beats_random_search_on_a_smooth_five_dimensional_function() {
    let mut wins = 0;
    for seed in 0..5 {
        let mut bo = GaussianProcessBo::new(5, 2, seed, quick(false)).unwrap();
        let mut random = RandomSearch::new(5, 2, seed).unwrap();
        let b = run_best(&mut bo, &sphere, 40);
        let r = run_best(&mut random, &sphere, 40);
        eprintln!("seed {seed}: gp {b:.4} random {r:.4}");
        wins += usize::from(b < r);
        // The surrogate is reported in the told units.
        let at = vec![0.5; 5];
        let predicted = bo.predict(&at).unwrap()[0];
        assert!(
            (predicted - sphere(&at)).abs() < 0.5,
            "{predicted} vs {}",
            sphere(&at)
        );
    }
    assert!(wins >= 4, "GP-BO beat random search on {wins} of 5 seeds");
}

#[test]
fn parego_front_has_more_hypervolume_than_random_search() {
    let d = 3;
    let objectives = |p: &[f64]| {
        let a: f64 = p.iter().map(|v| (v - 0.2).powi(2)).sum();
        let b: f64 = p.iter().map(|v| (v - 0.8).powi(2)).sum();
        vec![a, b]
    };
    let hv = |points: &[Vec<f64>]| {
        let maximized: Vec<Vec<f64>> = points
            .iter()
            .map(|o| o.iter().map(|v| -v).collect())
            .collect();
        hypervolume(&maximized, &[-1.2, -1.2]).unwrap()
    };
    let mut wins = 0;
    for seed in 0..3 {
        let mut collected = [Vec::new(), Vec::new()];
        let mut bo = GaussianProcessBo::new(d, 2, seed, quick(true)).unwrap();
        let mut random = RandomSearch::new(d, 2, seed).unwrap();
        let opts: [&mut dyn Optimizer; 2] = [&mut bo, &mut random];
        for (k, opt) in opts.into_iter().enumerate() {
            for _ in 0..12 {
                let told: Vec<Told> = opt
                    .ask()
                    .into_iter()
                    .map(|p| {
                        let o = objectives(&p);
                        collected[k].push(o.clone());
                        Told {
                            point: p,
                            value: Some(o[0] + o[1]),
                            objectives: Some(o),
                            rung: 0,
                        }
                    })
                    .collect();
                opt.tell(&told);
            }
        }
        wins += usize::from(hv(&collected[0]) > hv(&collected[1]));
        let p = bo.predict(&[0.5; 3]).unwrap();
        assert_eq!(p.len(), 2);
        assert!(
            (p[0] - 0.27).abs() < 0.1 && (p[1] - 0.27).abs() < 0.1,
            "{p:?}"
        );
    }
    assert!(wins >= 2, "ParEGO beat random search on {wins} of 3 seeds");
}

fn tell_values(bo: &mut GaussianProcessBo, points: Vec<Vec<f64>>, fail_every: usize) {
    let told: Vec<Told> = points
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let value = (i % fail_every != 0).then(|| sphere(&p));
            Told::scalar(p, value)
        })
        .collect();
    bo.tell(&told);
}

#[test]
fn json_round_trip_keeps_the_next_ask_and_predictions() {
    for multi in [false, true] {
        let mut a = GaussianProcessBo::new(4, 3, 11, quick(multi)).unwrap();
        for _ in 0..6 {
            let points = a.ask();
            let told: Vec<Told> = points
                .into_iter()
                .map(|p| {
                    let o = vec![sphere(&p), p[0] * 1e-7 + 1.0 / 3.0];
                    Told {
                        point: p,
                        value: Some(o[0]),
                        objectives: Some(o),
                        rung: 0,
                    }
                })
                .collect();
            a.tell(&told);
        }
        let json = serde_json::to_string(&a).unwrap();
        let mut b: GaussianProcessBo = serde_json::from_str(&json).unwrap();
        assert_eq!(a, b);
        let at = [0.1, 0.2, 0.3, 0.4];
        assert_eq!(a.predict(&at), b.predict(&at));
        let next = a.ask();
        assert_eq!(next, b.ask());
        assert_eq!(next.len(), 3);
        assert!(next.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
        // The Kriging believer spreads a batch out.
        assert_ne!(next[0], next[1]);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        // The same seed and values give the same asks; another seed differs.
        let mut c = GaussianProcessBo::new(4, 3, 11, quick(multi)).unwrap();
        let mut e = GaussianProcessBo::new(4, 3, 12, quick(multi)).unwrap();
        assert_ne!(c.ask(), e.ask());
    }
}

#[test]
fn failed_trials_are_skipped_but_not_proposed_again() {
    let mut bo = GaussianProcessBo::new(
        3,
        4,
        2,
        GpOptions {
            initial: Some(8),
            ..quick(false)
        },
    )
    .unwrap();
    // Nothing but failures: the design, then uniform points.
    for _ in 0..3 {
        let points = bo.ask();
        assert_eq!(points.len(), 4);
        bo.tell(
            &points
                .into_iter()
                .map(|p| Told::scalar(p, None))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!((bo.observations(), bo.failures()), (0, 12));
    assert_eq!(bo.predict(&[0.5; 3]), None);
    // Then a third of the trials fail; NaN counts as a failure.
    for _ in 0..4 {
        let points = bo.ask();
        tell_values(&mut bo, points, 3);
    }
    bo.tell(&[Told::scalar(vec![0.5; 3], Some(f64::NAN))]);
    assert_eq!(bo.observations() + bo.failures(), 29);
    assert_eq!(bo.failures(), 12 + 8 + 1);
    let failed: Vec<Vec<f64>> = bo.state.failed.iter().map(|e| e.0.clone()).collect();
    let next = bo.ask();
    for p in &next {
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        for f in &failed {
            let dist: f64 = p
                .iter()
                .zip(f)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(dist > 1e-3, "re-proposed a failed point {f:?}");
        }
    }
    assert!(bo.predict(&[0.5; 3]).unwrap()[0].is_finite());
}

#[test]
fn invalid_options_are_rejected() {
    let err = GaussianProcessBo::new(0, 1, 0, GpOptions::default()).unwrap_err();
    assert!(err.to_string().contains("`dim`"), "{err}");
    let err = GaussianProcessBo::new(
        2,
        1,
        0,
        GpOptions {
            restarts: 0,
            ..GpOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("`restarts`"), "{err}");
    let err = GaussianProcessBo::new(
        2,
        1,
        0,
        GpOptions {
            parego_rho: f64::NAN,
            ..GpOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("`parego_rho`"), "{err}");
    let bo = GaussianProcessBo::new(70, 1, 0, GpOptions::default()).unwrap();
    assert_eq!(bo.initial(), 71);
    assert_eq!(
        GaussianProcessBo::new(3, 1, 0, GpOptions::default())
            .unwrap()
            .initial(),
        10
    );
    let options: GpOptions = serde_json::from_str(r#"{"multi_objective":true}"#).unwrap();
    assert!(options.multi_objective && options.restarts == 3);
}
