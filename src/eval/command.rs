//! The `command` evaluator: one run of an external program per trial.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use burn::prelude::*;

use super::evaluator::{Evaluator, Objective, Outcome, Score, Trial};
use super::external::{ExternalConfig, PLACEHOLDERS, substitute, with_retries};
use super::handoff::takes_candidate;
use super::process::{Process, describe_exit, with_stderr};
use super::reply::{find_reply, read_scores};
use super::{EvalConfigError, EvalContext};

/// Runs the argv template once per trial and reads the last JSON object it prints.
pub struct CommandEvaluator {
    config: ExternalConfig,
    name: String,
    /// The argv template with the placement's placeholders replaced.
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    objectives: Vec<Objective>,
    takes_model: bool,
}

impl CommandEvaluator {
    /// Checks `config` for the worker at `context.placement`; the trial's candidate is handed
    /// over when the template uses `{model_dir}`.
    pub fn new(
        config: &ExternalConfig,
        context: &EvalContext,
    ) -> Result<CommandEvaluator, EvalConfigError> {
        config.validate(&PLACEHOLDERS)?;
        let name = config.display_name();
        if config.model.is_some() {
            return Err(EvalConfigError::new(
                &name,
                "model",
                "is for workers: a command gets the model when its argv uses {model_dir}".into(),
            ));
        }
        let takes_model = takes_candidate(&name, "argv", config.uses("model_dir"), context)?;
        let (argv, env) = config.placed(&context.placement)?;
        Ok(CommandEvaluator {
            objectives: config.objective_list(),
            config: config.clone(),
            name,
            argv,
            env,
            takes_model,
        })
    }

    fn attempt<B: Backend>(&self, trial: &Trial<'_, B>) -> Result<BTreeMap<String, Score>, String> {
        let model_dir = match self.takes_model {
            true => trial.model_dir()?.display().to_string(),
            false => String::new(),
        };
        let params = serde_json::Value::Object(trial.params.clone()).to_string();
        let (id, seed) = (trial.id.to_string(), trial.seed.to_string());
        let items = trial.items.map(|n| n.to_string()).unwrap_or_default();
        let argv = substitute(
            &self.argv,
            &[
                ("model_dir", &model_dir),
                ("params_json", &params),
                ("trial_id", &id),
                ("seed", &seed),
                ("items", &items),
            ],
        );
        let mut process = Process::spawn(&argv, &self.env, false)?;
        let deadline = Instant::now() + self.config.timeout();
        let Some(status) = process.wait(deadline) else {
            return Err(with_stderr(
                format!("timed out after {}s and was killed", self.config.timeout_s),
                &process,
            ));
        };
        let stdout = read_remaining(&process);
        if !status.success() {
            // A program that explains itself with {"error": ...} before exiting is quoted.
            let own = find_reply(&stdout)
                .and_then(|reply| read_scores(&reply, &self.objectives).err())
                .map_or(String::new(), |e| format!(" ({e})"));
            return Err(with_stderr(
                format!("{}{own}", describe_exit(status)),
                &process,
            ));
        }
        let reply = find_reply(&stdout).ok_or_else(|| {
            let shown = super::reply::clip(stdout.trim(), 300);
            let dropped = match process.dropped_stdout() {
                0 => String::new(),
                n => format!(", {n} more bytes dropped"),
            };
            with_stderr(
                format!("printed no JSON object on stdout (stdout: {shown:?}{dropped})"),
                &process,
            )
        })?;
        read_scores(&reply, &self.objectives)
    }
}

/// Everything an exited program printed (a grandchild holding stdout open gets one second).
fn read_remaining(process: &Process) -> String {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut out = String::new();
    while let Ok(line) = process.next_line(deadline) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

impl<B: Backend> Evaluator<B> for CommandEvaluator {
    fn name(&self) -> &str {
        &self.name
    }

    fn objectives(&self) -> &[Objective] {
        &self.objectives
    }

    fn takes_items(&self) -> bool {
        self.config.uses("items")
    }

    fn takes_model(&self) -> bool {
        self.takes_model
    }

    fn evaluate(&mut self, trial: &Trial<'_, B>) -> Outcome {
        with_retries(&self.name, self.config.retries, || self.attempt(trial))
    }
}
