//! Layer groups: the units that get one merge coefficient each.
//!
//! Granularities: `model` (one group), `layer` (one group per transformer block, found from the
//! block index in names such as `layers.3.`, `layer.3.`, `h.3.`, `blocks.3.`,
//! `encoder.layer.3.`; embeddings and the final norm/head get groups of their own), `tensor`
//! (one per tensor), or user regexes, the first match winning.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Matches the block index in a tensor name; group 1 is the stack prefix, group 2 the index.
static BLOCK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(.*?(?:^|\.)(?:layers|layer|h|blocks|block))\.(\d+)(?:\.|$)")
        .expect("block pattern is valid")
});

/// Names of tensors that come before the blocks (token, position and patch embeddings).
static EMBEDDING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)embed|wte|wpe|cls_token|class_token|pos_emb|patch|shared\.weight")
        .expect("embedding pattern is valid")
});

/// Name of the group of tensors before the first block.
pub const EMBEDDINGS_GROUP: &str = "embeddings";
/// Name of the group of tensors after the last block (final norm, head, pooler).
pub const HEAD_GROUP: &str = "head";

/// How tensors are grouped for per-group coefficients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Granularity {
    /// A named granularity: `model`, `layer` or `tensor`.
    Named(NamedGranularity),
    /// User regexes in order; a tensor joins the group of the first pattern that matches it.
    Patterns {
        /// The patterns, each a Rust `regex` searched anywhere in the tensor name.
        patterns: Vec<String>,
    },
}

/// The granularities that need no patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamedGranularity {
    /// One group for the whole model.
    Model,
    /// One group per block, plus embeddings and head groups.
    Layer,
    /// One group per tensor.
    Tensor,
}

impl Default for Granularity {
    fn default() -> Self {
        Granularity::Named(NamedGranularity::Model)
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Granularity::Named(NamedGranularity::Model) => f.write_str("model"),
            Granularity::Named(NamedGranularity::Layer) => f.write_str("layer"),
            Granularity::Named(NamedGranularity::Tensor) => f.write_str("tensor"),
            Granularity::Patterns { patterns } => write!(f, "patterns {patterns:?}"),
        }
    }
}

impl FromStr for Granularity {
    type Err = GroupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "model" => Ok(Granularity::Named(NamedGranularity::Model)),
            "layer" => Ok(Granularity::Named(NamedGranularity::Layer)),
            "tensor" => Ok(Granularity::Named(NamedGranularity::Tensor)),
            other => Err(GroupError::UnknownGranularity(other.to_string())),
        }
    }
}

/// Errors while grouping tensors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// Not one of the named granularities.
    #[error(
        "unknown granularity {0:?} (expected \"model\", \"layer\", \"tensor\" or {{ patterns = [...] }})"
    )]
    UnknownGranularity(String),
    /// A user pattern does not compile.
    #[error("group pattern {pattern:?} is not a valid regex: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// The regex compiler's message.
        reason: String,
    },
    /// Some tensors match no user pattern.
    #[error(
        "tensor {tensor:?} matches no group pattern ({count} tensors unmatched); add a catch-all pattern such as \".*\" last"
    )]
    Unmatched {
        /// The first unmatched tensor.
        tensor: String,
        /// How many tensors are unmatched.
        count: usize,
    },
}

/// Where a tensor sits in a stack of blocks (used by depth-dependent methods such as LiNeS).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockPosition {
    /// The block index within its stack.
    pub index: usize,
    /// The number of blocks in the stack (largest index + 1).
    pub count: usize,
}

impl BlockPosition {
    /// Depth in `[0, 1]`: `index / (count - 1)`, or 0 for a one-block stack.
    pub fn depth(&self) -> f64 {
        if self.count <= 1 {
            0.0
        } else {
            self.index as f64 / (self.count - 1) as f64
        }
    }
}

/// The assignment of a model's tensors to groups.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGroups {
    /// Group names, in order; per-group parameter lists follow this order.
    pub names: Vec<String>,
    /// For each tensor (in the order given), its group index.
    pub of_tensor: Vec<usize>,
    /// For each tensor, its block position if its name carries a block index.
    pub blocks: Vec<Option<BlockPosition>>,
}

struct BlockRef<'a> {
    stack: &'a str,
    index: usize,
}

fn block_of(name: &str) -> Option<BlockRef<'_>> {
    let caps = BLOCK.captures(name)?;
    let stack = caps.get(1)?.as_str();
    let index = caps.get(2)?.as_str().parse().ok()?;
    Some(BlockRef { stack, index })
}

