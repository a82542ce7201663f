//! A study's worker in a process of its own: `mergesearch worker`, started directly or through
//! a launcher (`ssh node`, a cluster's job step). Each trial travels to it as one JSON line (its
//! id, batch, point and rung) and its record comes back as one line; coefficient vectors travel,
//! weights do not. A worker process that dies fails only the trial it held, and a fresh one is
//! started for the next.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use super::runner::RunsTrials;
use super::trial::{TrialAt, failed_trial};
use crate::eval::{Process, Silence, describe_exit, with_stderr};
use crate::record::{TrialRecord, now};

/// How long a worker process may take to exit once its stdin is closed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The longest a trial may take in a worker process (its evaluators time out long before).
const TRIAL_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Runs trials in a `mergesearch worker` process started from `argv`.
pub struct ProcessWorker {
    argv: Vec<String>,
    process: Option<Process>,
}

impl ProcessWorker {
    /// A worker started (at its first trial) from `argv`.
    pub fn new(argv: Vec<String>) -> ProcessWorker {
        ProcessWorker {
            argv,
            process: None,
        }
    }

    /// Sends trial `at` and reads its record back; the reason, when that fails.
    fn exchange(&mut self, at: &TrialAt<'_>) -> Result<TrialRecord, String> {
        if self.process.is_none() {
            self.process = Some(Process::spawn(&self.argv, &BTreeMap::new(), true)?);
        }
        let process = self.process.as_mut().expect("started above");
        let request = serde_json::json!({
            "id": at.id,
            "generation": at.generation,
            "point": at.point,
            "items": at.items,
        });
        let stdin = process.stdin().expect("workers have stdin");
        if let Err(e) = stdin
            .write_all(format!("{request}\n").as_bytes())
            .and_then(|()| stdin.flush())
        {
            return Err(self.lost(format!("could not be sent the trial ({e})")));
        }
        let deadline = Instant::now() + TRIAL_LIMIT;
        let reply = match self.process.as_ref().expect("running").next_line(deadline) {
            Ok(line) => line,
            Err(Silence::Timeout) => return Err(self.lost("did not reply".into())),
            Err(Silence::Closed) => return Err(self.lost("closed its stdout".into())),
        };
        let value: serde_json::Value = serde_json::from_str(&reply).map_err(|e| {
            format!("the worker process replied with something else than JSON ({e}): {reply}")
        })?;
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            return Err(format!("the worker process refused the trial: {error}"));
        }
        let record: TrialRecord = serde_json::from_value(value)
            .map_err(|e| format!("the worker process replied with no trial record ({e})"))?;
        if record.id != at.id || record.point != at.point {
            return Err(format!(
                "the worker process answered trial {} at another point than trial {} was sent",
                record.id, at.id
            ));
        }
        Ok(record)
    }

    /// Reaps a worker process that stopped answering and says how it ended.
    fn lost(&mut self, what: String) -> String {
        let mut process = self.process.take().expect("running");
        let ended = match process.wait(Instant::now() + Duration::from_secs(1)) {
            Some(status) => describe_exit(status),
            None => "was killed".into(),
        };
        with_stderr(format!("the worker process {what} and {ended}"), &process)
    }
}

impl RunsTrials for ProcessWorker {
    fn run(&mut self, at: TrialAt<'_>) -> TrialRecord {
        let started = now();
        self.exchange(&at)
            .unwrap_or_else(|reason| failed_trial(at.id, at.generation, at.point, started, reason))
    }
}

impl Drop for ProcessWorker {
    fn drop(&mut self) {
        if let Some(process) = &mut self.process {
            process.shut_down(SHUTDOWN_GRACE);
        }
    }
}
