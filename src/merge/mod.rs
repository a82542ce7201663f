//! Merging: the plan, the methods (one file each), and the two ways to run them — the [`Merger`]
//! that keeps task vectors on a device for many candidates, and [`merge_streaming`], which merges
//! a model tensor by tensor straight to disk.
//!
//! Every method works on one tensor at a time from [`TensorInputs`] (the base and the task vectors
//! `tau_i = theta_i - theta_base`, as rows of one matrix) and the [`GroupParams`] of the tensor's
//! layer group, so both paths run the same code.

mod breadcrumbs;
mod consensus;
mod dare;
mod della;
mod gta;
mod host_kernel;
mod inputs;
mod linear;
mod lines;
mod merger;
mod method;
mod plan;
mod slerp;
mod sparsify;
mod stream;
mod ties;

use burn::prelude::*;

pub use gta::{Sparsifier, sign_agreement};
pub use inputs::{TensorInputs, host_values};
pub use merger::{Candidate, Merger};
pub use method::{DefaultValue, Kind, Method, ParamSpec, Scope, UnknownMethod};
pub use plan::{GroupParams, MergePlan, ParamValue, PlanError, ResolvedPlan};
pub use stream::{StreamOptions, merge_streaming};
pub use ties::keep_largest;

use crate::checkpoint::{CheckpointError, GroupError};

/// Anything that stops a merge.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The layer groups could not be formed.
    #[error(transparent)]
    Groups(#[from] GroupError),
    /// The plan does not fit the method or the groups.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Merges one tensor with `method` and its group's parameters; `seed` drives random methods.
pub fn merge_tensor<B: Backend>(
    method: Method,
    inputs: &TensorInputs<B>,
    p: &GroupParams,
    seed: u64,
) -> Tensor<B, 1> {
    use Sparsifier as S;
    match method {
        Method::Linear => linear::merge(inputs, p),
        Method::TaskArithmetic => gta::merge(inputs, p, S::None, false, seed),
        Method::Ties => gta::merge(inputs, p, S::Magnitude, true, seed),
        Method::DareLinear => gta::merge(inputs, p, S::Random, false, seed),
        Method::DareTies => gta::merge(inputs, p, S::Random, true, seed),
        Method::Breadcrumbs => gta::merge(inputs, p, S::Outliers, false, seed),
        Method::BreadcrumbsTies => gta::merge(inputs, p, S::Outliers, true, seed),
        Method::Della => gta::merge(inputs, p, S::MagPrune, true, seed),
        Method::DellaLinear => gta::merge(inputs, p, S::MagPrune, false, seed),
        Method::Slerp => slerp::merge(inputs, p),
        Method::Consensus => consensus::merge(inputs, p),
        Method::Lines => lines::merge(inputs, p),
    }
}
