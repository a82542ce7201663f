//! The built-in `zoo` evaluator: the candidate encoder with each task's own head, scored per task
//! on a split (or a subset of it) by accuracy, cross-entropy and mean prediction entropy (the
//! label-free AdaMerging surrogate), batched on the device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::evaluator::{
    Cost, Direction, Evaluation, Evaluator, Failure, Objective, Outcome, Score, Trial,
};
use super::subset::{Strategy, Subset, SubsetSpec};
use super::{EvalConfigError, EvalContext};
use crate::checkpoint::Model;
use crate::merge::Candidate;
use crate::vision::benchmark::VisionBenchmark;
use crate::zoo::build::{ZooConfig, ZooError, build, read_manifest};
use crate::zoo::evaluate::{ItemScores, ZooScorer, read_all};
use crate::zoo::tasks::Split;

/// A per-item measure the zoo evaluator reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Fraction classified correctly (maximize).
    Accuracy,
    /// Mean negative log-probability of the true label (minimize).
    CrossEntropy,
    /// Mean Shannon entropy of the predictions, label-free (minimize).
    Entropy,
}

impl Metric {
    /// The name in objective names.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::CrossEntropy => "cross_entropy",
            Metric::Entropy => "entropy",
        }
    }

    /// Which way is better.
    pub fn direction(self) -> Direction {
        match self {
            Metric::Accuracy => Direction::Maximize,
            Metric::CrossEntropy | Metric::Entropy => Direction::Minimize,
        }
    }

    /// Each item's value.
    pub fn values(self, items: &ItemScores) -> Vec<f64> {
        match self {
            Metric::Accuracy => items
                .correct
                .iter()
                .map(|&c| f64::from(u8::from(c)))
                .collect(),
            Metric::CrossEntropy => items.log_p_true.iter().map(|&l| -f64::from(l)).collect(),
            Metric::Entropy => items.entropy.iter().map(|&e| f64::from(e)).collect(),
        }
    }
}

/// The `zoo` evaluator's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZooEvalConfig {
    /// Name in messages (default `zoo`).
    #[serde(default)]
    pub name: Option<String>,
    /// The zoo directory; built with the default config when missing.
    #[serde(default = "default_zoo_dir")]
    pub zoo: PathBuf,
    /// `kind = "vision"`: the benchmark file of your own tasks (see [`crate::vision::benchmark`]).
    #[serde(default)]
    pub benchmark: Option<PathBuf>,
    /// The split scored.
    #[serde(default = "default_split")]
    pub split: Split,
    /// The tasks scored (default: all, in the zoo's order).
    #[serde(default)]
    pub tasks: Option<Vec<String>>,
    /// The measures reported, each per task (`<task>/<metric>`) and averaged (`mean/<metric>`).
    #[serde(default = "default_metrics")]
    pub metrics: Vec<Metric>,
    /// Score a subset of each task's split instead of all of it.
    #[serde(default)]
    pub subset: Option<SubsetSpec>,
}

/// Where the zoo is built by default.
pub fn default_zoo_dir() -> PathBuf {
    PathBuf::from("results/zoo")
}

fn default_split() -> Split {
    Split::Validation
}

fn default_metrics() -> Vec<Metric> {
    vec![Metric::Accuracy]
}

/// Scores candidates of the zoo's encoder.
pub struct ZooEvaluator<B: Backend> {
    name: String,
    scorer: ZooScorer<B>,
    /// The selected tasks: zoo index and name.
    selected: Vec<(usize, String)>,
    /// The items scored when a trial asks for no size: the configured subset or whole split.
    own: Draw,
    /// How subsets of other sizes (fidelity rungs) are drawn: the configured subset's seed and
    /// strategy, else stratified with seed 0.
    spec: SubsetSpec,
    /// The drawn subsets by items per task, drawn on first use.
    rungs: BTreeMap<usize, Draw>,
    /// The anchors' panel features per zoo task, for anchor subsets.
    panel: Option<Vec<Vec<Vec<f32>>>>,
    metrics: Vec<Metric>,
    stderr_estimated: bool,
    objectives: Vec<Objective>,
}

/// The subsets scored for one size: per selected task its subset, and per zoo task the items
/// (empty for tasks not selected), as the scorer takes them.
struct Draw {
    subsets: Vec<Subset>,
    items: Vec<Vec<usize>>,
}

