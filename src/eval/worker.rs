//! The `worker` evaluator: one long-lived external program that answers one JSON line per trial,
//! so a Python harness imports its heavy libraries once. A worker that times out is killed, one
//! that exits is restarted for the next trial; either way that trial fails with the reason. A
//! worker lost again and again is restarted after a growing pause (1 s, 2 s, 4 s, ... up to a
//! minute), so that a program that cannot start does not reload its model in a tight loop.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use burn::prelude::*;
use indicatif::ProgressBar;
use serde_json::json;

use super::evaluator::{Evaluator, Objective, Outcome, Score, Trial};
use super::external::{ExternalConfig, substitute, with_retries};
use super::handoff::takes_candidate;
use super::process::{Process, Silence, describe_exit, with_stderr};
use super::reply::{parse_object_line, read_scores};
use super::{EvalConfigError, EvalContext};
use crate::interrupt;

/// How long a worker may take to exit once its stdin is closed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The longest pause before restarting a worker that was lost again and again.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(60);

/// The pause before starting a worker after `lost` losses in a row: none after none, then 1 s,
/// doubling up to [`MAX_RESTART_PAUSE`].
pub fn restart_pause(lost: u32) -> Duration {
    match lost {
        0 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 1).min(16)).min(MAX_RESTART_PAUSE),
    }
}

/// Keeps one program running and exchanges a JSON line with it per trial.
pub struct WorkerEvaluator {
    config: ExternalConfig,
    name: String,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    objectives: Vec<Objective>,
    takes_model: bool,
    process: Option<Process>,
    /// Workers lost (timed out or exited) since the last reply.
    lost_in_row: u32,
    progress: ProgressBar,
}

impl WorkerEvaluator {
    /// Checks `config`; the program starts with the first trial.
    pub fn new(
        config: &ExternalConfig,
        context: &EvalContext,
    ) -> Result<WorkerEvaluator, EvalConfigError> {
        config.validate(&["seed", "worker", "gpu"])?;
        let name = config.display_name();
        let wanted = config.model.unwrap_or(context.base.is_some());
        let takes_model = takes_candidate(&name, "model", wanted, context)?;
        let (argv, env) = config.placed(&context.placement)?;
        Ok(WorkerEvaluator {
            argv: substitute(&argv, &[("seed", &context.seed.to_string())]),
            env,
            objectives: config.objective_list(),
            config: config.clone(),
            name,
            takes_model,
            process: None,
            lost_in_row: 0,
            progress: context.progress.clone(),
        })
    }

    fn attempt<B: Backend>(
        &mut self,
        trial: &Trial<'_, B>,
    ) -> Result<BTreeMap<String, Score>, String> {
        let model_dir = match self.takes_model {
            true => Some(trial.model_dir()?.display().to_string()),
            false => None,
        };
        let request = json!({
            "trial_id": trial.id,
            "seed": trial.seed,
            "params": trial.params,
            "model_dir": model_dir,
            "items": trial.items,
        });
        if self.process.is_none() {
            self.pause_before_restart();
            self.process = Some(
                Process::spawn(&self.argv, &self.env, true).inspect_err(|_| {
                    self.lost_in_row += 1;
                })?,
            );
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
                        self.lost_in_row = 0;
                        return read_scores(&reply, &self.objectives);
                    }
                }
                Err(Silence::Timeout) => {
                    self.lost_in_row += 1;
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
        self.lost_in_row += 1;
        let mut process = self.process.take().expect("running");
        let ended = match process.wait(Instant::now() + Duration::from_secs(1)) {
            Some(status) => describe_exit(status),
            None => "was killed".into(),
        };
        with_stderr(format!("the worker {what} and {ended}"), &process)
    }

    /// Waits [`restart_pause`] before starting the worker again after losses in a row (a stop
    /// request cuts the wait short).
    fn pause_before_restart(&self) {
        let pause = restart_pause(self.lost_in_row);
        if pause.is_zero() {
            return;
        }
        self.progress.println(format!(
            "{}: the worker was lost {} time(s) in a row; starting it again in {}s",
            self.name,
            self.lost_in_row,
            pause.as_secs()
        ));
        let until = Instant::now() + pause;
        while Instant::now() < until && !interrupt::stop_flag().load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
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

    fn takes_model(&self) -> bool {
        self.takes_model
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_pause_longer_each_loss_up_to_a_minute() {
        let secs: Vec<u64> = (0..10).map(|n| restart_pause(n).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(restart_pause(u32::MAX), MAX_RESTART_PAUSE);
    }
}
