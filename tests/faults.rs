//! Fault injection: what a run survives, through the binary where a real process matters.
//! `SIGKILL` at seeded random moments (fail points armed with `MERGESEARCH_FAILPOINT`: halfway
//! through a journal line, a Parquet or JSON file staged but not renamed, a candidate half
//! written, an evaluator just started), each resumed to the trials of an uninterrupted run; a
//! second process on the same run directory; a file-size limit; evaluator programs that hang,
//! flood stdout, print invalid UTF-8 or NaN; panics inside trials; too many failures in a row;
//! a second Ctrl-C; and the exit code of each kind of error.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use indicatif::ProgressBar;
use mergesearch::cli::make_optimizer;
use mergesearch::eval::{Cost, Evaluation, Objective, Outcome, Score, Trial};
use mergesearch::eval::{Direction, EvalConfigError, Evaluator, Placement};
use mergesearch::failpoint;
use mergesearch::record::{
    HYPERVOLUME_FILE, LOCK_FILE, RunLock, Status, TRIALS_FILE, TrialRecord, read_journal,
};
use mergesearch::rng::Rng;
use mergesearch::space::Space;
use mergesearch::study::{RunOptions, run_with, scratch_dir};
use rand::Rng as _;

use crate::common::TempDir;
use crate::study::{models, models_of, models_table, write};

/// `mergesearch ARGS` in the repository root, stdout discarded, stderr captured.
pub fn mergesearch(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mergesearch"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// `mergesearch run SPACE --out OUT ARGS` with CMA-ES.
fn run(space: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "run",
        space.to_str().unwrap(),
        "--optimizer",
        "cmaes",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    mergesearch(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Asserts that the command exited with `code` and did not panic; returns its stderr.
pub fn expect_exit(out: &Output, code: i32, what: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    err
}

/// What must agree between two runs' trials, by id.
fn essence(trials: &[TrialRecord]) -> Vec<serde_json::Value> {
    let mut sorted: Vec<&TrialRecord> = trials.iter().collect();
    sorted.sort_by_key(|t| t.id);
    sorted
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "generation": t.generation,
                "point": t.point,
                "status": t.status,
                "scores": t.scores,
                "error": t.error,
            })
        })
        .collect()
}

