//! CMA-ES, the covariance matrix adaptation evolution strategy (Hansen, "The CMA Evolution
//! Strategy: A Tutorial", arXiv:1604.00772), with IPOP restarts (Auger and Hansen 2005).
//!
//! Why CMA-ES for merge coefficients: it uses only the ranks of the values told, so it is
//! unaffected by how a score is scaled or warped; it learns which coefficients interact (the
//! covariance matrix), which a per-coordinate method cannot; it asks a whole generation at once,
//! which the study evaluates in parallel; and it has no tuning knobs beyond the initial mean and
//! step size. Every strategy parameter is the tutorial's default (see [`CmaesOptions`] for what
//! can be changed): `λ = 4 + ⌊3 ln n⌋`, `μ = ⌊λ/2⌋` logarithmic weights, cumulative step-size
//! adaptation, rank-one plus rank-μ covariance update with the `h_σ` stall of the rank-one path,
//! active CMA (the `λ - μ` worse successes enter the rank-μ update with negative weights, which
//! learns ill-conditioned problems about a quarter faster: 10-D ellipsoid 5,400 → 3,900
//! evaluations, Rosenbrock 6,000 → 5,100, as pycma does by default), and an eigendecomposition
//! of `C` (by [Jacobi](super::eigen)) only every `λ / ((c_1 + c_μ) n 10)` evaluations. Above [`CovarianceModel::AUTO_SEPARABLE_ABOVE`]
//! dimensions, or when asked, it runs sep-CMA-ES (Ros and Hansen 2008): a diagonal covariance
//! matrix with its learning rates raised by `(n + 2) / 3`, linear rather than cubic in cost.
//!
//! **Bounds.** In bounded mode (the study's: the unit cube) each sample `y ~ N(m, σ² C)` is
//! reflected into `[0, 1]` (mirrored at the faces, repeatedly when far out) and the reflection
//! `x` is what the study evaluates. The distribution is updated from the *unreflected* `y` and
//! the value told for `x`: CMA-ES in effect minimizes `g(y) = f(reflect(y))`, a continuous
//! function (no plateau outside the cube, unlike clipping) whose minima include every minimum of
//! `f` on a face, so the step-size and covariance adaptation keep working there. `g` is invariant
//! under translating a coordinate by 2 and under mirroring it at a face (`y_i ↦ -y_i`,
//! `y_i ↦ 2 - y_i`), so when an update carries the mean out of the cube the mean is folded back
//! in and the same mirror is applied to the evolution paths and to the covariance matrix (`p ↦ M
//! p`, `C ↦ M C M`, `B ↦ M B`, with `M` the identity but for `-1` in the mirrored coordinate).
//! The folded state is the unfolded one seen in a mirror: it samples the same points in
//! distribution and evolves identically in law, but its mean always lies in the cube and never
//! drifts into one of `g`'s periodic copies of the cube. This was chosen over a quadratic penalty
//! on the reflection distance (pycma's `BoundPenalty` style), which kept the mean near the cube
//! only by distorting the ranking (about 2.5 times more evaluations with the optimum at a corner
//! of the 8-cube), and over pycma's `BoundTransform`, whose piecewise-quadratic map distorts the
//! function within a margin of every face.
//!
//! **Restarts (IPOP).** When a run stalls it restarts with the population doubled, the step size
//! reset, a fresh random stream, and the mean drawn uniformly in the cube (bounded mode) or set
//! back to the initial mean (unbounded). A run stalls on: `TolFun` (the best values of the last
//! `10 + ⌈30 n / λ⌉` generations and all of the current one within `tolfun`), `TolX` (the
//! step size collapsed: `σ · max(|p_c|, sqrt(diag C)) < tolx · σ₀` in every coordinate),
//! `ConditionCov` (condition number of `C` above 1e14), `NoEffectAxis` (a tenth of a standard
//! deviation along a principal axis leaves the mean unchanged) or `NoEffectCoord` (a fifth along
//! a coordinate does). After `max_restarts` restarts a stalled run finishes: asks return nothing.
//!
//! **Failures and partial tells.** A failed trial (`None`, or a NaN value) ranks below every
//! success, failures among themselves in the order asked. A generation with no success, or told
//! fewer than `μ` results, changes nothing but the counters. A partial tell ranks what was told.
//!
//! **Resume.** The whole state serializes, every float bit-exactly (see [`super::exact`]): after a
//! JSON round trip the next ask gives the same points as without one.

