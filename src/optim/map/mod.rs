//! MAP, Model-Assisted Pareto search (after Li et al., "MAP: Low-compute Model Merging with
//! Amortized Pareto Fronts via Quadratic Approximation", ICLR 2025): quadratic surrogates of
//! every objective, NSGA-II on the surrogates, and a batch of proposals picked from the
//! predicted front.
//!
//! Why: a merge's scores are smooth, nearly quadratic functions of the merge coefficients near
//! the region that matters (a second-order Taylor expansion of each task's loss in the task
//! vectors' weights), and evaluating one merge is expensive while evaluating a quadratic is
//! free. So MAP spends its evaluations on a space-filling design, fits one quadratic per
//! objective, lets NSGA-II find the whole predicted Pareto front on the quadratics, evaluates a
//! batch from that front, refits, and repeats.
//!
//! Choices:
//!
//! * **Initial design**: `initial` points of a scrambled Sobol sequence by default; the default
//!   size is `2·dim + 2` clamped to `8..=32`, at least one batch, rounded up to whole batches
//!   (32 in 48 dimensions: a third of a budget of 100).
//! * **Surrogates** (the `quadratic` submodule): per objective, intercept + linear + squared + pairwise
//!   terms (1,224 features and an intercept in 48 dimensions), fitted by ridge regression on
//!   standardized targets. The ridge strength is chosen per objective by exact leave-one-out
//!   (default) or generalized cross-validation over a log grid. How much the pairwise terms count
//!   is chosen the same way, per objective: their features are scaled by 0, ¼, 1 or 4 times
//!   `sqrt(2 / (dim - 1))` (at 1, together they carry about as much prior variance as the linear
//!   terms), since with many coordinates the many interactions would otherwise swamp the few
//!   main effects 30 points can identify, while some objectives do have interactions. The fit
//!   works through the thin SVD of the feature matrix from the smaller Gram matrix (the dual `n × n` kernel form while features
//!   outnumber observations), so it stays fast.
//! * **Front**: NSGA-II ([`Nsga2`]) on the surrogates (`population` × `generations`), its
//!   initial population seeded with the measured non-dominated points.
//! * **Batch** ([`MapVariant::Plain`]): from the predicted front, after dropping near-duplicates
//!   of evaluated points (RMS coordinate distance below `duplicate_tolerance`), points not
//!   predicted to be dominated by a measured point come first, and among them a greedy max–min
//!   spread in normalized objective space, away from the measured front and from each other, so
//!   the batch fills the front's largest gaps.
//! * **Bayesian batch** ([`MapVariant::Bayes`]): the same quadratic features read as Bayesian
//!   linear regression: a Gaussian prior on the weights whose variance is the empirical
//!   `‖w‖² / effective parameters`, with the cross-validated ridge as the ratio of noise to
//!   prior variance; the posterior gives a predictive variance at any point. Among the predicted front it picks the point of highest
//!   predictive variance summed over objectives (standardized), then conditions the posterior
//!   on it as if it had been observed (an exact rank-one update, which lowers the variance of
//!   its neighbours), and repeats: uncertain points, spread out.
//! * **One objective**: the "front" is the surrogate minimum; the batch starts with it and
//!   continues with the next-best distinct members of NSGA-II's final population (plain) or
//!   the most uncertain of them (Bayesian), then small Gaussian perturbations of the picks.
//!
//! [`Optimizer::predict`] returns the surrogates that proposed the last batch. Failed trials
//! are kept (proposals avoid them) but fit nothing.
//!
//! **Resume**: the state is the options, the observations (bit-exact), the generator and
//! counters; the surrogates are refitted on load from the observations they were fitted on,
//! which reproduces them bit for bit.

mod quadratic;

use rand::Rng as _;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::observation::Observation;

use super::nsga2::{
    InitialDesign, Nsga2, Nsga2Options, clamp_point, seeded_design, told_objectives,
};
use super::{OptimError, Optimizer, Told, check_dim_batch};
use crate::rng::{Rng, derive_seed};
use quadratic::{Basis, QuadraticFit, Scales, Validation};

/// How MAP picks its batch from the predicted front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapVariant {
    /// Spread along the predicted front, filling the measured front's gaps.
    #[default]
    Plain,
    /// The predicted front's most uncertain points (Bayesian linear regression).
    Bayes,
}

