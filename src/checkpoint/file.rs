//! One safetensors file: mapped once, its header parsed once.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, UncheckedAdvice};

use super::error::CheckpointError;
use super::header::{Header, TensorInfo};

/// A memory-mapped safetensors file with a validated header.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    header: Header,
}

impl SafetensorsFile {
    /// Maps `path` and validates its header.
    pub fn open(path: &Path) -> Result<SafetensorsFile, CheckpointError> {
        let file = File::open(path).map_err(|e| CheckpointError::io(path, "cannot open", e))?;
        // SAFETY: the map is read-only; a file truncated by another process while mapped is the
        // one hazard, as with every mmap-based reader (safetensors, candle), and is documented.
        let mmap =
            unsafe { Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, "cannot map", e))?;
        let header = Header::parse(path, &mmap)?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            mmap,
            header,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The raw little-endian bytes of a tensor described by this file's header.
    pub fn bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = self.header.data_start;
        &self.mmap[start + info.begin..start + info.end]
    }

    /// Decodes a tensor to `f32`, refusing NaN and infinities with the tensor's name.
    pub fn read_f32(&self, info: &TensorInfo) -> Result<Vec<f32>, CheckpointError> {
        let mut values = Vec::new();
        self.read_f32_into(info, &mut values)?;
        Ok(values)
    }

    /// Appends a tensor's values as `f32` to `out`, refusing NaN and infinities.
    pub fn read_f32_into(
        &self,
        info: &TensorInfo,
        out: &mut Vec<f32>,
    ) -> Result<(), CheckpointError> {
        let start = out.len();
        info.dtype.decode_into(self.bytes(info), out);
        if let Some(offset) = out[start..].iter().position(|v| !v.is_finite()) {
            return Err(CheckpointError::NonFinite {
                path: self.path.clone(),
                tensor: info.name.clone(),
                index: offset,
                value: out[start + offset],
            });
        }
        Ok(())
    }

    /// Tells the kernel the tensor's pages will not be read again soon, so a streaming pass
    /// over a model larger than memory does not keep it all resident.
    pub fn release(&self, info: &TensorInfo) {
        let start = self.header.data_start + info.begin;
        // SAFETY: the mapping is a read-only file mapping; dropping its pages only makes the
        // next access read them from the file again. Advice is a hint: a failure changes nothing
        // but memory pressure, so it is ignored.
        let _ = unsafe {
            self.mmap
                .unchecked_advise_range(UncheckedAdvice::DontNeed, start, info.nbytes())
        };
    }
}
