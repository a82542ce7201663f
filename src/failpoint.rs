//! Fault injection for the fault-tolerance tests (`tests/faults.rs`): with
//! `MERGESEARCH_FAILPOINT=SITE:N[,SITE:N...]` in its environment, the process kills itself with
//! `SIGKILL` the `N`-th time it reaches `SITE` (counted from 1), or, at [`TRIAL_PANIC`], panics
//! inside that trial. Without the variable every site is a no-op (one cached lookup).
//!
//! The sites sit where a real crash does the most damage: halfway through a journal line,
//! after a Parquet or JSON file's staging copy is written but before it replaces the old file,
//! halfway through writing a candidate model, and while an external evaluator runs.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable that arms fail points.
pub const ENV: &str = "MERGESEARCH_FAILPOINT";
/// Halfway through appending a trial's line to the journal.
pub const JOURNAL_APPEND: &str = "journal-append";
/// A Parquet table's staging file written, not yet synced and renamed.
pub const PARQUET_WRITE: &str = "parquet-write";
/// A JSON record's (run.json, optimizer.json) staging file written, not yet renamed.
pub const JSON_WRITE: &str = "json-write";
/// A candidate model's first tensor written for an external evaluator.
pub const CANDIDATE_WRITE: &str = "candidate-write";
/// An external evaluator program just started.
pub const EVALUATION: &str = "evaluation";
/// A trial starts: panic inside it (the panic guard's test).
pub const TRIAL_PANIC: &str = "trial-panic";

/// Every site, for checking the variable.
pub const SITES: [&str; 6] = [
    JOURNAL_APPEND,
    PARQUET_WRITE,
    JSON_WRITE,
    CANDIDATE_WRITE,
    EVALUATION,
    TRIAL_PANIC,
];

/// One armed site: which, at which arrival, and how many arrivals so far.
struct Armed {
    site: &'static str,
    at: usize,
    seen: AtomicUsize,
}

fn armed() -> &'static [Armed] {
    static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let Ok(spec) = std::env::var(ENV) else {
            return Vec::new();
        };
        spec.split(',')
            .filter(|s| !s.trim().is_empty())
            .filter_map(|item| {
                let parsed = item.trim().split_once(':').and_then(|(site, at)| {
                    let site = SITES.iter().find(|s| **s == site)?;
                    Some((*site, at.parse::<usize>().ok().filter(|&n| n > 0)?))
                });
                if parsed.is_none() {
                    eprintln!("warning: {ENV}: ignoring {item:?} (expected SITE:N with SITE one of {SITES:?})");
                }
                parsed
            })
            .map(|(site, at)| Armed {
                site,
                at,
                seen: AtomicUsize::new(0),
            })
            .collect()
    })
}

/// Marks one arrival at `site`; the armed arrival kills the process (or panics, at
/// [`TRIAL_PANIC`]).
pub fn hit(site: &'static str) {
    for armed in armed().iter().filter(|a| a.site == site) {
        if armed.seen.fetch_add(1, Ordering::SeqCst) + 1 == armed.at {
            if site == TRIAL_PANIC {
                panic!("injected panic ({ENV}={site}:{})", armed.at);
            }
            kill_self();
        }
    }
}

/// Ends the process as `kill -9` would: no destructor, no flush, no cleanup.
fn kill_self() -> ! {
    #[cfg(unix)]
    // SAFETY: raise(2) with a valid signal number; SIGKILL does not return.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
    std::process::abort()
}
