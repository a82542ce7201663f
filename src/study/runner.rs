//! One worker's trials under a panic guard. The [`Evaluator`] contract says failures are
//! values, but a panic can still come from below (a backend out of device memory, a bug): the
//! guard turns it into a failed trial carrying the panic's message, drops the worker's
//! evaluators (their state may be half-updated) and builds fresh ones for the next trial, so the
//! run goes on.
//!
//! The runner is what a worker does with a point, wherever the worker lives: the study's worker
//! threads own one each, and a remote worker process can own one the same way.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::prelude::*;

use super::trial::{Scalarizer, TrialAt, failed_trial, run_trial};
use crate::eval::{CandidateWriter, EvalConfigError, Evaluator, Placement};
use crate::failpoint;
use crate::merge::Merger;
use crate::record::{TrialRecord, now};
use crate::space::Space;

/// Builds the evaluators of the worker at a placement, on its device: at the start, and again
/// after a panic.
pub type EvaluatorFactory<'a, B> = dyn Fn(&Placement, &DeviceOf<B>) -> Result<Vec<Box<dyn Evaluator<B>>>, EvalConfigError>
    + Sync
    + 'a;

/// The device type of backend `B`.
type DeviceOf<B> = <B as burn::tensor::backend::BackendTypes>::Device;

/// What one worker works with: where it runs, its device, the merger on that device and the
/// writer that hands candidates to external programs.
pub struct WorkerSetup<'a, B: Backend> {
    /// Its number and GPU.
    pub placement: Placement,
    /// The device its merger and built-in evaluators use.
    pub device: B::Device,
    /// The merger, when the space has models.
    pub merger: Option<&'a Merger<B>>,
    /// The candidate writer, when an evaluator reads candidates from disk.
    pub writer: Option<&'a CandidateWriter>,
}

/// Runs a study's trials for one worker, in this process ([`TrialRunner`]) or in another
/// ([`super::ProcessWorker`]); the study loop drives both the same way.
pub trait RunsTrials: Send {
    /// Runs trial `at`; every failure, a panic included, is a failed record.
    fn run(&mut self, at: TrialAt<'_>) -> TrialRecord;
}

impl<B: Backend> RunsTrials for TrialRunner<'_, B> {
    fn run(&mut self, at: TrialAt<'_>) -> TrialRecord {
        TrialRunner::run(self, at)
    }
}

/// Runs trials for one worker: decode, merge, evaluate, scalarize, a panic becoming a failed
/// trial.
pub struct TrialRunner<'a, B: Backend> {
    space: &'a Space,
    setup: WorkerSetup<'a, B>,
    scalarizer: &'a Scalarizer,
    build: &'a EvaluatorFactory<'a, B>,
    /// `None` after a panic, until rebuilt.
    evaluators: Option<Vec<Box<dyn Evaluator<B>>>>,
    /// How many times the evaluators were built.
    builds: usize,
}

impl<'a, B: Backend> TrialRunner<'a, B> {
    /// A runner for the worker `setup` starting with `evaluators` (made by `build`, which
    /// makes their replacements).
    pub fn new(
        space: &'a Space,
        setup: WorkerSetup<'a, B>,
        scalarizer: &'a Scalarizer,
        build: &'a EvaluatorFactory<'a, B>,
        evaluators: Vec<Box<dyn Evaluator<B>>>,
    ) -> TrialRunner<'a, B> {
        TrialRunner {
            space,
            setup,
            scalarizer,
            build,
            evaluators: Some(evaluators),
            builds: 1,
        }
    }

    /// How many times this runner built its evaluators (1 plus one per panic recovered from).
    pub fn builds(&self) -> usize {
        self.builds
    }

    /// Runs trial `at`. Never panics: a panic inside the trial is a failed record (`panicked:
    /// MESSAGE`), after which the evaluators are rebuilt.
    pub fn run(&mut self, at: TrialAt<'_>) -> TrialRecord {
        let TrialAt {
            id,
            generation,
            point,
            ..
        } = at;
        let started = now();
        if self.evaluators.is_none() {
            let setup = &self.setup;
            match guarded(|| (self.build)(&setup.placement, &setup.device)) {
                Ok(Ok(fresh)) => {
                    self.evaluators = Some(fresh);
                    self.builds += 1;
                }
                Ok(Err(e)) => {
                    let reason = format!("the evaluators could not be rebuilt after a panic: {e}");
                    return self.failed(id, generation, point, started, reason);
                }
                Err(message) => {
                    let reason = format!("rebuilding the evaluators panicked: {message}");
                    return self.failed(id, generation, point, started, reason);
                }
            }
        }
        let evaluators = self.evaluators.as_mut().expect("built above");
        let (space, scalarizer) = (self.space, self.scalarizer);
        let (merger, writer) = (self.setup.merger, self.setup.writer);
        let outcome = guarded(|| {
            failpoint::hit(failpoint::TRIAL_PANIC);
            run_trial(space, merger, writer, evaluators, scalarizer, at)
        });
        match outcome {
            Ok(record) => record,
            Err(message) => {
                // Dropping may panic too (a worker evaluator shutting its program down).
                let damaged = self.evaluators.take();
                let _ = guarded(move || drop(damaged));
                let reason = format!("panicked: {message} (the evaluators were rebuilt)");
                self.failed(id, generation, point, started, reason)
            }
        }
    }

    /// A failed record with the point's parameters when it decodes.
    fn failed(
        &self,
        id: u64,
        generation: u64,
        point: &[f64],
        started: f64,
        reason: String,
    ) -> TrialRecord {
        let mut record = failed_trial(id, generation, point, started, reason);
        if let Ok(decoded) = self.space.decode(point) {
            record.params = decoded.params;
        }
        record
    }
}

thread_local! {
    /// Whether this thread is inside [`guarded`] (its panics are caught and reported).
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into its message.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let outer = GUARDED.replace(true);
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.set(outer);
    result.map_err(|payload| panic_message(payload.as_ref()))
}

/// Installs a panic hook that reports a panic caught by a guard in one line (the failed trial or
/// the error carries its message) and leaves every other panic to the default hook.
pub fn quiet_caught_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if GUARDED.get() {
            let at = info
                .location()
                .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
            eprintln!(
                "note: caught a panic{at}: {}",
                panic_message(info.payload())
            );
        } else {
            default(info);
        }
    }));
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".into()
    }
}
