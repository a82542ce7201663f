//! CMA-ES's covariance matrix `C = B D² Bᵀ`, full or diagonal (sep-CMA-ES), kept apart from
//! the strategy so the update, sampling and mirroring of the matrix read on their own.
//!
//! The full model keeps `C` and, as of its last eigendecomposition, the eigenvectors `B` and the
//! square roots `D` of the eigenvalues; sampling uses the (possibly stale) `B D`, as the tutorial
//! allows. The diagonal model keeps only `D`.

use serde::{Deserialize, Serialize};

use super::eigen::symmetric_eigen;
use super::exact;

/// The covariance matrix `C` and the square root of it that sampling uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Cov {
    /// `C = B diag(d²) Bᵀ`, `n × n` row-major; `b` and `d` as of the last decomposition.
    Full {
        #[serde(with = "exact::vec")]
        c: Vec<f64>,
        #[serde(with = "exact::vec")]
        b: Vec<f64>,
        #[serde(with = "exact::vec")]
        d: Vec<f64>,
    },
    /// `C = diag(d²)`.
    Diagonal {
        #[serde(with = "exact::vec")]
        d: Vec<f64>,
    },
}

impl Cov {
    /// The identity, full or diagonal.
    pub(crate) fn identity(n: usize, separable: bool) -> Cov {
        if separable {
            return Cov::Diagonal { d: vec![1.0; n] };
        }
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            c[i * n + i] = 1.0;
        }
        Cov::Full {
            b: c.clone(),
            c,
            d: vec![1.0; n],
        }
    }

    /// The standard deviations along the principal axes.
    pub(crate) fn d(&self) -> &[f64] {
        match self {
            Cov::Full { d, .. } | Cov::Diagonal { d } => d,
        }
    }

    /// `B D z`: a standard normal vector made `N(0, C)`.
    pub(crate) fn step(&self, z: &[f64]) -> Vec<f64> {
        match self {
            Cov::Full { b, d, .. } => {
                let n = d.len();
                let dz: Vec<f64> = d.iter().zip(z).map(|(d, z)| d * z).collect();
                (0..n)
                    .map(|i| {
                        b[i * n..(i + 1) * n]
                            .iter()
                            .zip(&dz)
                            .map(|(b, x)| b * x)
                            .sum()
                    })
                    .collect()
            }
            Cov::Diagonal { d } => d.iter().zip(z).map(|(d, z)| d * z).collect(),
        }
    }

    /// `C^(-1/2) B D z = B z`: a step `B D z` whitened.
    pub(crate) fn whiten(&self, z: &[f64]) -> Vec<f64> {
        match self {
            Cov::Full { b, .. } => {
                let n = z.len();
                (0..n)
                    .map(|i| {
                        b[i * n..(i + 1) * n]
                            .iter()
                            .zip(z)
                            .map(|(b, x)| b * x)
                            .sum()
                    })
                    .collect()
            }
            Cov::Diagonal { .. } => z.to_vec(),
        }
    }

    /// `C_ii`.
    pub(crate) fn diag(&self, i: usize) -> f64 {
        match self {
            Cov::Full { c, d, .. } => c[i * d.len() + i],
            Cov::Diagonal { d } => d[i] * d[i],
        }
    }

    /// Principal axis `i` scaled to its standard deviation: `d_i B[:, i]`.
    pub(crate) fn axis(&self, i: usize) -> Vec<f64> {
        match self {
            Cov::Full { b, d, .. } => (0..d.len()).map(|k| d[i] * b[k * d.len() + i]).collect(),
            Cov::Diagonal { d } => (0..d.len())
                .map(|k| if k == i { d[i] } else { 0.0 })
                .collect(),
        }
    }

    /// The condition number of `C` as of the last decomposition.
    pub(crate) fn condition(&self) -> f64 {
        let d = self.d();
        let max = d.iter().fold(0.0f64, |m, &x| m.max(x));
        let min = d.iter().fold(f64::INFINITY, |m, &x| m.min(x));
        (max / min).powi(2)
    }

    /// `C ← keep C + c1 pc pcᵀ + cmu Σ w_k s_k s_kᵀ`, where `weighted` are the `(w_k, s_k)`.
    pub(crate) fn update(
        &mut self,
        keep: f64,
        c1: f64,
        pc: &[f64],
        cmu: f64,
        weighted: &[(f64, &[f64])],
    ) {
        match self {
            Cov::Full { c, d, .. } => {
                let n = d.len();
                for i in 0..n {
                    for j in i..n {
                        let rank_mu: f64 = weighted.iter().map(|(w, s)| w * s[i] * s[j]).sum();
                        let v = keep * c[i * n + j] + c1 * pc[i] * pc[j] + cmu * rank_mu;
                        c[i * n + j] = v;
                        c[j * n + i] = v;
                    }
                }
            }
            Cov::Diagonal { d } => {
                for (i, di) in d.iter_mut().enumerate() {
                    let rank_mu: f64 = weighted.iter().map(|(w, s)| w * s[i] * s[i]).sum();
                    let v = keep * *di * *di + c1 * pc[i] * pc[i] + cmu * rank_mu;
                    *di = v.max(0.0).sqrt();
                }
            }
        }
    }

    /// Mirrors coordinate `i`: `C ← M C M` and `B ← M B` with `M` the identity but for
    /// `M_ii = -1` (a diagonal matrix is unchanged).
    pub(crate) fn flip(&mut self, i: usize) {
        if let Cov::Full { c, b, d } = self {
            let n = d.len();
            for k in 0..n {
                if k != i {
                    c[i * n + k] = -c[i * n + k];
                    c[k * n + i] = -c[k * n + i];
                }
                b[i * n + k] = -b[i * n + k];
            }
        }
    }

    /// Refreshes `B` and `D` from `C` (full model only).
    pub(crate) fn decompose(&mut self) {
        if let Cov::Full { c, b, d } = self {
            let eigen = symmetric_eigen(c, d.len());
            *b = eigen.vectors;
            // Rounding can leave a tiny negative eigenvalue; it shows as a huge condition number.
            *d = eigen
                .values
                .iter()
                .map(|&v| v.max(f64::MIN_POSITIVE).sqrt())
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_whitened_back_and_mirroring_is_a_similarity() {
        let c = [2.0, 0.5, -0.3, 0.5, 1.0, 0.2, -0.3, 0.2, 3.0];
        let step = [0.3, -1.0, 0.5];
        let mut cov = Cov::Full {
            c: c.to_vec(),
            b: Vec::new(),
            d: vec![1.0; 3],
        };
        cov.decompose();
        // C^(-1/2) (B D z) = B z.
        let z = [0.7, -0.2, 1.1];
        let y = cov.step(&z);
        let Cov::Full { b, d, .. } = &cov else {
            unreachable!()
        };
        let bt_y: Vec<f64> = (0..3)
            .map(|j| (0..3).map(|i| b[i * 3 + j] * y[i]).sum::<f64>() / d[j])
            .collect();
        let white: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| b[i * 3 + j] * bt_y[j]).sum())
            .collect();
        for (w, v) in white.iter().zip(cov.whiten(&z)) {
            assert!((w - v).abs() < 1e-12);
        }
        // The diagonal of C and the condition number survive a mirroring; the step along the
        // mirrored coordinate changes sign.
        let before = cov.step(&step);
        let condition = cov.condition();
        cov.flip(1);
        let after = cov.step(&step);
        assert!((before[1] + after[1]).abs() < 1e-12);
        assert!((before[0] - after[0]).abs() < 1e-12 && (before[2] - after[2]).abs() < 1e-12);
        assert_eq!(cov.condition(), condition);
        assert!((0..3).all(|i| cov.diag(i) == c[i * 3 + i]));
    }

    #[test]
    fn the_diagonal_model_updates_each_variance_alone() {
        let mut cov = Cov::identity(2, true);
        let s = [1.0, 2.0];
        cov.update(0.5, 0.1, &[3.0, 0.0], 0.2, &[(1.0, &s[..])]);
        assert!((cov.diag(0) - (0.5 + 0.9 + 0.2)).abs() < 1e-15);
        assert!((cov.diag(1) - (0.5 + 0.8)).abs() < 1e-15);
        assert_eq!(cov.axis(1), vec![0.0, cov.diag(1).sqrt()]);
        assert_eq!(
            cov.step(&[1.0, 1.0]),
            vec![cov.diag(0).sqrt(), cov.diag(1).sqrt()]
        );
        assert_eq!(cov.whiten(&[1.0, 2.0]), vec![1.0, 2.0]);
    }
}
