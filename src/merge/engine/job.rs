//! What one tensor's merge computes, with every plan-dependent number resolved: the description
//! both engines (host threads and GPU kernels) execute, and the contract that makes their results
//! bit-identical.
//!
//! Per element `j` of a tensor with base `b` and experts `e_1..e_k`, `tau_i = e_i - b` in `f32`.
//! Every multiply-add is a fused multiply-add in the order written here, on every device, so no
//! compiler is free to fuse differently; sums of many elements are the fixed trees of
//! [`tree`](super::tree).
//!
//! * [`Job::Combine`]: `acc = b * c0`, then `acc = fma(c_i, tau_i, acc)` for `i = 1..k`.
//! * [`Job::Gta`]: each expert's kept entries `d_i = keep_i(j) ? tau_i * r_i : 0` (the factor
//!   `r_i` only with `rescale`), then either
//!   * [`Mix::Sum`]: `acc = b * c0`, then `acc = fma(w_i, d_i, acc)`; or
//!   * [`Mix::Elect`]: `total = fma(w_i, d_i, total)` over `i` from 0 elects `+` where
//!     `total >= 0`; an expert agrees where `w_i * d_i` is non-zero with the elected sign;
//!     `mixed = fma(w_i, d_i, mixed)` and `div += w_i` over the agreeing experts;
//!     `mixed /= div` (1 where `div == 0`) with `normalize`; `out = fma(mixed, lambda, b)`.
//! * [`Job::Consensus`]: `mtl = fma(w_i, tau_i, mtl)`; expert `i` votes where
//!   `|tau_i| > m_i * |mtl - tau_i|`; `out = fma(mtl, lambda, b)` where at least `k` vote, else `b`.

use super::bits::StreamKey;

/// One tensor's merge.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// `c0 * base + sum_i c_i * tau_i`.
    Combine {
        /// `c0`.
        base: f32,
        /// `c_1..c_k`.
        taus: Vec<f32>,
    },
    /// Generalized task arithmetic: sparsify, then sum or elect.
    Gta(Gta),
    /// Task arithmetic restricted to the entries at least `k` experts' TALL masks keep.
    Consensus(Consensus),
}

/// A generalized task arithmetic merge of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Gta {
    /// Which entries of each task vector are kept.
    pub masks: Vec<Mask>,
    /// Per-expert weight `w_i` (for [`Mix::Sum`], already scaled by `lambda / divisor`).
    pub weights: Vec<f32>,
    /// Scale each kept task vector to its original L1 norm.
    pub rescale: bool,
    /// How the kept entries are combined.
    pub mix: Mix,
}

/// How a [`Gta`] merge combines the kept entries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mix {
    /// `base * c0 + sum_i w_i d_i`.
    Sum {
        /// `c0`: 1 for a merge, 0 for the sparsified task vectors alone.
        base: f32,
    },
    /// TIES sign election and disjoint (weighted) mean, then `base + lambda * mixed`.
    Elect {
        /// Divide by the sum of the agreeing weights.
        normalize: bool,
        /// Scale of the mixed task vector.
        lambda: f32,
    },
}

/// Which entries of one task vector a [`Gta`] merge keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mask {
    /// Every entry.
    All,
    /// None.
    Nothing,
    /// Entries whose magnitude rank lies in `[lo, hi)`, where ranks ascend with `|tau|` from 0
    /// and equal magnitudes are ranked by position (earlier first). `0 < hi`, `lo < hi`,
    /// and not both `lo == 0` and `hi == n` (that is [`Mask::All`]).
    Window {
        /// First rank kept.
        lo: usize,
        /// First rank dropped above the window.
        hi: usize,
    },
    /// Each entry independently, where its uniform value is below `keep`.
    Random {
        /// Keep probability.
        keep: f32,
        /// The stream of uniform values.
        key: StreamKey,
    },
    /// Each entry where its uniform value is below `fma(slope, row_rank, offset)`, its row
    /// rank counting from 0 by magnitude within its row (DELLA).
    MagPrune {
        /// Keep probability of the smallest entry of a row.
        offset: f32,
        /// Added keep probability per rank.
        slope: f32,
        /// The stream of uniform values.
        key: StreamKey,
    },
}

impl Mask {
    /// Whether the mask needs the tensor-wide magnitude ranks.
    pub fn needs_ranks(&self) -> bool {
        matches!(self, Mask::Window { .. })
    }

    /// Whether the mask needs the magnitude ranks within rows.
    pub fn needs_row_ranks(&self) -> bool {
        matches!(self, Mask::MagPrune { .. })
    }

    /// The random stream the mask draws from, if it draws.
    pub fn stream(&self) -> Option<StreamKey> {
        match *self {
            Mask::Random { key, .. } | Mask::MagPrune { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A consensus (TALL mask) merge of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Consensus {
    /// Per-expert weight of the multi-task vector.
    pub weights: Vec<f32>,
    /// Per-expert TALL mask threshold.
    pub mask_lambda: Vec<f32>,
    /// Votes needed to keep an entry.
    pub min_votes: u32,
    /// Scale of the kept multi-task vector.
    pub lambda: f32,
}

impl Job {
    /// Whether any expert's mask needs the tensor-wide magnitude ranks.
    pub fn needs_ranks(&self) -> bool {
        matches!(self, Job::Gta(g) if g.masks.iter().any(Mask::needs_ranks))
    }

    /// Whether any expert's mask needs the magnitude ranks within rows.
    pub fn needs_row_ranks(&self) -> bool {
        matches!(self, Job::Gta(g) if g.masks.iter().any(Mask::needs_row_ranks))
    }
}
