//! Materialization throughput of every merge method next to a copy of the same bytes on the same
//! device, in one run (`mergesearch::bench`; the binary runs the same code as
//! `mergesearch bench merge`).
//!
//! `cargo bench --bench merge` (release; under `cargo test` it only runs a 2 MB smoke check).
//! Environment: `MERGESEARCH_BENCH_MB` (model size, default 268), `MERGESEARCH_BENCH_DTYPE`
//! (`f32` or `bf16`, default f32), `MERGESEARCH_BENCH_DEVICE` (`cpu` or `cuda:N`),
//! `MERGESEARCH_BENCH_REPS` (default 5).

use mergesearch::bench::{default_bench, merge_bench};
use mergesearch::checkpoint::Dtype;
use mergesearch::device::DeviceSpec;

#[global_allocator]
static GLOBAL: mergesearch::alloc::MiMalloc = mergesearch::alloc::MiMalloc;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    mergesearch::alloc::keep_freed_memory();
    // `cargo test --all-targets` runs benches without `--bench`: then only a small smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (mb, reps) = if smoke {
        (2.0, 1)
    } else {
        (
            env_or("MERGESEARCH_BENCH_MB", 268.0),
            env_or("MERGESEARCH_BENCH_REPS", 5),
        )
    };
    let dtype: Dtype = env_or("MERGESEARCH_BENCH_DTYPE", Dtype::F32);
    let device_spec: DeviceSpec = env_or("MERGESEARCH_BENCH_DEVICE", DeviceSpec::Cpu);
    let device = device_spec.open().expect("bench device");
    let bench = default_bench(mb, dtype, reps);
    let report = mergesearch::with_backend!(device, |B, device| merge_bench::<B>(
        &bench,
        &device,
        &device_spec.to_string()
    ))
    .expect("the bench runs");
    print!("{report}");
}
