//! Tests of [`Cmaes`]: convergence on the standard test functions, repeated over seeds with the
//! success rates and evaluation counts of established implementations as the bar; bound
//! handling; IPOP restarts; failures; resume.

use super::*;
use crate::optim::eigen::symmetric_eigen;

/// A test function.
type Objective = fn(&[f64]) -> f64;

fn sphere(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

fn rosenbrock(x: &[f64]) -> f64 {
    x.windows(2)
        .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
        .sum()
}

/// The axis-parallel ellipsoid with condition number 1e6.
fn ellipsoid(x: &[f64]) -> f64 {
    let n = x.len();
    x.iter()
        .enumerate()
        .map(|(i, v)| 10f64.powf(6.0 * i as f64 / (n - 1).max(1) as f64) * v * v)
        .sum()
}

/// Rastrigin on `[-5.12, 5.12]^n` mapped onto the unit cube: optimum 0 at the centre, a local
/// optimum at every other point of the grid of spacing 1/10.24.
fn rastrigin_cube(x: &[f64]) -> f64 {
    x.iter()
        .map(|u| {
            let v = 5.12 * (2.0 * u - 1.0);
            10.0 + v * v - 10.0 * (2.0 * std::f64::consts::PI * v).cos()
        })
        .sum()
}

fn tell_all(es: &mut Cmaes, points: &[Vec<f64>], f: Objective) {
    let results: Vec<Told> = points
        .iter()
        .map(|p| Told::scalar(p.clone(), Some(f(p))))
        .collect();
    es.tell(&results);
}

/// Evaluations until `f` first drops below `target` (counting within the generation), or `None`
/// if the run stalls or `budget` evaluations pass first.
fn evals_to_target(f: Objective, es: &mut Cmaes, target: f64, budget: u64) -> Option<u64> {
    while es.evaluations() < budget {
        let points = es.ask();
        if points.is_empty() {
            return None;
        }
        let values: Vec<f64> = points.iter().map(|p| f(p)).collect();
        if let Some(k) = values.iter().position(|&v| v < target) {
            return Some(es.evaluations() + k as u64 + 1);
        }
        let results: Vec<Told> = points
            .into_iter()
            .zip(values)
            .map(|(point, v)| Told::scalar(point, Some(v)))
            .collect();
        es.tell(&results);
    }
    None
}

/// A single unbounded run (no restarts) in 10 dimensions with `σ₀ = 0.5`, from a uniform random
/// start in `[0, 1]^10` or, for Rosenbrock, from the origin.
fn benchmark_run(name: &str, seed: u64) -> Option<u64> {
    let dim = 10;
    let (f, mean, budget): (Objective, Vec<f64>, u64) = match name {
        "sphere" | "ellipsoid" => {
            let mut rng = Rng::new(derive_seed(seed, "test/x0", 0));
            let x0 = (0..dim).map(|_| rng.random::<f64>()).collect();
            let f = if name == "sphere" { sphere } else { ellipsoid };
            (f, x0, 20_000)
        }
        _ => (rosenbrock, vec![0.0; dim], 30_000),
    };
    let options = CmaesOptions {
        mean: Some(mean),
        sigma: 0.5,
        bounded: false,
        max_restarts: 0,
        ..CmaesOptions::default()
    };
    let mut es = Cmaes::new(dim, CmaesOptions { seed, ..options }).unwrap();
    evals_to_target(f, &mut es, 1e-8, budget)
}

/// Success rate and median evaluations of successful runs over `seeds` seeds.
fn benchmark(name: &str, seeds: u64) -> (f64, u64) {
    let mut evals: Vec<u64> = (0..seeds).filter_map(|s| benchmark_run(name, s)).collect();
    evals.sort_unstable();
    let rate = evals.len() as f64 / seeds as f64;
    (
        rate,
        evals.get(evals.len() / 2).copied().unwrap_or(u64::MAX),
    )
}

#[test]
fn unbounded_sphere_rosenbrock_and_ellipsoid_converge_as_fast_as_reference_implementations() {
    // pycma 4.5 (active CMA, its defaults) needs medians of 1,250 evaluations on the 10-D
    // sphere, 5,134 on Rosenbrock from the origin and 3,893 on the ellipsoid to reach 1e-8
    // (25 seeds; 92% success on Rosenbrock, where some runs end in the local minimum). These
    // seeds give 1,264, 5,081 and 4,038. The upper bounds are 1.1 times pycma's: without the
    // active (negative-weight) update Rosenbrock needs about 6,250 and the ellipsoid about
    // 5,500; without covariance learning the ellipsoid needs about ten times more.
    for (name, min_rate, lo, hi) in [
        ("sphere", 1.0, 1_000, 1_375),
        ("rosenbrock", 0.8, 4_500, 5_600),
        ("ellipsoid", 1.0, 3_400, 4_300),
    ] {
        let (rate, median) = benchmark(name, 10);
        assert!(rate >= min_rate, "{name}: success rate {rate}");
        assert!(
            (lo..=hi).contains(&median),
            "{name}: median {median} evaluations"
        );
    }
}

/// The table in the report: run with
/// `cargo test --release --lib optim -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: 25 and 200 seeds per function, run in release"]
fn benchmark_table() {
    println!("10-D, sigma0 = 0.5, default popsize, target f < 1e-8, no restarts");
    println!(
        "{:<12} {:>6} {:>8} {:>14}",
        "function", "seeds", "success", "median evals"
    );
    for seeds in [10, 25, 200] {
        for name in ["sphere", "rosenbrock", "ellipsoid"] {
            let (rate, median) = benchmark(name, seeds);
            println!("{name:<12} {seeds:>6} {:>7.1}% {median:>14}", rate * 100.0);
        }
    }
    for (name, f) in [("sphere", sphere as Objective), ("ellipsoid", ellipsoid)] {
        let mut evals: Vec<u64> = (0..5)
            .filter_map(|seed| sep_run(f, seed, 1e-8, 1_000_000))
            .collect();
        evals.sort_unstable();
        println!(
            "sep-CMA 100-D {name}: {} of 5 reached 1e-8, evaluations {evals:?}",
            evals.len()
        );
    }
}

/// One unbounded sep-CMA-ES run in 100 dimensions from a random start in the cube.
fn sep_run(f: Objective, seed: u64, target: f64, budget: u64) -> Option<u64> {
    let dim = 100;
    let mut rng = Rng::new(derive_seed(seed, "test/x0", 0));
    let options = CmaesOptions {
        mean: Some((0..dim).map(|_| rng.random::<f64>()).collect()),
        sigma: 0.5,
        bounded: false,
        covariance: CovarianceModel::Separable,
        max_restarts: 0,
        ..CmaesOptions::default()
    };
    let mut es = Cmaes::new(dim, CmaesOptions { seed, ..options }).unwrap();
    assert!(es.is_separable());
    evals_to_target(f, &mut es, target, budget)
}

#[test]
fn sep_cma_reaches_the_target_in_100_dimensions() {
    // sep-CMA-ES with lambda = 17 needs about 9,700 evaluations on the 100-D sphere and about
    // 29,000 on the (separable) ellipsoid, whose diagonal it learns (n + 2) / 3 = 34 times
    // faster than the full model would.
    for seed in 0..2 {
        let sphere_evals = sep_run(sphere, seed, 1e-8, 15_000);
        assert!(sphere_evals.is_some(), "sphere, seed {seed}");
        let ellipsoid_evals = sep_run(ellipsoid, seed, 1e-8, 45_000);
        assert!(ellipsoid_evals.is_some(), "ellipsoid, seed {seed}");
    }
    let auto = |dim| Cmaes::new(dim, CmaesOptions::default()).unwrap();
    assert!(!auto(CovarianceModel::AUTO_SEPARABLE_ABOVE).is_separable());
    assert!(auto(CovarianceModel::AUTO_SEPARABLE_ABOVE + 1).is_separable());
}

#[test]
fn bounded_mode_converges_to_a_corner_and_a_face_with_its_mean_in_the_cube() {
    fn corner(x: &[f64]) -> f64 {
        x.iter().map(|v| (v - 1.2).powi(2)).sum()
    }
    fn face(x: &[f64]) -> f64 {
        (x[0] + 0.5).powi(2) + x[1..].iter().map(|v| (v - 0.3).powi(2)).sum::<f64>()
    }
    // About 2,400 (corner) and 4,200 (face) evaluations to 1e-9 in release over 20 seeds.
    for seed in 0..3 {
        for (f, optimum, minimum) in [
            (corner as Objective, [1.0, 1.0], 0.04 * 8.0),
            (face, [0.0, 0.3], 0.25),
        ] {
            let options = CmaesOptions {
                seed,
                ..CmaesOptions::default()
            };
            let mut es = Cmaes::new(8, options).unwrap();
            while es.best().is_none_or(|(_, v)| v - minimum > 1e-9) {
                assert!(es.evaluations() < 8_000, "seed {seed}: {:?}", es.best());
                let points = es.ask();
                assert!(points.iter().flatten().all(|x| (0.0..=1.0).contains(x)));
                tell_all(&mut es, &points, f);
                assert!(es.mean().iter().all(|x| (0.0..=1.0).contains(x)));
            }
            let (best, _) = es.best().unwrap();
            assert!((best[0] - optimum[0]).abs() < 1e-8, "{best:?}");
            assert!((best[1] - optimum[1]).abs() < 1e-4, "{best:?}");
            assert!((es.mean()[0] - optimum[0]).abs() < 1e-6, "{:?}", es.mean());
            assert_eq!(es.restarts(), 0);
        }
    }
}

#[test]
fn folding_the_mean_mirrors_paths_and_covariance_consistently() {
    let options = CmaesOptions {
        covariance: CovarianceModel::Full,
        ..CmaesOptions::default()
    };
    let mut es = Cmaes::new(3, options).unwrap();
    let c = vec![2.0, 0.5, -0.3, 0.5, 1.0, 0.2, -0.3, 0.2, 3.0];
    let b = symmetric_eigen(&c, 3).vectors;
    es.cov = Cov::Full {
        c: c.clone(),
        b: b.clone(),
        d: vec![1.0; 3],
    };
    es.mean = vec![1.25, 0.5, -2.5];
    es.pc = vec![1.0, 2.0, 3.0];
    es.ps = vec![-1.0, -2.0, -3.0];
    es.fold_mean();
    // 1.25 is mirrored at 1, -2.5 is translated by 4 to 1.5 then mirrored to 0.5.
    assert_eq!(es.mean, vec![0.75, 0.5, 0.5]);
    assert_eq!(es.pc, vec![-1.0, 2.0, -3.0]);
    assert_eq!(es.ps, vec![1.0, -2.0, 3.0]);
    let Cov::Full {
        c: folded,
        b: folded_b,
        ..
    } = &es.cov
    else {
        unreachable!()
    };
    let sign = [-1.0, 1.0, -1.0];
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(folded[i * 3 + j], sign[i] * sign[j] * c[i * 3 + j]);
            assert_eq!(folded_b[i * 3 + j], sign[i] * b[i * 3 + j]);
        }
    }
}

