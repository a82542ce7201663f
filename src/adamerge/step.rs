//! One AdaMerging step on the device: merge with the current coefficients, one batched forward
//! pass of the merged encoder over every task's unlabeled images, the entropy loss, backward, and
//! the coefficients' gradient. Nothing is read back to the host.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::loss::entropy_loss;
use super::merge::DifferentiableMerge;
use crate::zoo::build::ZooError;
use crate::zoo::evaluate::ZooScorer;

/// One step's results, on the device.
pub struct Gradient<I: Backend> {
    /// The loss's gradient with respect to the coefficients, `[groups, experts]`.
    pub coefficients: Tensor<I, 2>,
    /// Each task's mean entropy on the step's images, `[tasks]`.
    pub entropies: Tensor<I, 1>,
}

/// The entropy loss of the merged encoder as a function of the merge coefficients.
pub struct EntropyObjective<'a, B: AutodiffBackend> {
    merge: &'a DifferentiableMerge<B>,
    scorer: &'a ZooScorer<B>,
    per_task: usize,
}

impl<'a, B: AutodiffBackend> EntropyObjective<'a, B> {
    /// The loss of `merge`'s encoder with `scorer`'s heads, on batches of `per_task` unlabeled
    /// images of each of `scorer`'s tasks.
    pub fn new(
        merge: &'a DifferentiableMerge<B>,
        scorer: &'a ZooScorer<B>,
        per_task: usize,
    ) -> EntropyObjective<'a, B> {
        EntropyObjective {
            merge,
            scorer,
            per_task,
        }
    }

    /// The gradient of the loss with respect to the coefficients `x` (`[groups, experts]`) on
    /// the images `indices` (one list of `per_task` items per task), and each task's mean
    /// entropy. TIES signs are elected with `x`.
    pub fn gradient(
        &self,
        x: &Tensor<B::InnerBackend, 2>,
        indices: &[Vec<usize>],
    ) -> Result<Gradient<B::InnerBackend>, ZooError> {
        let leaves = self.merge.leaves(x, x);
        let encoder = self.scorer.encoder(leaves.tensors.clone())?;
        let (images, _, masks) = self.scorer.rows(indices);
        let (loss, per_task) = entropy_loss(
            &encoder,
            self.scorer.task_heads(),
            images,
            masks,
            self.per_task,
        );
        let grads = loss.backward();
        Ok(Gradient {
            coefficients: leaves.coefficient_gradient(&grads),
            entropies: per_task.inner(),
        })
    }

    /// The loss (`[1]`) at coefficients `x` on the images `indices`, with TIES signs elected by
    /// the coefficients `elect` (no graph is built).
    pub fn loss(
        &self,
        x: &Tensor<B::InnerBackend, 2>,
        elect: &Tensor<B::InnerBackend, 2>,
        indices: &[Vec<usize>],
    ) -> Result<Tensor<B::InnerBackend, 1>, ZooError> {
        let tensors = self
            .merge
            .merged(x, elect)
            .into_iter()
            .map(|(name, shape, t)| (name, shape, Tensor::from_inner(t)))
            .collect();
        let encoder = self.scorer.encoder(tensors)?;
        let (images, _, masks) = self.scorer.rows(indices);
        let (loss, _) = entropy_loss(
            &encoder,
            self.scorer.task_heads(),
            images,
            masks,
            self.per_task,
        );
        Ok(loss.inner())
    }
}
