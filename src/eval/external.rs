//! What the two external evaluators share: their TOML table, placeholder substitution in the argv
//! template, and retrying failed attempts. The protocol is described in `evaluators/README.md`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::evaluator::{Cost, Direction, Evaluation, Failure, Objective, Outcome, Score};
use super::{EvalConfigError, Placement};

/// Placeholders an argv template may use (`items`: the fidelity rung's items per task, empty
/// when the trial asks for no particular number; `worker` and `gpu`: where the evaluator runs,
/// see [`Placement`]).
pub const PLACEHOLDERS: [&str; 7] = [
    "model_dir",
    "params_json",
    "trial_id",
    "seed",
    "items",
    "worker",
    "gpu",
];

/// The variable that tells CUDA programs which GPUs they may see.
const VISIBLE_GPUS: &str = "CUDA_VISIBLE_DEVICES";

/// An external evaluator's table (`kind = "command"` or `kind = "worker"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Name in messages (default: the program's file name).
    #[serde(default)]
    pub name: Option<String>,
    /// The program and its arguments, with placeholders.
    pub argv: Vec<String>,
    /// The objectives the program must report, with their directions.
    pub objectives: BTreeMap<String, Direction>,
    /// Seconds one attempt may take before the program is killed.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Extra attempts after a failed one.
    #[serde(default)]
    pub retries: u32,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Worker only: send each candidate's model directory (default: when there are models).
    #[serde(default)]
    pub model: Option<bool>,
}

fn default_timeout() -> f64 {
    600.0
}

