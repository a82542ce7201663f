use super::quadratic::{Basis, Scales, Validation, feature_count};
use super::*;
use crate::optim::RandomSearch;
use crate::optim::test_support::{hv_min, run, told};
use rand_distr::StandardNormal;

fn uniform(rng: &mut Rng, n: usize, dim: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| (0..dim).map(|_| rng.random::<f64>()).collect())
        .collect()
}

const UNIT: Scales = Scales {
    linear: 1.0,
    square: 1.0,
    interaction: 1.0,
};

/// Two quadratics in 6-D: squared distances to (0.2, ..) and (0.7, 0.3, ..) (minimized).
fn two_bowls(x: &[f64]) -> Vec<f64> {
    let a = [0.2, 0.2, 0.2, 0.2, 0.2, 0.2];
    let b = [0.7, 0.3, 0.8, 0.6, 0.9, 0.5];
    let d = |c: &[f64]| x.iter().zip(c).map(|(u, v)| (u - v) * (u - v)).sum::<f64>();
    vec![d(&a), d(&b)]
}

/// Small inner NSGA-II settings keep the debug-build tests fast.
fn quick(variant: MapVariant) -> MapOptions {
    MapOptions {
        variant,
        population: 40,
        generations: 40,
        ..MapOptions::default()
    }
}

#[test]
fn ridge_fit_recovers_an_exact_quadratic() {
    let f = |x: &[f64]| {
        1.0 + 2.0 * x[0] - x[1] + 3.0 * x[0] * x[0] + 0.5 * x[1] * x[2] - 2.0 * x[2] * x[2]
    };
    let mut rng = Rng::new(1);
    let points = uniform(&mut rng, 30, 3);
    assert!(points.len() > feature_count(3)); // the primal branch
    let y: Vec<f64> = points.iter().map(|x| f(x)).collect();
    for validation in [Validation::LeaveOneOut, Validation::Generalized] {
        let basis = Basis::new(&points, UNIT);
        let fit = basis.fit(&y, validation);
        for x in uniform(&mut rng, 50, 3) {
            assert!((fit.predict(&x) - f(&x)).abs() < 1e-5, "{validation:?}");
        }
        // Almost no posterior variance left where the data are.
        let v = basis.variance(&fit, &points[0]);
        assert!(v < 1e-6, "{v}");
    }
    // The dual branch (fewer points than features): a separable bowl in 6-D from 20 points is
    // still predicted well, MAP choosing how much the interactions count by cross-validation.
    let bowl = |x: &[f64]| {
        x.iter()
            .enumerate()
            .map(|(i, v)| (v - 0.1 * i as f64).powi(2))
            .sum::<f64>()
    };
    let mut map = Map::new(6, 4, 0, MapOptions::default()).unwrap();
    let points = uniform(&mut rng, 20, 6);
    assert!(points.len() < feature_count(6));
    let results: Vec<Told> = points
        .iter()
        .map(|x| Told::scalar(x.clone(), Some(bowl(x))))
        .collect();
    map.tell(&results);
    let surrogate = map.fit(20).unwrap();
    assert_eq!(surrogate.bases.len(), 4);
    // The interactions are switched off: the bowl has none.
    assert_eq!(surrogate.fits[0].0, 0);
    let test = uniform(&mut rng, 200, 6);
    let truth: Vec<f64> = test.iter().map(|x| bowl(x)).collect();
    let mean = truth.iter().sum::<f64>() / truth.len() as f64;
    let total: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let error: f64 = test
        .iter()
        .zip(&truth)
        .map(|(x, t)| (surrogate.predict(x)[0] - t).powi(2))
        .sum();
    assert!(error / total < 0.01, "R² = {}", 1.0 - error / total);
}