#[test]
fn ipop_restarts_double_the_population_and_are_deterministic() {
    let run = |seed| {
        let mut es = Cmaes::new(
            10,
            CmaesOptions {
                seed,
                ..CmaesOptions::default()
            },
        )
        .unwrap();
        let lambda0 = es.popsize();
        let mut asked = Vec::new();
        while es.restarts() < 2 && es.evaluations() < 100_000 {
            let points = es.ask();
            asked.extend(points.iter().flatten().map(|x| x.to_bits()));
            tell_all(&mut es, &points, rastrigin_cube);
        }
        (es, lambda0, asked)
    };
    let (es, lambda0, asked) = run(3);
    assert_eq!(lambda0, 10);
    assert_eq!(es.restarts(), 2, "after {} evaluations", es.evaluations());
    assert_eq!(es.popsize(), 4 * lambda0);
    assert_eq!(es.generation(), 0);
    assert!(es.last_stop().is_some());
    assert!(
        es.mean().iter().all(|x| (0.0..1.0).contains(x)),
        "a fresh uniform mean"
    );
    let (_, _, again) = run(3);
    assert!(asked == again, "same seed, same points");
    let (_, _, other) = run(4);
    assert!(asked[..100] != other[..100]);
}

#[test]
fn a_finished_run_asks_nothing() {
    let options = CmaesOptions {
        bounded: false,
        max_restarts: 0,
        ..CmaesOptions::default()
    };
    let mut es = Cmaes::new(3, CmaesOptions { seed: 1, ..options }).unwrap();
    while !es.is_finished() && es.evaluations() < 20_000 {
        let points = es.ask();
        tell_all(&mut es, &points, sphere);
    }
    assert!(es.is_finished());
    assert!(matches!(
        es.last_stop(),
        Some(StopReason::TolFun | StopReason::TolX)
    ));
    assert!(es.ask().is_empty());
    assert!(es.best().unwrap().1 < 1e-12);
}

