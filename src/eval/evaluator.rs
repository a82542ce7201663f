//! The [`Evaluator`] trait and what flows through it: a [`Trial`] in, an [`Evaluation`] (named
//! objectives with directions, standard errors and the cost spent) or a [`Failure`] out.

use std::collections::BTreeMap;
use std::fmt;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::handoff::Handoff;
use crate::merge::Candidate;

/// Whether larger or smaller values of an objective are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Larger is better (accuracy).
    Maximize,
    /// Smaller is better (loss, entropy).
    Minimize,
}

impl Direction {
    /// `value` turned so that larger is better.
    pub fn to_maximized(self, value: f64) -> f64 {
        match self {
            Direction::Maximize => value,
            Direction::Minimize => -value,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Maximize => "maximize",
            Direction::Minimize => "minimize",
        })
    }
}

/// A named objective an evaluator reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objective {
    /// Name, unique within a search space.
    pub name: String,
    /// Which way is better.
    pub direction: Direction,
}

impl Objective {
    /// An objective named `name` in `direction`.
    pub fn new(name: impl Into<String>, direction: Direction) -> Objective {
        Objective {
            name: name.into(),
            direction,
        }
    }
}

/// One measured value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The value (NaN where a record holds `null`: see [`TrialRecord::with_finite_values`]).
    ///
    /// [`TrialRecord::with_finite_values`]: crate::record::TrialRecord::with_finite_values
    #[serde(deserialize_with = "crate::record::number_or_nan")]
    pub value: f64,
    /// Its standard error, when the evaluator can estimate one.
    pub stderr: Option<f64>,
}

/// What an evaluation spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Wall-clock seconds, including writing the candidate and retries.
    pub seconds: f64,
    /// Benchmark items scored, when the evaluator counts them.
    pub items: Option<u64>,
    /// Attempts made (1 unless a failure was retried).
    pub attempts: u32,
}

/// A successful evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Every score reported, by name: the declared objectives and any extra ones.
    pub scores: BTreeMap<String, Score>,
    /// What it cost.
    pub cost: Cost,
}

/// A failed evaluation: the trial is recorded as failed with this reason, and the run goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Why, in words, naming the evaluator (and the last attempt's reason after retries).
    pub reason: String,
    /// What the failed attempts cost.
    pub cost: Cost,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The outcome of evaluating one trial.
pub type Outcome = Result<Evaluation, Failure>;

/// What an evaluator is asked to score.
pub struct Trial<'a, B: Backend> {
    /// The trial's id in its run.
    pub id: u64,
    /// The trial's seed: evaluators draw any randomness from it.
    pub seed: u64,
    /// The trial's decoded parameters by name, passed on to external programs.
    pub params: &'a serde_json::Map<String, serde_json::Value>,
    /// The merged model, when the search space has models.
    pub candidate: Option<&'a Candidate<B>>,
    /// The merged model as a directory for external programs, written once per trial when the
    /// first evaluator asks for it (see [`Trial::model_dir`]).
    pub model: Option<&'a Handoff<'a, B>>,
    /// Items per task to score at this trial's fidelity rung (see [`crate::space::Fidelity`]);
    /// `None`: the evaluator's own setting. Only evaluators whose [`Evaluator::takes_items`]
    /// is true are given one.
    pub items: Option<usize>,
}

impl<B: Backend> Trial<'_, B> {
    /// The candidate's model directory, written now unless an evaluator of this trial (or an
    /// earlier attempt) already did; an error when the trial has no candidate to hand over or
    /// it cannot be written.
    pub fn model_dir(&self) -> Result<&std::path::Path, String> {
        self.model
            .ok_or("the evaluator takes the merged model but the trial has none")?
            .model_dir()
    }
}

/// Scores candidates: named objectives out, each with a direction and, where it can be
/// estimated, a standard error.
///
/// An evaluator never panics or returns an error for a bad candidate or a misbehaving program:
/// it returns a [`Failure`] with the reason, and the caller records the trial as failed. Problems
/// with the evaluator's own configuration surface earlier, when it is built.
pub trait Evaluator<B: Backend>: Send {
    /// The evaluator's name (its kind, or the name given in the config).
    fn name(&self) -> &str;

    /// The objectives every successful evaluation reports.
    fn objectives(&self) -> &[Objective];

    /// Whether the evaluator scores the number of items per task that [`Trial::items`] asks
    /// for, so that it can serve a space's fidelity rungs.
    fn takes_items(&self) -> bool {
        false
    }

    /// Whether the evaluator reads the candidate as a model directory ([`Trial::model_dir`]),
    /// so that the run must prepare a place to write candidates.
    fn takes_model(&self) -> bool {
        false
    }

    /// Scores one trial.
    fn evaluate(&mut self, trial: &Trial<'_, B>) -> Outcome;
}
