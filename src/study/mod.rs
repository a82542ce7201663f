//! The study loop: ask the optimizer for a batch, evaluate it (on several workers when asked),
//! record every finished trial at once, tell the optimizer, snapshot its state — until the
//! budget is spent, the optimizer is done, the user stops it (Ctrl-C stops after the trials in
//! flight), or too many trials in a row have failed (`failures.rs`).
//!
//! Resume: the optimizer's state is saved after each complete batch. A resumed run loads it,
//! asks for the same batch again (optimizers are deterministic), takes the trials of that batch
//! that the journal already holds — checking they are the same points — and evaluates only the
//! rest, so it produces exactly the trials an uninterrupted run would have.
//!
//! Faults: the run holds its directory's lock for its whole life (a second process is refused);
//! each worker runs its trials through a [`TrialRunner`], which turns a panic into a failed
//! trial; scratch files live in the run's `scratch/`, emptied at the start and removed at the end
//! (and on a second Ctrl-C, see [`crate::interrupt`]).

mod failures;
mod heldout;
mod process_worker;
mod rungs;
mod runner;
mod scratch;
mod trial;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use burn::prelude::*;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

pub use failures::{DEFAULT_MAX_FAILURES, FailurePolicy, FailureStreak};
pub use process_worker::ProcessWorker;
pub use runner::{
    EvaluatorFactory, RunsTrials, TrialRunner, WorkerSetup, panic_message, quiet_caught_panics,
};
pub use scratch::{SCRATCH_DIR, Scratch, scratch_dir};

use heldout::score_heldout;
pub use heldout::{HELDOUT_FILE, HeldoutScore, read_heldout};
use rungs::add_rung;
pub use rungs::{promoted, top_rung};
use runner::guarded;
pub use trial::{PREDICTED_SCALAR, Scalarizer, TrialAt, run_trial};

use crate::eval::{CandidateWriter, EvalConfigError, EvalContext, Objective, Placement, build_all};
use crate::merge::MergeError;
use crate::optim::{AnyOptimizer, Optimizer, Told};
use crate::record::{
    Journal, RUN_FILE, RecordError, RunInfo, RunLock, Status, TrialRecord, hash_inputs, now,
    read_journal, read_json, update_front, write_json_atomic, write_trials,
};
use crate::space::{Fidelity, Space};

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
    /// One worker per listed GPU, instead of `workers` (default: the space's `budget.gpus`).
    /// Each worker's merger sits on its GPU when the run's device is a GPU (on the CPU
    /// otherwise), and its external programs see only that GPU.
    pub gpus: Option<Vec<usize>>,
    /// Where to write the candidates external evaluators read (default: shared memory when it
    /// has room, else the run directory; see [`scratch_dir`]).
    pub scratch: Option<PathBuf>,
    /// Run each worker's trials in a process of its own started from this argv (a launcher
    /// such as `ssh node{worker}` and then `mergesearch worker SPACE ...`), to which
    /// `--worker I`, `--gpu G` and `--scratch DIR` are appended ({worker} and {gpu} are
    /// replaced); `None`: in this process.
    pub worker_command: Option<Vec<String>>,
}

/// A study failed before or between trials (a trial's own failure is recorded, not raised).
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The run directory or its records (including a directory another process holds).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Loading the base and the experts.
    #[error(transparent)]
    Models(#[from] MergeError),
    /// An evaluator's table cannot be used.
    #[error("{}: {error}", space.display())]
    Evaluators {
        /// The space file.
        space: PathBuf,
        /// What is wrong.
        error: EvalConfigError,
    },
    /// The space's objectives do not match what the evaluators report.
    #[error("{}: `objectives`: {problem}", space.display())]
    Objectives {
        /// The space file.
        space: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The optimizer cannot be built with these settings.
    #[error("optimizer: {0}")]
    Optimizer(String),
    /// The workers cannot be placed as asked.
    #[error("workers: {0}")]
    Workers(String),
    /// The run directory does not hold what was asked: a run where a new one was to start, no
    /// run to resume, or a run whose settings or inputs changed.
    #[error("{0}")]
    RunDir(String),
    /// Too many trials in a row failed; the run stopped and can be resumed.
    #[error(
        "{count} trials in a row failed, so the run stopped (the limit is budget.max_failures); the last:\n{}\nfix the cause, then continue with --resume",
        recent.iter().map(|(id, why)| format!("  trial {id}: {why}")).collect::<Vec<_>>().join("\n")
    )]
    TooManyFailures {
        /// Failed trials in a row.
        count: usize,
        /// The last failures: `(trial id, reason)`.
        recent: Vec<(u64, String)>,
    },
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
    /// The chosen trial's held-out score, when the space has `[[heldout]]` evaluators and the
    /// run finished.
    pub heldout: Option<HeldoutScore>,
}

