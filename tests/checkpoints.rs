//! Checkpoint layer, end to end through the public API: dtype round trips, sharding and the
//! index, corrupt files, model-set validation, and the writer's all-or-nothing behaviour.
//!
//! Every fixture is generated here into a per-test temporary folder.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use mergesearch::checkpoint::{
    CheckpointError, DEFAULT_MAX_SHARD_BYTES, Dtype, Header, INDEX_FILE, Model, ModelSet,
    ModelWriter, SINGLE_FILE, SafetensorsFile, TensorSpec,
};
use serde_json::Value;

use crate::common::TempDir;

fn spec(name: &str, shape: &[usize], dtype: Dtype) -> TensorSpec {
    TensorSpec {
        name: name.to_string(),
        shape: shape.to_vec(),
        dtype,
    }
}

fn numel(spec: &TensorSpec) -> usize {
    spec.shape.iter().product()
}

/// Deterministic, varied values (not representable in 16 bits, so narrowing has to round).
fn values(seed: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (seed * 1000 + i) as f32;
            (x * 0.618_034).sin() * 2.5 + (x * 0.1).cos() * 1e-3
        })
        .collect()
}

/// Writes `tensors` with the given values to `out` (finished, no overwrite).
fn write_model(out: &Path, tensors: &[(TensorSpec, Vec<f32>)], max_shard_bytes: u64) {
    let specs = tensors.iter().map(|(s, _)| s.clone()).collect();
    let mut writer = ModelWriter::create(out, specs, max_shard_bytes, false).unwrap();
    for (s, v) in tensors {
        writer.write(&s.name, v).unwrap();
    }
    writer.finish().unwrap();
}

/// `Model::open`, expecting an error (`Model` has no `Debug`, so no `unwrap_err`).
fn open_err(path: &Path) -> CheckpointError {
    match Model::open(path) {
        Ok(_) => panic!("{} opened but should have been refused", path.display()),
        Err(e) => e,
    }
}

