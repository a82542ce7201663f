//! AdaMerging (Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task Learning",
//! ICLR 2024): merge coefficients learned without labels.
//!
//! The merged encoder `theta = theta_base + sum_i lambda_i * tau_i` (one `lambda` per expert, per
//! expert and layer group, or per expert and tensor) is a differentiable function of the
//! coefficients ([`DifferentiableMerge`]). On unlabeled inputs of each task, the entropy of that
//! task's head's predictions is a surrogate for its error; the loss is each task's mean entropy,
//! summed over tasks ([`entropy_loss`]), and Adam descends it. With a TIES density
//! (AdaMerging++) the task vectors are first trimmed to their largest magnitudes and each merge
//! keeps only the entries that agree with the sign elected under the current coefficients.
//!
//! Labels are never read for training: they only score the final merge for the report.
//!
//! A run writes the same directory as `mergesearch run` (`run.json`, `trials.jsonl`,
//! `trials.parquet`, `front.parquet`), one trial per step: its point and parameters are the
//! coefficients before the step's update, its `entropy` score the step's mini-batch loss. The
//! last trial (id = steps) holds the learned coefficients scored on the whole split: entropy, and
//! for the report, accuracy. The run's space is the input space with the method, granularity and
//! searched `weight` rewritten, so `best`, `export`, `front` and `eval` work on it, and its
//! coefficients can seed another search (`mergesearch run --init-from`).

mod adam;
mod loss;
mod merge;
mod step;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Transaction;
use burn::tensor::backend::AutodiffBackend;
use indicatif::ProgressBar;
use serde_json::{Map, Value};

pub use adam::Adam;
pub use loss::{entropy_loss, sample_batch};
pub use merge::{DifferentiableMerge, MergedLeaves};
pub use step::{EntropyObjective, Gradient};

use crate::eval::{Direction, Objective, Score};
use crate::merge::{MergeError, MergePlan};
use crate::record::{Journal, RecordError, Status, TrialRecord, now, update_front, write_trials};
use crate::space::{Space, SpaceError};
use crate::study::{StudyError, lock_run_dir, prepare_dir, run_info};
use crate::vision::benchmark::{BenchmarkError, TaskInputs, VisionBenchmark};
use crate::zoo::build::ZooError;
use crate::zoo::evaluate::{TaskScores, ZooScorer};
use crate::zoo::tasks::Split;

/// The bounds of the coefficients when they are not clamped to `[0, 1]` (`--no-clamp`): wide
/// enough not to bind in practice, and recorded in the run's space so every step can be
/// exported.
pub const UNCLAMPED: (f64, f64) = (-1.0, 2.0);

/// The name of the loss in trial records.
pub const LOSS: &str = "entropy";

/// Which tensors share a coefficient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoefficientGranularity {
    /// One coefficient per expert (task-wise AdaMerging).
    Task,
    /// One per expert and layer group (layer-wise AdaMerging).
    Layer,
    /// One per expert and tensor.
    Tensor,
}

impl CoefficientGranularity {
    /// The space's `granularity` key for it.
    fn space_granularity(self) -> &'static str {
        match self {
            CoefficientGranularity::Task => "model",
            CoefficientGranularity::Layer => "layer",
            CoefficientGranularity::Tensor => "tensor",
        }
    }
}

/// How to run AdaMerging. The defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaMergeOptions {
    /// Which tensors share a coefficient.
    pub granularity: CoefficientGranularity,
    /// Adam steps.
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Unlabeled inputs per task per step.
    pub batch: usize,
    /// Every coefficient's starting value.
    pub init: f64,
    /// Keep coefficients in `[0, 1]` (else in [`UNCLAMPED`]).
    pub clamp: bool,
    /// TIES density of AdaMerging++ (`None`: plain task vectors).
    pub ties: Option<f64>,
    /// Seed of the batches.
    pub seed: u64,
    /// The split whose inputs (without labels) are trained on; its labels score the result.
    pub split: Split,
}