impl RunSummary {
    /// The successful trial with the highest scalar score (the lowest id on ties).
    pub fn best(&self) -> Option<&TrialRecord> {
        best_trial(&self.trials)
    }
}

/// The first of [`ranked_trials`].
pub fn best_trial(trials: &[TrialRecord]) -> Option<&TrialRecord> {
    ranked_trials(trials).into_iter().next()
}

/// The successful trials, best first: those scored at a higher fidelity rung first (their
/// scores rest on more items, and they won every rung below), then by scalar score, highest
/// first, lower ids first on ties. Without rungs, by scalar score alone.
pub fn ranked_trials(trials: &[TrialRecord]) -> Vec<&TrialRecord> {
    ranked_trials_of(trials.iter())
}

fn ranked_trials_of<'a>(trials: impl Iterator<Item = &'a TrialRecord>) -> Vec<&'a TrialRecord> {
    let mut ok: Vec<&TrialRecord> = trials.filter(|t| t.status == Status::Ok).collect();
    ok.sort_by(|a, b| {
        top_rung(b)
            .cmp(&top_rung(a))
            .then(
                b.scalar
                    .partial_cmp(&a.scalar)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
            .then(a.id.cmp(&b.id))
    });
    ok
}

/// Runs (or resumes) the study of `space` on `device` with the evaluators the space declares.
/// `make_optimizer` builds a fresh optimizer for the space's dimension; `stop` is polled between
/// trials.
pub fn run<B: Backend>(
    space: &Space,
    options: &RunOptions,
    make_optimizer: impl FnOnce() -> Result<AnyOptimizer, String>,
    device: &B::Device,
    progress: &ProgressBar,
    stop: &AtomicBool,
) -> Result<RunSummary, StudyError> {
    let context = EvalContext {
        base: space.models.as_ref().map(|m| m.base.clone()),
        placement: Placement::default(),
        seed: space.seed,
        progress: progress.clone(),
    };
    let build = |placement: &Placement, device: &B::Device| {
        build_all::<B>(&space.evaluators, &context.placed(*placement), device)
    };
    let heldout = |placement: &Placement, device: &B::Device| {
        build_all::<B>(&space.heldout, &context.placed(*placement), device)
    };
    let heldout: &EvaluatorFactory<'_, B> = &heldout;
    run_with(
        space,
        options,
        make_optimizer,
        &build,
        (!space.heldout.is_empty()).then_some(heldout),
        device,
        progress,
        stop,
    )
}

