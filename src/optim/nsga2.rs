//! NSGA-II (Deb, Pratap, Agarwal and Meyarivan 2002): the standard evolutionary algorithm for
//! Pareto fronts, as an ask/tell optimizer over the unit cube.
//!
//! Why: when a merge is scored on several objectives there is no single best point, only a front
//! of trade-offs. NSGA-II needs no model and no scalarization; it keeps a population ranked by
//! non-dominated sorting and spread along each front by crowding distance, so one run returns the
//! whole front. With one objective it is a plain real-coded genetic algorithm. It is also the
//! inner solver of [`Map`](super::Map), which runs it on cheap surrogate models through
//! [`Nsga2::evolve`] and [`minimize_front`].
//!
//! One generation:
//!
//! 1. **Mating**: parents are drawn by binary tournaments (lower front rank wins, then the larger
//!    crowding distance, then a coin).
//! 2. **Variation**: pairs are recombined by simulated binary crossover (SBX, bounded form of
//!    Deb's reference code; probability `crossover_prob` per pair, each coordinate exchanged with
//!    probability ½, spread `eta_c`) and mutated by bounded polynomial mutation (probability
//!    `mutation_prob` per coordinate, default `1/d`, spread `eta_m`). Every child stays in
//!    `[0, 1]`. A child identical to one of its parents gets one forced mutation, so expensive
//!    evaluations are never spent on copies.
//! 3. **Environmental selection**: parents and the children told are sorted into fronts
//!    together; whole fronts survive while they fit, the front that overflows is cut by crowding
//!    distance (largest first, ties by position).
//!
//! Objectives are read from [`Told::objectives`] (minimized; [`Told::value`] when they are
//! absent). A failed trial, one with a non-finite objective, or one whose number of objectives
//! differs from the first successful trial's, ranks below every successful one.
//!
//! The first ask is the initial population: a space-filling design ([`InitialDesign`]), after any
//! points given by [`Nsga2::with_initial_points`]. The population size is the batch, rounded up
//! to an even number of at least 4; every ask returns a full population of children.
//!
//! **Resume**: the state is the population (points and objectives, bit-exact through
//! [`super::exact`]), the generator and counters; ranks and crowding distances (infinite at the
//! boundaries) are recomputed, never stored.

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::design::{LatinHypercube, Sobol};
use super::{OptimError, Optimizer, Told, check_dim_batch, exact};
use crate::pareto::{crowding_distance, non_dominated_sort};
use crate::rng::{Rng, derive_seed};

/// How an initial population (or a model-based optimizer's first points) covers the cube.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialDesign {
    /// A scrambled Sobol sequence ([`Sobol`]); Latin hypercube beyond [`Sobol::MAX_DIM`].
    #[default]
    Sobol,
    /// A Latin hypercube sample ([`LatinHypercube`]).
    Lhs,
    /// Independent uniform points.
    Random,
}

/// The `given` points of `dim` coordinates (clamped into the cube, at most `n`), then points of
/// `design` up to `n` in all: an initial design that starts where the user knows to start.
pub(crate) fn seeded_design(
    given: &[Vec<f64>],
    design: InitialDesign,
    dim: usize,
    n: usize,
    seed: u64,
    stream: u64,
) -> Vec<Vec<f64>> {
    let mut points: Vec<Vec<f64>> = given
        .iter()
        .filter(|p| p.len() == dim)
        .map(|p| clamp_point(p))
        .take(n)
        .collect();
    points.extend(design_points(design, dim, n - points.len(), seed, stream));
    points
}

/// `n` points of `design` over `dim` coordinates, drawn from `seed` and `stream`.
pub(crate) fn design_points(
    design: InitialDesign,
    dim: usize,
    n: usize,
    seed: u64,
    stream: u64,
) -> Vec<Vec<f64>> {
    if n == 0 {
        return Vec::new();
    }
    let seed = derive_seed(seed, "optim/initial-design", stream);
    let sobol = match design {
        InitialDesign::Sobol => Sobol::new(dim, n, seed).ok(),
        _ => None,
    };
    if let Some(mut sobol) = sobol {
        return sobol.ask();
    }
    match design {
        InitialDesign::Random => {
            let mut rng = Rng::new(seed);
            (0..n)
                .map(|_| (0..dim).map(|_| rng.random::<f64>()).collect())
                .collect()
        }
        // Lhs, or Sobol beyond its dimensions. `dim` and `n` are positive here.
        _ => match LatinHypercube::new(dim, n, seed) {
            Ok(mut lhs) => lhs.ask(),
            Err(_) => Vec::new(),
        },
    }
}

