//! One AdaMerging step and one zoo scoring, timed next to the same computations in PyTorch
//! (`benches/reference/adamerging_step.py`) in the same run.
//!
//! * **step**: layer-wise AdaMerging on the zoo (8 tasks x 16 unlabeled test images): merge,
//!   one batched forward pass, entropy loss, backward, the coefficients' gradient, Adam, and the
//!   step's record read back one step behind, as `mergesearch adamerge` runs it;
//! * **score**: a merged encoder scored on 100 test items of every task (what a trial of the
//!   default search costs) and on the whole test split, read back to the host.
//!
//! `cargo bench --bench zoo_step` (release; under `cargo test` it only runs a smoke check on a
//! tiny zoo). Environment:
//!
//! * `MERGESEARCH_BENCH_ZOO`: the zoo (default `results/zoo`, built with the default config when
//!   missing, a few minutes);
//! * `MERGESEARCH_BENCH_DEVICE`: `cpu` (default) or `cuda:N`;
//! * `MERGESEARCH_BENCH_REPS`: timed repetitions per round (default 20);
//! * `MERGESEARCH_BENCH_ROUNDS`: rounds (default 5); each round times mergesearch, then the
//!   reference, and the ratios printed are medians of the rounds' ratios, so that a shared
//!   machine's changing load weighs on both sides alike;
//! * `MERGESEARCH_BENCH_THREADS`: CPU threads for both (default: all cores);
//! * `MERGESEARCH_BENCH_TORCH`: a Python with torch (default `python3`); when it cannot import
//!   torch, the reference is skipped and no ratio printed;
//! * `MERGESEARCH_BENCH_DUMP`: a directory to write one step's and one scoring's inputs and
//!   results to, which the reference then recomputes (`--inputs`) to show both programs agree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Transaction;
use burn::tensor::backend::AutodiffBackend;
use indicatif::ProgressBar;
use mergesearch::adamerge::{Adam, DifferentiableMerge, EntropyObjective, sample_batch};
use mergesearch::checkpoint::Granularity;
use mergesearch::device::DeviceSpec;
use mergesearch::merge::Merger;
use mergesearch::zoo::build::{ZooConfig, build, model_set, write_model};
use mergesearch::zoo::evaluate::ZooScorer;
use mergesearch::zoo::model::{EncoderConfig, NamedTensor};
use mergesearch::zoo::tasks::Split;

#[global_allocator]
static GLOBAL: mergesearch::alloc::MiMalloc = mergesearch::alloc::MiMalloc;

const BATCH: usize = 16;
const ITEMS: usize = 100;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    1e3 * times[times.len() / 2].as_secs_f64()
}

