//! A model on disk: one `.safetensors` file, or a Hugging Face directory holding
//! `model.safetensors` or shards listed by `model.safetensors.index.json`.
//!
//! Each shard is mapped once and its header parsed once; tensor names are routed to their shard.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::CheckpointError;
use super::file::SafetensorsFile;
use super::header::TensorInfo;

/// The single-file weights name in a Hugging Face directory.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index name in a Hugging Face directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A tensor of a model: its header entry and the shard that holds it.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// Header entry (name, dtype, shape, offsets in its shard).
    pub info: TensorInfo,
    /// Index into the model's shards.
    pub shard: usize,
}

/// A model opened for reading.
pub struct Model {
    path: PathBuf,
    shards: Vec<SafetensorsFile>,
    tensors: Vec<TensorEntry>,
    by_name: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

impl Model {
    /// Opens a `.safetensors` file or a Hugging Face model directory.
    pub fn open(path: &Path) -> Result<Model, CheckpointError> {
        if !path.exists() {
            return Err(CheckpointError::io(
                path,
                "cannot open model",
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
        if !path.is_dir() {
            return Self::from_shards(path, vec![SafetensorsFile::open(path)?], None);
        }
        let single = path.join(SINGLE_FILE);
        let index = path.join(INDEX_FILE);
        if index.is_file() {
            Self::open_sharded(path, &index)
        } else if single.is_file() {
            Self::from_shards(path, vec![SafetensorsFile::open(&single)?], None)
        } else {
            Err(CheckpointError::NoWeights {
                path: path.to_path_buf(),
            })
        }
    }

    fn open_sharded(dir: &Path, index_path: &Path) -> Result<Model, CheckpointError> {
        let bad = |reason: String| CheckpointError::BadIndex {
            path: index_path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(index_path)
            .map_err(|e| CheckpointError::io(index_path, "cannot read", e))?;
        let index: IndexFile = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not a valid index (expected {{\"weight_map\": {{...}}}}): {e}"
            ))
        })?;
        let mut shard_names: Vec<&String> = index.weight_map.values().collect();
        shard_names.sort();
        shard_names.dedup();
        let mut shards = Vec::with_capacity(shard_names.len());
        for name in &shard_names {
            if name.contains('/') || name.contains("..") {
                return Err(bad(format!(
                    "shard name {name:?} must be a file in the model directory"
                )));
            }
            shards.push(SafetensorsFile::open(&dir.join(name))?);
        }
        Self::from_shards(dir, shards, Some((index_path, &index.weight_map)))
    }

    fn from_shards(
        path: &Path,
        shards: Vec<SafetensorsFile>,
        index: Option<(&Path, &BTreeMap<String, String>)>,
    ) -> Result<Model, CheckpointError> {
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        for (shard_idx, shard) in shards.iter().enumerate() {
            for info in &shard.header().tensors {
                if let Some((index_path, map)) = index {
                    let listed = map.get(&info.name);
                    let shard_file = shard.path().file_name().and_then(|n| n.to_str());
                    if listed.map(String::as_str) != shard_file {
                        return Err(CheckpointError::BadIndex {
                            path: index_path.to_path_buf(),
                            reason: format!(
                                "tensor {:?} is in {} but the index lists it under {:?}",
                                info.name,
                                shard.path().display(),
                                listed
                            ),
                        });
                    }
                }
                if by_name.insert(info.name.clone(), tensors.len()).is_some() {
                    return Err(CheckpointError::corrupt(
                        shard.path(),
                        format!("tensor {:?} appears in more than one shard", info.name),
                    ));
                }
                tensors.push(TensorEntry {
                    info: info.clone(),
                    shard: shard_idx,
                });
            }
        }
        if let Some((index_path, map)) = index
            && let Some(missing) = map.keys().find(|name| !by_name.contains_key(*name))
        {
            return Err(CheckpointError::BadIndex {
                path: index_path.to_path_buf(),
                reason: format!(
                    "tensor {missing:?} is listed but its shard {:?} lacks it",
                    map[missing]
                ),
            });
        }
        Ok(Model {
            path: path.to_path_buf(),
            shards,
            tensors,
            by_name,
        })
    }

    /// The path the model was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the model was opened from a directory (whose other files an export may copy).
    pub fn is_dir(&self) -> bool {
        self.path.is_dir()
    }

    /// Tensors in shard order, then offset order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor named `name`, or an error naming the model.
    pub fn entry(&self, name: &str) -> Result<&TensorEntry, CheckpointError> {
        self.get(name)
            .ok_or_else(|| CheckpointError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// The file that holds `entry`.
    pub fn file_of(&self, entry: &TensorEntry) -> &SafetensorsFile {
        &self.shards[entry.shard]
    }

    /// Decodes the named tensor to `f32` (rejecting non-finite values).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, CheckpointError> {
        let entry = self.entry(name)?;
        self.file_of(entry).read_f32(&entry.info)
    }

    /// Appends the named tensor's values as `f32` to `out` (rejecting non-finite values).
    pub fn read_f32_into(&self, name: &str, out: &mut Vec<f32>) -> Result<(), CheckpointError> {
        let entry = self.entry(name)?;
        self.file_of(entry).read_f32_into(&entry.info, out)
    }

    /// Drops the named tensor's pages from memory after a streaming pass has used them.
    pub fn release(&self, name: &str) {
        if let Some(entry) = self.get(name) {
            self.file_of(entry).release(&entry.info);
        }
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.info.nbytes() as u64).sum()
    }
}
