//! The [`Merger`]: a model set's base and task vectors held on a device once, materialized into
//! candidates by plan.
//!
//! Peak memory: the merger holds `(k + 1)` copies of the model in f32 (base and `k` task vectors)
//! on its device. TIES and Breadcrumbs add, on first use, the sorted magnitudes of each task vector
//! on the host (`k` copies in f32); DELLA adds its ranks on the device (`k` copies in f32). A
//! candidate is one more copy. A bf16 model takes twice its file size per copy, since tensors are
//! f32 on the device. For a one-shot merge of a model larger than memory, use
//! [`merge_streaming`](super::merge_streaming), which holds one tensor at a time.

use burn::prelude::*;
use indicatif::ProgressBar;

use super::inputs::TensorInputs;
use super::plan::{MergePlan, ResolvedPlan};
use super::{MergeError, merge_tensor};
use crate::checkpoint::{Granularity, LayerGroups, ModelSet};

/// Task vectors on a device, ready to materialize many candidates.
pub struct Merger<B: Backend> {
    tensors: Vec<TensorInputs<B>>,
    groups: LayerGroups,
    expert_labels: Vec<String>,
}

/// A merged model on the device: tensors in the base's order, flattened.
pub struct Candidate<B: Backend> {
    /// `(name, shape, values)` for each tensor.
    pub tensors: Vec<(String, Vec<usize>, Tensor<B, 1>)>,
}

impl<B: Backend> Merger<B> {
    /// Loads the base and task vectors of `set` onto `device`, grouping tensors at `granularity`.
    pub fn load(
        set: &ModelSet,
        granularity: &Granularity,
        device: &B::Device,
        progress: &ProgressBar,
    ) -> Result<Merger<B>, MergeError> {
        let names: Vec<&str> = set
            .base
            .tensors()
            .iter()
            .map(|t| t.info.name.as_str())
            .collect();
        let groups = LayerGroups::new(&names, granularity)?;
        progress.set_length(names.len() as u64);
        let mut tensors = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            tensors.push(TensorInputs::read(set, name, groups.blocks[i], device)?);
            progress.inc(1);
        }
        Ok(Merger {
            tensors,
            groups,
            expert_labels: set
                .experts
                .iter()
                .map(|e| e.path().display().to_string())
                .collect(),
        })
    }

    /// The layer groups per-group parameters refer to.
    pub fn groups(&self) -> &LayerGroups {
        &self.groups
    }

    /// Each tensor's base and task vectors, in the base's order (the group of tensor `i` is
    /// `groups().of_tensor[i]`).
    pub fn inputs(&self) -> &[TensorInputs<B>] {
        &self.tensors
    }

    /// Checks a plan against the method and this model's groups.
    pub fn resolve(&self, plan: &MergePlan) -> Result<ResolvedPlan, MergeError> {
        Ok(plan.resolve(&self.groups.names, &self.expert_labels)?)
    }

    /// Materializes the merged model described by `plan` on the device.
    pub fn materialize(&self, plan: &MergePlan) -> Result<Candidate<B>, MergeError> {
        let resolved = self.resolve(plan)?;
        Ok(self.materialize_resolved(&resolved))
    }

    /// Materializes an already-resolved plan.
    pub fn materialize_resolved(&self, plan: &ResolvedPlan) -> Candidate<B> {
        let tensors = self
            .tensors
            .iter()
            .enumerate()
            .map(|(i, inputs)| {
                let p = &plan.groups[self.groups.of_tensor[i]];
                let merged = merge_tensor(plan.method, inputs, p, plan.seed);
                (inputs.name().to_string(), inputs.shape().to_vec(), merged)
            })
            .collect();
        Candidate { tensors }
    }
}
