//! DELLA (Deep et al., "DELLA-Merging: Reducing Interference in Model Merging through
//! Magnitude-Based Sampling", arXiv 2406.11617, 2024).
//!
//! MagPrune: within each row (the first dimension; a vector is one row) entries are ranked by
//! magnitude, and entry `j` is kept with probability
//! `p_j = (density - epsilon) + 2 * epsilon * rank_j / (cols - 1)`, so small entries are dropped
//! more often and the mean keep rate is `density`. With `rescale` (on by default) the kept entries
//! are scaled to restore the task vector's L1 norm (current mergekit; the paper divides each by
//! `p_j`). `della` then elects signs as TIES does; `della_linear` sums the weighted vectors.

use burn::prelude::*;

use super::inputs::TensorInputs;
use super::sparsify::uniform;

/// Task vector `i` after magnitude-ranked random pruning.
pub fn magprune<B: Backend>(
    inputs: &TensorInputs<B>,
    i: usize,
    density: f64,
    epsilon: f64,
    seed: u64,
) -> Tensor<B, 1> {
    let tau = inputs.tau(i);
    if density <= 0.0 {
        return tau.zeros_like();
    }
    let keep_probability = inputs
        .della_ranks(i)
        .mul_scalar(2.0 * epsilon)
        .add_scalar(density - epsilon);
    let drop = uniform(inputs, i, seed).greater_equal(keep_probability);
    tau.mask_fill(drop, 0.0)
}