/// [`run`] with the evaluators `build` makes (once per worker, and again after a panic), and
/// the held-out evaluators `heldout` makes (once, for the chosen trial of a finished run, as
/// worker 0). `device` is the merger's device; with GPUs ([`RunOptions::gpus`]) and a GPU
/// backend, each worker gets the device of its own GPU instead.
#[allow(clippy::too_many_arguments)]
pub fn run_with<B: Backend>(
    space: &Space,
    options: &RunOptions,
    make_optimizer: impl FnOnce() -> Result<AnyOptimizer, String>,
    build: &EvaluatorFactory<'_, B>,
    heldout: Option<&EvaluatorFactory<'_, B>>,
    device: &B::Device,
    progress: &ProgressBar,
    stop: &AtomicBool,
) -> Result<RunSummary, StudyError> {
    let started = Instant::now();
    let dir = &options.out;
    let _lock = lock_run_dir(dir, options.resume, progress)?;
    let evaluators = |built: Result<_, EvalConfigError>| {
        built.map_err(|error| StudyError::Evaluators {
            space: space.file.clone(),
            error,
        })
    };
    let placements = placements(space, options)?;
    let devices: Vec<B::Device> = placements
        .iter()
        .map(|p| worker_device::<B>(device, p))
        .collect();
    // One merger per distinct device, shared by the workers on it (worker processes hold
    // their own).
    let mut mergers: Vec<(B::Device, crate::merge::Merger<B>)> = Vec::new();
    if let Some(models) = space
        .models
        .as_ref()
        .filter(|_| options.worker_command.is_none())
    {
        for d in &devices {
            if !mergers.iter().any(|(m, _)| m == d) {
                progress.set_message(format!("loading the base and the experts on {d:?}"));
                mergers.push((d.clone(), models.merger::<B>(d)?));
            }
        }
    }
    let merger_on = |d: &B::Device| mergers.iter().find(|(m, _)| m == d).map(|(_, m)| m);
    let first = evaluators(build(&placements[0], &devices[0]))?;
    if space.fidelity.is_some()
        && let Some(e) = first.iter().find(|e| !e.takes_items())
    {
        return Err(StudyError::Evaluators {
            space: space.file.clone(),
            error: EvalConfigError::new(
                e.name(),
                "(fidelity)",
                "cannot score a chosen number of items, which the space's [fidelity] rungs need (zoo evaluators can; a command needs {items} in its argv)".into(),
            ),
        });
    }
    let scalarizer =
        Scalarizer::new(&space.objectives, &first).map_err(|problem| StudyError::Objectives {
            space: space.file.clone(),
            problem,
        })?;
    let objectives = scalarizer
        .terms
        .iter()
        .map(|(name, direction, _)| Objective::new(name, *direction))
        .collect();
    let info = run_info(space, &options.optimizer, objectives)?;
    let mut info = prepare_dir(dir, options.resume, info)?;
    let (_scratch, writer) = match &space.models {
        Some(models)
            if options.worker_command.is_none() && first.iter().any(|e| e.takes_model()) =>
        {
            let (scratch, writer) = hand_off_place(dir, &models.base, options, placements.len())?;
            progress.println(format!(
                "candidates for external evaluators are written to {}",
                scratch.path().display()
            ));
            (Some(scratch), Some(writer))
        }
        _ => (None, None),
    };
    let setup = |i: usize| WorkerSetup {
        placement: placements[i],
        device: devices[i].clone(),
        merger: merger_on(&devices[i]),
        writer: writer.as_ref(),
    };
    let mut runners: Vec<Box<dyn RunsTrials + '_>> = Vec::new();
    match &options.worker_command {
        Some(command) => {
            drop(first);
            for placement in &placements {
                runners.push(Box::new(worker_process(command, placement, options)));
            }
        }
        None => {
            runners.push(Box::new(TrialRunner::new(
                space,
                setup(0),
                &scalarizer,
                build,
                first,
            )));
            for i in 1..placements.len() {
                let more = evaluators(build(&placements[i], &devices[i]))?;
                runners.push(Box::new(TrialRunner::new(
                    space,
                    setup(i),
                    &scalarizer,
                    build,
                    more,
                )));
            }
        }
    }

    let snapshot_path = dir.join(OPTIMIZER_FILE);
    let mut snapshot = if options.resume && snapshot_path.exists() {
        read_json::<Snapshot>(&snapshot_path)?
    } else {
        Snapshot {
            generation: 0,
            next_id: 0,
            optimizer: make_optimizer().map_err(StudyError::Optimizer)?,
        }
    };
    let mut recorded: BTreeMap<u64, TrialRecord> =
        read_journal(dir)?.into_iter().map(|t| (t.id, t)).collect();
    let mut journal = Journal::open(dir)?;
    let mut streak = FailureStreak::new(FailurePolicy::from_budget(space.budget.max_failures));

    let budget = space.budget.trials;
    // A budget in cost has no trial count to show progress against.
    let cost_budget = space.budget.items.is_some() || space.budget.eval_seconds.is_some();
    progress.set_length(budget.filter(|_| !cost_budget).unwrap_or(0) as u64);
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
        if cost_spent(space, &recorded)? {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let optimizer = &mut snapshot.optimizer;
        let mut points = optimizer_call(&snapshot_path, || optimizer.ask())?;
        if points.is_empty() {
            break;
        }
        if let Some(p) = points.iter().find(|p| p.len() != space.dim()) {
            return Err(damaged(
                &snapshot_path,
                format!(
                    "its optimizer proposes points of {} coordinates, the space has {}",
                    p.len(),
                    space.dim()
                ),
            ));
        }
        if let Some(b) = budget {
            points.truncate(b - done);
        }
        let mut batch: Vec<Pending> = Vec::with_capacity(points.len());
        for (j, point) in points.iter().enumerate() {
            let id = snapshot.next_id + j as u64;
            let done = match recorded.get(&id) {
                Some(t) if t.is_at(point) => Some(t.clone()),
                Some(t) => {
                    return Err(StudyError::RunDir(format!(
                        "cannot resume {}: trial {id} in the journal is at {:?}, but the optimizer now proposes {:?} (was the space or the code changed?)",
                        dir.display(),
                        t.point,
                        point
                    )));
                }
                None => None,
            };
            let optimizer = &snapshot.optimizer;
            let predicted = optimizer_call(&snapshot_path, || optimizer.predict(point))?;
            batch.push(Pending {
                id,
                predicted: predicted.and_then(|p| scalarizer.predicted_scores(&p)),
                point: point.clone(),
                done,
            });
        }
        let rungs = space.fidelity.as_ref().map_or(1, Fidelity::rungs);
        let mut complete = true;
        for rung in 0..rungs {
            let todo = jobs(&batch, space.fidelity.as_ref(), rung);
            let fresh = evaluate_batch(
                &mut runners,
                &todo,
                snapshot.generation,
                &mut Recorder {
                    journal: &mut journal,
                    streak: &mut streak,
                    records: Vec::new(),
                    error: None,
                },
                &recorded,
                progress,
                stop,
            )?;
            complete = fresh.len() == todo.len();
            for record in fresh {
                let at = (record.id - snapshot.next_id) as usize;
                batch[at].done = Some(record.clone());
                recorded.insert(record.id, record);
            }
            if streak.exceeded() {
                let trials = finished(&recorded, snapshot.next_id);
                write_trials(dir, &trials, &info.dimensions)?;
                return Err(StudyError::TooManyFailures {
                    count: streak.length(),
                    recent: streak.recent().cloned().collect(),
                });
            }
            if !complete {
                break;
            }
        }
        let told = batch
            .iter()
            .map(|p| p.done.as_ref().map(|t| told(t, &scalarizer)))
            .collect::<Option<Vec<Told>>>();
        let (true, Some(told)) = (complete, told) else {
            // Stopped mid-batch: the finished trials and rungs are in the journal; a resume
            // re-asks this batch and evaluates the rest.
            interrupted = true;
            break;
        };
        let optimizer = &mut snapshot.optimizer;
        optimizer_call(&snapshot_path, || optimizer.tell(&told))?;
        snapshot.generation += 1;
        snapshot.next_id += points.len() as u64;
        let trials = finished(&recorded, snapshot.next_id);
        write_trials(dir, &trials, &info.dimensions)?;
        update_front(dir, &mut info, &trials, snapshot.generation)?;
        // The batch's commit point, written last: a crash before it redoes the batch's records
        // from the journal, and every file above is rewritten to the same content.
        write_json_atomic(&snapshot_path, &snapshot)?;
    }
    let trials = finished(&recorded, snapshot.next_id);
    write_trials(dir, &trials, &info.dimensions)?;
    drop(runners);
    let heldout = match (heldout, best_trial(&trials)) {
        (Some(build), Some(chosen)) if !interrupted => {
            progress.set_message(format!("scoring trial {} on the held-out data", chosen.id));
            // With worker processes, this process has no merger yet.
            let own = match (&space.models, setup(0).merger) {
                (Some(models), None) => Some(models.merger::<B>(&devices[0])?),
                _ => None,
            };
            let setup = WorkerSetup {
                merger: own.as_ref().or(setup(0).merger),
                ..setup(0)
            };
            Some(score_heldout(space, setup, build, dir, chosen)?)
        }
        _ => None,
    };
    Ok(RunSummary {
        dir: dir.clone(),
        trials,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
        heldout,
    })
}

