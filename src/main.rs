//! The `mergesearch` binary: parse the command line, run it, map errors to exit codes.

use clap::Parser;
use mergesearch::checkpoint::{CheckpointError, GroupError};
use mergesearch::cli::{Cli, ConfigError, run};
use mergesearch::device::DeviceError;
use mergesearch::eval::EvalConfigError;
use mergesearch::merge::{MergeError, PlanError};
use mergesearch::space::SpaceError;

/// Exit code for a config, plan, search space or evaluator table that cannot be used.
const EXIT_CONFIG: i32 = 2;
/// Exit code for unreadable, corrupt or mismatched models.
const EXIT_INPUT: i32 = 3;
/// Exit code for a device that cannot be used.
const EXIT_DEVICE: i32 = 4;

fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<ConfigError>()
            || cause.is::<PlanError>()
            || cause.is::<SpaceError>()
            || cause.is::<EvalConfigError>()
        {
            return EXIT_CONFIG;
        }
        if cause.is::<CheckpointError>() || cause.is::<GroupError>() {
            return EXIT_INPUT;
        }
        if cause.is::<DeviceError>() {
            return EXIT_DEVICE;
        }
        if let Some(merge) = cause.downcast_ref::<MergeError>() {
            return match merge {
                MergeError::Plan(_) => EXIT_CONFIG,
                MergeError::Checkpoint(_) | MergeError::Groups(_) => EXIT_INPUT,
            };
        }
    }
    1
}

#[global_allocator]
static GLOBAL: mergesearch::alloc::MiMalloc = mergesearch::alloc::MiMalloc;

fn main() {
    mergesearch::alloc::keep_freed_memory();
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(exit_code(&err));
    }
}
