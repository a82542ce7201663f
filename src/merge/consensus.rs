//! Consensus merging with TALL masks (Wang et al., "Localizing Task Information for Improved Model
//! Merging and Compression", ICML 2024).
//!
//! With the multi-task vector `tau_MTL = sum_i w_i tau_i`, expert `i`'s TALL mask keeps the
//! entries where it matters more than the rest: `m_i = |tau_i| > mask_lambda_i * |tau_MTL - tau_i|`.
//! Entries that fewer than `k` experts find important (default 2: drops "selfish" and
//! "catastrophic" weights) are removed: `theta = theta_base + lambda * [sum_i m_i >= k] * tau_MTL`.
//! Not in current mergekit (it briefly had `consensus_ta`).

use burn::prelude::*;

use super::inputs::TensorInputs;
use super::plan::GroupParams;

/// Merges one tensor.
pub fn merge<B: Backend>(inputs: &TensorInputs<B>, p: &GroupParams) -> Tensor<B, 1> {
    let multi_task = inputs.combine_taus(&p.weight);
    let votes = (0..inputs.experts())
        .map(|i| {
            let tau = inputs.tau(i);
            let rest = (multi_task.clone() - tau.clone())
                .abs()
                .mul_scalar(p.mask_lambda[i]);
            tau.abs().greater(rest).float()
        })
        .reduce(|a, b| a + b)
        .expect("at least one expert");
    let rejected = votes.lower_elem(p.k as f64);
    inputs.base() + multi_task.mask_fill(rejected, 0.0).mul_scalar(p.lambda)
}
