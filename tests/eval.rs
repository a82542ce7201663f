//! Evaluators: the zoo evaluator against hand-computed scores, subsets, and the external
//! evaluators' protocol and failure cases (each a failed trial with its reason; the run goes on).

use std::path::Path;

use burn::backend::Flex;
use burn::prelude::*;
use indicatif::ProgressBar;
use mergesearch::checkpoint::{Dtype, Granularity, Model, ModelSet};
use mergesearch::eval::{
    CandidateWriter, EvalConfigError, EvalContext, Evaluator, EvaluatorConfig, Handoff, Outcome,
    Placement, Strategy, Subset, SubsetSpec, Trial, build_all,
};
use mergesearch::fixtures::{SyntheticSpec, write_synthetic_model};
use mergesearch::merge::{Candidate, MergePlan, Merger, Method, ParamValue};
use mergesearch::rng::Rng;
use mergesearch::zoo::build::{ZooConfig, build};
use mergesearch::zoo::model::EncoderConfig;
use mergesearch::zoo::tasks::Split;
use serde_json::json;

use crate::common::TempDir;

type B = Flex;

/// A zoo small enough to build in seconds in a debug build.
pub fn tiny_zoo(dir: &Path) {
    build(
        dir,
        &ZooConfig::tiny(11, EncoderConfig::mlp()),
        &ProgressBar::hidden(),
    )
    .unwrap();
}

fn parse(toml_text: &str) -> Result<EvaluatorConfig, String> {
    toml::from_str(toml_text).map_err(|e| e.to_string())
}

fn evaluate(evaluator: &mut dyn Evaluator<B>, params: serde_json::Value, id: u64) -> Outcome {
    evaluate_with(evaluator, params, id, None, None)
}

fn evaluate_with(
    evaluator: &mut dyn Evaluator<B>,
    params: serde_json::Value,
    id: u64,
    candidate: Option<&Candidate<B>>,
    model: Option<&Handoff<'_, B>>,
) -> Outcome {
    let params = params.as_object().unwrap().clone();
    evaluator.evaluate(&Trial {
        id,
        seed: 100 + id,
        params: &params,
        candidate,
        model,
        items: None,
    })
}

fn build_one(toml_text: &str, context: &EvalContext) -> Box<dyn Evaluator<B>> {
    let config = parse(toml_text).unwrap();
    config.build::<B>(context, &Default::default()).unwrap()
}

/// A `command` table running `python3 -c SCRIPT {params_json}` for the objective `loss`.
fn python_command(script: &str, extra: &str) -> String {
    format!(
        "kind = \"command\"\nargv = [\"python3\", \"-c\", {}, \"{{params_json}}\"]\nobjectives = {{ loss = \"minimize\" }}\n{extra}",
        serde_json::to_string(script).unwrap()
    )
}

const SPHERE: &str = "import json, sys\n\
p = json.loads(sys.argv[1])\n\
print('warming up')\n\
print(json.dumps({'scores': {'loss': sum(v * v for v in p.values())}, 'stderr': {'loss': 0.5}}))";

