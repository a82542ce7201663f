//! Generalized task arithmetic: the pipeline behind task arithmetic, TIES, DARE, Breadcrumbs and
//! DELLA. Per tensor:
//!
//! 1. `d_i = sparsify(tau_i)` (each expert independently, optionally L1-rescaled);
//! 2. `W_i = w_i * d_i`;
//! 3. without sign consensus, `mixed = sum_i W_i` and `div = sum_i w_i` (1 where `|div| < 1e-8`);
//!    with it (TIES), elect `s = sign(sum_i W_i)` (zero counts as +), keep `m_i = [sign(W_i) = s]`,
//!    `mixed = sum_i m_i W_i`, `div = sum_i m_i w_i` (1 where it is 0);
//! 4. `mixed /= div` if `normalize`; `mixed *= lambda`;
//! 5. `theta = theta_base + mixed`.
//!
//! The same order and guards as mergekit's `generalized_task_arithmetic`.

use burn::prelude::*;

use super::inputs::TensorInputs;
use super::plan::GroupParams;
use super::sparsify::rescale_l1;
use super::{breadcrumbs, dare, della, ties};

/// How each task vector is sparsified before mixing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sparsifier {
    /// Keep everything.
    None,
    /// Keep the `density` fraction of largest magnitudes (TIES).
    Magnitude,
    /// Keep each entry with probability `density` (DARE).
    Random,
    /// Drop the `gamma` largest and the smallest, keeping `density` (Breadcrumbs).
    Outliers,
    /// Keep with probabilities ranked by magnitude within `density ± epsilon` (DELLA).
    MagPrune,
}

/// Divisors with absolute value below this count as zero when there is no sign consensus.
const LINEAR_DIVISOR_EPS: f64 = 1e-8;

/// Merges one tensor with the generalized task arithmetic pipeline.
pub fn merge<B: Backend>(
    inputs: &TensorInputs<B>,
    p: &GroupParams,
    sparsifier: Sparsifier,
    sign_consensus: bool,
    seed: u64,
) -> Tensor<B, 1> {
    let k = inputs.experts();
    if sparsifier == Sparsifier::None && !sign_consensus {
        // A plain weighted sum: one matrix product over [base; tau_1..tau_k].
        let scale = p.lambda / linear_divisor(p);
        let mut coefficients = vec![1.0];
        coefficients.extend(p.weight.iter().map(|w| w * scale));
        return inputs.combine(&coefficients);
    }
    let deltas: Vec<Tensor<B, 1>> = (0..k)
        .map(|i| sparsify(inputs, i, p, sparsifier, seed))
        .collect();
    let mixed = if sign_consensus {
        elect_and_mix(deltas, p)
    } else {
        let scale = 1.0 / linear_divisor(p);
        deltas
            .into_iter()
            .zip(&p.weight)
            .map(|(d, w)| d.mul_scalar(w * scale))
            .reduce(|a, b| a + b)
            .expect("at least one expert")
    };
    let mixed = if p.lambda == 1.0 {
        mixed
    } else {
        mixed.mul_scalar(p.lambda)
    };
    inputs.base() + mixed
}

/// `sum_i w_i` (or 1 when not normalizing or when it is nearly zero).
pub(super) fn linear_divisor(p: &GroupParams) -> f64 {
    let sum: f64 = p.weight.iter().sum();
    if !p.normalize || sum.abs() < LINEAR_DIVISOR_EPS {
        1.0
    } else {
        sum
    }
}

/// Sparsifies task vector `i`, then restores its L1 norm if `rescale` is set.
fn sparsify<B: Backend>(
    inputs: &TensorInputs<B>,
    i: usize,
    p: &GroupParams,
    sparsifier: Sparsifier,
    seed: u64,
) -> Tensor<B, 1> {
    let density = p.density[i];
    if sparsifier == Sparsifier::None || density >= 1.0 {
        return inputs.tau(i);
    }
    let masked = match sparsifier {
        Sparsifier::None => unreachable!("handled above"),
        Sparsifier::Magnitude => ties::keep_largest(inputs, i, density),
        Sparsifier::Random => dare::random_keep(inputs, i, density, seed),
        Sparsifier::Outliers => breadcrumbs::drop_outliers(inputs, i, density, p.gamma[i]),
        Sparsifier::MagPrune => della::magprune(inputs, i, density, p.epsilon[i], seed),
    };
    if p.rescale {
        rescale_l1(inputs.tau(i), masked)
    } else {
        masked
    }
}

/// TIES sign election and disjoint mean over the sparsified task vectors.
fn elect_and_mix<B: Backend>(deltas: Vec<Tensor<B, 1>>, p: &GroupParams) -> Tensor<B, 1> {
    let weighted: Vec<Tensor<B, 1>> = deltas
        .into_iter()
        .zip(&p.weight)
        .map(|(d, &w)| d.mul_scalar(w))
        .collect();
    let agreement = sign_agreement(&weighted);
    let mut mixed = weighted[0].zeros_like();
    let mut divisor = weighted[0].zeros_like();
    for ((w_i, agrees), &w) in weighted.into_iter().zip(agreement).zip(&p.weight) {
        mixed = mixed + w_i * agrees.clone();
        divisor = divisor + agrees.mul_scalar(w);
    }
    if p.normalize {
        let divisor = divisor.clone().mask_fill(divisor.equal_elem(0.0), 1.0);
        mixed / divisor
    } else {
        mixed
    }
}

/// TIES sign election over weighted task vectors `W_i = w_i * d_i`: the elected sign is that of
/// `sum_i W_i` (zero counts as +); returns, per expert, 1 where `W_i` has the elected sign and 0
/// elsewhere (zero entries never agree).
pub fn sign_agreement<B: Backend>(weighted: &[Tensor<B, 1>]) -> Vec<Tensor<B, 1>> {
    let total = weighted
        .iter()
        .cloned()
        .reduce(|a, b| a + b)
        .expect("at least one expert");
    // +1 where the weighted sum is >= 0, -1 elsewhere.
    let elected = total
        .greater_equal_elem(0.0)
        .float()
        .mul_scalar(2.0)
        .sub_scalar(1.0);
    weighted
        .iter()
        .map(|w_i| {
            (w_i.clone().sign() * elected.clone())
                .greater_elem(0.0)
                .float()
        })
        .collect()
}
