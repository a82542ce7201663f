//! `mergesearch compare SPACE`: the same budget for several optimizers over several seeds, and
//! per optimizer the median of the best scalar score, that trial's held-out test score (zoo
//! spaces), the hypervolume of the run's front against one reference point shared by all runs,
//! and how far the surrogate's predictions were from the measured scores.
//!
//! On zoo spaces it also measures what noise does to the choice of the best trial: the best
//! scalar comes from validation *subsets*, so it overstates the merge's quality by the luck of
//! the subsets. The `--rescore-top` best trials are scored again on the whole validation split,
//! and the one best there is scored on the test split too; both choices' validation-test gaps
//! are reported.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use super::demo::zoo_of;
use super::rescore::{rescore_top, trial_accuracy};
use super::sweep::{Axis, GridRun, run_grid};
use super::{load_space, progress_bar};
use crate::device::DeviceSpec;
use crate::eval::Objective;
use crate::pareto::{hypervolume, reference_point};
use crate::record::{RUN_FILE, RunInfo, TrialRecord, front, objective_points, read_json};
use crate::space::DEFAULT_REDUCTION;
use crate::study::PREDICTED_SCALAR;
use crate::zoo::baselines::Baselines;
use crate::zoo::tasks::Split;

/// What `mergesearch compare` was asked.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The search space.
    pub space: PathBuf,
    /// The optimizers, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,cmaes,gp,map,nsga2"
    )]
    pub optimizers: Vec<String>,
    /// Run seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Trials per run.
    #[arg(long, default_value_t = 100)]
    pub budget: usize,
    /// The folder of the runs (each resumed when it is there already) and of compare.md.
    #[arg(long, default_value = "results/compare")]
    pub out: PathBuf,
    /// Compute device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Trials evaluated at once.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Zoo spaces: re-score this many of each run's best trials on the whole validation split
    /// and report the test score of the one best there (0: do not).
    #[arg(long, default_value_t = 5)]
    pub rescore_top: usize,
    /// The fidelity rungs (items per task) of optimizers named with `+sh` (successive halving,
    /// e.g. `cmaes+sh`), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "25,100,400")]
    pub fidelity: Vec<usize>,
    /// The reduction factor of `+sh` optimizers: a third of each rung goes on by default.
    #[arg(long, default_value_t = DEFAULT_REDUCTION)]
    pub reduction: f64,
    /// Give every run the same evaluation cost instead of the same number of trials: this many
    /// items scored in all (over every trial and rung), so that `+sh` runs compare at equal cost.
    #[arg(long)]
    pub cost_items: Option<u64>,
}

/// The suffix of an optimizer run with successive halving over `--fidelity`.
const HALVING: &str = "+sh";

/// A zoo run's held-out numbers (mean accuracy over the tasks).
#[derive(Debug, Clone, Copy)]
struct Heldout {
    /// The test score of the trial with the best scalar.
    test: f64,
    /// Of the `--rescore-top` best trials, the one best on the whole validation split: its
    /// score there and on the test split.
    rescored: Option<(f64, f64)>,
}

/// One run's numbers.
struct Measured {
    optimizer: String,
    seed: String,
    /// Trials and items scored.
    trials: usize,
    items: Option<u64>,
    best: f64,
    heldout: Option<Heldout>,
    hypervolume: f64,
    surrogate_error: Option<f64>,
    /// From the first trial's start to the last one's end.
    seconds: f64,
}

/// Runs the comparison and prints (and writes `compare.md` in `out`) its tables.
pub fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for optimizer in &args.optimizers {
        let (name, halving) = match optimizer.strip_suffix(HALVING) {
            Some(name) => (name, true),
            None => (optimizer.as_str(), false),
        };
        let axis = |key: &str, value: String| Axis {
            key: key.into(),
            values: vec![value],
        };
        let mut axes = Vec::new();
        if halving {
            let items: Vec<String> = args.fidelity.iter().map(usize::to_string).collect();
            axes.push(axis("fidelity.items", format!("[{}]", items.join(","))));
            axes.push(axis("fidelity.reduction", format!("{:?}", args.reduction)));
        }
        if let Some(items) = args.cost_items {
            axes.push(axis("budget.items", items.to_string()));
        }
        axes.push(axis("optimizer", name.to_string()));
        axes.push(Axis {
            key: "seed".into(),
            values: args.seeds.iter().map(u64::to_string).collect(),
        });
        // With a cost budget the number of trials is whatever the cost allows.
        let trials = if args.cost_items.is_some() {
            i64::MAX as usize
        } else {
            args.budget
        };
        let grid = run_grid(
            &args.space,
            &axes,
            "cmaes",
            &args.out,
            args.device,
            args.workers,
            Some(trials),
        )?;
        runs.extend(grid.into_iter().map(|run| (optimizer.clone(), run)));
    }
    let (labels, runs): (Vec<String>, Vec<GridRun>) = runs.into_iter().unzip();
    let info: RunInfo = read_json(&runs[0].dir.join(RUN_FILE))?;
    let reference = shared_reference(&runs, &info.objectives)?;
    let heldout = heldout_scores(args, &runs)?;
    let measured: Vec<Measured> = runs
        .iter()
        .zip(heldout)
        .zip(labels)
        .map(|((run, heldout), label)| measure(run, label, heldout, &info.objectives, &reference))
        .collect::<anyhow::Result<_>>()?;
    let report = report(args, &info.objectives, &reference, &measured);
    print!("{report}");
    let path = args.out.join("compare.md");
    std::fs::write(&path, &report).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The reference point of every run's hypervolume: the default rule over all runs' points
