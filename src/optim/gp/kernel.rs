//! The Matérn-5/2 kernel with automatic relevance determination (one length scale per
//! coordinate): `k(x, x') = σ_f² (1 + √5 r + 5 r² / 3) exp(-√5 r)` with
//! `r² = Σ_l ((x_l - x'_l) / ℓ_l)²`. Twice differentiable, so its posterior mean is smooth enough
//! for gradient-based acquisition search, yet rougher than the squared exponential (which tends
//! to over-smooth noisy scores).

const SQRT5: f64 = 2.236_067_977_499_79;

/// The correlation `g(r) = (1 + √5 r + 5 r² / 3) exp(-√5 r)` at `r²`.
#[inline]
pub(crate) fn matern52(r2: f64) -> f64 {
    let r = r2.sqrt();
    (1.0 + SQRT5 * r + (5.0 / 3.0) * r2) * (-SQRT5 * r).exp()
}

/// `g(r)` and `-2 dg/d(r²) = (5/3) (1 + √5 r) exp(-√5 r)` at `r²`: the second is the factor by
/// which `∂k/∂ ln ℓ_l = σ_f² · that · (Δ_l / ℓ_l)²`, and `∂k/∂x_l = -σ_f² · that · Δ_l / ℓ_l²`.
#[inline]
pub(crate) fn matern52_and_slope(r2: f64) -> (f64, f64) {
    let r = r2.sqrt();
    let e = (-SQRT5 * r).exp();
    let g = (1.0 + SQRT5 * r + (5.0 / 3.0) * r2) * e;
    let slope = (5.0 / 3.0) * (1.0 + SQRT5 * r) * e;
    (g, slope)
}

/// Squared scaled distance between two points already divided by the length scales.
#[inline]
pub(crate) fn scaled_dist2(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let n = a.len().min(b.len());
    let chunks = n / 4;
    for c in 0..chunks {
        let i = 4 * c;
        for k in 0..4 {
            let t = a[i + k] - b[i + k];
            acc[k] += t * t;
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in 4 * chunks..n {
        let t = a[i] - b[i];
        s += t * t;
    }
    s
}

/// Each row of `x` (`n × d`, row-major) divided coordinate-wise by `lengths`.
pub(crate) fn scale_rows(x: &[f64], lengths: &[f64]) -> Vec<f64> {
    let d = lengths.len();
    let inv: Vec<f64> = lengths.iter().map(|l| 1.0 / l).collect();
    x.chunks_exact(d)
        .flat_map(|row| row.iter().zip(&inv).map(|(v, i)| v * i))
        .collect()
}
