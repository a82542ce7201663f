//! `mergesearch adamerge SPACE`: learn merge coefficients by entropy minimization on unlabeled
//! inputs (AdaMerging; AdaMerging++ with `--ties`).

use std::path::PathBuf;

use anyhow::Context;
use burn::backend::Autodiff;
use clap::{Args, ValueEnum};

use super::{load_space, progress_bar};
use crate::adamerge::{AdaMergeOptions, AdaMergeOutcome, CoefficientGranularity, adamerge};
use crate::device::DeviceSpec;
use crate::zoo::tasks::Split;

/// Which tensors share a coefficient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GranularityArg {
    /// One coefficient per expert.
    Task,
    /// One per expert and layer group.
    Layer,
    /// One per expert and tensor.
    Tensor,
}

/// The split whose unlabeled inputs are trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// The validation split.
    Validation,
    /// The test split (the paper's test-time setting: its inputs, never its labels).
    Test,
}

/// `mergesearch adamerge`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct AdaMergeArgs {
    /// A zoo search space (its models; method and searched parameters are replaced).
    pub space: PathBuf,
    /// One coefficient per expert (task), per expert and layer group (layer), or per expert and
    /// tensor (tensor).
    #[arg(long, value_enum, default_value = "layer")]
    pub granularity: GranularityArg,
    /// Adam steps.
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Unlabeled inputs per task per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Every coefficient's starting value.
    #[arg(long, default_value_t = 0.3)]
    pub init: f64,
    /// Let coefficients leave [0, 1] (they stay within [-1, 2]).
    #[arg(long)]
    pub no_clamp: bool,
    /// AdaMerging++: TIES-trim task vectors to this density and elect signs.
    #[arg(long, value_name = "DENSITY")]
    pub ties: Option<f64>,
    /// Seed of the mini-batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The split whose inputs are trained on (labels only score the result).
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// The run directory (default: results/<space>-adamerge-<granularity>[-ties]).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compute device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

impl AdaMergeArgs {
    /// The library options these arguments ask for.
    pub fn options(&self) -> AdaMergeOptions {
        AdaMergeOptions {
            granularity: match self.granularity {
                GranularityArg::Task => CoefficientGranularity::Task,
                GranularityArg::Layer => CoefficientGranularity::Layer,
                GranularityArg::Tensor => CoefficientGranularity::Tensor,
            },
            steps: self.steps,
            lr: self.lr,
            batch: self.batch,
            init: self.init,
            clamp: !self.no_clamp,
            ties: self.ties,
            seed: self.seed,
            split: match self.split {
                SplitArg::Validation => Split::Validation,
                SplitArg::Test => Split::Test,
            },
        }
    }
}

/// Runs `mergesearch adamerge` and prints what it learned.
pub fn run(args: &AdaMergeArgs) -> anyhow::Result<AdaMergeOutcome> {
    let space = load_space(&args.space, &[], None, None)?;
    let granularity = format!("{:?}", args.granularity).to_lowercase();
    let out = args.out.clone().unwrap_or_else(|| {
        let ties = if args.ties.is_some() { "-ties" } else { "" };
        PathBuf::from("results").join(format!("{}-adamerge-{granularity}{ties}", space.name))
    });
    let bar = progress_bar("adamerge", "steps");
    let device = args.device.open()?;
    let options = args.options();
    let outcome = crate::with_backend!(device, |B, device| adamerge::<Autodiff<B>>(
        &space, &options, &out, &device, &bar
    ))
    .with_context(|| format!("adamerge {}", out.display()))?;
    bar.finish_and_clear();
    print_outcome(&outcome, &options);
    Ok(outcome)
}

/// Prints each task's accuracy (without labels, its prediction entropy) before and after, and
/// where the run is.
fn print_outcome(outcome: &AdaMergeOutcome, options: &AdaMergeOptions) {
    type Measure = fn(&crate::zoo::evaluate::TaskScores) -> f64;
    let (measure, unit, digits): (Measure, &str, usize) = if outcome.labelled {
        println!(
            "accuracy on the {} split (its labels were not used for training):",
            options.split.name()
        );
        (|t| 100.0 * t.accuracy, "%", 1)
    } else {
        println!(
            "mean prediction entropy on the {} split (nats; the tasks have no labels, so no accuracy):",
            options.split.name()
        );
        (|t| t.entropy, " ", 3)
    };
    println!("{:<14} {:>10} {:>10}", "task", "init", "learned");
    let rows = outcome.initial.iter().zip(&outcome.learned);
    for (task, (a, b)) in outcome.tasks.iter().zip(rows) {
        println!(
            "{task:<14} {:>9.digits$}{unit} {:>9.digits$}{unit}",
            measure(a),
            measure(b)
        );
    }
    let mean = |s: &[crate::zoo::evaluate::TaskScores]| {
        s.iter().map(measure).sum::<f64>() / s.len().max(1) as f64
    };
    println!(
        "{:<14} {:>9.digits$}{unit} {:>9.digits$}{unit}",
        "mean",
        mean(&outcome.initial),
        mean(&outcome.learned)
    );
    println!(
        "{:.1} ms per step after the first ({:.1} ms); run in {} (the learned merge is trial {}: `mergesearch export {} --trial {} --out DIR`)",
        1e3 * outcome.seconds_per_step,
        1e3 * outcome.first_step_seconds,
        outcome.dir.display(),
        options.steps,
        outcome.dir.display(),
        options.steps
    );
}
