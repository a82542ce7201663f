//! Gaussian-process Bayesian optimization ([`GaussianProcessBo`]): a surrogate model of the
//! score over the unit cube proposes the point whose expected improvement is largest. It suits
//! expensive, noisy evaluations and small budgets (tens to a few hundred trials), where
//! CMA-ES's populations would spend most of the budget learning.
//!
//! **Model.** A zero-mean Gaussian process on the standardized values (mean 0, sd 1) with a
//! Matérn-5/2 kernel with one length scale per coordinate (ARD), a signal variance and a noise
//! variance: merge scores are measured on subsets of a benchmark, so two evaluations of one
//! point differ, and an interpolating model would chase that noise (`kernel.rs`, `model.rs`).
//!
//! **Hyperparameters** are refitted after every tell by maximizing the log marginal likelihood
//! plus weak priors with L-BFGS (argmin) on the analytic gradient in log-parameter space, from
//! the previous fit (or the priors' means); the priors and bounds (length scales in
//! `[0.01, 100]`, noise at least 10⁻⁶) keep the fit from degenerating with few points. One
//! evaluation costs the kernel matrix (`O(n² d)`, its `n²/2` exponentials the largest part), a
//! Cholesky factorization and the inverse (`O(n³)`, faer) and one matrix product for all
//! gradient entries (`hyper.rs`). Most tells refit from the previous fit for
//! [`GpOptions::warm_iters`] iterations (one more observation moves the optimum little, and
//! the next tell continues from there); once the observations have grown by
//! [`GpOptions::restart_growth`] since the last time, a tell also runs `restarts - 1` random
//! starts, on a random subsample of at most [`GpOptions::fit_subsample`] observations (only the
//! warm start, and the polish of a random start that beats it, see all of them), to escape a
//! local optimum.
//!
//! **Acquisition.** Log expected improvement over the smallest posterior mean at an observed
//! point (not the smallest noisy value, which a lucky draw would make too optimistic), computed
//! stably far into the tail so that the search has a gradient to follow where plain EI
//! underflows to zero; it is maximized by screening random points and perturbations of the best
//! points and refining the best few with L-BFGS inside the cube (`acquisition.rs`).
//!
//! **Batches** by the Kriging believer: each proposal is added to the model as a fantasy
//! observation equal to its posterior mean (hyperparameters unchanged), which collapses the
//! variance there and moves the next proposal elsewhere, until the batch is full. The points of
//! the initial design in the same batch, and every failed trial, are fantasies too: failures
//! are not data (they have no value), but a model that forgot them would propose the same
//! failing point again and again.
//!
//! **Initial design.** The first `initial` points (default `max(d + 1, 10)`) come from a
//! scrambled Sobol sequence (a Latin hypercube beyond [`Sobol::MAX_DIM`](super::Sobol::MAX_DIM)
//! coordinates); until two trials have succeeded further points are uniform.
//!
//! **Multi-objective (ParEGO**, Knowles 2006**).** With [`GpOptions::multi_objective`] each
//! proposal draws a weight vector `w` uniformly from the simplex, normalizes every objective to
//! `[0, 1]` by its observed minimum and maximum, scalarizes by the augmented Chebyshev function
//! `max_j w_j f_j + ρ Σ_j w_j f_j`, fits a GP to that (one warm-started L-BFGS run from the last
//! scalarization's hyperparameters) and maximizes its expected improvement. Over a batch and
//! over time the weights sweep the whole front. [`Optimizer::predict`] uses one GP per
//! objective, fitted (with restarts) at every tell.
//!
//! **Cost.** Single-threaded; per trial of a study (a warm tell and an ask, averaged over a window
//! that holds one tell with restarts) about 0.25 s at 300 observations in 48 dimensions and 0.04 s
//! at 100, on a shared 2-core machine (see `benches/gp.rs` and the README). faer picks SIMD
//! kernels for the CPU at run time, so two CPUs may give results that differ in the last bits.
//!
//! **Resume.** The state is the observations, the fitted hyperparameters, the generator and the
//! counters, every float bit-exact (see [`super::exact`]); models are rebuilt from it, so after a
//! JSON round trip the next ask is identical.

mod acquisition;
mod hyper;
mod kernel;
mod linalg;
mod model;
#[cfg(test)]
mod tests;

use rand::Rng as _;
use rand::seq::SliceRandom as _;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::observation::Observation;

