//! The integration tests, one binary.

mod adamerge;
mod checkpoints;
mod cli;
mod common;
mod eval;
mod faults;
mod methods;
mod study;
mod zoo;
