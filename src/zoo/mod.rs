//! The built-in multi-task benchmark: a small analog of the eight-task CLIP ViT model-merging
//! benchmark, made entirely by code (procedural image tasks, a shared pretrained base, experts
//! fine-tuned from it) so that merge searches can be tried and tested without downloads.

pub mod baselines;
pub mod build;
pub mod evaluate;
pub mod model;
pub mod tasks;
pub mod train;
