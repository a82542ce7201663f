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

/// Whether `python3` cannot import torch, transformers and safetensors here; if so, prints
/// that the calling test is skipped, and why.
pub fn transformers_missing() -> bool {
    let out = std::process::Command::new("python3")
        .args(["-c", "import torch, transformers, safetensors"])
        .output();
    let why = match out {
        Ok(o) if o.status.success() => return false,
        Ok(o) => String::from_utf8_lossy(&o.stderr)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string(),
        Err(e) => e.to_string(),
    };
    eprintln!("skipped: python3 cannot import torch, transformers and safetensors ({why})");
    true
}