use super::nsga2::{InitialDesign, seeded_design};
use super::{OptimError, Optimizer, Told, check_dim_batch, exact};
use crate::rng::{Rng, derive_seed};
use acquisition::Search;
use model::Gp;

/// The options of [`GaussianProcessBo::new`]; `Default` gives the study's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpOptions {
    /// The size of the space-filling initial design asked before the model is used; `None` for
    /// `max(d + 1, 10)`.
    pub initial: Option<usize>,
    /// ParEGO over [`Told::objectives`] instead of single-objective EI on [`Told::value`]
    /// (default `false`).
    pub multi_objective: bool,
    /// Starts of the hyperparameter fit after a tell: the previous fit plus `restarts - 1`
    /// random ones (default 3, at least 1).
    pub restarts: usize,
    /// The random starts run at a tell only once the observations have grown by this fraction
    /// since they last ran (default 0.1: at every tell up to 10 observations, about every 30th
    /// at 300); other tells refit from the previous fit alone. 0 runs them at every tell.
    pub restart_growth: f64,
    /// L-BFGS iterations per hyperparameter start (default 50, at least 1).
    pub max_iters: usize,
    /// L-BFGS iterations of the refit from the previous fit at a tell without random restarts
    /// (default 10, at least 1): one more observation moves the optimum little, and each tell
    /// continues where the last one stopped.
    pub warm_iters: usize,
    /// The random hyperparameter starts fit on a random subsample of at most this many
    /// observations (default 150, at least 10); only the warm start, and the polish of a random
    /// start that beats it, see every observation. Bounds the cost of restarts at large `n`.
    pub fit_subsample: usize,
    /// Points screened per proposal, half uniform and half perturbations of the best observed
    /// points (default 1000, at least 1).
    pub candidates: usize,
    /// How many of the best screened points L-BFGS refines (default 5).
    pub refine: usize,
    /// L-BFGS iterations per refinement (default 30).
    pub acquisition_iters: usize,
    /// ParEGO's augmentation weight `ρ` (default 0.05, non-negative).
    pub parego_rho: f64,
    /// Points that start the initial design (for example the space's initial point); the
    /// space-filling design fills the rest.
    pub initial_points: Vec<Vec<f64>>,
}

impl Default for GpOptions {
    fn default() -> GpOptions {
        GpOptions {
            initial: None,
            multi_objective: false,
            restarts: 3,
            restart_growth: 0.1,
            max_iters: 50,
            warm_iters: 10,
            fit_subsample: 150,
            candidates: 1000,
            refine: 5,
            acquisition_iters: 30,
            parego_rho: 0.05,
            initial_points: Vec::new(),
        }
    }
}

/// A vector of floats that serializes bit-exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
struct Exact(#[serde(with = "exact::vec")] Vec<f64>);

/// What [`GaussianProcessBo`] serializes: everything but the prediction cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    dim: usize,
    batch: usize,
    seed: u64,
    options: GpOptions,
    rng: Rng,
    /// Initial-design points asked so far.
    design_asked: usize,
    observations: Vec<Observation>,
    /// The points of failed trials (fantasies in every model).
    failed: Vec<Exact>,
    /// The fitted log hyperparameters of the single-objective model (empty before the first
    /// fit), or in ParEGO mode those of the last scalarization (warm start of the next).
    #[serde(with = "exact::vec")]
    theta: Vec<f64>,
    /// ParEGO mode: the log hyperparameters of each objective's model, for `predict`.
    objective_thetas: Vec<Exact>,
    /// The number of observations at which the random restarts run next.
    #[serde(default)]
    restarts_at: usize,
}

/// Standardized targets of one model, with the shift and scale to undo it.
struct Targets {
    y: Vec<f64>,
    mean: f64,
    sd: f64,
}

fn standardize(values: &[f64]) -> Targets {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let sd = var.sqrt();
    let sd = if sd.is_finite() && sd > 1e-12 * mean.abs().max(1.0) {
        sd
    } else {
        1.0
    };
    Targets {
        y: values.iter().map(|v| (v - mean) / sd).collect(),
        mean,
        sd,
    }
}

/// Fitted per-objective models for `predict`, built on first use after each tell.
#[derive(Default, Clone)]
struct PredictCache(OnceLock<Option<Vec<(Gp, f64, f64)>>>);

impl std::fmt::Debug for PredictCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PredictCache")
    }
}

