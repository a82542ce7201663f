//! Consensus merging with TALL masks (Wang et al., "Localizing Task Information for Improved Model
//! Merging and Compression", ICML 2024).
//!
//! With the multi-task vector `tau_MTL = sum_i w_i tau_i`, expert `i`'s TALL mask keeps the
//! entries where it matters more than the rest: `m_i = |tau_i| > mask_lambda_i * |tau_MTL - tau_i|`.
//! Entries that fewer than `k` experts find important (default 2: drops "selfish" and
//! "catastrophic" weights) are removed: `theta = theta_base + lambda * [sum_i m_i >= k] * tau_MTL`.
//! Not in current mergekit (it briefly had `consensus_ta`).

use super::engine::{Consensus, Job};
use super::plan::GroupParams;

/// The job that merges one tensor.
pub fn job(p: &GroupParams) -> Job {
    Job::Consensus(Consensus {
        weights: p.weight.iter().map(|&w| w as f32).collect(),
        mask_lambda: p.mask_lambda.iter().map(|&m| m as f32).collect(),
        min_votes: p.k as u32,
        lambda: p.lambda as f32,
    })
}