impl ExternalConfig {
    /// The evaluator's name: the configured one, or the program's file name.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let program = self.argv.first().map_or("external", String::as_str);
            let script = self.argv.get(1).filter(|a| !a.starts_with('-'));
            let shown = if ["python", "python3", "sh", "bash", "node"].contains(&program) {
                script.map_or(program, String::as_str)
            } else {
                program
            };
            std::path::Path::new(shown)
                .file_name()
                .map_or(shown.to_string(), |f| f.to_string_lossy().to_string())
        })
    }

    /// The declared objectives, in name order.
    pub fn objective_list(&self) -> Vec<Objective> {
        self.objectives
            .iter()
            .map(|(name, &direction)| Objective::new(name, direction))
            .collect()
    }

    /// The attempt time limit.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }

    /// Checks the table; `allowed` are the placeholders this kind accepts.
    pub fn validate(&self, allowed: &[&str]) -> Result<(), EvalConfigError> {
        let fail =
            |key: &str, problem: String| EvalConfigError::new(&self.display_name(), key, problem);
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(fail("argv", "is empty: give the program and its arguments, e.g. [\"python3\", \"evaluators/example.py\"]".into()));
        }
        if self.objectives.is_empty() {
            return Err(fail(
                "objectives",
                "declares no objective: add e.g. objectives = { accuracy = \"maximize\" }".into(),
            ));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(fail(
                "timeout_s",
                format!(
                    "must be a positive number of seconds, not {}",
                    self.timeout_s
                ),
            ));
        }
        for (i, arg) in self.argv.iter().enumerate() {
            for name in placeholders_in(arg) {
                if !allowed.contains(&name) {
                    let hint = if PLACEHOLDERS.contains(&name) {
                        format!("this kind takes only {allowed:?}")
                    } else {
                        format!("known placeholders: {allowed:?}")
                    };
                    return Err(fail(
                        &format!("argv[{i}]"),
                        format!("unknown placeholder {{{name}}} ({hint})"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The argv template and the extra environment for the worker at `placement`: `{worker}` and
    /// `{gpu}` replaced in both, and `CUDA_VISIBLE_DEVICES` set to the worker's GPU unless `env`
    /// sets it. Using `{gpu}` in a run that placed no worker on a GPU is an error.
    pub fn placed(
        &self,
        placement: &Placement,
    ) -> Result<(Vec<String>, BTreeMap<String, String>), EvalConfigError> {
        let uses_gpu = self.uses("gpu") || self.env.values().any(|v| mentions(v, "gpu"));
        if uses_gpu && placement.gpu.is_none() {
            return Err(EvalConfigError::new(
                &self.display_name(),
                "argv",
                "uses {gpu}, but this run places no worker on a GPU: run it with --gpus (e.g. --gpus 0,1) or [budget] gpus".into(),
            ));
        }
        let worker = placement.worker.to_string();
        let gpu = placement.gpu.map(|g| g.to_string()).unwrap_or_default();
        let values = [("worker", worker.as_str()), ("gpu", gpu.as_str())];
        let argv = substitute(&self.argv, &values);
        let mut env: BTreeMap<String, String> = self
            .env
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    substitute(std::slice::from_ref(v), &values).remove(0),
                )
            })
            .collect();
        if placement.gpu.is_some() {
            env.entry(VISIBLE_GPUS.to_string()).or_insert(gpu);
        }
        Ok((argv, env))
    }

    /// Whether any argument uses `placeholder`.
    pub fn uses(&self, placeholder: &str) -> bool {
        self.argv.iter().any(|a| mentions(a, placeholder))
    }
}

/// Whether `text` holds the placeholder `{placeholder}`.
fn mentions(text: &str, placeholder: &str) -> bool {
    placeholders_in(text).any(|p| p == placeholder)
}

/// The `{name}` placeholders in `arg` (lower-case identifiers only, so JSON text passes through).
fn placeholders_in(arg: &str) -> impl Iterator<Item = &str> {
    arg.split('{').skip(1).filter_map(|part| {
        let name = part.split_once('}')?.0;
        let is_identifier = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        is_identifier.then_some(name)
    })
}

/// `template` with each `{name}` of `values` replaced.
pub fn substitute(template: &[String], values: &[(&str, &str)]) -> Vec<String> {
    template
        .iter()
        .map(|arg| {
            values.iter().fold(arg.clone(), |arg, (name, value)| {
                arg.replace(&format!("{{{name}}}"), value)
            })
        })
        .collect()
}

/// Runs `attempt` until it succeeds or `retries` extra attempts have failed, timing it all.
pub fn with_retries(
    name: &str,
    retries: u32,
    mut attempt: impl FnMut() -> Result<BTreeMap<String, Score>, String>,
) -> Outcome {
    let started = Instant::now();
    let mut reason = String::new();
    for made in 1..=retries + 1 {
        match attempt() {
            Ok(scores) => {
                return Ok(Evaluation {
                    scores,
                    cost: Cost {
                        seconds: started.elapsed().as_secs_f64(),
                        items: None,
                        attempts: made,
                    },
                });
            }
            Err(why) => reason = why,
        }
    }
    let attempts = retries + 1;
    let after = if attempts > 1 {
        format!(" (all {attempts} attempts failed)")
    } else {
        String::new()
    };
    Err(Failure {
        reason: format!("{name}: {reason}{after}"),
        cost: Cost {
            seconds: started.elapsed().as_secs_f64(),
            items: None,
            attempts,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_and_json_text_is_not_one() {
        let found: Vec<&str> = placeholders_in("--x={model_dir}/{seed} {\"a\": 1} {Bad}").collect();
        assert_eq!(found, ["model_dir", "seed"]);
        let argv = vec!["run".to_string(), "{trial_id}-{seed}".into()];
        assert_eq!(
            substitute(&argv, &[("trial_id", "4"), ("seed", "9")]),
            ["run", "4-9"]
        );
    }

    fn config(argv: &[&str], env: &[(&str, &str)]) -> ExternalConfig {
        ExternalConfig {
            name: Some("e".into()),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            objectives: BTreeMap::from([("loss".to_string(), Direction::Minimize)]),
            timeout_s: 1.0,
            retries: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            model: None,
        }
    }

    #[test]
    fn placement_fills_worker_and_gpu_and_shows_the_gpu_to_cuda() {
        let c = config(
            &["run", "--gpu={gpu}", "w{worker}"],
            &[("LOG", "w{worker}.log")],
        );
        let on_gpu = Placement {
            worker: 1,
            gpu: Some(3),
        };
        let (argv, env) = c.placed(&on_gpu).unwrap();
        assert_eq!(argv, ["run", "--gpu=3", "w1"]);
        assert_eq!(env["LOG"], "w1.log");
        assert_eq!(env[VISIBLE_GPUS], "3");
        // The user's own setting wins.
        let own = config(&["run"], &[(VISIBLE_GPUS, "0,1")]);
        assert_eq!(own.placed(&on_gpu).unwrap().1[VISIBLE_GPUS], "0,1");
        // {gpu} without a GPU is an error naming the fix; {worker} alone is fine.
        let err = c.placed(&Placement::default()).unwrap_err().to_string();
        assert!(err.contains("--gpus"), "{err}");
        let cpu = config(&["run", "{worker}"], &[]);
        let (argv, env) = cpu.placed(&Placement::default()).unwrap();
        assert_eq!(argv, ["run", "0"]);
        assert!(!env.contains_key(VISIBLE_GPUS));
    }
}
