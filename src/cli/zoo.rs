//! `mergesearch zoo ...`: build the zoo, print its baseline table, and measure how well benchmark
//! subsets estimate its test split.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;

use super::progress_bar as bar;
use burn::backend::Autodiff;

use crate::adamerge::{AdaMergeOptions, CoefficientGranularity, adamerge};
use crate::device::{Device, DeviceSpec};
use crate::eval::{StudyConfig, ensure_built, subset_study};
use crate::space::Space;
use crate::zoo::baselines::Baselines;
use crate::zoo::baselines::{Row, Table, markdown_over_seeds};
use crate::zoo::build::{ZooConfig, build as build_zoo};
use crate::zoo::tasks::Split;

/// The `zoo` subcommands.
#[derive(Debug, Subcommand)]
pub enum ZooCommand {
    /// Train the base and the eight experts on the CPU (cached: a second call is instant).
    Build {
        /// The zoo directory.
        #[arg(long, default_value = "results/zoo")]
        out: PathBuf,
        /// Seed of data, initialization and training (default 0).
        #[arg(long)]
        seed: Option<u64>,
        /// Pretraining steps of the base.
        #[arg(long)]
        pretrain_steps: Option<usize>,
        /// Fine-tuning steps of each expert.
        #[arg(long)]
        finetune_steps: Option<usize>,
        /// Fine-tuning learning rate.
        #[arg(long)]
        finetune_lr: Option<f64>,
        /// A TOML file of zoo settings (any of `ZooConfig`'s fields; the flags above override
        /// it, the defaults fill the rest).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the baseline table on the test split as Markdown: base, experts, weight averaging,
    /// task arithmetic and TIES (lambdas chosen on validation). Builds the zoo if missing.
    Table {
        /// The zoo directory.
        #[arg(long, default_value = "results/zoo")]
        zoo: PathBuf,
        /// Adam steps of the AdaMerging rows (0 leaves them out).
        #[arg(long, default_value_t = 500)]
        adamerge_steps: usize,
        /// Compute device: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Build one zoo per seed (`<zoo>-seed<S>`, with `--config`'s settings) and print each
        /// cell's mean and standard deviation over them.
        #[arg(long, value_delimiter = ',')]
        seeds: Vec<u64>,
        /// Zoo settings (TOML) for the zoos `--seeds` builds.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Measure how well random, stratified and anchor subsets estimate the test split's accuracy
    /// over random merges, per subset size. Builds the zoo if missing.
    Subsets {
        /// The zoo directory.
        #[arg(long, default_value = "results/zoo")]
        zoo: PathBuf,
        /// Random merges to score on the full split.
        #[arg(long, default_value_t = 300)]
        merges: usize,
        /// Subset sizes (items per task), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,25,50,100,200")]
        sizes: Vec<usize>,
        /// Subset draws per strategy and size.
        #[arg(long, default_value_t = 5)]
        draws: u64,
        /// Seed of the random merges.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Compute device: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
}

/// Runs a `zoo` subcommand.
pub fn run(command: ZooCommand) -> anyhow::Result<()> {
    match command {
        ZooCommand::Build {
            out,
            seed,
            pretrain_steps,
            finetune_steps,
            finetune_lr,
            config,
        } => {
            let defaults = zoo_settings(config.as_deref())?;
            let config = ZooConfig {
                seed: seed.unwrap_or(defaults.seed),
                pretrain_steps: pretrain_steps.unwrap_or(defaults.pretrain_steps),
                finetune_steps: finetune_steps.unwrap_or(defaults.finetune_steps),
                finetune_lr: finetune_lr.unwrap_or(defaults.finetune_lr),
                ..defaults
            };
            build(&out, &config)
        }
        ZooCommand::Table {
            zoo,
            adamerge_steps,
            device,
            seeds,
            config,
        } => {
            let started = Instant::now();
            let device = device.open()?;
            if seeds.is_empty() {
                ensure_built(&zoo, &bar("zoo", "steps"))?;
                print!("{}", table(&zoo, adamerge_steps, &device)?.markdown());
            } else {
                let settings = zoo_settings(config.as_deref())?;
                let mut tables = Vec::new();
                for seed in seeds {
                    let dir = PathBuf::from(format!("{}-seed{seed}", zoo.display()));
                    let zoo_bar = bar("zoo", "steps");
                    build_zoo(
                        &dir,
                        &ZooConfig {
                            seed,
                            ..settings.clone()
                        },
                        &zoo_bar,
                    )?;
                    zoo_bar.finish_and_clear();
                    let one = table(&dir, adamerge_steps, &device)?;
                    eprintln!("seed {seed}:\n{}", one.markdown());
                    tables.push(one);
                }
                print!("{}", markdown_over_seeds(&tables));
            }
            eprintln!("({:.0}s)", started.elapsed().as_secs_f64());
            Ok(())
        }
        ZooCommand::Subsets {
            zoo,
            merges,
            sizes,
            draws,
            seed,
            device,
        } => {
            let started = Instant::now();
            ensure_built(&zoo, &bar("zoo", "steps"))?;
            let config = StudyConfig {
                merges,
                sizes,
                draws,
                split: Split::Test,
                seed,
            };
            let bar = bar("subsets", "merges");
            let device = device.open()?;
            let study = crate::with_backend!(device, |B, device| subset_study::<B>(
                &zoo, &config, &device, &bar
            ))?;
            bar.finish_and_clear();
            print!("{}", study.markdown());
            eprintln!("({:.0}s)", started.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

/// The zoo settings in the TOML file `file` (defaults for what it leaves out), or the defaults.
fn zoo_settings(file: Option<&Path>) -> anyhow::Result<ZooConfig> {
    let Some(file) = file else {
        return Ok(ZooConfig::default());
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: not zoo settings", file.display()))
}

/// The baseline table of the zoo in `dir`, with AdaMerging rows of `adamerge_steps` steps.
fn table(dir: &Path, adamerge_steps: usize, device: &Device) -> anyhow::Result<Table> {
    let progress = bar("table", "merges");
    let mut table = crate::with_backend!(device.clone(), |B, device| {
        Baselines::<B>::open(dir, &Default::default(), &device)?.table(dir, &progress)
    })?;
    progress.finish_and_clear();
    if adamerge_steps > 0 {
        table
            .rows
            .extend(adamerging_rows(dir, adamerge_steps, device)?);
    }
    Ok(table)
}

/// Builds (or finds cached) the zoo and prints each model's accuracy.
fn build(out: &Path, config: &ZooConfig) -> anyhow::Result<()> {
    let bar = bar("zoo", "steps");
    let manifest = build_zoo(out, config, &bar)?;
    bar.finish_and_clear();
    println!(
        "zoo: {} (built in {:.0}s)",
        out.display(),
        manifest.build_seconds
    );
    println!(
        "{:<14} {:>8} {:>10} {:>8}",
        "model", "classes", "val acc", "test acc"
    );
    let p = &manifest.pretrain;
    println!(
        "{:<14} {:>8} {:>10.3} {:>8.3}",
        "base (pretrain)",
        manifest
            .tasks
            .iter()
            .map(|t| t.classes.len())
            .sum::<usize>(),
        p.validation_accuracy,
        p.test_accuracy
    );
    for t in &manifest.tasks {
        let m = &t.metrics;
        println!(
            "{:<14} {:>8} {:>10.3} {:>8.3}",
            t.name,
            t.classes.len(),
            m.validation_accuracy,
            m.test_accuracy
        );
    }
    Ok(())
}

/// The table's AdaMerging rows: task-wise and layer-wise, on task vectors and (AdaMerging++) on
/// TIES-trimmed ones, each trained `steps` steps on the test split's unlabeled inputs with the
/// paper's settings and scored on its labels. The runs are kept in a temporary directory.
fn adamerging_rows(zoo: &Path, steps: usize, device: &Device) -> anyhow::Result<Vec<Row>> {
    let text = format!(
        "name = \"zoo-table\"\n[models]\nzoo = {zoo:?}\n[merge]\nmethod = \"task_arithmetic\"\n\
         [[params]]\nname = \"weight\"\nlow = 0.0\nhigh = 1.0\n\
         [[evaluators]]\nkind = \"zoo\"\nzoo = {zoo:?}\n[[objectives]]\nname = \"mean/accuracy\"\n"
    );
    let scratch =
        std::env::temp_dir().join(format!("mergesearch-zoo-table-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let file = scratch.join("space.toml");
    std::fs::write(&file, text)?;
    let space = Space::load(&file, &[], &bar("zoo", "steps"))?;
    let mut rows = Vec::new();
    for (ties, method) in [(None, "AdaMerging"), (Some(0.2), "AdaMerging++")] {
        for (granularity, name) in [
            (CoefficientGranularity::Task, "task-wise"),
            (CoefficientGranularity::Layer, "layer-wise"),
        ] {
            let options = AdaMergeOptions {
                granularity,
                steps,
                ties,
                ..AdaMergeOptions::default()
            };
            let progress = bar("adamerge", "steps");
            progress.set_prefix(format!("{method} {name}"));
            let out = scratch.join(format!("{method}-{name}"));
            let outcome = crate::with_backend!(
                device.clone(),
                |B, device| adamerge::<Autodiff<B>>(&space, &options, &out, &device, &progress)
            )?;
            progress.finish_and_clear();
            let density = ties.map_or(String::new(), |d| format!(", TIES density {d}"));
            rows.push(Row::new(
                method,
                &format!(
                    "{name}{density}, {steps} steps on unlabeled test inputs ({:.0} ms/step)",
                    1e3 * outcome.seconds_per_step
                ),
                &outcome.learned,
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(rows)
}
