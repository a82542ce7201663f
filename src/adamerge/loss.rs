//! AdaMerging's label-free loss: the mean Shannon entropy of each task's head's predictions on
//! unlabeled inputs of that task, summed over tasks.

use burn::prelude::*;
use rand::Rng as _;

use crate::rng::{Rng, derive_seed};
use crate::zoo::model::{Encoder, TaskHeads, entropy};
use crate::zoo::tasks::Dataset;

/// Each task's images for one step: `per_task` indices per task drawn uniformly (with
/// replacement) from the stream of (`seed`, `step`). Only images are read, never labels.
pub fn sample_batch(data: &[Dataset], per_task: usize, seed: u64, step: u64) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(derive_seed(seed, "adamerge-batch", step));
    data.iter()
        .map(|d| {
            (0..per_task)
                .map(|_| rng.random_range(0..d.len()))
                .collect()
        })
        .collect()
}

/// The loss (shape `[1]`) and each task's mean entropy (shape `[tasks]`) of `encoder` with each
/// task's head on `images`: `per_task` rows of each task, task after task, with their head masks
/// (`masks`, see [`TaskHeads::mask_row`]). The encoder and the heads each run once on all tasks'
/// images.
pub fn entropy_loss<B: Backend>(
    encoder: &Encoder<B>,
    heads: &TaskHeads<B>,
    images: Tensor<B, 2>,
    masks: Tensor<B, 2>,
    per_task: usize,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let rows = images.dims()[0];
    let tasks = rows / per_task.max(1);
    let log_p = heads.log_probs(encoder.forward(images), masks);
    let per_task = entropy(log_p)
        .reshape([tasks, per_task])
        .mean_dim(1)
        .reshape([tasks]);
    (per_task.clone().sum(), per_task)
}
