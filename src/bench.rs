//! Benchmarks that also run from the binary (`mergesearch bench ...`), because a GPU machine
//! may have no compiler: materialization throughput of every merge method next to a copy of
//! bytes on the same device, in the same run. `benches/merge.rs` runs the same code.
//!
//! Throughput counts the bytes a merge must touch: the base and every expert read in their
//! stored dtype, the candidate written in `f32` (what in-process evaluators take). The copy
//! moves half as many bytes twice (read once, written once) through the same memory; its size is
//! capped at 1 GB, enough to reach streaming bandwidth.

use std::time::{Duration, Instant};

use burn::prelude::*;

use crate::checkpoint::{Dtype, Granularity};
use crate::fixtures::{SyntheticSpec, synthetic_bytes};
use crate::merge::{MergePlan, Merger, Method, ParamValue, RawTensor, TensorMeta};

/// What to measure.
#[derive(Debug, Clone)]
pub struct MergeBench {
    /// The model's shape and stored dtype.
    pub spec: SyntheticSpec,
    /// Number of experts.
    pub experts: usize,
    /// The methods, in order.
    pub methods: Vec<Method>,
    /// Timed candidates per method (after the first, which also builds caches).
    pub reps: usize,
}

/// The methods measured by default: the linear family and every sparsifier.
pub const DEFAULT_METHODS: [Method; 6] = [
    Method::Linear,
    Method::TaskArithmetic,
    Method::Ties,
    Method::DareTies,
    Method::Breadcrumbs,
    Method::Della,
];

/// One measured workload.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// The workload.
    pub name: String,
    /// The first candidate (with any cache it builds), if it differs from the others.
    pub first: Option<Duration>,
    /// Median of the timed repetitions.
    pub median: Duration,
    /// Bytes moved per repetition.
    pub bytes: u64,
    /// Bytes reserved on the GPU after it, if on one.
    pub device_bytes: Option<u64>,
}

impl BenchRow {
    /// Throughput in GB/s.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.median.as_secs_f64() / 1e9
    }
}

/// The results of a merge benchmark.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// A description of the model, the experts and the device.
    pub setup: String,
    /// Seconds to generate the rows and load them onto the device.
    pub load: Duration,
    /// The copy first, then one row per method.
    pub rows: Vec<BenchRow>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.setup)?;
        writeln!(f, "generated and loaded in {:.1}s", self.load.as_secs_f64())?;
        writeln!(
            f,
            "{:<18} {:>10} {:>10} {:>9} {:>8} {:>10}",
            "workload", "first s", "median s", "GB/s", "vs copy", "device GB"
        )?;
        let copy = self.rows.first().map_or(1.0, BenchRow::gbps);
        for row in &self.rows {
            writeln!(
                f,
                "{:<18} {:>10} {:>10.4} {:>9.1} {:>8.2} {:>10}",
                row.name,
                row.first
                    .map_or("-".to_string(), |d| format!("{:.4}", d.as_secs_f64())),
                row.median.as_secs_f64(),
                row.gbps(),
                row.gbps() / copy,
                row.device_bytes
                    .map_or("-".to_string(), |b| format!("{:.1}", b as f64 / 1e9)),
            )?;
        }
        Ok(())
    }
}

/// The plan each method is measured with: weights 0.3, 0.4, ...; density 0.2 (TIES, DARE,
/// Breadcrumbs, DELLA), the defaults otherwise.
pub fn bench_plan(method: Method, experts: usize) -> MergePlan {
    let mut plan = MergePlan::new(method, experts, 0);
    let sparse = matches!(
        method,
        Method::Ties
            | Method::DareLinear
            | Method::DareTies
            | Method::Breadcrumbs
            | Method::BreadcrumbsTies
            | Method::Della
            | Method::DellaLinear
    );
    for (i, e) in plan.experts.iter_mut().enumerate() {
        if method != Method::Slerp {
            e.insert("weight".into(), ParamValue::Number(0.3 + 0.1 * i as f64));
        }
        if sparse {
            e.insert("density".into(), ParamValue::Number(0.2));
        }
    }
    match method {
        Method::Slerp => {
            plan.shared.insert("t".into(), ParamValue::Number(0.5));
        }
        Method::Lines => {
            plan.shared.insert("beta".into(), ParamValue::Number(0.5));
        }
        _ => {}
    }
    plan
}

