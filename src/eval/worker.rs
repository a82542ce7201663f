//! The `worker` evaluator: one long-lived external program that answers one JSON line per trial,
//! so a Python harness imports its heavy libraries once. A worker that times out is killed, one
//! that exits is restarted for the next trial; either way that trial fails with the reason.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use burn::prelude::*;
use serde_json::json;

use super::evaluator::{Evaluator, Objective, Outcome, Score, Trial};
use super::external::{ExternalConfig, substitute, with_retries};
use super::model_dir::{CandidateWriter, candidate_writer, write_trial_model};
use super::process::{Process, Silence, describe_exit, with_stderr};
use super::reply::{parse_object_line, read_scores};
use super::{EvalConfigError, EvalContext};

/// How long a worker may take to exit once its stdin is closed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Keeps one program running and exchanges a JSON line with it per trial.
pub struct WorkerEvaluator {
    config: ExternalConfig,
    name: String,
    argv: Vec<String>,
    objectives: Vec<Objective>,
    writer: Option<CandidateWriter>,
    process: Option<Process>,
}

impl WorkerEvaluator {
    /// Checks `config`; the program starts with the first trial.
    pub fn new(
        config: &ExternalConfig,
        context: &EvalContext,
    ) -> Result<WorkerEvaluator, EvalConfigError> {
        config.validate(&["seed"])?;
        let name = config.display_name();
        let wanted = config.model.unwrap_or(context.base.is_some());
        let writer = candidate_writer(&name, "model", wanted, context)?;
        Ok(WorkerEvaluator {
            argv: substitute(&config.argv, &[("seed", &context.seed.to_string())]),
            objectives: config.objective_list(),
            config: config.clone(),
            name,
            writer,
            process: None,
        })
    }

    fn attempt<B: Backend>(
        &mut self,
        trial: &Trial<'_, B>,
    ) -> Result<BTreeMap<String, Score>, String> {
        let model = write_trial_model(self.writer.as_ref(), trial)?;
        let request = json!({
            "trial_id": trial.id,
            "seed": trial.seed,
            "params": trial.params,
            "model_dir": model.as_ref().map(|m| m.path().display().to_string()),
            "items": trial.items,
        });
        if self.process.is_none() {
            self.process = Some(Process::spawn(&self.argv, &self.config.env, true)?);
        }
        let process = self.process.as_mut().expect("started above");
        let sent = process
            .stdin()
            .expect("workers have stdin")
            .write_all(format!("{request}\n").as_bytes())
            .and_then(|()| process.stdin().expect("workers have stdin").flush());
        if let Err(e) = sent {
            return Err(self.lost(format!("could not be sent the trial ({e})")));
        }
        let deadline = Instant::now() + self.config.timeout();
        loop {
            let process = self.process.as_ref().expect("running");
            match process.next_line(deadline) {
                Ok(line) => {
                    if let Some(reply) = parse_object_line(&line) {
                        return read_scores(&reply, &self.objectives);
                    }
                }
                Err(Silence::Timeout) => {
                    let process = self.process.take().expect("running");
                    let reason = with_stderr(
                        format!(
                            "did not reply within {}s and was killed",
                            self.config.timeout_s
                        ),
                        &process,
                    );
                    drop(process);
                    return Err(reason);
                }
                Err(Silence::Closed) => {
                    return Err(self.lost("closed its stdout before replying".into()));
                }
            }
        }
    }

    /// Reaps a worker that stopped talking and describes how it ended; the next attempt starts
    /// a fresh one.
    fn lost(&mut self, what: String) -> String {
        let mut process = self.process.take().expect("running");
        let ended = match process.wait(Instant::now() + Duration::from_secs(1)) {
            Some(status) => describe_exit(status),
            None => "was killed".into(),
        };
        with_stderr(format!("the worker {what} and {ended}"), &process)
    }
}

impl<B: Backend> Evaluator<B> for WorkerEvaluator {
    fn name(&self) -> &str {
        &self.name
    }

    fn objectives(&self) -> &[Objective] {
        &self.objectives
    }

    /// The request carries `items` (null when the trial asks for no particular number): a
    /// worker program that serves fidelity rungs scores that many items per task.
    fn takes_items(&self) -> bool {
        true
    }

    fn evaluate(&mut self, trial: &Trial<'_, B>) -> Outcome {
        let (name, retries) = (self.name.clone(), self.config.retries);
        with_retries(&name, retries, || self.attempt(trial))
    }
}

impl Drop for WorkerEvaluator {
    fn drop(&mut self) {
        if let Some(process) = &mut self.process {
            process.shut_down(SHUTDOWN_GRACE);
        }
    }
}
