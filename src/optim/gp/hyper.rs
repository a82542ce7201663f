//! Hyperparameters by maximizing the log marginal likelihood plus weak log-normal priors (a MAP
//! fit) with argmin's L-BFGS in log-parameter space, from several starts.
//!
//! With `K = k(X, X) + σ_n² I`, `α = K⁻¹ y` and `W = α αᵀ - K⁻¹`:
//! `ln p(y | θ) = -½ yᵀα - Σ ln L_ii - (n/2) ln 2π` and `∂ ln p / ∂θ_j = ½ tr(W ∂K/∂θ_j)`.
//! `W` is formed once per evaluation (`O(n³)`, faer's Cholesky and inverse); then
//! `∂K/∂ ln σ_f² = k(X, X)`, `∂K/∂ ln σ_n² = σ_n² I` and
//! `∂K_ij/∂ ln ℓ_l = σ_f² (5/3)(1 + √5 r) e^{-√5 r} (Δ_ijl/ℓ_l)²` give every length-scale entry at
//! once from one matrix product: with `M = W ∘ slope` and its row sums `r`,
//! `Σ_{i<j} M_ij Δ_ijl² = Σ_i x_il (x_il r_i - (M X)_il)` (`O(n² d)` in a GEMM).
//!
//! Priors (on the unit cube, targets standardized): `ln ℓ_l ~ N(√2 + ½ ln d, 3)` (Hvarfner,
//! Hellsten and Nardi 2024: length scales growing like `√d` keep vanilla BO working in high
//! dimensions), `ln σ_f² ~ N(0, 2²)`, `ln σ_n² ~ N(ln 0.01, 3²)`. Bounds, as a stiff quadratic
//! penalty outside them and a clamp of the result: `ℓ ∈ [0.01, 100]`, `σ_f² ∈ [10⁻³, 10²]`,
//! `σ_n² ∈ [10⁻⁶, 10]`.

use rand::Rng as _;
use rand_distr::StandardNormal;
use std::cell::RefCell;
use std::f64::consts::LN_10;

use argmin::core::{CostFunction, Error, Executor, Gradient};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat};

use super::kernel::kernel_lower;
use super::linalg::{Cholesky, PAR, dot};
use super::model::JITTER;
use crate::rng::Rng;

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Lower and upper bounds of a log length scale.
pub(crate) const LOG_LENGTH: (f64, f64) = (-2.0 * LN_10, 2.0 * LN_10);
/// Bounds of the log signal variance.
pub(crate) const LOG_SIGNAL: (f64, f64) = (-3.0 * LN_10, 2.0 * LN_10);
/// Bounds of the log noise variance.
pub(crate) const LOG_NOISE: (f64, f64) = (-6.0 * LN_10, LN_10);

/// The bounds of parameter `j` of `d + 2`.
fn bounds(j: usize, d: usize) -> (f64, f64) {
    if j < d {
        LOG_LENGTH
    } else if j == d {
        LOG_SIGNAL
    } else {
        LOG_NOISE
    }
}

/// The prior's mean and standard deviation of parameter `j` of `d + 2`.
fn prior(j: usize, d: usize) -> (f64, f64) {
    if j < d {
        (
            std::f64::consts::SQRT_2 + 0.5 * (d as f64).ln(),
            3f64.sqrt(),
        )
    } else if j == d {
        (0.0, 2.0)
    } else {
        (0.01f64.ln(), 3.0)
    }
}

/// The prior's mean for `d` coordinates: where the first fit starts.
pub(crate) fn default_theta(d: usize) -> Vec<f64> {
    (0..d + 2).map(|j| prior(j, d).0).collect()
}

/// A random start: one common length scale around the prior's mean with a little spread per
/// coordinate, a signal variance near 1 and a noise variance between 10⁻⁴ and 0.3.
pub(crate) fn random_theta(d: usize, rng: &mut Rng) -> Vec<f64> {
    let common = prior(0, d).0 + 3.0 * rng.random::<f64>() - 2.0;
    let mut theta: Vec<f64> = (0..d)
        .map(|_| common + 0.3 * rng.sample::<f64, _>(StandardNormal))
        .collect();
    theta.push(2.0 * rng.random::<f64>() - 1.0);
    theta.push(1e-4f64.ln() + (0.3f64 / 1e-4).ln() * rng.random::<f64>());
    clamp(&mut theta, d);
    theta
}

/// Clamps every parameter into its bounds.
pub(crate) fn clamp(theta: &mut [f64], d: usize) {
    for (j, t) in theta.iter_mut().enumerate() {
        let (lo, hi) = bounds(j, d);
        *t = if t.is_finite() {
            t.clamp(lo, hi)
        } else {
            prior(j, d).0
        };
    }
}

