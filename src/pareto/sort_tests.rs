//! Tests of non-dominated sorting against a brute-force peeling, and of crowding distance.

use super::*;
use crate::pareto::dominance::{Relation, relation};
use crate::rng::Rng;
use rand::Rng as _;

/// Random points in `[0, 1)^dim`; with `levels > 0` quantized to that many levels (ties), and
/// about a fifth of them exact copies of earlier points (duplicates).
fn random_points(rng: &mut Rng, n: usize, dim: usize, levels: usize) -> Vec<Vec<f64>> {
    let mut points: Vec<Vec<f64>> = Vec::with_capacity(n);
    for _ in 0..n {
        if !points.is_empty() && rng.random_range(0..5) == 0 {
            let copy = points[rng.random_range(0..points.len())].clone();
            points.push(copy);
            continue;
        }
        points.push(
            (0..dim)
                .map(|_| match levels {
                    0 => rng.random::<f64>(),
                    _ => rng.random_range(0..levels) as f64 / levels as f64,
                })
                .collect(),
        );
    }
    points
}

/// Each point's front by repeatedly peeling off the points no remaining point dominates.
fn brute_ranks(points: &[Vec<f64>]) -> Vec<usize> {
    let mut rank = vec![usize::MAX; points.len()];
    let mut level = 0;
    while rank.contains(&usize::MAX) {
        let remaining: Vec<usize> = (0..points.len())
            .filter(|&i| rank[i] == usize::MAX)
            .collect();
        let peeled: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&i| {
                remaining
                    .iter()
                    .all(|&j| relation(&points[j], &points[i]) != Relation::Dominates)
            })
            .collect();
        for i in peeled {
            rank[i] = level;
        }
        level += 1;
    }
    rank
}

#[test]
fn sort_matches_brute_force() {
    for seed in 0..6 {
        let mut rng = Rng::new(seed);
        for dim in 2..=4 {
            for levels in [0, 3, 6] {
                let n = 20 + rng.random_range(0..60);
                let points = random_points(&mut rng, n, dim, levels);
                let fronts = non_dominated_sort(&points).unwrap();
                let mut rank = vec![usize::MAX; n];
                for (k, front) in fronts.iter().enumerate() {
                    assert!(!front.is_empty());
                    assert!(front.windows(2).all(|w| w[0] < w[1]), "not ascending");
                    for &i in front {
                        assert_eq!(rank[i], usize::MAX, "point {i} in two fronts");
                        rank[i] = k;
                    }
                }
                assert_eq!(rank, brute_ranks(&points), "seed {seed} dim {dim}");
                assert_eq!(front_indices(&points).unwrap(), fronts[0]);
            }
        }
    }
}

#[test]
fn sort_small_cases() {
    assert_eq!(non_dominated_sort(&[]).unwrap(), Vec::<Vec<usize>>::new());
    let points = vec![
        vec![1.0, 1.0],
        vec![2.0, 0.0],
        vec![0.0, 0.0],
        vec![1.0, 1.0],
        vec![0.5, 0.5],
    ];
    assert_eq!(
        non_dominated_sort(&points).unwrap(),
        vec![vec![0, 1, 3], vec![4], vec![2]]
    );
    assert_eq!(front_indices(&points).unwrap(), vec![0, 1, 3]);
}

#[test]
fn sort_rejects_bad_points() {
    assert_eq!(
        non_dominated_sort(&[vec![1.0], vec![1.0, 2.0]]),
        Err(ParetoError::Dimension {
            index: 1,
            expected: 1,
            got: 2
        })
    );
    assert_eq!(front_indices(&[vec![]]), Err(ParetoError::NoObjectives));
    assert!(matches!(
        non_dominated_sort(&[vec![f64::INFINITY]]),
        Err(ParetoError::NonFinite { .. })
    ));
}

#[test]
fn crowding_hand_computed() {
    // A 2-D front: x rises as y falls.
    let points = vec![
        vec![0.0, 4.0],
        vec![1.0, 3.0],
        vec![3.0, 1.0],
        vec![4.0, 0.0],
        vec![9.0, 9.0], // not in the front
    ];
    let d = crowding_distance(&points, &[2, 0, 3, 1]).unwrap();
    assert_eq!(d[1], f64::INFINITY);
    assert_eq!(d[2], f64::INFINITY);
    // Point 1: neighbours 0 and 3 in x (gap 3 / range 4), 3 and 0 in y (3 / 4).
    assert!((d[3] - 1.5).abs() < 1e-15);
    assert!((d[0] - 1.5).abs() < 1e-15);
}

#[test]
fn crowding_extremes_infinite_in_every_objective() {
    let mut rng = Rng::new(7);
    for dim in 2..=4 {
        let points = random_points(&mut rng, 30, dim, 0);
        let front: Vec<usize> = (0..points.len()).collect();
        let d = crowding_distance(&points, &front).unwrap();
        for objective in 0..dim {
            let values = points.iter().map(|p| p[objective]);
            let low = values.clone().fold(f64::INFINITY, f64::min);
            let high = values.fold(f64::NEG_INFINITY, f64::max);
            for (i, p) in points.iter().enumerate() {
                if p[objective] == low || p[objective] == high {
                    assert_eq!(d[i], f64::INFINITY);
                }
            }
        }
        assert!(d.iter().all(|&v| v >= 0.0));
        assert!(d.iter().any(|v| v.is_finite()));
    }
}

#[test]
fn crowding_zero_range_and_ties() {
    // Objective 1 is constant: it contributes nothing, and makes no member extreme.
    let points = vec![
        vec![0.0, 5.0],
        vec![1.0, 5.0],
        vec![3.0, 5.0],
        vec![4.0, 5.0],
    ];
    let d = crowding_distance(&points, &[0, 1, 2, 3]).unwrap();
    assert_eq!(d, vec![f64::INFINITY, 0.75, 0.75, f64::INFINITY]);
    // Coinciding points: all ranges are zero.
    let same = vec![vec![1.0, 2.0]; 3];
    assert_eq!(crowding_distance(&same, &[0, 1, 2]).unwrap(), vec![0.0; 3]);
    // Duplicates get equal distances whatever the order of the front.
    let tied = vec![
        vec![0.0, 2.0],
        vec![1.0, 1.0],
        vec![1.0, 1.0],
        vec![2.0, 0.0],
    ];
    let forward = crowding_distance(&tied, &[0, 1, 2, 3]).unwrap();
    let backward = crowding_distance(&tied, &[3, 2, 1, 0]).unwrap();
    assert_eq!(forward, vec![f64::INFINITY, 2.0, 2.0, f64::INFINITY]);
    assert_eq!(backward, vec![f64::INFINITY, 2.0, 2.0, f64::INFINITY]);
    assert_eq!(crowding_distance(&tied, &[]).unwrap(), Vec::<f64>::new());
    assert_eq!(
        crowding_distance(&tied, &[4]),
        Err(ParetoError::IndexOutOfRange { index: 4, len: 4 })
    );
}
