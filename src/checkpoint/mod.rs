//! Checkpoints on disk: safetensors files and Hugging Face directories (single file or shards
//! with an index), their dtypes, layer groups, validation of a model set, and the writer.

mod dtype;
mod error;
mod file;
mod groups;
mod header;
mod model;
mod model_set;
mod writer;

pub use dtype::{Dtype, UnsupportedDtype};
pub use error::CheckpointError;
pub use file::SafetensorsFile;
pub use groups::{
    BlockPosition, EMBEDDINGS_GROUP, Granularity, GroupError, HEAD_GROUP, LayerGroups,
    NamedGranularity,
};
pub use header::{Header, TensorInfo};
pub use model::{INDEX_FILE, Model, SINGLE_FILE, TensorEntry};
pub use model_set::ModelSet;
pub use writer::{DEFAULT_MAX_SHARD_BYTES, ModelWriter, TensorSpec};
