//! TIES-Merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging Models",
//! NeurIPS 2023).
//!
//! Each task vector keeps its `k = floor(density * n)` largest-magnitude entries (trim); the sign
//! of each entry is elected by the weighted sum of the trimmed vectors (elect); entries that
//! agree with it are averaged, weighted by `weight` (disjoint merge, `normalize`):
//! `theta = theta_base + lambda * sum_i m_i w_i d_i / sum_i m_i w_i`. Trim ranks magnitudes over
//! the whole tensor, as mergekit does; equal magnitudes are ranked by position (later positions
//! rank higher), so the result is deterministic and the same on every device. Density 0 keeps
//! nothing (mergekit refuses it).

/// The rank window `[lo, hi)` of the `floor(density * n)` largest magnitudes of `n`.
pub fn window(n: usize, density: f64) -> (usize, usize) {
    let k = ((density * n as f64) as usize).min(n);
    (n - k, n)
}