/// Gaussian-process Bayesian optimization with log expected improvement, Kriging-believer
/// batches and optional ParEGO for several objectives (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "State", into = "State")]
pub struct GaussianProcessBo {
    state: State,
    cache: PredictCache,
}

impl PartialEq for GaussianProcessBo {
    fn eq(&self, other: &GaussianProcessBo) -> bool {
        self.state == other.state
    }
}

impl From<State> for GaussianProcessBo {
    fn from(state: State) -> GaussianProcessBo {
        GaussianProcessBo {
            state,
            cache: PredictCache::default(),
        }
    }
}

impl From<GaussianProcessBo> for State {
    fn from(bo: GaussianProcessBo) -> State {
        bo.state
    }
}

impl GaussianProcessBo {
    /// GP-BO over `dim` coordinates asking `batch` points at a time, every random choice drawn
    /// from `seed`.
    pub fn new(
        dim: usize,
        batch: usize,
        seed: u64,
        options: GpOptions,
    ) -> Result<GaussianProcessBo, OptimError> {
        check_dim_batch(dim, batch)?;
        if options.restarts == 0 {
            return Err(OptimError::invalid("restarts", "must be at least 1", 0));
        }
        if options.max_iters == 0 {
            return Err(OptimError::invalid("max_iters", "must be at least 1", 0));
        }
        if options.warm_iters == 0 {
            return Err(OptimError::invalid("warm_iters", "must be at least 1", 0));
        }
        if options.fit_subsample < 10 {
            return Err(OptimError::invalid(
                "fit_subsample",
                "must be at least 10",
                options.fit_subsample,
            ));
        }
        if options.candidates == 0 {
            return Err(OptimError::invalid("candidates", "must be at least 1", 0));
        }
        if !(options.restart_growth.is_finite() && options.restart_growth >= 0.0) {
            return Err(OptimError::invalid(
                "restart_growth",
                "must be finite and non-negative",
                options.restart_growth,
            ));
        }
        if !(options.parego_rho.is_finite() && options.parego_rho >= 0.0) {
            return Err(OptimError::invalid(
                "parego_rho",
                "must be finite and non-negative",
                options.parego_rho,
            ));
        }
        Ok(GaussianProcessBo::from(State {
            dim,
            batch,
            seed,
            options,
            rng: Rng::new(derive_seed(seed, "optim/gp", 0)),
            design_asked: 0,
            observations: Vec::new(),
            failed: Vec::new(),
            theta: Vec::new(),
            objective_thetas: Vec::new(),
            restarts_at: 0,
        }))
    }

    /// The same optimizer whose initial design starts with `points` (unit cube).
    pub fn with_initial_points(mut self, points: Vec<Vec<f64>>) -> GaussianProcessBo {
        self.state.options.initial_points = points;
        self
    }

    /// The options it was built with.
    pub fn options(&self) -> &GpOptions {
        &self.state.options
    }

    /// The number of coordinates of each point.
    pub fn dim(&self) -> usize {
        self.state.dim
    }

    /// The size of the initial design.
    pub fn initial(&self) -> usize {
        let s = &self.state;
        s.options.initial.unwrap_or((s.dim + 1).max(10))
    }

    /// The number of successful trials told so far.
    pub fn observations(&self) -> usize {
        self.state.observations.len()
    }

    /// The number of failed trials told so far.
    pub fn failures(&self) -> usize {
        self.state.failed.len()
    }

    /// The observed points, row-major.
    fn inputs(&self) -> Vec<f64> {
        self.state
            .observations
            .iter()
            .flat_map(|o| o.point.iter().copied())
            .collect()
    }

    /// Objective `j` of every observation.
    fn column(&self, j: usize) -> Vec<f64> {
        self.state
            .observations
            .iter()
            .map(|o| o.objectives[j])
            .collect()
    }

