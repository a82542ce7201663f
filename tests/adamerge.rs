//! AdaMerging: the entropy loss's gradient against finite differences, the differentiable merge
//! against the merger that exports it, and a run's records.

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use indicatif::ProgressBar;
use mergesearch::adamerge::{
    AdaMergeOptions, CoefficientGranularity, DifferentiableMerge, EntropyObjective, adamerge,
    derived_space, sample_batch,
};
use mergesearch::merge::Merger;
use mergesearch::record::{RUN_FILE, RunInfo, read_journal, read_json};
use mergesearch::rng::Rng;
use mergesearch::space::Space;
use mergesearch::zoo::build::{ZooConfig, build};
use mergesearch::zoo::evaluate::ZooScorer;
use mergesearch::zoo::model::EncoderConfig;
use mergesearch::zoo::tasks::Split;
use rand::Rng as _;
use serde_json::{Map, Value};

use crate::common::TempDir;

type A = Autodiff<Flex>;

/// A zoo space over a tiny zoo in `dir`.
fn zoo_space(dir: &TempDir, encoder: EncoderConfig) -> Space {
    let zoo = dir.join("zoo");
    build(&zoo, &ZooConfig::tiny(11, encoder), &ProgressBar::hidden()).unwrap();
    let file = dir.join("space.toml");
    std::fs::write(
        &file,
        format!(
            r#"
seed = 0
[models]
zoo = {zoo:?}
[merge]
method = "task_arithmetic"
[[params]]
name = "weight"
low = 0.0
high = 1.0
[[evaluators]]
kind = "zoo"
zoo = {zoo:?}
[[objectives]]
name = "mean/accuracy"
"#
        ),
    )
    .unwrap();
    Space::load(&file, &[], &ProgressBar::hidden()).unwrap()
}

fn options(granularity: CoefficientGranularity, ties: Option<f64>) -> AdaMergeOptions {
    AdaMergeOptions {
        granularity,
        ties,
        ..AdaMergeOptions::default()
    }
}

/// The space AdaMerging derives from `space`, its merger, and the differentiable merge.
fn differentiable(
    space: &Space,
    granularity: CoefficientGranularity,
    ties: Option<f64>,
) -> (Space, Merger<Flex>, DifferentiableMerge<A>) {
    let derived =
        derived_space(space, &options(granularity, ties), &ProgressBar::hidden()).unwrap();
    let merger = derived
        .models
        .as_ref()
        .unwrap()
        .merger::<Flex>(&Default::default())
        .unwrap();
    let merge = DifferentiableMerge::<A>::new(&merger, ties);
    (derived, merger, merge)
}

fn matrix(merge: &DifferentiableMerge<A>, x: &[f64]) -> Tensor<Flex, 2> {
    let values: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    Tensor::from_data(
        TensorData::new(values, [merge.groups(), merge.experts()]),
        &Default::default(),
    )
}

/// The loss at coefficients `x` on the fixed batch `indices`, TIES signs elected with the
/// coefficients `elect`.
fn loss(
    objective: &EntropyObjective<'_, A>,
    merge: &DifferentiableMerge<A>,
    indices: &[Vec<usize>],
    x: &[f64],
    elect: &[f64],
) -> f64 {
    objective
        .loss(&matrix(merge, x), &matrix(merge, elect), indices)
        .unwrap()
        .into_scalar()
        .elem::<f64>()
}

