//! Training and scoring the zoo's classifiers: Adam on cross-entropy over seeded mini-batches,
//! and batched accuracy.

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use indicatif::ProgressBar;
use rand::RngCore as _;

use super::model::Classifier;
use super::tasks::{Dataset, IMAGE_SIZE};
use crate::rng::Rng;

/// How long and how fast to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per step.
    pub batch: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Seed of the batch order.
    pub seed: u64,
}

/// A batch of images and labels on `device`.
pub fn batch<B: Backend>(
    data: &Dataset,
    indices: &[usize],
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let pixels = IMAGE_SIZE * IMAGE_SIZE;
    let mut images = Vec::with_capacity(indices.len() * pixels);
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        images.extend_from_slice(data.image(i));
        labels.push(data.labels[i] as i64);
    }
    (
        Tensor::from_data(TensorData::new(images, [indices.len(), pixels]), device),
        Tensor::from_data(TensorData::new(labels, [indices.len()]), device),
    )
}

/// Trains `model` on `data`; returns it with the mean loss of the last tenth of the steps.
pub fn train<B: AutodiffBackend>(
    mut model: Classifier<B>,
    data: &Dataset,
    config: &TrainConfig,
    device: &B::Device,
    progress: &ProgressBar,
) -> (Classifier<B>, f64) {
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut rng = Rng::new(config.seed);
    let tail = (config.steps / 10).max(1);
    let mut tail_loss = 0.0;
    for step in 0..config.steps {
        let indices: Vec<usize> = (0..config.batch)
            .map(|_| (rng.next_u64() % data.len() as u64) as usize)
            .collect();
        let (images, labels) = batch::<B>(data, &indices, device);
        let loss = loss_fn.forward(model.forward(images), labels);
        if step + tail >= config.steps {
            tail_loss += loss.clone().into_scalar().elem::<f64>() / tail as f64;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(config.lr, model, grads);
        progress.inc(1);
    }
    (model, tail_loss)
}

/// The inference copy of a trained model (autodiff graph dropped).
pub fn inference<B: AutodiffBackend>(model: &Classifier<B>) -> Classifier<B::InnerBackend> {
    model.valid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::evaluate::score_task;
    use crate::zoo::model::{EncoderConfig, Head};
    use crate::zoo::tasks::{Split, Task, generate};
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn sixty_steps_double_chance_on_most_seeds() {
        type A = Autodiff<Flex>;
        let device = Default::default();
        let train_set = generate(Task::Digits, Split::Train, 600, 1);
        let test_set = generate(Task::Digits, Split::Test, 300, 1);
        let chance = 1.0 / Task::Digits.num_classes() as f64;
        let mut successes = 0;
        for seed in 0..3 {
            let config = EncoderConfig::mlp();
            let mut init = Rng::new(seed);
            let model = Classifier {
                encoder: config.init::<A>(&mut init, &device),
                head: Head::new(config.dim, Task::Digits.num_classes(), &mut init, &device),
            };
            let steps = TrainConfig {
                steps: 60,
                batch: 32,
                lr: 3e-3,
                seed,
            };
            let (model, _) = train(model, &train_set, &steps, &device, &ProgressBar::hidden());
            let acc = score_task(&inference(&model), &test_set, &device).accuracy;
            if acc > 2.0 * chance {
                successes += 1;
            }
        }
        assert!(successes >= 2, "beat 2x chance on only {successes}/3 seeds");
    }
}