    /// Fits hyperparameters to standardized `y` from `previous` (or the priors' means) and, when
    /// `restart`, `restarts - 1` random starts (on a subsample when there are many observations).
    fn fit_theta(&mut self, x: &[f64], y: &[f64], previous: &[f64], restart: bool) -> Vec<f64> {
        let d = self.state.dim;
        let options = &self.state.options;
        let (restarts, iters) = if restart {
            (options.restarts, options.max_iters)
        } else {
            (1, options.warm_iters)
        };
        let cap = options.fit_subsample;
        let warm = if previous.len() == d + 2 {
            previous.to_vec()
        } else {
            hyper::default_theta(d)
        };
        let rng = &mut self.state.rng;
        let randoms: Vec<Vec<f64>> = (1..restarts).map(|_| hyper::random_theta(d, rng)).collect();
        let subsample = (!randoms.is_empty() && y.len() > cap).then(|| {
            let mut idx: Vec<usize> = (0..y.len()).collect();
            idx.shuffle(rng);
            idx.truncate(cap);
            idx.sort_unstable();
            idx
        });
        hyper::fit_restarts(x, y, d, warm, &randoms, subsample.as_deref(), iters as u64)
    }

    /// Refits the hyperparameters after a tell (with the random restarts when they are due).
    fn refit(&mut self) {
        let n = self.state.observations.len();
        if n < 2 {
            return;
        }
        let restart = n >= self.state.restarts_at;
        if restart {
            let grown = (n as f64 * (1.0 + self.state.options.restart_growth)).ceil() as usize;
            self.state.restarts_at = grown.max(n + 1);
        }
        let x = self.inputs();
        if self.state.options.multi_objective {
            let m = self.state.observations[0].objectives.len();
            self.state.objective_thetas.resize(m, Exact(Vec::new()));
            for j in 0..m {
                let targets = standardize(&self.column(j));
                let previous = self.state.objective_thetas[j].0.clone();
                self.state.objective_thetas[j] =
                    Exact(self.fit_theta(&x, &targets.y, &previous, restart));
            }
        } else {
            let targets = standardize(&self.column(0));
            let previous = self.state.theta.clone();
            self.state.theta = self.fit_theta(&x, &targets.y, &previous, restart);
        }
    }

    /// A weight vector uniform on the simplex (normalized exponentials).
    fn simplex_weights(&mut self, m: usize) -> Vec<f64> {
        let w: Vec<f64> = (0..m)
            .map(|_| -(1.0 - self.state.rng.random::<f64>()).ln())
            .collect();
        let sum: f64 = w.iter().sum();
        w.iter().map(|v| v / sum).collect()
    }

