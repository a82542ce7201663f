//! The append-only trial journal (`trials.jsonl`): one JSON line per finished trial, flushed and
//! synced before the next, so a crash or `kill -9` at any moment loses no finished trial. A line
//! cut off by a crash is ignored when reading (that trial did not finish being recorded, and is
//! run again on resume). Non-finite scores are never written (they would become `null`): a trial
//! that reports one is recorded as failed, naming the objective.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::RecordError;
use super::atomic::sync_parent;
use super::trial::TrialRecord;
use crate::failpoint;

/// The journal file of a run directory.
pub const JOURNAL_FILE: &str = "trials.jsonl";

/// An open journal, appending.
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (creating) the journal in `dir` for appending, first cutting off a final line
    /// that a crash left without its newline.
    pub fn open(dir: &Path) -> Result<Journal, RecordError> {
        let path = dir.join(JOURNAL_FILE);
        let io = |e| RecordError::io(&path, e);
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(io)?;
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            if complete < bytes.len() {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(complete as u64))
                    .map_err(io)?;
            }
        }
        let created = !path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        if created {
            sync_parent(&path)?;
        }
        Ok(Journal { path, file })
    }

    /// Appends one trial (as [`TrialRecord::with_finite_values`] has it, so that the line reads
    /// back) and syncs it to disk.
    pub fn append(&mut self, trial: &TrialRecord) -> Result<(), RecordError> {
        let trial = trial.clone().with_finite_values();
        let mut line = serde_json::to_string(&trial).map_err(|e| RecordError::Corrupt {
            path: self.path.clone(),
            reason: format!("trial {} cannot be written: {e}", trial.id),
        })?;
        line.push('\n');
        let (first, second) = line.as_bytes().split_at(line.len() / 2);
        self.file
            .write_all(first)
            .and_then(|()| {
                failpoint::hit(failpoint::JOURNAL_APPEND);
                self.file.write_all(second)
            })
            .and_then(|()| self.file.sync_data())
            .map_err(|e| RecordError::io(&self.path, e))
    }
}

/// Every complete trial in the journal of `dir` (none if it does not exist), in the order of
/// their first lines; a trial written again (scored at a higher fidelity rung) is its last line.
/// A final line without its newline (a write cut short) is skipped; a damaged line elsewhere is
/// an error naming the line.
pub fn read_journal(dir: &Path) -> Result<Vec<TrialRecord>, RecordError> {
    let path = dir.join(JOURNAL_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RecordError::io(&path, e)),
    };
    let mut reader = BufReader::new(file);
    let mut trials: Vec<TrialRecord> = Vec::new();
    let mut place: HashMap<u64, usize> = HashMap::new();
    let mut line = String::new();
    for number in 1.. {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| RecordError::io(&path, e))?;
        if read == 0 || !line.ends_with('\n') {
            break;
        }
        let trial: TrialRecord =
            serde_json::from_str(line.trim_end()).map_err(|e| RecordError::Corrupt {
                path: path.clone(),
                reason: format!("line {number}: {e}"),
            })?;
        let trial = trial.with_finite_values();
        match place.get(&trial.id) {
            Some(&at) => trials[at] = trial,
            None => {
                place.insert(trial.id, trials.len());
                trials.push(trial);
            }
        }
    }
    Ok(trials)
}
