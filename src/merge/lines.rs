//! LiNeS (Wang et al., "LiNeS: Post-training Layer Scaling Prevents Forgetting and Enhances Model
//! Merging", ICLR 2025): task arithmetic whose merged task vector is scaled linearly with depth,
//! `theta = theta_base + (alpha + beta * l / (L - 1)) * sum_i w_i tau_i` for a tensor in block
//! `l` of `L`, and `alpha` for tensors outside the blocks (embeddings, final norm, head), as the
//! reference code does. `alpha` defaults to `1 / experts`, the paper's value for a task-arithmetic
//! merged vector; `beta` must be given (the paper tunes it).

use super::TensorMeta;
use super::engine::Job;
use super::plan::GroupParams;

/// The job that merges one tensor.
pub fn job(meta: &TensorMeta, p: &GroupParams) -> Job {
    let depth = meta.block.map_or(0.0, |b| b.depth());
    let scale = p.alpha + p.beta * depth;
    Job::Combine {
        base: 1.0,
        taus: p.weight.iter().map(|w| (w * scale) as f32).collect(),
    }
}
