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
use crate::checkpoint::{
    BlockPosition, CheckpointError, Dtype, Granularity, LayerGroups, ModelSet,
};

/// A model set's tensors on a device, ready to materialize many candidates.
pub struct Merger<B: Backend> {
    store: Placed,
    device: B::Device,
    groups: LayerGroups,
    expert_labels: Vec<String>,
}

/// Where the tensors live.
enum Placed {
    /// Host memory, merged by the host engine (candidates are moved to the merger's device).
    Host(HostStore),
    /// A CUDA GPU, merged by the GPU kernels; candidates stay there.
    #[cfg(feature = "cuda")]
    Cuda(super::engine::cube::CubeStore<cubecl::cuda::CudaRuntime>),
}

impl Placed {
    /// An empty store where `device` is: a CUDA GPU, or the host for every other device.
    fn for_device<D: std::any::Any>(device: &D) -> Placed {
        #[cfg(feature = "cuda")]
        if let Some(cuda) =
            (device as &dyn std::any::Any).downcast_ref::<cubecl::cuda::CudaDevice>()
        {
            use cubecl::Runtime;
            return Placed::Cuda(super::engine::cube::CubeStore::new(
                cubecl::cuda::CudaRuntime::client(cuda),
            ));
        }
        let _ = device;
        Placed::Host(HostStore::new())
    }

    fn push(&mut self, raw: &RawTensor) {
        match self {
            Placed::Host(store) => store.push(raw.meta.clone(), raw.to_host()),
            #[cfg(feature = "cuda")]
            Placed::Cuda(store) => {
                let rows: Vec<&[u8]> = raw.rows.iter().map(|r| r.as_ref()).collect();
                store.push(raw.meta.clone(), &rows)
            }
        }
    }
}