/// The settings of [`Nsga2`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Nsga2Options {
    /// SBX distribution index: larger keeps children closer to their parents (default 15).
    pub eta_c: f64,
    /// The probability that a pair of parents is recombined (default 0.9).
    pub crossover_prob: f64,
    /// Polynomial-mutation distribution index: larger gives smaller steps (default 20).
    pub eta_m: f64,
    /// The probability that each coordinate of a child is mutated; `None` is `1/dim`.
    pub mutation_prob: Option<f64>,
    /// The initial population's design (default Sobol).
    pub initial_design: InitialDesign,
}

impl Default for Nsga2Options {
    fn default() -> Nsga2Options {
        Nsga2Options {
            eta_c: 15.0,
            crossover_prob: 0.9,
            eta_m: 20.0,
            mutation_prob: None,
            initial_design: InitialDesign::Sobol,
        }
    }
}

impl Nsga2Options {
    /// Checks every option's range.
    fn check(&self) -> Result<(), OptimError> {
        for (name, value) in [("eta_c", self.eta_c), ("eta_m", self.eta_m)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(OptimError::invalid(
                    name,
                    "must be finite and non-negative",
                    value,
                ));
            }
        }
        let probabilities = [
            ("crossover_prob", Some(self.crossover_prob)),
            ("mutation_prob", self.mutation_prob),
        ];
        for (name, value) in probabilities {
            if let Some(p) = value
                && !(0.0..=1.0).contains(&p)
            {
                return Err(OptimError::invalid(name, "must be in [0, 1]", p));
            }
        }
        Ok(())
    }
}

/// One evaluated member of the population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    #[serde(with = "exact::vec")]
    point: Vec<f64>,
    /// The minimized objectives; empty when the trial failed.
    #[serde(with = "exact::vec")]
    objectives: Vec<f64>,
}

impl Member {
    fn failed(&self) -> bool {
        self.objectives.is_empty()
    }
}

/// NSGA-II over `[0, 1]^dim` (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nsga2 {
    dim: usize,
    population: usize,
    seed: u64,
    options: Nsga2Options,
    rng: Rng,
    /// The current parents (empty until the initial population is told).
    parents: Vec<Member>,
    /// Points to place first in the initial population.
    #[serde(default)]
    initial_points: Vec<Vec<f64>>,
    /// The number of objectives, fixed by the first successful trial.
    objectives: Option<usize>,
    /// The number of asks so far.
    asks: u64,
}

impl Nsga2 {
    /// NSGA-II over `dim` coordinates with a population of `batch` (rounded up to an even
    /// number of at least 4), its randomness drawn from `seed`.
    pub fn new(
        dim: usize,
        batch: usize,
        seed: u64,
        options: Nsga2Options,
    ) -> Result<Nsga2, OptimError> {
        check_dim_batch(dim, batch)?;
        options.check()?;
        let population = batch.max(4).next_multiple_of(2);
        Ok(Nsga2 {
            dim,
            population,
            seed,
            options,
            rng: Rng::new(derive_seed(seed, "optim/nsga2", 0)),
            parents: Vec::new(),
            initial_points: Vec::new(),
            objectives: None,
            asks: 0,
        })
    }

    /// Places `points` (clamped to the cube; at most a population's worth, the rest dropped)
    /// first in the initial population; the design fills the rest.
    pub fn with_initial_points(mut self, points: Vec<Vec<f64>>) -> Nsga2 {
        self.initial_points = points;
        self
    }

    /// The number of coordinates of each point.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The population size: the number of points each ask returns.
    pub fn population_size(&self) -> usize {
        self.population
    }