/// The exact log marginal likelihood of `y` at `x` (`n × d`) under `theta` and its gradient
/// in `theta`, or `None` when the kernel matrix cannot be factored at any jitter level.
pub(crate) fn log_marginal_likelihood(
    x: &[f64],
    y: &[f64],
    d: usize,
    theta: &[f64],
) -> Option<(f64, Vec<f64>)> {
    let n = y.len();
    let lengths: Vec<f64> = theta[..d].iter().map(|t| t.exp()).collect();
    let sf2 = theta[d].exp();
    let noise = theta[d + 1].exp();
    let xs = Mat::from_fn(n, d, |i, l| x[i * d + l] / lengths[l]);
    let (kf, slope) = kernel_lower(xs.as_ref(), sf2, true);
    let slope = slope?;
    let chol = JITTER.iter().find_map(|&jitter| {
        let mut a = kf.clone();
        for i in 0..n {
            a[(i, i)] += noise + jitter * sf2;
        }
        Cholesky::factor(a)
    })?;
    let mut alpha = y.to_vec();
    chol.solve(&mut alpha);
    let lml = -0.5 * dot(y, &alpha) - chol.half_log_det() - 0.5 * n as f64 * LN_2PI;
    let inv = chol.inverse_lower();
    // W = α αᵀ - K⁻¹; M = W ∘ slope (symmetric, zero diagonal), kept as its strictly lower
    // triangle `m`, with row sums r.
    let mut m = Mat::zeros(n, n);
    let mut rows = vec![0.0; n];
    let mut trace_w = 0.0;
    let mut signal = 0.0;
    for j in 0..n {
        let wjj = alpha[j] * alpha[j] - inv[(j, j)];
        trace_w += wjj;
        signal += 0.5 * wjj * sf2;
        let (inv_j, kf_j, slope_j) = (
            inv.col_as_slice(j),
            kf.col_as_slice(j),
            slope.col_as_slice(j),
        );
        let m_j = m.col_as_slice_mut(j);
        let mut row_j = 0.0;
        for i in j + 1..n {
            let w = alpha[i] * alpha[j] - inv_j[i];
            signal += w * kf_j[i];
            let mij = w * slope_j[i];
            m_j[i] = mij;
            rows[i] += mij;
            row_j += mij;
        }
        rows[j] += row_j;
    }
    // ∂/∂ ln ℓ_l = Σ_{i<j} M_ij (xs_il - xs_jl)² = Σ_i xs_il (xs_il r_i - (M xs)_il), with
    // M xs = m xs + mᵀ xs.
    let mut mx = Mat::zeros(n, d);
    matmul(
        mx.as_mut(),
        Accum::Replace,
        m.as_ref(),
        xs.as_ref(),
        1.0,
        PAR,
    );
    matmul(
        mx.as_mut(),
        Accum::Add,
        m.transpose(),
        xs.as_ref(),
        1.0,
        PAR,
    );
    let mut grad: Vec<f64> = (0..d)
        .map(|l| {
            let (col, mcol) = (xs.col_as_slice(l), mx.col_as_slice(l));
            (0..n).map(|i| col[i] * (col[i] * rows[i] - mcol[i])).sum()
        })
        .collect();
    grad.push(signal);
    grad.push(0.5 * noise * trace_w);
    Some((lml, grad))
}

/// Parameters, cost and gradient of one evaluation.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

/// What L-BFGS minimizes: the negative log posterior (LML plus priors) plus the bound penalty.
struct NegPosterior<'a> {
    x: &'a [f64],
    y: &'a [f64],
    d: usize,
    /// The last evaluation (argmin asks for cost and gradient separately).
    last: RefCell<Option<Evaluation>>,
    /// The best finite evaluation so far: kept even when the line search gives up with an error.
    best: &'a RefCell<Option<(Vec<f64>, f64)>>,
}

/// The stiffness of the bound penalty.
const PENALTY: f64 = 10.0;

impl NegPosterior<'_> {
    fn eval(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        if let Some((t, c, g)) = self.last.borrow().as_ref()
            && t.as_slice() == theta
        {
            return (*c, g.clone());
        }
        let d = self.d;
        // The likelihood is evaluated at the clamped parameters (so that a long first L-BFGS
        // step cannot overflow the kernel), the excess paying a quadratic penalty; everything is
        // divided by `n`, which leaves the optimum in place and keeps gradients of order one.
        let scale = 1.0 / self.y.len().max(1) as f64;
        let mut clamped = theta.to_vec();
        clamp(&mut clamped, d);
        let (cost, grad) = if let Some((lml, g)) =
            log_marginal_likelihood(self.x, self.y, d, &clamped)
            && lml.is_finite()
        {
            let mut cost = -lml * scale;
            let mut grad: Vec<f64> = g.iter().map(|g| -g * scale).collect();
            for (j, ((&t, &c), gj)) in theta.iter().zip(&clamped).zip(&mut grad).enumerate() {
                let (mu, sd) = prior(j, d);
                cost += 0.5 * ((c - mu) / sd).powi(2) * scale;
                *gj += (c - mu) / (sd * sd) * scale;
                let excess = if t.is_finite() { t - c } else { 0.0 };
                if excess != 0.0 {
                    *gj = PENALTY * excess;
                }
                cost += 0.5 * PENALTY * excess * excess;
            }
            (cost, grad)
        } else {
            (f64::INFINITY, vec![0.0; theta.len()])
        };
        if cost.is_finite() && self.best.borrow().as_ref().is_none_or(|(_, b)| cost < *b) {
            *self.best.borrow_mut() = Some((theta.to_vec(), cost));
        }
        *self.last.borrow_mut() = Some((theta.to_vec(), cost, grad.clone()));
        (cost, grad)
    }
}