/// How the ridge strength of each surrogate is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RidgeSelection {
    /// Exact leave-one-out cross-validation.
    #[default]
    Loo,
    /// Generalized cross-validation.
    Gcv,
}

/// The settings of [`Map`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MapOptions {
    /// Plain or Bayesian batch selection.
    pub variant: MapVariant,
    /// The size of the initial design; `None`: `2·dim + 2` clamped to `8..=32`, at least the
    /// batch, rounded up to whole batches.
    pub initial: Option<usize>,
    /// The initial design's kind.
    pub initial_design: InitialDesign,
    /// Points that start the initial design (for example the space's initial point); the
    /// design fills the rest.
    pub initial_points: Vec<Vec<f64>>,
    /// NSGA-II's population on the surrogates (default 100).
    pub population: usize,
    /// NSGA-II's generations on the surrogates (default 100).
    pub generations: usize,
    /// The scale of the pairwise features; `None`: chosen per objective by cross-validation
    /// among 0, ¼, 1 and 4 times `sqrt(2 / (dim - 1))`.
    pub interaction_scale: Option<f64>,
    /// How each surrogate's ridge strength is chosen.
    pub ridge: RidgeSelection,
    /// Proposals closer than this RMS coordinate distance to an evaluated or already proposed
    /// point are skipped (default 0.01).
    pub duplicate_tolerance: f64,
    /// The inner NSGA-II's variation settings.
    pub nsga2: Nsga2Options,
}

impl Default for MapOptions {
    fn default() -> MapOptions {
        MapOptions {
            variant: MapVariant::Plain,
            initial: None,
            initial_design: InitialDesign::Sobol,
            initial_points: Vec::new(),
            population: 100,
            generations: 100,
            interaction_scale: None,
            ridge: RidgeSelection::Loo,
            duplicate_tolerance: 0.01,
            nsga2: Nsga2Options::default(),
        }
    }
}

impl MapOptions {
    /// The default options with Bayesian batch selection ([`MapVariant::Bayes`]).
    pub fn bayes() -> MapOptions {
        MapOptions {
            variant: MapVariant::Bayes,
            ..MapOptions::default()
        }
    }

    fn check(&self, dim: usize) -> Result<(), OptimError> {
        if self.initial == Some(0) {
            return Err(OptimError::invalid("initial", "must be at least 1", 0));
        }
        if let Some(scale) = self.interaction_scale
            && !(scale.is_finite() && scale >= 0.0)
        {
            return Err(OptimError::invalid(
                "interaction_scale",
                "must be finite and non-negative",
                scale,
            ));
        }
        if !(self.duplicate_tolerance.is_finite() && self.duplicate_tolerance >= 0.0) {
            return Err(OptimError::invalid(
                "duplicate_tolerance",
                "must be finite and non-negative",
                self.duplicate_tolerance,
            ));
        }
        // Checks `population` and the NSGA-II options.
        Nsga2::new(dim, self.population, 0, self.nsga2.clone())?;
        Ok(())
    }
}

/// The fitted surrogates: one quadratic per objective, each over one of the shared bases (one
/// per interaction scale tried).
#[derive(Debug, Clone, PartialEq)]
struct Surrogate {
    bases: Vec<Basis>,
    /// Each objective's basis index and fit.
    fits: Vec<(usize, QuadraticFit)>,
}

impl Surrogate {
    fn predict(&self, x: &[f64]) -> Vec<f64> {
        self.fits.iter().map(|(_, f)| f.predict(x)).collect()
    }

    /// Objective `j`'s posterior covariance between `points` (standardized units).
    fn covariance(&self, j: usize, points: &[Vec<f64>]) -> Vec<f64> {
        let (b, fit) = &self.fits[j];
        self.bases[*b].covariance(fit, points)
    }
}

/// Model-Assisted Pareto search (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "MapState", into = "MapState")]
pub struct Map {
    dim: usize,
    batch: usize,
    seed: u64,
    options: MapOptions,
    rng: Rng,
    history: Vec<Observation>,
    objectives: Option<usize>,
    /// The number of initial-design points asked.
    design_asked: usize,
    /// The number of model-based batches asked.
    iterations: u64,
    /// The number of observations the surrogates were fitted on.
    fitted: usize,
    surrogate: Option<Surrogate>,
}

