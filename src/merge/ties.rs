//! TIES-Merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging Models",
//! NeurIPS 2023).
//!
//! Each task vector keeps its `k = floor(density * n)` largest-magnitude entries (trim); the sign
//! of each entry is elected by the weighted sum of the trimmed vectors (elect); entries that
//! agree with it are averaged, weighted by `weight` (disjoint merge, `normalize`):
//! `theta = theta_base + lambda * sum_i m_i w_i d_i / sum_i m_i w_i`. Trim ranks magnitudes over
//! the whole tensor, as mergekit does. Density 0 keeps nothing (mergekit refuses it).

use burn::prelude::*;

use super::inputs::TensorInputs;
use super::sparsify::keep_rank_window;

/// Task vector `i` keeping its `floor(density * n)` largest magnitudes.
pub fn keep_largest<B: Backend>(inputs: &TensorInputs<B>, i: usize, density: f64) -> Tensor<B, 1> {
    let n = inputs.numel();
    let k = (density * n as f64) as usize;
    keep_rank_window(inputs, i, n - k.min(n), n)
}