#[test]
fn the_entropy_gradient_matches_central_finite_differences() {
    let dir = TempDir::new("adamerge", "gradient");
    // A ViT: its attention, layer norms and batched heads are what the gradient flows through.
    let space = zoo_space(&dir, EncoderConfig::vit());
    let device = Default::default();
    let scorer = ZooScorer::<A>::open(&dir.join("zoo"), Split::Validation, &device).unwrap();
    let indices = sample_batch(scorer.datasets(), 8, 3, 0);
    let mut checked = 0;
    for (granularity, ties) in [
        (CoefficientGranularity::Layer, None),
        (CoefficientGranularity::Task, Some(0.5)),
    ] {
        let (_, _, merge) = differentiable(&space, granularity, ties);
        let objective = EntropyObjective::new(&merge, &scorer, 8);
        let n = merge.groups() * merge.experts();
        for seed in 0..3 {
            let mut rng = Rng::new(seed);
            let x: Vec<f64> = (0..n).map(|_| 0.1 + 0.5 * rng.random::<f64>()).collect();
            let grad = objective.gradient(&matrix(&merge, &x), &indices).unwrap();
            let grad: Vec<f64> = grad.coefficients.into_data().iter::<f64>().collect();
            // A TIES merge elects signs with the coefficients: piecewise constant, so the loss
            // jumps where an entry's election flips and its gradient is the gradient with the
            // election held. The differences hold it at `x` too.
            let h = 1e-2;
            for j in (0..n).step_by((n / 6).max(1)) {
                let mut up = x.clone();
                up[j] += h;
                let mut down = x.clone();
                down[j] -= h;
                let numeric = (loss(&objective, &merge, &indices, &up, &x)
                    - loss(&objective, &merge, &indices, &down, &x))
                    / (2.0 * h);
                let tolerance = 0.03 * grad[j].abs().max(numeric.abs()) + 2e-3;
                assert!(
                    (numeric - grad[j]).abs() <= tolerance,
                    "{granularity:?} ties {ties:?} seed {seed} coefficient {j}: autodiff {} vs finite differences {numeric}",
                    grad[j]
                );
                checked += 1;
            }
            assert!(grad.iter().any(|g| g.abs() > 1e-3), "{grad:?}");
        }
    }
    assert!(checked >= 20, "{checked}");
}

#[test]
fn the_differentiable_merge_is_the_merge_its_plan_exports() {
    let dir = TempDir::new("adamerge", "same-merge");
    // A ViT: its attention, layer norms and batched heads are what the gradient flows through.
    let space = zoo_space(&dir, EncoderConfig::vit());
    for (granularity, ties) in [
        (CoefficientGranularity::Layer, None),
        (CoefficientGranularity::Tensor, Some(0.3)),
    ] {
        let (derived, merger, merge) = differentiable(&space, granularity, ties);
        let (groups, experts) = (merge.groups(), merge.experts());
        let mut rng = Rng::new(7);
        let x: Vec<f64> = (0..groups * experts).map(|_| rng.random::<f64>()).collect();
        // The derived space names its dimensions weight[expert,group], expert-major.
        let models = derived.models.as_ref().unwrap();
        let params: Map<String, Value> = models
            .groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| {
                let x = &x;
                models.labels.iter().enumerate().map(move |(e, label)| {
                    (
                        format!("weight[{label},{group}]"),
                        Value::from(x[g * experts + e]),
                    )
                })
            })
            .collect();
        let plan = derived
            .decode(&derived.encode(&params).unwrap())
            .unwrap()
            .plan
            .unwrap();
        let exported = merger.materialize(&plan).unwrap();
        let coefficients = matrix(&merge, &x);
        let learned = merge.merged(&coefficients, &coefficients);
        assert_eq!(learned.len(), exported.tensors.len());
        for ((name, _, a), (other, _, b)) in learned.iter().zip(&exported.tensors) {
            assert_eq!(name, other);
            let a: Vec<f32> = a.clone().into_data().to_vec().unwrap();
            let b: Vec<f32> = b.clone().into_data().to_vec().unwrap();
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{granularity:?} {name}: differs by {worst}");
        }
    }
}

