//! The command line: clap definitions, and their conversion into checked configs and calls into
//! the library. `main` only parses, calls [`run`] and maps errors to exit codes.

mod adamerge;
mod bench;
mod compare;
mod demo;
mod exit;
mod export;
mod front;
mod inspect;
mod merge_config;
mod rescore;
mod study;
mod sweep;
mod worker;
mod zoo;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

pub use adamerge::AdaMergeArgs;
pub use bench::BenchCommand;
pub use compare::CompareArgs;
pub use exit::{
    EXIT_CONFIG, EXIT_DEVICE, EXIT_FAILURES, EXIT_INPUT, EXIT_LOCKED, EXIT_OTHER, Interrupted,
    UsageError, exit_code,
};
pub use inspect::report as inspect_report;
pub use merge_config::{ConfigError, MergeConfig, parse_granularity, parse_size};
pub use study::{RunArgs, load_space, make_optimizer};
pub use zoo::ZooCommand;

use crate::checkpoint::{Dtype, Model, ModelSet};
use crate::device::DeviceSpec;
use crate::fixtures::{SyntheticSpec, write_synthetic_model};
use crate::merge::{StreamOptions, merge_streaming};

/// Search the coefficients with which fine-tuned checkpoints of one base model are merged.
#[derive(Debug, Parser)]
#[command(name = "mergesearch", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Merge a base model and experts as a TOML config describes, writing a Hugging Face model.
    Merge {
        /// The merge config (method, base, granularity, [params], [[experts]]).
        config: PathBuf,
        /// Output model directory.
        #[arg(long)]
        out: PathBuf,
        /// Compute device: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Replace the output directory if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Print a model's tensors (name, dtype, shape, bytes), its layer groups and its size.
    Inspect {
        /// A .safetensors file or a Hugging Face model directory.
        model: PathBuf,
    },
    /// Write a synthetic Llama-shaped model (transformers' tensor names and config, seeded values)
    /// for trials and benchmarks: the base, or with --expert N the base plus expert N's task
    /// vector.
    Synth {
        /// Output model directory.
        #[arg(long)]
        out: PathBuf,
        /// Number of blocks.
        #[arg(long, default_value_t = 4)]
        layers: usize,
        /// Hidden width.
        #[arg(long, default_value_t = 128)]
        hidden: usize,
        /// MLP width (default: twice the hidden width; Llama-2 7B has 11008 at width 4096).
        #[arg(long)]
        intermediate: Option<usize>,
        /// Vocabulary size (embedding and head rows).
        #[arg(long, default_value_t = 512)]
        vocab: usize,
        /// Stored dtype: f32, f16 or bf16.
        #[arg(long, default_value = "bf16")]
        dtype: Dtype,
        /// Write expert N instead of the base.
        #[arg(long)]
        expert: Option<usize>,
        /// Seed of the values.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Maximum shard size, e.g. 5GB or 500MB.
        #[arg(long, default_value = "5GB", value_parser = parse_size_arg)]
        max_shard_size: u64,
    },
    /// Search a space: propose merges, score them, record every trial in a run directory.
    Run(RunArgs),
    /// One run per combination of settings (`--grid key=v1,v2`, repeatable; `optimizer` and
    /// `seed` are keys too), summarized in one table (also written to OUT/sweep.md).
    Sweep {
        /// The search space.
        space: PathBuf,
        /// A setting and its values, e.g. --grid budget.trials=20,40 --grid optimizer=random,cmaes.
        #[arg(long = "grid", value_name = "KEY=V1,V2", required = true, value_parser = sweep::parse_axis)]
        grid: Vec<sweep::Axis>,
        /// The optimizer of runs whose grid does not set one.
        #[arg(long, default_value = "cmaes")]
        optimizer: String,
        /// The folder of the runs.
        #[arg(long, default_value = "results/sweep")]
        out: PathBuf,
        /// Compute device: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Trials evaluated at once.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Evaluate one point of a space and print its objectives as one JSON object.
    Eval {
        /// The search space.
        space: PathBuf,
        /// The point: a JSON list of coordinates in [0, 1], one per dimension.
        #[arg(long)]
        point: Option<String>,
        /// Named parameters instead: a JSON file mapping each dimension's name to its value.
        #[arg(long)]
        params: Option<PathBuf>,
        /// Override a key of the space (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Compute device: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Serve trials of a space over JSON lines: one request per line on stdin ({"id", "point",
    /// "generation", "items"}), the trial's record (as in trials.jsonl) per line on stdout. A
    /// trial worker that can run wherever a command can be started.
    Worker {
        /// The search space.
        space: PathBuf,
        /// Override a key of the space (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Compute device of the merger and built-in evaluators: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// This worker's GPU: its external evaluators see only it (CUDA_VISIBLE_DEVICES) and
        /// get it as {gpu}.
        #[arg(long)]
        gpu: Option<usize>,
        /// This worker's number, {worker} in evaluator argv and env.
        #[arg(long, default_value_t = 0)]
        worker: usize,
        /// Where to write candidates for external evaluators (default: /dev/shm when it
        /// exists, else the temporary folder).
        #[arg(long, value_name = "DIR")]
        scratch: Option<PathBuf>,
    },
    /// Print a run's Pareto front over its objectives and plot it (one SVG per pair of
    /// objectives, written into the run directory).
    Front {
        /// The run directory.
        run: PathBuf,
    },
    /// Print the best trials of a run.
    Best {
        /// The run directory.
        run: PathBuf,
        /// How many.
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// Write a trial's merged model, its plan, and a mergekit config where one fits.
    Export {
        /// The run directory.
        run: PathBuf,
        /// The trial's id.
        #[arg(long)]
        trial: u64,
        /// Output model directory.
        #[arg(long)]
        out: PathBuf,
        /// Compute device: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Replace the output directory if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Run several optimizers over several seeds with the same budget and compare their best
    /// score, its held-out test score (zoo spaces) and their fronts' hypervolume.
    Compare(CompareArgs),
    /// AdaMerging: learn the merge coefficients of a zoo space by minimizing the entropy of
    /// each task's predictions on unlabeled inputs (AdaMerging++ with --ties).
    Adamerge(AdaMergeArgs),
    /// The built-in multi-task benchmark (a ViT zoo with real experts).
    Zoo {
        /// What to do with the zoo.
        #[command(subcommand)]
        command: ZooCommand,
    },
    /// Benchmarks that run from the binary (a GPU machine needs no compiler).
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Check that a GPU's merge kernels give the host engine's results bit for bit, for every
    /// method and dtype.
    CheckDevice {
        /// The GPU: cuda:N.
        #[arg(long, default_value = "cuda:0")]
        device: DeviceSpec,
    },
    /// The default job: build the zoo if missing, search the default space with CMA-ES, and
    /// compare the best merge with task arithmetic on the held-out test split.
    Demo {
        /// The run directory (resumed when it holds the run already).
        #[arg(long, default_value = "results/demo")]
        out: PathBuf,
        /// Trials (default: the space's budget).
        #[arg(long)]
        budget: Option<usize>,
        /// Compute device: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
}

/// Process-wide settings the binary makes before anything else: a file-size limit
/// (`ulimit -f`) makes writes fail with an error naming the file instead of killing the process
/// with SIGXFSZ, and a panic caught inside a trial is reported in one line.
pub fn prepare_process() {
    crate::study::quiet_caught_panics();
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Merge {
            config,
            out,
            device,
            overwrite,
        } => {
            let config = MergeConfig::load(&config)?;
            merge(&config, &out, device, overwrite)?;
            Ok(())
        }
        Command::Inspect { model } => {
            let model = Model::open(&model)?;
            print!("{}", inspect_report(&model)?);
            Ok(())
        }
        Command::Synth {
            out,
            layers,
            hidden,
            intermediate,
            vocab,
            dtype,
            expert,
            seed,
            max_shard_size,
        } => {
            let spec = SyntheticSpec {
                layers,
                hidden,
                intermediate: intermediate.unwrap_or(2 * hidden),
                vocab,
                dtype,
            };
            write_synthetic_model(&out, &spec, seed, expert, max_shard_size)?;
            eprintln!(
                "wrote {} ({:.1} MB)",
                out.display(),
                spec.bytes() as f64 / 1e6
            );
            Ok(())
        }
        Command::Demo {
            out,
            budget,
            device,
        } => demo::run_demo(&out, budget, device),
        Command::Zoo { command } => zoo::run(command),
        Command::Bench { command } => bench::run(command),
        Command::CheckDevice { device } => bench::check_device(device),
        Command::Compare(args) => compare::compare(&args),
        Command::Adamerge(args) => adamerge::run(&args).map(|_| ()),
        Command::Run(args) => {
            let summary = study::run(&args)?;
            study::print_summary(&summary);
            if summary.interrupted {
                return Err(Interrupted.into());
            }
            Ok(())
        }
        Command::Eval {
            space,
            point,
            params,
            set,
            device,
        } => study::eval(&space, &set, point.as_deref(), params.as_deref(), device),
        Command::Best { run, top } => study::best(&run, top),
        Command::Worker {
            space,
            set,
            device,
            gpu,
            worker,
            scratch,
        } => worker::serve_stdio(
            &space,
            &set,
            device,
            crate::eval::Placement { worker, gpu },
            scratch,
        ),
        Command::Front { run } => front::show_front(&run),
        Command::Sweep {
            space,
            grid,
            optimizer,
            out,
            device,
            workers,
        } => sweep::sweep(&space, &grid, &optimizer, &out, device, workers),
        Command::Export {
            run,
            trial,
            out,
            device,
            overwrite,
        } => export::export(&run, trial, &out, device, overwrite),
    }
}

/// Runs the merge a config describes into `out`, with a progress bar over tensors.
pub fn merge(
    config: &MergeConfig,
    out: &std::path::Path,
    device: DeviceSpec,
    overwrite: bool,
) -> anyhow::Result<()> {
    let device = device.open()?;
    let started = Instant::now();
    let set = ModelSet::open(&config.base, &config.experts)?;
    let bar = tensor_bar("merging");
    let options = StreamOptions {
        dtype: config.dtype,
        max_shard_bytes: config.max_shard_bytes,
        overwrite,
    };
    let written = crate::with_backend!(device, |B, device| merge_streaming::<B>(
        &set,
        &config.granularity,
        &config.plan,
        out,
        &options,
        &device,
        &bar,
    ))
    .with_context(|| format!("merging into {}", out.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "merged {} experts with {} into {} in {:.1}s",
        config.experts.len(),
        config.plan.method,
        written.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    parse_size(&toml::Value::String(text.to_string()))
}

/// A progress bar over tensors on stderr (hidden when stderr is not a terminal).
pub fn tensor_bar(label: &'static str) -> ProgressBar {
    progress_bar(label, "tensors")
}

/// A progress bar on stderr counting `unit` (hidden when stderr is not a terminal).
pub fn progress_bar(prefix: &'static str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{elapsed}} elapsed, eta {{eta}} {{wide_msg}}"
        ))
        .expect("progress template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}