/// What [`Map`] serializes: everything but the surrogates, refitted on load.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MapState {
    dim: usize,
    batch: usize,
    seed: u64,
    options: MapOptions,
    rng: Rng,
    history: Vec<Observation>,
    objectives: Option<usize>,
    design_asked: usize,
    iterations: u64,
    fitted: usize,
}

impl From<Map> for MapState {
    fn from(m: Map) -> MapState {
        MapState {
            dim: m.dim,
            batch: m.batch,
            seed: m.seed,
            options: m.options,
            rng: m.rng,
            history: m.history,
            objectives: m.objectives,
            design_asked: m.design_asked,
            iterations: m.iterations,
            fitted: m.fitted,
        }
    }
}

impl TryFrom<MapState> for Map {
    type Error = OptimError;

    fn try_from(s: MapState) -> Result<Map, OptimError> {
        check_dim_batch(s.dim, s.batch)?;
        s.options.check(s.dim)?;
        if s.fitted > s.history.len() {
            return Err(OptimError::invalid(
                "fitted",
                format!("must be at most the {} observations", s.history.len()),
                s.fitted,
            ));
        }
        let mut map = Map {
            dim: s.dim,
            batch: s.batch,
            seed: s.seed,
            options: s.options,
            rng: s.rng,
            history: s.history,
            objectives: s.objectives,
            design_asked: s.design_asked,
            iterations: s.iterations,
            fitted: s.fitted,
            surrogate: None,
        };
        if map.fitted > 0 {
            map.surrogate = map.fit(map.fitted);
        }
        Ok(map)
    }
}

/// The fewest successful observations a surrogate is fitted on.
const MIN_FIT: usize = 3;

impl Map {
    /// MAP over `dim` coordinates proposing `batch` points per ask, its randomness drawn from
    /// `seed`. Use [`MapOptions::bayes`] for the Bayesian variant.
    pub fn new(
        dim: usize,
        batch: usize,
        seed: u64,
        options: MapOptions,
    ) -> Result<Map, OptimError> {
        check_dim_batch(dim, batch)?;
        options.check(dim)?;
        Ok(Map {
            dim,
            batch,
            seed,
            options,
            rng: Rng::new(derive_seed(seed, "optim/map", 0)),
            history: Vec::new(),
            objectives: None,
            design_asked: 0,
            iterations: 0,
            fitted: 0,
            surrogate: None,
        })
    }

    /// The number of coordinates of each point.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The options.
    pub fn options(&self) -> &MapOptions {
        &self.options
    }

    /// The same optimizer whose initial design starts with `points` (unit cube).
    pub fn with_initial_points(mut self, points: Vec<Vec<f64>>) -> Map {
        self.options.initial_points = points;
        self
    }

    /// The size of the initial design.
    pub fn initial_size(&self) -> usize {
        self.options.initial.unwrap_or_else(|| {
            (2 * self.dim + 2)
                .clamp(8, 32)
                .max(self.batch)
                .next_multiple_of(self.batch)
        })
    }

    /// The posterior predictive variance of each objective at `point` (objective units) under
    /// the surrogates that proposed the last batch, or `None` before the first fit.
    pub fn predictive_variance(&self, point: &[f64]) -> Option<Vec<f64>> {
        let surrogate = self.surrogate.as_ref()?;
        let x = clamp_point(point);
        Some(
            surrogate
                .fits
                .iter()
                .map(|(b, fit)| surrogate.bases[*b].variance(fit, &x))
                .collect(),
        )
    }

    /// The ridge strength chosen for each objective's surrogate, or `None` before the first fit.
    pub fn ridge_strengths(&self) -> Option<Vec<f64>> {
        Some(
            self.surrogate
                .as_ref()?
                .fits
                .iter()
                .map(|(_, f)| f.lambda)
                .collect(),
        )
    }

    /// The feature scales tried: the given interaction scale, or multiples 0, ¼, 1 and 4 of
    /// the default `sqrt(2 / (dim - 1))`.
    fn scales(&self) -> Vec<Scales> {
        let scale = |interaction| Scales {
            linear: 1.0,
            square: 1.0,
            interaction,
        };
        if let Some(s) = self.options.interaction_scale {
            return vec![scale(s)];
        }
        if self.dim == 1 {
            return vec![scale(0.0)];
        }
        let default = (2.0 / (self.dim - 1) as f64).sqrt();
        [0.0, 0.25, 1.0, 4.0]
            .iter()
            .map(|m| scale(m * default))
            .collect()
    }