impl CostFunction for NegPosterior<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Vec<f64>) -> Result<f64, Error> {
        Ok(self.eval(theta).0)
    }
}

impl Gradient for NegPosterior<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, theta: &Vec<f64>) -> Result<Vec<f64>, Error> {
        Ok(self.eval(theta).1)
    }
}

/// The negative log posterior at `theta` (for comparisons and tests).
pub(crate) fn neg_log_posterior(x: &[f64], y: &[f64], d: usize, theta: &[f64]) -> f64 {
    let best = RefCell::new(None);
    problem(x, y, d, &best).eval(theta).0
}

fn problem<'a>(
    x: &'a [f64],
    y: &'a [f64],
    d: usize,
    best: &'a RefCell<Option<(Vec<f64>, f64)>>,
) -> NegPosterior<'a> {
    NegPosterior {
        x,
        y,
        d,
        last: RefCell::new(None),
        best,
    }
}

/// Runs L-BFGS (at most `max_iters` iterations) from each start and returns the clamped best
/// parameters by negative log posterior, or the first start when nothing could be evaluated.
pub(crate) fn fit(x: &[f64], y: &[f64], d: usize, starts: &[Vec<f64>], max_iters: u64) -> Vec<f64> {
    let mut best: Option<(Vec<f64>, f64)> = None;
    // The cost is scaled by 1/n: stop when an iteration gains less than 10⁻³ nats of log
    // posterior, or the gradient's norm is below 0.05 nats per unit of log parameter.
    const COST_TOLERANCE: f64 = 1e-3;
    const GRAD_TOLERANCE: f64 = 0.05;
    let n = y.len().max(1) as f64;
    for start in starts {
        let mut start = start.clone();
        clamp(&mut start, d);
        let seen = RefCell::new(None);
        let problem = problem(x, y, d, &seen);
        if !problem.eval(&start).0.is_finite() {
            continue;
        }
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7)
            .with_tolerance_grad(GRAD_TOLERANCE / n)
            .and_then(|s| s.with_tolerance_cost(COST_TOLERANCE / n));
        if let Ok(solver) = solver {
            // Errors (a line search that gives up) leave the best point seen in `seen`.
            let _ = Executor::new(problem, solver)
                .configure(|state| state.param(start.clone()).max_iters(max_iters))
                .timer(false)
                .run();
        }
        let found = seen.borrow().clone();
        if let Some((mut theta, _)) = found {
            clamp(&mut theta, d);
            let cost = neg_log_posterior(x, y, d, &theta);
            if cost.is_finite() && best.as_ref().is_none_or(|(_, b)| cost < *b) {
                best = Some((theta, cost));
            }
        }
    }
    match best {
        Some((theta, _)) => theta,
        None => {
            let mut theta = starts.first().cloned().unwrap_or_else(|| default_theta(d));
            clamp(&mut theta, d);
            theta
        }
    }
}

/// The fit after a tell: L-BFGS from `warm` (the previous fit) on all observations, and from
/// each of `randoms` on the observations `subsample` selects (all when `None`); the best random
/// result replaces the warm one only if its full negative log posterior is lower, after a
/// polish on all observations when it was found on a subsample.
pub(crate) fn fit_restarts(
    x: &[f64],
    y: &[f64],
    d: usize,
    warm: Vec<f64>,
    randoms: &[Vec<f64>],
    subsample: Option<&[usize]>,
    max_iters: u64,
) -> Vec<f64> {
    let warm_fit = fit(x, y, d, &[warm], max_iters);
    if randoms.is_empty() {
        return warm_fit;
    }
    let random_fit = match subsample {
        Some(idx) => {
            let xs: Vec<f64> = idx
                .iter()
                .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
                .collect();
            let ys: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
            fit(&xs, &ys, d, randoms, max_iters)
        }
        None => fit(x, y, d, randoms, max_iters),
    };
    if neg_log_posterior(x, y, d, &random_fit) < neg_log_posterior(x, y, d, &warm_fit) {
        if subsample.is_some() {
            let polished = fit(x, y, d, std::slice::from_ref(&random_fit), max_iters);
            if neg_log_posterior(x, y, d, &polished) < neg_log_posterior(x, y, d, &warm_fit) {
                return polished;
            }
            return warm_fit;
        }
        random_fit
    } else {
        warm_fit
    }
}