#[test]
fn cross_validation_picks_a_sensible_ridge() {
    let mut rng = Rng::new(7);
    let points = uniform(&mut rng, 40, 3);
    let basis = Basis::new(&points, UNIT);
    let exact: Vec<f64> = points.iter().map(|x| x[0] * x[1] + x[2] * x[2]).collect();
    let noise: Vec<f64> = points
        .iter()
        .map(|_| rng.sample::<f64, _>(StandardNormal))
        .collect();
    let noisy: Vec<f64> = exact
        .iter()
        .zip(&noise)
        .map(|(e, n)| e + 0.05 * n)
        .collect();
    for validation in [Validation::LeaveOneOut, Validation::Generalized] {
        let exact_fit = basis.fit(&exact, validation);
        let noise_fit = basis.fit(&noise, validation);
        let noisy_fit = basis.fit(&noisy, validation);
        // Pure noise: the strongest ridge, so predictions barely move from the mean; an exact
        // quadratic: (almost) none; noise on a quadratic: in between.
        assert!(noise_fit.lambda > 1e6 * exact_fit.lambda, "{validation:?}");
        assert!(noisy_fit.lambda > exact_fit.lambda, "{validation:?}");
        assert!(noisy_fit.lambda < noise_fit.lambda, "{validation:?}");
        let mean = noise.iter().sum::<f64>() / noise.len() as f64;
        let wobble = uniform(&mut rng, 20, 3)
            .iter()
            .map(|x| (noise_fit.predict(x) - mean).abs())
            .fold(0.0f64, f64::max);
        assert!(wobble < 0.5, "{validation:?}: {wobble}");
        // The noisy fit is closer to the truth than the noise is.
        let error = points
            .iter()
            .zip(&exact)
            .map(|(x, e)| (noisy_fit.predict(x) - e).powi(2))
            .sum::<f64>()
            / points.len() as f64;
        assert!(error < 0.05 * 0.05, "{validation:?}: {error}");
    }
}

#[test]
fn beats_random_search_on_two_quadratics_and_predicts_them() {
    let reference = [3.0, 3.0];
    let (dim, batch, evaluations) = (6, 4, 40);
    for variant in [MapVariant::Plain, MapVariant::Bayes] {
        let mut wins = 0;
        for seed in 0..5 {
            let mut map = Map::new(dim, batch, seed, quick(variant)).unwrap();
            let mut random = RandomSearch::new(dim, batch, seed).unwrap();
            let hv_map = hv_min(&run(&mut map, two_bowls, evaluations), &reference);
            let hv_random = hv_min(&run(&mut random, two_bowls, evaluations), &reference);
            wins += usize::from(hv_map > hv_random);
            // The surrogates of the last batch predict the bowls closely.
            let mut rng = Rng::new(seed);
            for x in uniform(&mut rng, 20, dim) {
                let predicted = map.predict(&x).unwrap();
                let measured = two_bowls(&x);
                for (p, m) in predicted.iter().zip(&measured) {
                    assert!((p - m).abs() < 0.05, "{variant:?} {seed}: {p} vs {m}");
                }
            }
        }
        assert!(
            wins >= 4,
            "{variant:?} beat random search on {wins} of 5 seeds"
        );
    }
}

/// Not a quadratic: the surrogates stay uncertain.
fn wavy(x: &[f64]) -> Vec<f64> {
    let s: f64 = x.iter().map(|v| (3.0 * v).sin()).sum();
    let t: f64 = x.iter().map(|v| (v - 0.6).abs()).sum();
    vec![s + x[0], t - x[0]]
}

#[test]
fn the_bayesian_variant_proposes_where_the_surrogate_is_uncertain() {
    let mut wins = 0;
    for seed in 0..5 {
        let mut plain = Map::new(4, 6, seed, quick(MapVariant::Plain)).unwrap();
        let mut bayes = Map::new(4, 6, seed, quick(MapVariant::Bayes)).unwrap();
        for _ in 0..2 {
            let points = plain.ask();
            assert_eq!(points, bayes.ask());
            plain.tell(&told(points.clone(), wavy));
            bayes.tell(&told(points, wavy));
        }
        assert_eq!(plain.initial_size(), 12);
        let from_plain = plain.ask();
        let from_bayes = bayes.ask();
        // The same data, so the same surrogates.
        assert_eq!(plain.ridge_strengths(), bayes.ridge_strengths());
        let mean_variance = |points: &[Vec<f64>]| {
            points
                .iter()
                .map(|x| bayes.predictive_variance(x).unwrap().iter().sum::<f64>())
                .sum::<f64>()
                / points.len() as f64
        };
        if mean_variance(&from_bayes) > mean_variance(&from_plain) {
            wins += 1;
        }
    }
    assert!(
        wins >= 4,
        "bayes proposed more uncertain points on {wins} of 5 seeds"
    );
}

#[test]
fn one_objective_finds_the_bowl_bottom() {
    fn sphere(x: &[f64]) -> Vec<f64> {
        vec![x.iter().map(|v| (v - 0.35) * (v - 0.35)).sum()]
    }
    for variant in [MapVariant::Plain, MapVariant::Bayes] {
        let mut wins = 0;
        for seed in 0..3 {
            let mut map = Map::new(4, 4, seed, quick(variant)).unwrap();
            let mut random = RandomSearch::new(4, 4, seed).unwrap();
            let best =
                |seen: Vec<Vec<f64>>| seen.iter().map(|v| v[0]).fold(f64::INFINITY, f64::min);
            let best_map = best(run(&mut map, sphere, 24));
            let best_random = best(run(&mut random, sphere, 24));
            wins += usize::from(best_map < best_random);
            assert!(best_map < 1e-3, "{variant:?} {seed}: {best_map}");
            let points = map.ask();
            assert_eq!(points.len(), 4);
        }
        assert_eq!(wins, 3, "{variant:?}");
    }
}