    /// The current parents as `(point, objectives)`, objectives `None` for failed trials.
    pub fn population(&self) -> Vec<(Vec<f64>, Option<Vec<f64>>)> {
        self.parents
            .iter()
            .map(|m| {
                let objectives = (!m.failed()).then(|| m.objectives.clone());
                (m.point.clone(), objectives)
            })
            .collect()
    }

    /// The non-dominated successful parents as `(point, objectives)`, in population order,
    /// without repeated points.
    pub fn front(&self) -> Vec<(Vec<f64>, Vec<f64>)> {
        let (rank, _) = rank_and_crowd(&self.parents);
        let mut front: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
        for (member, &r) in self.parents.iter().zip(&rank) {
            if r == 0 && !member.failed() && front.iter().all(|(p, _)| *p != member.point) {
                front.push((member.point.clone(), member.objectives.clone()));
            }
        }
        front
    }

    /// Runs `generations` generations (after the initial population, if none was told yet) on
    /// the cheap function `f`, which returns the minimized objectives of a point (an empty or
    /// non-finite result counts as a failed trial).
    pub fn evolve(&mut self, f: impl Fn(&[f64]) -> Vec<f64>, generations: usize) {
        let step = |this: &mut Nsga2| {
            let results: Vec<Told> = this
                .ask()
                .into_iter()
                .map(|point| {
                    let objectives = f(&point);
                    Told {
                        value: objectives.first().copied(),
                        objectives: Some(objectives),
                        point,
                        rung: 0,
                    }
                })
                .collect();
            this.tell(&results);
        };
        if self.parents.is_empty() {
            step(self);
        }
        for _ in 0..generations {
            step(self);
        }
    }

    /// The mutation probability per coordinate.
    fn mutation_prob(&self) -> f64 {
        self.options.mutation_prob.unwrap_or(1.0 / self.dim as f64)
    }

    /// The initial population.
    fn initial(&mut self) -> Vec<Vec<f64>> {
        seeded_design(
            &self.initial_points,
            self.options.initial_design,
            self.dim,
            self.population,
            self.seed,
            self.asks,
        )
    }

    /// The index of a tournament winner among the parents.
    fn tournament(&mut self, rank: &[usize], crowd: &[f64]) -> usize {
        let n = self.parents.len();
        let a = self.rng.random_range(0..n);
        let b = self.rng.random_range(0..n);
        let coin = self.rng.random::<f64>() < 0.5;
        match rank[a].cmp(&rank[b]).then(crowd[b].total_cmp(&crowd[a])) {
            std::cmp::Ordering::Less => a,
            std::cmp::Ordering::Greater => b,
            std::cmp::Ordering::Equal => {
                if coin {
                    a
                } else {
                    b
                }
            }
        }
    }

    /// A full population of children of the current parents.
    fn offspring(&mut self) -> Vec<Vec<f64>> {
        let (rank, crowd) = rank_and_crowd(&self.parents);
        let variation = Variation {
            eta_c: self.options.eta_c,
            crossover_prob: self.options.crossover_prob,
            eta_m: self.options.eta_m,
            mutation_prob: self.mutation_prob(),
        };
        let mut children = Vec::with_capacity(self.population);
        while children.len() < self.population {
            let a = self.tournament(&rank, &crowd);
            let b = self.tournament(&rank, &crowd);
            let (pa, pb) = (&self.parents[a].point, &self.parents[b].point);
            let (mut c1, mut c2) = variation.sbx(pa, pb, &mut self.rng);
            variation.mutate(&mut c1, &mut self.rng);
            variation.mutate(&mut c2, &mut self.rng);
            for child in [&mut c1, &mut c2] {
                if child == pa || child == pb {
                    variation.mutate_one(child, &mut self.rng);
                }
            }
            children.push(c1);
            children.push(c2);
        }
        children.truncate(self.population);
        children
    }

    /// Turns a told result into a member, fixing the number of objectives on first success.
    fn member(&mut self, told: &Told) -> Member {
        Member {
            point: clamp_point(&told.point),
            objectives: told_objectives(told, &mut self.objectives),
        }
    }
}

