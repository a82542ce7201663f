//! One-shot merging straight to disk, tensor by tensor, for models larger than memory. Three
//! stages overlap: a reader thread copies the next tensor's rows out of the mapped files (and
//! releases their pages) and resolves what its masks need (window bounds by selection, DELLA's
//! row ranks by sorting, one thread per expert: nothing is cached), the engine merges the
//! current one (on the host, or uploaded to a CUDA GPU and read back), and a writer thread writes
//! the previous one. Peak memory is about three tensors' rows (`k + 1` rows each, in the
//! checkpoints' dtype) and two merged tensors, on the host and on the GPU.

use std::sync::mpsc::sync_channel;

use burn::prelude::*;
use indicatif::ProgressBar;

use super::engine::host::{Ranks, Resolved, Rows, run_to_vec, slerp_sums};
use super::engine::{HostRows, Job, TensorMeta};
use super::plan::MergePlan;
use super::source::RawTensor;
use super::{MergeError, tensor_job};
use crate::checkpoint::{
    CheckpointError, Dtype, Granularity, LayerGroups, ModelSet, ModelWriter, TensorSpec,
};
use crate::with_rows;

/// How to write a streamed merge.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Output dtype for every tensor; `None` keeps each tensor's base dtype.
    pub dtype: Option<Dtype>,
    /// Maximum bytes per shard.
    pub max_shard_bytes: u64,
    /// Replace an existing output directory.
    pub overwrite: bool,
}

