//! Synthetic checkpoints made by code, for the demo, tests and benchmarks: a Llama-shaped base
//! model (the tensor names and `config.json` transformers and mergekit expect) and experts that are
//! the base plus a seeded task vector. Values come from a counter-based hash of (seed, tensor,
//! model, index), so any part of any tensor is generated independently, on every core. Nothing
//! is downloaded.

use std::path::Path;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::checkpoint::{CheckpointError, Dtype, ModelWriter, TensorSpec};

/// The shape of a synthetic Llama: `layers` blocks of width `hidden` with an MLP of width
/// `intermediate`, full multi-head attention, untied embedding and head.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticSpec {
    /// Number of blocks.
    pub layers: usize,
    /// Hidden width.
    pub hidden: usize,
    /// MLP width (gate, up and down projections).
    pub intermediate: usize,
    /// Vocabulary size of the embedding and head.
    pub vocab: usize,
    /// Stored dtype.
    pub dtype: Dtype,
}

impl SyntheticSpec {
    /// Tensor names and shapes, in file order (embeddings, blocks, final norm, head).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i) = (self.hidden, self.intermediate);
        let mut t = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, h])];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            t.push((format!("{p}.input_layernorm.weight"), vec![h]));
            for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                t.push((format!("{p}.self_attn.{proj}.weight"), vec![h, h]));
            }
            t.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            t.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            t.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            t.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        }
        t.push(("model.norm.weight".to_string(), vec![h]));
        t.push(("lm_head.weight".to_string(), vec![self.vocab, h]));
        t
    }

    /// Number of parameters.
    pub fn params(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// Bytes of tensor data in one model.
    pub fn bytes(&self) -> u64 {
        self.params() * self.dtype.size() as u64
    }

    /// Attention heads: one per 64 channels (at least one), as Llama models have.
    pub fn heads(&self) -> usize {
        (self.hidden / 64).max(1)
    }

    /// The model's `config.json`, as transformers writes it for `LlamaForCausalLM`.
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads(),
            "num_key_value_heads": self.heads(),
            "vocab_size": self.vocab,
            "hidden_act": "silu",
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": false,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": self.dtype.torch_name(),
        })
    }
}

/// A stateless 64-bit mix (SplitMix64's finalizer).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An approximately standard normal value from 64 random bits: the centred sum of four 16-bit
/// uniforms, scaled to unit variance.
fn gaussian(bits: u64) -> f32 {
    let sum = (bits & 0xFFFF) + ((bits >> 16) & 0xFFFF) + ((bits >> 32) & 0xFFFF) + (bits >> 48);
    (sum as f32 - 131_070.0) / 37_837.2
}

/// Element `j` of tensor `name` of the base (`expert = None`) or of expert `e`: the base is
/// `0.05 N(0, 1)`; an expert adds `0.02 N(0, 1)` to about half of the entries.
pub fn synthetic_value(name_key: u64, j: u64, expert: Option<usize>) -> f32 {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let base = 0.05 * gaussian(mix64(name_key ^ j.wrapping_mul(GOLDEN)));
    match expert {
        None => base,
        Some(e) => {
            let bits = mix64(
                name_key
                    ^ (j ^ ((e as u64 + 1) << 48))
                        .wrapping_mul(GOLDEN)
                        .rotate_left(17),
            );
            if bits & 1 == 0 {
                base
            } else {
                base + 0.02 * gaussian(mix64(bits))
            }
        }
    }
}

/// The key of tensor `name` under `seed`.
pub fn tensor_key(seed: u64, name: &str) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), seed)
}

/// Tensor `name`'s `numel` values as little-endian bytes of `dtype`, generated on every core.
pub fn synthetic_bytes(
    name: &str,
    numel: usize,
    seed: u64,
    expert: Option<usize>,
    dtype: Dtype,
) -> Vec<u8> {
    let key = tensor_key(seed, name);
    let size = dtype.size();
    let mut out = vec![0u8; numel * size];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = numel.div_ceil(threads).max(1 << 16);
    std::thread::scope(|scope| {
        for (c, part) in out.chunks_mut(chunk * size).enumerate() {
            scope.spawn(move || {
                let mut values = Vec::with_capacity(part.len() / size);
                let start = c * chunk;
                values.extend(
                    (0..part.len() / size)
                        .map(|i| synthetic_value(key, (start + i) as u64, expert)),
                );
                let mut bytes = Vec::with_capacity(part.len());
                dtype.encode_into(&values, &mut bytes);
                part.copy_from_slice(&bytes);
            });
        }
    });
    out
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
        let bytes = synthetic_bytes(name, shape.iter().product(), seed, expert, spec.dtype);
        writer.write_encoded(name, &bytes)?;
    }
    let path = writer.staging_dir().join("config.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&spec.config()).expect("config serializes"),
    )
    .map_err(|e| CheckpointError::io(&path, "cannot write", e))?;
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_seeded_roughly_normal_and_experts_move_half_of_them() {
        let key = tensor_key(7, "model.layers.0.mlp.up_proj.weight");
        let n = 100_000u64;
        let base: Vec<f32> = (0..n).map(|j| synthetic_value(key, j, None)).collect();
        let mean = base.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let var = base
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        assert!(mean.abs() < 1e-3, "mean {mean}");
        assert!((var.sqrt() - 0.05).abs() < 1e-3, "std {}", var.sqrt());
        let moved = (0..n)
            .filter(|&j| synthetic_value(key, j, Some(0)) != base[j as usize])
            .count() as f64
            / n as f64;
        assert!((moved - 0.5).abs() < 0.01, "{moved}");
        let both = (0..n)
            .filter(|&j| {
                synthetic_value(key, j, Some(0)) != base[j as usize]
                    && synthetic_value(key, j, Some(1)) != base[j as usize]
            })
            .count() as f64
            / n as f64;
        assert!(
            (both - 0.25).abs() < 0.01,
            "experts move independent entries: {both}"
        );
        let bytes = synthetic_bytes("t", 300_001, 7, Some(1), Dtype::F32);
        let again = synthetic_bytes("t", 300_001, 7, Some(1), Dtype::F32);
        assert_eq!(bytes, again);
        let k = tensor_key(7, "t");
        assert_eq!(
            bytes[4 * 300_000..],
            synthetic_value(k, 300_000, Some(1)).to_le_bytes()
        );
    }

    #[test]
    fn the_layout_is_llamas() {
        let spec = SyntheticSpec {
            layers: 2,
            hidden: 128,
            intermediate: 344,
            vocab: 100,
            dtype: Dtype::BF16,
        };
        assert_eq!(spec.tensors().len(), 2 + 9 * 2 + 1);
        assert_eq!(
            spec.params(),
            2 * 100 * 128 + 2 * (4 * 128 * 128 + 3 * 128 * 344 + 2 * 128) + 128
        );
        assert_eq!(spec.config()["num_attention_heads"], 2);
    }
}
