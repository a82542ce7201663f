use super::*;
use crate::optim::RandomSearch;
use crate::optim::test_support::{hv_min, run, told};

/// ZDT1 over `[0, 1]^d` (minimized): the front is `f2 = 1 - sqrt(f1)` at `x_2.. = 0`.
fn zdt1(x: &[f64]) -> Vec<f64> {
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
    vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
}

#[test]
fn beats_random_search_on_zdt1_for_most_seeds() {
    let reference = [1.1, 11.0];
    let (dim, batch, evaluations) = (10, 20, 600);
    let mut wins = 0;
    for seed in 0..5 {
        let mut nsga2 = Nsga2::new(dim, batch, seed, Nsga2Options::default()).unwrap();
        let mut random = RandomSearch::new(dim, batch, seed).unwrap();
        let hv_nsga2 = hv_min(&run(&mut nsga2, zdt1, evaluations), &reference);
        let hv_random = hv_min(&run(&mut random, zdt1, evaluations), &reference);
        if hv_nsga2 > hv_random {
            wins += 1;
        }
        // The true front's hypervolume is 11.1·1.1 - 1/3 ≈ 11.88 (a bound for both).
        assert!(hv_nsga2 < 11.88, "{hv_nsga2}");
    }
    assert!(wins >= 4, "nsga2 beat random search on {wins} of 5 seeds");
}

#[test]
fn minimize_front_approaches_the_zdt1_front() {
    let front = minimize_front(zdt1, 6, 40, 120, 3).unwrap();
    assert!(front.len() >= 10, "{}", front.len());
    // On the true front g = 1; close to it the gap to 1 - sqrt(f1) is small.
    let worst_gap = front
        .iter()
        .map(|(_, f)| f[1] - (1.0 - f[0].sqrt()))
        .fold(0.0f64, f64::max);
    assert!(worst_gap < 0.3, "{worst_gap}");
    let spread = front.iter().map(|(_, f)| f[0]).fold(0.0f64, f64::max)
        - front.iter().map(|(_, f)| f[0]).fold(1.0f64, f64::min);
    assert!(spread > 0.5, "{spread}");
    assert!(minimize_front(zdt1, 0, 40, 1, 3).is_err());
}

#[test]
fn one_objective_is_a_plain_ga() {
    // Sphere around 0.3 in 5-D.
    let sphere = |x: &[f64]| vec![x.iter().map(|v| (v - 0.3) * (v - 0.3)).sum::<f64>()];
    let mut ga = Nsga2::new(5, 20, 1, Nsga2Options::default()).unwrap();
    ga.evolve(sphere, 80);
    let front = ga.front();
    assert!(!front.is_empty());
    assert!(front[0].1[0] < 1e-3, "{:?}", front[0]);
}

#[test]
fn variation_keeps_points_in_the_cube_and_moves_them() {
    let mut rng = Rng::new(4);
    let variation = Variation {
        eta_c: 2.0,
        crossover_prob: 1.0,
        eta_m: 1.0,
        mutation_prob: 1.0,
    };
    let mut changed = 0;
    for _ in 0..2000 {
        let a: Vec<f64> = (0..4)
            .map(|i| match i {
                0 => 0.0,
                1 => 1.0,
                _ => rng.random::<f64>(),
            })
            .collect();
        let b: Vec<f64> = (0..4).map(|_| rng.random::<f64>()).collect();
        let (mut c1, mut c2) = variation.sbx(&a, &b, &mut rng);
        assert!(c1.iter().chain(&c2).all(|x| (0.0..=1.0).contains(x)));
        variation.mutate(&mut c1, &mut rng);
        variation.mutate(&mut c2, &mut rng);
        let mut c3 = a.clone();
        variation.mutate_one(&mut c3, &mut rng);
        assert!(
            c1.iter()
                .chain(&c2)
                .chain(&c3)
                .all(|x| (0.0..=1.0).contains(x))
        );
        changed += usize::from(c1 != a && c1 != b) + usize::from(c3 != a);
    }
    assert!(changed > 3900, "{changed}");
    // SBX children straddle their parents' centre on average.
    let mut total = 0.0;
    for _ in 0..2000 {
        let (c1, c2) = variation.sbx(&[0.4], &[0.6], &mut rng);
        total += c1[0] + c2[0];
    }
    assert!((total / 4000.0 - 0.5).abs() < 0.02, "{}", total / 4000.0);
    // The optimizer's own asks are in the cube and of the population size.
    let mut nsga2 = Nsga2::new(3, 7, 2, Nsga2Options::default()).unwrap();
    assert_eq!(nsga2.population_size(), 8);
    for _ in 0..5 {
        let points = nsga2.ask();
        assert_eq!(points.len(), 8);
        assert!(points.iter().flatten().all(|x| (0.0..=1.0).contains(x)));
        nsga2.tell(&told(points, zdt1));
    }
}

