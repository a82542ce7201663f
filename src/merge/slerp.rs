//! Spherical linear interpolation (Shoemake, SIGGRAPH 1985) between the base (`t = 0`) and the one
//! expert (`t = 1`), over the whole flattened tensor, as mergekit's `slerp`:
//! with `u_j = v_j / |v_j|` (unnormalized when `|v_j| <= 1e-8`) and `c = u_0 . u_1`,
//! `theta = lerp(t)` if `|c| > 0.9995`, else
//! `theta = sin((1 - t) a) / sin(a) * v_0 + sin(t a) / sin(a) * v_1` with `a = acos(c)`.
//! To slerp two experts, make one of them the base, as in mergekit.
//!
//! The norms and the dot product are tree sums on the device; the angle is computed on the host
//! in `f64` (one read-back per tensor), then the interpolation is a [`Job::Combine`].

use super::engine::Job;

/// Above this cosine the vectors are treated as colinear and linearly interpolated.
const DOT_THRESHOLD: f64 = 0.9995;
/// Norms at or below this are not divided by.
const NORM_EPS: f64 = 1e-8;

/// The interpolation at `t`, given the sums `[|v0|^2, |v1|^2, v0 . v1]`.
pub fn job(t: f64, [s00, s11, s01]: [f32; 3]) -> Job {
    let n0 = f64::from(s00).sqrt();
    let n1 = f64::from(s11).sqrt();
    let d0 = if n0 > NORM_EPS { n0 } else { 1.0 };
    let d1 = if n1 > NORM_EPS { n1 } else { 1.0 };
    let dot = f64::from(s01) / (d0 * d1);
    let (s0, s1) = if dot.abs() > DOT_THRESHOLD {
        (1.0 - t, t)
    } else {
        let angle = dot.acos();
        let sin = angle.sin();
        (((1.0 - t) * angle).sin() / sin, (t * angle).sin() / sin)
    };
    // s0 v0 + s1 v1 = (s0 + s1) theta_base + s1 tau.
    Job::Combine {
        base: (s0 + s1) as f32,
        taus: vec![s1 as f32],
    }
}
