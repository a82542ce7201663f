//! Tests of the hypervolume: hand-computed cases, and every exact algorithm against a brute
//! force over the grid the points' coordinates span.

use super::*;
use crate::pareto::hv3::hv3;
use crate::pareto::wfg::wfg;
use crate::rng::Rng;
use rand::Rng as _;
use rand_distr::StandardNormal;

/// The union volume by coordinate compression: the grid of every point's and the reference's
/// coordinates, summing the cells whose upper corner some point weakly dominates.
fn brute(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let dim = reference.len();
    let live: Vec<&Vec<f64>> = points
        .iter()
        .filter(|p| p.iter().zip(reference).all(|(v, r)| v > r))
        .collect();
    let axes: Vec<Vec<f64>> = (0..dim)
        .map(|k| {
            let mut axis: Vec<f64> = live.iter().map(|p| p[k]).collect();
            axis.push(reference[k]);
            axis.sort_by(f64::total_cmp);
            axis.dedup();
            axis
        })
        .collect();
    let cells: Vec<usize> = axes.iter().map(|a| a.len() - 1).collect();
    if cells.contains(&0) {
        return 0.0;
    }
    let mut cell = vec![0usize; dim];
    let mut total = 0.0;
    loop {
        let covered = live
            .iter()
            .any(|p| (0..dim).all(|k| p[k] >= axes[k][cell[k] + 1]));
        if covered {
            total += (0..dim)
                .map(|k| axes[k][cell[k] + 1] - axes[k][cell[k]])
                .product::<f64>();
        }
        // Next cell, odometer-style.
        let mut k = 0;
        while k < dim && cell[k] + 1 == cells[k] {
            cell[k] = 0;
            k += 1;
        }
        if k == dim {
            return total;
        }
        cell[k] += 1;
    }
}

/// The points strictly above `reference`, shifted so that it is the origin, flattened.
fn shifted(points: &[Vec<f64>], reference: &[f64]) -> Vec<f64> {
    points
        .iter()
        .filter(|p| p.iter().zip(reference).all(|(v, r)| v > r))
        .flat_map(|p| p.iter().zip(reference).map(|(v, r)| v - r))
        .collect()
}

/// `n` random points of `dim` objectives of one of three kinds: mutually non-dominated points
/// on a sphere, uniform points (many dominated), or points on a coarse grid with copies (ties
/// and duplicates).
fn random_points(rng: &mut Rng, kind: usize, n: usize, dim: usize) -> Vec<Vec<f64>> {
    let mut points: Vec<Vec<f64>> = Vec::with_capacity(n);
    for _ in 0..n {
        let point = match kind {
            0 => {
                let v: Vec<f64> = (0..dim)
                    .map(|_| rng.sample::<f64, _>(StandardNormal).abs() + 1e-3)
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            }
            1 => (0..dim).map(|_| rng.random::<f64>()).collect(),
            _ if !points.is_empty() && rng.random_range(0..4) == 0 => {
                points[rng.random_range(0..points.len())].clone()
            }
            _ => (0..dim)
                .map(|_| rng.random_range(0..5) as f64 / 4.0)
                .collect(),
        };
        points.push(point);
    }
    points
}

/// A reference point below most of the unit cube, above some points in some objectives.
fn random_reference(rng: &mut Rng, dim: usize) -> Vec<f64> {
    (0..dim).map(|_| 0.3 * rng.random::<f64>() - 0.1).collect()
}

fn assert_close(got: f64, expected: f64, what: &str) {
    let error = (got - expected).abs() / expected.abs().max(1e-300);
    assert!(
        error < 1e-9 || got == expected,
        "{what}: got {got}, expected {expected} (relative error {error:e})"
    );
}

/// Up to how many points each dimension's brute force stays fast.
fn brute_size(dim: usize) -> usize {
    match dim {
        1 | 2 => 60,
        3 => 30,
        4 => 16,
        _ => 10,
    }
}

