//! The Matérn-5/2 kernel with automatic relevance determination (one length scale per
//! coordinate): `k(x, x') = σ_f² (1 + √5 r + 5 r² / 3) exp(-√5 r)` with
//! `r² = Σ_l ((x_l - x'_l) / ℓ_l)²`. Twice differentiable, so its posterior mean is smooth enough
//! for gradient-based acquisition search, yet rougher than the squared exponential (which tends
//! to over-smooth noisy scores).

use faer::{Mat, MatRef};

use super::linalg::gram;

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

/// Squared distances between the rows of `a` (`m × d`) and of `b` (`n × d`), through their Gram
/// matrix (`|a_i|² + |b_j|² - 2 a_i·b_j`, floored at 0), as an `m × n` matrix.
pub(crate) fn squared_distances(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut g = gram(a, b);
    let norms = |m: MatRef<'_, f64>| -> Vec<f64> {
        (0..m.nrows())
            .map(|i| (0..m.ncols()).map(|l| m[(i, l)] * m[(i, l)]).sum())
            .collect()
    };
    let (na, nb) = (norms(a), norms(b));
    for (j, nj) in nb.iter().enumerate() {
        for (v, ni) in g.col_as_slice_mut(j).iter_mut().zip(&na) {
            *v = (ni + nj - 2.0 * *v).max(0.0);
        }
    }
    g
}

/// The lower triangle of `k(X, X)` for the scaled training points `xs` (one per row), `σ_f²` on
/// the diagonal; with `slopes`, also the strictly lower triangle of the slope factors of
/// [`matern52_and_slope`] times `σ_f²` (the diagonal, where every coordinate difference is zero,
/// is zero). Entries above the diagonal are left unspecified: filled column by column, the
/// matrices are written in memory order.
pub(crate) fn kernel_lower(
    xs: MatRef<'_, f64>,
    sf2: f64,
    slopes: bool,
) -> (Mat<f64>, Option<Mat<f64>>) {
    let n = xs.nrows();
    let mut k = squared_distances(xs, xs);
    let mut slope = slopes.then(|| Mat::zeros(n, n));
    for j in 0..n {
        let column = &mut k.col_as_slice_mut(j)[j..];
        column[0] = sf2;
        match &mut slope {
            Some(slope) => {
                let slope_column = &mut slope.col_as_slice_mut(j)[j..];
                for (v, s) in column.iter_mut().zip(slope_column.iter_mut()).skip(1) {
                    let (g, d) = matern52_and_slope(*v);
                    *v = sf2 * g;
                    *s = sf2 * d;
                }
            }
            None => {
                for v in column.iter_mut().skip(1) {
                    *v = sf2 * matern52(*v);
                }
            }
        }
    }
    (k, slope)
}