#[test]
fn state_survives_json_and_asks_the_same_points() {
    for variant in [MapVariant::Plain, MapVariant::Bayes] {
        let mut a = Map::new(3, 4, 5, quick(variant)).unwrap();
        for round in 0..5 {
            let json = serde_json::to_string(&a).unwrap();
            let mut b: Map = serde_json::from_str(&json).unwrap();
            assert_eq!(b, a, "{round}");
            let probe = [0.3, 0.6, 0.9];
            assert_eq!(b.predict(&probe), a.predict(&probe));
            let points = a.ask();
            assert_eq!(b.ask(), points, "{round}");
            assert!(points.iter().flatten().all(|x| (0.0..=1.0).contains(x)));
            // Asked but not yet told: predictions still come from the proposing surrogates.
            let json = serde_json::to_string(&a).unwrap();
            let c: Map = serde_json::from_str(&json).unwrap();
            assert_eq!(c.predict(&probe), a.predict(&probe));
            a.tell(&told(points, two_bowls));
        }
        assert!(a.predict(&[0.5; 3]).is_some());
    }
}

#[test]
fn failed_trials_fit_nothing_and_are_not_proposed_again() {
    let mut map = Map::new(2, 4, 0, quick(MapVariant::Plain)).unwrap();
    assert_eq!(map.initial_size(), 8);
    assert!(map.predict(&[0.5, 0.5]).is_none());
    // The whole design fails: more uniform points, no surrogate.
    for _ in 0..2 {
        let points = map.ask();
        let failed: Vec<Told> = points
            .iter()
            .map(|p| Told::scalar(p.clone(), None))
            .collect();
        map.tell(&failed);
    }
    let points = map.ask();
    assert_eq!(points.len(), 4);
    assert!(map.predict(&[0.5, 0.5]).is_none());
    // Half of the next ones succeed: a surrogate, and proposals away from every known point.
    let mut results = told(points, two_bowls_2d);
    results[1].objectives = None;
    results[1].value = None;
    results[3].objectives = Some(vec![f64::INFINITY, 0.0]);
    map.tell(&results);
    let points = map.ask();
    let more = told(points, two_bowls_2d);
    map.tell(&more);
    let proposals = map.ask();
    assert!(map.predict(&[0.5, 0.5]).is_some());
    assert_eq!(proposals.len(), 4);
    for x in &proposals {
        for o in &map.history {
            let d = ((x[0] - o.point[0]).powi(2) + (x[1] - o.point[1]).powi(2)) / 2.0;
            assert!(d.sqrt() >= 0.01, "{x:?} repeats {:?}", o.point);
        }
    }
}

fn two_bowls_2d(x: &[f64]) -> Vec<f64> {
    vec![
        (x[0] - 0.2).powi(2) + (x[1] - 0.3).powi(2),
        (x[0] - 0.8).powi(2) + (x[1] - 0.6).powi(2),
    ]
}

#[test]
fn options_are_checked() {
    let bad = |options: MapOptions| Map::new(3, 4, 0, options).unwrap_err().to_string();
    assert!(
        bad(MapOptions {
            initial: Some(0),
            ..MapOptions::default()
        })
        .contains("`initial`")
    );
    assert!(
        bad(MapOptions {
            interaction_scale: Some(f64::NAN),
            ..MapOptions::default()
        })
        .contains("`interaction_scale`")
    );
    assert!(
        bad(MapOptions {
            duplicate_tolerance: -1.0,
            ..MapOptions::default()
        })
        .contains("`duplicate_tolerance`")
    );
    assert!(
        bad(MapOptions {
            population: 0,
            ..MapOptions::default()
        })
        .contains("`batch`")
    );
    assert!(Map::new(0, 4, 0, MapOptions::default()).is_err());
    assert_eq!(MapOptions::bayes().variant, MapVariant::Bayes);
    // The default design in 48 dimensions: 32 points, or whole batches of a wider batch.
    assert_eq!(
        Map::new(48, 8, 0, MapOptions::default())
            .unwrap()
            .initial_size(),
        32
    );
    assert_eq!(
        Map::new(48, 12, 0, MapOptions::default())
            .unwrap()
            .initial_size(),
        36
    );
    assert_eq!(
        Map::new(48, 1, 0, MapOptions::default())
            .unwrap()
            .initial_size(),
        32
    );
}
