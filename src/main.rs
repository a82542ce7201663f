//! The `mergesearch` binary: parse the command line, run it, map errors to exit codes.

use clap::Parser;
use mergesearch::cli::{Cli, exit_code, prepare_process, run};

#[global_allocator]
static GLOBAL: mergesearch::alloc::MiMalloc = mergesearch::alloc::MiMalloc;

fn main() {
    mergesearch::alloc::keep_freed_memory();
    prepare_process();
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(exit_code(&err));
    }
}
