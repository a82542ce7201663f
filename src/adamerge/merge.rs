//! The merged encoder as a differentiable function of the merge coefficients:
//! `theta = theta_base + sum_i lambda[g, i] * d_i` per tensor of group `g`, where `d_i` is expert
//! `i`'s task vector (AdaMerging) or its TIES-trimmed, sign-elected version (AdaMerging++).
//!
//! **Why the chain rule is applied by hand.** Each group's tensors are laid end to end in one
//! flat vector, so a merge is one matrix product per group (`[1, k] x [k, n_g]`) on the inner
//! backend, outside the autograd graph. The merged tensors enter the graph as leaves; after the
//! backward pass their gradients `G` give the coefficients' gradient in one product per group,
//! `dL/dlambda[g, i] = <G_g, d_i>`. The graph thus holds only the network, never one node per
//! tensor and coefficient, and nothing in a step waits for the host.

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::merge::Merger;
use crate::zoo::model::NamedTensor;

/// One tensor of a group: its name, shape and place in the group's flat vector.
#[derive(Clone)]
struct Member {
    name: String,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// One coefficient group's tensors, flattened end to end.
struct Group<I: Backend> {
    members: Vec<Member>,
    /// `[1, n]`.
    base: Tensor<I, 2>,
    /// Rows `d_1..d_k`, `[k, n]`.
    deltas: Tensor<I, 2>,
}

/// Base and (trimmed) task vectors, ready to merge with coefficients on the device.
pub struct DifferentiableMerge<B: AutodiffBackend> {
    groups: Vec<Group<B::InnerBackend>>,
    /// Where each tensor of the merger lives: (group, member), in the merger's order.
    order: Vec<(usize, usize)>,
    experts: usize,
    ties: bool,
}

/// The merged tensors of one step as leaves of the autograd graph, with the task vectors they
/// were merged from (sign-masked under TIES), which turn the leaves' gradients into the
/// coefficients' gradient.
pub struct MergedLeaves<B: AutodiffBackend> {
    /// The merged tensors, tracked, in the merger's order.
    pub tensors: Vec<NamedTensor<B>>,
    /// Per group: the leaves' positions in `tensors`, in the group's order.
    members: Vec<Vec<usize>>,
    /// Per group: the task vectors this merge used, `[k, n_g]`.
    deltas: Vec<Tensor<B::InnerBackend, 2>>,
}

impl<B: AutodiffBackend> DifferentiableMerge<B> {
    /// Takes the base and task vectors from `merger`. With `ties_density`, each task vector keeps
    /// its `density` fraction of largest magnitudes (TIES trim, per tensor) and each merge elects
    /// signs with the current coefficients, as the `ties` method does with
    /// `normalize = false, lambda = 1`.
    pub fn new(merger: &Merger<B::InnerBackend>, ties_density: Option<f64>) -> Self {
        let layer_groups = merger.groups();
        let experts = merger.tensors().first().map_or(0, |t| t.experts);
        let mut members: Vec<Vec<(usize, Member)>> = vec![Vec::new(); layer_groups.names.len()];
        let mut order = Vec::with_capacity(merger.tensors().len());
        for (t, meta) in merger.tensors().iter().enumerate() {
            let g = layer_groups.of_tensor[t];
            let start = members[g].last().map_or(0, |(_, m)| m.range.end);
            order.push((g, members[g].len()));
            members[g].push((
                t,
                Member {
                    name: meta.name.clone(),
                    shape: meta.shape.clone(),
                    range: start..start + meta.numel(),
                },
            ));
        }
        let groups = members
            .into_iter()
            .map(|group| {
                // Per tensor: its base `[n_t]` and task vectors `[k, n_t]` (TIES-trimmed).
                let (bases, deltas): (Vec<_>, Vec<_>) = group
                    .iter()
                    .map(|(t, _)| merger.task_vectors(*t, ties_density))
                    .unzip();
                let base = Tensor::cat(bases, 0);
                let n = base.dims()[0];
                Group {
                    members: group.into_iter().map(|(_, m)| m).collect(),
                    base: base.reshape([1, n]),
                    deltas: Tensor::cat(deltas, 1),
                }
            })
            .collect();
        DifferentiableMerge {
            groups,
            order,
            experts,
            ties: ties_density.is_some(),
        }
    }

    /// Number of coefficient groups (rows of the coefficient matrix).
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Number of experts (columns of the coefficient matrix).
    pub fn experts(&self) -> usize {
        self.experts
    }

