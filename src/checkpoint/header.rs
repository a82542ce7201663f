//! Parsing and validating a safetensors header before any of its offsets are trusted.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON mapping tensor names to
//! `{dtype, shape, data_offsets: [begin, end]}` (plus an optional `__metadata__` map of strings),
//! then the data area, which the offsets index. Every check that makes reading safe happens here:
//! the length fits the file, the JSON parses, dtypes are supported, each byte range lies inside the
//! data area, matches its shape, and no two ranges overlap.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::dtype::Dtype;
use super::error::CheckpointError;

/// Headers larger than this are refused rather than parsed (the format's own reference limit).
const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// One tensor's entry in a header, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub dtype: Dtype,
    /// Its shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Byte range inside the data area.
    pub begin: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes in the file.
    pub fn nbytes(&self) -> usize {
        self.end - self.begin
    }
}

/// A validated header: tensors in data-offset order, metadata, and where the data area starts.
#[derive(Debug, Clone)]
pub struct Header {
    /// Tensors sorted by their offset in the file.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map, if present.
    pub metadata: BTreeMap<String, String>,
    /// Byte offset of the data area from the start of the file.
    pub data_start: usize,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

impl Header {
    /// Parses and validates the header of a safetensors file whose full contents are `bytes`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Header, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::corrupt(path, reason);
        if bytes.len() < 8 {
            return Err(corrupt(format!(
                "file is {} bytes, shorter than the 8-byte header length (truncated?)",
                bytes.len()
            )));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&bytes[..8]);
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES {
            return Err(corrupt(format!(
                "header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit"
            )));
        }
        let data_start = 8 + header_len as usize;
        if data_start > bytes.len() {
            return Err(corrupt(format!(
                "header length {header_len} runs past the end of the {}-byte file (truncated?)",
                bytes.len()
            )));
        }
        let json = std::str::from_utf8(&bytes[8..data_start])
            .map_err(|e| corrupt(format!("header is not UTF-8: {e}")))?;
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(json.trim_end())
            .map_err(|e| corrupt(format!("header is not a JSON object: {e}")))?;

        let data_len = bytes.len() - data_start;
        let mut metadata = BTreeMap::new();
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, value) in raw {
            if name == "__metadata__" {
                metadata = serde_json::from_value(value).map_err(|e| {
                    corrupt(format!("__metadata__ must map strings to strings: {e}"))
                })?;
                continue;
            }
            let entry: RawEntry = serde_json::from_value(value)
                .map_err(|e| corrupt(format!("tensor {name:?}: malformed entry: {e}")))?;
            tensors.push(validate_entry(path, name, entry, data_len)?);
        }
        tensors.sort_by_key(|t| (t.begin, t.end));
        // Zero-sized tensors occupy no bytes and cannot overlap anything; they are skipped (not
        // just excluded from a pair), so one sorted between two overlapping tensors hides nothing.
        let occupied: Vec<&TensorInfo> = tensors.iter().filter(|t| t.nbytes() > 0).collect();
        for pair in occupied.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.begin < a.end {
                return Err(corrupt(format!(
                    "tensors {:?} (bytes {}..{}) and {:?} (bytes {}..{}) overlap",
                    a.name, a.begin, a.end, b.name, b.begin, b.end
                )));
            }
        }
        Ok(Header {
            tensors,
            metadata,
            data_start,
        })
    }
}

fn validate_entry(
    path: &Path,
    name: String,
    entry: RawEntry,
    data_len: usize,
) -> Result<TensorInfo, CheckpointError> {
    let dtype: Dtype = entry
        .dtype
        .parse()
        .map_err(|_| CheckpointError::UnsupportedDtype {
            path: path.to_path_buf(),
            tensor: name.clone(),
            dtype: entry.dtype.clone(),
        })?;
    let (begin, end) = entry.data_offsets;
    if begin > end || end > data_len {
        return Err(CheckpointError::corrupt(
            path,
            format!(
                "tensor {name:?}: data offsets {begin}..{end} lie outside the {data_len}-byte data area"
            ),
        ));
    }
    let expected = entry
        .shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            CheckpointError::corrupt(
                path,
                format!("tensor {name:?}: shape {:?} overflows", entry.shape),
            )
        })?;
    if end - begin != expected {
        return Err(CheckpointError::corrupt(
            path,
            format!(
                "tensor {name:?}: shape {:?} of {dtype} needs {expected} bytes but offsets {begin}..{end} hold {}",
                entry.shape,
                end - begin
            ),
        ));
    }
    Ok(TensorInfo {
        name,
        dtype,
        shape: entry.shape,
        begin,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str, data_len: usize) -> Vec<u8> {
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data_len));
        bytes
    }

    fn err(bytes: &[u8]) -> String {
        Header::parse(Path::new("m.safetensors"), bytes)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_a_valid_header_in_offset_order() {
        let json = r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}"#;
        let header = Header::parse(Path::new("m"), &file(json, 16)).unwrap();
        let names: Vec<_> = header.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(header.metadata["format"], "pt");
        assert_eq!(header.tensors[0].numel(), 4);
    }

    #[test]
    fn rejects_each_kind_of_corruption() {
        assert!(err(&[1, 2, 3]).contains("shorter than the 8-byte"));
        let mut past_end = 1000u64.to_le_bytes().to_vec();
        past_end.extend_from_slice(b"{}");
        assert!(err(&past_end).contains("runs past the end"));
        assert!(err(&file("{not json", 0)).contains("not a JSON object"));
        let out_of_range = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        assert!(err(&file(out_of_range, 8)).contains("outside the 8-byte data area"));
        let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        assert!(err(&file(overlap, 12)).contains("overlap"));
        let wrong_size = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        assert!(err(&file(wrong_size, 8)).contains("needs 12 bytes"));
        let bad_dtype = r#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        let msg = err(&file(bad_dtype, 8));
        assert!(msg.contains("\"ids\"") && msg.contains("I64"), "{msg}");
    }
}