use rand::Rng as _;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::covariance::Cov;
use super::{OptimError, Optimizer, Told, exact};
use crate::rng::{Rng, derive_seed};

/// How CMA-ES models the covariance of its search distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CovarianceModel {
    /// [`Full`](CovarianceModel::Full) up to [`CovarianceModel::AUTO_SEPARABLE_ABOVE`]
    /// dimensions, [`Separable`](CovarianceModel::Separable) above.
    #[default]
    Auto,
    /// A full covariance matrix: learns correlations between coordinates, `O(n²)` per sample and
    /// `O(n³)` per decomposition.
    Full,
    /// sep-CMA-ES: a diagonal covariance matrix, `O(n)` per sample, learning faster per
    /// generation but blind to correlations.
    Separable,
}

impl CovarianceModel {
    /// [`CovarianceModel::Auto`] chooses the separable model above this many dimensions.
    pub const AUTO_SEPARABLE_ABOVE: usize = 100;
}

/// The options of [`Cmaes::new`]; `Default` gives the study's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CmaesOptions {
    /// The seed of every random choice (default 0); each IPOP restart draws a fresh stream from
    /// it.
    pub seed: u64,
    /// The initial mean, for example the best point of an earlier design; `None` for the
    /// cube's centre (0.5 in every coordinate). In bounded mode it must lie in the cube.
    pub mean: Option<Vec<f64>>,
    /// The initial step size `σ₀`, in unit-cube coordinates (default 0.3).
    pub sigma: f64,
    /// The population size `λ` of the first run; `None` for `4 + ⌊3 ln n⌋`. Each IPOP restart
    /// doubles it.
    pub popsize: Option<usize>,
    /// Keep the points asked in `[0, 1]` by reflection (default `true`; see the module docs).
    /// Unbounded points go to the caller as sampled.
    pub bounded: bool,
    /// The covariance model (default [`CovarianceModel::Auto`]).
    pub covariance: CovarianceModel,
    /// How many IPOP restarts a stalled run may make before the optimizer finishes (default 9,
    /// at most 20).
    pub max_restarts: usize,
    /// The `TolFun` threshold on the range of recent values (default 1e-12).
    pub tolfun: f64,
    /// The `TolX` threshold, relative to `σ₀` (default 1e-12).
    pub tolx: f64,
}

impl Default for CmaesOptions {
    fn default() -> CmaesOptions {
        CmaesOptions {
            seed: 0,
            mean: None,
            sigma: 0.3,
            popsize: None,
            bounded: true,
            covariance: CovarianceModel::Auto,
            max_restarts: 9,
            tolfun: 1e-12,
            tolx: 1e-12,
        }
    }
}

/// Why a run of CMA-ES stopped (and restarted, or finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The recent best values and the current values are all within `tolfun`.
    TolFun,
    /// The step size collapsed below `tolx · σ₀` in every coordinate.
    TolX,
    /// The covariance matrix's condition number exceeded 1e14.
    ConditionCov,
    /// A tenth of a standard deviation along a principal axis does not change the mean.
    NoEffectAxis,
    /// A fifth of a standard deviation along a coordinate does not change the mean.
    NoEffectCoord,
}

/// The largest allowed `max_restarts`: the population doubles with each restart.
const MAX_RESTARTS: usize = 20;

/// The condition number of `C` that stops a run.
const MAX_CONDITION: f64 = 1e14;

