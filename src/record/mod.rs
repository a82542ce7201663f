//! What a run leaves behind in its directory: the append-only journal of finished trials
//! (`trials.jsonl`), its compaction into `trials.parquet`, `run.json` (the resolved space, seed,
//! optimizer, crate version and a hash of every input file), and the optimizer's state after the
//! last complete batch (`optimizer.json`), from which `run --resume` continues; and the Pareto
//! front over the space's objectives with its hypervolume history.
//!
//! Two rules keep a run directory whole whatever happens to the process: the journal is appended
//! and synced one trial at a time, and every other file is replaced atomically (`atomic.rs`);
//! and only one process writes a run directory at a time (`lock.rs`).

mod atomic;
mod front;
mod journal;
mod lock;
mod parquet;
mod plot;
mod run_info;
mod trial;

use std::path::{Path, PathBuf};

pub use atomic::{staging_path, sync_dir, write_atomic};
pub use front::{
    FRONT_FILE, HYPERVOLUME_FILE, HypervolumePoint, front, objective_points, read_history,
    update_front,
};
pub use journal::{JOURNAL_FILE, Journal, read_journal};
pub use lock::{LOCK_FILE, LockHolder, RunLock};
pub use parquet::{TRIALS_FILE, write_table, write_trials};
pub use plot::{Axis as PlotAxis, scatter_svg};
pub use run_info::{RUN_FILE, RunInfo, hash_inputs, read_json, write_json_atomic};
pub(crate) use trial::number_or_nan;
pub use trial::{RungScores, Status, TrialRecord, now};

/// Reading or writing a run's records failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A record file does not parse.
    #[error("{}: damaged: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another live process holds the run directory.
    #[error(
        "{} is in use by {holder}: wait for it to finish (or stop it), or choose another --out",
        dir.display()
    )]
    Locked {
        /// The run directory.
        dir: PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// Writing Parquet failed.
    #[error("{}: cannot write Parquet: {reason}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// polars' message.
        reason: String,
    },
}

impl RecordError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> RecordError {
        RecordError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