/// Runs `$body` with `$store` bound to the merger's store, whichever engine holds it.
macro_rules! with_store {
    ($placed:expr, |$store:ident| $body:expr) => {
        match $placed {
            Placed::Host($store) => $body,
            #[cfg(feature = "cuda")]
            Placed::Cuda($store) => $body,
        }
    };
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
        let labels = set
            .experts
            .iter()
            .map(|e| e.path().display().to_string())
            .collect();
        Merger::build(
            &names,
            granularity,
            labels,
            device,
            progress,
            |name, block| RawTensor::read(set, name, block),
        )
    }

    /// A merger over tensors given as `f32` values (tests, fixtures): each entry is a tensor's
    /// metadata (its `dtype` is ignored) with its base and expert values.
    pub fn from_values(
        tensors: Vec<(TensorMeta, Vec<f32>, Vec<Vec<f32>>)>,
        granularity: &Granularity,
        device: &B::Device,
    ) -> Result<Merger<B>, MergeError> {
        let names: Vec<&str> = tensors.iter().map(|(m, _, _)| m.name.as_str()).collect();
        let k = tensors.first().map_or(0, |(_, _, e)| e.len());
        let labels = (0..k).map(|i| format!("expert {}", i + 1)).collect();
        let hidden = ProgressBar::hidden();
        Merger::build(
            &names,
            granularity,
            labels,
            device,
            &hidden,
            |name, block| {
                let (meta, base, experts) = tensors
                    .iter()
                    .find(|(m, _, _)| m.name == name)
                    .expect("the names come from these tensors");
                let rows = std::iter::once(base)
                    .chain(experts)
                    .map(|row| {
                        let mut bytes = Vec::new();
                        Dtype::F32.encode_into(row, &mut bytes);
                        std::borrow::Cow::Owned(bytes)
                    })
                    .collect();
                let meta = TensorMeta {
                    block,
                    dtype: Dtype::F32,
                    ..meta.clone()
                };
                Ok(RawTensor { meta, rows })
            },
        )
    }

    /// A merger over the tensors `names`, each read by `read(name, block position)`, moved onto
    /// `device` one at a time. `expert_labels` name the experts in errors.
    pub fn build<'a>(
        names: &[&str],
        granularity: &Granularity,
        expert_labels: Vec<String>,
        device: &B::Device,
        progress: &ProgressBar,
        mut read: impl FnMut(&str, Option<BlockPosition>) -> Result<RawTensor<'a>, CheckpointError>,
    ) -> Result<Merger<B>, MergeError> {
        let groups = LayerGroups::new(names, granularity)?;
        progress.set_length(names.len() as u64);
        let mut store = Placed::for_device(device);
        for (i, name) in names.iter().enumerate() {
            store.push(&read(name, groups.blocks[i])?);
            progress.inc(1);
        }
        Ok(Merger {
            store,
            device: device.clone(),
            groups,
            expert_labels,
        })
    }

    /// The layer groups per-group parameters refer to.
    pub fn groups(&self) -> &LayerGroups {
        &self.groups
    }

    /// The tensors, in the base's order (the group of tensor `i` is `groups().of_tensor[i]`).
    pub fn tensors(&self) -> &[TensorMeta] {
        with_store!(&self.store, |store| store.tensors())
    }

    /// Bytes the merger holds on its device (rows and cached ranks).
    pub fn bytes(&self) -> usize {
        with_store!(&self.store, |store| store.bytes())
    }

    /// The time to copy `bytes` bytes where the merger's tensors are (host memory, or on the
    /// GPU by a vectorized copy kernel), into a buffer allocated before timing: the bandwidth a
    /// merge is compared with. Median of `reps` after one warm-up.
    pub fn copy_time(&self, bytes: usize, reps: usize) -> std::time::Duration {
        let median = |mut f: Box<dyn FnMut() + '_>| {
            f();
            let mut times: Vec<_> = (0..reps.max(1))
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed()
                })
                .collect();
            times.sort();
            times[times.len() / 2]
        };
        match &self.store {
            Placed::Host(_) => {
                let source = vec![1u8; bytes];
                let mut target = vec![0u8; bytes];
                median(Box::new(move || {
                    target.copy_from_slice(std::hint::black_box(&source));
                    std::hint::black_box(&target);
                }))
            }
            #[cfg(feature = "cuda")]
            Placed::Cuda(store) => {
                let source = store.client().create_from_slice(&vec![1u8; bytes]);
                median(Box::new(move || {
                    let copy = store.copy(&source, bytes);
                    store.sync();
                    drop(copy);
                }))
            }
        }
    }

    /// Bytes reserved on the merger's GPU by its memory pool, if it is on one.
    pub fn device_memory(&self) -> Option<u64> {
        match &self.store {
            Placed::Host(_) => None,
            #[cfg(feature = "cuda")]
            Placed::Cuda(store) => store.client().memory_usage().ok().map(|m| m.bytes_reserved),
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

    /// Materializes an already-resolved plan. The first plan whose masks need magnitude ranks
    /// builds them for every tensor, on all cores.
    pub fn materialize_resolved(&self, plan: &ResolvedPlan) -> Candidate<B> {
        let jobs: Vec<Job> = self
            .tensors()
            .iter()
            .enumerate()
            .map(|(t, meta)| {
                let p = &plan.groups[self.groups.of_tensor[t]];
                tensor_job(plan.method, meta, p, plan.seed, || self.slerp_sums(t))
            })
            .collect();
        let ranks = jobs.iter().any(Job::needs_ranks);
        let row_ranks = jobs.iter().any(Job::needs_row_ranks);
        if ranks || row_ranks {
            with_store!(&self.store, |store| store.prepare(ranks, row_ranks));
        }
        let tensors = jobs
            .iter()
            .zip(self.tensors())
            .enumerate()
            .map(|(t, (job, meta))| (meta.name.clone(), meta.shape.clone(), self.run_f32(t, job)))
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
        with_store!(&self.store, |store| store.slerp_sums(t))
    }

    /// Runs `job` on tensor `t` into an `f32` tensor on the merger's device.
    fn run_f32(&self, t: usize, job: &Job) -> Tensor<B, 1> {
        match &self.store {
            Placed::Host(store) => host_tensor(store.run(t, job, Dtype::F32), &self.device),
            #[cfg(feature = "cuda")]
            Placed::Cuda(store) => cuda_tensor(store, store.run(t, job, Dtype::F32), &self.device),
        }
    }
}

/// A tensor on `device` from host values (an `f32` result).
fn host_tensor<B: Backend>(values: HostRows, device: &B::Device) -> Tensor<B, 1> {
    let HostRows::F32(values) = values else {
        unreachable!("f32 was asked for")
    };
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// A burn tensor over a merged `f32` buffer on a CUDA GPU, without a copy when `B` is burn's
/// CUDA backend (through the host otherwise, e.g. under burn's fusion).
#[cfg(feature = "cuda")]
fn cuda_tensor<B: Backend>(
    store: &super::engine::cube::CubeStore<cubecl::cuda::CudaRuntime>,
    merged: super::engine::cube::CubeMerged,
    device: &B::Device,
) -> Tensor<B, 1> {
    use burn::tensor::TensorPrimitive;
    let Some(cuda) = (device as &dyn std::any::Any).downcast_ref::<cubecl::cuda::CudaDevice>()
    else {
        return host_tensor(store.read(&merged), device);
    };
    let primitive = burn_cubecl::tensor::CubeTensor::new_contiguous(
        store.client().clone(),
        cuda.clone(),
        burn::tensor::Shape::new([merged.n]),
        merged.handle.clone(),
        burn::tensor::DType::F32,
    );
    let boxed: Box<dyn std::any::Any> = Box::new(primitive);
    match boxed.downcast::<B::FloatTensorPrimitive>() {
        Ok(p) => Tensor::from_primitive(TensorPrimitive::Float(*p)),
        Err(_) => host_tensor(store.read(&merged), device),
    }
}

/// Reads a tensor back to the host as `f32` values.
pub fn host_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converts to f32")
}
