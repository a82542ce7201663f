//! The held-out score of a run's chosen merge: once the search is over, the best trial (see
//! [`super::ranked_trials`]) is scored by the space's `[[heldout]]` evaluators, on data the
//! search never saw, and recorded in `heldout.json`. Nothing reads it back into the run: the
//! optimizer was told only the search evaluators' scores, and the choice was made before.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::StudyError;
use super::runner::{EvaluatorFactory, TrialRunner, WorkerSetup};
use super::trial::{Scalarizer, TrialAt};
use crate::eval::Score;
use crate::record::{Status, TrialRecord, read_json, write_json_atomic};
use crate::space::Space;

/// The held-out score file of a run directory.
pub const HELDOUT_FILE: &str = "heldout.json";

/// The chosen trial's held-out scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldoutScore {
    /// The chosen trial.
    pub trial: u64,
    /// Its point.
    pub point: Vec<f64>,
    /// Its scalar score in the search (at its highest fidelity rung).
    pub search_scalar: Option<f64>,
    /// The held-out evaluators' scores.
    pub scores: BTreeMap<String, Score>,
    /// Their weighted scalar score, as the search's is made.
    pub scalar: Option<f64>,
    /// Why the held-out scoring failed, if it did.
    pub error: Option<String>,
    /// Seconds it took.
    pub seconds: f64,
}

/// The held-out score recorded in `dir`, if any.
pub fn read_heldout(dir: &Path) -> Result<Option<HeldoutScore>, StudyError> {
    let path = dir.join(HELDOUT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(read_json(&path)?))
}

/// Scores `chosen` on the worker `setup` with the held-out evaluators `build` makes and records
/// it in `dir`, unless
/// `dir` already holds its successful score (a finished run resumed with nothing left to do;
/// a failed held-out scoring is tried again).
pub(crate) fn score_heldout<B: Backend>(
    space: &Space,
    setup: WorkerSetup<'_, B>,
    build: &EvaluatorFactory<'_, B>,
    dir: &Path,
    chosen: &TrialRecord,
) -> Result<HeldoutScore, StudyError> {
    if let Some(done) = read_heldout(dir)?.filter(|h| h.trial == chosen.id && h.error.is_none()) {
        return Ok(done);
    }
    let fail = |problem: String| StudyError::Objectives {
        space: space.file.clone(),
        problem: format!("[[heldout]]: {problem}"),
    };
    let evaluators =
        build(&setup.placement, &setup.device).map_err(|error| StudyError::Evaluators {
            space: space.file.clone(),
            error,
        })?;
    let scalarizer = Scalarizer::new(&space.objectives, &evaluators).map_err(fail)?;
    let mut runner = TrialRunner::new(space, setup, &scalarizer, build, evaluators);
    let record = runner.run(TrialAt {
        id: chosen.id,
        generation: chosen.generation,
        point: &chosen.point,
        items: None,
    });
    let heldout = HeldoutScore {
        trial: chosen.id,
        point: chosen.point.clone(),
        search_scalar: chosen.scalar,
        scalar: record.scalar.filter(|_| record.status == Status::Ok),
        scores: record.scores,
        error: record.error,
        seconds: record.merge_seconds + record.eval_seconds,
    };
    write_json_atomic(&dir.join(HELDOUT_FILE), &heldout)?;
    Ok(heldout)
}
