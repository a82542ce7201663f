//! mergesearch: search the coefficients with which fine-tuned checkpoints of one base model are
//! merged. `docs/ARCHITECTURE.md` is the architecture.

pub mod adamerge;
pub mod alloc;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod device;
pub mod eval;
pub mod failpoint;
pub mod fixtures;
pub mod interrupt;
pub mod merge;
pub mod optim;
pub mod pareto;
pub mod record;
pub mod rng;
pub mod space;
pub mod study;
pub mod vision;
pub mod zoo;