/// The `id` column of a trial table.
fn parquet_ids(path: &Path) -> Vec<u64> {
    use polars::prelude::*;
    let frame = ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap();
    frame
        .column("id")
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

/// Waits (up to a minute) until `ready` holds, failing if `child` ends first.
fn wait_until(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the run ended ({status}) before {what}: {err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited a minute for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` is running (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// `tmp/space.toml`: one task-arithmetic weight per expert of `models`, scored on `loss` by the
/// command `argv` (a TOML array), with `seed` and the `[budget]` lines `budget`.
fn weights_space(
    tmp: &TempDir,
    models: &(PathBuf, Vec<PathBuf>),
    argv: &str,
    seed: u64,
    budget: &str,
) -> PathBuf {
    let text = format!(
        "seed = {seed}\n{}\n[merge]\nmethod = \"task_arithmetic\"\n[[params]]\nname = \"weight\"\nlow = 0.0\nhigh = 1.0\n[[evaluators]]\nkind = \"command\"\nargv = {argv}\nobjectives = {{ loss = \"minimize\" }}\n[[objectives]]\nname = \"loss\"\n[budget]\n{budget}\n",
        models_table(&models.0, &models.1)
    );
    write(tmp.path(), "space.toml", &text)
}

/// A space over the weights of three small experts, scored by a Python one-liner that checks
/// the candidate was written: batches of 4.
fn merging_space(tmp: &TempDir, trials: usize, workers: usize) -> PathBuf {
    let script = "import json,os,sys; p=json.loads(sys.argv[1]); assert os.path.isfile(os.path.join(sys.argv[2], 'model.safetensors')); print(json.dumps({'scores': {'loss': sum((v - 0.3) ** 2 for v in p.values())}}))";
    weights_space(
        tmp,
        &models(tmp),
        &format!("[\"python3\", \"-c\", \"{script}\", \"{{params_json}}\", \"{{model_dir}}\"]"),
        5,
        &format!("trials = {trials}\nbatch = 4\nworkers = {workers}"),
    )
}

#[test]
fn sigkill_at_twenty_random_moments_then_resume_gives_the_trials_of_an_uninterrupted_run() {
    let tmp = TempDir::new("faults", "kill");
    let space = merging_space(&tmp, 12, 2);
    let reference = tmp.join("reference");
    let out = run(&space, &reference, &[]).output().unwrap();
    expect_exit(&out, 0, "the uninterrupted run");
    let expected = read_journal(&reference).unwrap();
    assert_eq!(expected.len(), 12);
    let history = std::fs::read_to_string(reference.join(HYPERVOLUME_FILE)).unwrap();
    assert_eq!(history.lines().count(), 3, "one line per batch");

    // Each site is reached this many times or more by a run of 12 trials in 3 batches: a
    // trial's journal line, candidate and evaluator 12 times; trials.parquet and front.parquet
    // after each batch and at the end; run.json at the start and when the reference point is
    // fixed, optimizer.json after each batch (the first run.json write is left out: a run
    // killed before it exists is started again, not resumed).
    let sites = [
        (failpoint::EVALUATION, 1, 12),
        (failpoint::JOURNAL_APPEND, 1, 12),
        (failpoint::PARQUET_WRITE, 1, 7),
        (failpoint::CANDIDATE_WRITE, 1, 12),
        (failpoint::JSON_WRITE, 2, 5),
    ];
    let mut rng = Rng::new(2024);
    let mut kept = 0;
    for case in 0..20 {
        let (site, low, high) = sites[case % sites.len()];
        let at = rng.random_range(low..=high);
        let what = format!("case {case}: killed at {site}:{at}");
        let dir = tmp.join(&format!("cut-{case}"));
        let out = run(&space, &dir, &[])
            .env(failpoint::ENV, format!("{site}:{at}"))
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{what}: {}", stderr(&out));
        // The journal reads back after any kill (a line cut in half is dropped).
        let before = read_journal(&dir).unwrap().len();
        kept += before;

        let out = run(&space, &dir, &["--resume"]).output().unwrap();
        let err = expect_exit(&out, 0, &what);
        assert!(
            err.contains("was left locked by process") && err.contains("taking it over"),
            "{what}: the stale lock is taken over: {err}"
        );
        let trials = read_journal(&dir).unwrap();
        assert_eq!(essence(&trials), essence(&expected), "{what}");
        assert_eq!(
            parquet_ids(&dir.join(TRIALS_FILE)),
            (0..12).collect::<Vec<u64>>(),
            "{what}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(HYPERVOLUME_FILE)).unwrap(),
            history,
            "{what}"
        );
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".partial") || n == "scratch")
            .collect();
        assert!(left.is_empty(), "{what}: {left:?} left behind");
        eprintln!("{what}: {before} of 12 trials recorded, resumed to the uninterrupted run's 12");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(
        kept > 0 && kept < 20 * 12,
        "the kills landed both early and late: {kept} trials kept"
    );
}

/// A space of two parameters scored by a Python program that sleeps `seconds` first.
fn slow_space(tmp: &TempDir, seconds: f64, trials: usize) -> PathBuf {
    let text = format!(
        "seed = 3\n[[params]]\nname = \"x\"\nlow = -1.0\nhigh = 1.0\n[[params]]\nname = \"y\"\nlow = -1.0\nhigh = 1.0\n[[evaluators]]\nkind = \"command\"\nargv = [\"python3\", \"-c\", \"import json,sys,time; time.sleep({seconds}); p=json.loads(sys.argv[1]); print(json.dumps({{'scores': {{'loss': p['x']**2 + p['y']**2}}}}))\", \"{{params_json}}\"]\nobjectives = {{ loss = \"minimize\" }}\n[[objectives]]\nname = \"loss\"\n[budget]\ntrials = {trials}\nbatch = 2\n"
    );
    write(tmp.path(), "space.toml", &text)
}

#[test]
fn a_second_process_on_a_run_directory_is_refused_and_the_first_finishes_alone() {
    let tmp = TempDir::new("faults", "concurrent");
    let space = slow_space(&tmp, 0.2, 8);
    let dir = tmp.join("run");
    let mut first = run(&space, &dir, &[]).spawn().unwrap();
    wait_until(&mut first, "the first trial", || {
        read_journal(&dir).map(|t| !t.is_empty()).unwrap_or(false)
    });
    for extra in [&[][..], &["--resume"]] {
        let out = run(&space, &dir, extra).output().unwrap();
        let err = expect_exit(&out, 5, "the second process");
        assert!(
            err.contains("is in use by process") && err.contains(&first.id().to_string()),
            "{err}"
        );
    }
    // A lock held in this process is refused the same way.
    assert!(RunLock::acquire(&dir).is_err());
    let status = first.wait().unwrap();
    assert!(status.success());
    let trials = read_journal(&dir).unwrap();
    let mut ids: Vec<u64> = trials.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..8).collect::<Vec<u64>>(), "every trial once");
    assert_eq!(
        std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap(),
        "",
        "a clean exit releases the lock and clears its holder"
    );
}

/// A base with a 128 KB embedding and three experts: every candidate is larger than 64 KiB.
fn large_models(tmp: &TempDir) -> (PathBuf, Vec<PathBuf>) {
    models_of(
        tmp,
        &mergesearch::fixtures::SyntheticSpec {
            layers: 1,
            hidden: 64,
            intermediate: 64,
            vocab: 512,
            dtype: mergesearch::checkpoint::Dtype::F32,
        },
    )
}

#[test]
fn a_file_size_limit_fails_the_trials_that_write_candidates_and_loses_nothing() {
    let tmp = TempDir::new("faults", "fsize");
    let space = weights_space(
        &tmp,
        &large_models(&tmp),
        "[\"python3\", \"-c\", \"import json,sys; p=json.loads(sys.argv[1]); print(json.dumps({'scores': {'loss': sum(v*v for v in p.values())}}))\", \"{params_json}\", \"{model_dir}\"]",
        1,
        "batch = 4",
    );
    let dir = tmp.join("run");
    expect_exit(
        &run(&space, &dir, &["--budget", "4"]).output().unwrap(),
        0,
        "the first batch",
    );
    let before = read_journal(&dir).unwrap();
    assert_eq!(before.len(), 4);

    const LIMIT: libc::rlim_t = 64 << 10;
    let mut limited = run(
        &space,
        &dir,
        &["--resume", "--budget", "8", "--max-failures", "3"],
    );
    // SAFETY: setrlimit(2) between fork and exec touches no memory of the parent.
    unsafe {
        limited.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = limited.output().unwrap();
    let err = expect_exit(&out, 6, "candidates over the file-size limit");
    assert!(
        err.contains("3 trials in a row failed") && err.contains("File too large"),
        "{err}"
    );
    let after = read_journal(&dir).unwrap();
    assert_eq!(
        essence(&after[..4]),
        essence(&before),
        "the recorded trials are kept"
    );
    assert_eq!(after.len(), 7);
    for t in &after[4..] {
        assert_eq!(t.status, Status::Failed);
        let error = t.error.as_deref().unwrap();
        assert!(
            error.contains("cannot write the candidate") && error.contains("File too large"),
            "{error}"
        );
    }
    assert_eq!(parquet_ids(&dir.join(TRIALS_FILE)), [0, 1, 2, 3]);
    assert!(
        !dir.join("scratch").exists(),
        "no partial candidate is left"
    );

    // Without the limit the run completes; the failed trials stay as they were recorded.
    expect_exit(
        &run(&space, &dir, &["--resume", "--budget", "8"])
            .output()
            .unwrap(),
        0,
        "the resumed run",
    );
    let done = read_journal(&dir).unwrap();
    assert_eq!(done.len(), 8);
    assert_eq!(essence(&done[..7]), essence(&after));
    assert_eq!(done[7].status, Status::Ok);
    assert_eq!(
        parquet_ids(&dir.join(TRIALS_FILE)),
        (0..8).collect::<Vec<_>>()
    );
}

/// What the misbehaving evaluator does for trial ids 0..5 (then again).
const MISBEHAVING: &str = r#"import json, os, subprocess, sys, time
trial, pids = sys.argv[1], sys.argv[2]
case = int(trial) % 5
if case == 1:
    child = subprocess.Popen(['sleep', '600'])
    with open(os.path.join(pids, 'hang-' + trial), 'w') as f:
        f.write('%d %d' % (os.getpid(), child.pid))
    time.sleep(600)
elif case == 2:
    line = 'x' * 9999 + '\n'
    for _ in range(5000):
        sys.stdout.write(line)
elif case == 3:
    sys.stdout.flush()
    sys.stdout.buffer.write(b'\xff\xfe not UTF-8 \xc3\x28\n')
elif case == 4:
    print('{"scores": {"loss": NaN}}')
else:
    print(json.dumps({'scores': {'loss': 1.0}}))
"#;

#[test]
fn evaluators_that_hang_flood_print_garbage_or_nan_fail_their_trials_and_the_run_completes() {
    let tmp = TempDir::new("faults", "evaluators");
    let script = write(tmp.path(), "misbehave.py", MISBEHAVING);
    let pids = tmp.join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let text = format!(
        "seed = 2\n[[params]]\nname = \"x\"\nlow = 0.0\nhigh = 1.0\n[[evaluators]]\nkind = \"command\"\nargv = [\"python3\", {:?}, \"{{trial_id}}\", {:?}]\nobjectives = {{ loss = \"minimize\" }}\ntimeout_s = 2\n[[objectives]]\nname = \"loss\"\n[budget]\ntrials = 10\nbatch = 5\nworkers = 2\n",
        script.display().to_string(),
        pids.display().to_string()
    );
    let space = write(tmp.path(), "space.toml", &text);
    let dir = tmp.join("run");
    let out = mergesearch(&[
        "run",
        space.to_str().unwrap(),
        "--optimizer",
        "random",
        "--out",
        dir.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    expect_exit(&out, 0, "the run");
    let trials = read_journal(&dir).unwrap();
    assert_eq!(trials.len(), 10);
    for t in &trials {
        let error = t.error.clone().unwrap_or_default();
        let expected: &[&str] = match t.id % 5 {
            0 => {
                assert_eq!(t.status, Status::Ok, "trial {}: {error}", t.id);
                continue;
            }
            1 => &["timed out after 2s and was killed"],
            2 => &["printed no JSON object on stdout", "more bytes dropped"],
            3 => &["printed no JSON object on stdout", "\u{fffd}", "not UTF-8"],
            _ => &["objective \"loss\" is not a finite number"],
        };
        assert_eq!(t.status, Status::Failed, "trial {}", t.id);
        for needle in expected {
            assert!(error.contains(needle), "trial {}: {error}", t.id);
        }
        assert!(error.len() < 5000, "trial {}: a bounded reason", t.id);
    }
    // The hanging programs and what they started were killed with their process group.
    for entry in std::fs::read_dir(&pids).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for pid in text.split_whitespace() {
            assert!(!alive(pid.parse().unwrap()), "process {pid} still runs");
        }
    }
}

/// An in-process evaluator that panics on trial 1 and reports NaN on trial 3.
struct Flaky {
    objectives: Vec<Objective>,
}

impl Evaluator<Flex> for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    fn objectives(&self) -> &[Objective] {
        &self.objectives
    }

    fn evaluate(&mut self, trial: &Trial<'_, Flex>) -> Outcome {
        let x = trial.params["x"].as_f64().unwrap();
        let value = match trial.id {
            1 => panic!("out of device memory (simulated)"),
            3 => f64::NAN,
            _ => x * x,
        };
        Ok(Evaluation {
            scores: [(
                "loss".to_string(),
                Score {
                    value,
                    stderr: None,
                },
            )]
            .into(),
            cost: Cost::default(),
        })
    }
}

#[test]
fn a_panic_or_a_nan_in_process_fails_that_trial_and_the_journal_reads_back() {
    let tmp = TempDir::new("faults", "panic");
    let path = slow_space(&tmp, 0.0, 6);
    let space = Space::load(&path, &[], &ProgressBar::hidden()).unwrap();
    let builds = AtomicUsize::new(0);
    let build =
        |_: &Placement, _: &FlexDevice| -> Result<Vec<Box<dyn Evaluator<Flex>>>, EvalConfigError> {
            builds.fetch_add(1, Ordering::SeqCst);
            Ok(vec![Box::new(Flaky {
                objectives: vec![Objective::new("loss", Direction::Minimize)],
            })])
        };
    let options = RunOptions {
        optimizer: "random".into(),
        out: tmp.join("run"),
        resume: false,
        workers: Some(1),
        gpus: None,
        scratch: None,
        worker_command: None,
    };
    let summary = run_with::<Flex>(
        &space,
        &options,
        || make_optimizer("random", &space),
        &build,
        None,
        &Default::default(),
        &ProgressBar::hidden(),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(summary.trials.len(), 6, "the run went on");
    assert_eq!(
        builds.load(Ordering::SeqCst),
        2,
        "rebuilt once after the panic"
    );
    let failed: Vec<(u64, String)> = summary
        .trials
        .iter()
        .filter(|t| t.status == Status::Failed)
        .map(|t| (t.id, t.error.clone().unwrap()))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed[0].0 == 1
            && failed[0]
                .1
                .contains("panicked: out of device memory (simulated)"),
        "{failed:?}"
    );
    assert!(
        failed[1].0 == 3 && failed[1].1.contains("non-finite score: \"loss\" is NaN"),
        "{failed:?}"
    );
    assert_eq!(read_journal(&tmp.join("run")).unwrap(), summary.trials);
}

#[test]
fn a_panic_inside_a_trial_of_the_binary_fails_that_trial_only() {
    let tmp = TempDir::new("faults", "panic-binary");
    let space = slow_space(&tmp, 0.0, 6);
    let dir = tmp.join("run");
    let out = run(&space, &dir, &[])
        .env(failpoint::ENV, format!("{}:3", failpoint::TRIAL_PANIC))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let trials = read_journal(&dir).unwrap();
    assert_eq!(trials.len(), 6);
    let failed: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| t.status == Status::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, 2, "the third trial");
    let error = failed[0].error.as_deref().unwrap();
    assert!(
        error.contains("panicked: injected panic") && error.contains("rebuilt"),
        "{error}"
    );
}

#[test]
fn failures_in_a_row_stop_the_run_with_the_last_errors_and_it_resumes_once_fixed() {
    let tmp = TempDir::new("faults", "streak");
    let broken = tmp.join("broken");
    std::fs::write(&broken, "").unwrap();
    let text = format!(
        "seed = 8\n[[params]]\nname = \"x\"\nlow = 0.0\nhigh = 1.0\n[[evaluators]]\nkind = \"command\"\nargv = [\"python3\", \"-c\", \"import json,os,sys; p=json.loads(sys.argv[1]); sys.exit('the environment is broken') if os.path.exists(sys.argv[2]) else print(json.dumps({{'scores': {{'loss': p['x']}}}}))\", \"{{params_json}}\", {:?}]\nobjectives = {{ loss = \"minimize\" }}\n[[objectives]]\nname = \"loss\"\n[budget]\ntrials = 8\nbatch = 4\n",
        broken.display().to_string()
    );
    let space = write(tmp.path(), "space.toml", &text);
    let dir = tmp.join("run");
    let out = run(&space, &dir, &["--max-failures", "3"])
        .output()
        .unwrap();
    let err = expect_exit(&out, 6, "three failures in a row");
    assert!(
        err.contains("3 trials in a row failed")
            && err.contains("trial 2: ")
            && err.contains("the environment is broken")
            && err.contains("continue with --resume"),
        "{err}"
    );
    assert_eq!(
        read_journal(&dir).unwrap().len(),
        3,
        "no fourth trial started"
    );
    std::fs::remove_file(&broken).unwrap();
    expect_exit(
        &run(&space, &dir, &["--resume"]).output().unwrap(),
        0,
        "resumed once fixed",
    );
    let trials = read_journal(&dir).unwrap();
    assert_eq!(trials.len(), 8);
    let failed: Vec<u64> = trials
        .iter()
        .filter(|t| t.status == Status::Failed)
        .map(|t| t.id)
        .collect();
    assert_eq!(failed, [0, 1, 2]);
}

#[test]
fn a_second_ctrl_c_kills_the_evaluators_removes_scratch_and_exits_130() {
    let tmp = TempDir::new("faults", "ctrl-c");
    let script = write(tmp.path(), "misbehave.py", MISBEHAVING);
    let pids = tmp.join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    // Trial 1 hangs (`{trial_id}` is 1 for the second trial: the first is trial 0, quick).
    let argv = format!(
        "[\"python3\", {:?}, \"{{trial_id}}\", {:?}, \"{{model_dir}}\"]",
        script.display().to_string(),
        pids.display().to_string()
    );
    let space = weights_space(&tmp, &models(&tmp), &argv, 2, "trials = 4\nbatch = 4");
    let dir = tmp.join("run");
    let mut child = run(&space, &dir, &[]).spawn().unwrap();
    let hang = pids.join("hang-1");
    wait_until(&mut child, "the hanging evaluator", || {
        std::fs::read_to_string(&hang).is_ok_and(|t| t.split_whitespace().count() == 2)
    });
    // Where the run hands candidates over by default (shared memory, or the run directory).
    let scratch = scratch_dir(&dir, None, 0, 1);
    assert!(
        std::fs::read_dir(&scratch).unwrap().count() > 0,
        "trial 1's candidate is in the scratch folder"
    );
    let pid = child.id() as libc::pid_t;
    let interrupt = || {
        // SAFETY: kill(2) with a pid this test spawned.
        unsafe { libc::kill(pid, libc::SIGINT) };
    };
    interrupt();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first Ctrl-C waits for the trial in flight"
    );
    interrupt();
    let out = child.wait_with_output().unwrap();
    let err = expect_exit(&out, 130, "the second Ctrl-C");
    assert!(err.contains("killing the evaluators"), "{err}");
    let text = std::fs::read_to_string(&hang).unwrap();
    let started = Instant::now();
    for pid in text.split_whitespace() {
        let pid: u32 = pid.parse().unwrap();
        while alive(pid) && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(pid), "process {pid} still runs");
    }
    assert!(!scratch.exists(), "the scratch folder is removed");
    let trials = read_journal(&dir).unwrap();
    assert_eq!(trials.len(), 1, "trial 0 finished before the stop");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn run_eval_and_export_errors_exit_with_the_readme_codes() {
    let tmp = TempDir::new("faults", "exit-codes");
    let space = merging_space(&tmp, 4, 1);
    let s = space.to_str().unwrap();
    let dir = tmp.join("run");
    let d = dir.to_str().unwrap();
    let exported = tmp.join("exported");
    let e = exported.to_str().unwrap();
    expect_exit(&run(&space, &dir, &[]).output().unwrap(), 0, "the run");

    // A device this build cannot use: 4.
    for args in [
        &[
            "run",
            s,
            "--out",
            tmp.join("other").to_str().unwrap(),
            "--device",
            "cuda:0",
        ][..],
        &[
            "eval",
            s,
            "--point",
            "[0.5, 0.5, 0.5]",
            "--device",
            "cuda:0",
        ],
        &[
            "export", d, "--trial", "0", "--out", e, "--device", "cuda:0",
        ],
    ] {
        let err = expect_exit(&mergesearch(args).output().unwrap(), 4, args[0]);
        assert!(err.contains("--features cuda"), "{err}");
    }
    // Command-line values that cannot be used: 2.
    let err = expect_exit(
        &mergesearch(&["eval", s, "--point", "[0.5, oops]"])
            .output()
            .unwrap(),
        2,
        "eval --point",
    );
    assert!(err.contains("--point must be a JSON list"), "{err}");
    std::fs::create_dir_all(&exported).unwrap();
    let err = expect_exit(
        &mergesearch(&["export", d, "--trial", "0", "--out", e])
            .output()
            .unwrap(),
        2,
        "export over an existing folder",
    );
    assert!(err.contains("--overwrite"), "{err}");
    std::fs::remove_dir_all(&exported).unwrap();

    // An edited journal: an error naming the trial, not a panic.
    let journal = dir.join(mergesearch::record::JOURNAL_FILE);
    let original = std::fs::read_to_string(&journal).unwrap();
    let first: serde_json::Value = serde_json::from_str(original.lines().next().unwrap()).unwrap();
    let edited = original.replacen(&serde_json::to_string(&first["point"]).unwrap(), "[0.5]", 1);
    assert_ne!(edited, original);
    std::fs::write(&journal, &edited).unwrap();
    let err = expect_exit(
        &mergesearch(&["export", d, "--trial", &first["id"].to_string(), "--out", e])
            .output()
            .unwrap(),
        1,
        "export of an edited trial",
    );
    assert!(
        err.contains("trial") && err.contains("the point has 1 coordinates"),
        "{err}"
    );
    std::fs::write(&journal, &original).unwrap();

    // An edited optimizer state: an error naming the file (its panic caught), not a crash.
    let snapshot = dir.join("optimizer.json");
    let saved = std::fs::read_to_string(&snapshot).unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&saved).unwrap();
    state["optimizer"]["cov"]["Full"]["b"] = serde_json::json!(["1.0"]);
    std::fs::write(&snapshot, state.to_string()).unwrap();
    let out = run(&space, &dir, &["--resume", "--budget", "8"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("optimizer.json: damaged: its optimizer panicked")
            && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert_eq!(
        read_journal(&dir).unwrap().len(),
        4,
        "nothing recorded is lost"
    );
    std::fs::write(&snapshot, saved).unwrap();

    // A corrupt model: 3, from every command that reads it.
    let weights = tmp.join("math").join("model.safetensors");
    std::fs::write(&weights, b"not a safetensors file").unwrap();
    for args in [
        &["run", s, "--out", tmp.join("other").to_str().unwrap()][..],
        &["eval", s, "--point", "[0.5, 0.5, 0.5]"],
        &["export", d, "--trial", "0", "--out", e],
    ] {
        let err = expect_exit(&mergesearch(args).output().unwrap(), 3, args[0]);
        assert!(err.contains("model.safetensors"), "{err}");
    }
    assert!(
        !tmp.join("other").exists(),
        "a refused run leaves no folder"
    );
}