#[test]
fn failures_partial_tells_and_empty_generations_keep_the_state_sound() {
    // A failure region (x_0 > 0.6) and one failure in seven anywhere.
    let mut es = Cmaes::new(
        5,
        CmaesOptions {
            seed: 2,
            ..CmaesOptions::default()
        },
    )
    .unwrap();
    let mut count = 0;
    while es.evaluations() < 6_000 {
        let points = es.ask();
        let results: Vec<Told> = points
            .into_iter()
            .map(|point| {
                count += 1;
                let fails = point[0] > 0.6 || count % 7 == 0;
                let value = (!fails).then(|| point.iter().map(|v| (v - 0.3).powi(2)).sum());
                Told::scalar(point, value)
            })
            .collect();
        es.tell(&results);
    }
    assert!(es.best().unwrap().1 < 1e-10, "{:?}", es.best());

    // An all-failed generation, a NaN-only one, and a partial tell below mu change nothing but
    // the evaluation count.
    let before = es.clone();
    let failed = |points: Vec<Vec<f64>>, value| -> Vec<Told> {
        points
            .into_iter()
            .map(|point| Told::scalar(point, value))
            .collect()
    };
    let points = es.ask();
    es.tell(&failed(points, None));
    let points = es.ask();
    es.tell(&failed(points, Some(f64::NAN)));
    let points = es.ask();
    let few = es.popsize() / 2 - 1;
    es.tell(&failed(points[..few].to_vec(), Some(1.0)));
    assert_eq!(es.mean(), before.mean());
    assert_eq!(es.sigma(), before.sigma());
    assert_eq!(es.generation(), before.generation());
    let lambda = es.popsize() as u64;
    assert_eq!(
        es.evaluations(),
        before.evaluations() + 2 * lambda + few as u64
    );
    // Telling without a pending generation is ignored; a partial tell of mu or more updates.
    es.tell(&failed(vec![vec![0.5; 5]], Some(0.0)));
    assert_eq!(
        es.evaluations(),
        before.evaluations() + 2 * lambda + few as u64
    );
    let points = es.ask();
    let half = es.popsize() / 2;
    let results: Vec<Told> = points[..half]
        .iter()
        .map(|p| Told::scalar(p.clone(), Some(sphere(p))))
        .collect();
    es.tell(&results);
    assert_eq!(es.generation(), before.generation() + 1);
    assert!(es.sigma().is_finite() && es.mean().iter().all(|m| m.is_finite()));
    assert_eq!(es.ask().len(), es.popsize());
}