/// The strategy parameters for one population size (the tutorial's Table 1, active CMA
/// included; `c_μ` carries the tutorial's `1/4` offset, pycma's `rankmu_offset`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Params {
    lambda: usize,
    mu: usize,
    /// The positive recombination weights, summing to one.
    #[serde(with = "exact::vec")]
    weights: Vec<f64>,
    /// The negative weights of ranks `μ + 1 ..= λ` for the active covariance update (none in
    /// states saved before active CMA, which then resume as they ran).
    #[serde(default, with = "exact::vec")]
    negative: Vec<f64>,
    #[serde(with = "exact")]
    mueff: f64,
    #[serde(with = "exact")]
    cc: f64,
    #[serde(with = "exact")]
    cs: f64,
    #[serde(with = "exact")]
    c1: f64,
    #[serde(with = "exact")]
    cmu: f64,
    #[serde(with = "exact")]
    damps: f64,
    /// E‖N(0, I)‖.
    #[serde(with = "exact")]
    chi_n: f64,
}

impl Params {
    fn new(n: usize, lambda: usize, separable: bool) -> Params {
        let nf = n as f64;
        let mu = lambda / 2;
        let raw: Vec<f64> = (1..=lambda)
            .map(|i| ((lambda as f64 + 1.0) / 2.0).ln() - (i as f64).ln())
            .collect();
        let (raw_positive, raw_negative) = raw.split_at(mu);
        let sum: f64 = raw_positive.iter().sum();
        let weights: Vec<f64> = raw_positive.iter().map(|w| w / sum).collect();
        let mueff = 1.0 / weights.iter().map(|w| w * w).sum::<f64>();
        let cc = (4.0 + mueff / nf) / (nf + 4.0 + 2.0 * mueff / nf);
        let cs = (mueff + 2.0) / (nf + mueff + 5.0);
        let alpha_cov = 2.0;
        let mut c1 = alpha_cov / ((nf + 1.3).powi(2) + mueff);
        let mut cmu = (1.0 - c1).min(
            alpha_cov * (0.25 + mueff + 1.0 / mueff - 2.0)
                / ((nf + 2.0).powi(2) + alpha_cov * mueff / 2.0),
        );
        if separable {
            let boost = (nf + 2.0) / 3.0;
            c1 = (c1 * boost).min(1.0);
            cmu = (cmu * boost).min(1.0 - c1);
        }
        let damps = 1.0 + 2.0 * (((mueff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + cs;
        let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));
        let negative = negative_weights(raw_negative, nf, mueff, c1, cmu);
        Params {
            lambda,
            mu,
            weights,
            negative,
            mueff,
            cc,
            cs,
            c1,
            cmu,
            damps,
            chi_n,
        }
    }
}

/// The tutorial's negative weights (its equation 53): the raw weights of ranks `μ + 1 ..= λ`
/// scaled to sum to `-min(α_μ⁻, α_μeff⁻, α_posdef⁻)`, the largest total that keeps `C`
/// positive definite and the negative update no stronger than the positive one. Ranks whose raw
/// weight is zero or positive (the middle rank of an odd `λ`) get zero.
fn negative_weights(raw: &[f64], n: f64, mueff: f64, c1: f64, cmu: f64) -> Vec<f64> {
    let sum: f64 = raw.iter().filter(|w| **w < 0.0).map(|w| -w).sum();
    if sum == 0.0 || cmu == 0.0 {
        return vec![0.0; raw.len()];
    }
    let squares: f64 = raw.iter().filter(|w| **w < 0.0).map(|w| w * w).sum();
    let mueff_negative = sum * sum / squares;
    let alpha_mu = 1.0 + c1 / cmu;
    let alpha_mueff = 1.0 + 2.0 * mueff_negative / (mueff + 2.0);
    let alpha_posdef = (1.0 - c1 - cmu) / (n * cmu);
    let total = alpha_mu.min(alpha_mueff).min(alpha_posdef);
    raw.iter().map(|w| w.min(0.0) * total / sum).collect()
}

/// Folds `v` into `[0, 1]` by the symmetries of reflection at the faces: translation by a
/// multiple of 2, possibly followed by a mirroring `v ↦ -v`. Returns the folded value and whether
/// it was mirrored. Exact for values within one mirroring of the cube.
fn fold(v: f64) -> (f64, bool) {
    if (0.0..=1.0).contains(&v) {
        (v, false)
    } else if (-1.0..0.0).contains(&v) {
        (-v, true)
    } else if v > 1.0 && v <= 2.0 {
        (2.0 - v, true)
    } else {
        let r = v.rem_euclid(2.0);
        if r > 1.0 {
            ((2.0 - r).max(0.0), true)
        } else {
            (r, false)
        }
    }
}

/// Reflects `v` into `[0, 1]`, mirroring at the faces as often as needed.
fn reflect(v: f64) -> f64 {
    fold(v).0
}

/// CMA-ES with IPOP restarts, asking one generation (`λ` points) at a time.
///
/// In bounded mode samples are reflected into the cube, the distribution learns from the
/// unreflected samples, and a mean that leaves the cube is folded back in together with the
/// evolution paths and covariance (an exact symmetry of the reflected objective). Stalled runs
/// restart with a doubled population until `max_restarts` is spent; then asks return nothing.
/// Failed trials rank last. The state serializes bit-exactly for resuming. The source's module
/// documentation gives the details and the reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cmaes {
    dim: usize,
    seed: u64,
    bounded: bool,
    separable: bool,
    #[serde(with = "exact::vec")]
    mean0: Vec<f64>,
    #[serde(with = "exact")]
    sigma0: f64,
    popsize0: usize,
    max_restarts: usize,
    #[serde(with = "exact")]
    tolfun: f64,
    #[serde(with = "exact")]
    tolx: f64,

