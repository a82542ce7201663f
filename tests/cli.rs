//! The `mergesearch` binary, run as a user would: `merge` on synthetic models, its error exit
//! codes and messages, and `inspect`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use half::bf16;
use mergesearch::checkpoint::{DEFAULT_MAX_SHARD_BYTES, Dtype, Header, INDEX_FILE, Model};
use mergesearch::fixtures::{SyntheticSpec, write_synthetic_model};
use serde_json::Value;

/// Layer groups: embeddings, model.layers.0, model.layers.1, head. 24 736 parameters.
const SPEC: SyntheticSpec = SyntheticSpec {
    layers: 2,
    hidden: 32,
    intermediate: 64,
    vocab: 64,
    dtype: Dtype::BF16,
};
const SEED: u64 = 7;
const TOKENIZER: &str = r#"{"version":"1.0","model":{"type":"BPE","vocab":{}}}"#;

use crate::common::TempDir;

/// A folder with `base`, `expert_a`, `expert_b` (synthetic, BF16) and a tokenizer in the base.
fn models(test: &str) -> TempDir {
    let dir = TempDir::new("cli", test);
    write_synthetic_model(
        &dir.join("base"),
        &SPEC,
        SEED,
        None,
        DEFAULT_MAX_SHARD_BYTES,
    )
    .unwrap();
    fs::write(dir.join("base").join("tokenizer.json"), TOKENIZER).unwrap();
    for (i, name) in ["expert_a", "expert_b"].iter().enumerate() {
        write_synthetic_model(
            &dir.join(name),
            &SPEC,
            SEED,
            Some(i),
            DEFAULT_MAX_SHARD_BYTES,
        )
        .unwrap();
    }
    dir
}

