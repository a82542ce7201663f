//! Dense linear algebra for the Gaussian process, on [faer](https://docs.rs/faer): the Cholesky
//! factor of the kernel matrix (blocked, SIMD), triangular solves for one vector or many, the
//! inverse, and the factor grown by one row when the Kriging believer adds a fantasy
//! observation.
//!
//! Everything runs sequentially (`Par::Seq`): one run gives the same bits every time, and the
//! study's evaluators keep the other cores. faer chooses its SIMD kernels for the CPU at run
//! time, so results may differ in the last bits between CPUs of different generations.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Accum, ColMut, Mat, MatRef, Par};

/// The parallelism of every operation here.
pub(crate) const PAR: Par = Par::Seq;

/// `a · b` over the common length, with four accumulators (a fixed order: the same inputs give
/// the same bits on every machine).
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let chunks = n / 4;
    for c in 0..chunks {
        let i = 4 * c;
        acc[0] += a[i] * b[i];
        acc[1] += a[i + 1] * b[i + 1];
        acc[2] += a[i + 2] * b[i + 2];
        acc[3] += a[i + 3] * b[i + 3];
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in 4 * chunks..n {
        s += a[i] * b[i];
    }
    s
}

/// `a bᵀ` (`a` is `m × d`, `b` is `n × d`): the Gram matrix of two point sets.
pub(crate) fn gram(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::zeros(a.nrows(), b.nrows());
    matmul(out.as_mut(), Accum::Replace, a, b.transpose(), 1.0, PAR);
    out
}

/// A lower-triangular Cholesky factor `L` of `K = L Lᵀ` (the upper triangle is zero).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cholesky {
    l: Mat<f64>,
}

impl Cholesky {
    /// Factors the symmetric matrix `a` (its lower triangle is read). `None` when it is not
    /// numerically positive definite.
    pub(crate) fn factor(mut a: Mat<f64>) -> Option<Cholesky> {
        let n = a.nrows();
        let mut buffer = MemBuffer::new(llt::factor::cholesky_in_place_scratch::<f64>(
            n,
            PAR,
            Default::default(),
        ));
        llt::factor::cholesky_in_place(
            a.as_mut(),
            Default::default(),
            PAR,
            MemStack::new(&mut buffer),
            Default::default(),
        )
        .ok()?;
        for j in 0..n {
            let d = a[(j, j)];
            if !(d > 0.0 && d.is_finite()) {
                return None;
            }
            for i in 0..j {
                a[(i, j)] = 0.0;
            }
        }
        Some(Cholesky { l: a })
    }

    /// The number of rows.
    pub(crate) fn len(&self) -> usize {
        self.l.nrows()
    }

    /// Solves `L v = b` (forward substitution), in place.
    pub(crate) fn solve_lower(&self, b: &mut [f64]) {
        solve_lower_triangular_in_place(
            self.l.as_ref(),
            ColMut::from_slice_mut(b).as_mat_mut(),
            PAR,
        );
    }

    /// Solves `Lᵀ w = v` (back substitution), in place.
    pub(crate) fn solve_upper(&self, v: &mut [f64]) {
        solve_upper_triangular_in_place(
            self.l.transpose(),
            ColMut::from_slice_mut(v).as_mat_mut(),
            PAR,
        );
    }

    /// Solves `K x = b`, in place.
    pub(crate) fn solve(&self, b: &mut [f64]) {
        self.solve_lower(b);
        self.solve_upper(b);
    }

    /// `Σ ln L_ii`, half the log-determinant of `K`.
    pub(crate) fn half_log_det(&self) -> f64 {
        (0..self.len()).map(|i| self.l[(i, i)].ln()).sum()
    }

    /// Appends a row: `K` grows by one observation whose covariances with the others are `k` and
    /// whose variance is `kss`. The new diagonal is floored at `floor` (a fantasy at a point
    /// that is already observed must not break the factor).
    pub(crate) fn push(&mut self, k: &[f64], kss: f64, floor: f64) {
        let n = self.len();
        let mut v = k.to_vec();
        self.solve_lower(&mut v);
        let d = (kss - dot(&v, &v)).max(floor).sqrt();
        self.l.resize_with(n + 1, n + 1, |i, j| {
            if i == n && j < n {
                v[j]
            } else if i == n && j == n {
                d
            } else {
                0.0
            }
        });
    }

    /// `K⁻¹`, its lower triangle only (the upper is zero).
    pub(crate) fn inverse_lower(&self) -> Mat<f64> {
        let n = self.len();
        let mut out = Mat::zeros(n, n);
        let mut buffer = MemBuffer::new(llt::inverse::inverse_scratch::<f64>(n, PAR));
        llt::inverse::inverse(
            out.as_mut(),
            self.l.as_ref(),
            PAR,
            MemStack::new(&mut buffer),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_solve_inverse_and_push_agree() {
        // K = A Aᵀ + I for a fixed A.
        let n = 6;
        let a = Mat::from_fn(n, n, |i, j| ((i * 7 + j * 3) % 5) as f64 - 2.0);
        let mut k = gram(a.as_ref(), a.as_ref());
        for i in 0..n {
            k[(i, i)] += 1.0;
        }
        let full = k.clone();
        let chol = Cholesky::factor(k.clone()).unwrap();
        let b: Vec<f64> = (0..n).map(|i| i as f64 - 1.5).collect();
        let mut x = b.clone();
        chol.solve(&mut x);
        for i in 0..n {
            let kx: f64 = (0..n).map(|j| full[(i, j)] * x[j]).sum();
            assert!((kx - b[i]).abs() < 1e-9, "row {i}");
        }
        let inv = chol.inverse_lower();
        for i in 0..n {
            let e: f64 = (0..n)
                .map(|j| full[(i, j)] * inv[(j.max(i), j.min(i))])
                .sum();
            assert!((e - 1.0).abs() < 1e-9);
        }
        // Growing by the last row equals factoring the whole matrix.
        let head = Mat::from_fn(n - 1, n - 1, |i, j| full[(i, j)]);
        let mut grown = Cholesky::factor(head).unwrap();
        let k_last: Vec<f64> = (0..n - 1).map(|j| full[(n - 1, j)]).collect();
        grown.push(&k_last, full[(n - 1, n - 1)], 1e-12);
        for i in 0..n {
            for j in 0..n {
                assert!((grown.l[(i, j)] - chol.l[(i, j)]).abs() < 1e-9);
            }
        }
        let mut not_pd = full.clone();
        not_pd[(2, 2)] = -1.0;
        assert!(Cholesky::factor(not_pd).is_none());
    }
}
