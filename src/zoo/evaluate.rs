//! Scoring a merged encoder on the zoo: each task's own head (from its expert) on top of the
//! candidate encoder, per-task accuracy, cross-entropy and mean prediction entropy.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::Transaction;
use burn::tensor::activation::log_softmax;

use super::build::{Manifest, ZooError, read_manifest};
use super::model::{Classifier, Encoder, Head, NamedTensor, TaskHeads, TensorSource, entropy};
use super::tasks::{Dataset, IMAGE_PIXELS, Split, Task, generate};
use super::train::batch;
use crate::checkpoint::Model;
use crate::merge::Candidate;
use crate::rng::Rng;

/// One task's scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskScores {
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Mean cross-entropy of the true labels (nats).
    pub cross_entropy: f64,
    /// Mean Shannon entropy of the predicted distributions (nats; needs no labels).
    pub entropy: f64,
}

/// A built zoo ready to score candidates on one split.
///
/// Every task's images of the split are kept on the device, one tensor with the tasks one after
/// the other, with each row's joint class index and head mask: scoring any items of any tasks is
/// one gather and one batched forward pass, and one read back to the host.
pub struct ZooScorer<B: Backend> {
    /// The zoo's manifest, when the tasks are the zoo's (not a [`crate::vision`] benchmark's).
    manifest: Option<Manifest>,
    /// Each task's name.
    names: Vec<String>,
    /// Whether each task's items have true labels (else accuracy and cross-entropy mean nothing).
    labelled: Vec<bool>,
    template: Encoder<B>,
    heads: Vec<Head<B>>,
    task_heads: TaskHeads<B>,
    data: Vec<Dataset>,
    /// First row of each task in the device tensors.
    starts: Vec<usize>,
    /// `[rows, pixels per image]`.
    images: Tensor<B, 2>,
    /// Each row's class in the joint logits of [`TaskHeads`].
    labels: Tensor<B, 1, Int>,
    /// Each row's [`TaskHeads::mask_row`].
    masks: Tensor<B, 2>,
    split: Split,
    device: B::Device,
}

/// The tasks a [`ZooScorer`] scores: per task its name, head, items (images and labels; labels
/// are 0 where `labelled` is false) and whether it has labels.
pub struct TaskSet<B: Backend> {
    /// Each task's name.
    pub names: Vec<String>,
    /// Whether each task's labels are true labels.
    pub labelled: Vec<bool>,
    /// Each task's head.
    pub heads: Vec<Head<B>>,
    /// Each task's items of the split.
    pub data: Vec<Dataset>,
    /// Values per image (the encoder's input width).
    pub pixels: usize,
}

/// Rows scored in one forward pass: bounds the activations' memory on wide encoders.
const CHUNK_ROWS: usize = 2048;

impl<B: Backend> ZooScorer<B> {
    /// Opens the zoo in `dir` and generates `split` of every task (the manifest's sizes).
    pub fn open(dir: &Path, split: Split, device: &B::Device) -> Result<ZooScorer<B>, ZooError> {
        let manifest = read_manifest(dir)?.ok_or_else(|| ZooError::BadManifest {
            path: dir.join("zoo.json"),
            reason: "missing: build the zoo first (`mergesearch zoo build`)".into(),
        })?;
        let config = &manifest.config;
        let template = config.encoder.init::<B>(&mut Rng::new(0), device);
        let heads_model = Model::open(&dir.join(&manifest.heads))?;
        let stored = read_all::<B>(&heads_model, device)?;
        let source = TensorSource::new(stored);
        let mut heads = Vec::new();
        let mut data = Vec::new();
        for entry in &manifest.tasks {
            let task = Task::from_name(&entry.name).ok_or_else(|| ZooError::BadManifest {
                path: dir.join("zoo.json"),
                reason: format!("unknown task {:?}", entry.name),
            })?;
            let like = Head::new(
                config.encoder.dim,
                task.num_classes(),
                &mut Rng::new(0),
                device,
            );
            heads.push(
                like.import(task.name(), &source)
                    .map_err(|e| ZooError::BadManifest {
                        path: dir.join(&manifest.heads),
                        reason: e.to_string(),
                    })?,
            );
            data.push(generate(task, split, config.eval_examples, config.seed));
        }
        let tasks = TaskSet {
            names: manifest.tasks.iter().map(|t| t.name.clone()).collect(),
            labelled: vec![true; data.len()],
            heads,
            data,
            pixels: IMAGE_PIXELS,
        };
        let mut scorer = ZooScorer::from_tasks(template, tasks, split, device);
        scorer.manifest = Some(manifest);
        Ok(scorer)
    }