    /// Results told, over all runs.
    evaluations: u64,
    restarts: usize,
    /// Generations completed in the current run.
    generation: u64,
    finished: bool,
    last_stop: Option<StopReason>,
    #[serde(with = "exact")]
    best_value: f64,
    #[serde(with = "exact::vec")]
    best_point: Vec<f64>,

    params: Params,
    rng: Rng,
    #[serde(with = "exact::vec")]
    mean: Vec<f64>,
    #[serde(with = "exact")]
    sigma: f64,
    #[serde(with = "exact::vec")]
    pc: Vec<f64>,
    #[serde(with = "exact::vec")]
    ps: Vec<f64>,
    cov: Cov,
    /// Results told in the current run, and their number at the last decomposition.
    run_evaluations: u64,
    eigen_evaluations: u64,
    /// The best value of each of the last generations of this run, oldest first.
    #[serde(with = "exact::vec")]
    history: Vec<f64>,

    /// The standard normal vectors `z` and the steps `B D z` of the generation asked and not yet
    /// told, `pending` of them, each `dim` long.
    #[serde(with = "exact::vec")]
    pending_z: Vec<f64>,
    #[serde(with = "exact::vec")]
    pending_steps: Vec<f64>,
    pending: usize,
}

impl Cmaes {
    /// CMA-ES over `dim` coordinates, as configured by `options`.
    pub fn new(dim: usize, options: CmaesOptions) -> Result<Cmaes, OptimError> {
        if dim == 0 {
            return Err(OptimError::invalid("dim", "must be at least 1", dim));
        }
        let o = options;
        if !(o.sigma > 0.0 && o.sigma.is_finite()) {
            return Err(OptimError::invalid(
                "sigma",
                "must be positive and finite",
                o.sigma,
            ));
        }
        if let Some(p) = o.popsize.filter(|&p| p < 2) {
            return Err(OptimError::invalid("popsize", "must be at least 2", p));
        }
        if o.max_restarts > MAX_RESTARTS {
            let requirement = format!("must be at most {MAX_RESTARTS}");
            return Err(OptimError::invalid(
                "max_restarts",
                requirement,
                o.max_restarts,
            ));
        }
        if !(o.tolfun >= 0.0 && o.tolfun.is_finite()) {
            return Err(OptimError::invalid(
                "tolfun",
                "must be non-negative and finite",
                o.tolfun,
            ));
        }
        if !(o.tolx >= 0.0 && o.tolx.is_finite()) {
            return Err(OptimError::invalid(
                "tolx",
                "must be non-negative and finite",
                o.tolx,
            ));
        }
        let mean0 = o.mean.unwrap_or_else(|| vec![0.5; dim]);
        if mean0.len() != dim {
            let requirement = format!("must have {dim} coordinates");
            return Err(OptimError::invalid("mean", requirement, mean0.len()));
        }
        let range = if o.bounded {
            0.0..=1.0
        } else {
            f64::MIN..=f64::MAX
        };
        if let Some(bad) = mean0.iter().find(|x| !range.contains(*x)) {
            let requirement = if o.bounded {
                "must lie in [0, 1] in bounded mode"
            } else {
                "must be finite"
            };
            return Err(OptimError::invalid("mean", requirement, bad));
        }
        let separable = match o.covariance {
            CovarianceModel::Auto => dim > CovarianceModel::AUTO_SEPARABLE_ABOVE,
            CovarianceModel::Full => false,
            CovarianceModel::Separable => true,
        };
        let popsize0 = o
            .popsize
            .unwrap_or(4 + (3.0 * (dim as f64).ln()).floor() as usize);
        let params = Params::new(dim, popsize0, separable);
        Ok(Cmaes {
            dim,
            seed: o.seed,
            bounded: o.bounded,
            separable,
            mean: mean0.clone(),
            mean0,
            sigma0: o.sigma,
            popsize0,
            max_restarts: o.max_restarts,
            tolfun: o.tolfun,
            tolx: o.tolx,
            evaluations: 0,
            restarts: 0,
            generation: 0,
            finished: false,
            last_stop: None,
            best_value: f64::INFINITY,
            best_point: Vec::new(),
            params,
            rng: Rng::new(derive_seed(o.seed, "optim/cmaes", 0)),
            sigma: o.sigma,
            pc: vec![0.0; dim],
            ps: vec![0.0; dim],
            cov: Cov::identity(dim, separable),
            run_evaluations: 0,
            eigen_evaluations: 0,
            history: Vec::new(),
            pending_z: Vec::new(),
            pending_steps: Vec::new(),
            pending: 0,
        })
    }