/// together, so that the runs' hypervolumes can be compared.
fn shared_reference(runs: &[GridRun], objectives: &[Objective]) -> anyhow::Result<Vec<f64>> {
    let all: Vec<Vec<f64>> = runs
        .iter()
        .flat_map(|r| objective_points(&r.summary.trials, objectives).1)
        .collect();
    reference_point(&all).context("no run has a successful trial to compare")
}

/// For a zoo space, each run's [`Heldout`] numbers (else `None`s).
fn heldout_scores(args: &CompareArgs, runs: &[GridRun]) -> anyhow::Result<Vec<Option<Heldout>>> {
    let space = load_space(&args.space, &[], None, None)?;
    let Some(models) = space.models.as_ref().filter(|m| zoo_of(m).is_ok()) else {
        return Ok(vec![None; runs.len()]);
    };
    let zoo = zoo_of(models)?;
    let device = args.device.open()?;
    crate::with_backend!(device, |B, device| {
        let baselines = Baselines::<B>::open(&zoo, &models.granularity, &device)?;
        let accuracy =
            |trial: &TrialRecord, split| trial_accuracy(&space, &baselines, trial, split);
        let progress = progress_bar("held-out scores", "scorings");
        progress.set_length((runs.len() * (args.rescore_top + 2)) as u64);
        let heldout = runs
            .iter()
            .map(|run| {
                let Some(best) = run.summary.best() else {
                    return Ok(None);
                };
                let test = accuracy(best, Split::Test)?;
                progress.inc(1);
                let chosen = rescore_top(
                    &space,
                    &baselines,
                    &run.summary.trials,
                    args.rescore_top,
                    || progress.inc(1),
                )?;
                let rescored = match chosen {
                    Some(c) if c.trial.id == best.id => Some((c.validation, test)),
                    Some(c) => Some((c.validation, accuracy(c.trial, Split::Test)?)),
                    None => None,
                };
                progress.inc(1);
                Ok(Some(Heldout { test, rescored }))
            })
            .collect();
        progress.finish_and_clear();
        heldout
    })
}

/// One run's numbers.
fn measure(
    run: &GridRun,
    optimizer: String,
    heldout: Option<Heldout>,
    objectives: &[Objective],
    reference: &[f64],
) -> anyhow::Result<Measured> {
    let setting = |key: &str| {
        run.settings
            .iter()
            .find(|(k, _)| k == key)
            .map_or_else(String::new, |(_, v)| v.clone())
    };
    let trials = &run.summary.trials;
    let (_, points) = front(trials, objectives);
    let hypervolume = if points.is_empty() {
        0.0
    } else {
        hypervolume(&points, reference)?
    };
    let errors: Vec<f64> = trials
        .iter()
        .filter_map(|t| {
            let predicted = t.predicted.as_ref()?;
            let errors: Vec<f64> = predicted
                .iter()
                .filter_map(|(name, p)| {
                    let measured = match t.scores.get(name) {
                        Some(score) => score.value,
                        None if name == PREDICTED_SCALAR => t.scalar?,
                        None => return None,
                    };
                    Some((measured - p).abs())
                })
                .collect();
            (!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64)
        })
        .collect();
    Ok(Measured {
        optimizer,
        seed: setting("seed"),
        trials: trials.len(),
        items: trials.iter().map(|t| t.items).sum(),
        best: run
            .summary
            .best()
            .and_then(|b| b.scalar)
            .unwrap_or(f64::NAN),
        heldout,
        hypervolume,
        surrogate_error: (!errors.is_empty())
            .then(|| errors.iter().sum::<f64>() / errors.len() as f64),
        // From the trials' own clocks: a resumed run's invocation may have taken no time.
        seconds: trials
            .iter()
            .map(|t| t.finished)
            .fold(f64::NEG_INFINITY, f64::max)
            - trials
                .iter()
                .map(|t| t.started)
                .fold(f64::INFINITY, f64::min),
    })
}