    /// A scorer of `template`'s encoder with each task's head on that task's items of `split`.
    pub fn from_tasks(
        template: Encoder<B>,
        tasks: TaskSet<B>,
        split: Split,
        device: &B::Device,
    ) -> ZooScorer<B> {
        let TaskSet {
            names,
            labelled,
            heads,
            data,
            pixels,
        } = tasks;
        let task_heads = TaskHeads::new(&heads);
        let mut starts = vec![0];
        let (mut images, mut labels, mut masks) = (Vec::new(), Vec::new(), Vec::new());
        for (t, d) in data.iter().enumerate() {
            starts.push(starts[t] + d.len());
            images.extend_from_slice(&d.images);
            let offset = task_heads.offsets()[t];
            labels.extend(d.labels.iter().map(|&l| (offset + l as usize) as i64));
            let mask = task_heads.mask_row(t);
            for _ in 0..d.len() {
                masks.extend_from_slice(&mask);
            }
        }
        let rows = labels.len();
        let classes = masks.len() / rows.max(1);
        ZooScorer {
            manifest: None,
            names,
            labelled,
            template,
            heads,
            task_heads,
            data,
            images: Tensor::from_data(TensorData::new(images, [rows, pixels]), device),
            labels: Tensor::from_data(TensorData::new(labels, [rows]), device),
            masks: Tensor::from_data(TensorData::new(masks, [rows, classes]), device),
            starts,
            split,
            device: device.clone(),
        }
    }

    /// The zoo's manifest, when the tasks are the zoo's.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The zoo's manifest; `work` (what needs it) fails when the tasks are not the zoo's.
    pub fn zoo_manifest(&self, work: &'static str) -> Result<&Manifest, ZooError> {
        self.manifest.as_ref().ok_or(ZooError::NotAZoo(work))
    }

    /// Each task's name, in order.
    pub fn task_names(&self) -> &[String] {
        &self.names
    }

    /// Whether each task's items have true labels.
    pub fn labelled(&self) -> &[bool] {
        &self.labelled
    }

    /// The split scored.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The device models run on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Each task's examples of the split, in manifest order.
    pub fn datasets(&self) -> &[Dataset] {
        &self.data
    }

    /// Each task's head, in manifest order.
    pub fn heads(&self) -> &[Head<B>] {
        &self.heads
    }

    /// Every task's head, side by side.
    pub fn task_heads(&self) -> &TaskHeads<B> {
        &self.task_heads
    }

    /// The zoo's encoder with weights given as named tensors (the zoo's names; other tensors are
    /// ignored). The weights keep their autograd graph.
    pub fn encoder(&self, tensors: Vec<NamedTensor<B>>) -> Result<Encoder<B>, ZooError> {
        self.template
            .import(&TensorSource::new(tensors))
            .map_err(|e| ZooError::NotAnEncoder(e.to_string()))
    }

