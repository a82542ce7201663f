//! Multi-fidelity search: successive halving's promotion on a known noisy function, a run
//! stopped inside a rung and resumed, and budgets in items scored and evaluator seconds.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use indicatif::ProgressBar;
use mergesearch::cli::make_optimizer;
use mergesearch::eval::{Cost, Direction, EvalConfigError, Evaluation, Evaluator, Failure};
use mergesearch::eval::{Objective, Outcome, Placement, Score, Trial};
use mergesearch::record::{Status, TrialRecord, read_journal};
use mergesearch::rng::Rng;
use mergesearch::space::Space;
use mergesearch::study::{EvaluatorFactory, RunOptions, RunSummary, StudyError, run_with};
use rand::Rng as _;

use crate::common::TempDir;
use crate::study::write;

/// Tasks the noisy function pretends to score (items counted = tasks x items per task).
const TASKS: u64 = 2;

/// A known noisy function of `x` and `y`: `1 - (x - 0.3)^2 - (y - 0.6)^2` plus Gaussian noise
/// whose standard deviation shrinks as `0.3 / sqrt(items)`, drawn from the trial's seed and
/// the items asked for (so a rung's score is reproducible).
struct Noisy {
    objectives: Vec<Objective>,
    /// Evaluations so far (shared between the builds of a run).
    calls: Arc<AtomicUsize>,
    /// Raised after this many evaluations.
    stop: Option<(usize, Arc<AtomicBool>)>,
    /// Whether the evaluation reports the items it scored.
    counts: bool,
    /// Time spent per evaluation.
    sleep: Duration,
}

impl Noisy {
    fn new(calls: &Arc<AtomicUsize>) -> Noisy {
        Noisy {
            objectives: vec![Objective::new("score", Direction::Maximize)],
            calls: calls.clone(),
            stop: None,
            counts: true,
            sleep: Duration::ZERO,
        }
    }
}

impl Evaluator<Flex> for Noisy {
    fn name(&self) -> &str {
        "noisy"
    }

    fn objectives(&self) -> &[Objective] {
        &self.objectives
    }

    fn takes_items(&self) -> bool {
        true
    }