fn open(path: &Path) -> Model {
    Model::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// A safetensors file built by hand: 8-byte LE header length, the JSON, then `data`.
fn raw_file(json: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn rounded(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::F32 => v,
        Dtype::F16 => f16::from_f32(v).to_f32(),
        Dtype::BF16 => bf16::from_f32(v).to_f32(),
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

// ---------------------------------------------------------------------------------------------
// 1. 16-bit round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn bf16_and_f16_round_trip_exactly_and_rewrite_byte_identically() {
    let dir = TempDir::new("checkpoints", "roundtrip");
    let mut bf = values(1, 64);
    // Ties to even, signed zero, a value far outside f16's range, a tiny one.
    bf[..5].copy_from_slice(&[1.0 + 2f32.powi(-8), -0.0, 0.0, 3.0e38, -1.0e-30]);
    let mut hf = values(2, 48);
    // f16's largest finite value, a subnormal, a tie.
    hf[..3].copy_from_slice(&[65504.0, 3.0e-7, 1.0 + 2f32.powi(-11)]);
    let tensors = vec![
        (spec("a.bf16", &[4, 16], Dtype::BF16), bf),
        (spec("b.f16", &[48], Dtype::F16), hf),
        (spec("c.f32", &[2, 3], Dtype::F32), values(3, 6)),
        (spec("d.scalar", &[], Dtype::BF16), vec![0.1]),
    ];
    let first = dir.join("first");
    write_model(&first, &tensors, DEFAULT_MAX_SHARD_BYTES);
    assert!(first.join(SINGLE_FILE).is_file());
    assert!(!first.join(INDEX_FILE).exists(), "one shard needs no index");

    let model = open(&first);
    let names: Vec<&str> = model
        .tensors()
        .iter()
        .map(|t| t.info.name.as_str())
        .collect();
    assert_eq!(names, ["a.bf16", "b.f16", "c.f32", "d.scalar"]);
    let mut read_back = Vec::new();
    for (s, v) in &tensors {
        let entry = model.entry(&s.name).unwrap();
        assert_eq!(entry.info.dtype, s.dtype, "{}", s.name);
        assert_eq!(entry.info.shape, s.shape, "{}", s.name);
        let got = model.read_f32(&s.name).unwrap();
        let expected: Vec<f32> = v.iter().map(|&x| rounded(s.dtype, x)).collect();
        assert!(
            same_bits(&got, &expected),
            "{}: read {:?}, expected {:?}",
            s.name,
            &got[..got.len().min(6)],
            &expected[..expected.len().min(6)]
        );
        read_back.push((s.clone(), got));
    }
    // The tie rounds to even, and rounding really happened somewhere.
    assert_eq!(read_back[0].1[0], 1.0);
    assert_eq!(read_back[1].1[2], 1.0);
    assert!(read_back[0].1[1].is_sign_negative());
    assert!(
        tensors[0]
            .1
            .iter()
            .zip(&read_back[0].1)
            .any(|(a, b)| a != b)
    );

    let second = dir.join("second");
    write_model(&second, &read_back, DEFAULT_MAX_SHARD_BYTES);
    let a = fs::read(first.join(SINGLE_FILE)).unwrap();
    let b = fs::read(second.join(SINGLE_FILE)).unwrap();
    assert_eq!(a, b, "rewriting the values read gives different bytes");

    // The bytes in the file are exactly the little-endian 16-bit encodings.
    let file = SafetensorsFile::open(&first.join(SINGLE_FILE)).unwrap();
    let info = &file.header().tensors[0];
    let expected: Vec<u8> = tensors[0]
        .1
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect();
    assert_eq!(file.bytes(info), expected.as_slice());
}

// ---------------------------------------------------------------------------------------------
// 2. Sharding and the index
// ---------------------------------------------------------------------------------------------

fn sharded_tensors() -> Vec<(TensorSpec, Vec<f32>)> {
    let mut tensors: Vec<(TensorSpec, Vec<f32>)> = (0..6)
        .map(|i| {
            let s = spec(&format!("layers.{i}.weight"), &[16, 16], Dtype::F32);
            let v = values(10 + i, numel(&s));
            (s, v)
        })
        .collect();
    let s = spec("norm.weight", &[10], Dtype::BF16);
    let v: Vec<f32> = values(20, 10)
        .iter()
        .map(|&x| rounded(Dtype::BF16, x))
        .collect();
    tensors.push((s, v));
    tensors
}

#[test]
fn sharded_round_trip_writes_an_index_and_pt_metadata() {
    let dir = TempDir::new("checkpoints", "sharded");
    let out = dir.join("model");
    let tensors = sharded_tensors();
    // Each 16x16 F32 tensor is 1024 bytes: two per 2048-byte shard, the small one alone.
    let max_shard = 2048;
    write_model(&out, &tensors, max_shard);

    let mut shard_files: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    shard_files.sort();
    assert_eq!(
        shard_files,
        (1..=4)
            .map(|i| format!("model-{i:05}-of-00004.safetensors"))
            .collect::<Vec<_>>()
    );
    assert!(!out.join(SINGLE_FILE).exists());

    let index: Value =
        serde_json::from_str(&fs::read_to_string(out.join(INDEX_FILE)).unwrap()).unwrap();
    let weight_map = index["weight_map"].as_object().expect("weight_map object");
    let mut listed: Vec<&str> = weight_map.keys().map(String::as_str).collect();
    listed.sort();
    let mut names: Vec<&str> = tensors.iter().map(|(s, _)| s.name.as_str()).collect();
    names.sort();
    assert_eq!(listed, names, "the index must list every tensor");
    let total: u64 = tensors
        .iter()
        .map(|(s, _)| (numel(s) * s.dtype.size()) as u64)
        .sum();
    assert_eq!(total, 6 * 1024 + 20);
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total));

    let mut per_shard: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for shard in &shard_files {
        let path = out.join(shard);
        let bytes = fs::read(&path).unwrap();
        let header = Header::parse(&path, &bytes).unwrap();
        let pt: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        assert_eq!(header.metadata, pt, "{shard}: __metadata__");
        assert_eq!(header.data_start % 8, 0, "{shard}: data area not 8-aligned");
        let data: usize = header.tensors.iter().map(|t| t.nbytes()).sum();
        assert!(data as u64 <= max_shard, "{shard} holds {data} bytes");
        assert_eq!(
            bytes.len(),
            header.data_start + data,
            "{shard}: trailing bytes"
        );
        for t in &header.tensors {
            assert_eq!(
                weight_map[&t.name].as_str(),
                Some(shard.as_str()),
                "index places {} elsewhere",
                t.name
            );
            per_shard
                .entry(shard.clone())
                .or_default()
                .push(t.name.clone());
        }
    }
    assert_eq!(per_shard.len(), 4);
    assert_eq!(
        per_shard["model-00004-of-00004.safetensors"],
        ["norm.weight"]
    );

    let model = open(&out);
    assert_eq!(model.tensors().len(), tensors.len());
    assert_eq!(model.total_bytes(), total);
    for (s, v) in &tensors {
        let got = model.read_f32(&s.name).unwrap();
        assert!(same_bits(&got, v), "{} changed in the round trip", s.name);
    }
}

