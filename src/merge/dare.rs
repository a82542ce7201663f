//! DARE (Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models
//! as a Free Lunch", ICML 2024).
//!
//! Each task-vector entry is kept with probability `density` (`m ~ Bernoulli(density)`), then,
//! with `rescale` (on by default), the kept entries are scaled so the task vector keeps its L1
//! norm, as current mergekit does (the paper divides by `density`, equal in expectation).
//! `dare_linear` then sums the weighted vectors; `dare_ties` adds TIES sign election.
//! The masks come from a counter-based generator keyed by (plan seed, tensor name, expert) and the
//! element's index, evaluated where the data is: the same plan gives the same tensors on every
//! device, with nothing drawn on the host.

use super::engine::{Mask, StreamKey};

/// The mask keeping each entry with probability `density`.
pub fn mask(density: f64, key: StreamKey) -> Mask {
    if density <= 0.0 {
        Mask::Nothing
    } else {
        Mask::Random {
            keep: density as f32,
            key,
        }
    }
}