#[test]
fn a_run_lowers_the_entropy_and_records_every_step_as_a_trial() {
    let dir = TempDir::new("adamerge", "run");
    let space = zoo_space(&dir, EncoderConfig::mlp());
    let out = dir.join("run");
    let options = AdaMergeOptions {
        steps: 25,
        lr: 2e-2,
        batch: 8,
        split: Split::Validation,
        ..options(CoefficientGranularity::Layer, None)
    };
    let outcome = adamerge::<A>(
        &space,
        &options,
        &out,
        &Default::default(),
        &ProgressBar::hidden(),
    )
    .unwrap();
    let entropy =
        |s: &[mergesearch::zoo::evaluate::TaskScores]| -> f64 { s.iter().map(|t| t.entropy).sum() };
    assert!(
        entropy(&outcome.learned) < entropy(&outcome.initial),
        "entropy {} -> {}",
        entropy(&outcome.initial),
        entropy(&outcome.learned)
    );
    let trials = read_journal(&out).unwrap();
    assert_eq!(trials.len(), 26);
    assert!(trials.iter().enumerate().all(|(i, t)| t.id == i as u64));
    assert!(
        trials[..25]
            .iter()
            .all(|t| t.scores.contains_key("entropy"))
    );
    let last = &trials[25];
    assert!(last.scores.contains_key("mean/accuracy"));
    assert_eq!(
        outcome.space.decode(&last.point).unwrap().plan.unwrap(),
        outcome.plan
    );
    // The first step starts every coefficient at init; later ones move.
    assert!(trials[0].params.values().all(|v| v.as_f64() == Some(0.3)));
    assert_ne!(trials[0].point, last.point);
    let info: RunInfo = read_json(&out.join(RUN_FILE)).unwrap();
    assert_eq!(info.optimizer, "adamerge");
    assert!(out.join("trials.parquet").exists());
    // A second run into the same directory is refused rather than mixed in.
    let again = adamerge::<A>(
        &space,
        &options,
        &out,
        &Default::default(),
        &ProgressBar::hidden(),
    );
    assert!(
        again
            .unwrap_err()
            .to_string()
            .contains("already holds a run")
    );
    assert_eq!(read_journal(&out).unwrap().len(), 26);
}