/// The median of `values` (NaN when empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn cell(value: Option<f64>, digits: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "—".into(),
    }
}

/// A hypervolume, in scientific notation (with many objectives it is a product of many small
/// ranges).
fn volume(value: f64) -> String {
    format!("{value:.4e}")
}

/// The report's columns after the optimizer (and seed).
const COLUMNS: &str = "best scalar (validation) | its test score | gap | rescored: test score | rescored: gap | hypervolume | surrogate error | trials | items scored | seconds";

impl Measured {
    fn test(&self) -> Option<f64> {
        self.heldout.map(|h| h.test)
    }

    /// The rescored trial's whole-validation and test scores.
    fn rescored(&self) -> Option<(f64, f64)> {
        self.heldout?.rescored
    }
}

/// The Markdown report: medians per optimizer, then every run.
fn report(
    args: &CompareArgs,
    objectives: &[Objective],
    reference: &[f64],
    measured: &[Measured],
) -> String {
    let mut out = String::new();
    let names: Vec<&str> = objectives.iter().map(|o| o.name.as_str()).collect();
    let budget = match args.cost_items {
        Some(items) => {
            format!("{items} items scored per run (the batch that reaches it completes)")
        }
        None => format!("{} trials per run", args.budget),
    };
    let _ = writeln!(
        out,
        "{}: {budget}, seeds {:?}; medians over seeds.\n\nHypervolume: of each run's front over {} objectives ({}), against one reference point for all runs (the worst value over all runs minus 10% of the range, per objective).\n",
        args.space.display(),
        args.seeds,
        names.len(),
        names.join(", "),
    );
    if args.rescore_top > 0 {
        let _ = writeln!(
            out,
            "Rescored: of each run's {} best trials by scalar, the one with the best mean accuracy on the whole validation split (zoo spaces); gaps are validation minus test.\n",
            args.rescore_top
        );
    }
    if args.optimizers.iter().any(|o| o.ends_with(HALVING)) {
        let _ = writeln!(
            out,
            "`{HALVING}`: successive halving within each batch over rungs of {:?} items per task, the best 1/{} of a rung going on to the next; its best scalar is the best at the highest rung.\n",
            args.fidelity, args.reduction
        );
    }
    let _ = writeln!(
        out,
        "| optimizer | {COLUMNS} |\n|---|{}",
        "---:|".repeat(10)
    );
    let mut by_optimizer: BTreeMap<&str, Vec<&Measured>> = BTreeMap::new();
    for m in measured {
        by_optimizer.entry(&m.optimizer).or_default().push(m);
    }
    for optimizer in &args.optimizers {
        let Some(runs) = by_optimizer.get(optimizer.as_str()) else {
            continue;
        };
        let med = |f: &dyn Fn(&Measured) -> Option<f64>| {
            let values: Vec<f64> = runs.iter().filter_map(|m| f(m)).collect();
            (!values.is_empty()).then(|| median(values))
        };
        let _ = writeln!(
            out,
            "| {optimizer} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(med(&|m| Some(m.best)), 4),
            cell(med(&|m| m.test()), 4),
            cell(med(&|m| Some(m.best - m.test()?)), 4),
            cell(med(&|m| Some(m.rescored()?.1)), 4),
            cell(med(&|m| m.rescored().map(|(v, t)| v - t)), 4),
            med(&|m| Some(m.hypervolume)).map_or_else(|| "—".into(), volume),
            cell(med(&|m| m.surrogate_error), 4),
            cell(med(&|m| Some(m.trials as f64)), 0),
            cell(med(&|m| m.items.map(|i| i as f64)), 0),
            cell(med(&|m| Some(m.seconds)), 0),
        );
    }
    let _ = writeln!(
        out,
        "\nSurrogate error: mean absolute difference between the score the optimizer's model predicted when it proposed a trial and the score measured (model-based optimizers only).\n\n| optimizer | seed | {COLUMNS} |\n|---|---:|{}",
        "---:|".repeat(10)
    );
    for m in measured {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m.optimizer,
            m.seed,
            cell(Some(m.best), 4),
            cell(m.test(), 4),
            cell(m.test().map(|t| m.best - t), 4),
            cell(m.rescored().map(|(_, t)| t), 4),
            cell(m.rescored().map(|(v, t)| v - t), 4),
            volume(m.hypervolume),
            cell(m.surrogate_error, 4),
            m.trials,
            m.items.map_or_else(|| "—".into(), |i| i.to_string()),
            cell(Some(m.seconds), 0),
        );
    }
    let _ = writeln!(out, "\nReference point (maximized form): {reference:?}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_skip_missing_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, f64::NAN, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
