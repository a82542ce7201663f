//! Building the zoo: pretrain the base on the broad pretraining task, fine-tune one expert per
//! task from it (LP-FT: a new head is first fitted on the frozen base, then the encoder is
//! fine-tuned under it), and save everything as safetensors with a `zoo.json` manifest.
//! Deterministic for a seed; cached: a zoo whose manifest records the same config is
//! reused as it is.
//!
//! Layout of a zoo directory:
//!
//! ```text
//! zoo.json                      manifest: config, tasks, classes, heads, splits, metrics
//! base/model.safetensors        the pretrained encoder
//! experts/<task>/model.safetensors   each expert's encoder
//! heads/model.safetensors       every task's head (`heads.<task>.weight|bias`), from its expert
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use indicatif::ProgressBar;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::evaluate::score_task;
use super::model::{Classifier, EncoderConfig, Head, NamedTensor};
use super::tasks::{Dataset, Split, Task, generate, pretrain_dataset};
use super::train::{TrainConfig, inference, train};
use crate::checkpoint::{
    CheckpointError, DEFAULT_MAX_SHARD_BYTES, Dtype, ModelSet, ModelWriter, TensorSpec,
};
use crate::merge::host_values;
use crate::rng::{Rng, derive_seed};

/// Where each task's classification head comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadSource {
    /// The task's rows of the pretraining head (whose joint label space holds every task's
    /// classes): a head the task never trained, as CLIP's zero-shot text heads are.
    ZeroShot,
    /// A new head fitted on the frozen base for `probe_steps` (linear probing; LP-FT).
    Probe,
}

/// Everything that determines a zoo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZooConfig {
    /// Seed of data, initialization and batch order.
    pub seed: u64,
    /// The encoder architecture.
    pub encoder: EncoderConfig,
    /// Pretraining examples (drawn from all eight generators, labelled in the joint label space of
    /// all tasks).
    pub pretrain_examples: usize,
    /// Pretraining steps.
    pub pretrain_steps: usize,
    /// Pretraining learning rate.
    pub pretrain_lr: f64,
    /// Per task (in [`Task::ALL`] order), the fraction of its pretraining images whose label is
    /// replaced by a class of the same task drawn uniformly: how little the base (and so its
    /// zero-shot head) learns of each task, as CLIP's pretraining covers some domains poorly.
    /// Missing entries are 0.
    pub pretrain_label_noise: Vec<f64>,
    /// Training examples per task.
    pub train_examples: usize,
    /// Validation and test examples per task (each).
    pub eval_examples: usize,
    /// Where each task's head comes from.
    pub heads: HeadSource,
    /// Linear-probing steps per expert before fine-tuning (LP-FT, with [`HeadSource::Probe`]):
    /// the new head alone is fitted on the frozen base.
    pub probe_steps: usize,
    /// Linear-probing learning rate.
    pub probe_lr: f64,
    /// Whether fine-tuning keeps the probed head fixed and moves only the encoder (as the CLIP
    /// benchmark's experts keep their zero-shot heads).
    pub freeze_head: bool,
    /// Fine-tuning steps per expert.
    pub finetune_steps: usize,
    /// Fine-tuning learning rate.
    pub finetune_lr: f64,
    /// Examples per step.
    pub batch: usize,
}

impl Default for ZooConfig {
    fn default() -> Self {
        ZooConfig {
            seed: 0,
            encoder: EncoderConfig::vit(),
            pretrain_examples: 8000,
            pretrain_steps: 400,
            pretrain_lr: 1e-3,
            pretrain_label_noise: Vec::new(),
            train_examples: 4000,
            heads: HeadSource::Probe,
            eval_examples: 1000,
            probe_steps: 60,
            probe_lr: 1e-2,
            freeze_head: true,
            finetune_steps: 180,
            finetune_lr: 5e-4,
            batch: 32,
        }
    }
}

impl ZooConfig {
    /// Linear-probing steps per expert: `probe_steps` when heads are probed, else none.
    pub fn probing_steps(&self) -> usize {
        match self.heads {
            HeadSource::ZeroShot => 0,
            HeadSource::Probe => self.probe_steps,
        }
    }

    /// A zoo built in seconds, for tests and smoke runs: a few training steps on little data,
    /// so its models are barely trained.
    pub fn tiny(seed: u64, encoder: EncoderConfig) -> ZooConfig {
        ZooConfig {
            seed,
            encoder,
            pretrain_examples: 200,
            pretrain_steps: 10,
            pretrain_lr: 1e-3,
            pretrain_label_noise: Vec::new(),
            train_examples: 100,
            eval_examples: 60,
            heads: HeadSource::Probe,
            probe_steps: 3,
            probe_lr: 1e-2,
            freeze_head: true,
            finetune_steps: 5,
            finetune_lr: 1e-3,
            batch: 16,
        }
    }
}