impl<B: Backend> ZooEvaluator<B> {
    /// Opens (building it first if missing) the zoo and draws the subsets.
    pub fn new(
        config: &ZooEvalConfig,
        context: &EvalContext,
        device: &B::Device,
    ) -> Result<ZooEvaluator<B>, EvalConfigError> {
        let name = config.name.clone().unwrap_or_else(|| "zoo".into());
        let fail = |key: &str, problem: String| EvalConfigError::new(&name, key, problem);
        let zoo_error = |e: ZooError| fail("zoo", e.to_string());
        check_options(config, &name)?;
        if config.benchmark.is_some() {
            return Err(fail(
                "benchmark",
                "is for kind = \"vision\" (your own tasks); the zoo brings its own".into(),
            ));
        }
        ensure_built(&config.zoo, &context.progress).map_err(zoo_error)?;
        let scorer = ZooScorer::open(&config.zoo, config.split, device).map_err(zoo_error)?;
        let panel = match config.subset {
            Some(spec) if spec.strategy == Strategy::Anchors => Some(
                panel_features(&config.zoo, &scorer, &context.progress)
                    .map_err(|e| fail("subset", format!("cannot score the anchors' panel: {e}")))?,
            ),
            _ => None,
        };
        ZooEvaluator::with_scorer(name, config, scorer, panel)
    }

    /// The `vision` evaluator: the tasks of the benchmark file `config.benchmark` on the
    /// space's base model (a Hugging Face ViT or CLIP vision model), and the subsets drawn.
    pub fn vision(
        config: &ZooEvalConfig,
        context: &EvalContext,
        device: &B::Device,
    ) -> Result<ZooEvaluator<B>, EvalConfigError> {
        let name = config.name.clone().unwrap_or_else(|| "vision".into());
        let fail = |key: &str, problem: String| EvalConfigError::new(&name, key, problem);
        check_options(config, &name)?;
        let file = config.benchmark.as_ref().ok_or_else(|| {
            fail(
                "benchmark",
                "is missing: the TOML file listing each task's head and images".into(),
            )
        })?;
        if config
            .subset
            .is_some_and(|s| s.strategy == Strategy::Anchors)
        {
            return Err(fail(
                "subset.strategy",
                "anchors needs the built-in zoo's panel: use random or stratified".into(),
            ));
        }
        let base = context.base.as_ref().ok_or_else(|| {
            fail(
                "benchmark",
                "needs the space's [models] base: a Hugging Face ViT or CLIP vision model".into(),
            )
        })?;
        let scorer = VisionBenchmark::read(file)
            .and_then(|b| b.scorer(base, config.split, device))
            .map_err(|e| fail("benchmark", e.to_string()))?;
        let needs_labels = config.metrics.iter().find(|m| **m != Metric::Entropy);
        let unlabelled = scorer
            .task_names()
            .iter()
            .zip(scorer.labelled())
            .find(|(_, l)| !**l);
        if let (Some(metric), Some((task, _))) = (needs_labels, unlabelled) {
            return Err(fail(
                "metrics",
                format!(
                    "{} needs labels, and task {task:?} has none (labels.txt in its image folder, or a labels tensor); entropy needs none",
                    metric.name()
                ),
            ));
        }
        ZooEvaluator::with_scorer(name, config, scorer, None)
    }

    /// The evaluator of `config`'s tasks, metrics and subsets on `scorer`.
    fn with_scorer(
        name: String,
        config: &ZooEvalConfig,
        scorer: ZooScorer<B>,
        panel: Option<Vec<Vec<Vec<f32>>>>,
    ) -> Result<ZooEvaluator<B>, EvalConfigError> {
        let fail = |key: &str, problem: String| EvalConfigError::new(&name, key, problem);
        let names = scorer.task_names().to_vec();
        let wanted = config.tasks.clone().unwrap_or_else(|| names.clone());
        if wanted.is_empty() {
            return Err(fail(
                "tasks",
                "is empty: leave it out to score every task".into(),
            ));
        }
        let mut selected = Vec::new();
        for task in &wanted {
            let index = names.iter().position(|n| n == task).ok_or_else(|| {
                fail(
                    "tasks",
                    format!("names {task:?}, which is not one of the tasks {names:?}"),
                )
            })?;
            selected.push((index, task.clone()));
        }
        let spec = config.subset.unwrap_or(SubsetSpec {
            size: usize::MAX,
            seed: 0,
            strategy: Strategy::Stratified,
        });
        let own = draw(&scorer, &selected, &spec, panel.as_ref());
        let mut objectives = Vec::new();
        for metric in &config.metrics {
            for (_, task) in &selected {
                objectives.push(Objective::new(
                    format!("{task}/{}", metric.name()),
                    metric.direction(),
                ));
            }
            objectives.push(Objective::new(
                format!("mean/{}", metric.name()),
                metric.direction(),
            ));
        }
        Ok(ZooEvaluator {
            name,
            scorer,
            selected,
            own,
            spec,
            rungs: BTreeMap::new(),
            panel,
            metrics: config.metrics.clone(),
            stderr_estimated: config
                .subset
                .is_none_or(|s| s.strategy != Strategy::Anchors),
            objectives,
        })
    }

