//! Model Breadcrumbs (Davari and Belilovsky, "Model Breadcrumbs: Scaling Multi-Task Model Merging
//! with Sparse Masks", ECCV 2024).
//!
//! Each task vector drops its `floor(gamma * n)` largest magnitudes (outliers) and enough of its
//! smallest to keep `floor(density * n)` entries; if `density + gamma > 1` fewer large ones are
//! dropped. `breadcrumbs` then sums the weighted vectors; `breadcrumbs_ties` adds TIES sign
//! election. Unlike mergekit, a tensor for which `floor(gamma * n) = 0` (fewer than `1/gamma`
//! entries) keeps its `density` fraction instead of being zeroed entirely.

/// The rank window `[lo, hi)` kept of `n`: without the largest `gamma` and smallest
/// `1 - density - gamma` magnitudes.
pub fn window(n: usize, density: f64, gamma: f64) -> (usize, usize) {
    let target = ((density * n as f64) as usize).min(n);
    let top = ((gamma * n as f64) as usize).min(n - target);
    let bottom = n - target - top;
    (bottom, n - top)
}
