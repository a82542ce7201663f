//! Running a search on several workers: workers give the trials of one, each worker's place
//! (`--gpus`, `{gpu}`, `{worker}`) reaches its evaluators, and a candidate is handed to external
//! evaluators once per trial, in the scratch place chosen, with a clear failure when it has no
//! room.

use std::path::{Path, PathBuf};
use std::process::Command;

use mergesearch::checkpoint::Dtype;
use mergesearch::fixtures::SyntheticSpec;
use mergesearch::record::{Status, TrialRecord, read_journal};

use crate::common::{TempDir, transformers_missing};
use crate::faults::{expect_exit, mergesearch};
use crate::study::{models, models_of, models_table, write};

/// `mergesearch run SPACE --optimizer cmaes --out OUT ARGS`.
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

/// A space over three experts' weights with `evaluators` (TOML tables) and `budget`.
fn space(tmp: &TempDir, evaluators: &str, budget: &str) -> PathBuf {
    let models = models(tmp);
    let text = format!(
        "seed = 4\n{}\n[merge]\nmethod = \"task_arithmetic\"\n[[params]]\nname = \"weight\"\nscope = \"expert\"\nlow = 0.0\nhigh = 1.0\n{evaluators}\n[[objectives]]\nname = \"loss\"\n[budget]\n{budget}\n",
        models_table(&models.0, &models.1)
    );
    write(tmp.path(), "space.toml", &text)
}

/// A Python program, written to `dir/name`, as the start of an argv.
fn program(dir: &TempDir, name: &str, text: &str) -> String {
    let path = write(dir.path(), name, text);
    format!("\"python3\", {:?}", path.display().to_string())
}

/// Reports its argv's worker and gpu, the GPUs it may see and what a launcher set in LAUNCHED,
/// with a loss from the params.
const PLACED: &str = "import json, os, sys\n\
p = json.loads(sys.argv[1])\n\
seen = os.environ.get('CUDA_VISIBLE_DEVICES', '-1')\n\
print(json.dumps({'scores': {'loss': sum((v - 0.3) ** 2 for v in p.values()), 'worker': int(sys.argv[2]), 'gpu': int(sys.argv[3]), 'visible': int(seen), 'tag': int(os.environ['TAG']), 'launched': int(os.environ.get('LAUNCHED', '-1'))}}))\n";

#[test]
fn each_worker_gets_its_gpu_and_two_workers_give_the_trials_of_one() {
    let tmp = TempDir::new("scaling", "placement");
    let evaluator = format!(
        "[[evaluators]]\nkind = \"command\"\nargv = [{}, \"{{params_json}}\", \"{{worker}}\", \"{{gpu}}\"]\nenv = {{ TAG = \"7{{gpu}}\" }}\nobjectives = {{ loss = \"minimize\" }}\n",
        program(&tmp, "placed.py", PLACED)
    );
    let space = space(&tmp, &evaluator, "trials = 12\nbatch = 4");
    let placed = tmp.join("placed");
    let out = run(&space, &placed, &["--gpus", "3,5"]).output().unwrap();
    expect_exit(&out, 0, "a run on two GPUs");
    let trials = read_journal(&placed).unwrap();
    assert_eq!(trials.len(), 12);
    let mut workers = std::collections::BTreeSet::new();
    for t in &trials {
        assert_eq!(t.status, Status::Ok, "{:?}", t.error);
        let (worker, gpu) = (t.scores["worker"].value, t.scores["gpu"].value);
        assert_eq!(
            gpu,
            [3.0, 5.0][worker as usize],
            "worker {worker} owns its GPU"
        );
        assert_eq!(
            t.scores["visible"].value, gpu,
            "CUDA_VISIBLE_DEVICES is the GPU"
        );
        assert_eq!(t.scores["tag"].value, 70.0 + gpu, "{{gpu}} in env");
        workers.insert(worker as usize);
    }
    assert_eq!(workers.len(), 2, "both workers ran trials");

    // Batch optimizers: the same trials on one GPU (one worker) as on two.
    let single = tmp.join("single");
    let out = run(&space, &single, &["--gpus", "3"]).output().unwrap();
    expect_exit(&out, 0, "a run on one GPU");
    let same = |trials: &[TrialRecord]| -> Vec<(Vec<f64>, f64)> {
        let mut by_id: Vec<&TrialRecord> = trials.iter().collect();
        by_id.sort_by_key(|t| t.id);
        by_id
            .iter()
            .map(|t| (t.point.clone(), t.scores["loss"].value))
            .collect()
    };
    assert_eq!(same(&read_journal(&single).unwrap()), same(&trials));
    // Workers in processes of their own (`mergesearch worker`), started through a launcher,
    // give the same trials, placed the same way.
    let processes = tmp.join("processes");
    let launcher = ["--gpus", "3,5", "--launcher", "env LAUNCHED=9{gpu}"];
    let out = run(&space, &processes, &launcher).output().unwrap();
    expect_exit(&out, 0, "a run on two worker processes");
    let served = read_journal(&processes).unwrap();
    assert_eq!(same(&served), same(&trials));
    for t in &served {
        let (worker, gpu) = (t.scores["worker"].value, t.scores["gpu"].value);
        assert_eq!(
            gpu,
            [3.0, 5.0][worker as usize],
            "worker {worker} owns its GPU"
        );
        assert_eq!(t.scores["visible"].value, gpu);
        assert_eq!(
            t.scores["launched"].value,
            90.0 + gpu,
            "through the launcher"
        );
    }

    // {gpu} in a run without GPUs is refused before anything runs, naming the fix.
    let out = run(&space, &tmp.join("no-gpus"), &["--workers", "2"])
        .output()
        .unwrap();
    let err = expect_exit(&out, 2, "{gpu} without --gpus");
    assert!(err.contains("--gpus"), "{err}");
    // --workers that disagrees with --gpus is refused.
    let out = run(
        &space,
        &tmp.join("both"),
        &["--gpus", "0", "--workers", "2"],
    )
    .output()
    .unwrap();
    let err = expect_exit(&out, 2, "--workers against --gpus");
    assert!(err.contains("one worker runs per GPU"), "{err}");
}