#[test]
fn zoo_scores_match_a_hand_computed_case() {
    // An all-zero encoder outputs zeros after its final layer norm, so every task's logits are
    // its head's bias: prediction, cross-entropy and entropy follow by hand from the bias and
    // the labels.
    let tmp = TempDir::new("eval", "zoo_hand");
    let zoo = tmp.join("zoo");
    tiny_zoo(&zoo);
    let device = Default::default();
    let base = Model::open(&zoo.join("base")).unwrap();
    let candidate = Candidate::<B> {
        tensors: base
            .tensors()
            .iter()
            .map(|t| {
                let n: usize = t.info.shape.iter().product();
                (
                    t.info.name.clone(),
                    t.info.shape.clone(),
                    Tensor::zeros([n], &device),
                )
            })
            .collect(),
    };
    let heads = Model::open(&zoo.join("heads")).unwrap();
    let context = EvalContext::without_models(0);
    for subset in [
        "",
        "subset = { size = 20, seed = 3, strategy = \"stratified\" }",
    ] {
        let table = format!(
            "kind = \"zoo\"\nzoo = {:?}\nsplit = \"test\"\nmetrics = [\"accuracy\", \"cross_entropy\", \"entropy\"]\n{subset}",
            zoo.display().to_string()
        );
        let mut evaluator = build_one(&table, &context);
        let scores = evaluate_with(evaluator.as_mut(), json!({}), 0, Some(&candidate), None)
            .unwrap()
            .scores;
        let mut mean_accuracy = 0.0;
        for task in mergesearch::zoo::tasks::Task::ALL {
            let data = mergesearch::zoo::tasks::generate(task, Split::Test, 60, 11);
            let subset = if subset.is_empty() {
                Subset::all(data.len())
            } else {
                let spec = SubsetSpec {
                    size: 20,
                    seed: 3,
                    strategy: Strategy::Stratified,
                };
                Subset::draw(&spec, task.name(), &data.labels, Vec::new)
            };
            let bias: Vec<f64> = heads
                .read_f32(&format!("heads.{}.bias", task.name()))
                .unwrap()
                .iter()
                .map(|&b| f64::from(b))
                .collect();
            let lse = bias.iter().map(|b| b.exp()).sum::<f64>().ln();
            let argmax = (0..bias.len())
                .max_by(|&a, &b| bias[a].total_cmp(&bias[b]))
                .unwrap();
            let entropy: f64 = bias.iter().map(|b| -(b - lse).exp() * (b - lse)).sum();
            let (mut accuracy, mut cross_entropy) = (0.0, 0.0);
            for (&i, &w) in subset.items.iter().zip(&subset.weights) {
                let label = data.labels[i] as usize;
                accuracy += w * f64::from(u8::from(label == argmax));
                cross_entropy += w * (lse - bias[label]);
            }
            let got = |metric: &str| scores[&format!("{}/{metric}", task.name())];
            assert!(
                (got("accuracy").value - accuracy).abs() < 1e-9,
                "{task}: accuracy"
            );
            assert!(
                (got("cross_entropy").value - cross_entropy).abs() < 1e-4,
                "{task}: cross-entropy"
            );
            assert!(
                (got("entropy").value - entropy).abs() < 1e-4,
                "{task}: entropy"
            );
            if subset.len() == 60 {
                let expected = (accuracy * (1.0 - accuracy) / 59.0).sqrt();
                assert!((got("accuracy").stderr.unwrap() - expected).abs() < 1e-9);
            }
            mean_accuracy += accuracy / 8.0;
        }
        assert!((scores["mean/accuracy"].value - mean_accuracy).abs() < 1e-9);
    }
}

#[test]
fn zoo_evaluator_rejects_unknown_tasks_and_empty_metrics() {
    let tmp = TempDir::new("eval", "zoo_config");
    let zoo = tmp.join("zoo");
    tiny_zoo(&zoo);
    let context = EvalContext::without_models(0);
    let zoo_key = format!("zoo = {:?}", zoo.display().to_string());
    let error = |table: String| {
        parse(&table)
            .unwrap()
            .build::<B>(&context, &Default::default())
            .err()
            .unwrap()
            .to_string()
    };
    let e = error(format!(
        "kind = \"zoo\"\n{zoo_key}\ntasks = [\"digits\", \"letters\"]"
    ));
    assert!(e.contains("`tasks` names \"letters\""), "{e}");
    let e = error(format!("kind = \"zoo\"\n{zoo_key}\nmetrics = []"));
    assert!(e.contains("`metrics` is empty"), "{e}");
    let e = parse(&format!("kind = \"zoo\"\n{zoo_key}\nsplitt = \"test\"")).unwrap_err();
    assert!(e.contains("unknown field `splitt`"), "{e}");
    let e = parse(&format!(
        "kind = \"zoo\"\n{zoo_key}\nsubset = {{ size = 5, strategy = \"clever\" }}"
    ))
    .unwrap_err();
    assert!(e.contains("unknown variant `clever`"), "{e}");
}

