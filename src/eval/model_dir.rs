//! Writing a candidate as a Hugging Face model directory for an external evaluator, and removing
//! it when the trial is done.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::evaluator::Trial;
use super::{EvalConfigError, EvalContext};
use crate::checkpoint::{DEFAULT_MAX_SHARD_BYTES, Dtype, Model, ModelWriter, TensorSpec};
use crate::merge::{Candidate, host_values};
use crate::{failpoint, interrupt};

/// Writes candidates in the base model's dtypes, next to copies of the base's non-weight files.
pub struct CandidateWriter {
    base: PathBuf,
    dtypes: Vec<(String, Dtype)>,
    base_is_dir: bool,
    scratch: PathBuf,
}

/// A written candidate; the directory is removed when this is dropped.
pub struct WrittenModel {
    dir: PathBuf,
}

impl WrittenModel {
    /// The model directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl WrittenModel {
    /// Claims `dir` for a candidate: it is removed when this is dropped, or on a hard stop
    /// ([`crate::interrupt`]).
    fn claim(dir: PathBuf) -> WrittenModel {
        interrupt::register_scratch(&dir);
        WrittenModel { dir }
    }
}

impl Drop for WrittenModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        interrupt::unregister_scratch(&self.dir);
    }
}

impl CandidateWriter {
    /// A writer for candidates merged from the base model at `base`, into directories created
    /// under `scratch`.
    pub fn new(base: &Path, scratch: &Path) -> Result<CandidateWriter, String> {
        let model = Model::open(base).map_err(|e| e.to_string())?;
        Ok(CandidateWriter {
            base: base.to_path_buf(),
            dtypes: model
                .tensors()
                .iter()
                .map(|t| (t.info.name.clone(), t.info.dtype))
                .collect(),
            base_is_dir: model.is_dir(),
            scratch: scratch.to_path_buf(),
        })
    }

    /// Writes `candidate` to a fresh directory named after `label`.
    pub fn write<B: Backend>(
        &self,
        candidate: &Candidate<B>,
        label: &str,
    ) -> Result<WrittenModel, String> {
        let dir = self
            .scratch
            .join(format!("mergesearch-{}-{label}", std::process::id()));
        let dtype_of = |name: &str| {
            self.dtypes
                .iter()
                .find(|(n, _)| n == name)
                .map_or(Dtype::F32, |(_, d)| *d)
        };
        let specs = candidate
            .tensors
            .iter()
            .map(|(name, shape, _)| TensorSpec {
                name: name.clone(),
                shape: shape.clone(),
                dtype: dtype_of(name),
            })
            .collect();
        let fail = |e: crate::checkpoint::CheckpointError| {
            format!("cannot write the candidate to {}: {e}", dir.display())
        };
        // Claimed before the first byte: a write that fails half way (a full disk, a file-size
        // limit) leaves nothing behind.
        let written = WrittenModel::claim(dir.clone());
        let mut writer =
            ModelWriter::create(&dir, specs, DEFAULT_MAX_SHARD_BYTES, true).map_err(fail)?;
        for (i, (name, _, values)) in candidate.tensors.iter().enumerate() {
            writer
                .write(name, &host_values(values.clone()))
                .map_err(fail)?;
            if i == 0 {
                failpoint::hit(failpoint::CANDIDATE_WRITE);
            }
        }
        if self.base_is_dir {
            let dtype = self.dtypes.first().map_or(Dtype::F32, |(_, d)| *d);
            writer
                .copy_auxiliary_files(&self.base, dtype)
                .map_err(fail)?;
        }
        writer.finish().map_err(fail)?;
        Ok(written)
    }
}

/// The writer an external evaluator named `name` needs when `wanted` (because of its config
/// `key`): an error when the search space has no models to write.
pub fn candidate_writer(
    name: &str,
    key: &str,
    wanted: bool,
    context: &EvalContext,
) -> Result<Option<CandidateWriter>, EvalConfigError> {
    if !wanted {
        return Ok(None);
    }
    let base = context.base.as_deref().ok_or_else(|| {
        EvalConfigError::new(
            name,
            key,
            "asks for the merged model but the search space has no models".into(),
        )
    })?;
    CandidateWriter::new(base, &context.scratch)
        .map(Some)
        .map_err(|e| EvalConfigError::new(name, key, e))
}

/// Writes the trial's candidate when there is a writer; fails when the trial has none.
pub fn write_trial_model<B: Backend>(
    writer: Option<&CandidateWriter>,
    trial: &Trial<'_, B>,
) -> Result<Option<WrittenModel>, String> {
    let Some(writer) = writer else {
        return Ok(None);
    };
    let candidate = trial
        .candidate
        .ok_or("the evaluator takes the merged model but the trial has none")?;
    writer
        .write(candidate, &format!("trial-{}", trial.id))
        .map(Some)
}