    /// ParEGO's augmented Chebyshev scalarization of every observation under `weights`, the
    /// objectives normalized to `[0, 1]` by their observed range.
    fn scalarize(&self, weights: &[f64]) -> Vec<f64> {
        let obs = &self.state.observations;
        let m = weights.len();
        let lo: Vec<f64> = (0..m)
            .map(|j| {
                obs.iter()
                    .map(|o| o.objectives[j])
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        let hi: Vec<f64> = (0..m)
            .map(|j| {
                obs.iter()
                    .map(|o| o.objectives[j])
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect();
        obs.iter()
            .map(|o| {
                let mut max = f64::NEG_INFINITY;
                let mut sum = 0.0;
                for j in 0..m {
                    let range = hi[j] - lo[j];
                    let f = if range > 0.0 {
                        (o.objectives[j] - lo[j]) / range
                    } else {
                        0.0
                    };
                    max = max.max(weights[j] * f);
                    sum += weights[j] * f;
                }
                max + self.state.options.parego_rho * sum
            })
            .collect()
    }

    /// One proposal given the points already in this batch, or `None` without a usable model.
    fn propose(&mut self, pending: &[Vec<f64>]) -> Option<Vec<f64>> {
        let d = self.state.dim;
        if self.state.observations.len() < 2 {
            return None;
        }
        let x = self.inputs();
        let mut gp = if self.state.options.multi_objective {
            let m = self.state.observations[0].objectives.len();
            let weights = self.simplex_weights(m);
            let targets = standardize(&self.scalarize(&weights));
            let start = if self.state.theta.len() == d + 2 {
                self.state.theta.clone()
            } else {
                // The first scalarization starts from the average of the objectives' fits.
                let fitted: Vec<&Exact> = self
                    .state
                    .objective_thetas
                    .iter()
                    .filter(|t| t.0.len() == d + 2)
                    .collect();
                if fitted.is_empty() {
                    hyper::default_theta(d)
                } else {
                    (0..d + 2)
                        .map(|k| fitted.iter().map(|t| t.0[k]).sum::<f64>() / fitted.len() as f64)
                        .collect()
                }
            };
            let iters = self.state.options.max_iters as u64;
            self.state.theta = hyper::fit(&x, &targets.y, d, &[start], iters);
            Gp::fit(&x, &targets.y, d, &self.state.theta)?
        } else {
            if self.state.theta.len() != d + 2 {
                return None;
            }
            let targets = standardize(&self.column(0));
            Gp::fit(&x, &targets.y, d, &self.state.theta)?
        };
        for p in self.state.failed.iter().map(|e| &e.0).chain(pending) {
            let believed = gp.mean(p);
            gp.add(p, believed);
        }
        let options = &self.state.options;
        let search = Search {
            candidates: options.candidates,
            refine: options.refine,
            iters: options.acquisition_iters as u64,
        };
        let (point, _) = acquisition::maximize(&gp, d, search, &mut self.state.rng);
        Some(point)
    }

    /// The initial design's points (all of them; the first `design_asked` are already asked):
    /// the given initial points, then scrambled Sobol (a Latin hypercube beyond its dimensions).
    fn design(&self) -> Vec<Vec<f64>> {
        let s = &self.state;
        seeded_design(
            &s.options.initial_points,
            InitialDesign::Sobol,
            s.dim,
            self.initial(),
            s.seed,
            0,
        )
    }

    /// Fits (once per tell) the models `predict` uses.
    fn predictors(&self) -> Option<&Vec<(Gp, f64, f64)>> {
        self.cache
            .0
            .get_or_init(|| {
                let s = &self.state;
                if s.observations.len() < 2 {
                    return None;
                }
                let x = self.inputs();
                let thetas: Vec<&[f64]> = if s.options.multi_objective {
                    s.objective_thetas.iter().map(|t| t.0.as_slice()).collect()
                } else {
                    vec![s.theta.as_slice()]
                };
                let m = s.observations[0].objectives.len();
                if thetas.len() != m || thetas.iter().any(|t| t.len() != s.dim + 2) {
                    return None;
                }
                thetas
                    .iter()
                    .enumerate()
                    .map(|(j, theta)| {
                        let t = standardize(&self.column(j));
                        Gp::fit(&x, &t.y, s.dim, theta).map(|gp| (gp, t.mean, t.sd))
                    })
                    .collect()
            })
            .as_ref()
    }
}

impl Optimizer for GaussianProcessBo {
    fn ask(&mut self) -> Vec<Vec<f64>> {
        let batch = self.state.batch;
        let mut out = Vec::with_capacity(batch);
        let n_init = self.initial();
        if self.state.design_asked < n_init {
            let design = self.design();
            while out.len() < batch && self.state.design_asked < design.len() {
                out.push(design[self.state.design_asked].clone());
                self.state.design_asked += 1;
            }
            if design.len() < n_init {
                self.state.design_asked = n_init;
            }
        }
        while out.len() < batch {
            let point = match self.propose(&out) {
                Some(point) => point,
                None => (0..self.state.dim)
                    .map(|_| self.state.rng.random::<f64>())
                    .collect(),
            };
            out.push(point);
        }
        out
    }

    fn tell(&mut self, results: &[Told]) {
        if results.is_empty() {
            return;
        }
        let dim = self.state.dim;
        let multi = self.state.options.multi_objective;
        for told in results {
            if told.point.len() != dim || told.point.iter().any(|v| !v.is_finite()) {
                continue;
            }
            let objectives = if multi {
                told.objectives.clone()
            } else {
                told.value.map(|v| vec![v])
            };
            let expected = self.state.observations.first().map(|o| o.objectives.len());
            match objectives {
                Some(objectives)
                    if !objectives.is_empty()
                        && objectives.iter().all(|v| v.is_finite())
                        && expected.is_none_or(|m| m == objectives.len()) =>
                {
                    self.state.observations.push(Observation {
                        point: told.point.clone(),
                        objectives,
                    });
                }
                _ => self.state.failed.push(Exact(told.point.clone())),
            }
        }
        self.cache = PredictCache::default();
        self.refit();
    }

    /// The posterior mean of each objective (in the units told) at `point`: one GP in
    /// single-objective mode, one per objective in ParEGO mode. `None` before two trials have
    /// succeeded.
    fn predict(&self, point: &[f64]) -> Option<Vec<f64>> {
        if point.len() != self.state.dim {
            return None;
        }
        let models = self.predictors()?;
        Some(
            models
                .iter()
                .map(|(gp, mean, sd)| mean + sd * gp.mean(point))
                .collect(),
        )
    }
}