    /// The images (`[rows, IMAGE_PIXELS]`), joint labels and head masks of `items` (one list per
    /// task, task after task), gathered on the device.
    pub fn rows(&self, items: &[Vec<usize>]) -> (Tensor<B, 2>, Tensor<B, 1, Int>, Tensor<B, 2>) {
        let rows: Vec<i64> = items
            .iter()
            .enumerate()
            .flat_map(|(t, list)| list.iter().map(move |&i| (self.starts[t] + i) as i64))
            .collect();
        let n = rows.len();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &self.device);
        (
            self.images.clone().select(0, index.clone()),
            self.labels.clone().select(0, index.clone()),
            self.masks.clone().select(0, index),
        )
    }

    /// Scores every task on all of its examples with the encoder held by `candidate`.
    pub fn score(&self, candidate: &Candidate<B>) -> Result<Vec<TaskScores>, ZooError> {
        self.score_tensors(candidate.tensors.clone())
    }

    /// Scores every task on all of its examples with an encoder given as named tensors.
    pub fn score_tensors(&self, tensors: Vec<NamedTensor<B>>) -> Result<Vec<TaskScores>, ZooError> {
        let all: Vec<Vec<usize>> = self.data.iter().map(|d| (0..d.len()).collect()).collect();
        Ok(self
            .score_items(tensors, &all)?
            .iter()
            .map(ItemScores::mean)
            .collect())
    }

    /// Scores, for each task, the items listed for it (none: the task is skipped) with an
    /// encoder given as named tensors (the zoo's names; other tensors are ignored). All tasks'
    /// items run through the encoder together, in batches of [`CHUNK_ROWS`], and come back to the
    /// host in one read.
    pub fn score_items(
        &self,
        tensors: Vec<NamedTensor<B>>,
        items: &[Vec<usize>],
    ) -> Result<Vec<ItemScores>, ZooError> {
        let encoder = self.encoder(tensors)?;
        let mut items = items.to_vec();
        items.resize(self.heads.len(), Vec::new());
        let flat: Vec<(usize, usize)> = items
            .iter()
            .enumerate()
            .flat_map(|(t, list)| list.iter().map(move |&i| (t, i)))
            .collect();
        let mut transaction = Transaction::default();
        for chunk in flat.chunks(CHUNK_ROWS) {
            let mut per_task = vec![Vec::new(); items.len()];
            for &(t, i) in chunk {
                per_task[t].push(i);
            }
            let (images, labels, masks) = self.rows(&per_task);
            let log_p = self.task_heads.log_probs(encoder.forward(images), masks);
            let [correct, picked, entropy] = label_scores(log_p, labels);
            transaction = transaction
                .register(correct)
                .register(picked)
                .register(entropy);
        }
        let data = transaction.execute();
        let mut out: Vec<ItemScores> = items.iter().map(|_| ItemScores::default()).collect();
        let tasks = flat.iter().map(|&(t, _)| t);
        let mut tasks = tasks.collect::<Vec<_>>().into_iter();
        for read in data.chunks(3) {
            let correct: Vec<bool> = read[0].iter::<f32>().map(|c| c > 0.5).collect();
            let picked: Vec<f32> = read[1].iter::<f32>().collect();
            let entropy: Vec<f32> = read[2].iter::<f32>().collect();
            for ((c, p), e) in correct.into_iter().zip(picked).zip(entropy) {
                let t = tasks.next().expect("one task per row");
                out[t].correct.push(c);
                out[t].log_p_true.push(p);
                out[t].entropy.push(e);
            }
        }
        Ok(out)
    }
}

/// Per row of log-probabilities `log_p` (`[rows, classes]`) with true classes `labels`: whether
/// the arg-max is the label (`[rows]`, bool), the label's log-probability and the entropy
/// (`[rows]`, float).
fn label_scores<B: Backend>(log_p: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> [Tensor<B, 1>; 3] {
    let rows = labels.dims()[0];
    let predicted = log_p.clone().argmax(1).reshape([rows]);
    let correct = predicted.equal(labels.clone()).float();
    let picked = log_p
        .clone()
        .gather(1, labels.reshape([rows, 1]))
        .reshape([rows]);
    [correct, picked, entropy(log_p).reshape([rows])]
}

/// Reads every tensor of `model` onto `device`, flattened.
pub fn read_all<B: Backend>(
    model: &Model,
    device: &B::Device,
) -> Result<Vec<NamedTensor<B>>, ZooError> {
    model
        .tensors()
        .iter()
        .map(|t| {
            let values = model.read_f32(&t.info.name)?;
            let n = values.len();
            Ok((
                t.info.name.clone(),
                t.info.shape.clone(),
                Tensor::from_data(TensorData::new(values, [n]), device),
            ))
        })
        .collect()
}

/// What a classifier does on each of a list of items.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemScores {
    /// Whether the arg-max prediction is the label.
    pub correct: Vec<bool>,
    /// Log-probability given to the true label.
    pub log_p_true: Vec<f32>,
    /// Shannon entropy of the predicted distribution (nats; needs no labels).
    pub entropy: Vec<f32>,
}

