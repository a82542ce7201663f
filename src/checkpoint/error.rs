//! Errors of the checkpoint layer: each names the file and, where there is one, the tensor.

use std::path::PathBuf;

/// Anything that can go wrong reading, validating or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file system refused an operation.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "cannot open".
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// A tensor has a dtype mergesearch does not handle.
    #[error("{}: tensor {tensor:?} has unsupported dtype {dtype:?} (supported: F32, F16, BF16)", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The dtype as written in the header.
        dtype: String,
    },
    /// A tensor holds NaN or an infinity.
    #[error("{}: tensor {tensor:?} holds a non-finite value ({value}) at flat index {index}", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The flat index of the first non-finite element.
        index: usize,
        /// The value found there.
        value: f32,
    },
    /// A tensor was asked for that the model does not have.
    #[error("{}: no tensor named {tensor:?}", path.display())]
    MissingTensor {
        /// The model.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// A directory holds no safetensors weights we can find.
    #[error(
        "{}: no model.safetensors or model.safetensors.index.json in this directory (pass a .safetensors file or a Hugging Face model directory)",
        path.display()
    )]
    NoWeights {
        /// The directory.
        path: PathBuf,
    },
    /// `model.safetensors.index.json` is malformed or disagrees with its shards.
    #[error("{}: {reason}", path.display())]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Base and experts do not share tensor names and shapes.
    #[error("models do not match:\n{0}")]
    Mismatch(String),
    /// A bad request to the writer (for example a zero shard size).
    #[error("cannot write {}: {reason}", path.display())]
    Write {
        /// The output directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl CheckpointError {
    /// Wraps an I/O error with the path and the action that failed.
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    /// A corrupt-file error.
    pub fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        CheckpointError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