    /// Per group, the task vectors merged with `coefficients` (`[groups, experts]`): under TIES,
    /// the entries that disagree with the sign these coefficients elect are zeroed (the election
    /// is piecewise constant and carries no gradient).
    fn deltas(&self, coefficients: &Tensor<B::InnerBackend, 2>) -> Vec<Tensor<B::InnerBackend, 2>> {
        let k = self.experts;
        self.groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                if !self.ties {
                    return group.deltas.clone();
                }
                let n = group.base.dims()[1];
                let rows: Vec<Tensor<B::InnerBackend, 2>> = (0..k)
                    .map(|i| group.deltas.clone().slice([i..i + 1, 0..n]))
                    .collect();
                let weighted: Vec<Tensor<B::InnerBackend, 1>> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let w = coefficients.clone().slice([g..g + 1, i..i + 1]);
                        (d.clone() * w).reshape([n])
                    })
                    .collect();
                let kept = rows
                    .into_iter()
                    .zip(sign_agreement(&weighted))
                    .map(|(d, agrees)| d * agrees.reshape([1, n]))
                    .collect();
                Tensor::cat(kept, 0)
            })
            .collect()
    }

    /// Per group, `base + coefficients[g] x deltas[g]`, flat `[1, n_g]`.
    fn combine(
        &self,
        coefficients: &Tensor<B::InnerBackend, 2>,
        deltas: &[Tensor<B::InnerBackend, 2>],
    ) -> Vec<Tensor<B::InnerBackend, 2>> {
        let k = self.experts;
        self.groups
            .iter()
            .zip(deltas)
            .enumerate()
            .map(|(g, (group, d))| {
                let row = coefficients.clone().slice([g..g + 1, 0..k]);
                group.base.clone() + row.matmul(d.clone())
            })
            .collect()
    }

    /// The merged tensors for `coefficients` (`[groups, experts]`), TIES signs elected by the
    /// coefficients `elect` (usually the same), without a graph, in the merger's order.
    pub fn merged(
        &self,
        coefficients: &Tensor<B::InnerBackend, 2>,
        elect: &Tensor<B::InnerBackend, 2>,
    ) -> Vec<NamedTensor<B::InnerBackend>> {
        let flat = self.combine(coefficients, &self.deltas(elect));
        self.order
            .iter()
            .map(|&(g, m)| {
                let member = &self.groups[g].members[m];
                let values = flat[g]
                    .clone()
                    .slice([0..1, member.range.clone()])
                    .reshape([member.range.len()]);
                (member.name.clone(), member.shape.clone(), values)
            })
            .collect()
    }

    /// The merged tensors for `coefficients` as tracked leaves (TIES signs elected by `elect`),
    /// from whose gradients [`MergedLeaves::coefficient_gradient`] computes the coefficients'
    /// gradient.
    pub fn leaves(
        &self,
        coefficients: &Tensor<B::InnerBackend, 2>,
        elect: &Tensor<B::InnerBackend, 2>,
    ) -> MergedLeaves<B> {
        let deltas = self.deltas(elect);
        let flat = self.combine(coefficients, &deltas);
        let mut members: Vec<Vec<usize>> = self
            .groups
            .iter()
            .map(|g| vec![0; g.members.len()])
            .collect();
        let tensors = self
            .order
            .iter()
            .enumerate()
            .map(|(position, &(g, m))| {
                members[g][m] = position;
                let member = &self.groups[g].members[m];
                let values = flat[g]
                    .clone()
                    .slice([0..1, member.range.clone()])
                    .reshape([member.range.len()]);
                let leaf = Tensor::<B, 1>::from_inner(values).require_grad();
                (member.name.clone(), member.shape.clone(), leaf)
            })
            .collect();
        MergedLeaves {
            tensors,
            members,
            deltas,
        }
    }
}

impl<B: AutodiffBackend> MergedLeaves<B> {
    /// The gradient of the loss whose backward pass gave `grads` with respect to the
    /// coefficients, `[groups, experts]`: per group, the leaves' gradients laid end to end times
    /// the task vectors. A leaf the loss does not depend on contributes nothing.
    pub fn coefficient_gradient(&self, grads: &B::Gradients) -> Tensor<B::InnerBackend, 2> {
        let rows = self
            .members
            .iter()
            .zip(&self.deltas)
            .map(|(positions, deltas)| {
                let parts = positions
                    .iter()
                    .map(|&p| {
                        let leaf = &self.tensors[p].2;
                        leaf.grad(grads)
                            .unwrap_or_else(|| leaf.clone().inner().zeros_like())
                    })
                    .collect();
                let n = deltas.dims()[1];
                Tensor::cat(parts, 0)
                    .reshape([1, n])
                    .matmul(deltas.clone().transpose())
            })
            .collect();
        Tensor::cat(rows, 0)
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
