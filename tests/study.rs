//! Search spaces, the study loop and its records: an end-to-end run, crash-safe resume, and the
//! errors of invalid spaces.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use burn::backend::Flex;
use indicatif::ProgressBar;
use mergesearch::checkpoint::Dtype;
use mergesearch::cli::make_optimizer;
use mergesearch::fixtures::{SyntheticSpec, write_synthetic_model};
use mergesearch::merge::{Method, ParamValue};
use mergesearch::record::{Status, TRIALS_FILE, TrialRecord, read_journal};
use mergesearch::space::Space;
use mergesearch::study::{RunOptions, run};

use crate::common::TempDir;
use crate::eval::tiny_zoo;

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load(path: &Path) -> Result<Space, String> {
    Space::load(path, &[], &ProgressBar::hidden()).map_err(|e| e.to_string())
}

/// A base and three experts, small.
pub fn models(dir: &TempDir) -> (PathBuf, Vec<PathBuf>) {
    models_of(
        dir,
        &SyntheticSpec {
            layers: 2,
            hidden: 8,
            intermediate: 16,
            vocab: 16,
            dtype: Dtype::F32,
        },
    )
}

/// A base and three experts (math, code, chat) shaped as `spec` says.
pub fn models_of(dir: &TempDir, spec: &SyntheticSpec) -> (PathBuf, Vec<PathBuf>) {
    let base = dir.join("base");
    write_synthetic_model(&base, spec, 1, None, 1 << 30).unwrap();
    let experts: Vec<PathBuf> = ["math", "code", "chat"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let path = dir.join(name);
            write_synthetic_model(&path, spec, 1, Some(i), 1 << 30).unwrap();
            path
        })
        .collect();
    (base, experts)
}

/// The `[models]` table of a space merging `experts` into `base`.
pub fn models_table(base: &Path, experts: &[PathBuf]) -> String {
    let experts: Vec<String> = experts
        .iter()
        .map(|e| format!("{:?}", e.display().to_string()))
        .collect();
    format!(
        "[models]\nbase = {:?}\nexperts = [{}]\n",
        base.display().to_string(),
        experts.join(", ")
    )
}

const SCORE_BY_PYTHON: &str = "[[evaluators]]\nkind = \"command\"\nargv = [\"python3\", \"-c\", \"import json,sys; p=json.loads(sys.argv[1]); print(json.dumps({'scores': {'loss': sum(v*v for v in p.values() if isinstance(v, float))}}))\", \"{params_json}\"]\nobjectives = { loss = \"minimize\" }\n\n[[objectives]]\nname = \"loss\"\n";

#[test]
fn a_layerwise_space_decodes_points_into_plans() {
    let tmp = TempDir::new("study", "decode");
    let (base, experts) = models(&tmp);
    let text = format!(
        "{}\n[merge]\nmethod = \"ties\"\ngranularity = \"layer\"\nfixed = {{ lambda = 0.9 }}\n\n[[params]]\nname = \"weight\"\nscope = \"expert_group\"\nlow = 0.0\nhigh = 2.0\ninit = [0.5, 1.0, 1.5]\n\n[[params]]\nname = \"density\"\nlow = 0.1\nhigh = 0.9\n\n{SCORE_BY_PYTHON}",
        models_table(&base, &experts)
    );
    let space = load(&write(tmp.path(), "space.toml", &text)).unwrap();
    let groups = space.models.as_ref().unwrap().groups.len();
    assert_eq!(groups, 4, "embeddings, two blocks, head");
    assert_eq!(space.dim(), 3 * groups + 3);
    assert_eq!(space.dimensions[0].name, "weight[math,embeddings]");
    assert_eq!(space.dimensions[3 * groups].name, "density[math]");
    let init = space.initial_point();
    assert_eq!(init[groups], 0.5, "code's weights start at 1.0 of [0, 2]");
    let decoded = space.decode(&init).unwrap();
    let plan = decoded.plan.unwrap();
    assert_eq!(plan.method, Method::Ties);
    assert_eq!(plan.shared["lambda"], ParamValue::Number(0.9));
    assert_eq!(
        plan.experts[2]["weight"],
        ParamValue::PerGroup(vec![1.5; groups])
    );
    assert_eq!(plan.experts[0]["density"], ParamValue::Number(0.5));
    assert_eq!(decoded.params["weight[chat,head]"], 1.5);
    assert_eq!(space.encode(&decoded.params).unwrap(), init);
}

