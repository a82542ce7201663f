//! DELLA (Deep et al., "DELLA-Merging: Reducing Interference in Model Merging through
//! Magnitude-Based Sampling", arXiv 2406.11617, 2024).
//!
//! MagPrune: within each row (the first dimension; a vector is one row) entries are ranked by
//! magnitude, and entry `j` is kept with probability
//! `p_j = (density - epsilon) + 2 * epsilon * rank_j / (cols - 1)`, so small entries are dropped
//! more often and the mean keep rate is `density`. With `rescale` (on by default) the kept entries
//! are scaled to restore the task vector's L1 norm (current mergekit; the paper divides each by
//! `p_j`). `della` then elects signs as TIES does; `della_linear` sums the weighted vectors.
//! Ranks are computed once per task vector; the draws are DARE's counter-based ones.

use super::engine::{Mask, StreamKey};

/// The MagPrune mask for rows of `cols` entries.
pub fn mask(density: f64, epsilon: f64, cols: usize, key: StreamKey) -> Mask {
    if density <= 0.0 {
        return Mask::Nothing;
    }
    Mask::MagPrune {
        offset: (density - epsilon) as f32,
        slope: (2.0 * epsilon / cols.saturating_sub(1).max(1) as f64) as f32,
        key,
    }
}