impl ItemScores {
    /// Items scored.
    pub fn len(&self) -> usize {
        self.correct.len()
    }

    /// Whether no item was scored.
    pub fn is_empty(&self) -> bool {
        self.correct.is_empty()
    }

    /// Accuracy, cross-entropy and entropy averaged over the items with equal weights.
    pub fn mean(&self) -> TaskScores {
        let n = self.len().max(1) as f64;
        let sum = |values: &mut dyn Iterator<Item = f64>| values.sum::<f64>() / n;
        TaskScores {
            accuracy: sum(&mut self.correct.iter().map(|&c| f64::from(u8::from(c)))),
            cross_entropy: -sum(&mut self.log_p_true.iter().map(|&l| f64::from(l))),
            entropy: sum(&mut self.entropy.iter().map(|&e| f64::from(e))),
        }
    }
}

/// Scores `model` on the items `indices` of `data`, in batches of [`CHUNK_ROWS`].
pub fn item_scores<B: Backend>(
    model: &Classifier<B>,
    data: &Dataset,
    indices: &[usize],
    device: &B::Device,
) -> ItemScores {
    let mut out = ItemScores::default();
    for chunk in indices.chunks(CHUNK_ROWS) {
        let (images, labels) = batch::<B>(data, chunk, device);
        let log_p = log_softmax(model.forward(images), 1);
        let [correct, picked, entropy] = label_scores(log_p, labels);
        let read = Transaction::default()
            .register(correct)
            .register(picked)
            .register(entropy)
            .execute();
        out.correct.extend(read[0].iter::<f32>().map(|c| c > 0.5));
        out.log_p_true.extend(read[1].iter::<f32>());
        out.entropy.extend(read[2].iter::<f32>());
    }
    out
}

/// Accuracy, cross-entropy and entropy of `model` on all of `data`.
pub fn score_task<B: Backend>(
    model: &Classifier<B>,
    data: &Dataset,
    device: &B::Device,
) -> TaskScores {
    let indices: Vec<usize> = (0..data.len()).collect();
    item_scores(model, data, &indices, device).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::build::{HeadSource, ZooConfig, build};
    use crate::zoo::model::EncoderConfig;
    use burn::backend::Flex;
    use indicatif::ProgressBar;

    #[test]
    fn each_expert_scores_what_its_manifest_says_on_its_own_task() {
        let dir = std::env::temp_dir().join(format!("mergesearch-zoo-eval-{}", std::process::id()));
        // Zero-shot heads, trained encoders: each task's head is a slice of the pretraining head.
        let config = ZooConfig {
            pretrain_steps: 20,
            train_examples: 200,
            eval_examples: 100,
            heads: HeadSource::ZeroShot,
            freeze_head: false,
            finetune_steps: 30,
            finetune_lr: 3e-3,
            ..ZooConfig::tiny(5, EncoderConfig::mlp())
        };
        let manifest = build(&dir, &config, &ProgressBar::hidden()).unwrap();
        let device = Default::default();
        let scorer = ZooScorer::<Flex>::open(&dir, Split::Test, &device).unwrap();
        for (t, entry) in manifest.tasks.iter().enumerate() {
            let expert = Model::open(&dir.join(&entry.expert)).unwrap();
            let scores = scorer
                .score_tensors(read_all(&expert, &device).unwrap())
                .unwrap();
            let own = scores[t];
            assert!(
                (own.accuracy - entry.metrics.test_accuracy).abs() <= 0.02,
                "{}: scored {} but the manifest says {}",
                entry.name,
                own.accuracy,
                entry.metrics.test_accuracy
            );
            let max_entropy = (entry.classes.len() as f64).ln();
            assert!(
                own.entropy >= 0.0 && own.entropy <= max_entropy + 1e-9,
                "{}: entropy {}",
                entry.name,
                own.entropy
            );
            assert!(own.cross_entropy > 0.0);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