/// Marks the candidate's folder on its first look (`first`), or checks the mark (`later`);
/// fails the first attempt of each trial when asked (`flaky`), to be retried.
const HANDOFF: &str = r#"import json, os, sys
role, d, trial, log = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
assert os.path.isfile(os.path.join(d, 'model.safetensors'))
mark = os.path.join(d, 'looked-at')
with open(log, 'a') as f:
    f.write(json.dumps({'role': role, 'trial': int(trial), 'dir': d, 'marked': os.path.exists(mark)}) + '\n')
if role == 'first':
    open(mark, 'w').close()
if role == 'flaky':
    tries = os.path.join(os.path.dirname(log), f'tries-{trial}')
    if not os.path.exists(tries):
        open(tries, 'w').close()
        sys.exit('first attempt fails')
print(json.dumps({'scores': {'loss' if role == 'first' else 'other': 1.0}}))
"#;

#[test]
fn a_candidate_is_written_once_per_trial_for_two_evaluators_and_a_retry() {
    let tmp = TempDir::new("scaling", "handoff");
    let program = program(&tmp, "handoff.py", HANDOFF);
    let log = tmp.join("looks.jsonl");
    let table = |role: &str, objective: &str, extra: &str| {
        format!(
            "[[evaluators]]\nkind = \"command\"\nname = \"{role}\"\nargv = [{program}, \"{role}\", \"{{model_dir}}\", \"{{trial_id}}\", {:?}]\nobjectives = {{ {objective} = \"minimize\" }}\n{extra}",
            log.display().to_string()
        )
    };
    let evaluators = format!(
        "{}{}",
        table("first", "loss", ""),
        table("flaky", "other", "retries = 1\n")
    );
    let space = space(&tmp, &evaluators, "trials = 3\nbatch = 3");
    let fast = tmp.join("fast");
    std::fs::create_dir_all(&fast).unwrap();
    let out = run(
        &space,
        &tmp.join("run"),
        &["--scratch", fast.to_str().unwrap()],
    )
    .output()
    .unwrap();
    expect_exit(&out, 0, "a run with two evaluators of the candidate");
    for t in read_journal(&tmp.join("run")).unwrap() {
        assert_eq!(t.status, Status::Ok, "{:?}", t.error);
    }
    let looks: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        looks.len(),
        9,
        "each trial: one look, then two attempts of the flaky one"
    );
    for trial in 0..3 {
        let of: Vec<&serde_json::Value> = looks.iter().filter(|l| l["trial"] == trial).collect();
        assert_eq!(of.len(), 3);
        let dir = of[0]["dir"].as_str().unwrap();
        assert!(
            Path::new(dir).starts_with(&fast),
            "written in the chosen place: {dir}"
        );
        for later in &of[1..] {
            assert_eq!(later["dir"], dir, "one folder per trial");
            assert_eq!(later["marked"], true, "not written again: {later}");
        }
    }
    let left: Vec<_> = walk(&fast);
    assert!(left.is_empty(), "the scratch place is emptied: {left:?}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A small file system mounted at `dir` for as long as this lives.
struct Mounted(PathBuf);

impl Mounted {
    /// A 1 MiB tmpfs at `dir`, or why it cannot be mounted here.
    fn tmpfs(dir: &Path) -> Result<Mounted, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Mounted(dir.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_scratch_place_without_room_fails_the_trials_not_the_run() {
    let tmp = TempDir::new("scaling", "full");
    let small = tmp.join("small");
    let _mounted = match Mounted::tmpfs(&small) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: cannot mount a small tmpfs here ({why})");
            return;
        }
    };
    let evaluators = format!(
        "[[evaluators]]\nkind = \"command\"\nargv = [{}, \"first\", \"{{model_dir}}\", \"{{trial_id}}\", \"/dev/null\"]\nobjectives = {{ loss = \"minimize\" }}\n",
        program(&tmp, "handoff.py", HANDOFF)
    );
    let space = space(&tmp, &evaluators, "trials = 3\nbatch = 3");
    let dir = tmp.join("run");
    let out = run(&space, &dir, &["--scratch", small.to_str().unwrap()])
        .output()
        .unwrap();
    expect_exit(&out, 0, "a run whose scratch place is full");
    let trials = read_journal(&dir).unwrap();
    assert_eq!(trials.len(), 3, "every trial is recorded");
    for t in &trials {
        assert_eq!(t.status, Status::Failed);
        let why = t.error.as_deref().unwrap();
        assert!(why.contains("no room for the candidate"), "{why}");
        assert!(why.contains(small.to_str().unwrap()), "{why}");
        assert!(why.contains("--scratch"), "{why}");
    }
}

#[test]
fn the_resident_transformers_worker_scores_as_a_fresh_load_does() {
    if transformers_missing() {
        return;
    }
    let tmp = TempDir::new("scaling", "resident");
    let spec = SyntheticSpec {
        layers: 2,
        hidden: 64,
        intermediate: 96,
        vocab: 64,
        dtype: Dtype::BF16,
    };
    let (base, experts) = models_of(&tmp, &spec);
    let tokens: Vec<String> = (0..400u64)
        .map(|i| ((i * 37 + i / 7) % 64).to_string())
        .collect();
    let tokens = write(tmp.path(), "tokens.txt", &tokens.join(" "));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("evaluators/hf_worker.py");
    let common = format!(
        "\"--tokens\", {:?}, \"--seq-len\", \"32\", \"--device\", \"cpu\", \"--dtype\", \"float32\"",
        tokens.display().to_string()
    );
    let space_with = |name: &str, evaluator: String| {
        let text = format!(
            "seed = 5\n{}\n[merge]\nmethod = \"ties\"\n[[params]]\nname = \"weight\"\nscope = \"expert\"\nlow = 0.0\nhigh = 1.0\n{evaluator}\n[[objectives]]\nname = \"perplexity\"\n[budget]\ntrials = 4\nbatch = 2\n",
            models_table(&base, &experts)
        );
        write(tmp.path(), name, &text)
    };
    let resident = space_with(
        "resident.toml",
        format!(
            "[[evaluators]]\nkind = \"worker\"\nargv = [\"python3\", {:?}, \"--base\", {:?}, {common}]\nobjectives = {{ perplexity = \"minimize\" }}\ntimeout_s = 120\n",
            script.display().to_string(),
            base.display().to_string()
        ),
    );
    let fresh = space_with(
        "fresh.toml",
        format!(
            "[[evaluators]]\nkind = \"command\"\nargv = [\"python3\", {:?}, \"--model-dir\", \"{{model_dir}}\", {common}]\nobjectives = {{ perplexity = \"minimize\" }}\ntimeout_s = 120\n",
            script.display().to_string()
        ),
    );
    let scored = |space: &Path, name: &str| -> Vec<(u64, f64, f64)> {
        let out = run(space, &tmp.join(name), &[]).output().unwrap();
        expect_exit(&out, 0, name);
        let mut trials = read_journal(&tmp.join(name)).unwrap();
        trials.sort_by_key(|t| t.id);
        trials
            .iter()
            .map(|t| {
                assert_eq!(t.status, Status::Ok, "{name}: {:?}", t.error);
                (t.id, t.scores["perplexity"].value, t.scores["loads"].value)
            })
            .collect()
    };
    let resident = scored(&resident, "resident");
    let fresh = scored(&fresh, "fresh");
    assert_eq!(resident.len(), 4);
    for ((id, in_place, loads), (_, reloaded, _)) in resident.iter().zip(&fresh) {
        assert_eq!(*loads, 1.0, "trial {id}: the worker loaded the base once");
        assert!(
            (in_place - reloaded).abs() <= 1e-4 * reloaded,
            "trial {id}: in place {in_place}, fresh load {reloaded}"
        );
    }
    let distinct: std::collections::BTreeSet<u64> =
        resident.iter().map(|r| r.1.to_bits()).collect();
    assert!(distinct.len() > 1, "each candidate is scored: {resident:?}");
}

#[test]
fn a_worker_process_serves_the_trials_of_a_run_over_json_lines() {
    let tmp = TempDir::new("scaling", "worker");
    let evaluator = format!(
        "[[evaluators]]\nkind = \"command\"\nargv = [{}, \"first\", \"{{model_dir}}\", \"{{trial_id}}\", \"/dev/null\"]\nobjectives = {{ loss = \"minimize\" }}\n\n[[evaluators]]\nkind = \"command\"\nargv = [\"python3\", \"-c\", \"import json,sys; p=json.loads(sys.argv[1]); print(json.dumps({{'scores': {{'spread': max(p.values()) - min(p.values())}}}}))\", \"{{params_json}}\"]\nobjectives = {{ spread = \"minimize\" }}\n",
        program(&tmp, "handoff.py", HANDOFF)
    );
    let space = space(&tmp, &evaluator, "trials = 4\nbatch = 2");
    let dir = tmp.join("run");
    expect_exit(&run(&space, &dir, &[]).output().unwrap(), 0, "the run");
    let recorded = read_journal(&dir).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_mergesearch"))
        .args(["worker", space.to_str().unwrap(), "--worker", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut requests: Vec<String> = recorded
        .iter()
        .map(|t| {
            serde_json::json!({"id": t.id, "generation": t.generation, "point": t.point})
                .to_string()
        })
        .collect();
    requests.push("{\"id\": 9, \"point\": [0.5]}".into());
    requests.push("not json".into());
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all((requests.join("\n") + "\n").as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the worker exits at end of input: {err}"
    );
    let replies: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), requests.len(), "one reply per request");
    for (t, reply) in recorded.iter().zip(&replies) {
        let served: TrialRecord = serde_json::from_value(reply.clone()).unwrap();
        assert_eq!(served.status, Status::Ok, "{:?}", served.error);
        assert_eq!((served.id, &served.point), (t.id, &t.point));
        assert_eq!(served.params, t.params);
        let values = |r: &TrialRecord| -> Vec<f64> { r.scores.values().map(|s| s.value).collect() };
        assert_eq!(
            values(&served),
            values(t),
            "trial {}: the run's scores",
            t.id
        );
        assert_eq!(served.scalar, t.scalar);
    }
    let n = recorded.len();
    assert!(
        replies[n]["error"]
            .as_str()
            .unwrap()
            .contains("the point has 1 coordinates")
    );
    assert!(
        replies[n + 1]["error"]
            .as_str()
            .unwrap()
            .contains("not a trial request")
    );
}

/// Kills the process that started it (its worker) at trial 2, once; else a loss.
const KILLS_ITS_WORKER: &str = r#"import json, os, signal, sys
p, trial, mark = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if trial == 2 and not os.path.exists(mark):
    open(mark, 'w').close()
    os.kill(os.getppid(), signal.SIGKILL)
    sys.exit(1)
print(json.dumps({'scores': {'loss': sum((v - 0.3) ** 2 for v in p.values())}}))
"#;

#[test]
fn a_worker_process_that_dies_fails_only_its_trial_and_is_replaced() {
    let tmp = TempDir::new("scaling", "dying");
    let evaluator = format!(
        "[[evaluators]]\nkind = \"command\"\nargv = [{}, \"{{params_json}}\", \"{{trial_id}}\", {:?}]\nobjectives = {{ loss = \"minimize\" }}\n",
        program(&tmp, "kills.py", KILLS_ITS_WORKER),
        tmp.join("killed-once").display().to_string()
    );
    let space = space(&tmp, &evaluator, "trials = 8\nbatch = 4");
    let dir = tmp.join("run");
    let out = run(&space, &dir, &["--workers", "2", "--worker-processes"])
        .output()
        .unwrap();
    expect_exit(&out, 0, "a run whose worker process dies once");
    let trials = read_journal(&dir).unwrap();
    let mut ids: Vec<u64> = trials.iter().map(|t| t.id).collect();
    ids.sort();
    assert_eq!(
        ids,
        (0..8).collect::<Vec<u64>>(),
        "every trial recorded once"
    );
    for t in &trials {
        if t.id == 2 {
            assert_eq!(t.status, Status::Failed);
            let why = t.error.as_deref().unwrap();
            assert!(why.contains("the worker process"), "{why}");
        } else {
            assert_eq!(t.status, Status::Ok, "trial {}: {:?}", t.id, t.error);
        }
    }
}

/// The Python with Ray that `.ci/run` installs (`MERGESEARCH_RAY_PYTHON`), or why there is none.
fn ray_python() -> Result<String, String> {
    let python = std::env::var("MERGESEARCH_RAY_PYTHON")
        .map_err(|_| "MERGESEARCH_RAY_PYTHON is not set (.ci/run sets it)".to_string())?;
    let ok = Command::new(&python)
        .args(["-c", "import ray"])
        .status()
        .map_err(|e| format!("{python}: {e}"))?;
    ok.success()
        .then_some(python.clone())
        .ok_or(format!("{python} cannot import ray"))
}

/// A local Ray cluster on the loopback address, stopped when this is dropped.
struct RayCluster {
    ray: PathBuf,
    address: String,
}

impl RayCluster {
    fn start(python: &str) -> RayCluster {
        let ray = Path::new(python).with_file_name("ray");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = Command::new(&ray)
            .args([
                "start",
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
            ])
            .arg(port.to_string())
            .args([
                "--num-cpus",
                "4",
                "--num-gpus",
                "0",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ray start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        RayCluster {
            ray,
            address: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for RayCluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.ray).args(["stop", "--force"]).output();
    }
}

/// Kills the Ray actor running its worker (its grandparent) at trial 2, once; else a loss and
/// the worker process's id.
const KILLS_ITS_ACTOR: &str = r#"import json, os, signal, sys
p, trial, mark = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
worker = os.getppid()
if trial == 2 and not os.path.exists(mark):
    open(mark, 'w').close()
    actor = int(open(f'/proc/{worker}/stat').read().rsplit(')', 1)[1].split()[1])
    os.kill(actor, signal.SIGKILL)
    sys.exit(1)
print(json.dumps({'scores': {'loss': sum((v - 0.3) ** 2 for v in p.values()), 'worker_pid': worker}}))
"#;

#[test]
fn ray_actors_run_the_workers_and_a_killed_actor_fails_only_its_trial() {
    let python = match ray_python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipped: no Python with Ray ({why})");
            return;
        }
    };
    let cluster = RayCluster::start(&python);
    let tmp = TempDir::new("scaling", "ray");
    let evaluator = format!(
        "[[evaluators]]\nkind = \"command\"\nargv = [{}, \"{{params_json}}\", \"{{trial_id}}\", {:?}]\nobjectives = {{ loss = \"minimize\" }}\ntimeout_s = 60\n",
        program(&tmp, "kills.py", KILLS_ITS_ACTOR),
        tmp.join("killed-once").display().to_string()
    );
    let space = space(&tmp, &evaluator, "trials = 8\nbatch = 4");
    let dir = tmp.join("run");
    let flags = [
        "--workers",
        "2",
        "--ray",
        &cluster.address,
        "--ray-python",
        &python,
    ];
    let out = run(&space, &dir, &flags).output().unwrap();
    expect_exit(&out, 0, "a run on two Ray actors");
    let check = |n: u64| {
        let trials = read_journal(&dir).unwrap();
        let mut ids: Vec<u64> = trials.iter().map(|t| t.id).collect();
        ids.sort();
        assert_eq!(
            ids,
            (0..n).collect::<Vec<u64>>(),
            "every trial recorded once"
        );
        for t in &trials {
            if t.id == 2 {
                let why = t.error.as_deref().unwrap_or_default();
                assert!(why.contains("actor was lost"), "{why}");
            } else {
                assert_eq!(t.status, Status::Ok, "trial {}: {:?}", t.id, t.error);
            }
        }
        trials
    };
    let trials = check(8);
    let pids: std::collections::BTreeSet<u64> = trials
        .iter()
        .filter_map(|t| t.scores.get("worker_pid").map(|s| s.value as u64))
        .collect();
    assert!(
        pids.len() >= 3,
        "two actors and the replacement of the killed one: {pids:?}"
    );
    // The run resumes on the cluster.
    let mut resumed = flags.to_vec();
    resumed.extend(["--resume", "--budget", "12"]);
    let out = run(&space, &dir, &resumed).output().unwrap();
    expect_exit(&out, 0, "the resumed run");
    check(12);
}
