//! The merge engine: what a method computes for one tensor, as a [`Job`], and the two places that
//! run jobs — the host ([`host`], fused loops on every core) and a GPU ([`cube`], cubecl kernels
//! on CUDA, or on wgpu for tests) — with identical results (see [`job`] for the contract).
//!
//! A [`Store`] holds a model set's tensors where they are merged, in the checkpoints' own dtype,
//! with the caches no plan changes (magnitude ranks, built on first use); it runs a job on one of
//! its tensors and returns the merged values in the dtype asked for.

pub mod bits;
pub mod draws;
pub mod elem;
pub mod host;
pub mod host_store;
pub mod job;
pub mod ranks;
pub mod tree;

#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod cube;

pub use bits::StreamKey;
pub use elem::{Elem, HostRows};
pub use host_store::HostStore;
pub use job::{Consensus, Gta, Job, Mask, Mix};

use crate::checkpoint::{BlockPosition, Dtype};

/// What the engine knows of a tensor besides its values.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMeta {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its block position, if its name carries a block index.
    pub block: Option<BlockPosition>,
    /// The dtype its rows are stored in.
    pub dtype: Dtype,
    /// Number of experts.
    pub experts: usize,
}

impl TensorMeta {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Elements per row for DELLA's ranks within rows: the size of the last dimensions of a
    /// matrix (or larger), the whole tensor for a vector.
    pub fn row_width(&self) -> usize {
        match self.shape.first() {
            Some(&rows) if self.shape.len() >= 2 && rows > 0 => self.numel() / rows,
            _ => self.numel(),
        }
    }
}

/// A set of tensors held where they are merged.
pub trait Store: Send + Sync {
    /// A merged tensor, where this store keeps it.
    type Merged;

    /// The tensors, in order.
    fn tensors(&self) -> &[TensorMeta];

    /// Runs `job` on tensor `t`, producing values of type `dtype`.
    fn run(&self, t: usize, job: &Job, dtype: Dtype) -> Self::Merged;

    /// The tree sums `[|base|^2, |expert|^2, base . expert]` of tensor `t` (SLERP, one expert).
    fn slerp_sums(&self, t: usize) -> [f32; 3];

    /// Bytes held on the store's device: rows, cached ranks.
    fn bytes(&self) -> usize;

    /// Builds, for every tensor, the cached tensor-wide ranks (`ranks`) and row ranks
    /// (`row_ranks`) not built yet, on all cores (otherwise each is built when a job first
    /// needs it).
    fn prepare(&self, ranks: bool, row_ranks: bool);
}

/// Calls `f(t)` for every `t < n`, on `threads` threads taking the next index as they finish.
pub fn for_each_parallel(n: usize, threads: usize, f: impl Fn(usize) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            scope.spawn(|| {
                loop {
                    let t = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if t >= n {
                        break;
                    }
                    f(t);
                }
            });
        }
    });
}

/// Worker threads for building ranks of many tensors, each of which sorts its `experts` task
/// vectors on a thread of their own.
pub fn rank_workers(experts: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.div_ceil(experts.max(1))
}

/// Work that runs on one thread: its `run` (marked `#[inline(always)]`, as everything it calls
/// in a hot loop must be) is compiled again for each [`CpuBuild`] by [`with_fast_cpu`].
pub trait Work {
    /// Does the work.
    fn run(&mut self);
}

/// The instruction sets the host engine's loops run with on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuBuild {
    /// AVX-512 (F, BW, VL, DQ) with FMA.
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// The target's baseline (SSE2 on x86-64).
    Baseline,
}

impl CpuBuild {
    /// The widest build this CPU supports, detected once.
    pub fn detect() -> CpuBuild {
        static BUILD: std::sync::OnceLock<CpuBuild> = std::sync::OnceLock::new();
        *BUILD.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f")
                    && has!("avx512bw")
                    && has!("avx512vl")
                    && has!("avx512dq")
                    && has!("fma")
                {
                    return CpuBuild::Avx512;
                }
                if has!("avx2") && has!("fma") {
                    return CpuBuild::Avx2;
                }
            }
            CpuBuild::Baseline
        })
    }
}

impl std::fmt::Display for CpuBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CpuBuild::Avx512 => "AVX-512",
            CpuBuild::Avx2 => "AVX2",
            CpuBuild::Baseline => "baseline SIMD",
        })
    }
}

/// Runs `work`, compiled (with everything it inlines) for the widest [`CpuBuild`] the CPU
/// supports, so the loops vectorize with hardware fused multiply-adds. The results are the same
/// bits in every build: the arithmetic is written operation by operation, and `mul_add` is always
/// fused (in software without FMA).
pub fn with_fast_cpu<W: Work>(work: &mut W) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn avx512<W: Work>(work: &mut W) {
            work.run()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<W: Work>(work: &mut W) {
            work.run()
        }
        match CpuBuild::detect() {
            // SAFETY: `detect` found every extension these builds enable.
            CpuBuild::Avx512 => return unsafe { avx512(work) },
            // SAFETY: as above.
            CpuBuild::Avx2 => return unsafe { avx2(work) },
            CpuBuild::Baseline => {}
        }
    }
    work.run()
}