/// The worker process of `placement`: `command` with `{worker}` and `{gpu}` replaced, and the
/// worker's number, GPU and scratch place appended.
fn worker_process(
    command: &[String],
    placement: &Placement,
    options: &RunOptions,
) -> ProcessWorker {
    let worker = placement.worker.to_string();
    let gpu = placement.gpu.map(|g| g.to_string()).unwrap_or_default();
    let mut argv = crate::eval::substitute(command, &[("worker", &worker), ("gpu", &gpu)]);
    argv.extend(["--worker".to_string(), worker]);
    if placement.gpu.is_some() {
        argv.extend(["--gpu".to_string(), gpu]);
    }
    if let Some(scratch) = &options.scratch {
        argv.extend(["--scratch".to_string(), scratch.display().to_string()]);
    }
    ProcessWorker::new(argv)
}

/// One placement per worker: one per GPU of `options.gpus` (else the space's `budget.gpus`),
/// else `workers` of them on no GPU.
fn placements(space: &Space, options: &RunOptions) -> Result<Vec<Placement>, StudyError> {
    let gpus = options.gpus.as_ref().or(space.budget.gpus.as_ref());
    match gpus {
        Some(gpus) if gpus.is_empty() => Err(StudyError::Workers(
            "--gpus lists no GPU: give their indices, e.g. --gpus 0,1".into(),
        )),
        Some(gpus) => {
            if let Some(w) = options.workers.filter(|&w| w != gpus.len()) {
                return Err(StudyError::Workers(format!(
                    "--workers {w} and {} GPUs: with GPUs, one worker runs per GPU (list a GPU twice to run two workers on it)",
                    gpus.len()
                )));
            }
            Ok(gpus
                .iter()
                .enumerate()
                .map(|(worker, &gpu)| Placement {
                    worker,
                    gpu: Some(gpu),
                })
                .collect())
        }
        None => {
            let workers = options.workers.or(space.budget.workers).unwrap_or(1).max(1);
            Ok((0..workers)
                .map(|worker| Placement { worker, gpu: None })
                .collect())
        }
    }
}

