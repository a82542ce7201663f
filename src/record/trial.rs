//! One trial as recorded: what was asked, what it decoded to, what it scored and what it cost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::eval::Score;

/// Whether a trial produced scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every evaluator reported every objective.
    Ok,
    /// An evaluator failed; `error` says why.
    Failed,
}

/// A finished trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Trial id, from 0, in the order the optimizer proposed them.
    pub id: u64,
    /// The batch (for CMA-ES, the generation) it belongs to.
    pub generation: u64,
    /// Ok or failed.
    pub status: Status,
    /// The point in the unit cube.
    pub point: Vec<f64>,
    /// The decoded parameters by name.
    pub params: Map<String, Value>,
    /// Every score reported, by objective name.
    pub scores: BTreeMap<String, Score>,
    /// The weighted scalar score (larger is better), for successful trials.
    pub scalar: Option<f64>,
    /// Seconds spent materializing the merge.
    pub merge_seconds: f64,
    /// Seconds spent in evaluators.
    pub eval_seconds: f64,
    /// Start, in seconds since the Unix epoch.
    pub started: f64,
    /// End, in seconds since the Unix epoch.
    pub finished: f64,
    /// Why the trial failed.
    pub error: Option<String>,
    /// What the optimizer's surrogate predicted for each objective (in the objective's own
    /// units and direction) when it proposed this point, or for the scalar score (`scalar`)
    /// from optimizers of the scalar alone; absent for model-free optimizers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<BTreeMap<String, f64>>,
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
