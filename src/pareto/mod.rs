//! Pareto dominance, non-dominated sorting and the hypervolume indicator, for searches with
//! several objectives.
//!
//! Why: when a merge is scored on more than one objective (accuracy on two tasks, or accuracy
//! against loss) there is usually no single best candidate, only trade-offs. A multi-objective
//! search therefore keeps the non-dominated candidates (the Pareto front), ranks the others by
//! how many fronts lie above them, spreads its picks along a front by crowding distance, and
//! measures its progress by the hypervolume the front dominates: one number that grows whenever
//! the front improves anywhere, so runs and optimizers can be compared.
//!
//! Conventions:
//!
//! * Objectives come with a [`Direction`](crate::eval::Direction). [`maximized`] turns points
//!   into "all maximized" form (minimized objectives negated) and checks them; everything else
//!   here works on that form, where larger is better in every objective.
//! * Point `a` dominates `b` when it is at least as good in every objective and strictly better
//!   in one ([`dominates`]); equal points do not dominate each other.
//! * The hypervolume of a set is the volume of the union of the boxes between the reference
//!   point and each point ([`hypervolume`]). A point that does not strictly exceed the reference
//!   in every objective spans no volume and contributes nothing.
//!
//! # Default reference point
//!
//! [`reference_point`] gives the default reference (recorded in `run.json`): in each objective
//! (maximized form), the worst observed value minus 10% of that objective's observed range
//! (max − min); where the range is 0, the worst value minus 1e-9. Where that offset is below the
//! precision of the value (huge values), the next smaller `f64` is used instead, so every
//! observed point stays strictly better than the reference in every objective and every extreme
//! point of the front spans some volume.

mod dominance;
mod hv3;
mod hypervolume;
mod sort;
mod wfg;

pub use dominance::{dominates, maximized};
pub use hypervolume::{hypervolume, reference_point};
pub use sort::{crowding_distance, front_indices, non_dominated_sort};

/// Points, a front or a reference point that cannot be used as given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParetoError {
    /// There are no points where at least one is needed.
    #[error("no points given")]
    NoPoints,
    /// Points (or the reference point) have no objectives.
    #[error("points have no objectives")]
    NoObjectives,
    /// A point's number of objectives differs from the others' (or the reference point's).
    #[error("point {index} has {got} objectives, expected {expected}")]
    Dimension {
        /// The point's index.
        index: usize,
        /// The number of objectives expected.
        expected: usize,
        /// The point's number of objectives.
        got: usize,
    },
    /// A point holds a NaN or an infinite value.
    #[error("objective {objective} of point {index} is not finite (got {value})")]
    NonFinite {
        /// The point's index.
        index: usize,
        /// The objective's index.
        objective: usize,
        /// The value.
        value: f64,
    },
    /// The reference point holds a NaN or an infinite value.
    #[error("objective {objective} of the reference point is not finite (got {value})")]
    NonFiniteReference {
        /// The objective's index.
        objective: usize,
        /// The value.
        value: f64,
    },
    /// A front names a point that does not exist.
    #[error("front names point {index}, but there are only {len} points")]
    IndexOutOfRange {
        /// The index named.
        index: usize,
        /// The number of points.
        len: usize,
    },
}

/// Checks that every point has `dim` objectives, all finite.
fn check_points(points: &[Vec<f64>], dim: usize) -> Result<(), ParetoError> {
    for (index, point) in points.iter().enumerate() {
        if point.len() != dim {
            return Err(ParetoError::Dimension {
                index,
                expected: dim,
                got: point.len(),
            });
        }
        if let Some((objective, &value)) = point.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ParetoError::NonFinite {
                index,
                objective,
                value,
            });
        }
    }
    Ok(())
}

/// The common number of objectives of `points` after checking them: the first point's, or
/// [`ParetoError::NoObjectives`] when it has none. `Ok(0)` when there are no points.
fn checked_dim(points: &[Vec<f64>]) -> Result<usize, ParetoError> {
    let Some(first) = points.first() else {
        return Ok(0);
    };
    if first.is_empty() {
        return Err(ParetoError::NoObjectives);
    }
    check_points(points, first.len())?;
    Ok(first.len())
}