/// Runs the binary from the crate root (so relative model paths must resolve against the
/// config's folder, not the working directory).
fn mergesearch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mergesearch"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the mergesearch binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Writes `config` as `dir/name` and runs `merge` into `dir/out_name` with `extra` flags.
fn merge(dir: &TempDir, name: &str, config: &str, out_name: &str, extra: &[&str]) -> Output {
    let config_path = dir.join(name);
    fs::write(&config_path, config).unwrap();
    let out = dir.join(out_name);
    let mut args = vec![
        "merge",
        config_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    mergesearch(&args)
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
}

fn open(path: &Path) -> Model {
    Model::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// The synthetic layer group of a tensor (embeddings, block 0, block 1, head).
fn group_of(name: &str) -> usize {
    if name.contains("embed_tokens") {
        0
    } else if name.starts_with("model.layers.0.") {
        1
    } else if name.starts_with("model.layers.1.") {
        2
    } else {
        3
    }
}

/// `base + sum_i w_i(group) (expert_i - base)` in f64, from the stored inputs.
fn task_arithmetic_reference(dir: &TempDir, name: &str, weights: &[[f64; 4]; 2]) -> Vec<f64> {
    let base = open(&dir.join("base")).read_f32(name).unwrap();
    let experts: Vec<Vec<f32>> = ["expert_a", "expert_b"]
        .iter()
        .map(|e| open(&dir.join(e)).read_f32(name).unwrap())
        .collect();
    let g = group_of(name);
    (0..base.len())
        .map(|j| {
            let b = f64::from(base[j]);
            b + experts
                .iter()
                .zip(weights)
                .map(|(e, w)| w[g] * (f64::from(e[j]) - b))
                .sum::<f64>()
        })
        .collect()
}

/// Distance between adjacent bf16 values around `x`.
fn bf16_ulp(x: f64) -> f64 {
    let b = bf16::from_f64(x.abs());
    bf16::from_bits(b.to_bits() + 1).to_f64() - b.to_f64()
}

const TASK_ARITHMETIC: &str = r#"
method = "task_arithmetic"
base = "base"
granularity = "layer"

[[experts]]
path = "expert_a"
weight = [0.3, 0.5, 0.7, 0.9]

[[experts]]
path = "expert_b"
weight = 0.4
"#;
const WEIGHTS: [[f64; 4]; 2] = [[0.3, 0.5, 0.7, 0.9], [0.4; 4]];

#[test]
fn merge_task_arithmetic_writes_the_expected_bf16_model() {
    let dir = models("merge_bf16");
    let out = merge(&dir, "merge.toml", TASK_ARITHMETIC, "merged", &[]);
    assert_exit(&out, 0);

    let merged_dir = dir.join("merged");
    let merged = open(&merged_dir);
    let base = open(&dir.join("base"));
    let names: Vec<&str> = merged
        .tensors()
        .iter()
        .map(|t| t.info.name.as_str())
        .collect();
    let base_names: Vec<&str> = base
        .tensors()
        .iter()
        .map(|t| t.info.name.as_str())
        .collect();
    assert_eq!(names, base_names);
    assert_eq!(names.len(), SPEC.tensors().len());

    // config.json is copied (dtype unchanged), the tokenizer too; no index for one shard.
    let config: Value =
        serde_json::from_str(&fs::read_to_string(merged_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
    assert_eq!(config["hidden_size"], SPEC.hidden);
    assert_eq!(
        fs::read_to_string(merged_dir.join("tokenizer.json")).unwrap(),
        TOKENIZER
    );
    assert!(!merged_dir.join(INDEX_FILE).exists());

    let (mut total, mut ties, mut moved) = (0usize, 0usize, 0usize);
    for t in merged.tensors() {
        let name = &t.info.name;
        assert_eq!(t.info.dtype, Dtype::BF16, "{name}");
        assert_eq!(t.info.shape, base.entry(name).unwrap().info.shape, "{name}");
        let got = merged.read_f32(name).unwrap();
        let reference = task_arithmetic_reference(&dir, name, &WEIGHTS);
        let base_values = base.read_f32(name).unwrap();
        assert_eq!(got.len(), reference.len());
        for (j, (&g, &r)) in got.iter().zip(&reference).enumerate() {
            let expected = bf16::from_f64(r).to_f32();
            // f32 arithmetic may land on the other side of a bf16 rounding boundary, never
            // further than half a bf16 step (plus f32 error) from the exact value.
            // Where the terms (inputs of size ~0.05) cancel, f32 rounding of the terms remains.
            let tolerance = 0.5 * bf16_ulp(r) + 1e-6 * r.abs() + 1e-7;
            assert!(
                (f64::from(g) - r).abs() <= tolerance,
                "{name}[{j}]: got {g}, exact {r}, bf16 {expected}"
            );
            total += 1;
            if g != expected && r.abs() > 1e-6 {
                // Only an exact value halfway between two bf16 values (the inputs are bf16, so
                // ties happen) may round either way after f32 arithmetic.
                let off = (f64::from(g) - r).abs() / bf16_ulp(r);
                assert!(
                    (off - 0.5).abs() < 1e-3,
                    "{name}[{j}]: got {g}, exact {r} rounds to {expected}"
                );
                ties += 1;
            }
            moved += usize::from(g != base_values[j]);
        }
    }
    assert_eq!(total, 24_736);
    assert!(
        ties * 100 < total,
        "{ties} of {total} values differ from the bf16-rounded reference"
    );
    // About half the entries of each task vector are non-zero, so most values move.
    assert!(
        moved * 2 > total,
        "only {moved} of {total} values differ from the base"
    );
}

#[test]
fn merge_to_f32_with_a_small_shard_size_writes_shards_and_an_index() {
    let dir = models("merge_f32");
    let config = format!("dtype = \"f32\"\nmax_shard_size = \"20KB\"\n{TASK_ARITHMETIC}");
    let out = merge(&dir, "merge.toml", &config, "merged", &[]);
    assert_exit(&out, 0);

    let merged_dir = dir.join("merged");
    let index: Value =
        serde_json::from_str(&fs::read_to_string(merged_dir.join(INDEX_FILE)).unwrap()).unwrap();
    let weight_map = index["weight_map"].as_object().unwrap();
    assert_eq!(weight_map.len(), SPEC.tensors().len());
    // 24 736 f32 values: 98 944 bytes over shards of at most 20 000.
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(98_944));
    let mut shards: Vec<&str> = weight_map.values().map(|v| v.as_str().unwrap()).collect();
    shards.sort();
    shards.dedup();
    assert!(shards.len() >= 4, "{shards:?}");
    for shard in &shards {
        let path = merged_dir.join(shard);
        let bytes = fs::read(&path).unwrap();
        let header = Header::parse(&path, &bytes).unwrap();
        let data: usize = header.tensors.iter().map(|t| t.nbytes()).sum();
        assert!(data <= 20_000, "{shard} holds {data} bytes");
        assert_eq!(header.metadata["format"], "pt");
    }

    let config: Value =
        serde_json::from_str(&fs::read_to_string(merged_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "float32");

    let merged = open(&merged_dir);
    for t in merged.tensors() {
        let name = &t.info.name;
        assert_eq!(t.info.dtype, Dtype::F32, "{name}");
        let got = merged.read_f32(name).unwrap();
        let reference = task_arithmetic_reference(&dir, name, &WEIGHTS);
        for (j, (&g, &r)) in got.iter().zip(&reference).enumerate() {
            assert!(
                // f32 sums of terms of size ~0.1 round at ~1e-8; the result may cancel to far less.
                (f64::from(g) - r).abs() <= 1e-6 * r.abs() + 1e-7,
                "{name}[{j}]: got {g}, exact {r}"
            );
        }
    }
}

#[test]
fn config_errors_exit_2_with_the_problem_named() {
    let dir = models("config_errors");

    let unknown_key = format!("lamda = 1.0\n{TASK_ARITHMETIC}");
    let out = merge(&dir, "key.toml", &unknown_key, "out_key", &[]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("lamda") && err.contains(&dir.join("key.toml").display().to_string()),
        "{err}"
    );

    let unknown_method = TASK_ARITHMETIC.replace("\"task_arithmetic\"", "\"task_arithmetc\"");
    let out = merge(&dir, "method.toml", &unknown_method, "out_method", &[]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("\"task_arithmetc\""), "{err}");
    for method in ["linear", "task_arithmetic", "ties", "dare_ties", "slerp"] {
        assert!(err.contains(method), "method {method} not listed: {err}");
    }

    let wrong_length = TASK_ARITHMETIC.replace("[0.3, 0.5, 0.7, 0.9]", "[0.3, 0.5]");
    let out = merge(&dir, "length.toml", &wrong_length, "out_length", &[]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("\"weight\" has 2 values but there are 4 layer groups")
            && err.contains("embeddings, model.layers.0, model.layers.1, head")
            && err.contains("expert_a"),
        "{err}"
    );

    let no_weight = TASK_ARITHMETIC.replace("weight = 0.4", "");
    let out = merge(&dir, "required.toml", &no_weight, "out_required", &[]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("\"weight\" is required") && err.contains("expert_b"),
        "{err}"
    );

    let out = mergesearch(&[
        "merge",
        dir.join("nonexistent.toml").to_str().unwrap(),
        "--out",
        dir.join("out_none").to_str().unwrap(),
    ]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("nonexistent.toml"),
        "{}",
        stderr(&out)
    );

    // Nothing was written for any of them.
    for name in [
        "out_key",
        "out_method",
        "out_length",
        "out_required",
        "out_none",
    ] {
        assert!(!dir.join(name).exists(), "{name} was created");
    }
}

#[test]
fn model_errors_exit_3_naming_the_model() {
    let dir = models("model_errors");

    let missing = TASK_ARITHMETIC.replace("\"expert_b\"", "\"expert_missing\"");
    let out = merge(&dir, "missing.toml", &missing, "out_missing", &[]);
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains(&dir.join("expert_missing").display().to_string()),
        "{err}"
    );

    let other = SyntheticSpec { vocab: 48, ..SPEC };
    write_synthetic_model(
        &dir.join("expert_other"),
        &other,
        SEED,
        Some(1),
        DEFAULT_MAX_SHARD_BYTES,
    )
    .unwrap();
    let mismatch = TASK_ARITHMETIC.replace("\"expert_b\"", "\"expert_other\"");
    let out = merge(&dir, "mismatch.toml", &mismatch, "out_mismatch", &[]);
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains("model.embed_tokens.weight")
            && err.contains("[64, 32]")
            && err.contains("[48, 32]")
            && err.contains("expert_other"),
        "{err}"
    );

    let out = mergesearch(&["inspect", dir.join("nowhere").to_str().unwrap()]);
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));

    for name in ["out_missing", "out_mismatch"] {
        assert!(!dir.join(name).exists(), "{name} was created");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_exits_4() {
    let dir = models("cuda");
    let out = merge(
        &dir,
        "merge.toml",
        TASK_ARITHMETIC,
        "merged",
        &["--device", "cuda:0"],
    );
    assert_exit(&out, 4);
    let err = stderr(&out);
    assert!(
        err.contains("--features cuda") && err.contains("cuda:0"),
        "{err}"
    );
    assert!(!dir.join("merged").exists());
}

#[test]
fn an_existing_output_needs_overwrite() {
    let dir = models("existing");
    let out_dir = dir.join("merged");
    fs::create_dir(&out_dir).unwrap();
    fs::write(out_dir.join("notes.txt"), "keep me").unwrap();

    let out = merge(&dir, "merge.toml", TASK_ARITHMETIC, "merged", &[]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("already exists") && err.contains("--overwrite"),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(left.len(), 1, "the existing output was changed");
    assert_eq!(
        fs::read_to_string(out_dir.join("notes.txt")).unwrap(),
        "keep me"
    );

    let out = merge(
        &dir,
        "merge.toml",
        TASK_ARITHMETIC,
        "merged",
        &["--overwrite"],
    );
    assert_exit(&out, 0);
    assert!(!out_dir.join("notes.txt").exists());
    assert_eq!(open(&out_dir).tensors().len(), SPEC.tensors().len());
    // No staging or moved-aside folder is left beside it.
    let mut siblings: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    siblings.sort();
    assert_eq!(
        siblings,
        ["base", "expert_a", "expert_b", "merge.toml", "merged"]
    );
}

#[test]
fn inspect_lists_tensors_groups_and_the_total() {
    let dir = models("inspect");
    let out = mergesearch(&["inspect", dir.join("base").to_str().unwrap()]);
    assert_exit(&out, 0);
    let text = stdout(&out);

    let tensors = SPEC.tensors();
    for (name, shape) in &tensors {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("tensor {name} not listed:\n{text}"));
        let bytes = shape.iter().product::<usize>() * 2;
        assert!(
            line.contains("BF16")
                && line.contains(&format!("{shape:?}"))
                && line.ends_with(&format!(" {bytes}")),
            "{line}"
        );
    }

    assert!(
        text.contains("groups at granularity \"model\": 1\n"),
        "{text}"
    );
    assert!(
        text.contains("groups at granularity \"layer\": 4\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "groups at granularity \"tensor\": {}\n",
            tensors.len()
        )),
        "{text}"
    );
    // Layer groups with their member counts and bytes.
    let (h, i) = (SPEC.hidden, SPEC.intermediate);
    let block_bytes = (2 * h + 4 * h * h + 3 * h * i) * 2;
    for (group, members, bytes) in [
        ("embeddings", 1, SPEC.vocab * h * 2),
        ("model.layers.0", 9, block_bytes),
        ("model.layers.1", 9, block_bytes),
        ("head", 2, (h + SPEC.vocab * h) * 2),
    ] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(group))
            .unwrap_or_else(|| panic!("group {group} not listed:\n{text}"));
        assert!(
            line.contains(&format!(" {members} tensors"))
                && line.contains(&format!(" {bytes} bytes")),
            "{line}"
        );
    }
    let params: usize = tensors
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(params, 24_736);
    assert!(
        text.contains(&format!(
            "total: {} tensors, {params} parameters, {} bytes",
            tensors.len(),
            params * 2
        )),
        "{text}"
    );
}