/// Accuracy and loss of one trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean training loss over the last tenth of the steps.
    pub train_loss: f64,
    /// Accuracy on the validation split.
    pub validation_accuracy: f64,
    /// Accuracy on the test split.
    pub test_accuracy: f64,
}

/// One task of the zoo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// Task name.
    pub name: String,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Prefix of the task's head in `heads/model.safetensors`.
    pub head: String,
    /// The expert's directory, relative to the zoo.
    pub expert: String,
    /// Examples in the train, validation and test splits.
    pub splits: [usize; 3],
    /// The expert on its own task.
    pub metrics: Metrics,
}

/// `zoo.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The config the zoo was built from.
    pub config: ZooConfig,
    /// The base's directory, relative to the zoo.
    pub base: String,
    /// The base on the pretraining task (the joint label space of all tasks).
    pub pretrain: Metrics,
    /// The heads' directory, relative to the zoo.
    pub heads: String,
    /// The tasks, in order.
    pub tasks: Vec<TaskEntry>,
    /// Wall time of the build.
    pub build_seconds: f64,
    /// The random streams the zoo was drawn from ([`crate::rng::STREAMS`]); a zoo drawn from
    /// others is rebuilt.
    #[serde(default)]
    pub streams: String,
}

impl Manifest {
    /// Whether this zoo is what building `config` here would give.
    pub fn is_built_from(&self, config: &ZooConfig) -> bool {
        self.config == *config && self.streams == crate::rng::STREAMS
    }
}

/// Building or reading a zoo failed.
#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    /// Writing the models failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A candidate's tensors do not form the zoo's encoder.
    #[error("the candidate is not an encoder of this zoo: {0}")]
    NotAnEncoder(String),
    /// Work that needs the built-in zoo (its manifest and models) asked of other tasks.
    #[error("{0} needs the built-in zoo, not a benchmark of your own models")]
    NotAZoo(&'static str),
    /// `zoo.json` does not parse.
    #[error("{}: not a zoo manifest: {reason}", path.display())]
    BadManifest {
        /// The manifest.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
}

const MANIFEST: &str = "zoo.json";

type Train = Autodiff<Flex>;

/// The manifest of the zoo in `dir`, if one was built there.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>, ZooError> {
    let path = dir.join(MANIFEST);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ZooError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ZooError::BadManifest {
            path,
            reason: e.to_string(),
        })
}

/// The zoo in `dir` as a model set: the base and the experts in task order.
pub fn model_set(dir: &Path, manifest: &Manifest) -> Result<ModelSet, ZooError> {
    let experts: Vec<PathBuf> = manifest.tasks.iter().map(|t| dir.join(&t.expert)).collect();
    Ok(ModelSet::open(&dir.join(&manifest.base), &experts)?)
}