/// The minimized objectives of a told result ([`Told::objectives`], else `[value]`), or an empty
/// vector when the trial failed, an objective is not finite, or their number differs from
/// `expected`; the first success sets `expected`.
pub(crate) fn told_objectives(told: &Told, expected: &mut Option<usize>) -> Vec<f64> {
    let objectives = match (&told.objectives, told.value) {
        (Some(objectives), _) => objectives.clone(),
        (None, Some(value)) => vec![value],
        (None, None) => Vec::new(),
    };
    let valid = !objectives.is_empty()
        && objectives.iter().all(|v| v.is_finite())
        && expected.is_none_or(|m| m == objectives.len());
    if valid {
        *expected = Some(objectives.len());
        objectives
    } else {
        Vec::new()
    }
}

impl Optimizer for Nsga2 {
    fn ask(&mut self) -> Vec<Vec<f64>> {
        let points = if self.parents.is_empty() {
            self.initial()
        } else {
            self.offspring()
        };
        self.asks += 1;
        points
    }

    fn tell(&mut self, results: &[Told]) {
        let dim = self.dim;
        let told: Vec<Member> = results
            .iter()
            .filter(|t| t.point.len() == dim)
            .map(|t| self.member(t))
            .collect();
        if told.is_empty() {
            return;
        }
        let mut all = std::mem::take(&mut self.parents);
        all.extend(told);
        self.parents = survivors(all, self.population);
    }
}

/// A point with each coordinate clamped to `[0, 1]` (NaN to 0.5).
pub(crate) fn clamp_point(point: &[f64]) -> Vec<f64> {
    point
        .iter()
        .map(|&x| if x.is_nan() { 0.5 } else { x.clamp(0.0, 1.0) })
        .collect()
}

/// The front rank (0 best; failed members one past the last front) and crowding distance within
/// its front (0 for failed members) of every member.
fn rank_and_crowd(members: &[Member]) -> (Vec<usize>, Vec<f64>) {
    let ok: Vec<usize> = (0..members.len())
        .filter(|&i| !members[i].failed())
        .collect();
    // Maximized form, as the pareto module expects.
    let points: Vec<Vec<f64>> = ok
        .iter()
        .map(|&i| members[i].objectives.iter().map(|v| -v).collect())
        .collect();
    // Members are validated (finite, one common length), so sorting cannot fail.
    let fronts = non_dominated_sort(&points).unwrap_or_default();
    let mut rank = vec![fronts.len(); members.len()];
    let mut crowd = vec![0.0; members.len()];
    for (r, front) in fronts.iter().enumerate() {
        let distance = crowding_distance(&points, front).unwrap_or_else(|_| vec![0.0; front.len()]);
        for (&k, d) in front.iter().zip(distance) {
            rank[ok[k]] = r;
            crowd[ok[k]] = d;
        }
    }
    (rank, crowd)
}

/// The `n` best of `all` by (front rank, crowding distance descending, position).
fn survivors(all: Vec<Member>, n: usize) -> Vec<Member> {
    if all.len() <= n {
        return all;
    }
    let (rank, crowd) = rank_and_crowd(&all);
    let mut order: Vec<usize> = (0..all.len()).collect();
    // Crowding distances matter only within the front that overflows, but ordering every front
    // by it is equivalent: whole fronts before it survive either way.
    order.sort_by(|&a, &b| {
        rank[a]
            .cmp(&rank[b])
            .then(crowd[b].total_cmp(&crowd[a]))
            .then(a.cmp(&b))
    });
    order.truncate(n);
    order.sort_unstable();
    let mut all: Vec<Option<Member>> = all.into_iter().map(Some).collect();
    order.iter().filter_map(|&i| all[i].take()).collect()
}

/// The variation operators' settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Variation {
    pub eta_c: f64,
    pub crossover_prob: f64,
    pub eta_m: f64,
    pub mutation_prob: f64,
}

