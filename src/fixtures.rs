//! Small synthetic checkpoints made by code, for the demo, tests and benchmarks: a base model with
//! transformer-style tensor names, and experts that are the base plus a seeded task vector.
//! Nothing is downloaded.

use rand::Rng as _;
use rand_distr::StandardNormal;
use std::path::Path;

use crate::checkpoint::{CheckpointError, Dtype, ModelWriter, TensorSpec};
use crate::rng::Rng;

/// The shape of a synthetic transformer: `layers` blocks of width `hidden`.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticSpec {
    /// Number of blocks.
    pub layers: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Vocabulary size of the embedding and head.
    pub vocab: usize,
    /// Stored dtype.
    pub dtype: Dtype,
}

impl SyntheticSpec {
    /// Tensor names and shapes, in file order (embeddings, blocks, final norm, head).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let h = self.hidden;
        let mut t = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, h])];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            t.push((format!("{p}.input_layernorm.weight"), vec![h]));
            t.push((format!("{p}.self_attn.q_proj.weight"), vec![h, h]));
            t.push((format!("{p}.self_attn.o_proj.weight"), vec![h, h]));
            t.push((format!("{p}.mlp.up_proj.weight"), vec![2 * h, h]));
            t.push((format!("{p}.mlp.down_proj.weight"), vec![h, 2 * h]));
        }
        t.push(("model.norm.weight".to_string(), vec![h]));
        t.push(("lm_head.weight".to_string(), vec![self.vocab, h]));
        t
    }

    /// Bytes of tensor data in one model.
    pub fn bytes(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64 * self.dtype.size() as u64)
            .sum()
    }
}

/// Values of the synthetic base (`expert = None`) or of expert `e`: the base plus a task vector
/// of scale 0.02 whose entries are zero with probability one half.
pub fn synthetic_values(name: &str, numel: usize, seed: u64, expert: Option<usize>) -> Vec<f32> {
    let stream = crate::rng::derive_seed(seed, name, 0);
    let mut base_rng = Rng::new(stream);
    let mut values: Vec<f32> = (0..numel)
        .map(|_| (0.05 * base_rng.sample::<f64, _>(StandardNormal)) as f32)
        .collect();
    if let Some(e) = expert {
        let mut rng = Rng::new(crate::rng::derive_seed(seed, name, 1 + e as u64));
        for v in &mut values {
            if rng.random::<f64>() < 0.5 {
                *v += (0.02 * rng.sample::<f64, _>(StandardNormal)) as f32;
            }
        }
    }
    values
}

/// Writes a synthetic model (a Hugging Face directory with `config.json`) to `dir`.
pub fn write_synthetic_model(
    dir: &Path,
    spec: &SyntheticSpec,
    seed: u64,
    expert: Option<usize>,
    max_shard_bytes: u64,
) -> Result<(), CheckpointError> {
    let tensors = spec.tensors();
    let specs = tensors
        .iter()
        .map(|(name, shape)| TensorSpec {
            name: name.clone(),
            shape: shape.clone(),
            dtype: spec.dtype,
        })
        .collect();
    let mut writer = ModelWriter::create(dir, specs, max_shard_bytes, true)?;
    for (name, shape) in &tensors {
        writer.write(
            name,
            &synthetic_values(name, shape.iter().product(), seed, expert),
        )?;
    }
    let config = serde_json::json!({
        "architectures": ["SyntheticForCausalLM"],
        "hidden_size": spec.hidden,
        "num_hidden_layers": spec.layers,
        "vocab_size": spec.vocab,
        "torch_dtype": spec.dtype.torch_name(),
    });
    let path = writer.staging_dir().join("config.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&config).expect("config serializes"),
    )
    .map_err(|e| CheckpointError::io(&path, "cannot write", e))?;
    writer.finish()?;
    Ok(())
}
