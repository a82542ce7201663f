//! Quadratic response surfaces fitted by ridge regression, with the ridge chosen by
//! leave-one-out or generalized cross-validation, and the Bayesian reading of the same fit
//! (posterior predictive variance and covariance).
//!
//! Features of a point `x ∈ [0, 1]^d`, with `z = 2x - 1`: `z_i` (scaled by `linear`), `z_i²`
//! (scaled by `square`) and `z_i z_j` for `i < j` (scaled by `interaction`), `p = 2d + d(d-1)/2`
//! in all, plus an unpenalized intercept (features and targets are centred). Scaling a feature
//! group by `s` is the same as dividing its ridge penalty by `s²`, i.e. a prior variance `s²`.
//!
//! The fit goes through the thin singular value decomposition of the centred feature matrix
//! `R` (n × p), obtained from the eigendecomposition of the smaller of `R Rᵀ` (the dual, kernel
//! form, when `p > n`) and `Rᵀ R`. With it, every ridge strength costs O(n r): fitted values,
//! the hat matrix's diagonal (for leave-one-out residuals) and its trace (for GCV) all come from
//! the singular values, so a grid of strengths is searched exactly.

use crate::optim::eigen::symmetric_eigen;

/// Relative ridge strengths searched: `mean(σ²) · 10^t` for `t` in `-8, -7.5, ..., 3`.
const LOG_RIDGE: (f64, f64, usize) = (-8.0, 3.0, 23);

/// How the ridge strength is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Leave-one-out residuals (exact, from the hat matrix's diagonal).
    LeaveOneOut,
    /// Generalized cross-validation `n RSS / (n - tr H)²`.
    Generalized,
}

/// The scales of the three feature groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    pub linear: f64,
    pub square: f64,
    pub interaction: f64,
}

/// The number of quadratic features of a `dim`-dimensional point (without the intercept).
pub fn feature_count(dim: usize) -> usize {
    2 * dim + dim * dim.saturating_sub(1) / 2
}

