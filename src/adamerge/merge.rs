//! The merged encoder as a differentiable function of the merge coefficients:
//! `theta = theta_base + sum_i lambda[g, i] * d_i` per tensor of group `g`, where `d_i` is expert
//! `i`'s task vector (AdaMerging) or its TIES-trimmed, sign-elected version (AdaMerging++).
//!
//! Task vectors are constants (the inner, non-autodiff backend); only the coefficients are
//! tracked, so a step's graph holds one product per tensor and the backward pass costs about as
//! much as the forward merge.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::merge::Merger;
use crate::zoo::model::NamedTensor;

/// One tensor's constant inputs.
struct MergeTensor<I: Backend> {
    name: String,
    shape: Vec<usize>,
    group: usize,
    base: Tensor<I, 1>,
    /// Rows `d_1..d_k`, `[k, n]`.
    deltas: Tensor<I, 2>,
}

/// Base and (trimmed) task vectors, ready to merge with tracked coefficients.
pub struct DifferentiableMerge<B: AutodiffBackend> {
    tensors: Vec<MergeTensor<B::InnerBackend>>,
    groups: usize,
    experts: usize,
    ties: bool,
}

impl<B: AutodiffBackend> DifferentiableMerge<B> {
    /// Takes the base and task vectors from `merger`. With `ties_density`, each task vector keeps
    /// its `density` fraction of largest magnitudes (TIES trim) and each merge elects signs with
    /// the current coefficients, as the `ties` method does with `normalize = false, lambda = 1`.
    pub fn new(merger: &Merger<B::InnerBackend>, ties_density: Option<f64>) -> Self {
        let groups = merger.groups();
        let tensors: Vec<MergeTensor<B::InnerBackend>> = merger
            .tensors()
            .iter()
            .enumerate()
            .map(|(t, meta)| {
                let (base, deltas) = merger.task_vectors(t, ties_density);
                MergeTensor {
                    name: meta.name.clone(),
                    shape: meta.shape.clone(),
                    group: groups.of_tensor[t],
                    base,
                    deltas,
                }
            })
            .collect();
        let experts = merger.tensors().first().map_or(0, |t| t.experts);
        DifferentiableMerge {
            tensors,
            groups: groups.names.len(),
            experts,
            ties: ties_density.is_some(),
        }
    }

    /// Number of coefficient groups (rows of the coefficient matrix).
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Number of experts (columns of the coefficient matrix).
    pub fn experts(&self) -> usize {
        self.experts
    }

    /// The merged tensors for coefficients `[groups, experts]` (`values` are the same
    /// coefficients on the host, for the sign election of TIES, which is piecewise constant and
    /// carries no gradient).
    pub fn merged(&self, coefficients: &Tensor<B, 2>, values: &[f64]) -> Vec<NamedTensor<B>> {
        let k = self.experts;
        self.tensors
            .iter()
            .map(|t| {
                let row = coefficients
                    .clone()
                    .slice([t.group..t.group + 1, 0..k])
                    .reshape([1, k]);
                let deltas = if self.ties {
                    let weights = &values[t.group * k..(t.group + 1) * k];
                    self.agreeing(t, weights)
                } else {
                    t.deltas.clone()
                };
                let n = t.base.dims()[0];
                let mixed = row.matmul(Tensor::from_inner(deltas)).reshape([n]);
                let merged = Tensor::from_inner(t.base.clone()) + mixed;
                (t.name.clone(), t.shape.clone(), merged)
            })
            .collect()
    }

    /// The trimmed task vectors of `t` with the entries that disagree with the elected sign
    /// zeroed.
    fn agreeing(
        &self,
        t: &MergeTensor<B::InnerBackend>,
        weights: &[f64],
    ) -> Tensor<B::InnerBackend, 2> {
        let n = t.base.dims()[0];
        let rows: Vec<Tensor<B::InnerBackend, 1>> = (0..self.experts)
            .map(|i| t.deltas.clone().slice([i..i + 1, 0..n]).reshape([n]))
            .collect();
        let weighted: Vec<_> = rows
            .iter()
            .zip(weights)
            .map(|(d, &w)| d.clone().mul_scalar(w))
            .collect();
        let kept: Vec<_> = rows
            .into_iter()
            .zip(sign_agreement(&weighted))
            .map(|(d, agrees)| d * agrees)
            .collect();
        Tensor::stack(kept, 0)
    }
}

/// TIES sign election over weighted task vectors `W_i = w_i * d_i`: the elected sign is that of
/// `sum_i W_i` (zero counts as +); returns, per expert, 1 where `W_i` has the elected sign and 0
/// elsewhere (zero entries never agree).
fn sign_agreement<B: Backend>(weighted: &[Tensor<B, 1>]) -> Vec<Tensor<B, 1>> {
    let total = weighted
        .iter()
        .cloned()
        .reduce(|a, b| a + b)
        .expect("at least one expert");
    // +1 where the weighted sum is >= 0, -1 elsewhere.
    let elected = total
        .greater_equal_elem(0.0)
        .float()
        .mul_scalar(2.0)
        .sub_scalar(1.0);
    weighted
        .iter()
        .map(|w_i| {
            (w_i.clone().sign() * elected.clone())
                .greater_elem(0.0)
                .float()
        })
        .collect()
}
