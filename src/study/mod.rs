//! The study loop: ask the optimizer for a batch, evaluate it (on several workers when asked),
//! record every finished trial at once, tell the optimizer, snapshot its state — until the
//! budget is spent, the optimizer is done, or the user stops it (Ctrl-C stops after the trials
//! in flight).
//!
//! Resume: the optimizer's state is saved after each complete batch. A resumed run loads it,
//! asks for the same batch again (optimizers are deterministic), takes the trials of that batch
//! that the journal already holds — checking they are the same points — and evaluates only the
//! rest, so it produces exactly the trials an uninterrupted run would have.

mod trial;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use burn::prelude::*;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

pub use trial::{PREDICTED_SCALAR, Scalarizer, run_trial};

use crate::eval::{EvalContext, Evaluator, Objective, build_all};
use crate::merge::Merger;
use crate::optim::{AnyOptimizer, Optimizer, Told};
use crate::record::{
    Journal, RUN_FILE, RecordError, RunInfo, Status, TrialRecord, hash_inputs, now, read_journal,
    read_json, update_front, write_json_atomic, write_trials,
};
use crate::space::Space;

/// The optimizer snapshot file of a run directory.
pub const OPTIMIZER_FILE: &str = "optimizer.json";

/// How to run a study.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The optimizer's name.
    pub optimizer: String,
    /// The run directory.
    pub out: PathBuf,
    /// Continue the run in `out` instead of starting one.
    pub resume: bool,
    /// Trials evaluated at once (default: the space's, else 1).
    pub workers: Option<usize>,
}

/// A study failed before or between trials (a trial's own failure is recorded, not raised).
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The run directory or its records.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The set-up: models, evaluators, optimizer, or a resume that does not match.
    #[error("{0}")]
    Setup(String),
}

/// The optimizer's state after a complete batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    /// Batches completed.
    generation: u64,
    /// The next trial's id.
    next_id: u64,
    /// The optimizer.
    optimizer: AnyOptimizer,
}

/// What a study left.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run directory.
    pub dir: PathBuf,
    /// Every trial, by id.
    pub trials: Vec<TrialRecord>,
    /// Whether the user stopped it before the budget was spent.
    pub interrupted: bool,
    /// Wall time of this invocation.
    pub seconds: f64,
}

impl RunSummary {
    /// The successful trial with the highest scalar score (the lowest id on ties).
    pub fn best(&self) -> Option<&TrialRecord> {
        best_trial(&self.trials)
    }
}

/// The successful trial with the highest scalar score (the lowest id on ties).
pub fn best_trial(trials: &[TrialRecord]) -> Option<&TrialRecord> {
    trials
        .iter()
        .filter(|t| t.status == Status::Ok)
        .fold(None, |best: Option<&TrialRecord>, t| match best {
            Some(b) if b.scalar >= t.scalar => Some(b),
            _ => Some(t),
        })
}