/// The device of the worker at `placement`: its GPU on a GPU backend, else the run's `device`
/// (a CPU backend has one device whatever the index).
fn worker_device<B: Backend>(device: &B::Device, placement: &Placement) -> B::Device {
    use burn::tensor::backend::{Device as _, DeviceId};
    match placement.gpu {
        Some(gpu) => B::Device::from_id(DeviceId::new(device.to_id().type_id, gpu as u16)),
        None => device.clone(),
    }
}

/// The scratch folder (emptied) and the candidate writer of a run whose evaluators read
/// candidates merged from `base`.
fn hand_off_place(
    dir: &Path,
    base: &Path,
    options: &RunOptions,
    workers: usize,
) -> Result<(Scratch, CandidateWriter), StudyError> {
    let unusable = |e: String| StudyError::RunDir(format!("cannot hand candidates over: {e}"));
    let bytes = CandidateWriter::candidate_bytes(base).map_err(unusable)?;
    let scratch = Scratch::fresh(&scratch_dir(
        dir,
        options.scratch.as_deref(),
        bytes,
        workers,
    ))?;
    let writer = CandidateWriter::new(base, scratch.path()).map_err(unusable)?;
    Ok((scratch, writer))
}

/// Runs one call into the optimizer: a panic there (an edited `optimizer.json`, a bug) ends the
/// run with an error naming the snapshot, everything recorded kept, instead of ending the
/// process.
fn optimizer_call<T>(snapshot: &Path, call: impl FnOnce() -> T) -> Result<T, StudyError> {
    guarded(call).map_err(|message| damaged(snapshot, format!("its optimizer panicked: {message}")))
}

/// The optimizer snapshot at `path` cannot be used, for `reason`.
fn damaged(path: &Path, reason: String) -> StudyError {
    StudyError::Record(RecordError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("{reason} (restore the file, or start a new run with another --out)"),
    })
}

/// A trial of the current batch: its id, point and prediction, and its record once finished.
struct Pending {
    id: u64,
    point: Vec<f64>,
    predicted: Option<BTreeMap<String, f64>>,
    done: Option<TrialRecord>,
}

/// What the optimizer is told of a finished trial.
fn told(t: &TrialRecord, scalarizer: &Scalarizer) -> Told {
    Told {
        point: t.point.clone(),
        value: t.scalar.map(|s| -s),
        objectives: t.scalar.and_then(|_| scalarizer.minimized(&t.scores)),
        rung: top_rung(t),
    }
}

/// One evaluation of a batch: a trial, and the items per task of the fidelity rung it is
/// scored at (`None` without rungs).
struct Job<'a> {
    pending: &'a Pending,
    items: Option<usize>,
}