#[test]
fn options_and_spaces_it_cannot_use_are_explained() {
    let dir = TempDir::new("adamerge", "errors");
    let space = zoo_space(&dir, EncoderConfig::mlp());
    let bad = AdaMergeOptions {
        init: 1.5,
        ..AdaMergeOptions::default()
    };
    let err = adamerge::<A>(
        &space,
        &bad,
        &dir.join("run"),
        &Default::default(),
        &ProgressBar::hidden(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--init"), "{err}");
    let bad = AdaMergeOptions {
        ties: Some(0.0),
        ..AdaMergeOptions::default()
    };
    let err = adamerge::<A>(
        &space,
        &bad,
        &dir.join("run"),
        &Default::default(),
        &ProgressBar::hidden(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--ties"), "{err}");
    assert!(!dir.join("run").exists());

    // The same through the binary, each kind of error with its exit code.
    let file = space.file.to_str().unwrap();
    let out_dir = dir.join("cli-run");
    let out = out_dir.to_str().unwrap();
    let code = |args: &[&str]| {
        let output = mergesearch(args);
        let err = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        (output.status.code(), err)
    };
    let (status, err) = code(&["adamerge", file, "--ties", "2", "--out", out]);
    assert_eq!(status, Some(2), "{err}");
    #[cfg(not(feature = "cuda"))]
    {
        let (status, err) = code(&["adamerge", file, "--device", "cuda:0", "--out", out]);
        assert_eq!(status, Some(4), "{err}");
    }
    let held = mergesearch::record::RunLock::acquire(&out_dir).unwrap();
    let (status, err) = code(&["adamerge", file, "--steps", "1", "--out", out]);
    assert_eq!(status, Some(5), "{err}");
    assert!(err.contains("is in use by process"), "{err}");
    drop(held);
    // A zoo with a damaged expert.
    let bad_zoo = dir.join("bad-zoo");
    copy_dir(&dir.join("zoo"), &bad_zoo);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(bad_zoo.join("zoo.json")).unwrap()).unwrap();
    let expert = bad_zoo
        .join(manifest["tasks"][0]["expert"].as_str().unwrap())
        .join("model.safetensors");
    std::fs::write(&expert, b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}").unwrap();
    let bad_space = dir.join("bad-space.toml");
    std::fs::write(
        &bad_space,
        std::fs::read_to_string(&space.file)
            .unwrap()
            .replace(&format!("{:?}", dir.join("zoo")), &format!("{bad_zoo:?}")),
    )
    .unwrap();
    let (status, err) = code(&["adamerge", bad_space.to_str().unwrap(), "--out", out]);
    assert_eq!(status, Some(3), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
}

/// Copies the files of `from` (recursively) into `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn mergesearch(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mergesearch"))
        .args(args)
        .output()
        .unwrap()
}

fn check(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_command_line_learns_exports_seeds_a_search_and_compares_optimizers() {
    let dir = TempDir::new("adamerge", "cli");
    let space = zoo_space(&dir, EncoderConfig::mlp());
    let space_file = space.file.to_str().unwrap();
    let run = dir.join("ada");
    let run_dir = run.to_str().unwrap();
    let printed = check(&mergesearch(&[
        "adamerge",
        space_file,
        "--granularity",
        "task",
        "--steps",
        "4",
        "--batch",
        "4",
        "--split",
        "validation",
        "--ties",
        "0.5",
        "--out",
        run_dir,
    ]));
    assert!(
        printed.contains("mean") && printed.contains("per step"),
        "{printed}"
    );
    let trials = read_journal(&run).unwrap();
    assert_eq!(trials.len(), 5);

    // The learned merge exports as a TIES plan without normalization.
    let exported = dir.join("exported");
    check(&mergesearch(&[
        "export",
        run_dir,
        "--trial",
        "4",
        "--out",
        exported.to_str().unwrap(),
    ]));
    let plan: Value = serde_json::from_str(
        &std::fs::read_to_string(exported.join("mergesearch-plan.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(plan["method"], "ties", "{plan}");
    assert_eq!(plan["shared"]["normalize"], false, "{plan}");
    let labels = &space.models.as_ref().unwrap().labels;
    assert_eq!(
        plan["experts"][0]["weight"],
        trials[4].params[&format!("weight[{}]", labels[0])]
    );

    // Its coefficients seed CMA-ES in a space with the same parameter names.
    let out = mergesearch(&[
        "run",
        space_file,
        "--init-from",
        &format!("{run_dir}:4"),
        "--budget",
        "2",
        "--out",
        dir.join("seeded").to_str().unwrap(),
    ]);
    check(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "{} of {} parameters taken",
            labels.len(),
            labels.len()
        )),
        "{said}"
    );
    let out = mergesearch(&[
        "run",
        space_file,
        "--init-from",
        &format!("{run_dir}:99"),
        "--out",
        dir.join("bad").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no trial 99"));

    // Two optimizers, two seeds, the same budget: one table of medians and one of runs.
    let compared = dir.join("compare");
    let table = check(&mergesearch(&[
        "compare",
        space_file,
        "--optimizers",
        "random,sobol",
        "--seeds",
        "0,1",
        "--budget",
        "3",
        "--rescore-top",
        "2",
        "--out",
        compared.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read_to_string(compared.join("compare.md")).unwrap(),
        table
    );
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| random") || l.starts_with("| sobol"))
        .collect();
    assert_eq!(rows.len(), 2 + 4, "{table}");
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // A run's row has its seed after the optimizer; a median's row does not.
        let per_run = cells.len() == 14;
        assert!(per_run || cells.len() == 13, "{row}");
        let first = if per_run { 3 } else { 2 };
        let number =
            |k: usize| -> f64 { cells[first + k].parse().unwrap_or_else(|_| panic!("{row}")) };
        let (best, test, gap) = (number(0), number(1), number(2));
        let (rescored_test, rescored_gap) = (number(3), number(4));
        for accuracy in [best, test, rescored_test] {
            assert!((0.0..=1.0).contains(&accuracy), "{row}");
        }
        // Gaps are validation minus test; a median's gap is the median of the runs' gaps.
        assert!(gap.abs() < 1.0 && rescored_gap.abs() < 1.0, "{row}");
        if per_run {
            assert!((gap - (best - test)).abs() < 2e-4, "{row}");
        }
    }
    assert_eq!(
        read_journal(&compared.join("optimizer=sobol,seed=1"))
            .unwrap()
            .len(),
        3
    );
}