fn main() {
    mergesearch::alloc::keep_freed_memory();
    let smoke = !std::env::args().any(|a| a == "--bench");
    let reps: usize = if smoke {
        2
    } else {
        env_or("MERGESEARCH_BENCH_REPS", 20)
    };
    let rounds: usize = if smoke {
        1
    } else {
        env_or("MERGESEARCH_BENCH_ROUNDS", 5)
    };
    let threads: Option<usize> = std::env::var("MERGESEARCH_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok());
    if let Some(n) = threads {
        // Before anything starts rayon's pool, which reads it once.
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
    let device_spec: DeviceSpec = env_or("MERGESEARCH_BENCH_DEVICE", DeviceSpec::Cpu);
    let zoo = if smoke {
        let dir =
            std::env::temp_dir().join(format!("mergesearch-bench-zoo-{}", std::process::id()));
        build(
            &dir,
            &ZooConfig::tiny(0, EncoderConfig::vit()),
            &ProgressBar::hidden(),
        )
        .expect("build a tiny zoo");
        dir
    } else {
        let dir = PathBuf::from(env_or("MERGESEARCH_BENCH_ZOO", "results/zoo".to_string()));
        let bar = ProgressBar::new(0);
        eprintln!("zoo {} (building it if missing)", dir.display());
        build(&dir, &ZooConfig::default(), &bar).expect("build the zoo");
        bar.finish_and_clear();
        dir
    };
    let device = device_spec.open().expect("bench device");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let fingerprint = mergesearch::with_backend!(device, |B, device| {
        let bench = Bench::<Autodiff<B>>::open(&zoo, &device);
        for round in 0..rounds {
            let measured = bench.measure(reps, round == 0);
            println!(
                "round {}: mergesearch, {device_spec}: {measured}",
                round + 1
            );
            ours.push(measured);
            if let Some(t) = reference(&zoo, device_spec, reps, threads, smoke) {
                println!(
                    "round {}: pytorch {}, {} threads, {}: AdaMerging step {:.2} ms, scoring {} items {:.2} ms",
                    round + 1,
                    t["torch"],
                    t["threads"],
                    t["device"],
                    t["step_ms"],
                    t["score_items"],
                    t["score_ms"]
                );
                if let Some(agreement) = t.get("agreement") {
                    println!("agreement on the dumped inputs: {agreement}");
                }
                theirs.push(t);
            }
        }
        // After the rounds, so that the first round's first step is the first use of every kernel.
        if let Ok(dir) = std::env::var("MERGESEARCH_BENCH_DUMP") {
            bench.dump(Path::new(&dir), &device);
        }
        bench.fingerprint()
    });
    if device_spec != DeviceSpec::Cpu {
        let cpu = Bench::<Autodiff<Flex>>::open(&zoo, &Default::default()).fingerprint();
        println!("agreement with the CPU: {}", fingerprint.difference(&cpu));
    }
    let middle = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ours_step = middle(ours.iter().map(|m| m.step_ms).collect());
    let ours_score = middle(ours.iter().map(|m| m.score_ms).collect());
    println!(
        "mergesearch (median of {rounds} rounds): AdaMerging step {ours_step:.2} ms, scoring {:.2} ms",
        ours_score
    );
    if theirs.is_empty() {
        println!("pytorch: not run (set MERGESEARCH_BENCH_TORCH to a Python with torch)");
    } else {
        let field = |t: &serde_json::Value, key: &str| t[key].as_f64().unwrap_or(f64::NAN);
        let ratios = |key: &str, measure: fn(&Measured) -> f64| {
            middle(ours_rounds(&ours, &theirs, key, measure, field))
        };
        println!(
            "pytorch (median of {rounds} rounds): AdaMerging step {:.2} ms, scoring {:.2} ms",
            middle(theirs.iter().map(|t| field(t, "step_ms")).collect()),
            middle(theirs.iter().map(|t| field(t, "score_ms")).collect())
        );
        println!(
            "ratio mergesearch / pytorch (median over rounds, lower is better): step {:.2}, scoring {:.2}",
            ratios("step_ms", |m| m.step_ms),
            ratios("score_ms", |m| m.score_ms)
        );
    }
    if smoke {
        let _ = std::fs::remove_dir_all(&zoo);
    }
}

/// Each round's ratio of our time to the reference's for one measure.
fn ours_rounds(
    ours: &[Measured],
    theirs: &[serde_json::Value],
    key: &str,
    measure: fn(&Measured) -> f64,
    field: impl Fn(&serde_json::Value, &str) -> f64,
) -> Vec<f64> {
    ours.iter()
        .zip(theirs)
        .map(|(m, t)| measure(m) / field(t, key))
        .collect()
}

/// What the Rust side measured in one round, milliseconds.
struct Measured {
    step_ms: f64,
    coefficients: usize,
    score_ms: f64,
    score_items: usize,
    /// The whole test split, measured in the first round only.
    split: Option<(f64, usize)>,
    /// The first round's first step and first scoring: the first use of every kernel (on a GPU,
    /// their compilation, and tuning where enabled).
    first: Option<(f64, f64)>,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AdaMerging step {:.2} ms ({} coefficients), scoring {} items {:.2} ms",
            self.step_ms, self.coefficients, self.score_items, self.score_ms
        )?;
        if let Some((ms, items)) = self.split {
            write!(f, ", whole test split ({items} items) {ms:.1} ms")?;
        }
        if let Some((step, score)) = self.first {
            write!(f, "; first use: step {step:.1} ms, scoring {score:.1} ms")?;
        }
        Ok(())
    }
}

/// One step's loss and gradient and one scoring's log-probabilities of the labels, at fixed
/// coefficients and items, on the host: what two devices must agree on.
struct Fingerprint {
    loss: f32,
    gradient: Vec<f32>,
    log_p_true: Vec<f32>,
}

impl Fingerprint {
    /// The largest absolute differences from `other`, as text.
    fn difference(&self, other: &Fingerprint) -> String {
        let worst = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        let largest = self.gradient.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        format!(
            "loss {} vs {} (difference {:.2e}), gradient max difference {:.2e} (largest entry {largest:.3}), log-probability max difference {:.2e}",
            self.loss,
            other.loss,
            (self.loss - other.loss).abs(),
            worst(&self.gradient, &other.gradient),
            worst(&self.log_p_true, &other.log_p_true)
        )
    }
}

