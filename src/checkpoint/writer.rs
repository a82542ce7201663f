//! Writing a model as Hugging Face safetensors: sharded by a maximum size, with an index, the
//! `format: pt` metadata transformers expects, and the base directory's non-weight files.
//!
//! Everything is written under a temporary name beside the destination and renamed into place
//! at the end, so a crash never leaves a half-written model under the final name.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::dtype::Dtype;
use super::error::CheckpointError;
use super::model::{INDEX_FILE, SINGLE_FILE};

/// File extensions of weights in other formats, never copied next to a merged model.
const WEIGHT_EXTENSIONS: [&str; 9] = [
    "safetensors",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "h5",
    "msgpack",
    "gguf",
    "onnx",
];

/// Default maximum shard size: 5 GB, as transformers' `save_pretrained` uses.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// A tensor the writer will receive: name, shape and the dtype to store it in.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Stored dtype.
    pub dtype: Dtype,
}

impl TensorSpec {
    fn nbytes(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * self.dtype.size() as u64
    }
}

struct Shard {
    file_name: String,
    tensors: Vec<TensorSpec>,
}

/// Streams tensors, in a fixed order, into a sharded safetensors model directory.
pub struct ModelWriter {
    final_dir: PathBuf,
    tmp_dir: PathBuf,
    overwrite: bool,
    shards: Vec<Shard>,
    shard: usize,
    in_shard: usize,
    out: Option<BufWriter<File>>,
    buffer: Vec<u8>,
    durable: bool,
}

impl ModelWriter {
    /// Plans the shards for `tensors` (written later in this order) and opens the first one.
    ///
    /// `out` must not exist unless `overwrite` is set; it is replaced only by [`ModelWriter::finish`].
    pub fn create(
        out: &Path,
        tensors: Vec<TensorSpec>,
        max_shard_bytes: u64,
        overwrite: bool,
    ) -> Result<ModelWriter, CheckpointError> {
        let fail = |reason: String| CheckpointError::Write {
            path: out.to_path_buf(),
            reason,
        };
        if max_shard_bytes == 0 {
            return Err(fail("the maximum shard size must be positive".into()));
        }
        if out.exists() && !overwrite {
            return Err(fail(
                "it already exists (remove it, choose another --out, or pass --overwrite)".into(),
            ));
        }
        let tmp_dir = temporary_sibling(out, "partial");
        if tmp_dir.exists() {
            fs::remove_dir_all(&tmp_dir).map_err(|e| {
                CheckpointError::io(&tmp_dir, "cannot remove stale partial output", e)
            })?;
        }
        fs::create_dir_all(&tmp_dir)
            .map_err(|e| CheckpointError::io(&tmp_dir, "cannot create directory", e))?;
        let shards = plan_shards(tensors, max_shard_bytes);
        let mut writer = ModelWriter {
            final_dir: out.to_path_buf(),
            tmp_dir,
            overwrite,
            shards,
            shard: 0,
            in_shard: 0,
            out: None,
            buffer: Vec::new(),
            durable: true,
        };
        writer.open_shard()?;
        Ok(writer)
    }

    /// Skips flushing each shard to the storage device when it is closed: for outputs that are
    /// read at once and deleted (a candidate handed to an evaluator), where surviving a power
    /// loss is worth nothing and the flush can cost seconds per gigabyte on a disk.
    pub fn transient(mut self) -> ModelWriter {
        self.durable = false;
        self
    }

    /// The directory being written (renamed to the destination by [`ModelWriter::finish`]).
    pub fn staging_dir(&self) -> &Path {
        &self.tmp_dir
    }

    fn open_shard(&mut self) -> Result<(), CheckpointError> {
        let Some(shard) = self.shards.get(self.shard) else {
            self.out = None;
            return Ok(());
        };
        let path = self.tmp_dir.join(&shard.file_name);
        let file =
            File::create(&path).map_err(|e| CheckpointError::io(&path, "cannot create", e))?;
        let mut out = BufWriter::with_capacity(1 << 22, file);
        out.write_all(&shard_header(&shard.tensors))
            .map_err(|e| CheckpointError::io(&path, "cannot write", e))?;
        self.out = Some(out);
        self.in_shard = 0;
        Ok(())
    }

    fn close_shard(&mut self) -> Result<(), CheckpointError> {
        if let Some(out) = self.out.take() {
            let path = self.tmp_dir.join(&self.shards[self.shard].file_name);
            let file = out
                .into_inner()
                .map_err(|e| CheckpointError::io(&path, "cannot write", e.into_error()))?;
            if self.durable {
                file.sync_all()
                    .map_err(|e| CheckpointError::io(&path, "cannot sync", e))?;
            }
        }
        Ok(())
    }

    /// The next tensor the writer expects, if any.
    pub fn next_expected(&self) -> Option<&TensorSpec> {
        self.shards
            .get(self.shard)
            .and_then(|s| s.tensors.get(self.in_shard))
    }

    /// Writes the next tensor's values, converted to its planned dtype.
    pub fn write(&mut self, name: &str, values: &[f32]) -> Result<(), CheckpointError> {
        let dtype = self.next_expected().map_or(Dtype::F32, |s| s.dtype);
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        dtype.encode_into(values, &mut buffer);
        let written = self.write_encoded(name, &buffer);
        self.buffer = buffer;
        written
    }

