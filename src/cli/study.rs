//! `mergesearch run`, `eval` and `best`: search runs from the command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::prelude::Backend;
use serde_json::json;

use super::worker::with_trial_runner;
use super::{UsageError, progress_bar};
use crate::device::DeviceSpec;
use crate::eval::Placement;
use crate::interrupt;
use crate::optim::{AnyOptimizer, Cmaes, CmaesOptions, by_name};
use crate::record::{Status, TrialRecord, read_journal};
use crate::space::Space;
use crate::study::{
    HeldoutScore, RunOptions, RunSummary, TrialAt, best_trial, ranked_trials, read_heldout,
    run as run_study,
};

/// What `mergesearch run` was asked.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The search space (TOML; see search_spaces/README.md).
    pub space: PathBuf,
    /// random, sobol, lhs, grid, cmaes, nsga2, map, map-bayes, gp or gp-parego.
    #[arg(long, default_value = "cmaes")]
    pub optimizer: String,
    /// Trials to run (overrides the space's budget).
    #[arg(long)]
    pub budget: Option<usize>,
    /// Run seed (overrides the space's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override a key of the space, e.g. --set budget.batch=4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory (default results/<space name>-<optimizer>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out after a crash, a kill or Ctrl-C.
    #[arg(long)]
    pub resume: bool,
    /// Compute device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Trials evaluated at once.
    #[arg(long)]
    pub workers: Option<usize>,
    /// One worker per listed GPU, e.g. --gpus 0,1,2,3 (instead of --workers): with --device
    /// cuda each worker merges on its own GPU, and its external evaluators are started with
    /// CUDA_VISIBLE_DEVICES set to that GPU ({gpu} and {worker} in their argv and env).
    #[arg(long, value_delimiter = ',', value_name = "GPU,...")]
    pub gpus: Option<Vec<usize>>,
    /// Where to write the candidates that external evaluators read (a folder of the run's own
    /// is made inside it). Default: shared memory (/dev/shm) when it has room, else the run
    /// directory.
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Run each worker in a process of its own (`mergesearch worker`), which holds its own
    /// merger and evaluators and gets only the trials' points.
    #[arg(long)]
    pub worker_processes: bool,
    /// Start each worker process through this command, e.g. "ssh node{worker}" (implies
    /// --worker-processes; {worker} and {gpu} are replaced; the space and models must be at
    /// the same paths there).
    #[arg(long, value_name = "COMMAND", conflicts_with = "ray")]
    pub launcher: Option<String>,
    /// Run each worker process as an actor on the Ray cluster at ADDRESS (default: auto, the
    /// cluster started on this machine with `ray start`); each actor asks for one GPU with
    /// --device cuda, none on the CPU. Ray chooses the GPUs: use --workers, not --gpus. Needs
    /// evaluators/requirements-ray.txt installed for --ray-python.
    #[arg(long, value_name = "ADDRESS", num_args = 0..=1, default_missing_value = "auto",
          conflicts_with = "gpus")]
    pub ray: Option<String>,
    /// The Python interpreter with Ray that runs --ray's bridge.
    #[arg(
        long,
        value_name = "PYTHON",
        default_value = "python3",
        requires = "ray"
    )]
    pub ray_python: String,
    /// Stop after this many failed trials in a row (overrides budget.max_failures, default 10;
    /// 0 never stops). The run can be resumed once the cause is fixed.
    #[arg(long, value_name = "N")]
    pub max_failures: Option<usize>,
    /// Start from a trial of another run (RUN for its best trial, RUN:ID for trial ID, e.g. the
    /// last step of `mergesearch adamerge`): parameters of the same name become the space's
    /// initial point (CMA-ES's mean; NSGA-II, MAP and GP-BO evaluate it first).
    #[arg(long, value_name = "RUN[:TRIAL]")]
    pub init_from: Option<String>,
}

/// Loads the space with the command line's overrides (seed and budget as `--set` would).
pub fn load_space(
    path: &Path,
    set: &[String],
    seed: Option<u64>,
    budget: Option<usize>,
) -> anyhow::Result<Space> {
    load_space_with(
        path,
        set,
        &[("seed", seed), ("budget.trials", budget.map(|b| b as u64))],
    )
}