/// Builds the zoo in `dir` on the CPU, or returns the cached one if `dir` holds a zoo built from
/// the same config. The zoo appears under `dir` only when complete.
///
/// A zoo built from another config, or whose manifest no longer parses (an older mergesearch),
/// is replaced; a directory that holds anything else is refused before any training.
pub fn build(dir: &Path, config: &ZooConfig, progress: &ProgressBar) -> Result<Manifest, ZooError> {
    match read_manifest(dir) {
        Ok(Some(manifest)) if manifest.is_built_from(config) => return Ok(manifest),
        Ok(Some(_)) | Err(ZooError::BadManifest { .. }) => {}
        Ok(None) => refuse_foreign(dir)?,
        Err(e) => return Err(e),
    }
    let started = Instant::now();
    let staging = dir.with_extension("partial");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ZooError::Io { path, source }
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let device = Default::default();
    let mut init = crate::rng::Rng::new(crate::rng::derive_seed(config.seed, "zoo/init", 0));
    let steps =
        config.pretrain_steps + Task::ALL.len() * (config.probing_steps() + config.finetune_steps);
    progress.set_length(steps as u64);

    progress.set_message("pretraining the base");
    let encoder = config.encoder.init::<Train>(&mut init, &device);
    let mut data = pretrain_dataset(Split::Train, config.pretrain_examples, config.seed);
    add_label_noise(&mut data, &config.pretrain_label_noise, config.seed);
    let pretrain_head = Head::new(config.encoder.dim, data.classes, &mut init, &device);
    let schedule = TrainConfig {
        steps: config.pretrain_steps,
        batch: config.batch,
        lr: config.pretrain_lr,
        seed: config.seed,
    };
    let (base, loss) = train(
        Classifier {
            encoder,
            head: pretrain_head,
        },
        &data,
        &schedule,
        &device,
        progress,
    );
    let pretrain = evaluate(&base, loss, |split| {
        pretrain_dataset(split, config.eval_examples, config.seed)
    });
    let base_encoder = base.encoder;
    let base_head = base.head;
    write_model(
        &staging.join("base"),
        inference(&Classifier {
            encoder: base_encoder.clone(),
            head: base_head.clone(),
        })
        .encoder
        .export(),
    )?;

    // Experts train one after the other: two burn-autodiff trainings on concurrent threads gave
    // different bytes from run to run (and deadlocked when they shared parameter tensors).
    progress.set_message("fine-tuning the experts");
    let mut heads = Vec::new();
    let mut tasks = Vec::new();
    let mut classes = 0;
    for (t, task) in Task::ALL.into_iter().enumerate() {
        let head = match config.heads {
            HeadSource::ZeroShot => base_head.classes(classes..classes + task.num_classes()),
            HeadSource::Probe => {
                Head::new(config.encoder.dim, task.num_classes(), &mut init, &device)
            }
        };
        classes += task.num_classes();
        let model = Classifier {
            encoder: base_encoder.clone(),
            head,
        };
        let (expert, metrics) = finetune(config, t, task, model, progress);
        let expert = inference(&expert);
        let expert_dir = format!("experts/{}", task.name());
        write_model(&staging.join(&expert_dir), expert.encoder.export())?;
        heads.extend(expert.head.export(task.name()));
        tasks.push(TaskEntry {
            name: task.name().to_string(),
            classes: task.classes().iter().map(|c| c.to_string()).collect(),
            head: format!("heads.{}", task.name()),
            expert: expert_dir,
            splits: [
                config.train_examples,
                config.eval_examples,
                config.eval_examples,
            ],
            metrics,
        });
    }
    write_model(&staging.join("heads"), heads)?;
    let manifest = Manifest {
        config: config.clone(),
        base: "base".into(),
        pretrain,
        heads: "heads".into(),
        tasks,
        build_seconds: started.elapsed().as_secs_f64(),
        streams: crate::rng::STREAMS.to_string(),
    };
    let path = staging.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    std::fs::write(&path, text).map_err(io(&path))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::rename(&staging, dir).map_err(io(dir))?;
    Ok(manifest)
}

/// Replaces the label of each pretraining image of task `t` (joint label space) with probability
/// `noise[t]` by a class of the same task drawn uniformly.
fn add_label_noise(data: &mut Dataset, noise: &[f64], seed: u64) {
    if noise.iter().all(|&p| p <= 0.0) {
        return;
    }
    let mut rng = Rng::new(derive_seed(seed, "zoo/pretrain-label-noise", 0));
    let mut offsets = vec![0];
    for task in Task::ALL {
        offsets.push(offsets.last().copied().unwrap_or(0) + task.num_classes());
    }
    for label in &mut data.labels {
        let t = offsets
            .iter()
            .rposition(|&o| o <= *label as usize)
            .unwrap_or(0);
        let (draw, class) = (
            rng.random::<f64>(),
            rng.random_range(0..Task::ALL[t].num_classes()),
        );
        if draw < noise.get(t).copied().unwrap_or(0.0) {
            *label = (offsets[t] + class) as u32;
        }
    }
}

/// Errors unless `dir` is missing or empty: the zoo replaces its directory when done, and must
/// never replace something that is not a zoo.
fn refuse_foreign(dir: &Path) -> Result<(), ZooError> {
    let io = |source| ZooError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
        return Err(ZooError::BadManifest {
            path: dir.join(MANIFEST),
            reason:
                "missing, and the directory is not empty: it is not a zoo, so nothing is built \
                     there (choose an empty or new directory)"
                    .into(),
        });
    }
    Ok(())
}

