//! The run's Pareto front over the space's objectives, kept up to date after every batch:
//! `front.parquet` (the non-dominated successful trials, same columns as `trials.parquet`) and
//! `hypervolume.jsonl` (one line per batch: the front's hypervolume against the run's reference
//! point, recorded in `run.json` after the first batch; see [`crate::pareto`] for its rule).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
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
    // Rewritten whole (it is small) so that a batch recorded again after a crash replaces its
    // line instead of repeating it.
    let mut history: Vec<HypervolumePoint> = read_history(&path)?
        .into_iter()
        .filter(|h| h.generation < generation)
        .collect();
    history.push(line);
    let mut text = String::new();
    for h in &history {
        text.push_str(&serde_json::to_string(h).map_err(|e| RecordError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?);
        text.push('\n');
    }
    write_atomic(&path, |file| {
        file.write_all(text.as_bytes())
            .map_err(|e| RecordError::io(&path, e))
    })
}

/// The hypervolume history in `path` (empty when there is none); unreadable lines are skipped.
pub fn read_history(path: &Path) -> Result<Vec<HypervolumePoint>, RecordError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(RecordError::io(path, e)),
    }
}