/// Runs the benchmark on `device` (`device_name` for the report), printing progress to stderr.
pub fn merge_bench<B: Backend>(
    bench: &MergeBench,
    device: &B::Device,
    device_name: &str,
) -> Result<BenchReport, crate::merge::MergeError> {
    let spec = &bench.spec;
    let k = bench.experts;
    let tensors = spec.tensors();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let setup = format!(
        "model: {} blocks x {} (MLP {}, vocab {}), {}, {:.1} M parameters ({:.2} GB), {k} experts, device {device_name} (host loops: {})",
        spec.layers,
        spec.hidden,
        spec.intermediate,
        spec.vocab,
        spec.dtype,
        spec.params() as f64 / 1e6,
        spec.bytes() as f64 / 1e9,
        crate::merge::engine::CpuBuild::detect()
    );
    eprintln!("{setup}");
    let started = Instant::now();
    let bar = crate::cli::tensor_bar("generating");
    let granularity: Granularity = "layer".parse().expect("a granularity");
    let merger = Merger::<B>::build(
        &names,
        &granularity,
        (0..k).map(|i| format!("expert {i}")).collect(),
        device,
        &bar,
        |name, block| {
            let shape = &tensors.iter().find(|(n, _)| n == name).expect("a tensor").1;
            let numel = shape.iter().product();
            let rows = (0..=k)
                .map(|r| {
                    let expert = r.checked_sub(1);
                    std::borrow::Cow::Owned(synthetic_bytes(name, numel, 7, expert, spec.dtype))
                })
                .collect();
            Ok(RawTensor {
                meta: TensorMeta {
                    name: name.to_string(),
                    shape: shape.clone(),
                    block,
                    dtype: spec.dtype,
                    experts: k,
                },
                rows,
            })
        },
    )?;
    bar.finish_and_clear();
    let load = started.elapsed();
    let moved = spec.params() * ((k as u64 + 1) * spec.dtype.size() as u64 + 4);
    let copy_bytes = (moved / 2).min(1_000_000_000) as usize;
    let copy = merger.copy_time(copy_bytes, bench.reps);
    let mut rows = vec![BenchRow {
        name: "copy".into(),
        first: None,
        median: copy,
        bytes: 2 * copy_bytes as u64,
        device_bytes: merger.device_memory(),
    }];
    for &method in &bench.methods {
        eprintln!("measuring {method}");
        let plan = merger.resolve(&bench_plan(method, k))?;
        let time = || {
            let t = Instant::now();
            let candidate = merger.materialize_resolved(&plan);
            B::sync(device).expect("the device synchronizes");
            let elapsed = t.elapsed();
            drop(candidate);
            elapsed
        };
        let first = time();
        let mut times: Vec<Duration> = (0..bench.reps.max(1)).map(|_| time()).collect();
        times.sort();
        rows.push(BenchRow {
            name: method.name().to_string(),
            first: Some(first),
            median: times[times.len() / 2],
            bytes: moved,
            device_bytes: merger.device_memory(),
        });
    }
    Ok(BenchReport { setup, load, rows })
}

/// A synthetic model of about `mb` megabytes in `dtype`: 8 blocks of width `h` (a multiple of
/// 64), MLP and vocabulary twice as wide (about 84 h^2 parameters).
pub fn spec_of_size(mb: f64, dtype: Dtype) -> SyntheticSpec {
    let hidden = ((mb * 1e6 / dtype.size() as f64 / 84.0).sqrt() / 64.0)
        .ceil()
        .max(1.0) as usize
        * 64;
    SyntheticSpec {
        layers: 8,
        hidden,
        intermediate: 2 * hidden,
        vocab: 2 * hidden,
        dtype,
    }
}

/// The default methods on a model of about `mb` megabytes with 4 experts.
pub fn default_bench(mb: f64, dtype: Dtype, reps: usize) -> MergeBench {
    MergeBench {
        spec: spec_of_size(mb, dtype),
        experts: 4,
        methods: DEFAULT_METHODS.to_vec(),
        reps,
    }
}