    /// The number of coordinates.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The current population size `λ`: the number of points each ask returns.
    pub fn popsize(&self) -> usize {
        self.params.lambda
    }

    /// The current step size `σ`.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The current mean of the search distribution (always inside the cube in bounded mode).
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The number of results told, over all runs.
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// The number of IPOP restarts so far.
    pub fn restarts(&self) -> usize {
        self.restarts
    }

    /// The number of generations completed (updates made) since the last (re)start.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the sep-CMA-ES (diagonal) model is in use.
    pub fn is_separable(&self) -> bool {
        self.separable
    }

    /// The condition number of the covariance matrix, as of its last decomposition.
    pub fn condition(&self) -> f64 {
        self.cov.condition()
    }

    /// Why the last run stopped, if one has.
    pub fn last_stop(&self) -> Option<StopReason> {
        self.last_stop
    }

    /// Whether the last allowed run has stalled: asks return nothing from then on.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The best point told so far (as asked, so inside the cube in bounded mode) and its value.
    pub fn best(&self) -> Option<(&[f64], f64)> {
        (!self.best_point.is_empty()).then_some((&self.best_point[..], self.best_value))
    }

    /// The point the study evaluates for the unreflected sample coordinate `y`.
    fn to_point(&self, y: f64) -> f64 {
        if self.bounded { reflect(y) } else { y }
    }

    /// Starts a run with population size `lambda` from the current mean.
    fn start_run(&mut self, lambda: usize) {
        let n = self.dim;
        self.params = Params::new(n, lambda, self.separable);
        self.sigma = self.sigma0;
        self.pc = vec![0.0; n];
        self.ps = vec![0.0; n];
        self.cov = Cov::identity(n, self.separable);
        self.generation = 0;
        self.run_evaluations = 0;
        self.eigen_evaluations = 0;
        self.history.clear();
    }

    /// An IPOP restart: doubled population, fresh stream, new mean.
    fn restart(&mut self) {
        self.restarts += 1;
        self.rng = Rng::new(derive_seed(self.seed, "optim/cmaes", self.restarts as u64));
        self.mean = if self.bounded {
            (0..self.dim).map(|_| self.rng.random::<f64>()).collect()
        } else {
            self.mean0.clone()
        };
        self.start_run(self.popsize0 << self.restarts);
    }

