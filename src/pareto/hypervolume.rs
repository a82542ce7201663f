//! The hypervolume indicator: the volume a set of points (maximized form) dominates above a
//! reference point, the one number by which a multi-objective search's progress is measured.
//!
//! Every algorithm is exact. Points are first shifted so that the reference is the origin, and
//! those not strictly above it in every objective are dropped; what is left is the volume of a
//! union of boxes `[0, p]`, computed per number of objectives `d`:
//!
//! * 1: the largest value;
//! * 2: a sweep in O(n log n) (`hv2`);
//! * 3: a sweep over the third objective keeping a 2-D staircase, in O(n log n) (`hv3`);
//! * 4 and more: WFG (While, Bradstreet and Barone 2012) slicing the last objective, down to the
//!   3-D sweep (`wfg`).

use super::hv3::hv3;
use super::wfg::{non_dominated, wfg};
use super::{ParetoError, check_points, checked_dim};

/// The hypervolume of `points` (maximized form) with respect to `reference`: the volume of the
/// union of the boxes between `reference` and each point.
///
/// A point that is not strictly greater than `reference` in every objective contributes
/// nothing; duplicates and dominated points are allowed. No points give 0. Errors when the
/// reference is empty or not finite, or when a point's number of objectives differs from the
/// reference's or it holds a non-finite value.
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> Result<f64, ParetoError> {
    if reference.is_empty() {
        return Err(ParetoError::NoObjectives);
    }
    if let Some((objective, &value)) = reference.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(ParetoError::NonFiniteReference { objective, value });
    }
    check_points(points, reference.len())?;
    let mut coords = Vec::with_capacity(points.len() * reference.len());
    for point in points {
        if point.iter().zip(reference).all(|(v, r)| v > r) {
            coords.extend(point.iter().zip(reference).map(|(v, r)| v - r));
        }
    }
    Ok(union_volume(&coords, reference.len()))
}

/// The default reference point for `points` (maximized form): in each objective, the worst
/// (smallest) value minus 10% of the objective's range, or minus 1e-9 where the range is 0; the
/// next smaller `f64` where that offset is lost to rounding. Every point is then strictly above
/// the reference in every objective (see the module docs of [`pareto`](super)).
///
/// Errors when there are no points, or as [`non_dominated_sort`](super::non_dominated_sort)
/// does.
pub fn reference_point(points: &[Vec<f64>]) -> Result<Vec<f64>, ParetoError> {
    let dim = checked_dim(points)?;
    if points.is_empty() {
        return Err(ParetoError::NoPoints);
    }
    Ok((0..dim)
        .map(|objective| {
            let values = points.iter().map(|p| p[objective]);
            let low = values.clone().fold(f64::INFINITY, f64::min);
            let high = values.fold(f64::NEG_INFINITY, f64::max);
            let offset = if high > low { 0.1 * (high - low) } else { 1e-9 };
            let reference = low - offset;
            if reference < low {
                reference
            } else {
                low.next_down()
            }
        })
        .collect())
}

/// The volume of the union of the boxes `[0, p]` for the points of `coords` (`dim` coordinates
/// each, all positive and finite).
pub(super) fn union_volume(coords: &[f64], dim: usize) -> f64 {
    match dim {
        1 => coords.iter().copied().fold(0.0, f64::max),
        2 => hv2(coords),
        3 => hv3(coords),
        _ => wfg(&non_dominated(coords, dim), dim),
    }
}

/// The 2-D union volume of `coords` (pairs, all positive): sorted by the first objective
/// descending, each point rising above the highest so far adds the strip between the two.
pub(super) fn hv2(coords: &[f64]) -> f64 {
    let mut points: Vec<(f64, f64)> = coords.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    points.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let (mut top, mut area) = (0.0, 0.0);
    for (x, y) in points {
        if y > top {
            area += x * (y - top);
            top = y;
        }
    }
    area
}

#[cfg(test)]
#[path = "hypervolume_tests.rs"]
mod tests;