    /// Every objective's score for `candidate` on the evaluator's own items.
    pub fn score(&self, candidate: &Candidate<B>) -> Result<BTreeMap<String, Score>, ZooError> {
        self.score_draw(candidate, &self.own)
    }

    /// Draws the subsets of `size` items per task unless drawn already.
    fn prepare(&mut self, size: Option<usize>) {
        if let Some(size) = size
            && !self.rungs.contains_key(&size)
        {
            let spec = SubsetSpec { size, ..self.spec };
            let drawn = draw(&self.scorer, &self.selected, &spec, self.panel.as_ref());
            self.rungs.insert(size, drawn);
        }
    }

    /// The items scored for `size` items per task (`None`: the evaluator's own), once prepared.
    fn draw_for(&self, size: Option<usize>) -> &Draw {
        size.map_or(&self.own, |size| &self.rungs[&size])
    }

    fn score_draw(
        &self,
        candidate: &Candidate<B>,
        draw: &Draw,
    ) -> Result<BTreeMap<String, Score>, ZooError> {
        let scored = self
            .scorer
            .score_items(candidate.tensors.clone(), &draw.items)?;
        let mut scores = BTreeMap::new();
        for metric in &self.metrics {
            let (mut total, mut variance) = (0.0, 0.0);
            for ((index, task), subset) in self.selected.iter().zip(&draw.subsets) {
                let (value, stderr) = subset.estimate(&metric.values(&scored[*index]));
                let stderr = stderr.filter(|_| self.stderr_estimated);
                total += value;
                variance += stderr.unwrap_or(0.0).powi(2);
                scores.insert(format!("{task}/{}", metric.name()), Score { value, stderr });
            }
            let n = self.selected.len() as f64;
            scores.insert(
                format!("mean/{}", metric.name()),
                Score {
                    value: total / n,
                    stderr: self.stderr_estimated.then(|| variance.sqrt() / n),
                },
            );
        }
        Ok(scores)
    }

    /// Items scored per candidate, over all selected tasks.
    pub fn items_per_candidate(&self) -> u64 {
        self.own.items_scored()
    }
}

impl Draw {
    fn items_scored(&self) -> u64 {
        self.subsets.iter().map(|s| s.len() as u64).sum()
    }
}

/// The subsets `spec` describes for the selected tasks (the whole split where it has fewer
/// items than `spec.size`).
fn draw<B: Backend>(
    scorer: &ZooScorer<B>,
    selected: &[(usize, String)],
    spec: &SubsetSpec,
    panel: Option<&Vec<Vec<Vec<f32>>>>,
) -> Draw {
    let mut items = vec![Vec::new(); scorer.datasets().len()];
    let subsets = selected
        .iter()
        .map(|(index, task)| {
            let data = &scorer.datasets()[*index];
            let subset = if spec.size >= data.len() {
                Subset::all(data.len())
            } else {
                Subset::draw(spec, task, &data.labels, || {
                    panel.expect("anchors have a panel")[*index].clone()
                })
            };
            items[*index] = subset.items.clone();
            subset
        })
        .collect();
    Draw { subsets, items }
}

impl<B: Backend> Evaluator<B> for ZooEvaluator<B> {
    fn name(&self) -> &str {
        &self.name
    }

    fn objectives(&self) -> &[Objective] {
        &self.objectives
    }

    fn takes_items(&self) -> bool {
        true
    }

