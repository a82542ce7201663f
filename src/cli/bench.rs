//! `mergesearch bench ...` and `mergesearch check-device`: the measurements and checks a GPU
//! machine runs from the built binary (`benches/gpu-check.sh`).

use clap::Subcommand;

use crate::bench::{DEFAULT_METHODS, MergeBench, merge_bench, spec_of_size};
use crate::checkpoint::Dtype;
use crate::device::DeviceSpec;
use crate::fixtures::SyntheticSpec;
use crate::merge::Method;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Materialization throughput of merge methods next to a copy of the same bytes on the same
    /// device, on synthetic Llama-shaped tensors generated in memory.
    Merge {
        /// Compute device: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Model size in MB (8 blocks; ignored with --hidden).
        #[arg(long, default_value_t = 268.0)]
        mb: f64,
        /// An explicit shape instead: number of blocks.
        #[arg(long, default_value_t = 32, requires = "hidden")]
        layers: usize,
        /// An explicit shape instead: hidden width (e.g. 4096 for a 7B model).
        #[arg(long)]
        hidden: Option<usize>,
        /// MLP width with --hidden (default twice the hidden width; 11008 for Llama-2 7B).
        #[arg(long, requires = "hidden")]
        intermediate: Option<usize>,
        /// Vocabulary size with --hidden.
        #[arg(long, default_value_t = 32_000, requires = "hidden")]
        vocab: usize,
        /// Stored dtype: f32, f16 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: Dtype,
        /// Number of experts.
        #[arg(long, default_value_t = 4)]
        experts: usize,
        /// Methods, comma-separated (default: linear, task_arithmetic, ties, dare_ties,
        /// breadcrumbs, della).
        #[arg(long, value_delimiter = ',')]
        methods: Vec<Method>,
        /// Timed candidates per method, after the first.
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
}

/// Runs a benchmark command.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Merge {
            device,
            mb,
            layers,
            hidden,
            intermediate,
            vocab,
            dtype,
            experts,
            methods,
            reps,
        } => {
            let spec = match hidden {
                Some(hidden) => SyntheticSpec {
                    layers,
                    hidden,
                    intermediate: intermediate.unwrap_or(2 * hidden),
                    vocab,
                    dtype,
                },
                None => spec_of_size(mb, dtype),
            };
            anyhow::ensure!(experts >= 1, "--experts must be at least 1");
            let bench = MergeBench {
                spec,
                experts,
                methods: if methods.is_empty() {
                    DEFAULT_METHODS.to_vec()
                } else {
                    methods
                },
                reps,
            };
            let name = device.to_string();
            let device = device.open()?;
            let report =
                crate::with_backend!(device, |B, device| merge_bench::<B>(&bench, &device, &name))?;
            print!("{report}");
            Ok(())
        }
    }
}

/// `mergesearch check-device`: the GPU kernels against the host engine, bit for bit.
pub fn check_device(device: DeviceSpec) -> anyhow::Result<()> {
    let DeviceSpec::Cuda(index) = device else {
        anyhow::bail!("check-device compares a GPU with the host: pass --device cuda:N");
    };
    // Opening checks that the GPU answers (and that this build has CUDA).
    device.open()?;
    check_cuda(index)
}

#[cfg(not(feature = "cuda"))]
fn check_cuda(_index: usize) -> anyhow::Result<()> {
    unreachable!("opening cuda:N fails in a build without CUDA")
}

#[cfg(feature = "cuda")]
fn check_cuda(index: usize) -> anyhow::Result<()> {
    use cubecl::Runtime;
    use cubecl::cuda::{CudaDevice, CudaRuntime};

    use crate::merge::engine::cube::check::compare_engines;

    let client = CudaRuntime::client(&CudaDevice::new(index));
    let report = compare_engines(&client, |what| eprintln!("comparing {what}"));
    let differing: Vec<_> = report
        .merges
        .iter()
        .chain(&report.masks)
        .filter(|c| c.differing > 0)
        .collect();
    let elements: usize = report.merges.iter().map(|c| c.elements).sum();
    println!(
        "cuda:{index} against the host: {} merges ({elements} elements; every method, f32/bf16/f16 \
         inputs, f32 and stored outputs) and {} kept-entry checks",
        report.merges.len(),
        report.masks.len()
    );
    for case in &differing {
        println!(
            "  DIFFERS {}: {} of {} elements ({} beyond the bound)",
            case.what, case.differing, case.elements, case.beyond_bound
        );
    }
    anyhow::ensure!(
        differing.is_empty(),
        "{} comparisons are not bit-identical",
        differing.len()
    );
    println!("all bit-identical");
    Ok(())
}