#[test]
fn stratified_subsets_balance_classes_and_follow_their_seed() {
    let labels: Vec<u32> = (0..1000).map(|i| (i * 7 % 10) as u32).collect();
    for size in [10, 25, 95, 999, 1000, 5000] {
        let spec = SubsetSpec {
            size,
            seed: 1,
            strategy: Strategy::Stratified,
        };
        let subset = Subset::draw(&spec, "digits", &labels, Vec::new);
        assert_eq!(subset.len(), size.min(1000));
        let mut per_class = [0usize; 10];
        for &i in &subset.items {
            per_class[labels[i] as usize] += 1;
        }
        let (lo, hi) = (
            per_class.iter().min().unwrap(),
            per_class.iter().max().unwrap(),
        );
        assert!(hi - lo <= 1, "size {size}: {per_class:?}");
        assert!(
            subset.items.windows(2).all(|w| w[0] < w[1]),
            "sorted and distinct"
        );
        assert!((subset.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(
            subset,
            Subset::draw(&spec, "digits", &labels, Vec::new),
            "same seed, same subset"
        );
        if size < 1000 {
            let other = SubsetSpec { seed: 2, ..spec };
            assert_ne!(
                subset,
                Subset::draw(&other, "digits", &labels, Vec::new),
                "size {size}"
            );
            assert_ne!(
                subset,
                Subset::draw(&spec, "shapes", &labels, Vec::new),
                "tasks draw apart"
            );
        }
    }
    // Unbalanced classes: each class keeps its share of the split through the weights.
    let labels: Vec<u32> = (0..100).map(|i| u32::from(i >= 90)).collect();
    let spec = SubsetSpec {
        size: 10,
        seed: 0,
        strategy: Strategy::Stratified,
    };
    let subset = Subset::draw(&spec, "t", &labels, Vec::new);
    let minority: f64 = subset
        .items
        .iter()
        .zip(&subset.weights)
        .filter(|(i, _)| labels[**i] == 1)
        .map(|(_, w)| w)
        .sum();
    assert!((minority - 0.1).abs() < 1e-9, "{minority}");
}

#[test]
fn random_subsets_are_uniform_over_seeds() {
    let labels = vec![0u32; 50];
    let mut hits = [0usize; 50];
    for seed in 0..400 {
        let spec = SubsetSpec {
            size: 10,
            seed,
            strategy: Strategy::Random,
        };
        let subset = Subset::draw(&spec, "t", &labels, Vec::new);
        assert_eq!(subset.len(), 10);
        assert!(subset.items.windows(2).all(|w| w[0] < w[1]));
        for &i in &subset.items {
            hits[i] += 1;
        }
    }
    // Each item is drawn with probability 1/5: 80 of 400 draws expected, sd about 8.
    assert!(hits.iter().all(|&h| (45..=115).contains(&h)), "{hits:?}");
}

#[test]
fn anchors_stand_for_clusters_of_items_answered_alike() {
    // Five groups of items that a panel answers alike, each group with its own score; anchors
    // find one item per group, weighted by the group's size, so their estimate is exact, while
    // random subsets of the same size miss on most seeds.
    let sizes = [40usize, 25, 20, 10, 5];
    let mut features = Vec::new();
    let mut values = Vec::new();
    for (g, &n) in sizes.iter().enumerate() {
        for j in 0..n {
            features.push(vec![g as f32, (g * g) as f32 * 0.5, j as f32 * 1e-3]);
            values.push(g as f64 / 4.0);
        }
    }
    let truth: f64 = values.iter().sum::<f64>() / values.len() as f64;
    let mut exact = 0;
    let mut random_exact = 0;
    for seed in 0..20 {
        let anchors = Subset::anchors(&features, 5, &mut Rng::new(seed));
        assert!(anchors.len() <= 5);
        assert!((anchors.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let picked: Vec<f64> = anchors.items.iter().map(|&i| values[i]).collect();
        exact += usize::from((anchors.estimate(&picked).0 - truth).abs() < 1e-9);
        let random = Subset::random(values.len(), 5, &mut Rng::new(seed));
        let picked: Vec<f64> = random.items.iter().map(|&i| values[i]).collect();
        random_exact += usize::from((random.estimate(&picked).0 - truth).abs() < 1e-9);
    }
    assert!(exact >= 18, "anchors exact on {exact}/20 seeds");
    assert!(random_exact <= 4, "random exact on {random_exact}/20 seeds");
}

#[test]
fn a_command_evaluator_passes_params_and_reads_scores_and_stderr() {
    let context = EvalContext::without_models(0);
    let mut evaluator = build_one(&python_command(SPHERE, ""), &context);
    let outcome = evaluate(evaluator.as_mut(), json!({"x": 0.5, "y": -2.0}), 0).unwrap();
    assert_eq!(outcome.scores["loss"].value, 4.25);
    assert_eq!(outcome.scores["loss"].stderr, Some(0.5));
    assert_eq!(outcome.cost.attempts, 1);
    assert!(outcome.cost.seconds > 0.0);
    assert_eq!(evaluator.objectives()[0].name, "loss");
}

#[test]
fn each_external_failure_is_a_failed_trial_with_its_reason_and_the_run_goes_on() {
    let context = EvalContext::without_models(0);
    let cases = [
        (
            "import time; time.sleep(30)",
            "timed out after 0.5s and was killed",
        ),
        (
            "import sys; sys.stderr.write('boom: bad weights\\n'); sys.exit(3)",
            "exited with status 3; stderr: boom: bad weights",
        ),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            "killed by signal 9",
        ),
        (
            "print('hello'); print('{not json')",
            "printed no JSON object on stdout (stdout: \"hello\\n{not json\")",
        ),
        (
            "print('{\"scores\": {\"accuracy\": 1}}')",
            "objective \"loss\" is missing from the scores (found [\"accuracy\"])",
        ),
        (
            "import json; print(json.dumps({'scores': {'loss': float('nan')}}))",
            "objective \"loss\" is not a finite number",
        ),
        (
            "print('{\"error\": \"CUDA out of memory\"}')",
            "the evaluator reported an error: CUDA out of memory",
        ),
        ("print('[1, 2]')", "printed no JSON object"),
    ];
    for (script, expected) in cases {
        let timeout = if script.contains("sleep") { 0.5 } else { 20.0 };
        let mut failing = build_one(
            &python_command(script, &format!("timeout_s = {timeout}")),
            &context,
        );
        let failure = evaluate(failing.as_mut(), json!({"x": 1.0}), 1).unwrap_err();
        assert!(
            failure.reason.contains(expected),
            "{script}: {}",
            failure.reason
        );
        assert!(
            failure.reason.starts_with("python3: "),
            "names the evaluator: {}",
            failure.reason
        );
        assert_eq!(failure.cost.attempts, 1);
        // The next trial runs as usual.
        let mut good = build_one(&python_command(SPHERE, ""), &context);
        assert_eq!(
            evaluate(good.as_mut(), json!({"x": 3.0}), 2)
                .unwrap()
                .scores["loss"]
                .value,
            9.0
        );
    }
}

#[test]
fn retries_repeat_a_failed_attempt_and_report_the_last_reason() {
    let tmp = TempDir::new("eval", "retries");
    let counter = tmp.join("attempts");
    let script = "import os, sys\n\
f = sys.argv[2]\n\
n = int(open(f).read()) if os.path.exists(f) else 0\n\
open(f, 'w').write(str(n + 1))\n\
if n < 2:\n    sys.exit(10 + n)\n\
print('{\"scores\": {\"loss\": 1.5}}')";
    let table = |retries: u32| {
        format!(
            "kind = \"command\"\nname = \"flaky\"\nargv = [\"python3\", \"-c\", {}, \"{{params_json}}\", {:?}]\nobjectives = {{ loss = \"minimize\" }}\nretries = {retries}",
            serde_json::to_string(script).unwrap(),
            counter.display().to_string()
        )
    };
    let context = EvalContext::without_models(0);
    let failure = evaluate(build_one(&table(1), &context).as_mut(), json!({}), 0).unwrap_err();
    assert_eq!(failure.cost.attempts, 2);
    assert_eq!(
        failure.reason,
        "flaky: exited with status 11 (all 2 attempts failed)"
    );
    let success = evaluate(build_one(&table(1), &context).as_mut(), json!({}), 1).unwrap();
    assert_eq!(
        (success.cost.attempts, success.scores["loss"].value),
        (1, 1.5)
    );
    std::fs::remove_file(&counter).unwrap();
    let success = evaluate(build_one(&table(2), &context).as_mut(), json!({}), 2).unwrap();
    assert_eq!(success.cost.attempts, 3);
}

#[test]
fn a_worker_serves_many_trials_from_one_process_and_is_restarted_after_a_crash() {
    let script = r#"
import json, os, sys, time
print('loading heavy libraries', flush=True)
for line in sys.stdin:
    req = json.loads(line)
    p = req['params']
    if p.get('crash'):
        sys.stderr.write('segfault-ish\n')
        sys.exit(5)
    if p.get('hang'):
        time.sleep(30)
    print('log: trial', req['trial_id'], flush=True)
    reply = {'scores': {'loss': p['x'] ** 2, 'pid': os.getpid(), 'seed': req['seed']}}
    print(json.dumps(reply), flush=True)
"#;
    let table = format!(
        "kind = \"worker\"\nname = \"w\"\nargv = [\"python3\", \"-c\", {}, \"--seed\", \"{{seed}}\"]\nobjectives = {{ loss = \"minimize\" }}\ntimeout_s = 1",
        serde_json::to_string(script).unwrap()
    );
    let context = EvalContext::without_models(0);
    let mut worker = build_one(&table, &context);
    let first = evaluate(worker.as_mut(), json!({"x": 2.0}), 0)
        .unwrap()
        .scores;
    let second = evaluate(worker.as_mut(), json!({"x": 3.0}), 1)
        .unwrap()
        .scores;
    assert_eq!((first["loss"].value, second["loss"].value), (4.0, 9.0));
    assert_eq!(first["pid"], second["pid"], "one process for both trials");
    assert_eq!(second["seed"].value, 101.0, "the trial's seed is sent");
    let crash = evaluate(worker.as_mut(), json!({"crash": true}), 2).unwrap_err();
    assert!(crash.reason.contains("the worker closed its stdout before replying and exited with status 5; stderr: segfault-ish"), "{}", crash.reason);
    let third = evaluate(worker.as_mut(), json!({"x": 1.0}), 3)
        .unwrap()
        .scores;
    assert_ne!(third["pid"], first["pid"], "restarted after the crash");
    let hang = evaluate(worker.as_mut(), json!({"hang": true}), 4).unwrap_err();
    assert!(
        hang.reason
            .contains("did not reply within 1s and was killed"),
        "{}",
        hang.reason
    );
    let fourth = evaluate(worker.as_mut(), json!({"x": 0.5}), 5)
        .unwrap()
        .scores;
    assert_eq!(fourth["loss"].value, 0.25);
}

#[test]
fn a_command_gets_the_candidate_as_a_model_directory_that_is_removed_afterwards() {
    let tmp = TempDir::new("eval", "model_dir");
    let spec = SyntheticSpec {
        layers: 2,
        hidden: 8,
        intermediate: 16,
        vocab: 16,
        dtype: Dtype::BF16,
    };
    let paths: Vec<_> = (0..3).map(|i| tmp.join(&format!("m{i}"))).collect();
    write_synthetic_model(&paths[0], &spec, 1, None, 1 << 30).unwrap();
    for (i, path) in paths[1..].iter().enumerate() {
        write_synthetic_model(path, &spec, 1, Some(i), 1 << 30).unwrap();
    }
    let set = ModelSet::open(&paths[0], &paths[1..]).unwrap();
    let device = Default::default();
    let merger = Merger::<B>::load(
        &set,
        &Granularity::default(),
        &device,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let mut plan = MergePlan::new(Method::TaskArithmetic, 2, 0);
    for expert in &mut plan.experts {
        expert.insert("weight".into(), ParamValue::Number(0.5));
    }
    let candidate = merger.materialize(&plan).unwrap();
    let scratch = tmp.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let context = EvalContext {
        base: Some(paths[0].clone()),
        placement: Placement::default(),
        seed: 0,
        progress: ProgressBar::hidden(),
    };
    let writer = CandidateWriter::new(&paths[0], &scratch).unwrap();
    // The program reads the safetensors header and the copied config.
    let script = "import json, os, struct, sys\n\
d = sys.argv[1]\n\
raw = open(os.path.join(d, 'model.safetensors'), 'rb').read()\n\
n = struct.unpack('<Q', raw[:8])[0]\n\
header = json.loads(raw[8:8 + n])\n\
tensors = {k: v for k, v in header.items() if k != '__metadata__'}\n\
config = json.load(open(os.path.join(d, 'config.json')))\n\
bf16 = all(v['dtype'] == 'BF16' for v in tensors.values())\n\
print(json.dumps({'scores': {'tensors': len(tensors), 'bf16': int(bf16), 'layers': config['num_hidden_layers']}}))";
    let table = format!(
        "kind = \"command\"\nargv = [\"python3\", \"-c\", {}, \"{{model_dir}}\"]\nobjectives = {{ tensors = \"maximize\" }}",
        serde_json::to_string(script).unwrap()
    );
    let mut evaluator = build_one(&table, &context);
    let handoff = Handoff::new(&writer, &candidate, "trial-7".into());
    let scores = evaluate_with(evaluator.as_mut(), json!({}), 7, None, Some(&handoff))
        .unwrap()
        .scores;
    drop(handoff);
    assert_eq!(scores["tensors"].value as usize, spec.tensors().len());
    assert_eq!(scores["bf16"].value, 1.0, "written in the base's dtype");
    assert_eq!(
        scores["layers"].value, 2.0,
        "the base's config.json is copied"
    );
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "the candidate is removed"
    );
    // Without a candidate, the trial fails instead of the run.
    let failure = evaluate(evaluator.as_mut(), json!({}), 8).unwrap_err();
    assert!(
        failure.reason.contains("the trial has none"),
        "{}",
        failure.reason
    );
}

#[test]
fn bad_external_tables_fail_at_load_naming_the_key() {
    let context = EvalContext::without_models(0);
    let error = |table: &str| -> String {
        match parse(table) {
            Err(e) => e,
            Ok(config) => build_all::<B>(&[config], &context, &Default::default())
                .err()
                .map(|e: EvalConfigError| e.to_string())
                .unwrap_or_default(),
        }
    };
    let objectives = "objectives = { loss = \"minimize\" }";
    let cases = [
        (
            format!("kind = \"command\"\nargv = [\"run\", \"{{modeldir}}\"]\n{objectives}"),
            "`argv[1]` unknown placeholder {modeldir}",
        ),
        (
            format!("kind = \"worker\"\nargv = [\"run\", \"{{trial_id}}\"]\n{objectives}"),
            "this kind takes only [\"seed\", \"worker\", \"gpu\"]",
        ),
        (
            format!("kind = \"command\"\nargv = []\n{objectives}"),
            "`argv` is empty",
        ),
        (
            "kind = \"command\"\nargv = [\"run\"]\nobjectives = {}".to_string(),
            "`objectives` declares no objective",
        ),
        (
            format!("kind = \"command\"\nargv = [\"run\", \"{{model_dir}}\"]\n{objectives}"),
            "`argv` asks for the merged model but the search space has no models",
        ),
        (
            format!("kind = \"command\"\nargv = [\"run\"]\n{objectives}\ntimeout_s = 0"),
            "`timeout_s` must be a positive number",
        ),
        (
            format!("kind = \"command\"\nargv = [\"run\"]\n{objectives}\nretry = 2"),
            "unknown field `retry`",
        ),
        (
            format!("kind = \"commmand\"\nargv = [\"run\"]\n{objectives}"),
            "unknown variant `commmand`",
        ),
        (
            "kind = \"command\"\nargv = [\"run\"]\nobjectives = { loss = \"lower\" }".to_string(),
            "unknown variant `lower`",
        ),
    ];
    for (table, expected) in cases {
        let e = error(&table);
        assert!(e.contains(expected), "{table}\n=> {e}");
    }
    let one = parse(&format!(
        "kind = \"command\"\nname = \"a\"\nargv = [\"run\"]\n{objectives}"
    ))
    .unwrap();
    let two = parse(&format!(
        "kind = \"command\"\nname = \"b\"\nargv = [\"run\"]\n{objectives}"
    ))
    .unwrap();
    let e = build_all::<B>(&[one, two], &context, &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("evaluator \"b\": `objectives` repeats \"loss\""),
        "{e}"
    );
}

#[test]
fn the_shipped_example_evaluator_answers_in_both_modes_alike() {
    let context = EvalContext::without_models(0);
    let objectives = "objectives = { loss = \"minimize\", score = \"maximize\" }";
    let mut command = build_one(
        &format!(
            "kind = \"command\"\nargv = [\"python3\", \"evaluators/example.py\", \"--params\", \"{{params_json}}\", \"--seed\", \"{{seed}}\"]\n{objectives}"
        ),
        &context,
    );
    let mut worker = build_one(
        &format!(
            "kind = \"worker\"\nargv = [\"python3\", \"evaluators/example.py\", \"--worker\"]\n{objectives}"
        ),
        &context,
    );
    for (id, params) in [json!({"x0": 0.2, "x1": 0.9}), json!({"x0": 0.7, "x1": 0.7})]
        .into_iter()
        .enumerate()
    {
        let by_command = evaluate(command.as_mut(), params.clone(), id as u64)
            .unwrap()
            .scores;
        let by_worker = evaluate(worker.as_mut(), params, id as u64).unwrap().scores;
        assert_eq!(by_command, by_worker);
    }
    let at_optimum = evaluate(command.as_mut(), json!({"x0": 0.7, "x1": 0.7}), 9)
        .unwrap()
        .scores;
    assert_eq!(at_optimum["loss"].value, 0.0);
    let failure = evaluate(command.as_mut(), json!({"x0": [1]}), 10).unwrap_err();
    assert!(
        failure
            .reason
            .contains("exited with status 1 (the evaluator reported an error:"),
        "{}",
        failure.reason
    );
}
