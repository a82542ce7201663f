//! Helpers shared by the optimizers' tests: telling a vector function's values and running an
//! optimizer on one, and the hypervolume of minimized objective vectors.

use super::{Optimizer, Told};
use crate::pareto::hypervolume;

/// The results of evaluating `f` (minimized objectives; the first is the value) at `points`.
pub fn told(points: Vec<Vec<f64>>, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<Told> {
    points
        .into_iter()
        .map(|point| {
            let objectives = f(&point);
            Told {
                value: Some(objectives[0]),
                objectives: Some(objectives),
                point,
                rung: 0,
            }
        })
        .collect()
}

/// Runs `optimizer` for `evaluations` evaluations of `f`; returns every objective vector seen.
pub fn run(
    optimizer: &mut dyn Optimizer,
    f: fn(&[f64]) -> Vec<f64>,
    evaluations: usize,
) -> Vec<Vec<f64>> {
    let mut seen = Vec::new();
    while seen.len() < evaluations {
        let mut points = optimizer.ask();
        points.truncate(evaluations - seen.len());
        let results = told(points, f);
        seen.extend(results.iter().map(|t| t.objectives.clone().unwrap()));
        optimizer.tell(&results);
    }
    seen
}

/// The hypervolume of minimized objective vectors below the minimized reference `reference`.
pub fn hv_min(values: &[Vec<f64>], reference: &[f64]) -> f64 {
    let points: Vec<Vec<f64>> = values
        .iter()
        .map(|v| v.iter().map(|x| -x).collect())
        .collect();
    let reference: Vec<f64> = reference.iter().map(|x| -x).collect();
    hypervolume(&points, &reference).unwrap()
}