    fn validation(&self) -> Validation {
        match self.options.ridge {
            RidgeSelection::Loo => Validation::LeaveOneOut,
            RidgeSelection::Gcv => Validation::Generalized,
        }
    }

    /// The surrogates fitted on the successful observations among the first `upto`.
    fn fit(&self, upto: usize) -> Option<Surrogate> {
        let ok: Vec<&Observation> = self.history[..upto]
            .iter()
            .filter(|o| !o.objectives.is_empty())
            .collect();
        let m = self.objectives?;
        if ok.len() < MIN_FIT {
            return None;
        }
        let points: Vec<Vec<f64>> = ok.iter().map(|o| o.point.clone()).collect();
        let bases: Vec<Basis> = self
            .scales()
            .into_iter()
            .map(|scales| Basis::new(&points, scales))
            .collect();
        let fits = (0..m)
            .map(|j| {
                let y: Vec<f64> = ok.iter().map(|o| o.objectives[j]).collect();
                let mut best: Option<(usize, QuadraticFit)> = None;
                for (b, basis) in bases.iter().enumerate() {
                    let fit = basis.fit(&y, self.validation());
                    if best
                        .as_ref()
                        .is_none_or(|(_, f)| fit.score < f.score * (1.0 - 1e-9))
                    {
                        best = Some((b, fit));
                    }
                }
                best.unwrap_or_else(|| (0, bases[0].fit(&y, self.validation())))
            })
            .collect();
        Some(Surrogate { bases, fits })
    }

    /// Whether `a` is within the duplicate tolerance of `b`.
    fn near(&self, a: &[f64], b: &[f64]) -> bool {
        let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        (d2 / self.dim as f64).sqrt() < self.options.duplicate_tolerance.max(1e-12)
    }

    /// The measured non-dominated observations (minimized objectives).
    fn measured_front(&self) -> Vec<&Observation> {
        let ok: Vec<&Observation> = self
            .history
            .iter()
            .filter(|o| !o.objectives.is_empty())
            .collect();
        ok.iter()
            .filter(|o| !ok.iter().any(|p| dominates(&p.objectives, &o.objectives)))
            .copied()
            .collect()
    }

    /// A model-based batch from `surrogate`.
    fn propose(&mut self, surrogate: &Surrogate) -> Vec<Vec<f64>> {
        let m = surrogate.fits.len();
        let anchors: Vec<Vec<f64>> = self
            .measured_front()
            .iter()
            .map(|o| o.objectives.clone())
            .collect();
        let seeds: Vec<Vec<f64>> = self
            .measured_front()
            .iter()
            .map(|o| o.point.clone())
            .take(self.options.population / 2)
            .collect();
        let nsga_seed = derive_seed(self.seed, "optim/map/nsga2", self.iterations);
        // The options were checked at construction, so this cannot fail.
        let Ok(nsga2) = Nsga2::new(
            self.dim,
            self.options.population,
            nsga_seed,
            self.options.nsga2.clone(),
        ) else {
            return Vec::new();
        };
        let mut nsga2 = nsga2.with_initial_points(seeds);
        nsga2.evolve(|x| surrogate.predict(x), self.options.generations);
        // The candidate pool, with its predicted objectives.
        let mut pool: Vec<(Vec<f64>, Vec<f64>)> = if m >= 2 {
            nsga2.front()
        } else {
            let mut all: Vec<(Vec<f64>, Vec<f64>)> = nsga2
                .population()
                .into_iter()
                .filter_map(|(x, f)| Some((x, f?)))
                .collect();
            all.sort_by(|a, b| a.1[0].total_cmp(&b.1[0]));
            all
        };
        pool.retain(|(x, _)| !self.history.iter().any(|o| self.near(x, &o.point)));
        let chosen = match self.options.variant {
            MapVariant::Plain => self.spread(&pool, &anchors),
            MapVariant::Bayes => self.uncertain(&pool, &anchors, surrogate),
        };
        let mut batch: Vec<Vec<f64>> = chosen.into_iter().map(|i| pool[i].0.clone()).collect();
        self.fill(&mut batch, &pool);
        batch
    }

