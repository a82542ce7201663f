//! Masks shared by the sparsifying methods: keeping a window of magnitude ranks (TIES,
//! Breadcrumbs), Bernoulli keeps from a seeded host stream (DARE, DELLA), and the L1 rescale.

use burn::prelude::*;

use super::inputs::TensorInputs;
use crate::rng::{Rng, derive_seed};

/// Task vector `i` with every entry zeroed except those whose magnitude rank lies in `[lo, hi)`.
///
/// Ranks ascend with `|tau|` from 0; equal magnitudes are ranked by position (earlier first), so
/// the result is deterministic and the same on every device. mergekit sorts with torch's unstable
/// sort, whose order among equal magnitudes is unspecified; elsewhere the two agree exactly.
pub fn keep_rank_window<B: Backend>(
    inputs: &TensorInputs<B>,
    i: usize,
    lo: usize,
    hi: usize,
) -> Tensor<B, 1> {
    let tau = inputs.tau(i);
    let n = inputs.numel();
    let hi = hi.min(n);
    if lo == 0 && hi == n {
        return tau;
    }
    if lo >= hi {
        return tau.zeros_like();
    }
    let sorted = inputs.sorted_magnitudes(i);
    let abs = tau.clone().abs();
    let (a, b) = (sorted[lo], sorted[hi - 1]);
    let mut parts = Vec::with_capacity(3);
    if a < b {
        parts.push(
            abs.clone()
                .greater_elem(a)
                .bool_and(abs.clone().lower_elem(b)),
        );
    }
    parts.extend(value_window(&abs, sorted, a, lo, hi));
    if b != a {
        parts.extend(value_window(&abs, sorted, b, lo, hi));
    }
    match parts.into_iter().reduce(|x, y| x.bool_or(y)) {
        Some(keep) => tau.mask_fill(keep.bool_not(), 0.0),
        None => tau.zeros_like(),
    }
}

/// The entries equal to `v` whose rank falls in `[lo, hi)`, or `None` if there are none.
fn value_window<B: Backend>(
    abs: &Tensor<B, 1>,
    sorted: &[f32],
    v: f32,
    lo: usize,
    hi: usize,
) -> Option<Tensor<B, 1, Bool>> {
    let first = sorted.partition_point(|&x| x < v);
    let count = sorted.partition_point(|&x| x <= v) - first;
    // Occurrence j (0-based, in position order) of `v` has rank `first + j`.
    let j_lo = lo.saturating_sub(first);
    let j_hi = hi.min(first + count).saturating_sub(first);
    if j_lo >= j_hi {
        return None;
    }
    let equal = abs.clone().equal_elem(v);
    if j_lo == 0 && j_hi == count {
        return Some(equal);
    }
    let occurrence = equal.clone().int().cumsum(0);
    Some(
        equal
            .bool_and(occurrence.clone().greater_elem(j_lo as i64))
            .bool_and(occurrence.lower_equal_elem(j_hi as i64)),
    )
}

/// `n` uniform values in `[0, 1)` from the stream of (plan seed, tensor, expert).
pub fn uniform<B: Backend>(inputs: &TensorInputs<B>, i: usize, seed: u64) -> Tensor<B, 1> {
    let n = inputs.numel();
    let values = Rng::new(derive_seed(seed, inputs.name(), i as u64)).uniform_f32(n);
    Tensor::from_data(TensorData::new(values, [n]), &inputs.device())
}

/// Scales `masked` so its L1 norm equals `original`'s, unless either norm is below 1e-7
/// (mergekit's `rescale`, applied after every sparsifier).
pub fn rescale_l1<B: Backend>(original: Tensor<B, 1>, masked: Tensor<B, 1>) -> Tensor<B, 1> {
    let a = original.abs().sum().into_scalar().elem::<f64>();
    let b = masked.clone().abs().sum().into_scalar().elem::<f64>();
    if a < 1e-7 || b < 1e-7 {
        masked
    } else {
        masked.mul_scalar(a / b)
    }
}
