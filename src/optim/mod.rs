//! Optimizers: ask/tell state machines over the unit cube `[0, 1]^d`. An optimizer never calls
//! an evaluator; the study loop asks it for a batch of points, evaluates them (concurrently,
//! with retries), and tells it the results. Its whole state serializes, so a run can stop after
//! any batch and resume to exactly the trials an uninterrupted run would have produced.
//!
//! Values told are to be **minimized** (the study negates scores where larger is better). A
//! failed trial is told as `None`: optimizers rank it below every successful one.
//!
//! The optimizers, one per file:
//!
//! * [`RandomSearch`]: independent uniform points, the baseline every other optimizer must beat.
//! * [`Sobol`], [`LatinHypercube`], [`Grid`]: space-filling designs that ignore the values told;
//!   they cover the cube evenly for screening, or seed a model-based optimizer.
//! * [`Cmaes`]: CMA-ES with IPOP restarts, the workhorse for continuous merge coefficients: it is
//!   invariant to monotone transformations of the scores (it uses only their ranks) and learns
//!   which coefficients interact.
//! * [`Nsga2`], NSGA-II (SBX crossover, polynomial mutation, non-dominated sorting and crowding)
//!   on every objective told, for the whole Pareto front.
//! * [`Map`], MAP: quadratic surrogates of every objective searched by NSGA-II, proposing from
//!   the predicted front (or, Bayesian variant, where the surrogates are least certain).
//! * [`GaussianProcessBo`], Gaussian-process Bayesian optimization (Matérn-5/2 with ARD, log
//!   expected improvement, Kriging-believer batches), on the scalar score or, ParEGO, on random
//!   scalarizations of the objectives.
//!
//! Multi-objective optimizers read [`Told::objectives`]; the others read [`Told::value`]. So
//! every optimizer runs on every space, and every run keeps its front.
//!
//! [`AnyOptimizer`] wraps them all in one serializable type, and [`by_name`] builds one from the
//! name a run configuration gives.

mod any;
mod cmaes;
mod covariance;
mod design;
mod eigen;
mod exact;
mod gp;
mod joe_kuo;
mod map;
mod nsga2;
mod observation;
mod random;
#[cfg(test)]
mod test_support;

use serde::{Deserialize, Serialize};

pub use any::{AnyOptimizer, GRID_LEVELS, NAMES, by_name};
pub use cmaes::{Cmaes, CmaesOptions, CovarianceModel, StopReason};
pub use design::{Grid, LatinHypercube, Sobol};
pub use gp::{GaussianProcessBo, GpOptions};
pub use map::{Map, MapOptions, MapVariant, RidgeSelection};
pub use nsga2::{InitialDesign, Nsga2, Nsga2Options, minimize_front};
pub use random::RandomSearch;

/// One evaluated point of the last batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Told {
    /// The point as asked (unit cube).
    pub point: Vec<f64>,
    /// The value to minimize (the space's scalarization, turned to be minimized), or `None` when
    /// the trial failed. Single-objective optimizers use only this.
    pub value: Option<f64>,
    /// Every objective of the run, in the run's order, each turned to be minimized (objectives
    /// to maximize are negated), or `None` when the trial failed. Multi-objective optimizers
    /// use these; with one objective it is `[value]` up to the scalarization's weight.
    #[serde(default)]
    pub objectives: Option<Vec<f64>>,
    /// The highest fidelity rung the point was scored at (0 without rungs): the values come
    /// from that rung. A point promoted further was judged better at every rung below, so
    /// rank-based optimizers (CMA-ES) rank higher rungs first.
    #[serde(default)]
    pub rung: usize,
}

impl Told {
    /// A single-objective result: `objectives` is `[value]`.
    pub fn scalar(point: Vec<f64>, value: Option<f64>) -> Told {
        Told {
            point,
            value,
            objectives: value.map(|v| vec![v]),
            rung: 0,
        }
    }
}

/// An ask/tell optimizer over `[0, 1]^d`.
pub trait Optimizer {
    /// The next batch of points, each of the optimizer's dimension with coordinates in `[0, 1]`.
    /// Empty when the optimizer has nothing more to propose (a finished grid).
    fn ask(&mut self) -> Vec<Vec<f64>>;

    /// The results of the last batch, in the order asked. A batch cut short by the budget may
    /// be told in part (only its first points).
    fn tell(&mut self, results: &[Told]);

    /// What the optimizer's model predicts each objective (minimized form, as told) to be at
    /// `point`, for optimizers that propose from a surrogate model; the study records it next
    /// to the measured scores so that surrogates can be checked. `None` for model-free ones.
    fn predict(&self, _point: &[f64]) -> Option<Vec<f64>> {
        None
    }
}

/// An optimizer cannot be built as configured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimError {
    /// The optimizer's name is not one of [`NAMES`].
    #[error("unknown optimizer {name:?} (expected one of: {})", NAMES.join(", "))]
    Unknown {
        /// The name given.
        name: String,
    },
    /// An option is out of its range.
    #[error("optimizer option `{option}` {requirement} (got {got})")]
    Invalid {
        /// The option's name, as in the constructor or options struct.
        option: &'static str,
        /// What the option must satisfy, e.g. "must be positive".
        requirement: String,
        /// The value given, formatted.
        got: String,
    },
}

impl OptimError {
    /// An [`OptimError::Invalid`] for `option`.
    pub(crate) fn invalid(
        option: &'static str,
        requirement: impl Into<String>,
        got: impl std::fmt::Display,
    ) -> OptimError {
        OptimError::Invalid {
            option,
            requirement: requirement.into(),
            got: got.to_string(),
        }
    }
}

/// Checks the two arguments every optimizer takes.
pub(crate) fn check_dim_batch(dim: usize, batch: usize) -> Result<(), OptimError> {
    if dim == 0 {
        return Err(OptimError::invalid("dim", "must be at least 1", dim));
    }
    if batch == 0 {
        return Err(OptimError::invalid("batch", "must be at least 1", batch));
    }
    Ok(())
}