    /// Whether candidate `x` may join `batch`: not near any of its points.
    fn fresh(&self, x: &[f64], batch: &[Vec<f64>]) -> bool {
        !batch.iter().any(|b| self.near(x, b))
    }

    /// Plain selection: pool indices by (not predicted dominated by a measured point first,
    /// then greatest normalized objective distance to the measured front and earlier picks).
    /// With one objective, the pool is in order of predicted value and taken in that order.
    fn spread(&self, pool: &[(Vec<f64>, Vec<f64>)], anchors: &[Vec<f64>]) -> Vec<usize> {
        let m = pool.first().map_or(0, |c| c.1.len());
        let mut chosen: Vec<usize> = Vec::new();
        let mut picked: Vec<Vec<f64>> = Vec::new();
        if m == 1 {
            for (i, (x, _)) in pool.iter().enumerate() {
                if chosen.len() == self.batch {
                    break;
                }
                if self.fresh(x, &picked) {
                    chosen.push(i);
                    picked.push(x.clone());
                }
            }
            return chosen;
        }
        let (lo, range) = normalization(pool.iter().map(|c| &c.1).chain(anchors), m);
        let scaled =
            |f: &[f64]| -> Vec<f64> { (0..m).map(|j| (f[j] - lo[j]) / range[j]).collect() };
        let mut reference: Vec<Vec<f64>> = anchors.iter().map(|a| scaled(a)).collect();
        let tier: Vec<bool> = pool
            .iter()
            .map(|c| anchors.iter().any(|a| dominates(a, &c.1)))
            .collect();
        while chosen.len() < self.batch {
            let mut best: Option<(usize, bool, f64)> = None;
            for (i, (x, f)) in pool.iter().enumerate() {
                if chosen.contains(&i) || !self.fresh(x, &picked) {
                    continue;
                }
                let s = scaled(f);
                let gap = reference
                    .iter()
                    .map(|r| distance(r, &s))
                    .fold(f64::INFINITY, f64::min);
                let better = match best {
                    None => true,
                    Some((_, t, g)) => (!tier[i] && t) || (tier[i] == t && gap > g),
                };
                if better {
                    best = Some((i, tier[i], gap));
                }
            }
            let Some((i, _, _)) = best else { break };
            chosen.push(i);
            picked.push(pool[i].0.clone());
            reference.push(scaled(&pool[i].1));
        }
        chosen
    }

    /// Bayesian selection: pool indices by (not predicted dominated first, then highest
    /// posterior variance summed over standardized objectives), conditioning the posterior on
    /// each pick. With one objective the first pick is the predicted minimum.
    fn uncertain(
        &self,
        pool: &[(Vec<f64>, Vec<f64>)],
        anchors: &[Vec<f64>],
        surrogate: &Surrogate,
    ) -> Vec<usize> {
        let c = pool.len();
        let points: Vec<Vec<f64>> = pool.iter().map(|p| p.0.clone()).collect();
        let mut covs: Vec<Vec<f64>> = (0..surrogate.fits.len())
            .map(|j| surrogate.covariance(j, &points))
            .collect();
        let tier: Vec<bool> = pool
            .iter()
            .map(|p| p.1.len() > 1 && anchors.iter().any(|a| dominates(a, &p.1)))
            .collect();
        let mut chosen: Vec<usize> = Vec::new();
        let mut picked: Vec<Vec<f64>> = Vec::new();
        while chosen.len() < self.batch {
            let first_of_one = surrogate.fits.len() == 1 && chosen.is_empty();
            let mut best: Option<(usize, bool, f64)> = None;
            for i in 0..c {
                if chosen.contains(&i) || !self.fresh(&points[i], &picked) {
                    continue;
                }
                if first_of_one {
                    // The pool is sorted by predicted value: its first fresh member.
                    best = Some((i, false, 0.0));
                    break;
                }
                let v: f64 = covs.iter().map(|cov| cov[i * c + i]).sum();
                let better = match best {
                    None => true,
                    Some((_, t, bv)) => (!tier[i] && t) || (tier[i] == t && v > bv),
                };
                if better {
                    best = Some((i, tier[i], v));
                }
            }
            let Some((s, _, _)) = best else { break };
            chosen.push(s);
            picked.push(points[s].clone());
            for (cov, (_, fit)) in covs.iter_mut().zip(&surrogate.fits) {
                let denominator = cov[s * c + s] + fit.noise;
                if denominator <= 0.0 {
                    continue;
                }
                let column: Vec<f64> = (0..c).map(|i| cov[i * c + s]).collect();
                for a in 0..c {
                    for b in 0..c {
                        cov[a * c + b] -= column[a] * column[b] / denominator;
                    }
                }
            }
        }
        chosen
    }

