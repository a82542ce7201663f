//! DARE (Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models
//! as a Free Lunch", ICML 2024).
//!
//! Each task-vector entry is kept with probability `density` (`m ~ Bernoulli(density)`), then,
//! with `rescale` (on by default), the kept entries are scaled so the task vector keeps its L1
//! norm, as current mergekit does (the paper divides by `density`, equal in expectation).
//! `dare_linear` then sums the weighted vectors; `dare_ties` adds TIES sign election.
//! The masks come from the plan's seed and the tensor's name, drawn on the host: the same plan
//! gives the same tensors on every device.

use burn::prelude::*;

use super::inputs::TensorInputs;
use super::sparsify::uniform;

/// Task vector `i` with each entry kept with probability `density`.
pub fn random_keep<B: Backend>(
    inputs: &TensorInputs<B>,
    i: usize,
    density: f64,
    seed: u64,
) -> Tensor<B, 1> {
    let drop = uniform(inputs, i, seed).greater_equal_elem(density as f32);
    inputs.tau(i).mask_fill(drop, 0.0)
}
