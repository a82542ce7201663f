//! One-shot merging straight to disk, tensor by tensor, for models larger than memory: only one
//! tensor of the base and each expert is resident at a time (the mapped pages of finished tensors
//! are released), so peak memory is about `(k + 3)` times the largest tensor in f32.

use burn::prelude::*;
use indicatif::ProgressBar;

use super::inputs::{TensorInputs, host_values};
use super::plan::MergePlan;
use super::{MergeError, merge_tensor};
use crate::checkpoint::{Dtype, Granularity, LayerGroups, ModelSet, ModelWriter, TensorSpec};

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
    let specs = entries
        .iter()
        .map(|t| TensorSpec {
            name: t.info.name.clone(),
            shape: t.info.shape.clone(),
            dtype: options.dtype.unwrap_or(t.info.dtype),
        })
        .collect();
    let mut writer = ModelWriter::create(out, specs, options.max_shard_bytes, options.overwrite)?;
    progress.set_length(names.len() as u64);
    for (i, name) in names.iter().enumerate() {
        progress.set_message(name.to_string());
        let inputs = TensorInputs::<B>::read(set, name, groups.blocks[i], device)?;
        let p = &resolved.groups[groups.of_tensor[i]];
        let merged = host_values(merge_tensor(resolved.method, &inputs, p, resolved.seed));
        drop(inputs);
        writer.write(name, &merged)?;
        progress.inc(1);
    }
    if set.base.is_dir() {
        let dtype = options
            .dtype
            .or_else(|| entries.first().map(|t| t.info.dtype))
            .unwrap_or(Dtype::F32);
        writer.copy_auxiliary_files(set.base.path(), dtype)?;
    }
    Ok(writer.finish()?)
}