impl LayerGroups {
    /// Groups `names` (a model's tensors, in file order) at `granularity`.
    pub fn new(names: &[&str], granularity: &Granularity) -> Result<LayerGroups, GroupError> {
        let refs: Vec<Option<BlockRef>> = names.iter().map(|n| block_of(n)).collect();
        let blocks = block_positions(&refs);
        let (group_names, of_tensor) = match granularity {
            Granularity::Named(NamedGranularity::Model) => {
                (vec!["model".to_string()], vec![0; names.len()])
            }
            Granularity::Named(NamedGranularity::Tensor) => (
                names.iter().map(|n| n.to_string()).collect(),
                (0..names.len()).collect(),
            ),
            Granularity::Named(NamedGranularity::Layer) => layer_groups(names, &refs),
            Granularity::Patterns { patterns } => pattern_groups(names, patterns)?,
        };
        Ok(LayerGroups {
            names: group_names,
            of_tensor,
            blocks,
        })
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no groups (a model without tensors).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn block_positions(refs: &[Option<BlockRef>]) -> Vec<Option<BlockPosition>> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in refs.iter().flatten() {
        let c = counts.entry(r.stack).or_default();
        *c = (*c).max(r.index + 1);
    }
    refs.iter()
        .map(|r| {
            r.as_ref().map(|r| BlockPosition {
                index: r.index,
                count: counts[r.stack],
            })
        })
        .collect()
}

fn layer_groups(names: &[&str], refs: &[Option<BlockRef>]) -> (Vec<String>, Vec<usize>) {
    // Stacks keep the order in which they first appear; blocks sort numerically within a stack.
    let mut stack_order: Vec<&str> = Vec::new();
    for r in refs.iter().flatten() {
        if !stack_order.contains(&r.stack) {
            stack_order.push(r.stack);
        }
    }
    let key = |i: usize| -> (usize, usize, usize) {
        match &refs[i] {
            Some(r) => (
                1,
                stack_order.iter().position(|s| *s == r.stack).unwrap_or(0),
                r.index,
            ),
            None if EMBEDDING.is_match(names[i]) => (0, 0, 0),
            None => (2, 0, 0),
        }
    };
    let mut keys: Vec<(usize, usize, usize)> = (0..names.len()).map(key).collect();
    keys.sort_unstable();
    keys.dedup();
    let group_names = keys
        .iter()
        .map(|&(kind, stack, index)| match kind {
            0 => EMBEDDINGS_GROUP.to_string(),
            1 => format!("{}.{index}", stack_order[stack]),
            _ => HEAD_GROUP.to_string(),
        })
        .collect();
    let of_tensor = (0..names.len())
        .map(|i| keys.binary_search(&key(i)).unwrap_or(0))
        .collect();
    (group_names, of_tensor)
}

fn pattern_groups(
    names: &[&str],
    patterns: &[String],
) -> Result<(Vec<String>, Vec<usize>), GroupError> {
    let regexes = patterns
        .iter()
        .map(|p| {
            Regex::new(p).map_err(|e| GroupError::BadPattern {
                pattern: p.clone(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let assigned: Vec<Option<usize>> = names
        .iter()
        .map(|n| regexes.iter().position(|r| r.is_match(n)))
        .collect();
    let unmatched: Vec<usize> = (0..names.len())
        .filter(|&i| assigned[i].is_none())
        .collect();
    if let Some(&first) = unmatched.first() {
        return Err(GroupError::Unmatched {
            tensor: names[first].to_string(),
            count: unmatched.len(),
        });
    }
    Ok((patterns.to_vec(), assigned.into_iter().flatten().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIT: [&str; 7] = [
        "vit.embeddings.patch_embeddings.projection.weight",
        "vit.encoder.layer.0.attention.query.weight",
        "vit.encoder.layer.10.output.dense.weight",
        "vit.encoder.layer.2.output.dense.weight",
        "vit.encoder.layer.0.output.dense.bias",
        "vit.layernorm.weight",
        "classifier.weight",
    ];

    #[test]
    fn layer_granularity_orders_embeddings_blocks_then_head() {
        let g = LayerGroups::new(&VIT, &"layer".parse().unwrap()).unwrap();
        assert_eq!(
            g.names,
            [
                "embeddings",
                "vit.encoder.layer.0",
                "vit.encoder.layer.2",
                "vit.encoder.layer.10",
                "head"
            ]
        );
        assert_eq!(g.of_tensor, [0, 1, 3, 2, 1, 4, 4]);
        assert_eq!(
            g.blocks[2],
            Some(BlockPosition {
                index: 10,
                count: 11
            })
        );
        assert_eq!(g.blocks[0], None);
    }

    #[test]
    fn finds_each_block_naming_convention() {
        for name in [
            "model.layers.3.mlp.up_proj.weight",
            "transformer.h.3.attn.c_attn.weight",
            "blocks.3.norm1.weight",
            "encoder.layer.3.output.dense.weight",
            "encoder.block.3.layer.0.SelfAttention.q.weight",
        ] {
            let r = block_of(name).unwrap_or_else(|| panic!("no block in {name}"));
            assert_eq!(r.index, 3, "{name}");
        }
        assert!(block_of("lm_head.weight").is_none());
        assert!(block_of("model.norm.weight").is_none());
    }

    #[test]
    fn model_and_tensor_granularities() {
        let g = LayerGroups::new(&VIT, &"model".parse().unwrap()).unwrap();
        assert_eq!(g.len(), 1);
        assert!(g.of_tensor.iter().all(|&i| i == 0));
        let g = LayerGroups::new(&VIT, &"tensor".parse().unwrap()).unwrap();
        assert_eq!(g.len(), VIT.len());
        assert_eq!(g.names[6], "classifier.weight");
    }

    #[test]
    fn patterns_take_the_first_match_and_report_unmatched() {
        let patterns = Granularity::Patterns {
            patterns: vec!["attention".into(), "layer\\.".into(), ".*".into()],
        };
        let g = LayerGroups::new(&VIT, &patterns).unwrap();
        assert_eq!(g.of_tensor, [2, 0, 1, 1, 1, 2, 2]);
        let strict = Granularity::Patterns {
            patterns: vec!["attention".into()],
        };
        let err = LayerGroups::new(&VIT, &strict).unwrap_err();
        assert!(err.to_string().contains("6 tensors unmatched"), "{err}");
        let bad = Granularity::Patterns {
            patterns: vec!["(".into()],
        };
        assert!(matches!(
            LayerGroups::new(&VIT, &bad),
            Err(GroupError::BadPattern { .. })
        ));
    }
}