#[test]
fn a_json_round_trip_after_every_step_does_not_change_a_single_bit() {
    let mut plain = Cmaes::new(
        4,
        CmaesOptions {
            seed: 8,
            ..CmaesOptions::default()
        },
    )
    .unwrap();
    let mut resumed = plain.clone();
    let round_trip = |es: &Cmaes| -> Cmaes {
        let json = serde_json::to_string(es).unwrap();
        let back: Cmaes = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, es);
        back
    };
    while plain.restarts() < 2 && plain.evaluations() < 50_000 {
        let a = plain.ask();
        // Snapshot between ask and tell too.
        resumed = round_trip(&resumed);
        let b = resumed.ask();
        let bits =
            |p: &[Vec<f64>]| -> Vec<u64> { p.iter().flatten().map(|x| x.to_bits()).collect() };
        assert!(bits(&a) == bits(&b), "generation {}", plain.generation());
        resumed = round_trip(&resumed);
        tell_all(&mut plain, &a, rastrigin_cube);
        tell_all(&mut resumed, &b, rastrigin_cube);
    }
    assert_eq!(plain.restarts(), 2);
    assert_eq!(round_trip(&resumed), plain);
}

#[test]
fn a_state_saved_before_active_cma_resumes_with_positive_weights_only() {
    let mut es = Cmaes::new(5, CmaesOptions::default()).unwrap();
    let points = es.ask();
    let mut json = serde_json::to_value(&es).unwrap();
    let params = json["params"].as_object_mut().unwrap();
    assert!(params.remove("negative").is_some());
    let mut old: Cmaes = serde_json::from_value(json).unwrap();
    assert!(old.params.negative.is_empty());
    assert!(es.params.negative.iter().all(|w| *w < 0.0));
    // The same generation told to both: the mean and step size move alike (they use only the
    // positive weights), the covariance differs by the active update alone.
    tell_all(&mut es, &points, sphere);
    tell_all(&mut old, &points, sphere);
    assert_eq!(old.mean(), es.mean());
    assert_eq!(old.sigma(), es.sigma());
    assert_ne!(old.cov, es.cov);
    let sum: f64 = es.params.negative.iter().sum();
    assert!(sum < -0.5 && sum > -2.0, "negative weights sum to {sum}");
}

