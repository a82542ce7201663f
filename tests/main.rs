//! The integration tests, one binary.

mod adamerge;
mod checkpoints;
mod cli;
mod common;
mod eval;
mod faults;
mod fidelity;
#[cfg(feature = "wgpu")]
mod gpu_kernels;
mod methods;
mod scaling;
mod study;
mod vision;
mod zoo;
