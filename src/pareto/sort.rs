//! Non-dominated sorting and crowding distance (Deb, Pratap, Agarwal and Meyarivan 2002,
//! NSGA-II): the ranking a multi-objective search selects by when no single best exists. Points
//! are in maximized form (see [`maximized`](super::maximized)).

use super::dominance::{Relation, relation};
use super::{ParetoError, checked_dim};

/// The fronts of `points` (maximized form) by fast non-dominated sorting: front 0 holds the
/// non-dominated points, front `k` those dominated only by points of fronts before `k`. Each
/// front lists point indices in ascending order; every point is in exactly one front.
///
/// O(d n²) time for `n` points of `d` objectives, O(n²) memory in the worst case. Errors when
/// points differ in their number of objectives, have none, or hold a non-finite value.
pub fn non_dominated_sort(points: &[Vec<f64>]) -> Result<Vec<Vec<usize>>, ParetoError> {
    checked_dim(points)?;
    let n = points.len();
    // For each point: the points it dominates, and how many points dominate it.
    let mut dominated: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut dominators = vec![0usize; n];
    for i in 0..n {
        for j in i + 1..n {
            match relation(&points[i], &points[j]) {
                Relation::Dominates => {
                    dominated[i].push(j);
                    dominators[j] += 1;
                }
                Relation::Dominated => {
                    dominated[j].push(i);
                    dominators[i] += 1;
                }
                Relation::Neither => {}
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominators[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominated[i] {
                dominators[j] -= 1;
                if dominators[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        fronts.push(std::mem::replace(&mut current, next));
    }
    Ok(fronts)
}

/// The indices, ascending, of the non-dominated points of `points` (maximized form): front 0
/// of [`non_dominated_sort`], without sorting the rest. Equal non-dominated points are all
/// kept. Errors as [`non_dominated_sort`] does.
pub fn front_indices(points: &[Vec<f64>]) -> Result<Vec<usize>, ParetoError> {
    checked_dim(points)?;
    Ok((0..points.len())
        .filter(|&i| {
            points
                .iter()
                .all(|other| relation(other, &points[i]) != Relation::Dominates)
        })
        .collect())
}

/// The crowding distance of each member of `front` (indices into `points`, maximized form), in
/// the order of `front`: the sum over objectives of the gap between a member's neighbours in
/// that objective, divided by the objective's range within the front.
///
/// The members holding the smallest or the largest value of an objective get an infinite
/// distance; an objective whose values are all equal within the front contributes 0 (so a front
/// of coinciding points gets 0 everywhere). Members with equal values are treated alike: a
/// member's neighbours are the nearest *different* values above and below, so the result does
/// not depend on the order of `front`. Errors when `front` names a point that does not exist,
/// or as [`non_dominated_sort`] does.
pub fn crowding_distance(points: &[Vec<f64>], front: &[usize]) -> Result<Vec<f64>, ParetoError> {
    let dim = checked_dim(points)?;
    if let Some(&index) = front.iter().find(|&&i| i >= points.len()) {
        return Err(ParetoError::IndexOutOfRange {
            index,
            len: points.len(),
        });
    }
    let mut distance = vec![0.0; front.len()];
    let mut columns = vec![Vec::with_capacity(front.len()); dim];
    for &i in front {
        for (column, &value) in columns.iter_mut().zip(&points[i]) {
            column.push(value);
        }
    }
    for column in &columns {
        add_crowding(column, &mut distance);
    }
    Ok(distance)
}

/// Adds one objective's crowding contributions, given the members' values in `column`, to
/// their `distance`s.
fn add_crowding(column: &[f64], distance: &mut [f64]) {
    let mut values = column.to_vec();
    values.sort_unstable_by(f64::total_cmp);
    values.dedup();
    let (Some(&low), Some(&high)) = (values.first(), values.last()) else {
        return;
    };
    let range = high - low;
    if range == 0.0 {
        return;
    }
    for (d, &value) in distance.iter_mut().zip(column) {
        if value == low || value == high {
            *d = f64::INFINITY;
        } else {
            // Interior, so both neighbours exist.
            let at = values.partition_point(|&v| v < value);
            *d += (values[at + 1] - values[at - 1]) / range;
        }
    }
}

#[cfg(test)]
#[path = "sort_tests.rs"]
mod tests;