/// Coefficients, a step's batch and a scoring's items, fixed.
struct FixedInputs<I: Backend> {
    x: Tensor<I, 2>,
    indices: Vec<Vec<usize>>,
    items: Vec<Vec<usize>>,
}

/// The zoo loaded for both measures.
struct Bench<B: AutodiffBackend> {
    scorer: ZooScorer<B>,
    reporter: ZooScorer<B::InnerBackend>,
    merge: DifferentiableMerge<B>,
    device: B::Device,
}

impl<B: AutodiffBackend> Bench<B> {
    fn open(zoo: &Path, device: &B::Device) -> Bench<B> {
        let scorer = ZooScorer::<B>::open(zoo, Split::Test, device).expect("open the zoo");
        let reporter = ZooScorer::open(zoo, Split::Test, device).expect("open the zoo");
        let manifest = scorer.zoo_manifest("the bench").expect("a zoo");
        let set = model_set(zoo, manifest).expect("zoo models");
        let granularity: Granularity = "layer".parse().expect("granularity");
        let merger = Merger::load(&set, &granularity, device, &ProgressBar::hidden())
            .expect("load the merger");
        Bench {
            merge: DifferentiableMerge::<B>::new(&merger, None),
            scorer,
            reporter,
            device: device.clone(),
        }
    }

    fn measure(&self, reps: usize, whole_split: bool) -> Measured {
        let device = &self.device;
        let shape = [self.merge.groups(), self.merge.experts()];
        let objective = EntropyObjective::new(&self.merge, &self.scorer, BATCH);
        // The step, as `adamerge` runs it: each step's record read back after the next is queued.
        let mut x = Tensor::<B, 2>::full(shape, 0.3, device).inner();
        let mut adam = Adam::new(shape, 1e-3, device);
        let mut pending = None;
        let mut step = |s: u64| {
            let indices = sample_batch(self.scorer.datasets(), BATCH, 0, s);
            let result = objective.gradient(&x, &indices).expect("step");
            let next = adam.step(x.clone(), result.coefficients, 0.0, 1.0);
            if let Some((x, per_task)) = pending.replace((x.clone(), result.entropies)) {
                black_box_read::<B::InnerBackend>(x, per_task);
            }
            x = next;
        };
        let warmup = 3;
        let cold = Instant::now();
        step(0);
        let first_step = 1e3 * cold.elapsed().as_secs_f64();
        for s in 1..warmup {
            step(s);
        }
        let step_ms = median(
            (0..reps)
                .map(|r| {
                    let t = Instant::now();
                    step(warmup + r as u64);
                    t.elapsed()
                })
                .collect(),
        );
        let fixed = self.merge.merged(&x, &x);
        let items = self.items(ITEMS);
        let cold = Instant::now();
        self.reporter
            .score_items(fixed.clone(), &items)
            .expect("score");
        let first_score = 1e3 * cold.elapsed().as_secs_f64();
        let score = |items: &[Vec<usize>], reps: usize| {
            self.reporter
                .score_items(fixed.clone(), items)
                .expect("score");
            median(
                (0..reps)
                    .map(|_| {
                        let t = Instant::now();
                        self.reporter
                            .score_items(fixed.clone(), items)
                            .expect("score");
                        t.elapsed()
                    })
                    .collect(),
            )
        };
        let split = whole_split.then(|| {
            let all = self.items(usize::MAX);
            (score(&all, 3), all.iter().map(Vec::len).sum())
        });
        Measured {
            step_ms,
            coefficients: shape[0] * shape[1],
            score_ms: score(&items, reps),
            score_items: items.iter().map(Vec::len).sum(),
            split,
            first: whole_split.then_some((first_step, first_score)),
        }
    }

    /// The first `n` test items of every task.
    fn items(&self, n: usize) -> Vec<Vec<usize>> {
        self.scorer
            .datasets()
            .iter()
            .map(|d| (0..n.min(d.len())).collect())
            .collect()
    }

