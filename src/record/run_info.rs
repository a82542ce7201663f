//! `run.json`: what a run was — enough to reproduce it and to refuse a resume whose inputs
//! changed — and atomic JSON files in general.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::RecordError;
use super::atomic::write_atomic;
use crate::eval::Objective;
use crate::failpoint;

/// The run description file of a run directory.
pub const RUN_FILE: &str = "run.json";

/// `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The space file.
    pub space_file: PathBuf,
    /// The space after `--set` overrides, as JSON.
    pub space: serde_json::Value,
    /// The run seed.
    pub seed: u64,
    /// The optimizer's name.
    pub optimizer: String,
    /// Trials to run.
    pub budget_trials: Option<usize>,
    /// The dimensions' names, in point order.
    pub dimensions: Vec<String>,
    /// The space's objectives with their directions (from the evaluators).
    #[serde(default)]
    pub objectives: Vec<Objective>,
    /// The hypervolume reference point (objectives maximized), fixed after the first batch.
    #[serde(default)]
    pub reference: Option<Vec<f64>>,
    /// mergesearch's version.
    pub version: String,
    /// The random streams the run draws from ([`crate::rng::STREAMS`]; empty: an older
    /// mergesearch's hand-written generator).
    #[serde(default)]
    pub streams: String,
    /// xxh3-64 hash (hex) of every input file: the space, the models, the zoo manifest.
    pub inputs: BTreeMap<String, String>,
    /// When the run was created (seconds since the Unix epoch).
    pub created: f64,
}

/// Hashes each file (a directory: each file directly in it) with xxh3-64.
pub fn hash_inputs(paths: &[PathBuf]) -> Result<BTreeMap<String, String>, RecordError> {
    let mut hashes = BTreeMap::new();
    for path in paths {
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| RecordError::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            hashes.insert(file.display().to_string(), hash_file(&file)?);
        }
    }
    Ok(hashes)
}

fn hash_file(path: &Path) -> Result<String, RecordError> {
    let mut file = std::fs::File::open(path).map_err(|e| RecordError::io(path, e))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| RecordError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:016x}", hasher.digest()))
}

/// Writes `value` as pretty JSON to `path` atomically (see [`write_atomic`]): the file is
/// always either the old or the new content.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<(), RecordError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| RecordError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot be written: {e}"),
    })?;
    write_atomic(path, |file| {
        use std::io::Write;
        file.write_all(text.as_bytes())
            .map_err(|e| RecordError::io(path, e))?;
        failpoint::hit(failpoint::JSON_WRITE);
        Ok(())
    })
}

/// Reads a JSON file written by [`write_json_atomic`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, RecordError> {
    let text = std::fs::read_to_string(path).map_err(|e| RecordError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| RecordError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