#[test]
fn a_tensor_larger_than_the_shard_size_gets_a_shard_of_its_own() {
    let dir = TempDir::new("checkpoints", "oversized");
    let out = dir.join("model");
    let tensors = vec![
        (spec("small", &[4], Dtype::F32), values(1, 4)),
        (spec("big", &[64], Dtype::F32), values(2, 64)),
        (spec("tail", &[4], Dtype::F32), values(3, 4)),
    ];
    write_model(&out, &tensors, 32);
    let model = open(&out);
    let shards: Vec<usize> = tensors
        .iter()
        .map(|(s, _)| model.entry(&s.name).unwrap().shard)
        .collect();
    assert_eq!(shards.len(), 3);
    assert!(
        shards[0] != shards[1] && shards[1] != shards[2],
        "{shards:?}"
    );
    for (s, v) in &tensors {
        assert!(same_bits(&model.read_f32(&s.name).unwrap(), v));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Corrupt files
// ---------------------------------------------------------------------------------------------

/// Writes `bytes` to `dir/name`, opens it, and checks the error is `Corrupt`, names the file and
/// says `phrase`.
fn expect_corrupt(dir: &TempDir, name: &str, bytes: &[u8], phrase: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    let err = open_err(&path);
    let msg = err.to_string();
    assert!(
        matches!(err, CheckpointError::Corrupt { .. }),
        "{name}: expected Corrupt, got {err:?}"
    );
    assert!(
        msg.contains(&path.display().to_string()),
        "{name}: message does not name the file: {msg}"
    );
    assert!(
        msg.contains(phrase),
        "{name}: expected {phrase:?} in: {msg}"
    );
    // The file-level API refuses it the same way.
    assert!(SafetensorsFile::open(&path).is_err());
    msg
}

#[test]
fn a_file_truncated_inside_its_data_is_refused() {
    let dir = TempDir::new("checkpoints", "truncated");
    let out = dir.join("model");
    let tensors = vec![
        (spec("first", &[8], Dtype::F32), values(1, 8)),
        (spec("second", &[8], Dtype::F32), values(2, 8)),
    ];
    write_model(&out, &tensors, DEFAULT_MAX_SHARD_BYTES);
    let path = out.join(SINGLE_FILE);
    let bytes = fs::read(&path).unwrap();
    let header = Header::parse(&path, &bytes).unwrap();
    assert_eq!(bytes.len(), header.data_start + 64);
    // Cut in the middle of "second" (bytes 32..64 of the data area).
    let cut = &bytes[..header.data_start + 40];
    let msg = expect_corrupt(&dir, "truncated.safetensors", cut, "outside");
    assert!(msg.contains("\"second\""), "{msg}");
    assert!(msg.contains("40-byte data area"), "{msg}");
}

#[test]
fn malformed_headers_are_refused_with_the_reason() {
    let dir = TempDir::new("checkpoints", "malformed");
    expect_corrupt(&dir, "empty.safetensors", &[], "shorter than the 8-byte");
    expect_corrupt(
        &dir,
        "short.safetensors",
        &[1, 0, 0],
        "shorter than the 8-byte",
    );

    let mut past_end = 4096u64.to_le_bytes().to_vec();
    past_end.extend_from_slice(br#"{"a":{}}"#);
    expect_corrupt(&dir, "past_end.safetensors", &past_end, "runs past the end");

    let huge = u64::MAX.to_le_bytes();
    expect_corrupt(&dir, "huge.safetensors", &huge, "exceeds");

    expect_corrupt(
        &dir,
        "not_json.safetensors",
        &raw_file("{\"a\": [1, 2", &[]),
        "not a JSON object",
    );
    expect_corrupt(
        &dir,
        "array.safetensors",
        &raw_file("[1, 2, 3]", &[]),
        "not a JSON object",
    );
    expect_corrupt(
        &dir,
        "not_utf8.safetensors",
        &{
            let mut b = 2u64.to_le_bytes().to_vec();
            b.extend_from_slice(&[0xff, 0xfe]);
            b
        },
        "not UTF-8",
    );
    expect_corrupt(
        &dir,
        "malformed_entry.safetensors",
        &raw_file(r#"{"w":{"dtype":"F32","shape":[2]}}"#, &[0; 8]),
        "\"w\": malformed entry",
    );
}

#[test]
fn overlapping_and_out_of_range_offsets_are_refused() {
    let dir = TempDir::new("checkpoints", "offsets");
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let msg = expect_corrupt(
        &dir,
        "overlap.safetensors",
        &raw_file(overlap, &[0; 12]),
        "overlap",
    );
    assert!(msg.contains("\"a\"") && msg.contains("\"b\""), "{msg}");

    let out_of_range = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let msg = expect_corrupt(
        &dir,
        "range.safetensors",
        &raw_file(out_of_range, &[0; 8]),
        "outside the 8-byte data area",
    );
    assert!(msg.contains("\"w\"") && msg.contains("0..16"), "{msg}");

    let reversed = r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#;
    expect_corrupt(
        &dir,
        "reversed.safetensors",
        &raw_file(reversed, &[0; 8]),
        "outside",
    );

    let wrong_size = r#"{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}"#;
    expect_corrupt(
        &dir,
        "size.safetensors",
        &raw_file(wrong_size, &[0; 8]),
        "needs 6 bytes",
    );
}

#[test]
fn overlap_is_found_even_with_an_empty_tensor_between() {
    // "a" covers 0..16 and "b" 8..12; the zero-sized "z" at offset 4 sorts between them and must
    // not hide the overlap.
    let dir = TempDir::new("checkpoints", "overlap_empty");
    let json = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let msg = expect_corrupt(
        &dir,
        "hidden_overlap.safetensors",
        &raw_file(json, &[0; 16]),
        "overlap",
    );
    assert!(msg.contains("\"a\"") && msg.contains("\"b\""), "{msg}");

    // Empty tensors themselves are fine, wherever they sit.
    let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let path = dir.join("empty_ok.safetensors");
    let mut data = Vec::new();
    for v in [1.0f32, 2.0, 3.0] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    fs::write(&path, raw_file(ok, &data)).unwrap();
    let model = open(&path);
    assert_eq!(model.read_f32("a").unwrap(), [1.0, 2.0]);
    assert_eq!(model.read_f32("z").unwrap(), Vec::<f32>::new());
    assert_eq!(model.read_f32("b").unwrap(), [3.0]);
}

#[test]
fn an_unsupported_dtype_names_the_tensor_and_the_dtype() {
    let dir = TempDir::new("checkpoints", "dtype");
    let path = dir.join("ids.safetensors");
    let json = r#"{"input_ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}"#;
    fs::write(&path, raw_file(json, &[0; 20])).unwrap();
    let err = open_err(&path);
    let msg = err.to_string();
    match &err {
        CheckpointError::UnsupportedDtype {
            path: p,
            tensor,
            dtype,
        } => {
            assert_eq!(p, &path);
            assert_eq!(tensor, "input_ids");
            assert_eq!(dtype, "I64");
        }
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("\"input_ids\"")
            && msg.contains("I64"),
        "{msg}"
    );
}

#[test]
fn missing_paths_and_empty_directories_are_clear_errors() {
    let dir = TempDir::new("checkpoints", "missing");
    let nowhere = dir.join("nowhere");
    let err = open_err(&nowhere);
    assert!(matches!(err, CheckpointError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&nowhere.display().to_string()));

    let empty = dir.join("empty");
    fs::create_dir(&empty).unwrap();
    let err = open_err(&empty);
    assert!(matches!(err, CheckpointError::NoWeights { .. }), "{err:?}");
    assert!(err.to_string().contains(&empty.display().to_string()));
}

// ---------------------------------------------------------------------------------------------
// 4. Model sets and non-finite values
// ---------------------------------------------------------------------------------------------

fn model_set_err(base: &Path, experts: &[PathBuf]) -> CheckpointError {
    match ModelSet::open(base, experts) {
        Ok(_) => panic!("model set should have been refused"),
        Err(e) => e,
    }
}

#[test]
fn model_set_reports_missing_and_misshapen_tensors_with_their_files() {
    let dir = TempDir::new("checkpoints", "modelset");
    let full = |shape_b: &[usize]| {
        vec![
            (spec("a", &[4], Dtype::F32), values(1, 4)),
            (spec("b", shape_b, Dtype::F32), values(2, 6)),
            (spec("c", &[5], Dtype::BF16), values(3, 5)),
        ]
    };
    let base = dir.join("base");
    write_model(&base, &full(&[2, 3]), DEFAULT_MAX_SHARD_BYTES);
    let good = dir.join("good");
    write_model(&good, &full(&[2, 3]), DEFAULT_MAX_SHARD_BYTES);
    let missing = dir.join("missing_b");
    let mut without_b = full(&[2, 3]);
    without_b.remove(1);
    write_model(&missing, &without_b, DEFAULT_MAX_SHARD_BYTES);
    let misshapen = dir.join("misshapen_b");
    write_model(&misshapen, &full(&[3, 2]), DEFAULT_MAX_SHARD_BYTES);
    let extra = dir.join("extra");
    let mut with_extra = full(&[2, 3]);
    with_extra.push((spec("d", &[1], Dtype::F32), vec![0.5]));
    write_model(&extra, &with_extra, DEFAULT_MAX_SHARD_BYTES);

    let set = ModelSet::open(&base, std::slice::from_ref(&good)).unwrap();
    assert_eq!(set.experts.len(), 1);

    let err = model_set_err(&base, &[good.clone(), missing.clone(), misshapen.clone()]);
    assert!(matches!(err, CheckpointError::Mismatch(_)), "{err:?}");
    let msg = err.to_string();
    let lines: Vec<&str> = msg.lines().collect();
    let missing_line = lines
        .iter()
        .find(|l| l.contains("missing from"))
        .unwrap_or_else(|| panic!("no missing-tensor line in:\n{msg}"));
    assert!(
        missing_line.contains("\"b\"")
            && missing_line.contains(&base.join(SINGLE_FILE).display().to_string())
            && missing_line.contains(&missing.display().to_string()),
        "{missing_line}"
    );
    let shape_line = lines
        .iter()
        .find(|l| l.contains("has shape"))
        .unwrap_or_else(|| panic!("no shape line in:\n{msg}"));
    assert!(
        shape_line.contains("\"b\"")
            && shape_line.contains("[2, 3]")
            && shape_line.contains("[3, 2]")
            && shape_line.contains(&base.join(SINGLE_FILE).display().to_string())
            && shape_line.contains(&misshapen.join(SINGLE_FILE).display().to_string()),
        "{shape_line}"
    );
    // Only the two problems: the good expert and the matching tensors are not reported.
    assert_eq!(lines.len(), 3, "{msg}");
    assert!(!msg.contains(&good.display().to_string()), "{msg}");

    let err = model_set_err(&base, std::slice::from_ref(&extra));
    let msg = err.to_string();
    assert!(
        msg.contains("\"d\"")
            && msg.contains(&extra.display().to_string())
            && msg.contains("not in the base"),
        "{msg}"
    );

    // An expert that cannot be opened is named too.
    let absent = dir.join("absent");
    let msg = model_set_err(&base, &[good, absent.clone()]).to_string();
    assert!(msg.contains(&absent.display().to_string()), "{msg}");
}

#[test]
fn model_set_report_is_capped() {
    let dir = TempDir::new("checkpoints", "modelset_cap");
    let tensors: Vec<(TensorSpec, Vec<f32>)> = (0..9)
        .map(|i| (spec(&format!("t{i}"), &[2], Dtype::F32), values(i, 2)))
        .collect();
    let base = dir.join("base");
    write_model(&base, &tensors, DEFAULT_MAX_SHARD_BYTES);
    let expert = dir.join("expert");
    write_model(&expert, &tensors[..1], DEFAULT_MAX_SHARD_BYTES);
    let msg = model_set_err(&base, &[expert]).to_string();
    assert!(msg.contains("... and 3 more"), "{msg}");
}

#[test]
fn non_finite_values_are_refused_with_the_tensor_name() {
    let dir = TempDir::new("checkpoints", "nonfinite");
    let out = dir.join("model");
    let mut with_nan = values(1, 8);
    with_nan[3] = f32::NAN;
    let mut with_inf = values(2, 4);
    with_inf[2] = f32::NEG_INFINITY;
    let tensors = vec![
        (spec("fine", &[4], Dtype::F32), values(3, 4)),
        (spec("has_nan", &[8], Dtype::F32), with_nan),
        (spec("has_inf", &[4], Dtype::BF16), with_inf),
    ];
    write_model(&out, &tensors, DEFAULT_MAX_SHARD_BYTES);
    let model = open(&out);
    assert!(same_bits(&model.read_f32("fine").unwrap(), &tensors[0].1));

    let err = model.read_f32("has_nan").unwrap_err();
    match &err {
        CheckpointError::NonFinite {
            path,
            tensor,
            index,
            value,
        } => {
            assert_eq!(tensor, "has_nan");
            assert_eq!(*index, 3);
            assert!(value.is_nan());
            assert_eq!(path, &out.join(SINGLE_FILE));
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert!(err.to_string().contains("\"has_nan\""), "{err}");

    let err = model.read_f32("has_inf").unwrap_err();
    assert!(
        matches!(&err, CheckpointError::NonFinite { tensor, index: 2, value, .. }
            if tensor == "has_inf" && *value == f32::NEG_INFINITY),
        "{err:?}"
    );

    let err = model.read_f32("nope").unwrap_err();
    assert!(
        matches!(&err, CheckpointError::MissingTensor { tensor, .. } if tensor == "nope"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Writer safety
// ---------------------------------------------------------------------------------------------

fn two_tensors() -> Vec<(TensorSpec, Vec<f32>)> {
    vec![
        (spec("x", &[3], Dtype::F32), values(1, 3)),
        (spec("y", &[2, 2], Dtype::BF16), values(2, 4)),
    ]
}

fn specs_of(tensors: &[(TensorSpec, Vec<f32>)]) -> Vec<TensorSpec> {
    tensors.iter().map(|(s, _)| s.clone()).collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn an_unfinished_writer_leaves_nothing_behind() {
    let dir = TempDir::new("checkpoints", "unfinished");
    let out = dir.join("out");
    let tensors = two_tensors();

    let mut writer = ModelWriter::create(&out, specs_of(&tensors), 1 << 20, false).unwrap();
    let staging = writer.staging_dir().to_path_buf();
    assert!(staging.is_dir());
    assert_ne!(staging, out);
    assert!(
        !out.exists(),
        "nothing appears at the final path before finish"
    );
    writer.write("x", &tensors[0].1).unwrap();
    drop(writer);
    assert!(!out.exists());
    assert!(!staging.exists());
    assert_eq!(
        entries(dir.path()),
        Vec::<String>::new(),
        "partial output left"
    );

    // A writer that fails in finish (a tensor never written) cleans up as well.
    let mut writer = ModelWriter::create(&out, specs_of(&tensors), 1 << 20, false).unwrap();
    writer.write("x", &tensors[0].1).unwrap();
    let err = writer.finish().unwrap_err();
    assert!(err.to_string().contains("\"y\" was never written"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        entries(dir.path()),
        Vec::<String>::new(),
        "partial output left"
    );

    // Writing out of order or with the wrong size is refused.
    let mut writer = ModelWriter::create(&out, specs_of(&tensors), 1 << 20, false).unwrap();
    let err = writer.write("y", &tensors[1].1).unwrap_err();
    assert!(err.to_string().contains("expected tensor \"x\""), "{err}");
    let err = writer.write("x", &[1.0]).unwrap_err();
    assert!(err.to_string().contains("3 values"), "{err}");
    writer.write("x", &tensors[0].1).unwrap();
    writer.write("y", &tensors[1].1).unwrap();
    let err = writer.write("z", &[1.0]).unwrap_err();
    assert!(
        err.to_string().contains("after every planned tensor"),
        "{err}"
    );
    drop(writer);
    assert_eq!(entries(dir.path()), Vec::<String>::new());

    assert!(ModelWriter::create(&out, specs_of(&tensors), 0, false).is_err());
}

#[test]
fn an_existing_output_is_kept_without_overwrite_and_replaced_with_it() {
    let dir = TempDir::new("checkpoints", "overwrite");
    let out = dir.join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("keep.txt"), "precious").unwrap();
    let tensors = two_tensors();

    let err = match ModelWriter::create(&out, specs_of(&tensors), 1 << 20, false) {
        Ok(_) => panic!("an existing output must not be reused without overwrite"),
        Err(e) => e,
    };
    assert!(matches!(err, CheckpointError::Write { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&out.display().to_string()) && msg.contains("already exists"),
        "{msg}"
    );
    assert_eq!(entries(&out), ["keep.txt"]);
    assert_eq!(
        fs::read_to_string(out.join("keep.txt")).unwrap(),
        "precious"
    );
    assert_eq!(entries(dir.path()), ["out"]);

    // With overwrite, the old content survives until finish; an abandoned writer keeps it.
    let mut writer = ModelWriter::create(&out, specs_of(&tensors), 1 << 20, true).unwrap();
    writer.write("x", &tensors[0].1).unwrap();
    assert_eq!(entries(&out), ["keep.txt"]);
    drop(writer);
    assert_eq!(entries(&out), ["keep.txt"]);
    assert_eq!(entries(dir.path()), ["out"]);

    let mut writer = ModelWriter::create(&out, specs_of(&tensors), 1 << 20, true).unwrap();
    for (s, v) in &tensors {
        writer.write(&s.name, v).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), out);
    assert_eq!(entries(&out), [SINGLE_FILE]);
    assert_eq!(
        entries(dir.path()),
        ["out"],
        "the old output or staging was left"
    );
    let model = open(&out);
    assert!(same_bits(&model.read_f32("x").unwrap(), &tensors[0].1));
}

#[test]
fn auxiliary_files_are_copied_without_weights_and_with_the_new_dtype() {
    let dir = TempDir::new("checkpoints", "auxiliary");
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 16,
        "torch_dtype": "bfloat16",
        "nested": {"torch_dtype": "bfloat16"},
    });
    fs::write(src.join("config.json"), config.to_string()).unwrap();
    let tokenizer = r#"{"version": "1.0", "model": {"type": "BPE"}}"#;
    fs::write(src.join("tokenizer.json"), tokenizer).unwrap();
    fs::write(src.join("generation_config.json"), "{\"do_sample\": true}").unwrap();
    fs::write(src.join("pytorch_model.bin"), [1u8; 32]).unwrap();
    fs::write(src.join("model.safetensors"), [2u8; 32]).unwrap();
    fs::write(src.join("model-00001-of-00002.safetensors"), [3u8; 32]).unwrap();
    fs::write(src.join(INDEX_FILE), "{}").unwrap();
    fs::write(src.join("pytorch_model.bin.index.json"), "{}").unwrap();
    fs::create_dir(src.join("subdir")).unwrap();
    fs::write(src.join("subdir").join("x.txt"), "x").unwrap();

    let out = dir.join("out");
    let tensors = two_tensors();
    let writer = {
        let mut w = ModelWriter::create(&out, specs_of(&tensors), 1 << 20, false).unwrap();
        for (s, v) in &tensors {
            w.write(&s.name, v).unwrap();
        }
        w
    };
    writer.copy_auxiliary_files(&src, Dtype::F32).unwrap();
    writer.finish().unwrap();

    assert_eq!(
        entries(&out),
        [
            "config.json",
            "generation_config.json",
            SINGLE_FILE,
            "tokenizer.json"
        ]
    );
    let copied: Value =
        serde_json::from_str(&fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(copied["torch_dtype"], "float32");
    assert_eq!(copied["hidden_size"], 16);
    assert_eq!(copied["architectures"][0], "LlamaForCausalLM");
    assert_eq!(
        copied["nested"]["torch_dtype"], "bfloat16",
        "only the top level"
    );
    assert_eq!(
        fs::read_to_string(out.join("tokenizer.json")).unwrap(),
        tokenizer
    );
    // The weights are the writer's, not the source's.
    let model = open(&out);
    assert_eq!(model.tensors().len(), 2);

    // With the same dtype, config.json keeps its value; a config without torch_dtype gets none.
    let out2 = dir.join("out2");
    fs::write(src.join("config.json"), r#"{"hidden_size": 16}"#).unwrap();
    let mut w = ModelWriter::create(&out2, specs_of(&tensors), 1 << 20, false).unwrap();
    for (s, v) in &tensors {
        w.write(&s.name, v).unwrap();
    }
    w.copy_auxiliary_files(&src, Dtype::BF16).unwrap();
    w.finish().unwrap();
    let copied: Value =
        serde_json::from_str(&fs::read_to_string(out2.join("config.json")).unwrap()).unwrap();
    assert_eq!(copied, serde_json::json!({"hidden_size": 16}));
}

// ---------------------------------------------------------------------------------------------
// 6. Inconsistent shard indexes
// ---------------------------------------------------------------------------------------------

fn edit_index(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join(INDEX_FILE);
    let mut index: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(index["weight_map"].as_object_mut().unwrap());
    fs::write(&path, index.to_string()).unwrap();
}

fn expect_bad_index(dir: &Path, phrases: &[&str]) {
    let err = open_err(dir);
    assert!(
        matches!(err, CheckpointError::BadIndex { .. }),
        "expected BadIndex, got {err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.join(INDEX_FILE).display().to_string()),
        "{msg}"
    );
    for p in phrases {
        assert!(msg.contains(p), "expected {p:?} in: {msg}");
    }
}

#[test]
fn an_index_that_disagrees_with_its_shards_is_refused() {
    let dir = TempDir::new("checkpoints", "badindex");
    let tensors = sharded_tensors();

    // A tensor listed under the wrong (existing) shard.
    let wrong = dir.join("wrong_shard");
    write_model(&wrong, &tensors, 2048);
    assert!(Model::open(&wrong).is_ok());
    edit_index(&wrong, |map| {
        map.insert(
            "layers.0.weight".into(),
            "model-00002-of-00004.safetensors".into(),
        );
    });
    expect_bad_index(
        &wrong,
        &[
            "\"layers.0.weight\"",
            "model-00001-of-00004.safetensors",
            "model-00002-of-00004.safetensors",
        ],
    );

    // A tensor listed that no shard holds.
    let ghost = dir.join("ghost");
    write_model(&ghost, &tensors, 2048);
    edit_index(&ghost, |map| {
        map.insert(
            "ghost.weight".into(),
            "model-00001-of-00004.safetensors".into(),
        );
    });
    expect_bad_index(&ghost, &["\"ghost.weight\"", "lacks it"]);

    // A tensor a listed shard holds but the index omits.
    let omitted = dir.join("omitted");
    write_model(&omitted, &tensors, 2048);
    edit_index(&omitted, |map| {
        map.remove("layers.1.weight");
    });
    expect_bad_index(&omitted, &["\"layers.1.weight\""]);

    // Shard names must stay inside the model directory.
    let escape = dir.join("escape");
    write_model(&escape, &tensors, 2048);
    edit_index(&escape, |map| {
        map.insert(
            "norm.weight".into(),
            "../ghost/model-00004-of-00004.safetensors".into(),
        );
    });
    expect_bad_index(&escape, &["must be a file in the model directory"]);

    // Not an index at all.
    let garbage = dir.join("garbage");
    write_model(&garbage, &tensors, 2048);
    fs::write(garbage.join(INDEX_FILE), "{\"metadata\": {}}").unwrap();
    expect_bad_index(&garbage, &["weight_map"]);
}