/// Runs (or resumes) the study of `space` on `device`. `make_optimizer` builds a fresh optimizer
/// for the space's dimension; `stop` is polled between batches.
pub fn run<B: Backend>(
    space: &Space,
    options: &RunOptions,
    make_optimizer: impl FnOnce() -> Result<AnyOptimizer, String>,
    device: &B::Device,
    progress: &ProgressBar,
    stop: &AtomicBool,
) -> Result<RunSummary, StudyError> {
    let started = Instant::now();
    let dir = &options.out;
    let setup = StudyError::Setup;

    let merger = match &space.models {
        None => None,
        Some(models) => {
            progress.set_message("loading the base and the experts");
            Some(
                models
                    .merger::<B>(device)
                    .map_err(|e| setup(e.to_string()))?,
            )
        }
    };
    let workers = options.workers.or(space.budget.workers).unwrap_or(1).max(1);
    let context = EvalContext {
        base: space.models.as_ref().map(|m| m.base.clone()),
        scratch: dir.join("scratch"),
        seed: space.seed,
        progress: progress.clone(),
    };
    let mut evaluator_sets: Vec<Vec<Box<dyn Evaluator<B>>>> = (0..workers)
        .map(|_| build_all::<B>(&space.evaluators, &context, device))
        .collect::<Result<_, _>>()
        .map_err(|e| setup(format!("{}: {e}", space.file.display())))?;
    let scalarizer = Scalarizer::new(&space.objectives, &evaluator_sets[0])
        .map_err(|e| setup(format!("{}: `objectives`: {e}", space.file.display())))?;
    let objectives = scalarizer
        .terms
        .iter()
        .map(|(name, direction, _)| Objective::new(name, *direction))
        .collect();
    let mut info = prepare_dir(
        dir,
        options.resume,
        run_info(space, &options.optimizer, objectives)?,
    )?;
    std::fs::create_dir_all(&context.scratch).map_err(|e| RecordError::io(&context.scratch, e))?;

    let snapshot_path = dir.join(OPTIMIZER_FILE);
    let mut snapshot = if options.resume && snapshot_path.exists() {
        read_json::<Snapshot>(&snapshot_path)?
    } else {
        Snapshot {
            generation: 0,
            next_id: 0,
            optimizer: make_optimizer().map_err(setup)?,
        }
    };
    let journal_trials = read_journal(dir)?;
    let mut recorded: BTreeMap<u64, TrialRecord> =
        journal_trials.into_iter().map(|t| (t.id, t)).collect();
    let mut journal = Journal::open(dir)?;

    let budget = space.budget.trials;
    progress.set_length(budget.unwrap_or(0) as u64);
    let mut interrupted = false;
    loop {
        let done = snapshot.next_id as usize;
        if budget.is_some_and(|b| done >= b) {
            break;
        }
        if space
            .budget
            .seconds
            .is_some_and(|s| started.elapsed().as_secs_f64() >= s)
        {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let mut points = snapshot.optimizer.ask();
        if points.is_empty() {
            break;
        }
        if let Some(b) = budget {
            points.truncate(b - done);
        }
        let ids: Vec<u64> = (0..points.len() as u64)
            .map(|j| snapshot.next_id + j)
            .collect();
        let mut batch: Vec<Option<TrialRecord>> = Vec::with_capacity(points.len());
        for (id, point) in ids.iter().zip(&points) {
            match recorded.get(id) {
                Some(t) if t.point == *point => batch.push(Some(t.clone())),
                Some(t) => {
                    return Err(setup(format!(
                        "cannot resume: trial {id} in the journal is at {:?}, but the optimizer now proposes {:?} (was the space or the code changed?)",
                        t.point, point
                    )));
                }
                None => batch.push(None),
            }
        }
        let generation = snapshot.generation;
        let predictions: Vec<_> = points
            .iter()
            .map(|p| scalarizer.predicted_scores(&snapshot.optimizer.predict(p)?))
            .collect();
        let fresh = evaluate_batch(
            space,
            merger.as_ref(),
            &mut evaluator_sets.iter_mut().collect::<Vec<_>>(),
            &scalarizer,
            &ids,
            &points,
            &predictions,
            &batch,
            generation,
            &mut journal,
            progress,
            &recorded,
            stop,
        )?;
        for record in fresh {
            batch[(record.id - snapshot.next_id) as usize] = Some(record.clone());
            recorded.insert(record.id, record);
        }
        if batch.iter().any(Option::is_none) {
            // Stopped mid-batch: the finished trials are in the journal; a resume re-asks this
            // batch and evaluates the rest.
            interrupted = true;
            break;
        }
        let told: Vec<Told> = batch
            .iter()
            .map(|t| {
                let t = t.as_ref().expect("every trial of the batch is done");
                Told {
                    point: t.point.clone(),
                    value: t.scalar.map(|s| -s),
                    objectives: t.scalar.and_then(|_| scalarizer.minimized(&t.scores)),
                }
            })
            .collect();
        snapshot.optimizer.tell(&told);
        snapshot.generation += 1;
        snapshot.next_id += points.len() as u64;
        write_json_atomic(&snapshot_path, &snapshot)?;
        let trials: Vec<TrialRecord> = recorded
            .values()
            .filter(|t| t.id < snapshot.next_id)
            .cloned()
            .collect();
        write_trials(dir, &trials, &info.dimensions)?;
        update_front(dir, &mut info, &trials, snapshot.generation)?;
    }
    let trials: Vec<TrialRecord> = recorded
        .into_values()
        .filter(|t| t.id < snapshot.next_id)
        .collect();
    write_trials(dir, &trials, &info.dimensions)?;
    let _ = std::fs::remove_dir_all(&context.scratch);
    Ok(RunSummary {
        dir: dir.clone(),
        trials,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Evaluates the batch's trials that are not recorded yet, `workers` at a time, appending each
/// to the journal as soon as it finishes. Once `stop` is set, no worker starts another trial.
#[allow(clippy::too_many_arguments)]
fn evaluate_batch<B: Backend>(
    space: &Space,
    merger: Option<&Merger<B>>,
    evaluator_sets: &mut [&mut Vec<Box<dyn Evaluator<B>>>],
    scalarizer: &Scalarizer,
    ids: &[u64],
    points: &[Vec<f64>],
    predictions: &[Option<BTreeMap<String, f64>>],
    batch: &[Option<TrialRecord>],
    generation: u64,
    journal: &mut Journal,
    progress: &ProgressBar,
    recorded: &BTreeMap<u64, TrialRecord>,
    stop: &AtomicBool,
) -> Result<Vec<TrialRecord>, StudyError> {
    let todo: Vec<usize> = (0..points.len()).filter(|&j| batch[j].is_none()).collect();
    let next = AtomicUsize::new(0);
    let finished = Mutex::new((Vec::new(), None::<RecordError>, journal));
    let show = |records: &[TrialRecord]| {
        let all = recorded.values().chain(records.iter());
        let failed = all.clone().filter(|t| t.status == Status::Failed).count();
        let best = all
            .filter_map(|t| t.scalar)
            .fold(f64::NEG_INFINITY, f64::max);
        progress.set_position((recorded.len() + records.len()) as u64);
        progress.set_message(format!("best {best:.4}, {failed} failed"));
    };
    std::thread::scope(|scope| {
        for evaluators in evaluator_sets.iter_mut() {
            let (next, todo, finished) = (&next, &todo, &finished);
            let show = &show;
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&j) = todo.get(k) else { break };
                    let mut record = run_trial(
                        space, merger, evaluators, scalarizer, ids[j], generation, &points[j],
                    );
                    record.predicted = predictions[j].clone();
                    let mut guard = finished.lock().expect("results lock");
                    if guard.1.is_none()
                        && let Err(e) = guard.2.append(&record)
                    {
                        guard.1 = Some(e);
                    }
                    guard.0.push(record);
                    show(&guard.0);
                }
            });
        }
    });
    let (records, error, _) = finished.into_inner().expect("results lock");
    match error {
        Some(e) => Err(e.into()),
        None => Ok(records),
    }
}

