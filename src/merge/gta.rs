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
//! The same order and guards as mergekit's `generalized_task_arithmetic`; the engine's
//! [`Job::Gta`] computes it with fused multiply-adds (see [`engine::job`](super::engine::job)).

use super::engine::{Gta, Job, Mask, Mix, StreamKey};
use super::plan::GroupParams;
use super::{TensorMeta, breadcrumbs, dare, della, ties};

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

/// The job that merges one tensor with the generalized task arithmetic pipeline.
pub fn job(
    meta: &TensorMeta,
    p: &GroupParams,
    sparsifier: Sparsifier,
    sign_consensus: bool,
    seed: u64,
) -> Job {
    let k = p.weight.len();
    if sparsifier == Sparsifier::None && !sign_consensus {
        // A plain weighted sum of the task vectors.
        let scale = p.lambda / linear_divisor(p);
        return Job::Combine {
            base: 1.0,
            taus: p.weight.iter().map(|w| (w * scale) as f32).collect(),
        };
    }
    let masks = (0..k).map(|i| mask(meta, p, i, sparsifier, seed)).collect();
    let (weights, mix) = if sign_consensus {
        (
            p.weight.iter().map(|&w| w as f32).collect(),
            Mix::Elect {
                normalize: p.normalize,
                lambda: p.lambda as f32,
            },
        )
    } else {
        let scale = p.lambda / linear_divisor(p);
        (
            p.weight.iter().map(|w| (w * scale) as f32).collect(),
            Mix::Sum { base: 1.0 },
        )
    };
    Job::Gta(Gta {
        masks,
        weights,
        rescale: p.rescale && sparsifier != Sparsifier::None,
        mix,
    })
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

/// Which entries of task vector `i` the sparsifier keeps.
fn mask(meta: &TensorMeta, p: &GroupParams, i: usize, sparsifier: Sparsifier, seed: u64) -> Mask {
    let density = p.density[i];
    if sparsifier == Sparsifier::None || density >= 1.0 {
        return Mask::All;
    }
    let n = meta.numel();
    let key = || StreamKey::new(seed, &meta.name, i);
    match sparsifier {
        Sparsifier::None => Mask::All,
        Sparsifier::Magnitude => window_mask(ties::window(n, density), n),
        Sparsifier::Outliers => window_mask(breadcrumbs::window(n, density, p.gamma[i]), n),
        Sparsifier::Random => dare::mask(density, key()),
        Sparsifier::MagPrune => della::mask(density, p.epsilon[i], meta.row_width(), key()),
    }
}

/// The mask keeping ranks `[lo, hi)` of `n`.
pub(super) fn window_mask((lo, hi): (usize, usize), n: usize) -> Mask {
    if lo >= hi {
        Mask::Nothing
    } else if lo == 0 && hi >= n {
        Mask::All
    } else {
        Mask::Window { lo, hi }
    }
}
