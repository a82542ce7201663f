//! AdaMerging's label-free loss: the mean Shannon entropy of each task's head's predictions on
//! unlabeled inputs of that task, summed over tasks.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::Rng as _;

use crate::rng::{Rng, derive_seed};
use crate::zoo::model::{Encoder, Head};
use crate::zoo::tasks::{Dataset, IMAGE_SIZE};

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

/// The images of `indices` (one list per task), stacked task after task.
pub fn images<B: Backend>(
    data: &[Dataset],
    indices: &[Vec<usize>],
    device: &B::Device,
) -> Tensor<B, 2> {
    let pixels = IMAGE_SIZE * IMAGE_SIZE;
    let rows: usize = indices.iter().map(Vec::len).sum();
    let mut values = Vec::with_capacity(rows * pixels);
    for (d, items) in data.iter().zip(indices) {
        for &i in items {
            values.extend_from_slice(d.image(i));
        }
    }
    Tensor::from_data(TensorData::new(values, [rows, pixels]), device)
}

/// The loss (shape `[1]`) and each task's mean entropy (shape `[tasks]`) of `encoder` with each
/// task's head on `images` (`sizes[t]` rows for task `t`, in order). The encoder runs once on
/// all tasks' images; each head sees its own task's features.
pub fn entropy_loss<B: Backend>(
    encoder: &Encoder<B>,
    heads: &[Head<B>],
    images: Tensor<B, 2>,
    sizes: &[usize],
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let features = encoder.forward(images);
    let dim = features.dims()[1];
    let mut start = 0;
    let per_task: Vec<Tensor<B, 1>> = heads
        .iter()
        .zip(sizes)
        .map(|(head, &n)| {
            let mine = features.clone().slice([start..start + n, 0..dim]);
            start += n;
            let log_p = log_softmax(head.forward(mine), 1);
            (log_p.clone().exp() * log_p).sum_dim(1).neg().mean()
        })
        .collect();
    let per_task = Tensor::cat(per_task, 0);
    (per_task.clone().sum(), per_task)
}
