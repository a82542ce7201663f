//! Scoring a merged encoder on the zoo: each task's own head (from its expert) on top of the
//! candidate encoder, per-task accuracy, cross-entropy and mean prediction entropy.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::build::{Manifest, ZooError, read_manifest};
use super::model::{Classifier, Encoder, Head, NamedTensor, TensorSource};
use super::tasks::{Dataset, Split, Task, generate};
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
pub struct ZooScorer<B: Backend> {
    manifest: Manifest,
    template: Encoder<B>,
    heads: Vec<Head<B>>,
    data: Vec<Dataset>,
    split: Split,
    device: B::Device,
}

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
        Ok(ZooScorer {
            manifest,
            template,
            heads,
            data,
            split,
            device: device.clone(),
        })
    }

    /// The zoo's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
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

    /// The zoo's encoder with weights given as named tensors (the zoo's names; other tensors are
    /// ignored). The weights keep their autograd graph.
    pub fn encoder(&self, tensors: Vec<NamedTensor<B>>) -> Result<Encoder<B>, ZooError> {
        self.template
            .import(&TensorSource::new(tensors))
            .map_err(|e| ZooError::NotAnEncoder(e.to_string()))
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
    /// encoder given as named tensors (the zoo's names; other tensors are ignored).
    pub fn score_items(
        &self,
        tensors: Vec<NamedTensor<B>>,
        items: &[Vec<usize>],
    ) -> Result<Vec<ItemScores>, ZooError> {
        let encoder = self.encoder(tensors)?;
        let score = |t: usize| {
            let model = Classifier {
                encoder: encoder.clone(),
                head: self.heads[t].clone(),
            };
            item_scores(&model, &self.data[t], &items[t], &self.device)
        };
        // Tasks are scored on parallel threads (the CPU backend runs a batch on one core); each
        // task's result does not depend on the others, so the order of work does not matter.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let tasks: Vec<usize> = (0..self.heads.len().min(items.len())).collect();
        let mut scored: Vec<(usize, ItemScores)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.min(tasks.len()))
                .map(|w| {
                    let mine: Vec<usize> = tasks.iter().copied().skip(w).step_by(threads).collect();
                    let score = &score;
                    scope.spawn(move || mine.into_iter().map(|t| (t, score(t))).collect::<Vec<_>>())
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a scoring thread panicked"))
                .collect()
        });
        scored.sort_by_key(|(t, _)| *t);
        Ok(scored.into_iter().map(|(_, s)| s).collect())
    }
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

/// Scores `model` on the items `indices` of `data`, in batches of 512.
pub fn item_scores<B: Backend>(
    model: &Classifier<B>,
    data: &Dataset,
    indices: &[usize],
    device: &B::Device,
) -> ItemScores {
    let mut out = ItemScores::default();
    for chunk in indices.chunks(512) {
        let (images, labels) = batch::<B>(data, chunk, device);
        let log_p = log_softmax(model.forward(images), 1);
        let predicted = log_p.clone().argmax(1).reshape([chunk.len()]);
        let correct = predicted.equal(labels.clone()).into_data();
        out.correct.extend(correct.iter::<bool>());
        let picked = log_p.clone().gather(1, labels.reshape([chunk.len(), 1]));
        out.log_p_true.extend(picked.into_data().iter::<f32>());
        let entropy = (log_p.clone().exp() * log_p).sum_dim(1).neg();
        out.entropy.extend(entropy.into_data().iter::<f32>());
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
    use crate::zoo::build::{ZooConfig, build};
    use crate::zoo::model::EncoderConfig;
    use burn::backend::Flex;
    use indicatif::ProgressBar;

    #[test]
    fn each_expert_scores_what_its_manifest_says_on_its_own_task() {
        let dir = std::env::temp_dir().join(format!("mergesearch-zoo-eval-{}", std::process::id()));
        let config = ZooConfig {
            seed: 5,
            encoder: EncoderConfig::mlp(),
            pretrain_examples: 200,
            pretrain_steps: 20,
            pretrain_lr: 1e-3,
            train_examples: 200,
            eval_examples: 100,
            probe_steps: 0,
            probe_lr: 1e-2,
            freeze_head: false,
            finetune_steps: 30,
            finetune_lr: 3e-3,
            batch: 16,
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
