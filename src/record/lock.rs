//! One run directory, one live process: an advisory lock (`flock`) on the directory's `lock`
//! file, held for as long as a run writes there. The operating system releases it when the
//! process ends however it ends, so a lock left by a killed process is simply taken over; the
//! file also names its holder (process id, host, command line, start time) so that a refused
//! second process can say who holds the directory, and a takeover can say whose lock it was.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RecordError;
use super::atomic::sync_parent;
use super::trial::now;

/// The lock file of a run directory.
pub const LOCK_FILE: &str = "lock";

/// Who holds (or last held) a run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The process id.
    pub pid: u32,
    /// The machine's host name.
    pub host: String,
    /// The command line.
    pub command: String,
    /// When it took the lock (seconds since the Unix epoch).
    pub since: f64,
}

impl LockHolder {
    fn this_process() -> LockHolder {
        LockHolder {
            pid: std::process::id(),
            host: host_name(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            since: now(),
        }
    }

    /// `process 123 on host, for 5 s (mergesearch run ...)`.
    pub fn describe(&self) -> String {
        format!(
            "process {} on {}, for {:.0} s (`{}`)",
            self.pid,
            self.host,
            (now() - self.since).max(0.0),
            self.command
        )
    }
}

/// The held lock of a run directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    stale: Option<LockHolder>,
}

impl RunLock {
    /// Locks `dir` (creating it), or fails with [`RecordError::Locked`] naming the live holder.
    pub fn acquire(dir: &Path) -> Result<RunLock, RecordError> {
        std::fs::create_dir_all(dir).map_err(|e| RecordError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let io = |e| RecordError::io(&path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(RecordError::Locked {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut file)
                        .map_or_else(|| "another process".to_string(), |h| h.describe()),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let stale = read_holder(&mut file);
        let text = serde_json::to_string(&LockHolder::this_process()).map_err(|e| {
            RecordError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        sync_parent(&path)?;
        Ok(RunLock { file, path, stale })
    }

    /// The holder of a lock that was taken over: a process that ended without releasing it
    /// (killed, or crashed).
    pub fn stale(&self) -> Option<&LockHolder> {
        self.stale.as_ref()
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // A clean end clears the holder; an empty file is no stale lock. The lock itself goes
        // with the file descriptor.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The holder recorded in the lock file, if it names one.
fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// The host name, or `unknown host`.
fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buffer = [0u8; 256];
        // SAFETY: gethostname(2) writes at most `len` bytes into the buffer we own.
        let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
        if rc == 0 {
            let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
            return String::from_utf8_lossy(&buffer[..end]).into_owned();
        }
    }
    "unknown host".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_a_released_one_is_taken() {
        let dir = std::env::temp_dir().join(format!("mergesearch-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = RunLock::acquire(&dir).unwrap();
        assert!(first.stale().is_none());
        // flock locks belong to the open file description: a second open in this process is
        // refused as another process would be.
        let error = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            error.contains(&format!("process {}", std::process::id())),
            "{error}"
        );
        drop(first);
        let again = RunLock::acquire(&dir).unwrap();
        assert!(again.stale().is_none(), "a clean release leaves no holder");
        drop(again);
        // A holder recorded by a process that died without releasing the lock.
        let dead = LockHolder {
            pid: 999_999,
            host: "h".into(),
            command: "mergesearch run".into(),
            since: 0.0,
        };
        std::fs::write(dir.join(LOCK_FILE), serde_json::to_string(&dead).unwrap()).unwrap();
        let taken = RunLock::acquire(&dir).unwrap();
        assert_eq!(taken.stale(), Some(&dead));
        drop(taken);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
