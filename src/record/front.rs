//! The run's Pareto front over the space's objectives, kept up to date after every batch:
//! `front.parquet` (the non-dominated successful trials, same columns as `trials.parquet`) and
//! `hypervolume.jsonl` (one line per batch: the front's hypervolume against the run's reference
//! point, recorded in `run.json` after the first batch; see [`crate::pareto`] for its rule).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::trial::{Status, TrialRecord};
use super::write_table;
use super::{RecordError, RunInfo};
use crate::eval::Objective;
use crate::pareto::{front_indices, hypervolume, maximized, reference_point};

/// The front table of a run directory.
pub const FRONT_FILE: &str = "front.parquet";
/// The hypervolume history of a run directory.
pub const HYPERVOLUME_FILE: &str = "hypervolume.jsonl";

/// One line of the hypervolume history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HypervolumePoint {
    /// Batches completed.
    pub generation: u64,
    /// Trials recorded so far.
    pub trials: usize,
    /// Trials on the front.
    pub front_size: usize,
    /// The front's hypervolume (objectives maximized) against the run's reference point.
    pub hypervolume: f64,
}

/// The successful trials that report every objective, and their objective vectors in
/// maximized form.
pub fn objective_points<'a>(
    trials: &'a [TrialRecord],
    objectives: &[Objective],
) -> (Vec<&'a TrialRecord>, Vec<Vec<f64>>) {
    let scored: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| {
            t.status == Status::Ok
                && objectives
                    .iter()
                    .all(|o| t.scores.get(&o.name).is_some_and(|s| s.value.is_finite()))
        })
        .collect();
    let values: Vec<Vec<f64>> = scored
        .iter()
        .map(|t| objectives.iter().map(|o| t.scores[&o.name].value).collect())
        .collect();
    let directions: Vec<_> = objectives.iter().map(|o| o.direction).collect();
    let points = maximized(&values, &directions).unwrap_or_default();
    (scored, points)
}

/// The trials on the front of `trials` (by id), with their maximized points.
pub fn front<'a>(
    trials: &'a [TrialRecord],
    objectives: &[Objective],
) -> (Vec<&'a TrialRecord>, Vec<Vec<f64>>) {
    let (scored, points) = objective_points(trials, objectives);
    let on_front = front_indices(&points).unwrap_or_default();
    (
        on_front.iter().map(|&i| scored[i]).collect(),
        on_front.iter().map(|&i| points[i].clone()).collect(),
    )
}

/// Rewrites `front.parquet`, fixes the reference point in `info` (and `run.json`) on first use,
/// and appends the batch's hypervolume.
pub fn update_front(
    dir: &Path,
    info: &mut RunInfo,
    trials: &[TrialRecord],
    generation: u64,
) -> Result<(), RecordError> {
    if info.reference.is_none() {
        let (_, points) = objective_points(trials, &info.objectives);
        if points.is_empty() {
            return Ok(());
        }
        info.reference = reference_point(&points).ok();
        super::write_json_atomic(&dir.join(super::RUN_FILE), info)?;
    }
    let (on_front, front_points) = front(trials, &info.objectives);
    if on_front.is_empty() {
        return Ok(());
    }
    let front_trials: Vec<TrialRecord> = on_front.iter().map(|&t| t.clone()).collect();
    write_table(&dir.join(FRONT_FILE), &front_trials, &info.dimensions)?;
    let reference = info.reference.as_deref().unwrap_or_default();
    let volume = hypervolume(&front_points, reference).unwrap_or(0.0);
    let line = HypervolumePoint {
        generation,
        trials: trials.len(),
        front_size: on_front.len(),
        hypervolume: volume,
    };
    let path = dir.join(HYPERVOLUME_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| RecordError::io(&path, e))?;
    writeln!(
        file,
        "{}",
        serde_json::to_string(&line).expect("history serializes")
    )
    .map_err(|e| RecordError::io(&path, e))
}
