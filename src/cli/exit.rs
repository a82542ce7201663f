//! Exit codes: what kind of problem ended the process, read from the typed errors that the
//! library carries up to the command line (README, "Exit codes").

use std::error::Error;

use crate::adamerge::AdaMergeError;
use crate::checkpoint::{CheckpointError, GroupError};
use crate::device::DeviceError;
use crate::eval::EvalConfigError;
use crate::interrupt::EXIT_INTERRUPTED;
use crate::merge::{MergeError, PlanError};
use crate::record::RecordError;
use crate::space::{SpaceError, SpaceErrorKind};
use crate::study::StudyError;
use crate::zoo::baselines::BaselineError;
use crate::zoo::build::ZooError;

use super::ConfigError;

/// Anything not classified below.
pub const EXIT_OTHER: i32 = 1;
/// A config, plan, search space, evaluator table or command-line value that cannot be used.
pub const EXIT_CONFIG: i32 = 2;
/// Missing, unreadable, corrupt or mismatched models.
pub const EXIT_INPUT: i32 = 3;
/// A device that cannot be used.
pub const EXIT_DEVICE: i32 = 4;
/// The run directory is in use by another live process.
pub const EXIT_LOCKED: i32 = 5;
/// The run stopped after too many failed trials in a row (it can be resumed).
pub const EXIT_FAILURES: i32 = 6;

/// A command-line value that cannot be used (a malformed `--point`, conflicting flags).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The run was stopped by Ctrl-C before it finished; what it recorded is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stopped by Ctrl-C; continue with --resume")]
pub struct Interrupted;

/// The exit code for `err`: the first cause in its chain that has a class.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    err.chain().find_map(classify).unwrap_or(EXIT_OTHER)
}

/// The class of one error, looking through the library's wrapper enums.
fn classify(cause: &(dyn Error + 'static)) -> Option<i32> {
    if cause.is::<ConfigError>()
        || cause.is::<PlanError>()
        || cause.is::<EvalConfigError>()
        || cause.is::<UsageError>()
    {
        return Some(EXIT_CONFIG);
    }
    if let Some(e) = cause.downcast_ref::<CheckpointError>() {
        return Some(checkpoint_code(e));
    }
    if cause.is::<GroupError>() {
        return Some(EXIT_INPUT);
    }
    if cause.is::<DeviceError>() {
        return Some(EXIT_DEVICE);
    }
    if cause.is::<Interrupted>() {
        return Some(EXIT_INTERRUPTED);
    }
    if let Some(e) = cause.downcast_ref::<SpaceError>() {
        return Some(match e.kind {
            SpaceErrorKind::Invalid => EXIT_CONFIG,
            SpaceErrorKind::UnreadableModels => EXIT_INPUT,
        });
    }
    if let Some(e) = cause.downcast_ref::<MergeError>() {
        return Some(merge_code(e));
    }
    if let Some(e) = cause.downcast_ref::<RecordError>() {
        return record_code(e);
    }
    if let Some(e) = cause.downcast_ref::<StudyError>() {
        return study_code(e);
    }
    if let Some(e) = cause.downcast_ref::<ZooError>() {
        return zoo_code(e);
    }
    if let Some(e) = cause.downcast_ref::<BaselineError>() {
        return match e {
            BaselineError::Zoo(z) => zoo_code(z),
            BaselineError::Merge(m) => Some(merge_code(m)),
        };
    }
    if let Some(e) = cause.downcast_ref::<AdaMergeError>() {
        return match e {
            AdaMergeError::Option(_) => Some(EXIT_CONFIG),
            AdaMergeError::Space(s) => classify(s),
            AdaMergeError::Zoo(z) => zoo_code(z),
            AdaMergeError::Benchmark(_) => Some(EXIT_INPUT),
            AdaMergeError::Study(s) => study_code(s),
            AdaMergeError::Models(m) => Some(merge_code(m)),
        };
    }
    None
}

/// A bad request to the writer (an output that exists, a zero shard size) is the caller's
/// config; anything else is about the models.
fn checkpoint_code(e: &CheckpointError) -> i32 {
    match e {
        CheckpointError::Write { .. } => EXIT_CONFIG,
        _ => EXIT_INPUT,
    }
}

fn merge_code(e: &MergeError) -> i32 {
    match e {
        MergeError::Plan(_) => EXIT_CONFIG,
        MergeError::Checkpoint(c) => checkpoint_code(c),
        MergeError::Groups(_) => EXIT_INPUT,
    }
}

fn record_code(e: &RecordError) -> Option<i32> {
    matches!(e, RecordError::Locked { .. }).then_some(EXIT_LOCKED)
}

fn study_code(e: &StudyError) -> Option<i32> {
    match e {
        StudyError::Record(r) => record_code(r),
        StudyError::Models(m) => Some(merge_code(m)),
        StudyError::Evaluators { .. }
        | StudyError::Objectives { .. }
        | StudyError::Optimizer(_)
        | StudyError::Workers(_)
        | StudyError::RunDir(_) => Some(EXIT_CONFIG),
        StudyError::TooManyFailures { .. } => Some(EXIT_FAILURES),
    }
}

fn zoo_code(e: &ZooError) -> Option<i32> {
    match e {
        ZooError::Checkpoint(c) => Some(checkpoint_code(c)),
        ZooError::BadManifest { .. } | ZooError::NotAnEncoder(_) => Some(EXIT_INPUT),
        ZooError::NotAZoo(_) => Some(EXIT_CONFIG),
        ZooError::Io { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_keep_their_class() {
        let locked = RecordError::Locked {
            dir: "r".into(),
            holder: "process 1".into(),
        };
        let err = anyhow::Error::from(StudyError::from(locked)).context("run r");
        assert_eq!(exit_code(&err), EXIT_LOCKED);
        let failures = StudyError::TooManyFailures {
            count: 3,
            recent: vec![(4, "disk full".into())],
        };
        assert!(failures.to_string().contains("trial 4: disk full"));
        assert_eq!(exit_code(&failures.into()), EXIT_FAILURES);
        let models = SpaceError::unreadable_models("s.toml".as_ref(), "models", "gone".into());
        assert_eq!(exit_code(&AdaMergeError::Space(models).into()), EXIT_INPUT);
        assert_eq!(exit_code(&Interrupted.into()), EXIT_INTERRUPTED);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), EXIT_OTHER);
    }
}