    fn evaluate(&mut self, trial: &Trial<'_, B>) -> Outcome {
        let started = Instant::now();
        let cost = |items| Cost {
            seconds: started.elapsed().as_secs_f64(),
            items,
            attempts: 1,
        };
        let result = match trial.candidate {
            None => Err(
                "the trial has no merged model (the zoo evaluator needs the zoo's models)"
                    .to_string(),
            ),
            Some(candidate) => {
                self.prepare(trial.items);
                let draw = self.draw_for(trial.items);
                self.score_draw(candidate, draw)
                    .map(|scores| (scores, draw.items_scored()))
                    .map_err(|e| e.to_string())
            }
        };
        match result {
            Ok((scores, items)) => Ok(Evaluation {
                scores,
                cost: cost(Some(items)),
            }),
            Err(reason) => Err(Failure {
                reason: format!("{}: {reason}", self.name),
                cost: cost(None),
            }),
        }
    }
}

/// Builds the zoo in `dir` with the default config unless a readable one drawn from this
/// version's random streams is already there (one from other streams is rebuilt from its config).
pub fn ensure_built(dir: &Path, progress: &ProgressBar) -> Result<(), ZooError> {
    let config = match read_manifest(dir) {
        Ok(Some(manifest)) if manifest.is_built_from(&manifest.config) => return Ok(()),
        // Drawn from other random streams (an older mergesearch): rebuilt from its own config.
        Ok(Some(manifest)) => manifest.config,
        _ => ZooConfig::default(),
    };
    progress.set_message(format!("building the zoo in {} (once)", dir.display()));
    build(dir, &config, progress)?;
    Ok(())
}

/// For each task and item of the scorer's split, the probability that each panel model (the base,
/// Checks the options every zoo-style evaluator shares.
fn check_options(config: &ZooEvalConfig, name: &str) -> Result<(), EvalConfigError> {
    if config.metrics.is_empty() {
        return Err(EvalConfigError::new(
            name,
            "metrics",
            "is empty: list at least one of accuracy, cross_entropy, entropy".into(),
        ));
    }
    if config.subset.is_some_and(|s| s.size == 0) {
        return Err(EvalConfigError::new(
            name,
            "subset.size",
            "must be at least 1".into(),
        ));
    }
    Ok(())
}

/// then every expert) gives the true label: the items' features for anchor selection. Cached in
/// the zoo directory (`panel-<split>.json`) since it costs one full evaluation per panel model.
pub fn panel_features<B: Backend>(
    zoo: &Path,
    scorer: &ZooScorer<B>,
    progress: &ProgressBar,
) -> Result<Vec<Vec<Vec<f32>>>, ZooError> {
    let manifest = scorer.zoo_manifest("the anchors subset strategy")?;
    let split = scorer.split();
    let cache = zoo.join(format!("panel-{}.json", split.name()));
    if let Ok(text) = std::fs::read_to_string(&cache)
        && let Ok(features) = serde_json::from_str(&text)
    {
        return Ok(features);
    }
    let panel: Vec<&str> = std::iter::once(manifest.base.as_str())
        .chain(manifest.tasks.iter().map(|t| t.expert.as_str()))
        .collect();
    let all: Vec<Vec<usize>> = scorer
        .datasets()
        .iter()
        .map(|d| (0..d.len()).collect())
        .collect();
    let mut features: Vec<Vec<Vec<f32>>> = all
        .iter()
        .map(|items| vec![Vec::new(); items.len()])
        .collect();
    for (m, model) in panel.iter().enumerate() {
        progress.set_message(format!(
            "anchors: scoring panel model {}/{} ({model})",
            m + 1,
            panel.len()
        ));
        let model = Model::open(&zoo.join(model))?;
        let scored = scorer.score_items(read_all(&model, scorer.device())?, &all)?;
        for (task, items) in scored.iter().enumerate() {
            for (row, log_p) in features[task].iter_mut().zip(&items.log_p_true) {
                row.push(log_p.exp());
            }
        }
    }
    let staging = cache.with_extension("json.partial");
    let text = serde_json::to_string(&features).expect("features serialize");
    let io = |source| ZooError::Io {
        path: cache.clone(),
        source,
    };
    std::fs::write(&staging, text).map_err(io)?;
    std::fs::rename(&staging, &cache).map_err(io)?;
    Ok(features)
}
