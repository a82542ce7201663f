//! Merging: the plan, the methods (one file each), the [`engine`] that runs them on the host or
//! a GPU, and the two ways to use it — the [`Merger`] that keeps a model set on a device for many
//! candidates, and [`merge_streaming`], which merges a model tensor by tensor straight to disk.
//!
//! Every method turns the [`GroupParams`] of a tensor's layer group into one [`engine::Job`] for
//! that tensor, so both paths, and every device, run the same computation.

mod breadcrumbs;
mod consensus;
mod dare;
mod della;
pub mod engine;
mod gta;
mod linear;
mod lines;
mod merger;
mod method;
mod plan;
mod slerp;
mod source;
mod stream;
mod ties;

pub use engine::{Gta, Job, Mask, Mix, TensorMeta};
pub use gta::Sparsifier;
pub use merger::{Candidate, Merger, host_values};
pub use method::{DefaultValue, Kind, Method, ParamSpec, Scope, UnknownMethod};
pub use plan::{GroupParams, MergePlan, ParamValue, PlanError, ResolvedPlan};
pub use source::RawTensor;
pub use stream::{StreamOptions, merge_streaming};

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

/// The job that merges one tensor with `method` and its group's parameters; `seed` drives random
/// methods, and `slerp_sums` gives the tensor's `[|base|^2, |expert|^2, base . expert]` when the
/// method is SLERP (only then is it called).
pub fn tensor_job(
    method: Method,
    meta: &TensorMeta,
    p: &GroupParams,
    seed: u64,
    slerp_sums: impl FnOnce() -> [f32; 3],
) -> Job {
    use Sparsifier as S;
    match method {
        Method::Linear => linear::job(p),
        Method::TaskArithmetic => gta::job(meta, p, S::None, false, seed),
        Method::Ties => gta::job(meta, p, S::Magnitude, true, seed),
        Method::DareLinear => gta::job(meta, p, S::Random, false, seed),
        Method::DareTies => gta::job(meta, p, S::Random, true, seed),
        Method::Breadcrumbs => gta::job(meta, p, S::Outliers, false, seed),
        Method::BreadcrumbsTies => gta::job(meta, p, S::Outliers, true, seed),
        Method::Della => gta::job(meta, p, S::MagPrune, true, seed),
        Method::DellaLinear => gta::job(meta, p, S::MagPrune, false, seed),
        Method::Consensus => consensus::job(p),
        Method::Lines => lines::job(meta, p),
        Method::Slerp => slerp::job(p.t, slerp_sums()),
    }
}