    /// Tops `batch` up to the batch size with Gaussian perturbations (σ 0.05, then wider) of
    /// its points or the pool's, or uniform points when those keep landing on known points.
    fn fill(&mut self, batch: &mut Vec<Vec<f64>>, pool: &[(Vec<f64>, Vec<f64>)]) {
        let mut bases: Vec<Vec<f64>> = batch.clone();
        bases.extend(pool.iter().map(|p| p.0.clone()));
        bases.extend(self.measured_front().iter().map(|o| o.point.clone()));
        let mut attempt = 0usize;
        while batch.len() < self.batch {
            let x: Vec<f64> = if bases.is_empty() || attempt >= 64 {
                (0..self.dim).map(|_| self.rng.random::<f64>()).collect()
            } else {
                let base = &bases[(batch.len() + attempt) % bases.len()];
                let sigma = 0.05 * (1.0 + (attempt / 8) as f64);
                let x: Vec<f64> = base
                    .iter()
                    .map(|&b| b + sigma * self.rng.sample::<f64, _>(StandardNormal))
                    .collect();
                clamp_point(&x)
            };
            attempt += 1;
            let known = self.history.iter().any(|o| self.near(&x, &o.point));
            if attempt > 128 || (!known && self.fresh(&x, batch)) {
                batch.push(x);
                attempt = 0;
            }
        }
    }
}

/// Whether minimized objectives `a` dominate `b`.
fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x <= y)
        && a.iter().zip(b).any(|(x, y)| x < y)
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Each objective's minimum and range (1 where it is 0) over `values`.
fn normalization<'a>(values: impl Iterator<Item = &'a Vec<f64>>, m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut lo = vec![f64::INFINITY; m];
    let mut hi = vec![f64::NEG_INFINITY; m];
    for v in values {
        for j in 0..m {
            lo[j] = lo[j].min(v[j]);
            hi[j] = hi[j].max(v[j]);
        }
    }
    let range = (0..m)
        .map(|j| {
            let r = hi[j] - lo[j];
            if r > 0.0 && r.is_finite() { r } else { 1.0 }
        })
        .collect();
    (lo, range)
}

impl Optimizer for Map {
    fn ask(&mut self) -> Vec<Vec<f64>> {
        let n0 = self.initial_size();
        if self.design_asked < n0 {
            let design = seeded_design(
                &self.options.initial_points,
                self.options.initial_design,
                self.dim,
                n0,
                self.seed,
                0,
            );
            let end = n0.min(self.design_asked + self.batch);
            let points = design[self.design_asked..end].to_vec();
            self.design_asked = end;
            return points;
        }
        let surrogate = self.fit(self.history.len());
        let Some(surrogate) = surrogate else {
            // Too few successes to fit: more uniform points.
            return (0..self.batch)
                .map(|_| (0..self.dim).map(|_| self.rng.random::<f64>()).collect())
                .collect();
        };
        self.fitted = self.history.len();
        let batch = self.propose(&surrogate);
        self.surrogate = Some(surrogate);
        self.iterations += 1;
        batch
    }

    fn tell(&mut self, results: &[Told]) {
        for told in results {
            if told.point.len() != self.dim {
                continue;
            }
            let objectives = told_objectives(told, &mut self.objectives);
            self.history.push(Observation {
                point: clamp_point(&told.point),
                objectives,
            });
        }
    }

    fn predict(&self, point: &[f64]) -> Option<Vec<f64>> {
        let surrogate = self.surrogate.as_ref()?;
        Some(surrogate.predict(&clamp_point(point)))
    }
}

#[cfg(test)]
mod tests;