/// Loads the space with `set` and then each `(key, value)` that has a value as an override.
fn load_space_with(
    path: &Path,
    set: &[String],
    shorthands: &[(&str, Option<u64>)],
) -> anyhow::Result<Space> {
    let mut overrides = set.to_vec();
    for (key, value) in shorthands {
        if let Some(value) = value {
            overrides.push(format!("{key}={value}"));
        }
    }
    Ok(Space::load(
        path,
        &overrides,
        &progress_bar("zoo", "steps"),
    )?)
}

/// A fresh optimizer for `space`: CMA-ES centres its first generation on the space's initial
/// point; NSGA-II, MAP and GP-BO evaluate it first.
pub fn make_optimizer(name: &str, space: &Space) -> Result<AnyOptimizer, String> {
    let batch = space.budget.batch.unwrap_or(8);
    if name == "cmaes" {
        let options = CmaesOptions {
            mean: Some(space.initial_point()),
            popsize: space.budget.batch,
            seed: space.seed,
            ..CmaesOptions::default()
        };
        return Cmaes::new(space.dim(), options)
            .map(|c| AnyOptimizer::Cmaes(Box::new(c)))
            .map_err(|e| e.to_string());
    }
    Ok(by_name(name, space.dim(), batch, space.seed)
        .map_err(|e| e.to_string())?
        .with_initial_point(space.initial_point()))
}

/// Moves the initial point of `space` to the parameters of a trial of another run (`RUN` for
/// its best trial, `RUN:ID` for trial `ID`), for each dimension of the same name; returns how
/// many dimensions it set.
pub fn start_from(space: &mut Space, from: &str) -> anyhow::Result<usize> {
    let (dir, id) = match from.rsplit_once(':') {
        Some((dir, id)) if id.parse::<u64>().is_ok() => (dir, Some(id.parse::<u64>()?)),
        _ => (from, None),
    };
    let trials = read_journal(Path::new(dir))?;
    let trial = match id {
        Some(id) => trials
            .iter()
            .find(|t| t.id == id)
            .with_context(|| format!("--init-from: {dir} has no trial {id}"))?,
        None => best_trial(&trials)
            .with_context(|| format!("--init-from: {dir} holds no successful trial"))?,
    };
    let mut taken = 0;
    for dimension in &mut space.dimensions {
        if let Some(value) = trial.params.get(&dimension.name) {
            dimension.init = dimension
                .domain
                .encode(value)
                .map_err(|e| anyhow::anyhow!("--init-from {from}: {}: {e}", dimension.name))?;
            taken += 1;
        }
    }
    if taken == 0 {
        bail!(
            "--init-from {from}: trial {} shares no parameter name with {} (it has {:?}...)",
            trial.id,
            space.file.display(),
            trial.params.keys().take(3).collect::<Vec<_>>()
        );
    }
    Ok(taken)
}

/// Runs a study; Ctrl-C stops it after the trials in flight, a second Ctrl-C at once.
pub fn run(args: &RunArgs) -> anyhow::Result<RunSummary> {
    let mut space = load_space_with(
        &args.space,
        &args.set,
        &[
            ("seed", args.seed),
            ("budget.trials", args.budget.map(|b| b as u64)),
            ("budget.max_failures", args.max_failures.map(|n| n as u64)),
        ],
    )?;
    if let Some(from) = &args.init_from {
        let taken = start_from(&mut space, from)?;
        eprintln!(
            "starting from {from}: {taken} of {} parameters taken",
            space.dim()
        );
    }
    run_space(&space, args)
}

/// Runs a study of a space already loaded from `args`' space file and overrides.
pub fn run_space(space: &Space, args: &RunArgs) -> anyhow::Result<RunSummary> {
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!("{}-{}", space.name, args.optimizer))
    });
    let stop = interrupt::stop_flag();
    let options = RunOptions {
        optimizer: args.optimizer.clone(),
        out: out.clone(),
        resume: args.resume,
        workers: args.workers,
        gpus: args.gpus.clone(),
        scratch: args.scratch.clone(),
        worker_command: worker_command(space, args)?,
    };
    let bar = progress_bar("run", "trials");
    let device = args.device.open()?;
    if let (DeviceSpec::Cuda(_), Some(gpus)) = (
        args.device,
        options.gpus.as_ref().or(space.budget.gpus.as_ref()),
    ) {
        // Each worker's merger goes on its own GPU: check that every one answers.
        for &gpu in gpus {
            DeviceSpec::Cuda(gpu).open()?;
        }
    }
    let summary = crate::with_backend!(device, |B, device| run_study::<B>(
        space,
        &options,
        || make_optimizer(&args.optimizer, space),
        &device,
        &bar,
        stop
    ))
    .with_context(|| format!("run {}", out.display()))?;
    bar.finish_and_clear();
    Ok(summary)
}