/// The evaluations that rung `rung` of the batch still needs: without rungs, the trials not
/// recorded yet; at rung 0, the same; above, the trials promoted from the rung below that have
/// not reached this one. Above rung 0 every trial of the batch must be recorded (it is, unless
/// the batch was stopped, and then nothing more runs).
fn jobs<'a>(batch: &'a [Pending], fidelity: Option<&Fidelity>, rung: usize) -> Vec<Job<'a>> {
    let items = fidelity.map(|f| f.items[rung]);
    let fidelity = match fidelity {
        Some(fidelity) if rung > 0 => fidelity,
        _ => {
            return batch
                .iter()
                .filter(|p| p.done.is_none())
                .map(|pending| Job { pending, items })
                .collect();
        }
    };
    let Some(records) = batch
        .iter()
        .map(|p| p.done.as_ref())
        .collect::<Option<Vec<&TrialRecord>>>()
    else {
        return Vec::new();
    };
    let promoted = promoted(fidelity, &records, rung - 1);
    batch
        .iter()
        .zip(&records)
        .filter(|(_, t)| promoted.contains(&t.id) && t.rungs.len() <= rung)
        .map(|(pending, _)| Job { pending, items })
        .collect()
}

/// Whether the space's cost budget (items scored, evaluator seconds) is spent by the `recorded`
/// trials; a budget in items with a trial whose evaluators did not count them is an error.
fn cost_spent(space: &Space, recorded: &BTreeMap<u64, TrialRecord>) -> Result<bool, StudyError> {
    if let Some(limit) = space.budget.items {
        let mut spent = 0;
        for t in recorded.values() {
            match t.items {
                Some(items) => spent += items,
                None if t.status == Status::Failed => {}
                None => {
                    return Err(StudyError::RunDir(format!(
                        "{}: budget.items counts items scored, but trial {} has no count: one of its evaluators does not report the items it scored (use budget.trials or budget.eval_seconds)",
                        space.file.display(),
                        t.id
                    )));
                }
            }
        }
        if spent >= limit {
            return Ok(true);
        }
    }
    let seconds: f64 = recorded.values().map(|t| t.eval_seconds).sum();
    Ok(space
        .budget
        .eval_seconds
        .is_some_and(|limit| seconds >= limit))
}

/// The recorded trials of complete batches (ids below `next_id`), by id.
fn finished(recorded: &BTreeMap<u64, TrialRecord>, next_id: u64) -> Vec<TrialRecord> {
    recorded
        .values()
        .filter(|t| t.id < next_id)
        .cloned()
        .collect()
}

/// Where workers hand their finished trials: the journal, and the failure streak.
struct Recorder<'a> {
    journal: &'a mut Journal,
    streak: &'a mut FailureStreak,
    records: Vec<TrialRecord>,
    /// The first journal error (the batch stops starting trials after it).
    error: Option<RecordError>,
}

/// Evaluates the batch's trials that are not recorded yet, one worker per runner, appending each
/// to the journal as soon as it finishes. No worker starts another trial once `stop` is set, the
/// journal failed, or the failure streak reached its limit.
fn evaluate_batch(
    runners: &mut [Box<dyn RunsTrials + '_>],
    todo: &[Job<'_>],
    generation: u64,
    recorder: &mut Recorder<'_>,
    recorded: &BTreeMap<u64, TrialRecord>,
    progress: &ProgressBar,
    stop: &AtomicBool,
) -> Result<Vec<TrialRecord>, StudyError> {
    let next = AtomicUsize::new(0);
    let halt = AtomicBool::new(false);
    let shared = Mutex::new(recorder);
    let show = |records: &[TrialRecord]| {
        // A trial scored at a higher rung is in `records` again: its latest record counts.
        let mut latest: BTreeMap<u64, &TrialRecord> =
            recorded.iter().map(|(&id, t)| (id, t)).collect();
        latest.extend(records.iter().map(|t| (t.id, t)));
        let failed = latest
            .values()
            .filter(|t| t.status == Status::Failed)
            .count();
        let best = ranked_trials_of(latest.values().copied())
            .first()
            .and_then(|t| t.scalar)
            .unwrap_or(f64::NEG_INFINITY);
        progress.set_position(latest.len() as u64);
        progress.set_message(format!("best {best:.4}, {failed} failed"));
    };
    std::thread::scope(|scope| {
        for runner in runners.iter_mut() {
            let (next, todo, shared, halt, show) = (&next, &todo, &shared, &halt, &show);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) && !halt.load(Ordering::SeqCst) {
                    let Some(job) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        break;
                    };
                    let pending = job.pending;
                    let mut record = runner.run(TrialAt {
                        id: pending.id,
                        generation,
                        point: &pending.point,
                        items: job.items,
                    });
                    record.predicted = pending.predicted.clone();
                    let mut record = record.with_finite_values();
                    if let Some(items) = job.items {
                        record = add_rung(pending.done.as_ref(), record, items);
                    }
                    let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
                    let recorder = &mut **guard;
                    if recorder.error.is_some() {
                        break;
                    }
                    if let Err(e) = recorder.journal.append(&record) {
                        recorder.error = Some(e);
                        halt.store(true, Ordering::SeqCst);
                        break;
                    }
                    if recorder.streak.observe(&record) {
                        halt.store(true, Ordering::SeqCst);
                    }
                    recorder.records.push(record);
                    show(&recorder.records);
                }
            });
        }
    });
    let recorder = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    match recorder.error.take() {
        Some(e) => Err(e.into()),
        None => Ok(std::mem::take(&mut recorder.records)),
    }
}

