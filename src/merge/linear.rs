//! Linear merging, a weighted average of the experts (Wortsman et al., "Model soups", ICML 2022):
//! `theta = sum_i w_i theta_i / sum_i w_i` with `normalize` (the default), else `sum_i w_i theta_i`.
//! The base does not take part. A weight sum below 1e-8 in magnitude is not divided by.

use burn::prelude::*;

use super::gta::linear_divisor;
use super::inputs::TensorInputs;
use super::plan::GroupParams;

/// Merges one tensor.
pub fn merge<B: Backend>(inputs: &TensorInputs<B>, p: &GroupParams) -> Tensor<B, 1> {
    let sum: f64 = p.weight.iter().sum();
    let divisor = linear_divisor(p);
    // sum_i w_i theta_i = (sum_i w_i) theta_base + sum_i w_i tau_i.
    let mut coefficients = vec![sum / divisor];
    coefficients.extend(p.weight.iter().map(|w| w / divisor));
    inputs.combine(&coefficients)
}
