//! Materialization throughput of the [`Merger`] next to a plain memory copy, in one run.
//!
//! Throughput counts the bytes a merge must touch: the base and `k` task vectors read, the merged
//! model written, all f32: `(k + 2) * model bytes` per candidate. The copy baseline moves the same
//! number of bytes (it copies `(k + 2) / 2` model sizes: read once, written once), into a buffer
//! allocated once ("copy", the ratio's reference) and into a fresh buffer each time ("copy, fresh
//! buffer", which pays page faults as a new candidate does). The ratio to "copy" is what to
//! compare across machines.
//!
//! `cargo bench --bench merge` (release; under `cargo test` it only runs a 2 MB smoke check). Environment: `MERGESEARCH_BENCH_MB` (model size, default
//! 268), `MERGESEARCH_BENCH_DEVICE` (`cpu` or `cuda:N`), `MERGESEARCH_BENCH_REPS` (default 5).

use std::hint::black_box;
use std::time::{Duration, Instant};

use mergesearch::checkpoint::{DEFAULT_MAX_SHARD_BYTES, Dtype, Granularity, ModelSet};
use mergesearch::device::DeviceSpec;
use mergesearch::fixtures::{SyntheticSpec, write_synthetic_model};
use mergesearch::merge::{MergePlan, Merger, Method, ParamValue};

#[global_allocator]
static GLOBAL: mergesearch::alloc::MiMalloc = mergesearch::alloc::MiMalloc;

const EXPERTS: usize = 4;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time_reps(reps: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up: caches, allocator, page faults of the first run
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn plan(method: Method) -> MergePlan {
    let mut plan = MergePlan::new(method, EXPERTS, 0);
    for (i, e) in plan.experts.iter_mut().enumerate() {
        e.insert("weight".into(), ParamValue::Number(0.3 + 0.1 * i as f64));
        if method == Method::Ties {
            e.insert("density".into(), ParamValue::Number(0.2));
        }
    }
    plan
}

fn main() {
    mergesearch::alloc::keep_freed_memory();
    // `cargo test --all-targets` runs benches without `--bench`: then only a small smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let target_mb: f64 = if smoke {
        2.0
    } else {
        env_or("MERGESEARCH_BENCH_MB", 268.0)
    };
    let reps: usize = if smoke {
        1
    } else {
        env_or("MERGESEARCH_BENCH_REPS", 5)
    };
    let device_spec: DeviceSpec = env_or("MERGESEARCH_BENCH_DEVICE", DeviceSpec::Cpu);
    let device = device_spec.open().expect("bench device");
    mergesearch::with_backend!(device, |B, device| run::<B>(
        &device,
        device_spec,
        target_mb,
        reps
    ));
}

fn run<B: burn::tensor::backend::Backend>(
    device: &B::Device,
    device_spec: DeviceSpec,
    target_mb: f64,
    reps: usize,
) {
    // 8 blocks of 6 h^2 + h parameters, embedding and head of 8h x h: about 64 h^2 f32 values.
    let hidden = ((target_mb * 1e6 / 4.0 / 64.0).sqrt() / 64.0)
        .ceil()
        .max(1.0) as usize
        * 64;
    let spec = SyntheticSpec {
        layers: 8,
        hidden,
        vocab: 8 * hidden,
        dtype: Dtype::F32,
    };
    let dir = std::env::temp_dir().join(format!(
        "mergesearch-bench-{}-{}",
        hidden,
        std::process::id()
    ));
    let model_bytes = spec.bytes();
    eprintln!(
        "writing base + {EXPERTS} experts of {:.0} MB to {}",
        model_bytes as f64 / 1e6,
        dir.display()
    );
    let paths: Vec<_> = (0..=EXPERTS).map(|i| dir.join(format!("m{i}"))).collect();
    for (i, p) in paths.iter().enumerate() {
        let expert = if i == 0 { None } else { Some(i - 1) };
        write_synthetic_model(p, &spec, 7, expert, DEFAULT_MAX_SHARD_BYTES).expect("write fixture");
    }
    let set = ModelSet::open(&paths[0], &paths[1..]).expect("open fixture");
    let granularity: Granularity = "layer".parse().expect("granularity");
    let t = Instant::now();
    let merger = Merger::<B>::load(
        &set,
        &granularity,
        device,
        &indicatif::ProgressBar::hidden(),
    )
    .expect("load merger");
    let load_time = t.elapsed();

    let moved = (EXPERTS as u64 + 2) * model_bytes;
    let source = vec![1u8; (moved / 2) as usize];
    let fresh_copy = time_reps(reps, || {
        black_box(source.to_vec());
    });
    let mut target = vec![0u8; source.len()];
    let copy = time_reps(reps, || {
        target.copy_from_slice(black_box(&source));
        black_box(&target);
    });
    let gbps = |d: Duration| moved as f64 / d.as_secs_f64() / 1e9;
    println!(
        "model {:.0} MB f32, {EXPERTS} experts, device {device_spec}, merger load {:.2}s, median of {reps}",
        model_bytes as f64 / 1e6,
        load_time.as_secs_f64()
    );
    println!(
        "{:<18} {:>10} {:>10} {:>10}",
        "workload", "seconds", "GB/s", "vs copy"
    );
    for (name, d) in [("copy", copy), ("copy, fresh buffer", fresh_copy)] {
        println!(
            "{:<18} {:>10.4} {:>10.2} {:>10.2}",
            name,
            d.as_secs_f64(),
            gbps(d),
            copy.as_secs_f64() / d.as_secs_f64()
        );
    }
    for method in [Method::TaskArithmetic, Method::Ties] {
        let plan = plan(method);
        let resolved = merger.resolve(&plan).expect("plan");
        let d = time_reps(reps, || {
            let candidate = merger.materialize_resolved(&resolved);
            B::sync(device).expect("sync");
            black_box(candidate);
        });
        println!(
            "{:<18} {:>10.4} {:>10.2} {:>10.2}",
            method.name(),
            d.as_secs_f64(),
            gbps(d),
            copy.as_secs_f64() / d.as_secs_f64()
        );
    }
    drop(merger);
    drop(set);
    let _ = std::fs::remove_dir_all(&dir);
}
