//! `mergesearch demo`: the default job. Builds the zoo if it is missing, searches the default
//! space (task arithmetic with one weight per expert and layer group, scored on validation
//! subsets) with CMA-ES, and compares the best merge found with weight averaging, task
//! arithmetic at the paper's lambda and at the search's starting point (the lambda best on
//! validation) on the held-out test split, which the search never saw.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::prelude::Backend;

use super::study::{RunArgs, print_summary, run_space};
use crate::checkpoint::Granularity;
use crate::device::DeviceSpec;
use crate::merge::{MergePlan, Method, ParamValue};
use crate::space::Models;
use crate::zoo::baselines::{Baselines, Row, Table};
use crate::zoo::tasks::Split;

/// The default space.
pub const DEFAULT_SPACE: &str = "search_spaces/zoo-layerwise.toml";

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
    let plan = space
        .decode(&best.point)?
        .plan
        .context("the default space has no models")?;
    let start = space
        .decode(&space.initial_point())?
        .plan
        .context("the default space has no models")?;
    let device = device.open()?;
    let setting = format!("trial {} of {}", best.id, summary.trials.len());
    let table = crate::with_backend!(device, |B, device| compare::<B>(
        &zoo,
        &models.granularity,
        &start,
        &plan,
        setting,
        &device
    ))?;
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
/// `start` and the searched plan.
fn compare<B: Backend>(
    zoo: &Path,
    granularity: &Granularity,
    start: &MergePlan,
    plan: &MergePlan,
    setting: String,
    device: &B::Device,
) -> anyhow::Result<Table> {
    let baselines = Baselines::<B>::open(zoo, granularity, device)?;
    let ta = baselines.plan(Method::TaskArithmetic, &[("lambda", 0.3)]);
    let row = |method: &str, setting: &str, plan: &MergePlan| -> anyhow::Result<Row> {
        Ok(Row::new(
            method,
            setting,
            &baselines.score(plan, Split::Test)?,
        ))
    };
    let average = baselines.plan(Method::Linear, &[]);
    let rows = vec![
        row("weight averaging", "", &average)?,
        row("task arithmetic", "lambda 0.3", &ta)?,
        row("task arithmetic", &start_setting(start), start)?,
        row("searched (CMA-ES, layer-wise)", &setting, plan)?,
    ];
    Ok(Table {
        tasks: baselines.task_names(),
        rows,
    })
}