/// The run description for `space`.
pub(crate) fn run_info(
    space: &Space,
    optimizer: &str,
    objectives: Vec<Objective>,
) -> Result<RunInfo, StudyError> {
    let mut inputs = vec![space.file.clone()];
    if let Some(models) = &space.models {
        inputs.push(models.base.clone());
        inputs.extend(models.experts.iter().cloned());
    }
    Ok(RunInfo {
        space_file: space.file.clone(),
        space: serde_json::to_value(&space.resolved).unwrap_or_default(),
        seed: space.seed,
        optimizer: optimizer.to_string(),
        budget_trials: space.budget.trials,
        dimensions: space.dimensions.iter().map(|d| d.name.clone()).collect(),
        objectives,
        reference: None,
        version: env!("CARGO_PKG_VERSION").to_string(),
        inputs: hash_inputs(&inputs)?,
        created: now(),
    })
}

/// Creates the run directory with its `run.json`, or checks that a resumed one matches; returns
/// the run description in force (a resumed run keeps its own, with its reference point).
pub(crate) fn prepare_dir(dir: &Path, resume: bool, info: RunInfo) -> Result<RunInfo, StudyError> {
    let path = dir.join(RUN_FILE);
    if !resume {
        if path.exists() {
            return Err(StudyError::Setup(format!(
                "{} already holds a run: continue it with --resume, or choose another --out",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| RecordError::io(dir, e))?;
        write_json_atomic(&path, &info)?;
        return Ok(info);
    }
    if !path.exists() {
        return Err(StudyError::Setup(format!(
            "{} holds no run to resume (no {RUN_FILE})",
            dir.display()
        )));
    }
    let old: RunInfo = read_json(&path)?;
    let differs = |what: &str, a: String, b: String| {
        StudyError::Setup(format!(
            "cannot resume {}: the {what} changed ({a} then, {b} now); start a new run with another --out",
            dir.display()
        ))
    };
    if old.optimizer != info.optimizer {
        return Err(differs("optimizer", old.optimizer, info.optimizer.clone()));
    }
    if old.seed != info.seed {
        return Err(differs("seed", old.seed.to_string(), info.seed.to_string()));
    }
    if old.dimensions != info.dimensions {
        return Err(differs(
            "dimensions",
            old.dimensions.len().to_string(),
            info.dimensions.len().to_string(),
        ));
    }
    let without_budget = |space: &serde_json::Value| {
        let mut space = space.clone();
        if let Some(table) = space.as_object_mut() {
            table.remove("budget");
        }
        space
    };
    if without_budget(&old.space) != without_budget(&info.space) {
        return Err(differs(
            "resolved space",
            "one config".into(),
            "another".into(),
        ));
    }
    for (file, hash) in &old.inputs {
        match info.inputs.get(file) {
            Some(h) if h == hash => {}
            other => {
                return Err(differs(
                    &format!("input {file}"),
                    hash.clone(),
                    other.cloned().unwrap_or_else(|| "missing".into()),
                ));
            }
        }
    }
    Ok(RunInfo {
        objectives: if old.objectives.is_empty() {
            info.objectives
        } else {
            old.objectives.clone()
        },
        ..old
    })
}
