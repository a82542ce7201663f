//! Linear merging, a weighted average of the experts (Wortsman et al., "Model soups", ICML 2022):
//! `theta = sum_i w_i theta_i / sum_i w_i` with `normalize` (the default), else `sum_i w_i theta_i`.
//! The base does not take part. A weight sum below 1e-8 in magnitude is not divided by.

use super::engine::Job;
use super::gta::linear_divisor;
use super::plan::GroupParams;

/// The job that merges one tensor.
pub fn job(p: &GroupParams) -> Job {
    let sum: f64 = p.weight.iter().sum();
    let divisor = linear_divisor(p);
    // sum_i w_i theta_i = (sum_i w_i) theta_base + sum_i w_i tau_i.
    Job::Combine {
        base: (sum / divisor) as f32,
        taus: p.weight.iter().map(|w| (w / divisor) as f32).collect(),
    }
}
