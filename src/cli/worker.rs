//! `mergesearch worker SPACE`: one trial worker as a process of its own. It holds the space's
//! merger (on its device) and evaluators, reads trials from stdin, one JSON line each —
//! `{"id": 3, "generation": 0, "point": [0.1, ...], "items": null}` — and answers each with
//! the trial's record on one line of stdout, as the run's journal holds it. Coefficient vectors
//! travel, weights do not, so a worker can run wherever a command can be started. A request
//! that cannot be read is answered `{"error": "..."}`; the worker exits at end of input.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::prelude::Backend;
use serde::Deserialize;

use super::progress_bar;
use super::study::load_space;
use crate::device::DeviceSpec;
use crate::eval::{CandidateWriter, EvalContext, Placement, build_all};
use crate::interrupt;
use crate::space::Space;
use crate::study::{Scalarizer, Scratch, StudyError, TrialAt, TrialRunner, WorkerSetup};

/// One trial to run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    id: u64,
    #[serde(default)]
    generation: u64,
    point: Vec<f64>,
    #[serde(default)]
    items: Option<usize>,
}

/// Builds the merger, candidate writer and evaluators of `space` for the worker at `placement`
/// on `device` (candidates for external programs go under `scratch`), and calls `f` with a
/// runner of its trials.
pub fn with_trial_runner<B: Backend, R>(
    space: &Space,
    device: &B::Device,
    placement: Placement,
    scratch: &Path,
    f: impl FnOnce(&mut TrialRunner<'_, B>) -> R,
) -> anyhow::Result<R> {
    let merger = match &space.models {
        None => None,
        Some(models) => Some(models.merger::<B>(device)?),
    };
    let context = EvalContext {
        base: space.models.as_ref().map(|m| m.base.clone()),
        placement,
        seed: space.seed,
        progress: progress_bar("zoo", "steps"),
    };
    let writer = match &space.models {
        Some(models) => Some(
            CandidateWriter::new(&models.base, scratch)
                .map_err(|e| anyhow::anyhow!("cannot hand candidates over: {e}"))?,
        ),
        None => None,
    };
    let build = |placement: &Placement, device: &B::Device| {
        build_all::<B>(&space.evaluators, &context.placed(*placement), device)
    };
    let evaluators = build(&placement, device)?;
    let scalarizer = Scalarizer::new(&space.objectives, &evaluators).map_err(|problem| {
        StudyError::Objectives {
            space: space.file.clone(),
            problem,
        }
    })?;
    let setup = WorkerSetup {
        placement,
        device: device.clone(),
        merger: merger.as_ref(),
        writer: writer.as_ref(),
    };
    let mut runner = TrialRunner::new(space, setup, &scalarizer, &build, evaluators);
    Ok(f(&mut runner))
}

/// `mergesearch worker`: serves the trials of the space at `space_path` from stdin to stdout.
pub fn serve_stdio(
    space_path: &Path,
    set: &[String],
    device: DeviceSpec,
    placement: Placement,
    scratch: Option<PathBuf>,
) -> anyhow::Result<()> {
    let space = load_space(space_path, set, None, None)?;
    let scratch = scratch.unwrap_or_else(|| {
        let shared = PathBuf::from("/dev/shm");
        if shared.is_dir() {
            shared
        } else {
            std::env::temp_dir()
        }
    });
    // A worker placed on a GPU merges there.
    let device = match (device, placement.gpu) {
        (DeviceSpec::Cuda(_), Some(gpu)) => DeviceSpec::Cuda(gpu),
        (device, _) => device,
    };
    let device = device.open()?;
    interrupt::abort_on_ctrl_c();
    let (input, output) = (std::io::stdin().lock(), std::io::stdout().lock());
    crate::with_backend!(device, |B, device| serve::<B>(
        &space, &device, placement, &scratch, input, output
    ))
}

/// Serves trials of `space` from `input` to `output` until end of input; candidates go into a
/// folder of this process's own inside `scratch`, removed at the end.
pub fn serve<B: Backend>(
    space: &Space,
    device: &B::Device,
    placement: Placement,
    scratch: &Path,
    input: impl BufRead,
    mut output: impl Write,
) -> anyhow::Result<()> {
    let folder =
        Scratch::fresh(&scratch.join(format!("mergesearch-worker-{}", std::process::id())))?;
    with_trial_runner::<B, _>(space, device, placement, folder.path(), |runner| {
        for line in input.lines() {
            let line = line.context("reading a request from stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let reply = match serde_json::from_str::<Request>(&line) {
                Err(e) => {
                    serde_json::json!({ "error": format!("not a trial request ({e}): {line}") })
                }
                Ok(r) if r.point.len() != space.dim() => serde_json::json!({
                    "error": format!("trial {}: the point has {} coordinates, the space {}", r.id, r.point.len(), space.dim())
                }),
                Ok(r) => serde_json::to_value(runner.run(TrialAt {
                    id: r.id,
                    generation: r.generation,
                    point: &r.point,
                    items: r.items,
                }))?,
            };
            writeln!(output, "{reply}")?;
            output.flush()?;
        }
        Ok(())
    })?
}