    /// Fixed coefficients (varied between 0.1 and 0.6), a fixed step batch and the scoring items.
    fn fixed_inputs(&self) -> FixedInputs<B::InnerBackend> {
        let shape = [self.merge.groups(), self.merge.experts()];
        let n = shape[0] * shape[1];
        let values: Vec<f32> = (0..n)
            .map(|i| 0.1 + 0.5 * ((i * 37) % 11) as f32 / 10.0)
            .collect();
        let x = Tensor::from_data(TensorData::new(values, shape), &self.device);
        let indices = sample_batch(self.reporter.datasets(), BATCH, 7, 0);
        FixedInputs {
            x,
            indices,
            items: self.items(ITEMS),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        let FixedInputs { x, indices, items } = self.fixed_inputs();
        let objective = EntropyObjective::new(&self.merge, &self.scorer, BATCH);
        let gradient = objective.gradient(&x, &indices).expect("step").coefficients;
        let loss = objective.loss(&x, &x, &indices).expect("loss");
        let scored = self
            .reporter
            .score_items(self.merge.merged(&x, &x), &items)
            .expect("score");
        Fingerprint {
            loss: loss.into_scalar().elem(),
            gradient: gradient.into_data().iter::<f32>().collect(),
            log_p_true: scored.iter().flat_map(|s| s.log_p_true.clone()).collect(),
        }
    }

    /// Writes the fixed coefficients, the step's images with the loss and gradient there, and
    /// the scoring's images and labels with each item's log-probability of its label and
    /// correctness, for the reference's `--inputs` check.
    fn dump(&self, dir: &Path, device: &B::Device) {
        let FixedInputs { x, indices, items } = self.fixed_inputs();
        let found = self.fingerprint();
        let shape = x.dims();
        let (step_images, _, _) = self.reporter.rows(&indices);
        let (score_images, labels, _) = self.reporter.rows(&items);
        let offsets = self.reporter.task_heads().offsets().to_vec();
        let local: Vec<f32> = labels
            .into_data()
            .iter::<i64>()
            .zip(
                items
                    .iter()
                    .enumerate()
                    .flat_map(|(t, l)| l.iter().map(move |_| t)),
            )
            .map(|(l, t)| (l as usize - offsets[t]) as f32)
            .collect();
        let correct: Vec<f32> = self
            .reporter
            .score_items(self.merge.merged(&x, &x), &items)
            .expect("score")
            .iter()
            .flat_map(|s| s.correct.iter().map(|&c| f32::from(u8::from(c))))
            .collect();
        let flat = |v: Vec<f32>| {
            let n = v.len();
            (
                vec![n],
                Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(v, [n]), device),
            )
        };
        let rows = |t: Tensor<B::InnerBackend, 2>| (t.dims().to_vec(), t.flatten::<1>(0, 1));
        let parts = [
            ("coefficients", rows(x)),
            ("gradient", (shape.to_vec(), flat(found.gradient).1)),
            ("loss", flat(vec![found.loss])),
            ("step_images", rows(step_images)),
            ("score_images", rows(score_images)),
            ("score_labels", flat(local)),
            ("log_p_true", flat(found.log_p_true)),
            ("correct", flat(correct)),
        ];
        let tensors: Vec<NamedTensor<B::InnerBackend>> = parts
            .into_iter()
            .map(|(name, (shape, t))| (name.to_string(), shape, t))
            .collect();
        write_model(dir, tensors).expect("write the dump");
        eprintln!("inputs and results written to {}", dir.display());
    }
}

/// Reads a step's record back, as the AdaMerging loop does.
fn black_box_read<I: Backend>(x: Tensor<I, 2>, per_task: Tensor<I, 1>) {
    std::hint::black_box(
        Transaction::default()
            .register(x)
            .register(per_task)
            .execute(),
    );
}

/// Runs the PyTorch reference; its JSON result, or `None` when it cannot run.
fn reference(
    zoo: &Path,
    device: DeviceSpec,
    reps: usize,
    threads: Option<usize>,
    smoke: bool,
) -> Option<serde_json::Value> {
    let python = std::env::var("MERGESEARCH_BENCH_TORCH").unwrap_or_else(|_| "python3".into());
    let has_torch = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch || smoke {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference/adamerging_step.py");
    let device = match device {
        DeviceSpec::Cpu => "cpu".to_string(),
        DeviceSpec::Cuda(i) => format!("cuda:{i}"),
    };
    let mut command = Command::new(&python);
    command
        .arg(script)
        .args([
            "--zoo",
            &zoo.display().to_string(),
            "--device",
            &device,
            "--json",
        ])
        .args(["--reps", &reps.to_string(), "--batch", &BATCH.to_string()])
        .args(["--items", &ITEMS.to_string()]);
    if let Some(n) = threads {
        command.args(["--threads", &n.to_string()]);
    }
    if let Ok(dir) = std::env::var("MERGESEARCH_BENCH_DUMP") {
        command.args(["--inputs", &format!("{dir}/model.safetensors")]);
    }
    let out = command.output().ok()?;
    if !out.status.success() {
        eprintln!(
            "the reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last()?).ok()
}
