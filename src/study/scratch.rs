//! Where a run writes the candidates its external evaluators read: a folder of its own, inside
//! the location the user chose (`--scratch DIR`), else in shared memory (`/dev/shm`) when that
//! has room for every worker's candidate twice over, else in the run directory. The folder's
//! name is derived from the run directory, so a resumed run finds and empties what a killed one
//! left; it is removed when the run ends (and on a second Ctrl-C).

use std::path::{Path, PathBuf};

use crate::eval::free_bytes;
use crate::interrupt;
use crate::record::RecordError;

/// The scratch folder inside a run directory (the fallback location).
pub const SCRATCH_DIR: &str = "scratch";

/// Linux's shared memory, the default location when it has room.
const SHARED_MEMORY: &str = "/dev/shm";

/// The folder for the candidates of the run in `run_dir`: inside `chosen` when given, else in
/// shared memory when it has room for `workers` candidates of `bytes` each, twice over, else in
/// the run directory.
pub fn scratch_dir(run_dir: &Path, chosen: Option<&Path>, bytes: u64, workers: usize) -> PathBuf {
    let own = || {
        let absolute = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
        let key = xxhash_rust::xxh3::xxh3_64(absolute.as_os_str().as_encoded_bytes());
        format!("mergesearch-{key:016x}")
    };
    if let Some(dir) = chosen {
        return dir.join(own());
    }
    let needed = bytes.saturating_mul(2 * workers as u64);
    let shared = Path::new(SHARED_MEMORY);
    if shared.is_dir() && free_bytes(shared).is_ok_and(|free| free >= needed) {
        return shared.join(own());
    }
    run_dir.join(SCRATCH_DIR)
}

/// A run's scratch folder, emptied of what a killed process left, and removed at the end (or on
/// a second Ctrl-C).
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates `path` afresh (its parent too), removing what it held.
    pub fn fresh(path: &Path) -> Result<Scratch, RecordError> {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(|e| RecordError::io(path, e))?;
        }
        std::fs::create_dir_all(path).map_err(|e| RecordError::io(path, e))?;
        interrupt::register_scratch(path);
        Ok(Scratch(path.to_path_buf()))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        interrupt::unregister_scratch(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_gets_its_own_folder_in_the_chosen_place_or_the_run_directory() {
        let run = Path::new("/tmp/runs/a");
        let chosen = scratch_dir(run, Some(Path::new("/fast")), 1, 1);
        assert!(chosen.starts_with("/fast"));
        assert_ne!(chosen, Path::new("/fast"), "never the user's folder itself");
        assert_eq!(chosen, scratch_dir(run, Some(Path::new("/fast")), 9, 4));
        assert_ne!(
            chosen,
            scratch_dir(Path::new("/tmp/runs/b"), Some(Path::new("/fast")), 1, 1)
        );
        // More than any machine's shared memory: the run directory.
        assert_eq!(
            scratch_dir(run, None, u64::MAX / 4, 2),
            run.join(SCRATCH_DIR)
        );
    }
}