/// A locked run directory; dropped, it releases the lock and, when it created the directory and
/// no run was written there (the run was refused before it began), removes it again.
pub(crate) struct LockedRunDir {
    lock: Option<RunLock>,
    dir: PathBuf,
    created: bool,
}

impl Drop for LockedRunDir {
    fn drop(&mut self) {
        drop(self.lock.take());
        if self.created && !self.dir.join(RUN_FILE).exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Locks the run directory `dir` (creating it) for as long as the returned guard lives. A lock
/// that a killed process left is taken over, with a note on `progress`; a resume of a directory
/// that holds no run is refused before anything is created.
pub(crate) fn lock_run_dir(
    dir: &Path,
    resume: bool,
    progress: &ProgressBar,
) -> Result<LockedRunDir, StudyError> {
    if resume && !dir.join(RUN_FILE).exists() {
        return Err(StudyError::RunDir(format!(
            "{} holds no run to resume (no {RUN_FILE})",
            dir.display()
        )));
    }
    let created = !dir.exists();
    let lock = RunLock::acquire(dir)?;
    if let Some(holder) = lock.stale() {
        progress.suspend(|| {
            eprintln!(
                "note: {} was left locked by {}, which ended without releasing it; taking it over",
                dir.display(),
                holder.describe()
            )
        });
    }
    let locked = LockedRunDir {
        lock: Some(lock),
        dir: dir.to_path_buf(),
        created,
    };
    remove_staging_files(dir)?;
    Ok(locked)
}

/// Removes the staging files of atomic writes that a killed process left in `dir` (the lock
/// holder's to clean: nobody else writes there).
fn remove_staging_files(dir: &Path) -> Result<(), RecordError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RecordError::io(dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "partial") {
            std::fs::remove_file(&path).map_err(|e| RecordError::io(&path, e))?;
        }
    }
    Ok(())
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
        streams: crate::rng::STREAMS.to_string(),
        inputs: hash_inputs(&inputs)?,
        created: now(),
    })
}

/// Creates the run directory's `run.json`, or checks that a resumed one matches; returns the
/// run description in force (a resumed run keeps its own, with its reference point). The caller
/// holds the directory's lock.
pub(crate) fn prepare_dir(dir: &Path, resume: bool, info: RunInfo) -> Result<RunInfo, StudyError> {
    let path = dir.join(RUN_FILE);
    if !resume {
        if path.exists() {
            return Err(StudyError::RunDir(format!(
                "{} already holds a run: continue it with --resume, or choose another --out",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| RecordError::io(dir, e))?;
        write_json_atomic(&path, &info)?;
        return Ok(info);
    }
    if !path.exists() {
        return Err(StudyError::RunDir(format!(
            "{} holds no run to resume (no {RUN_FILE})",
            dir.display()
        )));
    }
    let old: RunInfo = read_json(&path)?;
    let differs = |what: &str, a: String, b: String| {
        StudyError::RunDir(format!(
            "cannot resume {}: the {what} changed ({a} then, {b} now); start a new run with another --out",
            dir.display()
        ))
    };
    if old.streams != info.streams {
        let then = if old.streams.is_empty() {
            format!("mergesearch {}'s own generator", old.version)
        } else {
            old.streams.clone()
        };
        return Err(differs("random streams", then, info.streams.clone()));
    }
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
    // The budget may grow and the held-out evaluators change: neither changes a trial.
    let without_budget = |space: &serde_json::Value| {
        let mut space = space.clone();
        if let Some(table) = space.as_object_mut() {
            table.remove("budget");
            table.remove("heldout");
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