#[test]
fn options_are_validated_and_errors_name_the_option() {
    let err = |dim, options| Cmaes::new(dim, options).unwrap_err().to_string();
    let default = CmaesOptions::default;
    assert!(err(0, default()).contains("`dim`"));
    for sigma in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = err(2, CmaesOptions { sigma, ..default() });
        assert!(e.contains("`sigma`"), "{e}");
    }
    let e = err(
        2,
        CmaesOptions {
            popsize: Some(1),
            ..default()
        },
    );
    assert!(e.contains("`popsize`"), "{e}");
    let e = err(
        2,
        CmaesOptions {
            mean: Some(vec![0.5]),
            ..default()
        },
    );
    assert!(e.contains("`mean`") && e.contains("2 coordinates"), "{e}");
    let e = err(
        2,
        CmaesOptions {
            mean: Some(vec![0.5, 1.5]),
            ..default()
        },
    );
    assert!(e.contains("`mean`") && e.contains("[0, 1]"), "{e}");
    let unbounded = CmaesOptions {
        mean: Some(vec![0.5, 1.5]),
        bounded: false,
        ..default()
    };
    assert!(Cmaes::new(2, unbounded).is_ok());
    let e = err(
        2,
        CmaesOptions {
            max_restarts: 21,
            ..default()
        },
    );
    assert!(e.contains("`max_restarts`"), "{e}");
    let e = err(
        2,
        CmaesOptions {
            tolfun: -1.0,
            ..default()
        },
    );
    assert!(e.contains("`tolfun`"), "{e}");
    let e = err(
        2,
        CmaesOptions {
            tolx: f64::NAN,
            ..default()
        },
    );
    assert!(e.contains("`tolx`"), "{e}");
    let es = Cmaes::new(
        2,
        CmaesOptions {
            popsize: Some(2),
            ..default()
        },
    )
    .unwrap();
    assert_eq!(es.popsize(), 2);
    assert_eq!(es.dim(), 2);
}

#[test]
fn reflection_folds_every_real_into_the_cube() {
    for (y, x, mirrored) in [
        (0.25, 0.25, false),
        (1.25, 0.75, true),
        (-0.25, 0.25, true),
        (2.25, 0.25, false),
        (-1.75, 0.25, false),
        (3.0, 1.0, false),
        (-2.0, 0.0, false),
        (1e300, 0.0, false),
    ] {
        assert_eq!(fold(y), (x, mirrored), "{y}");
        assert_eq!(reflect(y), x);
    }
    assert_eq!(fold(-1e-20), (1e-20, true));
    let (x, mirrored) = fold(1.0 + 1e-15);
    assert!(mirrored && x < 1.0 && x > 1.0 - 2e-15);
}