#[test]
fn state_survives_json_and_asks_the_same_points() {
    let mut a = Nsga2::new(4, 6, 11, Nsga2Options::default()).unwrap();
    for _ in 0..4 {
        let points = a.ask();
        a.tell(&told(points, zdt1));
        let json = serde_json::to_string(&a).unwrap();
        let mut b: Nsga2 = serde_json::from_str(&json).unwrap();
        assert_eq!(b, a);
        assert_eq!(b.ask(), a.clone().ask());
    }
    // Same seed, same trials; another seed, others.
    let first = Nsga2::new(4, 6, 11, Nsga2Options::default()).unwrap().ask();
    assert_eq!(
        first,
        Nsga2::new(4, 6, 11, Nsga2Options::default()).unwrap().ask()
    );
    assert_ne!(
        first,
        Nsga2::new(4, 6, 12, Nsga2Options::default()).unwrap().ask()
    );
}

#[test]
fn failed_trials_rank_below_every_success() {
    let mut nsga2 = Nsga2::new(2, 4, 0, Nsga2Options::default()).unwrap();
    let points = nsga2.ask();
    // Two succeed (one dominating the other), two fail: one as None, one non-finite.
    let results = vec![
        Told {
            point: points[0].clone(),
            value: Some(1.0),
            objectives: Some(vec![1.0, 1.0]),
            rung: 0,
        },
        Told {
            point: points[1].clone(),
            value: None,
            objectives: None,
            rung: 0,
        },
        Told {
            point: points[2].clone(),
            value: Some(2.0),
            objectives: Some(vec![2.0, 2.0]),
            rung: 0,
        },
        Told {
            point: points[3].clone(),
            value: Some(f64::NAN),
            objectives: Some(vec![f64::NAN, 0.0]),
            rung: 0,
        },
    ];
    nsga2.tell(&results);
    let (rank, _) = rank_and_crowd(&nsga2.parents);
    assert_eq!(rank, vec![0, 2, 1, 2]);
    assert_eq!(nsga2.front(), vec![(points[0].clone(), vec![1.0, 1.0])]);
    let population = nsga2.population();
    assert_eq!(population[1].1, None);
    // Successful children replace the failed parents.
    let children = nsga2.ask();
    nsga2.tell(&told(children, |x| vec![x[0] + 5.0, x[1] + 5.0]));
    assert!(nsga2.population().iter().all(|(_, f)| f.is_some()));
    // A whole failed batch keeps the parents; a wrong number of objectives counts as failed.
    let before = nsga2.population();
    let children = nsga2.ask();
    let failed: Vec<Told> = children
        .iter()
        .map(|p| Told {
            point: p.clone(),
            value: Some(0.0),
            objectives: Some(vec![0.0]),
            rung: 0,
        })
        .collect();
    nsga2.tell(&failed);
    assert_eq!(nsga2.population(), before);
    // An all-failed initial population still evolves.
    let mut nsga2 = Nsga2::new(2, 4, 0, Nsga2Options::default()).unwrap();
    let points = nsga2.ask();
    nsga2.tell(
        &points
            .iter()
            .map(|p| Told::scalar(p.clone(), None))
            .collect::<Vec<_>>(),
    );
    assert_eq!(nsga2.ask().len(), 4);
}

#[test]
fn options_are_checked() {
    let bad = |options: Nsga2Options| Nsga2::new(2, 4, 0, options).unwrap_err().to_string();
    assert!(
        bad(Nsga2Options {
            eta_c: -1.0,
            ..Default::default()
        })
        .contains("`eta_c`")
    );
    assert!(
        bad(Nsga2Options {
            mutation_prob: Some(1.5),
            ..Default::default()
        })
        .contains("`mutation_prob`")
    );
    assert!(Nsga2::new(0, 4, 0, Nsga2Options::default()).is_err());
    let seeded = Nsga2::new(2, 4, 0, Nsga2Options::default())
        .unwrap()
        .with_initial_points(vec![vec![2.0, -1.0]])
        .ask();
    assert_eq!(seeded[0], vec![1.0, 0.0]);
    assert_eq!(seeded.len(), 4);
}
