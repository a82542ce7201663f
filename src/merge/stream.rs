//! One-shot merging straight to disk, tensor by tensor, for models larger than memory. Three
//! stages overlap: a reader thread copies the next tensor's rows out of the mapped files (and
//! releases their pages), the engine merges the current one, and a writer thread writes the
//! previous one. Peak memory is about three tensors' rows (`k + 1` rows each, in the
//! checkpoints' dtype) and two merged tensors. Window masks (TIES, Breadcrumbs) find their
//! bounds by selection, DELLA its row ranks by sorting, once per tensor: nothing is cached.

use std::sync::mpsc::sync_channel;

use burn::prelude::*;
use indicatif::ProgressBar;

use super::engine::host::{Ranks, Rows, run_to_vec, slerp_sums};
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
    _device: &B::Device,
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

    let merge = |t: usize, meta: &TensorMeta, rows: &HostRows| -> HostRows {
        let p = &resolved.groups[groups.of_tensor[t]];
        with_rows!(rows, |all: E| {
            let rows = Rows::split(all, meta.experts);
            let job: Job = tensor_job(resolved.method, meta, p, resolved.seed, || {
                slerp_sums(&rows)
            });
            let ranks = Ranks::Select {
                cols: meta.row_width(),
            };
            match out_dtypes[t] {
                Dtype::F32 => HostRows::F32(run_to_vec::<E, f32>(&job, &rows, &ranks)),
                Dtype::BF16 => HostRows::Bf16(run_to_vec::<E, half::bf16>(&job, &rows, &ranks)),
                Dtype::F16 => HostRows::F16(run_to_vec::<E, half::f16>(&job, &rows, &ranks)),
            }
        })
    };

    std::thread::scope(|scope| -> Result<(), MergeError> {
        let (read_tx, read_rx) = sync_channel::<Result<(TensorMeta, HostRows), CheckpointError>>(1);
        let (write_tx, write_rx) = sync_channel::<(String, HostRows)>(1);
        let (names, groups) = (&names, &groups);
        scope.spawn(move || {
            for (t, name) in names.iter().enumerate() {
                let read = RawTensor::read(set, name, groups.blocks[t]).map(|raw| {
                    let rows = raw.to_host();
                    (raw.meta, rows)
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
            let (meta, rows) = match read {
                Ok(r) => r,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            progress.set_message(meta.name.clone());
            let merged = merge(t, &meta, &rows);
            drop(rows);
            if write_tx.send((meta.name, merged)).is_err() {
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