impl Default for AdaMergeOptions {
    fn default() -> Self {
        AdaMergeOptions {
            granularity: CoefficientGranularity::Layer,
            steps: 500,
            lr: 1e-3,
            batch: 16,
            init: 0.3,
            clamp: true,
            ties: None,
            seed: 0,
            split: Split::Test,
        }
    }
}

impl AdaMergeOptions {
    /// The coefficients' bounds.
    pub fn bounds(&self) -> (f64, f64) {
        if self.clamp { (0.0, 1.0) } else { UNCLAMPED }
    }

    fn check(&self) -> Result<(), AdaMergeError> {
        let bad = |option: &str, problem: String| {
            Err(AdaMergeError::Option(format!("--{option} {problem}")))
        };
        if self.steps == 0 {
            return bad("steps", "must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("batch", "must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("must be positive, not {}", self.lr));
        }
        let (low, high) = self.bounds();
        if !(low..=high).contains(&self.init) {
            return bad(
                "init",
                format!("must lie in [{low}, {high}] (got {})", self.init),
            );
        }
        if let Some(d) = self.ties
            && !(d > 0.0 && d <= 1.0)
        {
            return bad("ties", format!("(the density) must lie in (0, 1], not {d}"));
        }
        Ok(())
    }
}

/// AdaMerging cannot run as asked.
#[derive(Debug, thiserror::Error)]
pub enum AdaMergeError {
    /// An option is out of range.
    #[error("{0}")]
    Option(String),
    /// The space is not a zoo space, or its rewritten form does not load.
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// The zoo.
    #[error(transparent)]
    Zoo(#[from] ZooError),
    /// Your own vision tasks (`[models] tasks`).
    #[error(transparent)]
    Benchmark(#[from] BenchmarkError),
    /// The run directory.
    #[error(transparent)]
    Study(#[from] StudyError),
    /// Loading the models.
    #[error(transparent)]
    Models(#[from] MergeError),
}

impl From<RecordError> for AdaMergeError {
    fn from(e: RecordError) -> Self {
        AdaMergeError::Study(e.into())
    }
}

/// What a run learned.
#[derive(Debug, Clone)]
pub struct AdaMergeOutcome {
    /// The run directory.
    pub dir: PathBuf,
    /// The run's space (the method, granularity and coefficients AdaMerging searched).
    pub space: Space,
    /// The learned coefficients, as the space's parameters.
    pub params: Map<String, Value>,
    /// The learned merge.
    pub plan: MergePlan,
    /// The tasks' names.
    pub tasks: Vec<String>,
    /// Whether every task's inputs have labels (else the accuracies mean nothing).
    pub labelled: bool,
    /// Each task's scores on the split before training (every coefficient at `init`).
    pub initial: Vec<TaskScores>,
    /// Each task's scores on the split after training.
    pub learned: Vec<TaskScores>,
    /// Mean wall time of a training step after the first (of the only one when there is one),
    /// seconds.
    pub seconds_per_step: f64,
    /// Wall time of the first step, which also pays first-use costs (allocations, on a GPU
    /// kernel compilation), seconds.
    pub first_step_seconds: f64,
}

/// Where AdaMerging finds each task's head and unlabeled inputs.
enum TaskSource {
    /// The built-in zoo (`[models] zoo = ...`).
    Zoo(PathBuf),
    /// Your own vision tasks (`[models] tasks = ...`) on the base model `base`.
    Vision {
        /// The benchmark file.
        file: PathBuf,
        /// The base model's directory.
        base: PathBuf,
    },
}

impl TaskSource {
    /// The tasks of `space`: its zoo, or its own vision tasks.
    fn of(space: &Space) -> Result<TaskSource, AdaMergeError> {
        let models = space.resolved.get("models");
        let path = |key: &str| {
            models
                .and_then(|m| m.get(key))
                .and_then(|v| v.as_str())
                .map(PathBuf::from)
        };
        match (path("zoo"), path("tasks"), path("base")) {
            (Some(zoo), _, _) => Ok(TaskSource::Zoo(zoo)),
            (None, Some(file), Some(base)) => Ok(TaskSource::Vision { file, base }),
            _ => Err(AdaMergeError::Space(SpaceError::new(
                &space.file,
                "models.tasks",
                "is missing: AdaMerging needs each task's head and unlabeled inputs: the built-in zoo (`[models] zoo = \"results/zoo\"`) or a file of your own tasks (`tasks = \"tasks.toml\"`, see the README)".into(),
            ))),
        }
    }

    /// The tasks' inputs of `split`, read once for scorers on any backend.
    fn read(&self, split: Split) -> Result<SplitTasks, AdaMergeError> {
        Ok(match self {
            TaskSource::Zoo(dir) => SplitTasks::Zoo(dir.clone(), split),
            TaskSource::Vision { file, base } => {
                SplitTasks::Vision(VisionBenchmark::read(file)?.read_tasks(base, split)?)
            }
        })
    }
}

/// One split of a [`TaskSource`]'s tasks, ready to be scored on any backend.
enum SplitTasks {
    /// The zoo in this directory, whose split is generated when a scorer opens it.
    Zoo(PathBuf, Split),
    /// Your own tasks, their images decoded.
    Vision(TaskInputs),
}

impl SplitTasks {
    /// A scorer of these tasks on `device`.
    fn scorer<B: Backend>(&self, device: &B::Device) -> Result<ZooScorer<B>, AdaMergeError> {
        Ok(match self {
            SplitTasks::Zoo(dir, split) => ZooScorer::open(dir, *split, device)?,
            SplitTasks::Vision(tasks) => tasks.scorer(device)?,
        })
    }
}

/// The space AdaMerging searches: `space` with task arithmetic (or TIES without normalization
/// under `ties`), `lambda = 1`, the granularity asked, and one searched `weight` per expert (and
/// group) in the coefficients' bounds.
pub fn derived_space(
    space: &Space,
    options: &AdaMergeOptions,
    progress: &ProgressBar,
) -> Result<Space, AdaMergeError> {
    TaskSource::of(space)?;
    let mut raw = space.resolved.clone();
    let table = raw.as_table_mut().expect("a space is a TOML table");
    let mut fixed = toml::Table::new();
    fixed.insert("lambda".into(), 1.0.into());
    let method = match options.ties {
        Some(density) => {
            fixed.insert("density".into(), density.into());
            fixed.insert("normalize".into(), false.into());
            "ties"
        }
        None => "task_arithmetic",
    };
    let mut merge = toml::Table::new();
    merge.insert("method".into(), method.into());
    merge.insert(
        "granularity".into(),
        options.granularity.space_granularity().into(),
    );
    merge.insert("fixed".into(), fixed.into());
    table.insert("merge".into(), merge.into());
    let (low, high) = options.bounds();
    let mut weight = toml::Table::new();
    weight.insert("name".into(), "weight".into());
    let scope = match options.granularity {
        CoefficientGranularity::Task => "expert",
        _ => "expert_group",
    };
    weight.insert("scope".into(), scope.into());
    weight.insert("low".into(), low.into());
    weight.insert("high".into(), high.into());
    weight.insert("init".into(), options.init.into());
    table.insert(
        "params".into(),
        toml::Value::Array(vec![toml::Value::Table(weight)]),
    );
    let name = format!("{}-adamerge", space.name);
    table.insert("name".into(), name.into());
    Ok(Space::from_resolved(&space.file, raw, progress)?)
}

/// The names of the coefficient matrix's entries, row-major `[groups, experts]`, as the derived
/// space names its dimensions.
fn coefficient_names(space: &Space, granularity: CoefficientGranularity) -> Vec<String> {
    let models = space.models.as_ref().expect("a zoo space has models");
    let by_group = granularity != CoefficientGranularity::Task;
    models
        .groups
        .iter()
        .flat_map(|g| {
            models.labels.iter().map(move |e| {
                if by_group {
                    format!("weight[{e},{g}]")
                } else {
                    format!("weight[{e}]")
                }
            })
        })
        .collect()
}

/// Runs AdaMerging on the zoo space `space`, writing the run to `out` (which must not hold a
/// run). `progress` shows the steps and the loss.
pub fn adamerge<B: AutodiffBackend>(
    space: &Space,
    options: &AdaMergeOptions,
    out: &Path,
    device: &B::Device,
    progress: &ProgressBar,
) -> Result<AdaMergeOutcome, AdaMergeError> {
    options.check()?;
    let space = derived_space(space, options, progress)?;
    progress.set_message("loading the tasks");
    let tasks = TaskSource::of(&space)?.read(options.split)?;
    let scorer = tasks.scorer::<B>(device)?;
    // Whole-split scoring runs on the inner backend, away from the autodiff graph.
    let reporter = tasks.scorer::<B::InnerBackend>(device)?;
    drop(tasks); // the scorers hold the images now
    let models = space.models.as_ref().expect("a zoo space has models");
    let merger = models.merger::<B::InnerBackend>(device)?;
    let merge = DifferentiableMerge::<B>::new(&merger, options.ties);
    let (groups, experts) = (merge.groups(), merge.experts());
    let names = coefficient_names(&space, options.granularity);
    debug_assert_eq!(names.len(), groups * experts);

    let objectives = vec![Objective::new(LOSS, Direction::Minimize)];
    let _lock = lock_run_dir(out, false, progress)?;
    let mut info = prepare_dir(out, false, run_info(&space, "adamerge", objectives)?)?;
    let mut journal = Journal::open(out)?;
    let record = |id: u64, x: &[f64], scores, started| -> Result<TrialRecord, AdaMergeError> {
        let params: Map<String, Value> = names
            .iter()
            .zip(x)
            .map(|(n, &v)| (n.clone(), Value::from(v)))
            .collect();
        let point = space
            .encode(&params)
            .map_err(|e| AdaMergeError::Option(format!("coefficients outside the space: {e}")))?;
        let scores: std::collections::BTreeMap<String, Score> = scores;
        let loss = scores.get(LOSS).map(|s| s.value);
        Ok(TrialRecord {
            id,
            generation: id,
            status: Status::Ok,
            params: space
                .decode(&point)
                .map_err(|e| AdaMergeError::Option(format!("coefficients outside the space: {e}")))?
                .params,
            point,
            scores,
            scalar: loss.map(|l| -l),
            merge_seconds: 0.0,
            eval_seconds: now() - started,
            started,
            finished: now(),
            error: None,
            predicted: None,
            items: None,
            rungs: Vec::new(),
        }
        .with_finite_values())
    };

    let (low, high) = options.bounds();
    let inner = |t: Tensor<B, 2>| t.inner();
    let mut x = inner(Tensor::full([groups, experts], options.init, device));
    let mut adam = Adam::new([groups, experts], options.lr, device);
    let objective = EntropyObjective::new(&merge, &scorer, options.batch);
    let tasks = scorer.task_names().to_vec();
    let initial = reporter.score_tensors(merge.merged(&x, &x))?;
    progress.set_length(options.steps as u64);
    progress.set_position(0);
    let mut trials = Vec::with_capacity(options.steps + 1);
    // A step's record is read back after the next step is queued, so that a device never waits
    // for the host between steps.
    let mut pending: Option<Pending<B::InnerBackend>> = None;
    let mut finish =
        |p: Pending<B::InnerBackend>, trials: &mut Vec<TrialRecord>| -> Result<(), AdaMergeError> {
            let read = Transaction::default()
                .register(p.x)
                .register(p.per_task)
                .execute();
            let x: Vec<f64> = read[0].iter::<f32>().map(shortest).collect();
            let per_task: Vec<f64> = read[1].iter::<f64>().collect();
            let total: f64 = per_task.iter().sum();
            let trial = record(
                p.step,
                &x,
                task_scores(&tasks, &per_task, total, None),
                p.started,
            )?;
            journal.append(&trial)?;
            trials.push(trial);
            progress.inc(1);
            progress.set_message(format!("entropy {total:.4}"));
            Ok(())
        };
    let clock = Instant::now();
    let mut after_first = None;
    for step in 0..options.steps {
        let started = now();
        let indices = sample_batch(scorer.datasets(), options.batch, options.seed, step as u64);
        let step_result = objective.gradient(&x, &indices)?;
        let next = adam.step(x.clone(), step_result.coefficients, low, high);
        if let Some(p) = pending.take() {
            finish(p, &mut trials)?;
        }
        pending = Some(Pending {
            step: step as u64,
            x,
            per_task: step_result.entropies,
            started,
        });
        x = next;
        after_first.get_or_insert_with(Instant::now);
    }
    if let Some(p) = pending.take() {
        finish(p, &mut trials)?;
    }
    let first_step_seconds = after_first.map_or(0.0, |t| (t - clock).as_secs_f64());
    let seconds_per_step = match after_first {
        Some(t) if options.steps > 1 => t.elapsed().as_secs_f64() / (options.steps - 1) as f64,
        _ => first_step_seconds,
    };
    let started = now();
    let learned = reporter.score_tensors(merge.merged(&x, &x))?;
    let x: Vec<f64> = x.into_data().iter::<f32>().map(shortest).collect();
    let entropies: Vec<f64> = learned.iter().map(|s| s.entropy).collect();
    let total = entropies.iter().sum();
    // Accuracy only where every task has labels (a benchmark of your own may have none).
    let labelled = reporter.labelled().iter().all(|&l| l);
    let scores = task_scores(&tasks, &entropies, total, labelled.then_some(&learned[..]));
    let last = record(options.steps as u64, &x, scores, started)?;
    journal.append(&last)?;
    let decoded = space
        .decode(&last.point)
        .map_err(|e| AdaMergeError::Option(format!("coefficients outside the space: {e}")))?;
    trials.push(last.clone());
    write_trials(out, &trials, &info.dimensions)?;
    update_front(out, &mut info, &trials, options.steps as u64 + 1)?;
    Ok(AdaMergeOutcome {
        dir: out.to_path_buf(),
        plan: decoded.plan.expect("a zoo space decodes to a merge"),
        params: decoded.params,
        space,
        tasks,
        labelled,
        initial,
        learned,
        seconds_per_step,
        first_step_seconds,
    })
}

/// The f64 with the shortest decimal form that rounds to `v`: a coefficient learned in f32 is
/// recorded as `0.3`, not `0.30000001192092896`.
fn shortest(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// A step whose record waits to be read back: its coefficients (before its update) and each
/// task's entropy, on the device.
struct Pending<I: Backend> {
    step: u64,
    x: Tensor<I, 2>,
    per_task: Tensor<I, 1>,
    started: f64,
}

/// The scores of a step: the loss, each task's entropy, and (for the final evaluation) each
/// task's and the mean accuracy.
fn task_scores(
    tasks: &[String],
    entropies: &[f64],
    total: f64,
    accuracy: Option<&[TaskScores]>,
) -> std::collections::BTreeMap<String, Score> {
    let score = |value| Score {
        value,
        stderr: None,
    };
    let mut scores = std::collections::BTreeMap::new();
    scores.insert(LOSS.to_string(), score(total));
    for (task, &h) in tasks.iter().zip(entropies) {
        scores.insert(format!("{task}/entropy"), score(h));
    }
    if let Some(all) = accuracy {
        for (task, s) in tasks.iter().zip(all) {
            scores.insert(format!("{task}/accuracy"), score(s.accuracy));
        }
        let mean = all.iter().map(|s| s.accuracy).sum::<f64>() / all.len().max(1) as f64;
        scores.insert("mean/accuracy".into(), score(mean));
    }
    scores
}
