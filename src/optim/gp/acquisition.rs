//! Log expected improvement and its maximization over the unit cube.
//!
//! For a minimized latent function with posterior `N(μ, σ²)` and incumbent `f*`,
//! `EI = σ h(z)` with `z = (f* - μ)/σ` and `h(z) = z Φ(z) + φ(z)`. Far from the incumbent
//! `h(z)` underflows (already below 10⁻³⁰⁰ at `z ≈ -38`), which leaves a flat zero that no
//! optimizer can climb; `ln h` is computed instead (Ament et al., "Unexpected improvements to
//! expected improvement", NeurIPS 2023): directly for `z > -3`, and below through the Mills
//! ratio `R(x) = Φ(-x)/φ(x) = 1/(x + 1/(x + 2/(x + …)))`: writing its tail
//! `c(x) = 1/(x + 2/(x + 3/(x + …)))`, `h(-x)/φ(x) = 1 - x R(x) = R(x) c(x)`, a product of two
//! continued fractions with no cancellation, so
//! `ln h(-x) = -x²/2 - ln √(2π) + ln R(x) + ln c(x)` stays accurate out to `-x²/2` overflowing,
//! and the gradient factor `Φ(z)/h(z)` is simply `1/c(x)`.
//!
//! The maximization is multi-start: random points and perturbations of the best points (by
//! posterior mean) are screened by value, and the best few are refined by L-BFGS on
//! `-ln EI(clamp(x))` (the clamp to `[0, 1]^d` makes the gradient vanish in a coordinate that
//! leaves the cube, so the search stays on the faces).

use rand::Rng as _;
use rand_distr::StandardNormal;
use std::cell::RefCell;
use std::f64::consts::{FRAC_1_SQRT_2, PI};

use argmin::core::{CostFunction, Error, Executor, Gradient};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use super::model::Gp;
use crate::rng::Rng;

/// `ln √(2π)`.
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Terms of the Mills-ratio continued fraction (for `x ≥ 3` it converges far below 1e-16).
const CF_TERMS: usize = 120;

/// The standard normal density.
pub(crate) fn norm_pdf(z: f64) -> f64 {
    (-0.5 * z * z - LN_SQRT_2PI).exp()
}

/// `erf(t)` by the everywhere-positive series `2/√π e^{-t²} Σ 2ⁿ t^{2n+1} / (2n+1)!!`
/// (meant for `|t| ≤ 2.2`).
fn erf_series(t: f64) -> f64 {
    let t2 = 2.0 * t * t;
    let mut term = t;
    let mut sum = t;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= t2 / (2.0 * n + 1.0);
        sum += term;
        if n > 200.0 {
            break;
        }
    }
    2.0 / PI.sqrt() * (-t * t).exp() * sum
}

/// The values after the first two steps of the backward continued fraction at `x ≥ 3`:
/// `(D, s₂)` with `R(x) = 1/D` and `c(x) = 1/s₂`.
fn mills_cf(x: f64) -> (f64, f64) {
    let mut s = x;
    for k in (2..=CF_TERMS).rev() {
        s = x + k as f64 / s;
    }
    let s2 = s;
    (x + 1.0 / s2, s2)
}

/// The standard normal distribution function, accurate in relative terms in both tails.
pub(crate) fn norm_cdf(z: f64) -> f64 {
    if z <= -3.0 {
        norm_pdf(z) / mills_cf(-z).0
    } else if z >= 3.0 {
        1.0 - norm_pdf(z) / mills_cf(z).0
    } else {
        0.5 + 0.5 * erf_series(z * FRAC_1_SQRT_2)
    }
}

/// `ln h(z)` with `h(z) = z Φ(z) + φ(z)`, finite for every finite `z` whose square is finite,
/// and the gradient factor `Φ(z)/h(z) = d ln h / dz`.
pub(crate) fn log_h(z: f64) -> (f64, f64) {
    if z > -3.0 {
        let cdf = norm_cdf(z);
        let h = z * cdf + norm_pdf(z);
        (h.ln(), cdf / h)
    } else {
        let x = -z;
        let (dd, s2) = mills_cf(x);
        (-0.5 * x * x - LN_SQRT_2PI - dd.ln() - s2.ln(), s2)
    }
}

/// `ln EI` at a posterior `(mean, var)` for the incumbent `best` (minimization).
pub(crate) fn log_ei(mean: f64, var: f64, best: f64) -> f64 {
    let sd = var.sqrt();
    let z = (best - mean) / sd;
    sd.ln() + log_h(z).0
}

/// `ln EI` and its gradient at `point`.
pub(crate) fn log_ei_grad(gp: &Gp, point: &[f64], best: f64) -> (f64, Vec<f64>) {
    let p = gp.predict_grad(point);
    let sd = p.var.sqrt();
    let z = (best - p.mean) / sd;
    let (lh, ratio) = log_h(z);
    let value = sd.ln() + lh;
    // d ln EI = dσ/σ + (Φ/h) dz, dσ = dvar / (2σ), dz = -(dμ + z dσ) / σ.
    let grad = p
        .dmean
        .iter()
        .zip(&p.dvar)
        .map(|(dm, dv)| {
            let dsd = dv / (2.0 * sd);
            dsd / sd - ratio * (dm + z * dsd) / sd
        })
        .collect();
    (value, grad)
}

