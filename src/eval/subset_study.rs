//! How well subsets estimate a split's accuracy: random merges of the zoo are scored on every
//! item of the split, and each subset's (weighted) estimate is compared with the full score. The
//! subsets are drawn once per seed, as a search would draw them once per run, so the error
//! includes the bias of a fixed draw across merges.

use rand::Rng as _;
use std::fmt::Write as _;
use std::path::Path;

use burn::prelude::*;
use indicatif::ProgressBar;

use super::subset::{Strategy, Subset, SubsetSpec};
use super::zoo::panel_features;
use crate::checkpoint::Granularity;
use crate::merge::{MergePlan, Merger, Method, ParamValue};
use crate::rng::{Rng, derive_seed};
use crate::zoo::baselines::BaselineError;
use crate::zoo::build::model_set;
use crate::zoo::evaluate::ZooScorer;
use crate::zoo::tasks::Split;

/// What to measure.
#[derive(Debug, Clone)]
pub struct StudyConfig {
    /// Random merges scored.
    pub merges: usize,
    /// Subset sizes (items per task).
    pub sizes: Vec<usize>,
    /// Subset draws per strategy and size (seeds `0..draws`).
    pub draws: u64,
    /// The split whose accuracy is estimated.
    pub split: Split,
    /// Seed of the random merges.
    pub seed: u64,
}

/// The error of one strategy at one size, in accuracy points (percent).
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRow {
    /// The strategy.
    pub strategy: Strategy,
    /// Items per task.
    pub size: usize,
    /// Mean absolute error of the estimated average accuracy over the tasks.
    pub mean_error: f64,
    /// Mean absolute error of each task's estimated accuracy.
    pub task_error: f64,
    /// The largest error of the average accuracy seen.
    pub max_error: f64,
}

/// The study's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Study {
    /// One row per strategy and size.
    pub rows: Vec<StudyRow>,
    /// The lowest and highest full-split average accuracy among the merges (percent).
    pub accuracy_range: (f64, f64),
    /// Items per task in the full split.
    pub split_items: usize,
    /// Merges scored.
    pub merges: usize,
}

/// Runs the study on the zoo in `dir`.
pub fn subset_study<B: Backend>(
    dir: &Path,
    config: &StudyConfig,
    device: &B::Device,
    progress: &ProgressBar,
) -> Result<Study, BaselineError> {
    let scorer = ZooScorer::<B>::open(dir, config.split, device)?;
    let manifest = scorer.zoo_manifest("the subset study")?;
    let panel = panel_features(dir, &scorer, progress)?;
    let strategies = [Strategy::Random, Strategy::Stratified, Strategy::Anchors];
    // subsets[s][z][d][task]
    let subsets: Vec<Vec<Vec<Vec<Subset>>>> = strategies
        .iter()
        .map(|&strategy| {
            config
                .sizes
                .iter()
                .map(|&size| {
                    (0..config.draws)
                        .map(|seed| {
                            let spec = SubsetSpec {
                                size,
                                seed,
                                strategy,
                            };
                            manifest
                                .tasks
                                .iter()
                                .enumerate()
                                .map(|(t, task)| {
                                    let labels = &scorer.datasets()[t].labels;
                                    Subset::draw(&spec, &task.name, labels, || panel[t].clone())
                                })
                                .collect()
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let set = model_set(dir, manifest)?;
    let merger = Merger::<B>::load(
        &set,
        &Granularity::default(),
        device,
        &ProgressBar::hidden(),
    )?;
    let groups = merger.groups().names.len();
    let all: Vec<Vec<usize>> = scorer
        .datasets()
        .iter()
        .map(|d| (0..d.len()).collect())
        .collect();
    let tasks = all.len() as f64;
    let mut errors = vec![vec![(0.0, 0.0, 0.0f64); config.sizes.len()]; strategies.len()];
    let mut range = (f64::INFINITY, f64::NEG_INFINITY);
    let mut rng = Rng::new(derive_seed(config.seed, "subset-study/merges", 0));
    progress.set_length(config.merges as u64);
    progress.set_message("scoring random merges on the full split");
    for m in 0..config.merges {
        let plan = random_merge(&mut rng, set.experts.len(), groups, m % 2 == 1);
        let scored = scorer.score_items(merger.materialize(&plan)?.tensors, &all)?;
        let correct: Vec<Vec<f64>> = scored
            .iter()
            .map(|s| s.correct.iter().map(|&c| f64::from(u8::from(c))).collect())
            .collect();
        let full: Vec<f64> = correct
            .iter()
            .map(|c| c.iter().sum::<f64>() / c.len() as f64)
            .collect();
        let full_mean = full.iter().sum::<f64>() / tasks;
        range = (range.0.min(full_mean), range.1.max(full_mean));
        for (s, by_size) in subsets.iter().enumerate() {
            for (z, draws) in by_size.iter().enumerate() {
                for draw in draws {
                    let mut estimate_mean = 0.0;
                    let mut task_error = 0.0;
                    for (t, subset) in draw.iter().enumerate() {
                        let picked: Vec<f64> =
                            subset.items.iter().map(|&i| correct[t][i]).collect();
                        let estimate = subset.estimate(&picked).0;
                        estimate_mean += estimate / tasks;
                        task_error += (estimate - full[t]).abs() / tasks;
                    }
                    let error = (estimate_mean - full_mean).abs();
                    let cell = &mut errors[s][z];
                    cell.0 += error;
                    cell.1 += task_error;
                    cell.2 = cell.2.max(error);
                }
            }
        }
        progress.inc(1);
    }
    let count = (config.merges as u64 * config.draws).max(1) as f64;
    let mut rows = Vec::new();
    for (s, &strategy) in strategies.iter().enumerate() {
        for (z, &size) in config.sizes.iter().enumerate() {
            let (sum, task_sum, max) = errors[s][z];
            rows.push(StudyRow {
                strategy,
                size,
                mean_error: 100.0 * sum / count,
                task_error: 100.0 * task_sum / count,
                max_error: 100.0 * max,
            });
        }
    }
    Ok(Study {
        rows,
        accuracy_range: (100.0 * range.0, 100.0 * range.1),
        split_items: all.first().map_or(0, Vec::len),
        merges: config.merges,
    })
}

/// Task arithmetic with every expert's weight uniform in [0, 0.8]: one weight per expert, or one
/// per expert and layer group when `layerwise`.
fn random_merge(rng: &mut Rng, experts: usize, groups: usize, layerwise: bool) -> MergePlan {
    let mut plan = MergePlan::new(Method::TaskArithmetic, experts, 0);
    for expert in &mut plan.experts {
        let weight = if layerwise {
            ParamValue::PerGroup((0..groups).map(|_| 0.8 * rng.random::<f64>()).collect())
        } else {
            ParamValue::Number(0.8 * rng.random::<f64>())
        };
        expert.insert("weight".into(), weight);
    }
    plan
}

impl Study {
    /// The study as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Mean absolute error (accuracy points) of subset estimates against the full split \
             ({} items per task), over {} random task-arithmetic merges (average accuracy {:.1}–{:.1}%):\n\n",
            self.split_items, self.merges, self.accuracy_range.0, self.accuracy_range.1
        );
        out.push_str("| strategy | items per task | MAE of the average | MAE per task | worst error of the average |\n|---|---:|---:|---:|---:|\n");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {:.2} |",
                row.strategy.name(),
                row.size,
                row.mean_error,
                row.task_error,
                row.max_error
            );
        }
        out
    }
}