#[test]
fn every_algorithm_matches_brute_force() {
    for seed in 0..8 {
        let mut rng = Rng::new(100 + seed);
        for dim in 1..=5 {
            for kind in 0..3 {
                let n = 1 + rng.random_range(0..brute_size(dim));
                let points = random_points(&mut rng, kind, n, dim);
                let reference = random_reference(&mut rng, dim);
                let expected = brute(&points, &reference);
                let what = format!("seed {seed} dim {dim} kind {kind} n {n}");
                let got = hypervolume(&points, &reference).unwrap();
                assert_close(got, expected, &format!("hypervolume, {what}"));
                let coords = shifted(&points, &reference);
                if dim >= 2 {
                    assert_close(wfg(&coords, dim), expected, &format!("wfg, {what}"));
                }
                match dim {
                    2 => assert_close(hv2(&coords), expected, &format!("hv2, {what}")),
                    3 => assert_close(hv3(&coords), expected, &format!("hv3, {what}")),
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn larger_fronts_agree_across_algorithms_and_objective_orders() {
    let mut rng = Rng::new(5);
    let points = random_points(&mut rng, 0, 300, 3);
    let coords = shifted(&points, &[0.0; 3]);
    assert_close(hv3(&coords), wfg(&coords, 3), "hv3 against wfg, 300 points");
    for dim in [4, 5] {
        let points = random_points(&mut rng, 0, 60, dim);
        let reference = vec![0.0; dim];
        let volume = hypervolume(&points, &reference).unwrap();
        // The slicing order differs; the volume must not.
        let rotated: Vec<Vec<f64>> = points
            .iter()
            .map(|p| p.iter().cycle().skip(1).take(dim).copied().collect())
            .collect();
        let again = hypervolume(&rotated, &reference).unwrap();
        assert_close(again, volume, &format!("rotated objectives, dim {dim}"));
    }
}

#[test]
fn hand_computed() {
    let hv = |points: &[Vec<f64>], reference: &[f64]| hypervolume(points, reference).unwrap();
    assert_eq!(hv(&[vec![3.0], vec![1.0], vec![-1.0]], &[0.0]), 3.0);
    // 2-D staircase.
    let stairs = [vec![1.0, 3.0], vec![2.0, 2.0], vec![3.0, 1.0]];
    assert_eq!(hv(&stairs, &[0.0, 0.0]), 6.0);
    assert_eq!(hv(&stairs, &[0.5, 0.5]), 3.25);
    // 3-D boxes.
    assert_eq!(hv(&[vec![1.0, 2.0, 3.0]], &[0.0; 3]), 6.0);
    assert_eq!(
        hv(&[vec![2.0, 1.0, 1.0], vec![1.0, 2.0, 1.0]], &[0.0; 3]),
        3.0
    );
    assert_eq!(
        hv(&[vec![1.0, 1.0, 2.0], vec![2.0, 2.0, 1.0]], &[0.0; 3]),
        5.0
    );
    let corners = [
        vec![2.0, 1.0, 1.0],
        vec![1.0, 2.0, 1.0],
        vec![1.0, 1.0, 2.0],
    ];
    assert_eq!(hv(&corners, &[0.0; 3]), 4.0);
    assert_eq!(hv(&[vec![3.0, 3.0, 3.0]], &[1.0; 3]), 8.0);
    // 4-D: four unit boxes stretched along one axis each, by inclusion–exclusion.
    let arms: Vec<Vec<f64>> = (0..4)
        .map(|k| (0..4).map(|j| if j == k { 2.0 } else { 1.0 }).collect())
        .collect();
    assert_eq!(hv(&arms, &[0.0; 4]), 5.0);
    // Duplicates and dominated points add nothing.
    let mut crowded = corners.to_vec();
    crowded.extend([vec![2.0, 1.0, 1.0], vec![0.5, 0.5, 0.5]]);
    assert_eq!(hv(&crowded, &[0.0; 3]), 4.0);
    assert_eq!(hv(&[], &[0.0; 3]), 0.0);
}

#[test]
fn points_not_above_the_reference_are_ignored() {
    let hv = |points: &[Vec<f64>], reference: &[f64]| hypervolume(points, reference).unwrap();
    assert_eq!(hv(&[vec![5.0, 0.0]], &[0.0, 0.0]), 0.0);
    assert_eq!(hv(&[vec![1.0, 1.0], vec![5.0, -1.0]], &[0.0, 0.0]), 1.0);
    assert_eq!(hv(&[vec![0.0, 0.0, 0.0]], &[0.0; 3]), 0.0);
    let far = vec![9.0, 9.0, 9.0, -1.0, 9.0];
    assert_eq!(hv(&[vec![1.0; 5], far], &[0.0; 5]), 1.0);
}

#[test]
fn bad_input_is_an_error() {
    assert_eq!(hypervolume(&[], &[]), Err(ParetoError::NoObjectives));
    assert!(matches!(
        hypervolume(&[vec![1.0]], &[f64::NAN]),
        Err(ParetoError::NonFiniteReference { objective: 0, .. })
    ));
    assert_eq!(
        hypervolume(&[vec![1.0, 2.0]], &[0.0]),
        Err(ParetoError::Dimension {
            index: 0,
            expected: 1,
            got: 2
        })
    );
    assert!(matches!(
        hypervolume(&[vec![f64::INFINITY]], &[0.0]),
        Err(ParetoError::NonFinite { .. })
    ));
    assert_eq!(reference_point(&[]), Err(ParetoError::NoPoints));
}

#[test]
fn default_reference_point() {
    let points = [vec![0.0, 10.0], vec![1.0, 5.0]];
    let reference = reference_point(&points).unwrap();
    assert_close(reference[0], -0.1, "objective 0");
    assert_close(reference[1], 4.5, "objective 1");
    // Zero range: 1e-9 below.
    assert_eq!(
        reference_point(&[vec![2.0, 3.0]]).unwrap(),
        vec![2.0 - 1e-9, 3.0 - 1e-9]
    );
    // Where 1e-9 is lost to rounding, the next float down.
    let huge = reference_point(&[vec![1e12], vec![1e12]]).unwrap();
    assert_eq!(huge, vec![1e12_f64.next_down()]);
    // Every point then spans volume, even the extremes.
    let mut rng = Rng::new(3);
    let points = random_points(&mut rng, 0, 20, 3);
    let reference = reference_point(&points).unwrap();
    for point in &points {
        assert!(hypervolume(std::slice::from_ref(point), &reference).unwrap() > 0.0);
    }
}