/// How the acquisition is maximized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Search {
    /// Screened points: half uniform, half perturbations of the best points.
    pub candidates: usize,
    /// How many of the best screened points L-BFGS refines.
    pub refine: usize,
    /// L-BFGS iterations per refinement.
    pub iters: u64,
}

fn clamp_unit(x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|v| {
            if v.is_finite() {
                v.clamp(0.0, 1.0)
            } else {
                0.5
            }
        })
        .collect()
}

/// `-ln EI(clamp(x))` for L-BFGS.
struct NegLogEi<'a> {
    gp: &'a Gp,
    best: f64,
    /// The best clamped point evaluated: kept when the line search gives up with an error.
    seen: &'a RefCell<Option<(Vec<f64>, f64)>>,
}

impl NegLogEi<'_> {
    fn eval(&self, x: &[f64]) -> (f64, Vec<f64>) {
        let c = clamp_unit(x);
        let (v, mut g) = log_ei_grad(self.gp, &c, self.best);
        if !v.is_finite() || g.iter().any(|g| !g.is_finite()) {
            return (f64::INFINITY, vec![0.0; x.len()]);
        }
        for ((gi, xi), ci) in g.iter_mut().zip(x).zip(&c) {
            *gi = if xi == ci { -*gi } else { 0.0 };
        }
        if self.seen.borrow().as_ref().is_none_or(|(_, s)| v > *s) {
            *self.seen.borrow_mut() = Some((c, v));
        }
        (-v, g)
    }
}

impl CostFunction for NegLogEi<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, x: &Vec<f64>) -> Result<f64, Error> {
        Ok(self.eval(x).0)
    }
}

impl Gradient for NegLogEi<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, x: &Vec<f64>) -> Result<Vec<f64>, Error> {
        Ok(self.eval(x).1)
    }
}

/// The point of the cube that maximizes `ln EI` found by the multi-start search, with its
/// value. The incumbent is the smallest posterior mean at a training point.
pub(crate) fn maximize(gp: &Gp, d: usize, search: Search, rng: &mut Rng) -> (Vec<f64>, f64) {
    let means = gp.train_means();
    let best = means.iter().copied().fold(f64::INFINITY, f64::min);
    let mut order: Vec<usize> = (0..means.len()).collect();
    order.sort_by(|&a, &b| means[a].total_cmp(&means[b]).then(a.cmp(&b)));
    let tops: Vec<Vec<f64>> = order.iter().take(5).map(|&i| gp.point(i)).collect();
    // In high dimensions perturb only ~20 coordinates at a time (as TuRBO does): moving all of
    // them at once lands far from the good point.
    let prob = (20.0 / d as f64).min(1.0);
    const SCALES: [f64; 3] = [0.02, 0.08, 0.25];
    let mut candidates = Vec::with_capacity(search.candidates.max(1));
    for c in 0..search.candidates.max(1) {
        if c % 2 == 1 && !tops.is_empty() {
            let base = &tops[(c / 2) % tops.len()];
            let scale = SCALES[(c / 2) % SCALES.len()];
            let forced = rng.random_range(0..d);
            let point: Vec<f64> = base
                .iter()
                .enumerate()
                .map(|(l, &v)| {
                    if l == forced || rng.random::<f64>() < prob {
                        (v + scale * rng.sample::<f64, _>(StandardNormal)).clamp(0.0, 1.0)
                    } else {
                        v
                    }
                })
                .collect();
            candidates.push(point);
        } else {
            candidates.push((0..d).map(|_| rng.random::<f64>()).collect());
        }
    }
    let mut scored: Vec<(f64, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let (m, v) = gp.predict(x);
            let s = log_ei(m, v, best);
            (if s.is_nan() { f64::NEG_INFINITY } else { s }, i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let (mut best_value, first) = scored[0];
    let mut best_point = candidates[first].clone();
    for &(value, i) in scored.iter().take(search.refine) {
        if !value.is_finite() {
            continue;
        }
        let seen = RefCell::new(None);
        let problem = NegLogEi {
            gp,
            best,
            seen: &seen,
        };
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 5)
            .with_tolerance_grad(1e-8)
            .and_then(|s| s.with_tolerance_cost(1e-10));
        let Ok(solver) = solver else { continue };
        // An error (a line search that gives up) leaves the best point seen in `seen`.
        let _ = Executor::new(problem, solver)
            .configure(|state| state.param(candidates[i].clone()).max_iters(search.iters))
            .timer(false)
            .run();
        let found = seen.borrow_mut().take();
        if let Some((x, _)) = found {
            let (m, v) = gp.predict(&x);
            let value = log_ei(m, v, best);
            if value > best_value {
                best_value = value;
                best_point = x;
            }
        }
    }
    (best_point, best_value)
}
