//! The element types a checkpoint may hold, and their faithful conversion to and from `f32`.
//!
//! Merging happens in `f32`; F16 and BF16 values widen to `f32` exactly, and narrow back with
//! round-to-nearest-even, so reading and rewriting an unchanged tensor gives the same bytes.

use std::fmt;
use std::str::FromStr;

use half::{bf16, f16};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// A supported safetensors element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 half precision.
    F16,
    /// bfloat16: the top 16 bits of an f32.
    BF16,
}

/// A dtype name that mergesearch does not read or write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported dtype {0:?} (supported: F32, F16, BF16)")]
pub struct UnsupportedDtype(pub String);

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }

    /// The name used in safetensors headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }

    /// The name transformers uses in `config.json` (`torch_dtype`).
    pub fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
        }
    }

    /// Appends the little-endian elements in `bytes` to `out` as `f32`.
    ///
    /// `bytes.len()` must be a multiple of [`Dtype::size`]; the header validation guarantees it.
    pub fn decode_into(self, bytes: &[u8], out: &mut Vec<f32>) {
        out.reserve(bytes.len() / self.size());
        match self {
            Dtype::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            Dtype::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
            Dtype::BF16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
        }
    }

    /// The index and value of the first NaN or infinity among the little-endian elements in
    /// `bytes`, found from the exponent bits alone.
    pub fn first_non_finite(self, bytes: &[u8]) -> Option<(usize, f32)> {
        let at = |i: usize| {
            let mut v = Vec::with_capacity(1);
            self.decode_into(&bytes[i * self.size()..(i + 1) * self.size()], &mut v);
            Some((i, v[0]))
        };
        match self {
            Dtype::F32 => bytes.chunks_exact(4).position(|c| {
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7F80_0000 == 0x7F80_0000
            }),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7F80 == 0x7F80),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7C00 == 0x7C00),
        }
        .and_then(at)
    }

    /// Appends `values` to `out` as little-endian elements of this dtype (round to nearest even).
    pub fn encode_into(self, values: &[f32], out: &mut Vec<u8>) {
        let size = self.size();
        let start = out.len();
        out.resize(start + values.len() * size, 0);
        let encode = |(bytes, values): (&mut [u8], &[f32])| match self {
            Dtype::F32 => bytes
                .chunks_exact_mut(4)
                .zip(values)
                .for_each(|(b, v)| b.copy_from_slice(&v.to_le_bytes())),
            Dtype::F16 => bytes
                .chunks_exact_mut(2)
                .zip(values)
                .for_each(|(b, v)| b.copy_from_slice(&f16::from_f32(*v).to_le_bytes())),
            Dtype::BF16 => bytes
                .chunks_exact_mut(2)
                .zip(values)
                .for_each(|(b, v)| b.copy_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        };
        // Large tensors in parallel blocks (a candidate handed to an evaluator is gigabytes).
        const BLOCK: usize = 1 << 16;
        let bytes = &mut out[start..];
        if values.len() > BLOCK {
            bytes
                .par_chunks_mut(BLOCK * size)
                .zip(values.par_chunks(BLOCK))
                .for_each(encode);
        } else {
            encode((bytes, values));
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dtype {
    type Err = UnsupportedDtype;

    /// Accepts the safetensors names (`F32`, `F16`, `BF16`) in any case, and `float32`,
    /// `float16`, `bfloat16` as a user would write them in a config.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Dtype::F32),
            "f16" | "float16" => Ok(Dtype::F16),
            "bf16" | "bfloat16" => Ok(Dtype::BF16),
            _ => Err(UnsupportedDtype(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype_bit_exactly() {
        let values = [0.0f32, -0.0, 1.0, -2.5, 65504.0, 1e-3, 3.140625];
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let mut bytes = Vec::new();
            dtype.encode_into(&values, &mut bytes);
            assert_eq!(bytes.len(), values.len() * dtype.size());
            let mut decoded = Vec::new();
            dtype.decode_into(&bytes, &mut decoded);
            let mut again = Vec::new();
            dtype.encode_into(&decoded, &mut again);
            assert_eq!(bytes, again, "{dtype} bytes changed on a second round trip");
        }
    }

    #[test]
    fn large_tensors_encode_in_blocks_as_small_ones_do() {
        // More than one parallel block, a ragged last block, appended after existing bytes.
        let values: Vec<f32> = (0..200_003)
            .map(|i| (i as f32 * 0.37).sin() * 1e3)
            .collect();
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let mut blocked = vec![7u8];
            dtype.encode_into(&values, &mut blocked);
            let mut one_by_one = vec![7u8];
            for v in &values {
                dtype.encode_into(std::slice::from_ref(v), &mut one_by_one);
            }
            assert!(blocked == one_by_one, "{dtype} blocks differ");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies exactly between two bf16 values: ties go to the even mantissa (1.0).
        let mut bytes = Vec::new();
        Dtype::BF16.encode_into(&[1.0 + 2f32.powi(-8)], &mut bytes);
        let mut out = Vec::new();
        Dtype::BF16.decode_into(&bytes, &mut out);
        assert_eq!(out[0], 1.0);
    }

    #[test]
    fn finds_the_first_non_finite_element() {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let mut bytes = Vec::new();
            dtype.encode_into(
                &[1.0, -65504.0, 0.0, f32::NEG_INFINITY, f32::NAN],
                &mut bytes,
            );
            let (index, value) = dtype.first_non_finite(&bytes).unwrap();
            assert_eq!((index, value), (3, f32::NEG_INFINITY), "{dtype}");
            assert_eq!(dtype.first_non_finite(&bytes[..3 * dtype.size()]), None);
        }
    }

    #[test]
    fn parses_names_and_rejects_others() {
        assert_eq!("BF16".parse::<Dtype>().unwrap(), Dtype::BF16);
        assert_eq!("float16".parse::<Dtype>().unwrap(), Dtype::F16);
        let err = "I64".parse::<Dtype>().unwrap_err();
        assert!(err.to_string().contains("I64"));
    }
}
