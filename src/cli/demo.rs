//! `mergesearch demo`: the default job. Builds the zoo if it is missing, searches the default
//! space (task arithmetic with one weight per expert and layer group, scored on validation
//! subsets) with CMA-ES, and compares the best merge found with weight averaging, task
//! arithmetic at the paper's lambda and at the search's starting point (the lambda best on
//! validation) on the held-out test split, which the search never saw. The merge it recommends
//! is chosen with the noise in view (see [`super::rescore`]): the best of the top
//! [`RESCORE_TOP`] trials on the whole validation split, recorded in the run's
//! `selection.json` with its test score, which nothing reads to choose.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::prelude::Backend;

use super::rescore::rescore_top;
use super::study::{RunArgs, print_summary, run_space};
use crate::device::DeviceSpec;
use crate::merge::{MergePlan, Method, ParamValue};
use crate::record::{TrialRecord, write_json_atomic};
use crate::space::Models;
use crate::zoo::baselines::{Baselines, Row, Table};
use crate::zoo::tasks::Split;

/// The default space.
pub const DEFAULT_SPACE: &str = "search_spaces/zoo-layerwise.toml";

/// How many of the best trials the demo scores again on the whole validation split.
pub const RESCORE_TOP: usize = 5;

/// The run's `selection.json`: the merge the demo recommends and how it was chosen.
#[derive(Debug, serde::Serialize)]
struct Selection {
    /// The trial with the best scalar (validation subsets).
    best_by_scalar: u64,
    /// How many of the best trials were scored on the whole validation split.
    rescored_top: usize,
    /// The one of them best there: the recommended merge.
    chosen: u64,
    /// Its mean accuracy on the whole validation split.
    validation_accuracy: f64,
    /// Its mean accuracy on the test split: for the report only, never used to choose.
    test_accuracy: f64,
}

/// Runs the default job: the search into `out` (resumed if it is there), then the comparison.
pub fn run_demo(out: &Path, budget: Option<usize>, device: DeviceSpec) -> anyhow::Result<()> {
    let space = PathBuf::from(DEFAULT_SPACE);
    anyhow::ensure!(
        space.exists(),
        "{DEFAULT_SPACE} not found: run the demo from the repository root"
    );
    let args = RunArgs {
        space,
        optimizer: "cmaes".into(),
        budget,
        seed: None,
        set: Vec::new(),
        out: Some(out.to_path_buf()),
        resume: out.join(crate::record::RUN_FILE).exists(),
        device,
        workers: None,
        gpus: None,
        scratch: None,
        worker_processes: false,
        launcher: None,
        ray: None,
        ray_python: "python3".into(),
        max_failures: None,
        init_from: None,
    };
    let space = super::load_space(&args.space, &[], None, budget)?;
    let summary = run_space(&space, &args)?;
    print_summary(&summary);
    let best = summary.best().context("no trial succeeded")?;
    let models = space
        .models
        .as_ref()
        .context("the default space has no models")?;
    let zoo = zoo_of(models)?;
    let start = space
        .decode(&space.initial_point())?
        .plan
        .context("the default space has no models")?;
    let device = device.open()?;
    let (table, selection) = crate::with_backend!(device, |B, device| {
        let baselines = Baselines::<B>::open(&zoo, &models.granularity, &device)?;
        let chosen = rescore_top(&space, &baselines, &summary.trials, RESCORE_TOP, || {})?
            .context("no trial succeeded")?;
        let searched = |trial: &TrialRecord| -> anyhow::Result<MergePlan> {
            space
                .decode(&trial.point)?
                .plan
                .context("the default space has no models")
        };
        let trials = summary.trials.len();
        let rows = [
            (
                "searched (CMA-ES, layer-wise)".to_string(),
                format!("trial {} of {trials}, best on validation subsets", best.id),
                searched(best)?,
            ),
            (
                "searched, rescored".to_string(),
                format!(
                    "trial {}: of the {RESCORE_TOP} best, best on the whole validation split",
                    chosen.trial.id
                ),
                searched(chosen.trial)?,
            ),
        ];
        let table = compare(&baselines, &start, &rows)?;
        let selection = Selection {
            best_by_scalar: best.id,
            rescored_top: RESCORE_TOP,
            chosen: chosen.trial.id,
            validation_accuracy: chosen.validation,
            test_accuracy: table.rows.last().context("a searched row")?.mean(),
        };
        anyhow::Ok((table, selection))
    })?;
    let path = out.join("selection.json");
    write_json_atomic(&path, &selection)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "recommended merge: trial {} (of the {RESCORE_TOP} best trials, the best on the whole validation split: {:.4}); recorded in {}",
        selection.chosen,
        selection.validation_accuracy,
        path.display()
    );
    println!("\nheld-out test accuracy (%):\n");
    print!("{}", table.markdown());
    Ok(())
}

/// How the search's starting point reads as task arithmetic: `lambda L (the search's start)` when
/// every weight times the shared lambda is `L`.
fn start_setting(start: &MergePlan) -> String {
    let lambda = match start.shared.get("lambda") {
        Some(ParamValue::Number(l)) => *l,
        _ => 1.0,
    };
    let weights: Vec<f64> = start
        .experts
        .iter()
        .filter_map(|e| e.get("weight"))
        .flat_map(|w| match w {
            ParamValue::Number(x) => vec![*x],
            ParamValue::PerGroup(xs) => xs.clone(),
            ParamValue::Flag(_) => Vec::new(),
        })
        .collect();
    match weights.first() {
        Some(&w) if weights.iter().all(|&x| (x - w).abs() < 1e-12) => {
            format!(
                "lambda {} (the search's start, best on validation)",
                w * lambda
            )
        }
        _ => "the search's start".into(),
    }
}

/// The zoo directory of a space whose models are the zoo's (its base lies in the zoo, next to
/// `zoo.json`).
pub fn zoo_of(models: &Models) -> anyhow::Result<PathBuf> {
    let dir = models
        .base
        .parent()
        .context("the zoo's base lies in the zoo")?;
    anyhow::ensure!(
        dir.join("zoo.json").exists(),
        "{} is not in a zoo (no zoo.json beside it)",
        models.base.display()
    );
    Ok(dir.to_path_buf())
}

/// Test accuracy of weight averaging, task arithmetic (lambda 0.3), the search's starting point
/// `start` and the searched plans (method, setting, plan).
fn compare<B: Backend>(
    baselines: &Baselines<B>,
    start: &MergePlan,
    searched: &[(String, String, MergePlan)],
) -> anyhow::Result<Table> {
    let ta = baselines.plan(Method::TaskArithmetic, &[("lambda", 0.3)]);
    let row = |method: &str, setting: &str, plan: &MergePlan| -> anyhow::Result<Row> {
        Ok(Row::new(
            method,
            setting,
            &baselines.score(plan, Split::Test)?,
        ))
    };
    let average = baselines.plan(Method::Linear, &[]);
    let mut rows = vec![
        row("weight averaging", "", &average)?,
        row("task arithmetic", "lambda 0.3", &ta)?,
        row("task arithmetic", &start_setting(start), start)?,
    ];
    for (method, setting, plan) in searched {
        rows.push(row(method, setting, plan)?);
    }
    Ok(Table {
        tasks: baselines.task_names(),
        rows,
    })
}