/// Fine-tunes one expert on its task, after fitting the head alone on the frozen encoder for
/// `probe_steps`, and scores it.
fn finetune(
    config: &ZooConfig,
    index: usize,
    task: Task,
    model: Classifier<Train>,
    progress: &ProgressBar,
) -> (Classifier<Train>, Metrics) {
    let device = Default::default();
    let data = generate(task, Split::Train, config.train_examples, config.seed);
    let Classifier { encoder, head } = model;
    let probe = TrainConfig {
        steps: config.probing_steps(),
        batch: config.batch,
        lr: config.probe_lr,
        seed: crate::rng::derive_seed(config.seed, &format!("probe/{}", task.name()), index as u64),
    };
    let frozen = Classifier {
        encoder: encoder.clone().no_grad(),
        head,
    };
    let (probed, _) = train(frozen, &data, &probe, &device, progress);
    let schedule = TrainConfig {
        steps: config.finetune_steps,
        batch: config.batch,
        lr: config.finetune_lr,
        seed: crate::rng::derive_seed(config.seed, task.name(), index as u64),
    };
    let model = Classifier {
        encoder,
        head: if config.freeze_head {
            probed.head.no_grad()
        } else {
            probed.head
        },
    };
    let (expert, loss) = train(model, &data, &schedule, &device, progress);
    let metrics = evaluate(&expert, loss, |split| {
        generate(task, split, config.eval_examples, config.seed)
    });
    (expert, metrics)
}

fn evaluate(
    model: &Classifier<Train>,
    train_loss: f64,
    split: impl Fn(Split) -> super::tasks::Dataset,
) -> Metrics {
    let device = Default::default();
    let model = inference(model);
    Metrics {
        train_loss,
        validation_accuracy: score_task(&model, &split(Split::Validation), &device).accuracy,
        test_accuracy: score_task(&model, &split(Split::Test), &device).accuracy,
    }
}

/// Writes flattened tensors as an f32 model directory (`dir/model.safetensors`).
pub fn write_model<B: Backend>(
    dir: &Path,
    tensors: Vec<NamedTensor<B>>,
) -> Result<(), CheckpointError> {
    let specs = tensors
        .iter()
        .map(|(name, shape, _)| TensorSpec {
            name: name.clone(),
            shape: shape.clone(),
            dtype: Dtype::F32,
        })
        .collect();
    let mut writer = ModelWriter::create(dir, specs, DEFAULT_MAX_SHARD_BYTES, true)?;
    for (name, _, values) in tensors {
        writer.write(&name, &host_values(values))?;
    }
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Model;

    fn tiny() -> ZooConfig {
        ZooConfig {
            pretrain_steps: 4,
            eval_examples: 50,
            probe_steps: 2,
            finetune_steps: 3,
            ..ZooConfig::tiny(3, EncoderConfig::mlp())
        }
    }

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in ["base", "heads", "experts/digits", "experts/symmetry"] {
            let path = dir.join(sub).join("model.safetensors");
            out.push((sub.to_string(), std::fs::read(&path).unwrap()));
        }
        out
    }

    #[test]
    fn the_same_config_builds_the_same_bytes_and_is_cached() {
        let root = std::env::temp_dir().join(format!("mergesearch-zoo-{}", std::process::id()));
        let (a, b) = (root.join("a"), root.join("b"));
        let bar = ProgressBar::hidden();
        let first = build(&a, &tiny(), &bar).unwrap();
        build(&b, &tiny(), &bar).unwrap();
        assert_eq!(files(&a), files(&b), "two builds of one config differ");
        assert_eq!(first.tasks.len(), 8);
        assert_eq!(first.tasks[0].classes.len(), 10);
        // Cached: the manifest (with its build time) comes back unchanged, nothing is retrained.
        assert_eq!(build(&a, &tiny(), &bar).unwrap(), first);
        // Every expert shares the base's tensor names, and the heads hold one head per task.
        let base = Model::open(&a.join("base")).unwrap();
        let expert = Model::open(&a.join("experts/counting")).unwrap();
        assert_eq!(base.tensors().len(), expert.tensors().len());
        let heads = Model::open(&a.join("heads")).unwrap();
        assert!(heads.get("heads.counting.weight").is_some());
        assert_eq!(heads.tensors().len(), 16);
        // A directory that is not a zoo is refused and left alone; a damaged manifest is rebuilt.
        let foreign = root.join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("weights.bin"), b"precious").unwrap();
        let error = build(&foreign, &tiny(), &bar).unwrap_err().to_string();
        assert!(error.contains("it is not a zoo"), "{error}");
        assert_eq!(
            std::fs::read(foreign.join("weights.bin")).unwrap(),
            b"precious"
        );
        std::fs::write(b.join(MANIFEST), "{\"old\": true}").unwrap();
        assert_eq!(
            files(&b),
            files(&a),
            "the damaged zoo's files are still there"
        );
        build(&b, &tiny(), &bar).unwrap();
        assert!(
            read_manifest(&b).unwrap().is_some(),
            "rebuilt with a readable manifest"
        );
        // Another seed is another zoo.
        let other = ZooConfig { seed: 4, ..tiny() };
        build(&b, &other, &bar).unwrap();
        assert_ne!(files(&a), files(&b));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
