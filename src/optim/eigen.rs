//! Eigendecomposition of a symmetric matrix by the cyclic Jacobi method, for CMA-ES's
//! covariance matrix.
//!
//! CMA-ES needs `C = B diag(λ) Bᵀ` to sample and to whiten steps. The matrices are small (one row
//! per search coordinate, a few hundred at most) and decomposed only every few generations, so
//! the simple, unconditionally stable and accurate Jacobi method suffices and keeps the crate free
//! of a linear-algebra dependency. Each rotation zeroes one off-diagonal entry; sweeps over all
//! pairs repeat until the off-diagonal mass is negligible (quadratic convergence, typically 6 to
//! 10 sweeps).

/// Eigenvalues and eigenvectors of a symmetric matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetricEigen {
    /// The eigenvalues, in no particular order.
    pub values: Vec<f64>,
    /// The eigenvectors as the columns of an `n × n` row-major matrix: column `j` belongs to
    /// `values[j]`.
    pub vectors: Vec<f64>,
}

/// The most sweeps before giving up on further accuracy (never reached in practice).
const MAX_SWEEPS: usize = 64;

/// An off-diagonal entry this small relative to its two diagonal entries is treated as zero.
const NEGLIGIBLE: f64 = f64::EPSILON;

/// Decomposes the symmetric `n × n` row-major matrix `a` (only its upper triangle is read).
pub fn symmetric_eigen(a: &[f64], n: usize) -> SymmetricEigen {
    assert_eq!(
        a.len(),
        n * n,
        "symmetric_eigen: {} entries for n = {n}",
        a.len()
    );
    let mut m = a.to_vec();
    for i in 0..n {
        for j in 0..i {
            m[i * n + j] = m[j * n + i];
        }
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                rotated |= rotate(&mut m, &mut v, n, p, q);
            }
        }
        if !rotated {
            break;
        }
    }
    SymmetricEigen {
        values: (0..n).map(|i| m[i * n + i]).collect(),
        vectors: v,
    }
}

/// One Jacobi rotation in the `(p, q)` plane that zeroes `m[p][q]`, accumulated into `v`; `false`
/// when the entry was already negligible next to its diagonal entries (then it is just zeroed).
///
/// The relative test `|a_pq| <= eps sqrt(|a_pp a_qq|)` (rather than one against the whole matrix)
/// is what lets Jacobi find even the smallest eigenvalues of a positive definite matrix to nearly
/// full relative accuracy, which CMA-ES needs once its covariance matrix is ill-conditioned.
fn rotate(m: &mut [f64], v: &mut [f64], n: usize, p: usize, q: usize) -> bool {
    let apq = m[p * n + q];
    let app = m[p * n + p];
    let aqq = m[q * n + q];
    if apq.abs() <= NEGLIGIBLE * (app * aqq).abs().sqrt() {
        m[p * n + q] = 0.0;
        m[q * n + p] = 0.0;
        return false;
    }
    // The rotation angle's tangent, the smaller root of t^2 + 2 theta t - 1 = 0 for stability.
    let theta = (aqq - app) / (2.0 * apq);
    let t = if theta.is_finite() {
        theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
    } else {
        0.0
    };
    if t == 0.0 {
        // |apq| is negligible next to the diagonal gap: drop it.
        m[p * n + q] = 0.0;
        m[q * n + p] = 0.0;
        return false;
    }
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;
    for k in 0..n {
        let mkp = m[k * n + p];
        let mkq = m[k * n + q];
        m[k * n + p] = c * mkp - s * mkq;
        m[k * n + q] = s * mkp + c * mkq;
    }
    for k in 0..n {
        let mpk = m[p * n + k];
        let mqk = m[q * n + k];
        m[p * n + k] = c * mpk - s * mqk;
        m[q * n + k] = s * mpk + c * mqk;
    }
    m[p * n + q] = 0.0;
    m[q * n + p] = 0.0;
    for k in 0..n {
        let vkp = v[k * n + p];
        let vkq = v[k * n + q];
        v[k * n + p] = c * vkp - s * vkq;
        v[k * n + q] = s * vkp + c * vkq;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use rand::Rng as _;
    use rand_distr::StandardNormal;

    /// `B diag(values) Bᵀ`.
    fn reassemble(e: &SymmetricEigen, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                out[i * n + j] = (0..n)
                    .map(|k| e.vectors[i * n + k] * e.values[k] * e.vectors[j * n + k])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn random_symmetric_matrices_are_reassembled_from_orthonormal_eigenvectors() {
        let mut rng = Rng::new(1);
        for n in [1, 2, 3, 10, 40] {
            // A covariance-like matrix: G Gᵀ with a wide spread of scales, plus a bit of ridge.
            let g: Vec<f64> = (0..n * n)
                .map(|_| rng.sample::<f64, _>(StandardNormal))
                .collect();
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    a[i * n + j] = (0..n)
                        .map(|k| g[i * n + k] * g[j * n + k] * 10f64.powi(k as i32 % 7))
                        .sum();
                }
                a[i * n + i] += 1e-3;
            }
            let e = symmetric_eigen(&a, n);
            let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            for (x, y) in reassemble(&e, n).iter().zip(&a) {
                assert!((x - y).abs() <= 1e-11 * scale, "n = {n}: {x} vs {y}");
            }
            for i in 0..n {
                for j in 0..n {
                    let dot: f64 = (0..n)
                        .map(|k| e.vectors[k * n + i] * e.vectors[k * n + j])
                        .sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-12, "n = {n}: BᵀB[{i}][{j}] = {dot}");
                }
            }
            assert!(e.values.iter().all(|&v| v > 0.0));
        }
    }

    #[test]
    fn known_spectra_come_out_exactly_enough() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let mut values = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2).values;
        values.sort_by(f64::total_cmp);
        assert!((values[0] - 1.0).abs() < 1e-15 && (values[1] - 3.0).abs() < 1e-15);
        // A diagonal matrix is returned as is, with the identity as eigenvectors.
        let d = symmetric_eigen(&[1e-8, 0.0, 0.0, 1e8], 2);
        assert_eq!(d.values, vec![1e-8, 1e8]);
        assert_eq!(d.vectors, vec![1.0, 0.0, 0.0, 1.0]);
    }
}
