//! `mergesearch demo`: the default job until the search lands. Builds a small synthetic base and
//! three experts (once), writes a TIES merge config beside them, merges, and reports how far the
//! merged model lies from the base and from each expert.

use std::path::Path;

use anyhow::Context;

use super::{MergeConfig, merge};
use crate::checkpoint::{DEFAULT_MAX_SHARD_BYTES, Dtype, Model};
use crate::device::DeviceSpec;
use crate::fixtures::{SyntheticSpec, write_synthetic_model};

const SPEC: SyntheticSpec = SyntheticSpec {
    layers: 4,
    hidden: 128,
    vocab: 512,
    dtype: Dtype::BF16,
};
const SEED: u64 = 2024;
const EXPERTS: [&str; 3] = ["expert_a", "expert_b", "expert_c"];

const CONFIG: &str = r#"# A TIES merge of three experts, one weight per layer group for expert_a.
# Layer groups (see `mergesearch inspect base`): embeddings, 4 blocks, head.
method = "ties"
base = "base"
granularity = "layer"
[params]
lambda = 1.0
[[experts]]
path = "expert_a"
weight = [0.2, 0.4, 0.6, 0.8, 0.5, 0.5]
density = 0.2
[[experts]]
path = "expert_b"
weight = 0.5
density = 0.2
[[experts]]
path = "expert_c"
weight = 0.5
density = 0.3
"#;

/// Runs the demo in `out`.
pub fn run(out: &Path, device: DeviceSpec) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, expert) in std::iter::once(("base", None))
        .chain(EXPERTS.iter().enumerate().map(|(i, n)| (*n, Some(i))))
    {
        let dir = out.join(name);
        if Model::open(&dir).is_err() {
            eprintln!("writing synthetic model {}", dir.display());
            write_synthetic_model(&dir, &SPEC, SEED, expert, DEFAULT_MAX_SHARD_BYTES)?;
        }
    }
    let config_path = out.join("merge.toml");
    std::fs::write(&config_path, CONFIG)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let config = MergeConfig::load(&config_path)?;
    let merged_dir = out.join("merged");
    merge(&config, &merged_dir, device, true)?;

    let merged = Model::open(&merged_dir)?;
    println!("config: {}", config_path.display());
    println!(
        "merged model: {} ({} tensors)",
        merged_dir.display(),
        merged.tensors().len()
    );
    println!("\nrelative L2 distance of the merged model to each input:");
    for name in std::iter::once("base").chain(EXPERTS) {
        let other = Model::open(&out.join(name))?;
        println!("  {name:<9} {:.4}", relative_distance(&merged, &other)?);
    }
    println!("\nnext: `mergesearch inspect {}`", merged_dir.display());
    Ok(())
}

/// `||a - b|| / ||b||` over all tensors.
fn relative_distance(a: &Model, b: &Model) -> anyhow::Result<f64> {
    let (mut diff, mut norm) = (0f64, 0f64);
    for t in a.tensors() {
        let x = a.read_f32(&t.info.name)?;
        let y = b.read_f32(&t.info.name)?;
        for (p, q) in x.iter().zip(&y) {
            diff += f64::from(p - q).powi(2);
            norm += f64::from(*q).powi(2);
        }
    }
    Ok((diff / norm.max(f64::MIN_POSITIVE)).sqrt())
}