    /// Brings a mean that left the cube back by the symmetries of `y ↦ f(reflect(y))` (see the
    /// module docs): each coordinate outside is translated by a multiple of 2 and, if that is
    /// not enough, mirrored at a face together with the evolution paths and the covariance.
    fn fold_mean(&mut self) {
        for i in 0..self.dim {
            let (m, mirrored) = fold(self.mean[i]);
            self.mean[i] = m;
            if mirrored {
                self.pc[i] = -self.pc[i];
                self.ps[i] = -self.ps[i];
                self.cov.flip(i);
            }
        }
    }

    /// The first termination criterion the current state meets; `gen_values` are the values
    /// of the generation just told.
    fn stop_reason(&self, gen_values: &[f64]) -> Option<StopReason> {
        let n = self.dim;
        let p = &self.params;
        let window = 10 + (30 * n).div_ceil(p.lambda);
        if self.history.len() >= window {
            let (lo, hi) = self
                .history
                .iter()
                .chain(gen_values)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            if hi - lo <= self.tolfun {
                return Some(StopReason::TolFun);
            }
        }
        let tolx = self.tolx * self.sigma0;
        if (0..n).all(|i| self.sigma * self.pc[i].abs().max(self.cov.diag(i).sqrt()) < tolx) {
            return Some(StopReason::TolX);
        }
        if self.cov.condition() > MAX_CONDITION {
            return Some(StopReason::ConditionCov);
        }
        let axis = self.cov.axis((self.generation % n as u64) as usize);
        if self
            .mean
            .iter()
            .zip(&axis)
            .all(|(m, a)| m + 0.1 * self.sigma * a == *m)
        {
            return Some(StopReason::NoEffectAxis);
        }
        if (0..n).any(|i| self.mean[i] + 0.2 * self.sigma * self.cov.diag(i).sqrt() == self.mean[i])
        {
            return Some(StopReason::NoEffectCoord);
        }
        None
    }