/// The argv that starts one of the run's worker processes (see [`RunOptions::worker_command`]),
/// when asked for them: the launcher (or the Ray bridge), then `mergesearch worker` on the same
/// space with the same overrides and seed, on the same device.
fn worker_command(space: &Space, args: &RunArgs) -> anyhow::Result<Option<Vec<String>>> {
    let mut argv: Vec<String> = match (&args.ray, &args.launcher) {
        (Some(address), _) => ray_launcher(address, &args.ray_python, args.device)?,
        (None, Some(launcher)) => launcher.split_whitespace().map(str::to_string).collect(),
        (None, None) if args.worker_processes => Vec::new(),
        (None, None) => return Ok(None),
    };
    let exe = std::env::current_exe().context("cannot find this program to start workers")?;
    let file = std::path::absolute(&space.file).unwrap_or_else(|_| space.file.clone());
    argv.extend([
        exe.display().to_string(),
        "worker".into(),
        file.display().to_string(),
        "--device".into(),
        args.device.to_string(),
        "--set".into(),
        format!("seed={}", space.seed),
    ]);
    for set in &args.set {
        argv.extend(["--set".to_string(), set.clone()]);
    }
    Ok(Some(argv))
}

/// The Ray bridge (`evaluators/ray_launcher.py`, built into this program), as a launcher that
/// runs each worker as an actor on the cluster at `address`, with one GPU per actor on CUDA.
fn ray_launcher(address: &str, python: &str, device: DeviceSpec) -> anyhow::Result<Vec<String>> {
    const BRIDGE: &str = include_str!("../../evaluators/ray_launcher.py");
    // Written once per content (the launcher runs on this machine; the actors run the workers).
    let hash = xxhash_rust::xxh3::xxh3_64(BRIDGE.as_bytes());
    let script = std::env::temp_dir().join(format!("mergesearch-ray-launcher-{hash:016x}.py"));
    if !script.exists() {
        let partial = script.with_extension(format!("{}.partial", std::process::id()));
        std::fs::write(&partial, BRIDGE)
            .and_then(|()| std::fs::rename(&partial, &script))
            .with_context(|| format!("cannot write the Ray bridge to {}", script.display()))?;
    }
    let gpus = if matches!(device, DeviceSpec::Cuda(_)) {
        "1"
    } else {
        "0"
    };
    Ok([
        python,
        &script.display().to_string(),
        "--address",
        address,
        "--num-gpus",
        gpus,
        "--",
    ]
    .map(str::to_string)
    .to_vec())
}

/// Prints the best trials of the run in `dir`, best first (see [`ranked_trials`]), each score
/// with its standard error where the evaluator reported one, the items scored and, with
/// fidelity rungs, the rung; then the chosen trial's held-out score when the run has one.
pub fn best(dir: &Path, top: usize) -> anyhow::Result<()> {
    let trials = read_journal(dir)?;
    if trials.is_empty() {
        bail!("{} holds no finished trial", dir.display());
    }
    let ok = ranked_trials(&trials);
    let failed = trials.len() - ok.len();
    println!(
        "{}: {} trials, {failed} failed",
        dir.display(),
        trials.len()
    );
    for t in ok.iter().take(top) {
        let scores: Vec<String> = t
            .scores
            .iter()
            .take(12)
            .map(|(k, s)| match s.stderr {
                Some(e) => format!("{k}={:.4}±{e:.4}", s.value),
                None => format!("{k}={:.4}", s.value),
            })
            .collect();
        let items = t.items.map_or(String::new(), |n| format!("  {n} items"));
        let rung = match t.rungs.last() {
            Some(r) => format!(
                " (rung {}: {} per task)",
                t.rungs.len() - 1,
                r.items_per_task
            ),
            None => String::new(),
        };
        println!(
            "trial {:>4}  scalar {:.4}{items}{rung}  {}",
            t.id,
            t.scalar.unwrap_or(f64::NAN),
            scores.join(" ")
        );
    }
    if let Some(b) = best_trial(&trials) {
        println!(
            "best trial {} parameters: {}",
            b.id,
            serde_json::Value::Object(b.params.clone())
        );
    }
    if let Some(heldout) = read_heldout(dir)? {
        println!("{}", describe_heldout(&heldout));
    }
    Ok(())
}