impl Variation {
    /// Simulated binary crossover of two parents in `[0, 1]^d` (Deb and Agrawal 1995, the
    /// bounded form of Deb's NSGA-II code): two children, each in `[0, 1]^d`.
    pub fn sbx(&self, a: &[f64], b: &[f64], rng: &mut Rng) -> (Vec<f64>, Vec<f64>) {
        let (mut c1, mut c2) = (a.to_vec(), b.to_vec());
        if rng.random::<f64>() >= self.crossover_prob {
            return (c1, c2);
        }
        let power = 1.0 / (self.eta_c + 1.0);
        let betaq = |beta: f64, u: f64| {
            let alpha = 2.0 - beta.powf(-(self.eta_c + 1.0));
            if u <= 1.0 / alpha {
                (u * alpha).powf(power)
            } else {
                (1.0 / (2.0 - u * alpha)).powf(power)
            }
        };
        for i in 0..a.len() {
            if rng.random::<f64>() >= 0.5 {
                continue;
            }
            let u = rng.random::<f64>();
            let swap = rng.random::<f64>() < 0.5;
            let (y1, y2) = (a[i].min(b[i]), a[i].max(b[i]));
            if y2 - y1 <= 1e-14 {
                continue;
            }
            let spread = y2 - y1;
            let low = 0.5 * ((y1 + y2) - betaq(1.0 + 2.0 * y1 / spread, u) * spread);
            let high = 0.5 * ((y1 + y2) + betaq(1.0 + 2.0 * (1.0 - y2) / spread, u) * spread);
            let (low, high) = (clamp_unit(low), clamp_unit(high));
            (c1[i], c2[i]) = if swap { (high, low) } else { (low, high) };
        }
        (c1, c2)
    }

    /// Bounded polynomial mutation (Deb's NSGA-II code) of each coordinate with probability
    /// `mutation_prob`, in place; the point stays in `[0, 1]^d`.
    pub fn mutate(&self, x: &mut [f64], rng: &mut Rng) {
        for xi in x.iter_mut() {
            if rng.random::<f64>() < self.mutation_prob {
                *xi = self.polynomial(*xi, rng);
            }
        }
    }

    /// Mutates one coordinate, chosen at random, until it changes (a few tries at most).
    pub fn mutate_one(&self, x: &mut [f64], rng: &mut Rng) {
        let i = rng.random_range(0..x.len());
        for _ in 0..8 {
            let y = self.polynomial(x[i], rng);
            if y != x[i] {
                x[i] = y;
                return;
            }
        }
        x[i] = rng.random::<f64>();
    }

    /// One polynomial-mutation step of `y` in `[0, 1]`.
    fn polynomial(&self, y: f64, rng: &mut Rng) -> f64 {
        let u = rng.random::<f64>();
        let power = 1.0 / (self.eta_m + 1.0);
        let deltaq = if u <= 0.5 {
            let xy = 1.0 - y;
            let val = 2.0 * u + (1.0 - 2.0 * u) * xy.powf(self.eta_m + 1.0);
            val.powf(power) - 1.0
        } else {
            let xy = y;
            let val = 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * xy.powf(self.eta_m + 1.0);
            1.0 - val.powf(power)
        };
        clamp_unit(y + deltaq)
    }
}

fn clamp_unit(x: f64) -> f64 {
    if x.is_nan() { 0.5 } else { x.clamp(0.0, 1.0) }
}

/// The non-dominated set NSGA-II finds for the cheap vector function `f` (minimized objectives;
/// an empty or non-finite result counts as failed) over `[0, 1]^dim`: a population of
/// `population` (rounded up to an even number of at least 4) evolved for `generations`
/// generations with default [`Nsga2Options`], from `seed`. Returns `(point, objectives)` pairs.
///
/// Errors when `dim` or `population` is 0.
#[allow(clippy::type_complexity)]
pub fn minimize_front(
    f: impl Fn(&[f64]) -> Vec<f64>,
    dim: usize,
    population: usize,
    generations: usize,
    seed: u64,
) -> Result<Vec<(Vec<f64>, Vec<f64>)>, OptimError> {
    let mut nsga2 = Nsga2::new(dim, population, seed, Nsga2Options::default())?;
    nsga2.evolve(f, generations);
    Ok(nsga2.front())
}

#[cfg(test)]
#[path = "nsga2_tests.rs"]
mod tests;
