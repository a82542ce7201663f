//! Fidelity rungs: a space's `[fidelity]` table, the evaluation costs at which candidates are
//! scored under successive halving (see [`crate::study`] for the promotion).

use serde::{Deserialize, Serialize};

/// Rungs of evaluation cost: every candidate of a batch is scored with `items[0]` items per
/// task, the best `1/reduction` of them again with `items[1]`, and so on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fidelity {
    /// Items per task at each rung, strictly increasing (an empty list turns rungs off).
    pub items: Vec<usize>,
    /// Of the candidates scored at a rung, `1/reduction` go on to the next (Hyperband's eta).
    #[serde(default = "default_reduction")]
    pub reduction: f64,
}

/// Hyperband's usual reduction factor.
pub const DEFAULT_REDUCTION: f64 = 3.0;

fn default_reduction() -> f64 {
    DEFAULT_REDUCTION
}

impl Fidelity {
    /// What is wrong with the table, naming the key.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.items.contains(&0) {
            return Some(("items", "every rung needs at least 1 item per task".into()));
        }
        if self.items.windows(2).any(|w| w[0] >= w[1]) {
            return Some((
                "items",
                format!("must increase from rung to rung, not {:?}", self.items),
            ));
        }
        if !(self.reduction.is_finite() && self.reduction > 1.0) {
            return Some((
                "reduction",
                format!("must be a number above 1, not {}", self.reduction),
            ));
        }
        None
    }

    /// The number of rungs.
    pub fn rungs(&self) -> usize {
        self.items.len()
    }

    /// How many of `n` candidates scored at a rung go on to the next: `n / reduction` rounded
    /// down, at least one (so that every batch reaches the top rung).
    pub fn promotions(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((n as f64 / self.reduction).floor() as usize).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotions_keep_a_third_and_at_least_one() {
        let f = Fidelity {
            items: vec![25, 100, 400],
            reduction: 3.0,
        };
        assert_eq!(
            [0, 1, 2, 3, 5, 6, 15].map(|n| f.promotions(n)),
            [0, 1, 1, 1, 1, 2, 5]
        );
        assert!(f.problem().is_none());
    }

    #[test]
    fn bad_tables_name_the_key() {
        let bad = |items: Vec<usize>, reduction| Fidelity { items, reduction }.problem().unwrap().0;
        assert_eq!(bad(vec![25, 25], 3.0), "items");
        assert_eq!(bad(vec![0, 10], 3.0), "items");
        assert_eq!(bad(vec![10, 20], 1.0), "reduction");
        assert_eq!(bad(vec![10, 20], f64::NAN), "reduction");
    }
}