    /// Records the told values, then ranks and updates (see the module docs).
    fn update(&mut self, results: &[Told], z: &[f64], steps: &[f64]) {
        let n = self.dim;
        let told = results.len();
        self.evaluations += told as u64;
        self.run_evaluations += told as u64;
        let mut values = Vec::with_capacity(told);
        for (k, result) in results.iter().enumerate() {
            let value = result.value.filter(|v| !v.is_nan());
            if let Some(v) = value.filter(|&v| v < self.best_value) {
                self.best_value = v;
                self.best_point = self
                    .mean
                    .iter()
                    .zip(&steps[k * n..(k + 1) * n])
                    .map(|(m, s)| self.to_point(m + self.sigma * s))
                    .collect();
            }
            values.push(value);
        }
        let p = self.params.clone();
        let successes = values.iter().flatten().count();
        if successes == 0 || told < p.mu {
            return;
        }

        // Successes by fidelity rung (highest first: successive halving's verdict) and then by
        // value, then failures in the order asked.
        let mut order: Vec<usize> = (0..told).collect();
        order.sort_by(|&a, &b| match (values[a], values[b]) {
            (Some(x), Some(y)) => results[b].rung.cmp(&results[a].rung).then(x.total_cmp(&y)),
            (x, y) => x.is_none().cmp(&y.is_none()),
        });
        let selected = &order[..p.mu];

        let mut zw = vec![0.0; n];
        let mut stepw = vec![0.0; n];
        for (&k, w) in selected.iter().zip(&p.weights) {
            for i in 0..n {
                zw[i] += w * z[k * n + i];
                stepw[i] += w * steps[k * n + i];
            }
        }
        for (m, s) in self.mean.iter_mut().zip(&stepw) {
            *m += self.sigma * s;
        }
        let cs_norm = (p.cs * (2.0 - p.cs) * p.mueff).sqrt();
        for (ps, w) in self.ps.iter_mut().zip(self.cov.whiten(&zw)) {
            *ps = (1.0 - p.cs) * *ps + cs_norm * w;
        }
        self.generation += 1;
        let ps_norm = self.ps.iter().map(|x| x * x).sum::<f64>().sqrt();
        let decay = (1.0 - (1.0 - p.cs).powf(2.0 * self.generation as f64)).sqrt();
        let hsig = ps_norm / decay / p.chi_n < 1.4 + 2.0 / (n as f64 + 1.0);
        let cc_norm = (p.cc * (2.0 - p.cc) * p.mueff).sqrt();
        for (pc, s) in self.pc.iter_mut().zip(&stepw) {
            *pc = (1.0 - p.cc) * *pc + if hsig { cc_norm * s } else { 0.0 };
        }
        let stall = if hsig {
            0.0
        } else {
            p.c1 * p.cc * (2.0 - p.cc)
        };
        let mut weighted: Vec<(f64, &[f64])> = selected
            .iter()
            .zip(&p.weights)
            .map(|(&k, &w)| (w, &steps[k * n..(k + 1) * n]))
            .collect();
        // Active CMA: the worse successes take variance away along their steps, each scaled to
        // the length of a typical step (`n / ‖C^(-1/2) y‖² = n / ‖z‖²`). Failures stay out: a
        // failure says nothing about the direction it was sampled in.
        let mut weight_sum = 1.0;
        for (&k, &w) in order[p.mu..successes.max(p.mu)].iter().zip(&p.negative) {
            let z_k = &z[k * n..(k + 1) * n];
            let length = z_k.iter().map(|v| v * v).sum::<f64>();
            weight_sum += w;
            weighted.push((w * n as f64 / length, &steps[k * n..(k + 1) * n]));
        }
        let keep = 1.0 - p.c1 - p.cmu * weight_sum + stall;
        self.cov.update(keep, p.c1, &self.pc, p.cmu, &weighted);
        self.sigma *= ((p.cs / p.damps) * (ps_norm / p.chi_n - 1.0))
            .min(1.0)
            .exp();

        if self.bounded {
            self.fold_mean();
        }

        // Flat fitness: the best and the ⌈λ/4⌉-th values tie, so a larger step is needed to see
        // any difference.
        let flat = (0.1 + p.lambda as f64 / 4.0).ceil() as usize;
        if successes > flat && values[order[0]] == values[order[flat]] {
            self.sigma *= (0.2 + p.cs / p.damps).exp();
        }

        let due = p.lambda as f64 / ((p.c1 + p.cmu) * n as f64 * 10.0);
        if (self.run_evaluations - self.eigen_evaluations) as f64 > due {
            self.cov.decompose();
            self.eigen_evaluations = self.run_evaluations;
        }

        let told_values: Vec<f64> = values.iter().flatten().copied().collect();
        self.history
            .push(told_values.iter().copied().fold(f64::INFINITY, f64::min));
        let window = 10 + (30 * n).div_ceil(p.lambda);
        if self.history.len() > window {
            self.history.remove(0);
        }
        if let Some(reason) = self.stop_reason(&told_values) {
            self.last_stop = Some(reason);
            if self.restarts < self.max_restarts {
                self.restart();
            } else {
                self.finished = true;
            }
        }
    }
}

impl Optimizer for Cmaes {
    /// One generation of `λ` points (nothing once finished). Asking again before telling
    /// replaces the pending generation.
    fn ask(&mut self) -> Vec<Vec<f64>> {
        self.pending = 0;
        self.pending_z.clear();
        self.pending_steps.clear();
        if self.finished {
            return Vec::new();
        }
        let lambda = self.params.lambda;
        let mut points = Vec::with_capacity(lambda);
        for _ in 0..lambda {
            let z: Vec<f64> = (0..self.dim)
                .map(|_| self.rng.sample::<f64, _>(StandardNormal))
                .collect();
            let step = self.cov.step(&z);
            points.push(
                self.mean
                    .iter()
                    .zip(&step)
                    .map(|(m, s)| self.to_point(m + self.sigma * s))
                    .collect(),
            );
            self.pending_z.extend(z);
            self.pending_steps.extend(step);
        }
        self.pending = lambda;
        points
    }

    fn tell(&mut self, results: &[Told]) {
        let told = results.len().min(self.pending);
        let z = std::mem::take(&mut self.pending_z);
        let steps = std::mem::take(&mut self.pending_steps);
        self.pending = 0;
        if told > 0 {
            self.update(&results[..told], &z, &steps);
        }
    }
}

#[cfg(test)]
#[path = "cmaes_tests.rs"]
mod tests;
