//! Atomic file replacement: a record file is always either its old or its new content, also
//! after a crash, a `kill -9` or a power cut. The new content goes to a staging file next to the
//! target, which is synced, renamed over the target, and the directory synced so that the
//! rename itself is on disk.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::RecordError;

/// The staging file `write_atomic` writes `path`'s new content to (`name.partial`).
pub fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Replaces `path` atomically with what `write` writes into a fresh file.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), RecordError>,
) -> Result<(), RecordError> {
    let staging = staging_path(path);
    let mut file = File::create(&staging).map_err(|e| RecordError::io(&staging, e))?;
    write(&mut file)?;
    file.sync_all().map_err(|e| RecordError::io(&staging, e))?;
    drop(file);
    std::fs::rename(&staging, path).map_err(|e| RecordError::io(path, e))?;
    sync_parent(path)
}

/// Syncs the directory holding `path`, so that a file created or renamed there survives a
/// crash of the machine.
pub fn sync_parent(path: &Path) -> Result<(), RecordError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// Syncs a directory's entries to disk (a no-op where directories cannot be opened as files).
pub fn sync_dir(dir: &Path) -> Result<(), RecordError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| RecordError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_content() {
        let dir = std::env::temp_dir().join(format!("mergesearch-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.json");
        write_atomic(&path, |f| {
            std::io::Write::write_all(f, b"old").map_err(|e| RecordError::io(&path, e))
        })
        .unwrap();
        let failed = write_atomic(&path, |f| {
            std::io::Write::write_all(f, b"half").map_err(|e| RecordError::io(&path, e))?;
            Err(RecordError::io(&path, std::io::Error::other("disk full")))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(staging_path(&path), dir.join("x.json.partial"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