/// The scaled quadratic features of `x`.
pub fn features(x: &[f64], scales: Scales) -> Vec<f64> {
    let d = x.len();
    let z: Vec<f64> = x.iter().map(|v| 2.0 * v - 1.0).collect();
    let mut phi = Vec::with_capacity(feature_count(d));
    phi.extend(z.iter().map(|v| scales.linear * v));
    phi.extend(z.iter().map(|v| scales.square * v * v));
    for i in 0..d {
        for j in i + 1..d {
            phi.push(scales.interaction * z[i] * z[j]);
        }
    }
    phi
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The observations' feature matrix, decomposed once and shared by every objective.
#[derive(Debug, Clone, PartialEq)]
pub struct Basis {
    dim: usize,
    scales: Scales,
    n: usize,
    /// The features' mean over the observations (p).
    mean: Vec<f64>,
    /// The left singular vectors, `u[k]` of length n.
    u: Vec<Vec<f64>>,
    /// The right singular vectors, `v[k]` of length p.
    v: Vec<Vec<f64>>,
    /// The squared singular values.
    s2: Vec<f64>,
}

impl Basis {
    /// Decomposes the centred features of `points` (at least one, all of one length).
    pub fn new(points: &[Vec<f64>], scales: Scales) -> Basis {
        let n = points.len();
        let dim = points.first().map_or(0, Vec::len);
        let p = feature_count(dim);
        let mut rows: Vec<Vec<f64>> = points.iter().map(|x| features(x, scales)).collect();
        let mut mean = vec![0.0; p];
        for row in &rows {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v / n as f64;
            }
        }
        for row in &mut rows {
            for (v, m) in row.iter_mut().zip(&mean) {
                *v -= m;
            }
        }
        let (mut u, mut v, mut s2) = (Vec::new(), Vec::new(), Vec::new());
        if n <= p {
            let mut gram = vec![0.0; n * n];
            for i in 0..n {
                for j in i..n {
                    gram[i * n + j] = dot(&rows[i], &rows[j]);
                }
            }
            let eigen = symmetric_eigen(&gram, n);
            let largest = eigen.values.iter().fold(0.0f64, |a, &b| a.max(b));
            for (k, &value) in eigen.values.iter().enumerate() {
                if value > 1e-11 * largest && value > 0.0 {
                    let uk: Vec<f64> = (0..n).map(|i| eigen.vectors[i * n + k]).collect();
                    let sigma = value.sqrt();
                    let vk: Vec<f64> = (0..p)
                        .map(|c| (0..n).map(|i| rows[i][c] * uk[i]).sum::<f64>() / sigma)
                        .collect();
                    u.push(uk);
                    v.push(vk);
                    s2.push(value);
                }
            }
        } else {
            let mut gram = vec![0.0; p * p];
            for row in &rows {
                for a in 0..p {
                    for b in a..p {
                        gram[a * p + b] += row[a] * row[b];
                    }
                }
            }
            let eigen = symmetric_eigen(&gram, p);
            let largest = eigen.values.iter().fold(0.0f64, |a, &b| a.max(b));
            for (k, &value) in eigen.values.iter().enumerate() {
                if value > 1e-11 * largest && value > 0.0 {
                    let vk: Vec<f64> = (0..p).map(|c| eigen.vectors[c * p + k]).collect();
                    let sigma = value.sqrt();
                    let uk: Vec<f64> = rows.iter().map(|row| dot(row, &vk) / sigma).collect();
                    u.push(uk);
                    v.push(vk);
                    s2.push(value);
                }
            }
        }
        Basis {
            dim,
            scales,
            n,
            mean,
            u,
            v,
            s2,
        }
    }

    /// The centred features of `x`.
    fn centred(&self, x: &[f64]) -> Vec<f64> {
        let mut phi = features(x, self.scales);
        for (v, m) in phi.iter_mut().zip(&self.mean) {
            *v -= m;
        }
        phi
    }

    /// Fits `y` (one value per point of the basis) with the ridge strength `validation` picks.
    pub fn fit(&self, y: &[f64], validation: Validation) -> QuadraticFit {
        let n = self.n as f64;
        let y_mean = y.iter().sum::<f64>() / n;
        let var = y.iter().map(|v| (v - y_mean).powi(2)).sum::<f64>() / n;
        let y_scale = if var > 0.0 && var.is_finite() {
            var.sqrt()
        } else {
            1.0
        };
        let yc: Vec<f64> = y.iter().map(|v| (v - y_mean) / y_scale).collect();
        let proj: Vec<f64> = self.u.iter().map(|uk| dot(uk, &yc)).collect();
        let mean_s2 = if self.s2.is_empty() {
            1.0
        } else {
            self.s2.iter().sum::<f64>() / self.s2.len() as f64
        };
        let (lo, hi, steps) = LOG_RIDGE;
        let mut best: Option<(f64, f64)> = None;
        // From the strongest ridge down, so ties keep the smoother fit.
        for step in (0..steps).rev() {
            let t = lo + (hi - lo) * step as f64 / (steps - 1) as f64;
            let lambda = mean_s2 * 10f64.powf(t);
            let score = self.score(&yc, &proj, lambda, validation);
            if best.is_none_or(|(s, _)| score < s * (1.0 - 1e-9)) {
                best = Some((score, lambda));
            }
        }
        let (score, lambda) = best.unwrap_or((f64::INFINITY, mean_s2));
        self.fit_with(&yc, &proj, lambda, y_mean, y_scale, score)
    }

    /// The validation score of ridge strength `lambda`.
    fn score(&self, yc: &[f64], proj: &[f64], lambda: f64, validation: Validation) -> f64 {
        let n = self.n;
        let shrink: Vec<f64> = self.s2.iter().map(|s| s / (s + lambda)).collect();
        let mut residual = yc.to_vec();
        for ((uk, pk), h) in self.u.iter().zip(proj).zip(&shrink) {
            for (r, u) in residual.iter_mut().zip(uk) {
                *r -= h * pk * u;
            }
        }
        match validation {
            Validation::Generalized => {
                let trace = 1.0 + shrink.iter().sum::<f64>();
                let free = n as f64 - trace;
                if free <= 1e-9 {
                    return f64::INFINITY;
                }
                n as f64 * dot(&residual, &residual) / (free * free)
            }
            Validation::LeaveOneOut => {
                let mut press = 0.0;
                for (i, r) in residual.iter().enumerate() {
                    let leverage = 1.0 / n as f64
                        + self
                            .u
                            .iter()
                            .zip(&shrink)
                            .map(|(uk, h)| uk[i] * uk[i] * h)
                            .sum::<f64>();
                    let free = 1.0 - leverage;
                    if free <= 1e-9 {
                        return f64::INFINITY;
                    }
                    press += (r / free).powi(2);
                }
                press / n as f64
            }
        }
    }

    /// The fit with ridge strength `lambda` on standardized targets `yc` (projections `proj`).
    fn fit_with(
        &self,
        yc: &[f64],
        proj: &[f64],
        lambda: f64,
        y_mean: f64,
        y_scale: f64,
        score: f64,
    ) -> QuadraticFit {
        let d = self.dim;
        let p = feature_count(d);
        let mut w = vec![0.0; p];
        let mut residual = yc.to_vec();
        let mut dof = 0.0;
        for (((&s2, &pk), vk), uk) in self.s2.iter().zip(proj).zip(&self.v).zip(&self.u) {
            let coefficient = s2.sqrt() / (s2 + lambda) * pk;
            for (wc, vc) in w.iter_mut().zip(vk) {
                *wc += coefficient * vc;
            }
            let h = s2 / (s2 + lambda);
            for (r, u) in residual.iter_mut().zip(uk) {
                *r -= h * pk * u;
            }
            dof += h;
        }
        let rss = dot(&residual, &residual);
        let n = self.n as f64;
        let noise = (rss / (n - 1.0 - dof).max(1.0)).max(1e-12);
        // Empirical-Bayes prior variance of the weights: ‖w‖² per effective parameter.
        let w2 = dot(&w, &w);
        let prior = if dof > 1e-9 && w2 > 0.0 {
            w2 / dof
        } else {
            noise / lambda
        };
        let mut linear = vec![0.0; d];
        let mut quadratic = vec![0.0; d * d];
        for i in 0..d {
            linear[i] = self.scales.linear * w[i];
            quadratic[i * d + i] = self.scales.square * w[d + i];
        }
        let mut k = 2 * d;
        for i in 0..d {
            for j in i + 1..d {
                let half = 0.5 * self.scales.interaction * w[k];
                quadratic[i * d + j] = half;
                quadratic[j * d + i] = half;
                k += 1;
            }
        }
        QuadraticFit {
            intercept: -dot(&self.mean, &w),
            linear,
            quadratic,
            y_mean,
            y_scale,
            lambda,
            score,
            noise,
            prior,
        }
    }

    /// The posterior covariance (standardized units) of the fit `fit` between the predictions at
    /// every pair of `points`, as an `m × m` row-major matrix:
    /// `prior · ψ_aᵀ (I - V diag(σ²/(σ²+λ)) Vᵀ) ψ_b + noise / n`, with `ψ` the centred features.
    pub fn covariance(&self, fit: &QuadraticFit, points: &[Vec<f64>]) -> Vec<f64> {
        let m = points.len();
        let psi: Vec<Vec<f64>> = points.iter().map(|x| self.centred(x)).collect();
        let g: Vec<Vec<f64>> = psi
            .iter()
            .map(|p| self.v.iter().map(|vk| dot(vk, p)).collect())
            .collect();
        let shrink: Vec<f64> = self.s2.iter().map(|s| s / (s + fit.lambda)).collect();
        let mut cov = vec![0.0; m * m];
        for a in 0..m {
            for b in a..m {
                let explained: f64 = (0..shrink.len())
                    .map(|k| shrink[k] * g[a][k] * g[b][k])
                    .sum();
                let mut c = fit.prior * (dot(&psi[a], &psi[b]) - explained);
                if a == b {
                    c = c.max(0.0);
                }
                c += fit.noise / self.n as f64;
                cov[a * m + b] = c;
                cov[b * m + a] = c;
            }
        }
        cov
    }

    /// The posterior predictive variance of `fit` at `x`, in the objective's own units.
    pub fn variance(&self, fit: &QuadraticFit, x: &[f64]) -> f64 {
        self.covariance(fit, &[x.to_vec()])[0] * fit.y_scale * fit.y_scale
    }
}

/// One objective's fitted quadratic: `y_mean + y_scale (c + bᵀz + zᵀAz)` with `z = 2x - 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuadraticFit {
    intercept: f64,
    linear: Vec<f64>,
    /// The symmetric `A`, row-major `d × d`.
    quadratic: Vec<f64>,
    y_mean: f64,
    y_scale: f64,
    /// The ridge strength chosen (on the scaled features and standardized targets).
    pub lambda: f64,
    /// Its validation score (mean squared error, standardized units).
    pub score: f64,
    /// The residual variance per degree of freedom left (standardized units).
    pub noise: f64,
    /// The prior variance of each scaled feature's weight (standardized units).
    pub prior: f64,
}

impl QuadraticFit {
    /// The fitted value at `x`.
    pub fn predict(&self, x: &[f64]) -> f64 {
        let d = self.linear.len();
        let z: Vec<f64> = x.iter().map(|v| 2.0 * v - 1.0).collect();
        let mut value = self.intercept + dot(&self.linear, &z);
        for i in 0..d {
            value += z[i] * dot(&self.quadratic[i * d..(i + 1) * d], &z);
        }
        self.y_mean + self.y_scale * value
    }
}