    /// Writes the next tensor's little-endian bytes, already in its planned dtype.
    pub fn write_encoded(&mut self, name: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        let spec = self
            .next_expected()
            .cloned()
            .ok_or_else(|| CheckpointError::Write {
                path: self.final_dir.clone(),
                reason: format!("tensor {name:?} written after every planned tensor"),
            })?;
        if spec.name != name || spec.nbytes() != bytes.len() as u64 {
            return Err(CheckpointError::Write {
                path: self.final_dir.clone(),
                reason: format!(
                    "expected tensor {:?} with {} values next, got {name:?} with {}",
                    spec.name,
                    spec.nbytes() / spec.dtype.size() as u64,
                    bytes.len() / spec.dtype.size()
                ),
            });
        }
        let path = self.tmp_dir.join(&self.shards[self.shard].file_name);
        self.out
            .as_mut()
            .expect("a shard is open while tensors remain")
            .write_all(bytes)
            .map_err(|e| CheckpointError::io(&path, "cannot write", e))?;
        self.in_shard += 1;
        if self.in_shard == self.shards[self.shard].tensors.len() {
            self.close_shard()?;
            self.shard += 1;
            self.open_shard()?;
        }
        Ok(())
    }

    /// Copies the non-weight files of a Hugging Face directory (config, tokenizer, generation
    /// config...) into the output, updating `torch_dtype` in `config.json` to `dtype`.
    pub fn copy_auxiliary_files(
        &self,
        from_dir: &Path,
        dtype: Dtype,
    ) -> Result<(), CheckpointError> {
        let entries =
            fs::read_dir(from_dir).map_err(|e| CheckpointError::io(from_dir, "cannot list", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| CheckpointError::io(from_dir, "cannot list", e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            let is_weight = WEIGHT_EXTENSIONS
                .iter()
                .any(|ext| name.ends_with(&format!(".{ext}")))
                || name == INDEX_FILE
                || name.ends_with(".index.json");
            if !path.is_file() || is_weight {
                continue;
            }
            let dest = self.tmp_dir.join(&name);
            if name == "config.json" {
                copy_config(&path, &dest, dtype)?;
            } else {
                fs::copy(&path, &dest).map_err(|e| CheckpointError::io(&path, "cannot copy", e))?;
            }
        }
        Ok(())
    }

    /// Checks every tensor was written, writes the index, and renames the output into place.
    pub fn finish(mut self) -> Result<PathBuf, CheckpointError> {
        if let Some(spec) = self.next_expected() {
            return Err(CheckpointError::Write {
                path: self.final_dir.clone(),
                reason: format!("tensor {:?} was never written", spec.name),
            });
        }
        if self.shards.len() > 1 {
            let mut weight_map = BTreeMap::new();
            let mut total: u64 = 0;
            for shard in &self.shards {
                for t in &shard.tensors {
                    weight_map.insert(t.name.clone(), shard.file_name.clone());
                    total += t.nbytes();
                }
            }
            let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            let path = self.tmp_dir.join(INDEX_FILE);
            let text = serde_json::to_string_pretty(&index).expect("index serializes");
            fs::write(&path, text).map_err(|e| CheckpointError::io(&path, "cannot write", e))?;
        }
        let old = temporary_sibling(&self.final_dir, "old");
        if self.final_dir.exists() {
            debug_assert!(self.overwrite);
            fs::rename(&self.final_dir, &old)
                .map_err(|e| CheckpointError::io(&self.final_dir, "cannot move aside", e))?;
        }
        fs::rename(&self.tmp_dir, &self.final_dir)
            .map_err(|e| CheckpointError::io(&self.final_dir, "cannot rename into place", e))?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| CheckpointError::io(&old, "cannot remove", e))?;
        }
        Ok(std::mem::take(&mut self.final_dir))
    }
}

impl Drop for ModelWriter {
    /// An unfinished writer removes its partial output.
    fn drop(&mut self) {
        if self.tmp_dir.exists() {
            self.out = None;
            let _ = fs::remove_dir_all(&self.tmp_dir);
        }
    }
}

/// `dir/.name.tag-PID`: a hidden sibling on the same file system, so the final rename is atomic.
fn temporary_sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".to_string());
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let file = format!(".{name}.{tag}-{}", std::process::id());
    parent.map_or_else(|| PathBuf::from(&file), |p| p.join(&file))
}

fn plan_shards(tensors: Vec<TensorSpec>, max_shard_bytes: u64) -> Vec<Shard> {
    let mut groups: Vec<Vec<TensorSpec>> = vec![Vec::new()];
    let mut size = 0u64;
    for t in tensors {
        let current = groups.last_mut().expect("at least one group");
        if !current.is_empty() && size + t.nbytes() > max_shard_bytes {
            groups.push(Vec::new());
            size = 0;
        }
        size += t.nbytes();
        groups.last_mut().expect("at least one group").push(t);
    }
    let n = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, tensors)| Shard {
            file_name: if n == 1 {
                SINGLE_FILE.to_string()
            } else {
                format!("model-{:05}-of-{n:05}.safetensors", i + 1)
            },
            tensors,
        })
        .collect()
}

/// The length prefix and JSON header of a shard, padded with spaces to 8-byte alignment.
fn shard_header(tensors: &[TensorSpec]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.nbytes();
        map.insert(
            t.name.clone(),
            json!({"dtype": t.dtype.as_str(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(map)).expect("header serializes");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes
}

fn copy_config(from: &Path, to: &Path, dtype: Dtype) -> Result<(), CheckpointError> {
    let text = fs::read_to_string(from).map_err(|e| CheckpointError::io(from, "cannot read", e))?;
    let updated = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut config)) => {
            let torch_name = dtype.torch_name();
            for key in ["torch_dtype", "dtype"] {
                if config.contains_key(key) {
                    config.insert(key.into(), json!(torch_name));
                }
            }
            serde_json::to_string_pretty(&Value::Object(config)).expect("config serializes")
        }
        // Not a JSON object: copy it untouched rather than guess.
        _ => text,
    };
    fs::write(to, updated).map_err(|e| CheckpointError::io(to, "cannot write", e))
}
