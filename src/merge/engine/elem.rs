//! Stored element types on the host: a tensor's rows keep the checkpoint's dtype, and every
//! element widens to `f32` exactly when read (bfloat16 and half precision are subsets of `f32`).

use half::{bf16, f16};

use super::bits::{f32_to_bf16, f32_to_f16};
use crate::checkpoint::Dtype;

/// An element type rows are stored in.
pub trait Elem: Copy + Send + Sync + 'static {
    /// The checkpoint dtype.
    const DTYPE: Dtype;
    /// The value, widened exactly.
    fn value(self) -> f32;
    /// `x` rounded to this type (to nearest even, by [`bits`](super::bits)).
    fn from_f32(x: f32) -> Self;
    /// Decodes little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
}

impl Elem for f32 {
    const DTYPE: Dtype = Dtype::F32;
    #[inline(always)]
    fn value(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl Elem for bf16 {
    const DTYPE: Dtype = Dtype::BF16;
    #[inline(always)]
    fn value(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_bits(f32_to_bf16(x))
    }
    #[inline(always)]
    fn from_le(b: &[u8]) -> Self {
        bf16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
}

impl Elem for f16 {
    const DTYPE: Dtype = Dtype::F16;
    #[inline(always)]
    fn value(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_bits(f32_to_f16(x))
    }
    #[inline(always)]
    fn from_le(b: &[u8]) -> Self {
        f16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
}

/// Rows of one tensor in one of the stored types: row 0 the base, rows `1..=k` the experts.
#[derive(Debug, Clone, PartialEq)]
pub enum HostRows {
    /// `f32` rows.
    F32(Vec<f32>),
    /// bfloat16 rows.
    Bf16(Vec<bf16>),
    /// Half-precision rows.
    F16(Vec<f16>),
}

impl HostRows {
    /// Decodes `rows` (little-endian bytes of equal length) into one buffer of type `dtype`.
    pub fn decode(dtype: Dtype, rows: &[&[u8]]) -> HostRows {
        fn collect<E: Elem>(rows: &[&[u8]]) -> Vec<E> {
            let size = std::mem::size_of::<E>();
            let mut out = Vec::with_capacity(rows.iter().map(|r| r.len() / size).sum());
            for r in rows {
                out.extend(r.chunks_exact(size).map(E::from_le));
            }
            out
        }
        match dtype {
            Dtype::F32 => HostRows::F32(collect(rows)),
            Dtype::BF16 => HostRows::Bf16(collect(rows)),
            Dtype::F16 => HostRows::F16(collect(rows)),
        }
    }

    /// Widens rows given as `f32` values.
    pub fn from_f32(values: Vec<f32>) -> HostRows {
        HostRows::F32(values)
    }

    /// The stored dtype.
    pub fn dtype(&self) -> Dtype {
        match self {
            HostRows::F32(_) => Dtype::F32,
            HostRows::Bf16(_) => Dtype::BF16,
            HostRows::F16(_) => Dtype::F16,
        }
    }

    /// The values as little-endian bytes.
    pub fn to_le_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        fn raw<T>(v: &[T]) -> std::borrow::Cow<'_, [u8]> {
            // SAFETY: f32, bf16 and f16 are plain old data without padding; on a little-endian
            // machine their memory is their little-endian encoding.
            std::borrow::Cow::Borrowed(unsafe {
                std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
            })
        }
        if cfg!(target_endian = "little") {
            match self {
                HostRows::F32(v) => raw(v),
                HostRows::Bf16(v) => raw(v),
                HostRows::F16(v) => raw(v),
            }
        } else {
            let values: Vec<f32> = match self {
                HostRows::F32(v) => v.clone(),
                HostRows::Bf16(v) => v.iter().map(|x| x.value()).collect(),
                HostRows::F16(v) => v.iter().map(|x| x.value()).collect(),
            };
            let mut out = Vec::new();
            self.dtype().encode_into(&values, &mut out);
            std::borrow::Cow::Owned(out)
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            HostRows::F32(v) => 4 * v.len(),
            HostRows::Bf16(v) => 2 * v.len(),
            HostRows::F16(v) => 2 * v.len(),
        }
    }
}

/// Runs `$body` with `$rows` bound to the typed slice inside a [`HostRows`] (`$e` its type).
#[macro_export]
#[doc(hidden)]
macro_rules! with_rows {
    ($host:expr, |$rows:ident: $e:ident| $body:expr) => {
        match $host {
            $crate::merge::engine::elem::HostRows::F32(v) => {
                type $e = f32;
                let $rows: &[$e] = v;
                $body
            }
            $crate::merge::engine::elem::HostRows::Bf16(v) => {
                type $e = half::bf16;
                let $rows: &[$e] = v;
                $body
            }
            $crate::merge::engine::elem::HostRows::F16(v) => {
                type $e = half::f16;
                let $rows: &[$e] = v;
                $body
            }
        }
    };
}
