//! Helpers shared by the integration tests.

use std::fs;
use std::path::{Path, PathBuf};

/// A fresh folder under the system temp dir, unique to a test and this process, removed when
/// dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `mergesearch-{suite}-{test}-{pid}` under the temp dir, emptied if it exists.
    pub fn new(suite: &str, test: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("mergesearch-{suite}-{test}-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).unwrap();
        }
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
