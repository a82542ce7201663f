//! Small dense linear algebra for the Gaussian process: dot products, and a Cholesky factor kept
//! as packed lower-triangular rows (row `i` holds `L[i][0..=i]`), which grows by one row when the
//! Kriging believer adds a fantasy observation.

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

/// The offset of row `i` in packed lower-triangular storage.
#[inline]
pub(crate) fn row_start(i: usize) -> usize {
    i * (i + 1) / 2
}

/// A lower-triangular Cholesky factor `L` (`K = L Lᵀ`) in packed rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cholesky {
    n: usize,
    packed: Vec<f64>,
}

impl Cholesky {
    /// Factors the symmetric matrix whose packed lower triangle is `packed` (`n` rows), in
    /// place (Cholesky–Banachiewicz, row by row). `None` when it is not numerically positive
    /// definite.
    pub(crate) fn factor(mut packed: Vec<f64>, n: usize) -> Option<Cholesky> {
        debug_assert_eq!(packed.len(), row_start(n));
        for j in 0..n {
            let rj = row_start(j);
            for k in 0..j {
                let rk = row_start(k);
                let (head, row_j) = packed.split_at_mut(rj);
                let s = row_j[k] - dot(&row_j[..k], &head[rk..rk + k]);
                row_j[k] = s / head[rk + k];
            }
            let row = &packed[rj..rj + j];
            let d = packed[rj + j] - dot(row, row);
            if !(d > 0.0 && d.is_finite()) {
                return None;
            }
            packed[rj + j] = d.sqrt();
        }
        Some(Cholesky { n, packed })
    }

    /// Row `i` of `L`, `L[i][0..=i]`.
    #[inline]
    pub(crate) fn row(&self, i: usize) -> &[f64] {
        let r = row_start(i);
        &self.packed[r..r + i + 1]
    }

    /// Solves `L v = b` (forward substitution), in place.
    pub(crate) fn solve_lower(&self, b: &mut [f64]) {
        for i in 0..self.n {
            let row = self.row(i);
            b[i] = (b[i] - dot(&row[..i], &b[..i])) / row[i];
        }
    }

    /// Solves `Lᵀ w = v` (back substitution), in place.
    pub(crate) fn solve_upper(&self, v: &mut [f64]) {
        for i in (0..self.n).rev() {
            let row = self.row(i);
            let w = v[i] / row[i];
            v[i] = w;
            for (vk, lk) in v[..i].iter_mut().zip(&row[..i]) {
                *vk -= w * lk;
            }
        }
    }

    /// Solves `K x = b`, in place.
    pub(crate) fn solve(&self, b: &mut [f64]) {
        self.solve_lower(b);
        self.solve_upper(b);
    }

    /// `Σ ln L_ii`, half the log-determinant of `K`.
    pub(crate) fn half_log_det(&self) -> f64 {
        (0..self.n).map(|i| self.row(i)[i].ln()).sum()
    }

    /// Appends a row: `K` grows by one observation whose covariances with the others are `k` and
    /// whose variance is `kss`. The new diagonal is floored at `floor` (a fantasy at a point
    /// that is already observed must not break the factor).
    pub(crate) fn push(&mut self, k: &[f64], kss: f64, floor: f64) {
        let mut v = k.to_vec();
        self.solve_lower(&mut v);
        let d = (kss - dot(&v, &v)).max(floor).sqrt();
        self.packed.extend_from_slice(&v);
        self.packed.push(d);
        self.n += 1;
    }

    /// `K⁻¹` as a full row-major `n × n` matrix: `U = L⁻ᵀ` row by row (row `j` of `U` is
    /// column `j` of `L⁻¹`), then `K⁻¹ = U Uᵀ` from dot products of rows.
    pub(crate) fn inverse(&self) -> Vec<f64> {
        let n = self.n;
        // u[j] holds column j of L^{-1} in entries j..n (entries below j are zero).
        let mut u = vec![0.0; n * n];
        for j in 0..n {
            let col = &mut u[j * n..(j + 1) * n];
            col[j] = 1.0 / self.row(j)[j];
            for i in j + 1..n {
                let row = self.row(i);
                col[i] = -dot(&row[j..i], &col[j..i]) / row[i];
            }
        }
        let mut inv = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                // (L^{-T} L^{-1})_{ij} = Σ_k Linv[k][i] Linv[k][j], k ≥ max(i, j) = j.
                let s = dot(&u[i * n + j..(i + 1) * n], &u[j * n + j..(j + 1) * n]);
                inv[i * n + j] = s;
                inv[j * n + i] = s;
            }
        }
        inv
    }
}
