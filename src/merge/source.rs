//! Reading one tensor of a model set as raw bytes: every model's rows in one dtype (the
//! checkpoints' own when they agree, else `f32`), checked for NaN and infinities.

use std::borrow::Cow;

use super::engine::{HostRows, TensorMeta};
use crate::checkpoint::{BlockPosition, CheckpointError, Dtype, ModelSet};

/// One tensor of a model set: the base's row, then each expert's.
pub struct RawTensor<'a> {
    /// The tensor.
    pub meta: TensorMeta,
    /// Little-endian rows of `meta.dtype`, borrowed from the mapped files where possible.
    pub rows: Vec<Cow<'a, [u8]>>,
}

impl<'a> RawTensor<'a> {
    /// Reads tensor `name` of every model of `set`, refusing non-finite values with the file,
    /// tensor and index.
    pub fn read(
        set: &'a ModelSet,
        name: &str,
        block: Option<BlockPosition>,
    ) -> Result<RawTensor<'a>, CheckpointError> {
        let models: Vec<_> = std::iter::once(&set.base).chain(&set.experts).collect();
        let mut parts = Vec::with_capacity(models.len());
        for model in &models {
            let entry = model.entry(name)?;
            let file = model.file_of(entry);
            let bytes = file.bytes(&entry.info);
            if let Some((index, value)) = entry.info.dtype.first_non_finite(bytes) {
                return Err(CheckpointError::NonFinite {
                    path: file.path().to_path_buf(),
                    tensor: name.to_string(),
                    index,
                    value,
                });
            }
            parts.push((entry.info.dtype, bytes));
        }
        let first = set.base.entry(name)?;
        let dtype = if parts.iter().all(|(d, _)| *d == first.info.dtype) {
            first.info.dtype
        } else {
            Dtype::F32
        };
        let rows = parts
            .into_iter()
            .map(|(d, bytes)| {
                if d == dtype {
                    Cow::Borrowed(bytes)
                } else {
                    let mut values = Vec::new();
                    d.decode_into(bytes, &mut values);
                    let mut out = Vec::with_capacity(4 * values.len());
                    Dtype::F32.encode_into(&values, &mut out);
                    Cow::Owned(out)
                }
            })
            .collect();
        Ok(RawTensor {
            meta: TensorMeta {
                name: name.to_string(),
                shape: first.info.shape.clone(),
                block,
                dtype,
                experts: set.experts.len(),
            },
            rows,
        })
    }

    /// The rows copied into one host buffer of the tensor's dtype.
    pub fn to_host(&self) -> HostRows {
        let rows: Vec<&[u8]> = self.rows.iter().map(|r| r.as_ref()).collect();
        HostRows::decode(self.meta.dtype, &rows)
    }
}
