//! The `mergesearch merge` config file: a TOML description of one merge, checked into a
//! [`MergeConfig`] before any model is opened.
//!
//! ```toml
//! method = "ties"
//! base = "path/to/base"            # file or HF directory, relative to this file
//! granularity = "layer"            # model | layer | tensor | { patterns = ["attn", ".*"] }
//! seed = 0                         # random methods (dare_*, della*)
//! dtype = "bf16"                   # optional output dtype (default: the base's)
//! max_shard_size = "5GB"           # optional (default 5GB)
//! [params]                         # shared parameters
//! lambda = 1.0
//! [[experts]]
//! path = "path/to/expert_a"
//! weight = 0.6                     # scalar, or one value per layer group
//! density = 0.2
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::checkpoint::{DEFAULT_MAX_SHARD_BYTES, Dtype, Granularity};
use crate::merge::{MergePlan, Method, ParamValue};

/// A merge config that parsed and whose names are known.
#[derive(Debug, Clone)]
pub struct MergeConfig {
    /// Base model path (resolved against the config's folder).
    pub base: PathBuf,
    /// Expert paths, in order.
    pub experts: Vec<PathBuf>,
    /// Grouping for per-group parameter lists.
    pub granularity: Granularity,
    /// The plan (method, parameters, seed).
    pub plan: MergePlan,
    /// Output dtype, if not the base's.
    pub dtype: Option<Dtype>,
    /// Maximum shard size in bytes.
    pub max_shard_bytes: u64,
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    method: String,
    base: PathBuf,
    #[serde(default)]
    granularity: Option<toml::Value>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    max_shard_size: Option<toml::Value>,
    #[serde(default)]
    params: BTreeMap<String, ParamValue>,
    experts: Vec<RawExpert>,
}

#[derive(Deserialize)]
struct RawExpert {
    path: PathBuf,
    #[serde(flatten)]
    params: BTreeMap<String, ParamValue>,
}

impl MergeConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<MergeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problem: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; relative model paths are taken relative to `path`'s folder.
    pub fn parse(text: &str, path: &Path) -> Result<MergeConfig, ConfigError> {
        let fail = |problem: String| ConfigError {
            path: path.to_path_buf(),
            problem,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| fail(e.to_string().trim().to_string()))?;
        let method: Method = raw
            .method
            .parse()
            .map_err(|e: crate::merge::UnknownMethod| fail(e.to_string()))?;
        if raw.experts.is_empty() {
            return Err(fail(
                "no [[experts]] given; add at least one with a path".into(),
            ));
        }
        let folder = path.parent().unwrap_or(Path::new("."));
        let granularity = match raw.granularity {
            None => Granularity::default(),
            Some(value) => parse_granularity(value).map_err(fail)?,
        };
        let dtype = raw
            .dtype
            .map(|d| d.parse::<Dtype>().map_err(|e| fail(format!("dtype: {e}"))))
            .transpose()?;
        let max_shard_bytes = match raw.max_shard_size {
            None => DEFAULT_MAX_SHARD_BYTES,
            Some(v) => parse_size(&v).map_err(|e| fail(format!("max_shard_size: {e}")))?,
        };
        let mut plan = MergePlan::new(method, raw.experts.len(), raw.seed);
        plan.shared = raw.params;
        plan.experts = raw.experts.iter().map(|e| e.params.clone()).collect();
        Ok(MergeConfig {
            base: folder.join(raw.base),
            experts: raw
                .experts
                .into_iter()
                .map(|e| folder.join(e.path))
                .collect(),
            granularity,
            plan,
            dtype,
            max_shard_bytes,
        })
    }
}

/// `"layer"` or `{ patterns = [...] }`.
pub fn parse_granularity(value: toml::Value) -> Result<Granularity, String> {
    match value {
        toml::Value::String(s) => s.parse().map_err(|e: crate::checkpoint::GroupError| e.to_string()),
        other => other.try_into::<Granularity>().map_err(|_| {
            "granularity must be \"model\", \"layer\", \"tensor\" or { patterns = [\"regex\", ...] }".to_string()
        }),
    }
}

/// A byte size: an integer, or a string such as `"500MB"`, `"2GiB"`, `"5GB"`.
pub fn parse_size(value: &toml::Value) -> Result<u64, String> {
    let text = match value {
        toml::Value::Integer(n) if *n > 0 => return Ok(*n as u64),
        toml::Value::String(s) => s.trim().to_ascii_uppercase(),
        _ => return Err("expected a positive number of bytes or a string like \"5GB\"".into()),
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let scale = match unit.trim() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = (number * scale) as u64;
    if bytes == 0 {
        return Err("must be positive".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
method = "ties"
base = "base"
granularity = "layer"
max_shard_size = "2MB"
[params]
lambda = 1.0
[[experts]]
path = "a"
weight = 0.6
density = 0.2
[[experts]]
path = "/abs/b"
weight = [0.2, 0.4]
density = 0.2
"#;

    #[test]
    fn parses_the_documented_example() {
        let c = MergeConfig::parse(EXAMPLE, Path::new("cfg/merge.toml")).unwrap();
        assert_eq!(c.base, Path::new("cfg/base"));
        assert_eq!(c.experts[1], Path::new("/abs/b"));
        assert_eq!(c.max_shard_bytes, 2_000_000);
        assert_eq!(c.plan.method, Method::Ties);
        assert_eq!(
            c.plan.experts[1]["weight"],
            ParamValue::PerGroup(vec![0.2, 0.4])
        );
    }

    #[test]
    fn unknown_keys_and_methods_are_named() {
        let err = |t: &str| {
            MergeConfig::parse(t, Path::new("m.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = err(&EXAMPLE.replace("granularity", "granularty"));
        assert!(e.contains("m.toml") && e.contains("granularty"), "{e}");
        let e = err(&EXAMPLE.replace("\"ties\"", "\"tis\""));
        assert!(e.contains("unknown merge method \"tis\""), "{e}");
        let e = err(&EXAMPLE.replace("\"layer\"", "\"layers\""));
        assert!(e.contains("unknown granularity"), "{e}");
        assert!(err(&EXAMPLE.replace("\"2MB\"", "\"2XB\"")).contains("unknown unit"));
    }

    #[test]
    fn sizes_accept_units() {
        assert_eq!(
            parse_size(&toml::Value::String("1.5GiB".into())).unwrap(),
            1_610_612_736
        );
        assert_eq!(parse_size(&toml::Value::Integer(10)).unwrap(), 10);
        assert!(parse_size(&toml::Value::Integer(0)).is_err());
    }
}