/// Merges `set` by `plan` into the model directory `out`, copying the base's non-weight files
/// when the base is a directory. Nothing appears under `out` unless the whole merge succeeds.
pub fn merge_streaming<B: Backend>(
    set: &ModelSet,
    granularity: &Granularity,
    plan: &MergePlan,
    out: &std::path::Path,
    options: &StreamOptions,
    device: &B::Device,
    progress: &ProgressBar,
) -> Result<std::path::PathBuf, MergeError> {
    let entries = set.base.tensors();
    let names: Vec<&str> = entries.iter().map(|t| t.info.name.as_str()).collect();
    let groups = LayerGroups::new(&names, granularity)?;
    let labels: Vec<String> = set
        .experts
        .iter()
        .map(|e| e.path().display().to_string())
        .collect();
    let resolved = plan.resolve(&groups.names, &labels)?;
    let specs: Vec<TensorSpec> = entries
        .iter()
        .map(|t| TensorSpec {
            name: t.info.name.clone(),
            shape: t.info.shape.clone(),
            dtype: options.dtype.unwrap_or(t.info.dtype),
        })
        .collect();
    let out_dtypes: Vec<Dtype> = specs.iter().map(|s| s.dtype).collect();
    let mut writer = ModelWriter::create(out, specs, options.max_shard_bytes, options.overwrite)?;
    progress.set_length(names.len() as u64);

    let engine = Engine::for_device(device);
    // The reader's work: the job of tensor `t` and what its masks need.
    let prepare = |t: usize, meta: &TensorMeta, rows: &HostRows| -> (Job, Resolved) {
        let p = &resolved.groups[groups.of_tensor[t]];
        with_rows!(rows, |all: E| {
            let rows = Rows::split(all, meta.experts);
            let job = tensor_job(resolved.method, meta, p, resolved.seed, || {
                slerp_sums(&rows)
            });
            let ranks = Resolved::new(&job, &rows, meta.row_width());
            (job, ranks)
        })
    };

    std::thread::scope(|scope| -> Result<(), MergeError> {
        let (read_tx, read_rx) = sync_channel::<Result<Prepared, CheckpointError>>(1);
        let (write_tx, write_rx) = sync_channel::<(String, HostRows)>(1);
        let (names, groups, prepare) = (&names, &groups, &prepare);
        scope.spawn(move || {
            for (t, name) in names.iter().enumerate() {
                let read = RawTensor::read(set, name, groups.blocks[t]).map(|raw| {
                    let rows = raw.to_host();
                    let (job, resolved) = prepare(t, &raw.meta, &rows);
                    Prepared {
                        meta: raw.meta,
                        rows,
                        job,
                        resolved,
                    }
                });
                std::iter::once(&set.base)
                    .chain(&set.experts)
                    .for_each(|m| m.release(name));
                let failed = read.is_err();
                if read_tx.send(read).is_err() || failed {
                    return;
                }
            }
        });
        let written = scope.spawn(move || -> Result<ModelWriter, CheckpointError> {
            for (name, merged) in write_rx {
                writer.write_encoded(&name, &merged.to_le_bytes())?;
            }
            Ok(writer)
        });
        let mut result: Result<(), MergeError> = Ok(());
        for (t, read) in read_rx.into_iter().enumerate() {
            let prepared = match read {
                Ok(r) => r,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            progress.set_message(prepared.meta.name.clone());
            let merged = engine.merge(&prepared, out_dtypes[t]);
            if write_tx.send((prepared.meta.name, merged)).is_err() {
                break; // the writer failed: its error is reported below
            }
            progress.inc(1);
        }
        drop(write_tx);
        let writer = written.join().expect("the writer thread panicked")?;
        result?;
        if set.base.is_dir() {
            let dtype = options
                .dtype
                .or_else(|| entries.first().map(|t| t.info.dtype))
                .unwrap_or(Dtype::F32);
            writer.copy_auxiliary_files(set.base.path(), dtype)?;
        }
        writer.finish()?;
        Ok(())
    })?;
    Ok(out.to_path_buf())
}

/// A tensor ready to merge.
struct Prepared {
    meta: TensorMeta,
    rows: HostRows,
    job: Job,
    resolved: Resolved,
}

/// Where a streamed merge computes.
enum Engine {
    /// Host threads.
    Host,
    /// A CUDA GPU: each tensor is uploaded, merged and read back.
    #[cfg(feature = "cuda")]
    Cuda(cubecl::prelude::ComputeClient<cubecl::cuda::CudaRuntime>),
}

impl Engine {
    fn for_device<D: std::any::Any>(device: &D) -> Engine {
        #[cfg(feature = "cuda")]
        if let Some(cuda) =
            (device as &dyn std::any::Any).downcast_ref::<cubecl::cuda::CudaDevice>()
        {
            use cubecl::Runtime;
            return Engine::Cuda(cubecl::cuda::CudaRuntime::client(cuda));
        }
        let _ = device;
        Engine::Host
    }

    /// The merged values of one tensor, in `dtype`, on the host.
    fn merge(&self, t: &Prepared, dtype: Dtype) -> HostRows {
        let ranks = Ranks::Resolved(&t.resolved);
        match self {
            Engine::Host => with_rows!(&t.rows, |all: E| {
                let rows = Rows::split(all, t.meta.experts);
                match dtype {
                    Dtype::F32 => HostRows::F32(run_to_vec::<E, f32>(&t.job, &rows, &ranks)),
                    Dtype::BF16 => {
                        HostRows::Bf16(run_to_vec::<E, half::bf16>(&t.job, &rows, &ranks))
                    }
                    Dtype::F16 => HostRows::F16(run_to_vec::<E, half::f16>(&t.job, &rows, &ranks)),
                }
            }),
            #[cfg(feature = "cuda")]
            Engine::Cuda(client) => {
                use super::engine::cube::CubeStore;
                let mut store = CubeStore::new(client.clone());
                let bytes = t.rows.to_le_bytes();
                let len = bytes.len() / (t.meta.experts + 1);
                let rows: Vec<&[u8]> = (0..=t.meta.experts)
                    .map(|r| &bytes[r * len..(r + 1) * len])
                    .collect();
                store.push(t.meta.clone(), &rows);
                let merged = store.run_with(0, &t.job, dtype, Some(&t.resolved));
                store.read(&merged)
            }
        }
    }
}
