//! The Gaussian-process posterior for fixed hyperparameters: fit (a Cholesky factor of
//! `K + σ_n² I` and `α = (K + σ_n² I)⁻¹ y`), prediction of the latent function's mean and
//! variance with their gradients, and fantasy observations for the Kriging believer.

use faer::Mat;

use super::kernel::{kernel_lower, matern52, matern52_and_slope, scale_rows, scaled_dist2};
use super::linalg::{Cholesky, dot};

/// The hyperparameters in log space: `[ln ℓ_1, …, ln ℓ_d, ln σ_f², ln σ_n²]`.
pub(crate) type Theta = [f64];

/// Jitter levels (relative to `σ_f²`) added to the noise when a factorization fails.
pub(crate) const JITTER: [f64; 5] = [0.0, 1e-8, 1e-6, 1e-4, 1e-2];

/// A fitted Gaussian process on `n` points in `d` coordinates (targets standardized by the
/// caller).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gp {
    d: usize,
    /// The training points divided by the length scales, row-major.
    xs: Vec<f64>,
    /// The length scales.
    lengths: Vec<f64>,
    sf2: f64,
    /// The noise variance actually used (the fitted one plus any jitter).
    sn2: f64,
    y: Vec<f64>,
    chol: Cholesky,
    alpha: Vec<f64>,
}

/// A prediction of the latent function with gradients in the input.
pub(crate) struct PredictionGrad {
    pub mean: f64,
    pub var: f64,
    pub dmean: Vec<f64>,
    pub dvar: Vec<f64>,
}

impl Gp {
    /// Fits the posterior to `x` (`n × d` row-major) and `y` under `theta`; `None` when no
    /// jitter level makes the kernel matrix positive definite.
    pub(crate) fn fit(x: &[f64], y: &[f64], d: usize, theta: &Theta) -> Option<Gp> {
        let n = y.len();
        debug_assert_eq!(x.len(), n * d);
        let lengths: Vec<f64> = theta[..d].iter().map(|t| t.exp()).collect();
        let sf2 = theta[d].exp();
        let noise = theta[d + 1].exp();
        let xs = scale_rows(x, &lengths);
        let (k, _) = kernel_lower(
            Mat::from_fn(n, d, |i, l| xs[i * d + l]).as_ref(),
            sf2,
            false,
        );
        for jitter in JITTER {
            let sn2 = noise + jitter * sf2;
            let mut a = k.clone();
            for i in 0..n {
                a[(i, i)] += sn2;
            }
            if let Some(chol) = Cholesky::factor(a) {
                let mut alpha = y.to_vec();
                chol.solve(&mut alpha);
                return Some(Gp {
                    d,
                    xs,
                    lengths,
                    sf2,
                    sn2,
                    y: y.to_vec(),
                    chol,
                    alpha,
                });
            }
        }
        None
    }

    /// The number of observations (real and fantasy).
    pub(crate) fn len(&self) -> usize {
        self.y.len()
    }

    /// Covariances of `point` with every training point, and the point scaled.
    fn cross(&self, point: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let ps: Vec<f64> = point
            .iter()
            .zip(&self.lengths)
            .map(|(x, l)| x / l)
            .collect();
        let k = self
            .xs
            .chunks_exact(self.d)
            .map(|xi| self.sf2 * matern52(scaled_dist2(&ps, xi)))
            .collect();
        (k, ps)
    }

    /// Posterior mean and variance of the latent function at `point`.
    pub(crate) fn predict(&self, point: &[f64]) -> (f64, f64) {
        let (mut k, _) = self.cross(point);
        let mean = dot(&k, &self.alpha);
        self.chol.solve_lower(&mut k);
        let var = (self.sf2 - dot(&k, &k)).max(1e-12 * self.sf2);
        (mean, var)
    }

    /// Posterior mean only (`O(n d)`).
    pub(crate) fn mean(&self, point: &[f64]) -> f64 {
        dot(&self.cross(point).0, &self.alpha)
    }

    /// Posterior mean and variance with their gradients in `point`.
    pub(crate) fn predict_grad(&self, point: &[f64]) -> PredictionGrad {
        let d = self.d;
        let ps: Vec<f64> = point
            .iter()
            .zip(&self.lengths)
            .map(|(x, l)| x / l)
            .collect();
        let n = self.len();
        let mut k = Vec::with_capacity(n);
        let mut slope = Vec::with_capacity(n);
        for xi in self.xs.chunks_exact(d) {
            let (g, s) = matern52_and_slope(scaled_dist2(&ps, xi));
            k.push(self.sf2 * g);
            slope.push(-self.sf2 * s);
        }
        let mean = dot(&k, &self.alpha);
        let mut w = k;
        self.chol.solve_lower(&mut w);
        let var_raw = self.sf2 - dot(&w, &w);
        let var = var_raw.max(1e-12 * self.sf2);
        self.chol.solve_upper(&mut w); // K⁻¹ k
        // ∂k_i/∂x_l = slope_i (ps_l - xs_il) / ℓ_l (with ps, xs scaled by ℓ).
        let mut dmean = vec![0.0; d];
        let mut dvar = vec![0.0; d];
        for (i, xi) in self.xs.chunks_exact(d).enumerate() {
            let am = self.alpha[i] * slope[i];
            let av = -2.0 * w[i] * slope[i];
            for l in 0..d {
                let diff = ps[l] - xi[l];
                dmean[l] += am * diff;
                dvar[l] += av * diff;
            }
        }
        for l in 0..d {
            dmean[l] /= self.lengths[l];
            dvar[l] /= self.lengths[l];
        }
        if var_raw < 1e-12 * self.sf2 {
            dvar.iter_mut().for_each(|g| *g = 0.0);
        }
        PredictionGrad {
            mean,
            var,
            dmean,
            dvar,
        }
    }

    /// Adds the observation `(point, value)` without refitting the hyperparameters: one new
    /// row of the Cholesky factor, `O(n²)`.
    pub(crate) fn add(&mut self, point: &[f64], value: f64) {
        let (k, ps) = self.cross(point);
        self.chol.push(&k, self.sf2 + self.sn2, 1e-10 * self.sf2);
        self.xs.extend_from_slice(&ps);
        self.y.push(value);
        let mut alpha = self.y.clone();
        self.chol.solve(&mut alpha);
        self.alpha = alpha;
    }

    /// The posterior mean at each training point, `y - σ_n² α`.
    pub(crate) fn train_means(&self) -> Vec<f64> {
        self.y
            .iter()
            .zip(&self.alpha)
            .map(|(y, a)| y - self.sn2 * a)
            .collect()
    }

    /// The training point `i` in unit-cube coordinates.
    pub(crate) fn point(&self, i: usize) -> Vec<f64> {
        self.xs[i * self.d..(i + 1) * self.d]
            .iter()
            .zip(&self.lengths)
            .map(|(x, l)| x * l)
            .collect()
    }
}
