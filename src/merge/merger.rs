//! The [`Merger`]: a model set's base and experts held on a device once, in their own dtype,
//! materialized into candidates by plan.
//!
//! Memory on the merger's device, for a model of `N` parameters stored in `S` bytes per
//! parameter with `k` experts:
//!
//! * rows: `(k + 1) * N * S` (the base and every expert, as the checkpoints store them);
//! * magnitude ranks, built on first use: `k * N * 2` bytes for TIES and Breadcrumbs (`* 4` for
//!   tensors above 2^27 elements) and again `k * N * 2` for DELLA (`* 4` for rows above 2^16);
//! * each live candidate: `N * 4` bytes (`f32`, what in-process evaluators take).
//!
//! A bf16 7B model (`N` = 6.7e9) with 3 experts: 54 GB of rows, 40 GB of TIES ranks, 27 GB per
//! candidate. For a one-shot merge of a model larger than memory use
//! [`merge_streaming`](super::merge_streaming), which holds a few tensors at a time.

use burn::prelude::*;
use indicatif::ProgressBar;

use super::engine::{HostRows, HostStore, Job, Mask, Mix, Store, TensorMeta};
use super::plan::{MergePlan, ResolvedPlan};
use super::source::RawTensor;
use super::{Gta, MergeError, tensor_job};
use crate::checkpoint::{Dtype, Granularity, LayerGroups, ModelSet};

/// A model set's tensors on a device, ready to materialize many candidates.
pub struct Merger<B: Backend> {
    store: Placed<B>,
    groups: LayerGroups,
    expert_labels: Vec<String>,
}

/// Where the tensors live.
enum Placed<B: Backend> {
    /// Host memory, merged by the host engine; candidates are moved to `device`.
    Host { store: HostStore, device: B::Device },
}

/// A merged model on the device: tensors in the base's order, flattened.
pub struct Candidate<B: Backend> {
    /// `(name, shape, values)` for each tensor.
    pub tensors: Vec<(String, Vec<usize>, Tensor<B, 1>)>,
}

impl<B: Backend> Merger<B> {
    /// Loads the base and experts of `set` onto `device`, grouping tensors at `granularity`.
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
        let mut store = HostStore::new();
        for (i, name) in names.iter().enumerate() {
            let raw = RawTensor::read(set, name, groups.blocks[i])?;
            store.push(raw.meta.clone(), raw.to_host());
            progress.inc(1);
        }
        Ok(Merger {
            store: Placed::Host {
                store,
                device: device.clone(),
            },
            groups,
            expert_labels: set
                .experts
                .iter()
                .map(|e| e.path().display().to_string())
                .collect(),
        })
    }

    /// A merger over tensors given as `f32` values (tests, fixtures): each entry is a tensor's
    /// metadata (its `dtype` is ignored) with its base and expert values.
    pub fn from_values(
        tensors: Vec<(TensorMeta, Vec<f32>, Vec<Vec<f32>>)>,
        granularity: &Granularity,
        device: &B::Device,
    ) -> Result<Merger<B>, MergeError> {
        let names: Vec<&str> = tensors.iter().map(|(m, _, _)| m.name.as_str()).collect();
        let groups = LayerGroups::new(&names, granularity)?;
        let k = tensors.first().map_or(0, |(_, _, e)| e.len());
        let mut store = HostStore::new();
        for (mut meta, base, experts) in tensors {
            meta.dtype = Dtype::F32;
            let mut rows = base;
            experts.iter().for_each(|e| rows.extend_from_slice(e));
            store.push(meta, HostRows::from_f32(rows));
        }
        Ok(Merger {
            store: Placed::Host {
                store,
                device: device.clone(),
            },
            groups,
            expert_labels: (0..k).map(|i| format!("expert {}", i + 1)).collect(),
        })
    }

    /// The layer groups per-group parameters refer to.
    pub fn groups(&self) -> &LayerGroups {
        &self.groups
    }

    /// The tensors, in the base's order (the group of tensor `i` is `groups().of_tensor[i]`).
    pub fn tensors(&self) -> &[TensorMeta] {
        match &self.store {
            Placed::Host { store, .. } => store.tensors(),
        }
    }

    /// Bytes the merger holds on its device (rows and cached ranks).
    pub fn bytes(&self) -> usize {
        match &self.store {
            Placed::Host { store, .. } => store.bytes(),
        }
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
        let tensors = (0..self.tensors().len())
            .map(|t| {
                let p = &plan.groups[self.groups.of_tensor[t]];
                let meta = &self.tensors()[t];
                let job = tensor_job(plan.method, meta, p, plan.seed, || self.slerp_sums(t));
                (meta.name.clone(), meta.shape.clone(), self.run_f32(t, &job))
            })
            .collect();
        Candidate { tensors }
    }

    /// Tensor `t`'s base and its `k` task vectors as rows `[k, n]`, each task vector keeping
    /// only its `density` fraction of largest magnitudes when `trim` is given (AdaMerging).
    pub fn task_vectors(&self, t: usize, trim: Option<f64>) -> (Tensor<B, 1>, Tensor<B, 2>) {
        let meta = &self.tensors()[t];
        let (n, k) = (meta.numel(), meta.experts);
        let one_hot = |i: usize| (0..k).map(|j| if i == j { 1.0 } else { 0.0 }).collect();
        let base = self.run_f32(
            t,
            &Job::Combine {
                base: 1.0,
                taus: vec![0.0; k],
            },
        );
        let rows: Vec<Tensor<B, 1>> = (0..k)
            .map(|i| {
                let job = match trim {
                    None => Job::Combine {
                        base: 0.0,
                        taus: one_hot(i),
                    },
                    Some(density) => {
                        let (lo, hi) = super::ties::window(n, density);
                        let window = super::gta::window_mask((lo, hi), n);
                        Job::Gta(Gta {
                            masks: (0..k)
                                .map(|j| if j == i { window } else { Mask::Nothing })
                                .collect(),
                            weights: one_hot(i),
                            rescale: false,
                            mix: Mix::Sum { base: 0.0 },
                        })
                    }
                };
                self.run_f32(t, &job)
            })
            .collect();
        (base, Tensor::stack(rows, 0))
    }

    fn slerp_sums(&self, t: usize) -> [f32; 3] {
        match &self.store {
            Placed::Host { store, .. } => store.slerp_sums(t),
        }
    }

    /// Runs `job` on tensor `t` into an `f32` tensor on the merger's device.
    fn run_f32(&self, t: usize, job: &Job) -> Tensor<B, 1> {
        match &self.store {
            Placed::Host { store, device } => {
                let HostRows::F32(values) = store.run(t, job, Dtype::F32) else {
                    unreachable!("f32 was asked for")
                };
                let n = values.len();
                Tensor::from_data(TensorData::new(values, [n]), device)
            }
        }
    }
}

/// Reads a tensor back to the host as `f32` values.
pub fn host_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converts to f32")
}
