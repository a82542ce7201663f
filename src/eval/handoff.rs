//! Handing a trial's candidate to external evaluators as a Hugging Face model directory.
//!
//! The candidate is written at most once per trial: the first evaluator that asks for it
//! ([`Handoff::model_dir`]) writes it, and every other evaluator and every retry of the trial
//! reads the same directory, which is removed when the trial ends. It is written into a scratch
//! location (see [`crate::study`] for how a run chooses one), after checking that the file
//! system there has room for it.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use burn::prelude::*;

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
    bytes: u64,
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
            bytes: tensor_bytes(&model),
        })
    }

    /// Bytes of tensor data in a candidate merged from the base model at `base`.
    pub fn candidate_bytes(base: &Path) -> Result<u64, String> {
        Ok(tensor_bytes(&Model::open(base).map_err(|e| e.to_string())?))
    }

    /// Writes `candidate` to a fresh directory named after `label`, after checking that the
    /// scratch file system has room for it.
    pub fn write<B: Backend>(
        &self,
        candidate: &Candidate<B>,
        label: &str,
    ) -> Result<WrittenModel, String> {
        check_room(&self.scratch, self.bytes + ROOM_MARGIN)?;
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
        let mut writer = ModelWriter::create(&dir, specs, DEFAULT_MAX_SHARD_BYTES, true)
            .map_err(fail)?
            .transient();
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

/// Bytes of `model`'s tensor data.
fn tensor_bytes(model: &Model) -> u64 {
    model
        .tensors()
        .iter()
        .map(|t| (t.info.end - t.info.begin) as u64)
        .sum()
}

/// Whether an external evaluator named `name` takes the candidate (`wanted`, because of its
/// config `key`): an error when the search space has no models to hand over.
pub(super) fn takes_candidate(
    name: &str,
    key: &str,
    wanted: bool,
    context: &EvalContext,
) -> Result<bool, EvalConfigError> {
    if wanted && context.base.is_none() {
        return Err(EvalConfigError::new(
            name,
            key,
            "asks for the merged model but the search space has no models".into(),
        ));
    }
    Ok(wanted)
}

/// Room asked for beyond the tensors: the header, index, config and tokenizer files.
const ROOM_MARGIN: u64 = 64 << 20;

/// Bytes that an unprivileged process may still write on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string and `stats` is writable memory of the right
    // type; statvfs fills it when it returns 0.
    let status = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialized `stats`.
    let stats = unsafe { stats.assume_init() };
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// An error, naming `dir`, when its file system has fewer than `needed` bytes free.
pub fn check_room(dir: &Path, needed: u64) -> Result<(), String> {
    let free = free_bytes(dir)
        .map_err(|e| format!("cannot tell the free space in {}: {e}", dir.display()))?;
    if free < needed {
        return Err(format!(
            "no room for the candidate in the scratch folder {}: it needs {} and the file system has {} free (choose another place with --scratch DIR, or free space)",
            dir.display(),
            gigabytes(needed),
            gigabytes(free)
        ));
    }
    Ok(())
}

/// `bytes` in GB with three decimals.
fn gigabytes(bytes: u64) -> String {
    format!("{:.3} GB", bytes as f64 / 1e9)
}

/// A trial's candidate as a model directory, written the first time an evaluator asks for it
/// and shared by every evaluator and retry of the trial; dropped at the end of the trial, it
/// removes the directory.
pub struct Handoff<'a, B: Backend> {
    writer: &'a CandidateWriter,
    candidate: &'a Candidate<B>,
    label: String,
    written: OnceCell<Result<WrittenModel, String>>,
}

impl<'a, B: Backend> Handoff<'a, B> {
    /// Hands `candidate` over through `writer`, into a directory named after `label`.
    pub fn new(writer: &'a CandidateWriter, candidate: &'a Candidate<B>, label: String) -> Self {
        Handoff {
            writer,
            candidate,
            label,
            written: OnceCell::new(),
        }
    }

    /// The candidate's directory, written now if no evaluator asked for it before. A write that
    /// failed is not tried again within the trial: every later request gets its reason.
    pub fn model_dir(&self) -> Result<&Path, String> {
        self.written
            .get_or_init(|| self.writer.write(self.candidate, &self.label))
            .as_ref()
            .map(WrittenModel::path)
            .map_err(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_too_little_room_names_the_folder() {
        let dir = std::env::temp_dir();
        assert!(free_bytes(&dir).unwrap() > 0);
        let err = check_room(&dir, u64::MAX).unwrap_err();
        assert!(err.contains("no room for the candidate"), "{err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(check_room(&dir, 1).is_ok());
        let missing = dir.join("mergesearch-no-such-folder");
        let err = check_room(&missing, 1).unwrap_err();
        assert!(err.contains("cannot tell the free space"), "{err}");
    }
}