/// One line on a held-out score.
fn describe_heldout(h: &HeldoutScore) -> String {
    match (&h.error, h.scalar) {
        (None, Some(scalar)) => format!(
            "held-out score of trial {} (scored once, after the search, never used to choose): scalar {scalar:.4} (search: {:.4})",
            h.trial,
            h.search_scalar.unwrap_or(f64::NAN)
        ),
        (error, _) => format!(
            "held-out scoring of trial {} failed: {}",
            h.trial,
            error.as_deref().unwrap_or("no scalar score")
        ),
    }
}

/// Evaluates one point (or named parameters) of a space and prints a JSON object.
pub fn eval(
    space_path: &Path,
    set: &[String],
    point: Option<&str>,
    params: Option<&Path>,
    device: DeviceSpec,
) -> anyhow::Result<()> {
    let space = load_space(space_path, set, None, None)?;
    let usage = |problem: String| anyhow::Error::from(UsageError(problem));
    let point: Vec<f64> = match (point, params) {
        (Some(text), None) => serde_json::from_str(text).map_err(|e| {
            usage(format!(
                "--point must be a JSON list of numbers in [0, 1] ({e})"
            ))
        })?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
                .map_err(|e| {
                    usage(format!(
                        "{}: not a JSON object of named parameters ({e})",
                        file.display()
                    ))
                })?;
            space
                .encode(&map)
                .map_err(|e| usage(format!("{}: {e}", file.display())))?
        }
        _ => return Err(usage("give exactly one of --point and --params".into())),
    };
    if point.len() != space.dim() || point.iter().any(|u| !(0.0..=1.0).contains(u)) {
        return Err(usage(format!(
            "the point must have {} coordinates, each in [0, 1] (the dimensions: {:?})",
            space.dim(),
            space.dimensions.iter().map(|d| &d.name).collect::<Vec<_>>()
        )));
    }
    let device = device.open()?;
    interrupt::abort_on_ctrl_c();
    let record =
        crate::with_backend!(device, |B, device| eval_point::<B>(&space, &point, &device))?;
    let scores: serde_json::Map<String, serde_json::Value> = record
        .scores
        .iter()
        .map(|(k, s)| (k.clone(), json!(s.value)))
        .collect();
    let stderr: serde_json::Map<String, serde_json::Value> = record
        .scores
        .iter()
        .filter_map(|(k, s)| s.stderr.map(|e| (k.clone(), json!(e))))
        .collect();
    println!(
        "{}",
        json!({"status": record.status, "params": record.params, "scores": scores, "stderr": stderr, "scalar": record.scalar, "error": record.error, "merge_seconds": record.merge_seconds, "eval_seconds": record.eval_seconds})
    );
    Ok(())
}

/// Prints what a run did: trials, failures, the best trial, the directory.
pub fn print_summary(summary: &RunSummary) {
    let failed = summary
        .trials
        .iter()
        .filter(|t| t.status == Status::Failed)
        .count();
    println!(
        "{} trials ({failed} failed) in {:.0}s{} -> {}",
        summary.trials.len(),
        summary.seconds,
        if summary.interrupted {
            ", stopped early (resume with --resume)"
        } else {
            ""
        },
        summary.dir.display()
    );
    if let Some(best) = summary.best() {
        println!(
            "best: trial {} with scalar score {:.4}",
            best.id,
            best.scalar.unwrap_or(f64::NAN)
        );
    }
    if let Some(heldout) = &summary.heldout {
        println!("{}", describe_heldout(heldout));
    }
}

/// Runs one trial of `space` at `point`, outside any run.
fn eval_point<B: Backend>(
    space: &Space,
    point: &[f64],
    device: &B::Device,
) -> anyhow::Result<TrialRecord> {
    with_trial_runner::<B, _>(
        space,
        device,
        Placement::default(),
        &std::env::temp_dir(),
        |runner| {
            runner.run(TrialAt {
                id: 0,
                generation: 0,
                point,
                items: None,
            })
        },
    )
}
