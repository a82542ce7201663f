//! Ctrl-C. The first press asks the run to stop after the trials in flight (everything finished
//! is recorded, `--resume` continues). The second ends the process at once, but not dirty:
//! every evaluator process group still running is killed (a terminal's Ctrl-C does not reach
//! them: each runs in a process group of its own) and every scratch directory is removed, then
//! the process exits with [`EXIT_INTERRUPTED`].
//!
//! For that, external programs register their process groups here while they run, and writers
//! of scratch directories register those directories while they exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The exit code of a process stopped by Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

static STOP: AtomicBool = AtomicBool::new(false);
/// Whether a first Ctrl-C only asks to stop (a run) or already aborts (a single evaluation).
static GRACEFUL: AtomicBool = AtomicBool::new(false);
static GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
static SCRATCH: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// A registry that a panicking holder cannot make unusable.
fn lock<T>(registry: &Mutex<T>) -> MutexGuard<'_, T> {
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The process-wide stop flag, set by the first Ctrl-C (the second aborts, see the module
/// docs).
pub fn stop_flag() -> &'static AtomicBool {
    GRACEFUL.store(true, Ordering::SeqCst);
    install();
    &STOP
}

/// Makes the first Ctrl-C abort at once (kill the evaluators, remove scratch, exit 130), for
/// commands with nothing to finish gracefully.
pub fn abort_on_ctrl_c() {
    install();
}

/// Installs the handler once; where another handler was installed first, Ctrl-C keeps that
/// one's meaning.
fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = ctrlc::set_handler(|| {
            if !GRACEFUL.load(Ordering::SeqCst) || STOP.swap(true, Ordering::SeqCst) {
                eprintln!("\nkilling the evaluators and removing scratch files");
                abort(EXIT_INTERRUPTED);
            }
            eprintln!("\nstopping after the trials in flight (Ctrl-C again to quit at once)");
        });
    });
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Records a running program's process group (its leader's pid).
pub fn register_group(group: u32) {
    lock(&GROUPS).insert(group);
}

/// Forgets a process group whose leader has been reaped.
pub fn unregister_group(group: u32) {
    lock(&GROUPS).remove(&group);
}

/// Records a scratch directory to remove on a hard stop.
pub fn register_scratch(dir: &Path) {
    lock(&SCRATCH).insert(dir.to_path_buf());
}

/// Forgets a scratch directory (removed by its owner).
pub fn unregister_scratch(dir: &Path) {
    lock(&SCRATCH).remove(dir);
}

/// Kills every registered process group, removes every registered scratch directory, and exits
/// with `code`.
pub fn abort(code: i32) -> ! {
    let groups: Vec<u32> = lock(&GROUPS).iter().copied().collect();
    for group in groups {
        kill_group(group);
    }
    let dirs: Vec<PathBuf> = lock(&SCRATCH).iter().cloned().collect();
    for dir in dirs {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::process::exit(code)
}

/// Sends SIGKILL to the process group led by `group`.
pub fn kill_group(group: u32) {
    #[cfg(unix)]
    if let Ok(pgid) = libc::pid_t::try_from(group) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    #[cfg(not(unix))]
    let _ = group;
}
