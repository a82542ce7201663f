//! Evaluators score candidates: named objectives out, each with a direction, a standard error
//! where one can be estimated, and the cost spent. Built-in evaluators run burn models in process
//! (the [`zoo`](ZooEvaluator)); external ones run any program, once per trial ([`command`]) or
//! kept alive and spoken to in JSON lines ([`worker`]) — the protocol is in
//! `evaluators/README.md`.
//!
//! Evaluators are declared in TOML, one table each (search spaces embed the same tables):
//!
//! ```toml
//! [[evaluators]]
//! kind = "zoo"
//! split = "validation"
//! metrics = ["accuracy", "entropy"]
//! subset = { size = 100, seed = 0, strategy = "stratified" }
//!
//! [[evaluators]]
//! kind = "command"
//! argv = ["python3", "evaluators/example.py", "--params", "{params_json}", "--seed", "{seed}"]
//! objectives = { loss = "minimize" }
//! timeout_s = 60
//! retries = 1
//! ```
//!
//! [`command`]: CommandEvaluator
//! [`worker`]: WorkerEvaluator

mod command;
mod evaluator;
mod external;
mod handoff;
mod process;
mod reply;
mod subset;
mod subset_study;
mod worker;
mod zoo;

use std::collections::BTreeSet;
use std::path::PathBuf;

use burn::prelude::*;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

pub use command::CommandEvaluator;
pub use evaluator::{
    Cost, Direction, Evaluation, Evaluator, Failure, Objective, Outcome, Score, Trial,
};
pub use external::{ExternalConfig, PLACEHOLDERS, substitute};
pub use handoff::{CandidateWriter, Handoff, check_room, free_bytes};
pub(crate) use process::{Process, Silence, describe_exit, with_stderr};
pub use subset::{Strategy, Subset, SubsetSpec};
pub use subset_study::{Study, StudyConfig, StudyRow, subset_study};
pub use worker::WorkerEvaluator;
pub use zoo::{Metric, ZooEvalConfig, ZooEvaluator, default_zoo_dir, ensure_built, panel_features};

/// One evaluator's TOML table, by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EvaluatorConfig {
    /// The built-in zoo benchmark.
    Zoo(ZooEvalConfig),
    /// Your own vision tasks (a benchmark file) on the space's Hugging Face vision models.
    Vision(ZooEvalConfig),
    /// An external program run once per trial.
    Command(ExternalConfig),
    /// An external program kept alive, one JSON line per trial.
    Worker(ExternalConfig),
}

/// Where one of a run's workers runs: its number and the GPU it owns, if it was placed on one
/// (`--gpus`). External evaluators see them as `{worker}` and `{gpu}`, and a worker's programs
/// start with `CUDA_VISIBLE_DEVICES` set to its GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placement {
    /// The worker's number, from 0.
    pub worker: usize,
    /// Its GPU's index, as the driver numbers them.
    pub gpu: Option<usize>,
}

/// What evaluators need to know about the run they serve.
#[derive(Debug, Clone)]
pub struct EvalContext {
    /// The base model of the search space, if it has models (external programs that read the
    /// candidate need one).
    pub base: Option<PathBuf>,
    /// The worker the evaluators serve.
    pub placement: Placement,
    /// The run's seed.
    pub seed: u64,
    /// Progress of long set-up work (building the zoo, scoring the anchors' panel).
    pub progress: ProgressBar,
}

impl EvalContext {
    /// This context for the worker at `placement`.
    pub fn placed(&self, placement: Placement) -> EvalContext {
        EvalContext {
            placement,
            ..self.clone()
        }
    }

    /// A context for a space without models, writing nothing, showing no progress.
    pub fn without_models(seed: u64) -> EvalContext {
        EvalContext {
            base: None,
            placement: Placement::default(),
            seed,
            progress: ProgressBar::hidden(),
        }
    }
}

/// An evaluator's table is wrong: which evaluator, which key, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("evaluator {evaluator:?}: `{key}` {problem}")]
pub struct EvalConfigError {
    /// The evaluator's name.
    pub evaluator: String,
    /// The offending key.
    pub key: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl EvalConfigError {
    /// An error about `key` of the evaluator `evaluator`.
    pub fn new(evaluator: &str, key: &str, problem: String) -> EvalConfigError {
        EvalConfigError {
            evaluator: evaluator.to_string(),
            key: key.to_string(),
            problem,
        }
    }
}

impl EvaluatorConfig {
    /// Builds the evaluator this table declares.
    pub fn build<B: Backend>(
        &self,
        context: &EvalContext,
        device: &B::Device,
    ) -> Result<Box<dyn Evaluator<B>>, EvalConfigError> {
        Ok(match self {
            EvaluatorConfig::Zoo(config) => Box::new(ZooEvaluator::new(config, context, device)?),
            EvaluatorConfig::Vision(config) => {
                Box::new(ZooEvaluator::vision(config, context, device)?)
            }
            EvaluatorConfig::Command(config) => Box::new(CommandEvaluator::new(config, context)?),
            EvaluatorConfig::Worker(config) => Box::new(WorkerEvaluator::new(config, context)?),
        })
    }
}

/// Builds every evaluator and checks that no two report an objective of the same name.
pub fn build_all<B: Backend>(
    configs: &[EvaluatorConfig],
    context: &EvalContext,
    device: &B::Device,
) -> Result<Vec<Box<dyn Evaluator<B>>>, EvalConfigError> {
    let mut seen = BTreeSet::new();
    let mut built = Vec::with_capacity(configs.len());
    for config in configs {
        let evaluator = config.build(context, device)?;
        for objective in evaluator.objectives() {
            if !seen.insert(objective.name.clone()) {
                return Err(EvalConfigError::new(
                    evaluator.name(),
                    "objectives",
                    format!(
                        "repeats {:?}, which another evaluator already reports: rename one",
                        objective.name
                    ),
                ));
            }
        }
        built.push(evaluator);
    }
    Ok(built)
}
