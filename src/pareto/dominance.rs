//! Pareto dominance between points whose objectives have directions, and the "all maximized"
//! form the rest of the module works in, so that sorting and hypervolume need no directions.

use super::{ParetoError, check_points};
use crate::eval::Direction;

/// Whether `a` dominates `b`: at least as good in every objective and strictly better in one,
/// each objective judged in its `direction`.
///
/// # Panics
///
/// If `a`, `b` and `directions` differ in length.
pub fn dominates(a: &[f64], b: &[f64], directions: &[Direction]) -> bool {
    assert!(
        a.len() == directions.len() && b.len() == directions.len(),
        "dominates: points of {} and {} objectives with {} directions",
        a.len(),
        b.len(),
        directions.len()
    );
    let mut strictly = false;
    for ((&x, &y), &direction) in a.iter().zip(b).zip(directions) {
        let (x, y) = (direction.to_maximized(x), direction.to_maximized(y));
        if x < y {
            return false;
        }
        strictly |= x > y;
    }
    strictly
}

/// `points` in "all maximized" form: each objective turned by its direction so that larger is
/// better (minimized objectives negated).
///
/// Errors when there are no directions, when a point has a different number of objectives
/// than `directions`, or when a value is not finite.
pub fn maximized(
    points: &[Vec<f64>],
    directions: &[Direction],
) -> Result<Vec<Vec<f64>>, ParetoError> {
    if directions.is_empty() {
        return Err(ParetoError::NoObjectives);
    }
    check_points(points, directions.len())?;
    Ok(points
        .iter()
        .map(|point| {
            point
                .iter()
                .zip(directions)
                .map(|(&value, &direction)| direction.to_maximized(value))
                .collect()
        })
        .collect())
}

/// How two points in maximized form relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Relation {
    /// The first dominates the second.
    Dominates,
    /// The second dominates the first.
    Dominated,
    /// Neither dominates the other (equal, or a trade-off).
    Neither,
}

/// How `a` relates to `b`, both in maximized form and of equal length.
pub(super) fn relation(a: &[f64], b: &[f64]) -> Relation {
    let (mut better, mut worse) = (false, false);
    for (&x, &y) in a.iter().zip(b) {
        better |= x > y;
        worse |= x < y;
        if better && worse {
            return Relation::Neither;
        }
    }
    match (better, worse) {
        (true, false) => Relation::Dominates,
        (false, true) => Relation::Dominated,
        _ => Relation::Neither,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Maximize, Minimize};

    #[test]
    fn mixed_directions() {
        // Accuracy (maximize) and loss (minimize).
        let dirs = [Maximize, Minimize];
        let good = [0.9, 1.0];
        let worse = [0.8, 1.2];
        let tradeoff = [0.95, 1.5];
        assert!(dominates(&good, &worse, &dirs));
        assert!(!dominates(&worse, &good, &dirs));
        assert!(!dominates(&good, &tradeoff, &dirs));
        assert!(!dominates(&tradeoff, &good, &dirs));
        // Equal points do not dominate each other; one strict improvement suffices.
        assert!(!dominates(&good, &good, &dirs));
        assert!(dominates(&[0.9, 0.9], &good, &dirs));
        assert!(dominates(&[1.0, 1.0], &good, &dirs));
        // Flipping the directions flips the verdicts.
        assert!(dominates(&worse, &good, &[Minimize, Maximize]));
    }

    #[test]
    fn maximized_form_agrees_with_directions() {
        let dirs = [Minimize, Maximize, Minimize];
        let points = vec![
            vec![1.0, 2.0, 3.0],
            vec![0.5, 2.0, 3.0],
            vec![2.0, 1.0, -1.0],
        ];
        let max = maximized(&points, &dirs).unwrap();
        assert_eq!(max[0], vec![-1.0, 2.0, -3.0]);
        for (a, ma) in points.iter().zip(&max) {
            for (b, mb) in points.iter().zip(&max) {
                let expected = dominates(a, b, &dirs);
                assert_eq!(relation(ma, mb) == Relation::Dominates, expected);
                assert_eq!(relation(mb, ma) == Relation::Dominated, expected);
            }
        }
    }

    #[test]
    fn maximized_rejects_bad_points() {
        let dirs = [Maximize, Minimize];
        assert_eq!(
            maximized(&[vec![1.0, 2.0], vec![1.0]], &dirs),
            Err(ParetoError::Dimension {
                index: 1,
                expected: 2,
                got: 1
            })
        );
        assert!(matches!(
            maximized(&[vec![1.0, f64::NAN]], &dirs),
            Err(ParetoError::NonFinite {
                index: 0,
                objective: 1,
                ..
            })
        ));
        assert_eq!(maximized(&[], &[]), Err(ParetoError::NoObjectives));
        assert_eq!(maximized(&[], &dirs), Ok(vec![]));
    }
}