    fn evaluate(&mut self, trial: &Trial<'_, Flex>) -> Outcome {
        std::thread::sleep(self.sleep);
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((at, stop)) = &self.stop
            && n >= *at
        {
            stop.store(true, Ordering::SeqCst);
        }
        let Some(items) = trial.items else {
            return Err(Failure {
                reason: "asked for no number of items".into(),
                cost: Cost::default(),
            });
        };
        let (x, y) = (
            trial.params["x"].as_f64().unwrap(),
            trial.params["y"].as_f64().unwrap(),
        );
        let mut rng = Rng::new(trial.seed ^ (items as u64) << 40);
        let (u, v): (f64, f64) = (rng.random(), rng.random());
        let gaussian = (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        let value =
            1.0 - (x - 0.3).powi(2) - (y - 0.6).powi(2) + gaussian * 0.3 / (items as f64).sqrt();
        Ok(Evaluation {
            scores: [(
                "score".to_string(),
                Score {
                    value,
                    stderr: Some(0.3 / (items as f64).sqrt()),
                },
            )]
            .into(),
            cost: Cost {
                seconds: 0.0,
                items: self.counts.then_some(TASKS * items as u64),
                attempts: 1,
            },
        })
    }
}

/// A two-parameter space with `extra` TOML (fidelity and budget tables).
fn noisy_space(tmp: &TempDir, extra: &str) -> Space {
    let text = format!(
        "seed = 5\n[[params]]\nname = \"x\"\nlow = 0.0\nhigh = 1.0\n[[params]]\nname = \"y\"\nlow = 0.0\nhigh = 1.0\n[[evaluators]]\nkind = \"command\"\nargv = [\"true\", \"{{items}}\"]\nobjectives = {{ score = \"maximize\" }}\n[[objectives]]\nname = \"score\"\n{extra}"
    );
    let path: PathBuf = write(tmp.path(), "space.toml", &text);
    Space::load(&path, &[], &ProgressBar::hidden()).unwrap()
}

const RUNGS: &str = "[fidelity]\nitems = [4, 16, 64]\nreduction = 3\n";

/// Runs `space` with `optimizer` into `out`, each worker's evaluator made by `make`.
fn run(
    space: &Space,
    optimizer: &str,
    out: &std::path::Path,
    resume: bool,
    stop: &AtomicBool,
    make: impl Fn() -> Noisy + Sync,
) -> Result<RunSummary, StudyError> {
    run_scoring_heldout(space, optimizer, out, resume, stop, make, None)
}

/// [`run`] whose chosen trial is scored by the held-out evaluators `heldout` makes.
fn run_scoring_heldout(
    space: &Space,
    optimizer: &str,
    out: &std::path::Path,
    resume: bool,
    stop: &AtomicBool,
    make: impl Fn() -> Noisy + Sync,
    heldout: Option<&EvaluatorFactory<'_, Flex>>,
) -> Result<RunSummary, StudyError> {
    let build =
        |_: &Placement, _: &FlexDevice| -> Result<Vec<Box<dyn Evaluator<Flex>>>, EvalConfigError> {
            Ok(vec![Box::new(make())])
        };
    let options = RunOptions {
        optimizer: optimizer.into(),
        out: out.to_path_buf(),
        resume,
        workers: Some(1),
        gpus: None,
        scratch: None,
        worker_command: None,
    };
    run_with::<Flex>(
        space,
        &options,
        || make_optimizer(optimizer, space),
        &build,
        heldout,
        &Default::default(),
        &ProgressBar::hidden(),
        stop,
    )
}

/// The ids among `batch` that the rule promotes from rung `from`: the best third (rounded
/// down, at least one) of those that succeeded there, ties to the lower id.
fn expected_promotion(batch: &[&TrialRecord], from: usize) -> BTreeSet<u64> {
    let mut scored: Vec<(u64, f64)> = batch
        .iter()
        .filter_map(|t| Some((t.id, t.rungs.get(from)?.scalar?)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let keep = (scored.len() / 3).max(1).min(scored.len());
    scored[..keep].iter().map(|(id, _)| *id).collect()
}

#[test]
fn every_batch_promotes_its_best_third_from_rung_to_rung_and_records_each_rung() {
    let tmp = TempDir::new("fidelity", "promotion");
    let space = noisy_space(&tmp, &format!("{RUNGS}[budget]\ntrials = 27\nbatch = 9\n"));
    for optimizer in ["random", "cmaes", "nsga2"] {
        let calls = Arc::new(AtomicUsize::new(0));
        let out = tmp.join(optimizer);
        let summary = run(
            &space,
            optimizer,
            &out,
            false,
            &AtomicBool::new(false),
            || Noisy::new(&calls),
        )
        .unwrap();
        let trials = &summary.trials;
        assert_eq!(trials.len(), 27, "{optimizer}");
        let generations: BTreeSet<u64> = trials.iter().map(|t| t.generation).collect();
        let mut evaluations = 0;
        for generation in generations {
            // NSGA-II's batches are of even size: 10, 10 and the 7 left.
            let batch: Vec<&TrialRecord> = trials
                .iter()
                .filter(|t| t.generation == generation)
                .collect();
            let n = batch.len();
            let reached = |rung: usize| -> BTreeSet<u64> {
                batch
                    .iter()
                    .filter(|t| t.rungs.len() > rung)
                    .map(|t| t.id)
                    .collect()
            };
            assert_eq!(reached(0).len(), n, "{optimizer}: all at rung 0");
            assert_eq!(reached(1), expected_promotion(&batch, 0), "{optimizer}");
            assert_eq!(reached(1).len(), (n / 3).max(1));
            assert_eq!(reached(2), expected_promotion(&batch, 1), "{optimizer}");
            assert_eq!(reached(2).len(), 1);
            evaluations += n + reached(1).len() + 1;
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            evaluations,
            "{optimizer}: each evaluation once"
        );
        for t in trials {
            assert_eq!(t.status, Status::Ok);
            let top = t.rungs.last().unwrap();
            assert_eq!(t.scalar, top.scalar, "the trial's score is its top rung's");
            assert_eq!(t.scores, top.scores);
            for (rung, items) in t.rungs.iter().zip([4, 16, 64]) {
                assert_eq!(rung.items_per_task, items);
                assert_eq!(rung.items, Some(TASKS * items as u64));
            }
            let total: u64 = t.rungs.iter().map(|r| r.items.unwrap()).sum();
            assert_eq!(t.items, Some(total));
        }
        // The best trial is one that reached the top rung.
        assert_eq!(summary.best().unwrap().rungs.len(), 3);
        // The journal holds each trial once, with every rung it reached.
        assert_eq!(&read_journal(&out).unwrap(), trials);
    }
}

/// What must agree between two runs' trials.
fn essence(trials: &[TrialRecord]) -> Vec<serde_json::Value> {
    trials
        .iter()
        .map(|t| {
            let rungs: Vec<_> = t
                .rungs
                .iter()
                .map(|r| (r.items_per_task, r.scalar, r.items))
                .collect();
            serde_json::json!({
                "id": t.id,
                "generation": t.generation,
                "point": t.point,
                "status": t.status,
                "scores": t.scores,
                "items": t.items,
                "rungs": rungs,
            })
        })
        .collect()
}

#[test]
fn a_run_stopped_inside_a_rung_resumes_to_the_trials_of_an_uninterrupted_run() {
    let tmp = TempDir::new("fidelity", "resume");
    let space = noisy_space(&tmp, &format!("{RUNGS}[budget]\ntrials = 27\nbatch = 9\n"));
    let calls = Arc::new(AtomicUsize::new(0));
    let reference = run(
        &space,
        "cmaes",
        &tmp.join("whole"),
        false,
        &AtomicBool::new(false),
        || Noisy::new(&calls),
    )
    .unwrap();
    assert!(!reference.interrupted);
    // Evaluations 1-9 are batch 0's rung 0, 10-12 its rung 1, 13 its rung 2, and so on.
    for stop_at in [5, 9, 11, 12, 13, 20, 24, 26, 37] {
        let out = tmp.join(&format!("cut-{stop_at}"));
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let cut = run(&space, "cmaes", &out, false, &stop, || Noisy {
            stop: Some((stop_at, stop.clone())),
            ..Noisy::new(&calls)
        })
        .unwrap();
        assert!(cut.interrupted, "stopped after evaluation {stop_at}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            stop_at,
            "no evaluation after the stop"
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let resumed = run(&space, "cmaes", &out, true, &AtomicBool::new(false), || {
            Noisy::new(&calls)
        })
        .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            39 - stop_at,
            "the resume evaluates only what was left"
        );
        assert_eq!(
            essence(&resumed.trials),
            essence(&reference.trials),
            "stopped after evaluation {stop_at}"
        );
    }
}

#[test]
fn budgets_in_items_and_evaluator_seconds_stop_at_the_batch_that_reaches_them() {
    let tmp = TempDir::new("fidelity", "budgets");
    let calls = Arc::new(AtomicUsize::new(0));
    // One batch costs 9 x 8 + 3 x 32 + 1 x 128 = 296 items: 300 needs a second batch.
    let space = noisy_space(&tmp, &format!("{RUNGS}[budget]\nitems = 300\nbatch = 9\n"));
    let items = run(
        &space,
        "cmaes",
        &tmp.join("items"),
        false,
        &AtomicBool::new(false),
        || Noisy::new(&calls),
    )
    .unwrap();
    assert_eq!(items.trials.len(), 18);
    assert_eq!(
        items.trials.iter().map(|t| t.items.unwrap()).sum::<u64>(),
        592
    );
    // Exactly the budget of one batch: the run stops there.
    let space_one = space_with(&tmp, "[budget]\nitems = 296\nbatch = 9\n");
    let one = run(
        &space_one,
        "random",
        &tmp.join("one"),
        false,
        &AtomicBool::new(false),
        || Noisy::new(&calls),
    )
    .unwrap();
    assert_eq!(one.trials.len(), 9);

    // Seconds spent in evaluators: the run stops at the first batch boundary past the budget.
    let space = noisy_space(
        &tmp,
        &format!("{RUNGS}[budget]\neval_seconds = 0.5\nbatch = 3\n"),
    );
    let timed = run(
        &space,
        "random",
        &tmp.join("seconds"),
        false,
        &AtomicBool::new(false),
        || Noisy {
            sleep: Duration::from_millis(40),
            ..Noisy::new(&calls)
        },
    )
    .unwrap();
    let spent = |ts: &[TrialRecord]| ts.iter().map(|t| t.eval_seconds).sum::<f64>();
    let last = timed.trials.last().unwrap().generation;
    let before: Vec<TrialRecord> = timed
        .trials
        .iter()
        .filter(|t| t.generation < last)
        .cloned()
        .collect();
    assert!(spent(&timed.trials) >= 0.5, "{}", spent(&timed.trials));
    assert!(spent(&before) < 0.5, "{}", spent(&before));

    // Items cannot be budgeted when the evaluator does not count them: a clear error.
    let space = noisy_space(&tmp, &format!("{RUNGS}[budget]\nitems = 300\nbatch = 3\n"));
    let error = run(
        &space,
        "random",
        &tmp.join("uncounted"),
        false,
        &AtomicBool::new(false),
        || Noisy {
            counts: false,
            ..Noisy::new(&calls)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("budget.items") && error.contains("trial 0"),
        "{error}"
    );
}

/// [`space`] with the rungs and `budget`.
fn space_with(tmp: &TempDir, budget: &str) -> Space {
    noisy_space(tmp, &format!("{RUNGS}{budget}"))
}

/// A held-out evaluator that reports a different, large score at each call (anything that read
/// it would steer elsewhere) and notes which trial it scored after how many search evaluations.
struct Oracle {
    objectives: Vec<Objective>,
    search_calls: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<(u64, usize)>>>,
}

impl Evaluator<Flex> for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }

    fn objectives(&self) -> &[Objective] {
        &self.objectives
    }

    fn evaluate(&mut self, trial: &Trial<'_, Flex>) -> Outcome {
        let mut seen = self.seen.lock().unwrap();
        seen.push((trial.id, self.search_calls.load(Ordering::SeqCst)));
        Ok(Evaluation {
            scores: [(
                "score".to_string(),
                Score {
                    value: 1000.0 * seen.len() as f64,
                    stderr: None,
                },
            )]
            .into(),
            cost: Cost::default(),
        })
    }
}

#[test]
fn the_held_out_score_is_read_by_no_optimizer_and_comes_once_after_the_search() {
    let tmp = TempDir::new("fidelity", "heldout");
    let space = noisy_space(&tmp, &format!("{RUNGS}[budget]\ntrials = 16\nbatch = 4\n"));
    for optimizer in ["random", "cmaes", "nsga2", "gp", "map"] {
        let calls = Arc::new(AtomicUsize::new(0));
        let stop = AtomicBool::new(false);
        let blind = run(
            &space,
            optimizer,
            &tmp.join(&format!("{optimizer}-blind")),
            false,
            &stop,
            || Noisy::new(&calls),
        )
        .unwrap();
        assert!(blind.heldout.is_none());
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let oracle = |_: &Placement,
                      _: &FlexDevice|
         -> Result<Vec<Box<dyn Evaluator<Flex>>>, EvalConfigError> {
            Ok(vec![Box::new(Oracle {
                objectives: vec![Objective::new("score", Direction::Maximize)],
                search_calls: calls.clone(),
                seen: seen.clone(),
            })])
        };
        let scored = run_scoring_heldout(
            &space,
            optimizer,
            &tmp.join(&format!("{optimizer}-heldout")),
            false,
            &stop,
            || Noisy::new(&calls),
            Some(&oracle),
        )
        .unwrap();
        assert_eq!(
            essence(&scored.trials),
            essence(&blind.trials),
            "{optimizer}: the same trials with and without held-out scoring"
        );
        let chosen = scored.heldout.as_ref().unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [(chosen.trial, calls.load(Ordering::SeqCst))],
            "{optimizer}: one held-out evaluation, of the chosen trial, after every search evaluation"
        );
        assert_eq!(chosen.scalar, Some(1000.0));
        assert_ne!(
            chosen.search_scalar, chosen.scalar,
            "{optimizer}: the search's score is its own"
        );
    }
}