#[test]
fn invalid_spaces_fail_at_load_naming_the_file_the_key_and_the_fix() {
    let tmp = TempDir::new("study", "invalid");
    let (base, experts) = models(&tmp);
    let models = models_table(&base, &experts);
    let param = |body: &str| {
        format!("{models}\n[merge]\nmethod = \"ties\"\n\n[[params]]\n{body}\n\n{SCORE_BY_PYTHON}")
    };
    let cases = [
        (
            format!("{models}\n[merge]\nmethod = \"ties\"\nmethd = 1\n{SCORE_BY_PYTHON}"),
            "unknown field `methd`",
        ),
        (
            param("name = \"weight\"\nlow = 1.0\nhigh = 1.0"),
            "`params[0] (weight)` has an empty or infinite range [1, 1]",
        ),
        (
            param("name = \"t\"\nlow = 0.0\nhigh = 1.0"),
            "`params[0] (t)` is not a parameter of method ties",
        ),
        (
            param("name = \"weight\"\nlow = 0.0\nhigh = 1.0\ninit = [0.1, 0.2, 0.3, 0.4]"),
            "has 4 values; give one value, or one per expert (3 experts): there are more values than experts",
        ),
        (
            param("name = \"normalize\"\nlow = 0.0\nhigh = 1.0"),
            "is a flag: set it under [merge.fixed]",
        ),
        (
            param("name = \"lambda\"\nscope = \"expert\"\nlow = 0.0\nhigh = 1.0"),
            "is shared by all experts, so its scope is \"shared\" or \"group\"",
        ),
        (
            param("name = \"weight\"\nlow = -1.0\nhigh = 1.0\nscale = \"log\""),
            "must be positive",
        ),
        (
            param("name = \"weight\"\nlow = 0.0\nhigh = 1.0\ninit = 3.0"),
            "3 is outside [0, 1]",
        ),
        (
            format!(
                "{models}\n[merge]\nmethod = \"ties\"\nfixed = {{ weight = 1.0 }}\n[[params]]\nname = \"density\"\nlow = 0.0\nhigh = 1.5\n{SCORE_BY_PYTHON}"
            ),
            "at the corner where every coordinate is 1, the ties plan does not resolve",
        ),
        (
            format!(
                "{models}\n[merge]\nmethod = \"tie\"\n[[params]]\nname = \"weight\"\nlow = 0.0\nhigh = 1.0\n{SCORE_BY_PYTHON}"
            ),
            "`merge.method`",
        ),
        (
            format!(
                "[models]\nbase = \"/nonexistent/base\"\nexperts = [\"/nonexistent/e\"]\n[merge]\nmethod = \"ties\"\n{SCORE_BY_PYTHON}"
            ),
            "/nonexistent/base",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write(tmp.path(), &format!("bad{i}.toml"), text);
        let error = load(&path).unwrap_err();
        assert!(error.contains(expected), "case {i}: {error}");
        assert!(
            error.starts_with(&path.display().to_string()),
            "names the file: {error}"
        );
    }
}

fn run_space(space: &Path, out: &Path, optimizer: &str, resume: bool) -> Vec<TrialRecord> {
    run_with(space, &[], out, optimizer, resume)
}

/// Runs `space` (with `overrides`) with `optimizer` into `out`.
fn run_with(
    space: &Path,
    overrides: &[String],
    out: &Path,
    optimizer: &str,
    resume: bool,
) -> Vec<TrialRecord> {
    let space = Space::load(space, overrides, &ProgressBar::hidden()).unwrap();
    let options = RunOptions {
        optimizer: optimizer.into(),
        out: out.to_path_buf(),
        resume,
        workers: None,
        gpus: None,
        scratch: None,
        worker_command: None,
    };
    let summary = run::<Flex>(
        &space,
        &options,
        || make_optimizer(optimizer, &space),
        &Default::default(),
        &ProgressBar::hidden(),
        &AtomicBool::new(false),
    )
    .unwrap();
    summary.trials
}

#[test]
fn a_small_zoo_search_runs_end_to_end_and_records_every_trial() {
    let tmp = TempDir::new("study", "zoo_run");
    let zoo = tmp.join("zoo");
    tiny_zoo(&zoo);
    let text = format!(
        "seed = 3\n[models]\nzoo = {:?}\n[merge]\nmethod = \"task_arithmetic\"\ngranularity = \"layer\"\n[[params]]\nname = \"weight\"\nscope = \"expert\"\nlow = 0.0\nhigh = 1.0\ninit = 0.3\n[[evaluators]]\nkind = \"zoo\"\nzoo = {:?}\nsplit = \"validation\"\nsubset = {{ size = 20, strategy = \"stratified\" }}\n[[objectives]]\nname = \"mean/accuracy\"\n[budget]\ntrials = 14\nbatch = 6\n",
        zoo.display().to_string(),
        zoo.display().to_string()
    );
    let space = write(tmp.path(), "space.toml", &text);
    for optimizer in ["cmaes", "random"] {
        let out = tmp.join(&format!("run-{optimizer}"));
        let trials = run_space(&space, &out, optimizer, false);
        assert_eq!(trials.len(), 14, "the budget, the last batch cut short");
        assert!(
            trials.iter().all(|t| t.status == Status::Ok),
            "{:?}",
            trials.iter().find(|t| t.error.is_some())
        );
        assert_eq!(
            trials.iter().map(|t| t.id).collect::<Vec<_>>(),
            (0..14).collect::<Vec<_>>()
        );
        assert_eq!(trials[13].generation, 2);
        for t in &trials {
            let accuracy = t.scores["mean/accuracy"].value;
            assert_eq!(t.scalar, Some(accuracy));
            assert!((0.0..=1.0).contains(&accuracy));
            assert!(t.scores.contains_key("digits/accuracy"));
        }
        assert!(out.join(TRIALS_FILE).exists() && out.join("run.json").exists());
        assert_eq!(read_journal(&out).unwrap(), trials);
        // Deterministic: the same space and seed give the same trials.
        let again = run_space(
            &space,
            &tmp.join(&format!("again-{optimizer}")),
            optimizer,
            false,
        );
        let strip = |ts: &[TrialRecord]| {
            ts.iter()
                .map(|t| (t.point.clone(), t.scores.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&again), strip(&trials));
    }
}

/// Runs the binary on `space` into `out`.
fn binary(space: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mergesearch"));
    command
        .args([
            "run",
            space.to_str().unwrap(),
            "--optimizer",
            "cmaes",
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

#[test]
fn a_run_killed_mid_way_and_resumed_gives_the_trials_of_an_uninterrupted_run() {
    let tmp = TempDir::new("study", "resume");
    // A slow external objective (about 0.1 s per trial) so that the kill lands mid-run.
    let text = "seed = 5\n[[params]]\nname = \"x\"\nlow = -2.0\nhigh = 2.0\n[[params]]\nname = \"y\"\nlow = -2.0\nhigh = 2.0\n[[evaluators]]\nkind = \"command\"\nargv = [\"python3\", \"-c\", \"import json,sys,time; time.sleep(0.1); p=json.loads(sys.argv[1]); print(json.dumps({'scores': {'loss': (p['x']-0.5)**2 + 3*(p['y']+0.25)**2}}))\", \"{params_json}\"]\nobjectives = { loss = \"minimize\" }\n[[objectives]]\nname = \"loss\"\n[budget]\ntrials = 30\nbatch = 6\n";
    let space = write(tmp.path(), "space.toml", text);
    let whole = tmp.join("whole");
    let status = binary(&space, &whole, &[]).status().unwrap();
    assert!(status.success());
    let reference = read_journal(&whole).unwrap();
    assert_eq!(reference.len(), 30);

    let cut = tmp.join("cut");
    // Kill -9 twice at different moments, then let it finish.
    for (kills, wanted) in [4, 15].into_iter().enumerate() {
        let mut child = binary(&space, &cut, if kills == 0 { &[] } else { &["--resume"] })
            .spawn()
            .unwrap();
        let started = Instant::now();
        while read_journal(&cut).map(|t| t.len()).unwrap_or(0) < wanted
            && started.elapsed() < Duration::from_secs(60)
        {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                panic!("the run ended ({status}) before {wanted} trials: {stderr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let recorded = read_journal(&cut).unwrap().len();
        assert!(
            recorded >= wanted && recorded < 30,
            "killed after {recorded} trials"
        );
    }
    let output = binary(&space, &cut, &["--resume"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let resumed = read_journal(&cut).unwrap();
    let mut resumed: Vec<&TrialRecord> = resumed.iter().collect();
    resumed.sort_by_key(|t| t.id);
    assert_eq!(resumed.len(), 30, "every trial once");
    for (a, b) in resumed.iter().zip(&reference) {
        assert_eq!(
            (a.id, &a.point, &a.scores, a.generation),
            (b.id, &b.point, &b.scores, b.generation)
        );
    }
    // A finished run resumed again runs nothing more; a new run into it is refused.
    let output = binary(&space, &cut, &[]).output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("already holds a run: continue it with --resume")
    );
}

fn mergesearch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mergesearch"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn sweep_eval_best_and_export_work_from_the_command_line() {
    let tmp = TempDir::new("study", "cli");
    let (base, experts) = models(&tmp);
    // The evaluator reports a standard error too, which `best` shows.
    let score = SCORE_BY_PYTHON.replace("}}))", "}, 'stderr': {'loss': 0.0625}}))");
    assert_ne!(score, SCORE_BY_PYTHON);
    let text = format!(
        "{}\n[merge]\nmethod = \"ties\"\nfixed = {{ density = 0.5 }}\n[[params]]\nname = \"weight\"\nlow = 0.0\nhigh = 1.0\n{score}\n[budget]\ntrials = 4\nbatch = 2\n",
        models_table(&base, &experts)
    );
    let space = write(tmp.path(), "space.toml", &text);
    let space = space.to_str().unwrap();
    let sweep_dir = tmp.join("sweep");
    let out = mergesearch(&[
        "sweep",
        space,
        "--grid",
        "optimizer=random,sobol",
        "--grid",
        "budget.trials=3,4",
        "--out",
        sweep_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(table.lines().count(), 2 + 4, "{table}");
    assert!(
        table.contains("| optimizer=sobol,budget.trials=4 | 4 | 0 |"),
        "{table}"
    );
    assert_eq!(
        std::fs::read_to_string(sweep_dir.join("sweep.md")).unwrap(),
        table
    );
    let run = sweep_dir.join("optimizer=random,budget.trials=4");
    assert_eq!(read_journal(&run).unwrap().len(), 4);

    let out = mergesearch(&["eval", space, "--point", "[0.5, 0.25, 1.0]"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["status"], "ok");
    assert!(
        (reply["scores"]["loss"].as_f64().unwrap() - 1.3125).abs() < 1e-12,
        "{reply}"
    );
    let bad = write(
        tmp.path(),
        "bad.toml",
        &text.replace("high = 1.0", "high = -1.0"),
    );
    let out = mergesearch(&[
        "run",
        bad.to_str().unwrap(),
        "--out",
        tmp.join("bad-run").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an invalid space is a config error"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("`params[0] (weight)` has an empty or infinite range")
    );
    let out = mergesearch(&["eval", space, "--point", "[0.5]"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the point must have 3 coordinates"));

    let out = mergesearch(&["best", run.to_str().unwrap()]);
    assert!(out.status.success());
    let best = read_journal(&run)
        .unwrap()
        .into_iter()
        .max_by(|a, b| a.scalar.partial_cmp(&b.scalar).unwrap())
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("best trial {} parameters", best.id)));
    let loss = &best.scores["loss"];
    assert_eq!(loss.stderr, Some(0.0625));
    assert!(
        stdout.contains(&format!("loss={:.4}±0.0625", loss.value)),
        "{stdout}"
    );

    let exported = tmp.join("exported");
    let out = mergesearch(&[
        "export",
        run.to_str().unwrap(),
        "--trial",
        &best.id.to_string(),
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = std::fs::read_to_string(exported.join("mergekit.yml")).unwrap();
    assert!(
        yaml.contains("merge_method: ties") && yaml.contains("density: 0.5"),
        "{yaml}"
    );
    let plan: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(exported.join("mergesearch-plan.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(plan["experts"][0]["weight"], best.params["weight[math]"]);
    assert!(mergesearch::checkpoint::Model::open(&exported).is_ok());
    let out = mergesearch(&[
        "export",
        run.to_str().unwrap(),
        "--trial",
        "99",
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no trial 99"));
}

#[test]
fn stopping_mid_batch_keeps_the_finished_trials_and_resume_completes_the_batch() {
    let tmp = TempDir::new("study", "stop");
    let text = "seed = 2\n[[params]]\nname = \"x\"\nlow = -1.0\nhigh = 1.0\n[[evaluators]]\nkind = \"command\"\nargv = [\"python3\", \"-c\", \"import json,sys,time; time.sleep(0.05); p=json.loads(sys.argv[1]); print(json.dumps({'scores': {'loss': p['x']**2}}))\", \"{params_json}\"]\nobjectives = { loss = \"minimize\" }\n[[objectives]]\nname = \"loss\"\n[budget]\ntrials = 12\nbatch = 6\n";
    let path = write(tmp.path(), "space.toml", text);
    let space = Space::load(&path, &[], &ProgressBar::hidden()).unwrap();
    let out = tmp.join("run");
    let stop = AtomicBool::new(false);
    let summary = std::thread::scope(|scope| {
        scope.spawn(|| {
            while read_journal(&out).map(|t| t.len()).unwrap_or(0) < 2 {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let options = RunOptions {
            optimizer: "random".into(),
            out: out.clone(),
            resume: false,
            workers: None,
            gpus: None,
            scratch: None,
            worker_command: None,
        };
        run::<Flex>(
            &space,
            &options,
            || make_optimizer("random", &space),
            &Default::default(),
            &ProgressBar::hidden(),
            &stop,
        )
        .unwrap()
    });
    assert!(summary.interrupted);
    assert!(
        summary.trials.is_empty(),
        "the first batch was not finished, so nothing was told"
    );
    let kept = read_journal(&out).unwrap().len();
    assert!(
        (2..6).contains(&kept),
        "stopped after the trial in flight: {kept} of 6"
    );
    let resumed = run_space(&path, &out, "random", true);
    let reference = run_space(&path, &tmp.join("reference"), "random", false);
    let strip = |ts: &[TrialRecord]| {
        ts.iter()
            .map(|t| (t.id, t.point.clone(), t.scores.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&resumed), strip(&reference));
}

#[test]
fn a_two_objective_run_keeps_its_front_and_hypervolume_and_plots_them() {
    let tmp = TempDir::new("study", "front");
    let text = "seed = 4\n[[params]]\nname = \"x0\"\nlow = 0.0\nhigh = 1.0\n[[params]]\nname = \"x1\"\nlow = 0.0\nhigh = 1.0\n[[evaluators]]\nkind = \"command\"\nargv = [\"python3\", \"evaluators/example.py\", \"--params\", \"{params_json}\", \"--seed\", \"{seed}\"]\nobjectives = { loss = \"minimize\", score = \"maximize\" }\n[[objectives]]\nname = \"loss\"\n[[objectives]]\nname = \"score\"\n[budget]\ntrials = 16\nbatch = 8\n";
    let space = write(tmp.path(), "space.toml", text);
    let out = tmp.join("run");
    let trials = run_space(&space, &out, "sobol", false);
    assert_eq!(trials.len(), 16);
    let history: Vec<serde_json::Value> = std::fs::read_to_string(out.join("hypervolume.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(history.len(), 2, "one line per batch");
    let volumes: Vec<f64> = history
        .iter()
        .map(|h| h["hypervolume"].as_f64().unwrap())
        .collect();
    assert!(volumes[0] > 0.0 && volumes[1] >= volumes[0], "{volumes:?}");
    let info: mergesearch::record::RunInfo =
        mergesearch::record::read_json(&out.join("run.json")).unwrap();
    assert_eq!(info.reference.as_ref().map(Vec::len), Some(2));
    assert!(out.join("front.parquet").exists());
    // Every trial on the front is dominated by no other trial.
    let (front, _) = mergesearch::record::front(&trials, &info.objectives);
    for f in &front {
        let dominated = trials.iter().any(|t| {
            let (tl, ts, fl, fs) = (
                t.scores["loss"].value,
                t.scores["score"].value,
                f.scores["loss"].value,
                f.scores["score"].value,
            );
            tl <= fl && ts >= fs && (tl < fl || ts > fs)
        });
        assert!(!dominated, "trial {} is dominated", f.id);
    }
    let output = mergesearch(&["front", out.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains(&format!("{} of 16 trials", front.len())),
        "{printed}"
    );
    let svg = std::fs::read_to_string(out.join("front-loss-score.svg")).unwrap();
    assert!(svg.contains("loss (lower is better)") && svg.contains("score (higher is better)"));
}

/// Runs `space` with `optimizer` and a budget of `trials` into `out`.
fn run_budget(
    space: &Path,
    out: &Path,
    optimizer: &str,
    trials: usize,
    resume: bool,
) -> Vec<TrialRecord> {
    run_with(
        space,
        &[format!("budget.trials={trials}")],
        out,
        optimizer,
        resume,
    )
}

#[test]
fn model_based_optimizers_record_their_predictions_and_resume_to_the_same_trials() {
    let tmp = TempDir::new("study", "model-based");
    let text = "seed = 6\n[[params]]\nname = \"x0\"\nlow = 0.0\nhigh = 1.0\n[[params]]\nname = \"x1\"\nlow = 0.0\nhigh = 1.0\n[[evaluators]]\nkind = \"command\"\nargv = [\"python3\", \"evaluators/example.py\", \"--params\", \"{params_json}\", \"--seed\", \"{seed}\"]\nobjectives = { loss = \"minimize\", score = \"maximize\" }\n[[objectives]]\nname = \"loss\"\n[[objectives]]\nname = \"score\"\n[budget]\nbatch = 8\n";
    let space = write(tmp.path(), "space.toml", text);
    for optimizer in ["nsga2", "map", "map-bayes", "gp", "gp-parego"] {
        let whole = run_budget(
            &space,
            &tmp.join(&format!("{optimizer}-whole")),
            optimizer,
            24,
            false,
        );
        assert_eq!(whole.len(), 24, "{optimizer}");
        assert!(whole.iter().all(|t| t.status == Status::Ok), "{optimizer}");
        // Stopped after two batches and resumed: the optimizer's state comes back from JSON.
        let parted = tmp.join(&format!("{optimizer}-parted"));
        assert_eq!(run_budget(&space, &parted, optimizer, 16, false).len(), 16);
        let resumed = run_budget(&space, &parted, optimizer, 24, true);
        let strip = |ts: &[TrialRecord]| {
            ts.iter()
                .map(|t| (t.id, t.point.clone(), t.predicted.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&resumed), strip(&whole), "{optimizer}");
        let predicted: Vec<&TrialRecord> = whole.iter().filter(|t| t.predicted.is_some()).collect();
        if optimizer == "nsga2" {
            assert!(predicted.is_empty(), "NSGA-II has no surrogate");
            continue;
        }
        assert!(
            predicted.len() >= 8,
            "{optimizer}: {} predicted",
            predicted.len()
        );
        // GP-BO models the scalar score; the others each objective, in its own units.
        let names: &[&str] = if optimizer == "gp" {
            &["scalar"]
        } else {
            &["loss", "score"]
        };
        for t in &predicted {
            let p = t.predicted.as_ref().unwrap();
            assert_eq!(
                p.keys().map(String::as_str).collect::<Vec<_>>(),
                names,
                "{optimizer}"
            );
        }
        let table =
            std::fs::read(tmp.join(&format!("{optimizer}-whole")).join(TRIALS_FILE)).unwrap();
        let needle = format!("predicted.{}", names[0]).into_bytes();
        let needle = needle.as_slice();
        assert!(
            table.windows(needle.len()).any(|w| w == needle),
            "{optimizer}: trials.parquet has a predicted.loss column"
        );
    }
}
