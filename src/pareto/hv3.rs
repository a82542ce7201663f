//! Exact 3-D hypervolume in O(n log n), because 3 objectives are common and the general
//! algorithm would cost O(n²) there.
//!
//! The sweep visits the points by the third objective, best first. Between two consecutive
//! values of it, the region covered is a slab whose cross-section is the 2-D union of the boxes
//! of the points visited so far. That union is kept as a staircase — its non-dominated points,
//! ordered by the first objective (the second then falls) — in a `BTreeMap`, together with its
//! area, which each insertion updates by the area the new point adds. Every point enters and
//! leaves the staircase at most once, each time in O(log n).

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

/// The 3-D union volume of the boxes `[0, p]` for the triples of `coords` (all positive and
/// finite).
pub(super) fn hv3(coords: &[f64]) -> f64 {
    let mut points: Vec<[f64; 3]> = coords.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    points.sort_unstable_by(|a, b| b[2].total_cmp(&a[2]));
    let mut staircase = Staircase::default();
    let mut volume = 0.0;
    for (i, &[x, y, z]) in points.iter().enumerate() {
        staircase.insert(x, y);
        let below = points.get(i + 1).map_or(0.0, |p| p[2]);
        volume += staircase.area * (z - below);
    }
    volume
}

/// The non-dominated set of 2-D points and the area of the union of their boxes `[0, p]`.
#[derive(Debug, Default)]
struct Staircase {
    /// Second coordinate by first coordinate. The keys are the bits of positive `f64`s, which
    /// order as the values do.
    steps: BTreeMap<u64, f64>,
    /// The area of the union.
    area: f64,
}

impl Staircase {
    /// Adds the point `(x, y)` (both positive): nothing when a step dominates it, otherwise it
    /// replaces the steps it dominates and the area grows by what it adds.
    fn insert(&mut self, x: f64, y: f64) {
        debug_assert!(x > 0.0 && y > 0.0, "staircase point ({x}, {y})");
        let key = x.to_bits();
        // The first step at or right of x is the highest there: if it is not below y, it
        // dominates the point.
        if self.steps.range(key..).next().is_some_and(|(_, &h)| h >= y) {
            return;
        }
        // Walk left from x over the union's outline, adding the area between it and height y,
        // and removing the steps no higher than y.
        let mut height = self
            .steps
            .range((Excluded(key), Unbounded))
            .next()
            .map_or(0.0, |(_, &h)| h);
        let mut right = x;
        loop {
            match self.steps.range(..=key).next_back() {
                Some((&step, &h)) => {
                    let left = f64::from_bits(step);
                    self.area += (right - left) * (y - height);
                    if h > y {
                        break;
                    }
                    self.steps.remove(&step);
                    (right, height) = (left, h);
                }
                None => {
                    self.area += right * (y - height);
                    break;
                }
            }
        }
        self.steps.insert(key, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staircase_area_by_hand() {
        let mut s = Staircase::default();
        s.insert(1.0, 3.0);
        assert_eq!(s.area, 3.0);
        s.insert(3.0, 1.0);
        assert_eq!(s.area, 5.0);
        // Dominated: no change.
        s.insert(0.5, 2.0);
        s.insert(3.0, 1.0);
        assert_eq!(s.area, 5.0);
        // Fills the notch between the two steps.
        s.insert(2.0, 2.0);
        assert_eq!(s.area, 6.0);
        assert_eq!(s.steps.len(), 3);
        // Dominates everything.
        s.insert(4.0, 4.0);
        assert_eq!(s.area, 16.0);
        assert_eq!(s.steps.len(), 1);
        // Same x, higher y replaces the step.
        s.insert(4.0, 5.0);
        assert_eq!(s.area, 20.0);
        assert_eq!(s.steps.len(), 1);
    }
}
