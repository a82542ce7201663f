//! Bit-level definitions that the host and the GPU kernels must compute identically: the
//! conversion of `f32` results to bfloat16 / float16 (round to nearest even, in integer
//! arithmetic), and the counter-based random generator of DARE and DELLA masks.
//!
//! The GPU kernels (`cube::kernels`) repeat these formulas operation for operation; the tests here
//! pin the host versions against the `half` crate and against fixed values, and the kernel tests
//! compare the two bit for bit.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The bfloat16 bits of `x`, rounded to nearest even; NaN stays NaN (quieted, sign kept).
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if bits & 0x7FFF_FFFF > 0x7F80_0000 {
        return ((bits >> 16) | 0x0040) as u16;
    }
    (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// The IEEE half-precision bits of `x`, rounded to nearest even (overflow to infinity,
/// gradual underflow); NaN stays NaN (quieted, sign kept).
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = (bits >> 16) & 0x8000;
    let a = bits & 0x7FFF_FFFF;
    let h = if a > 0x7F80_0000 {
        0x7E00 | ((a >> 13) & 0x3FF)
    } else if a >= 0x477F_F000 {
        // At or above 65520, the midpoint between 65504 (the largest half) and 65536.
        0x7C00
    } else if a >= 0x3880_0000 {
        // Normal halves (at least 2^-14): rebias the exponent from 127 to 15 and round.
        let r = a + 0x0FFF + ((a >> 13) & 1);
        (r - 0x3800_0000) >> 13
    } else if a <= 0x3300_0000 {
        // At most 2^-25, half of the smallest subnormal: rounds to zero (the tie goes to even).
        0
    } else {
        // Subnormal halves: the value in units of 2^-24, rounded to nearest even.
        let e = a >> 23;
        let m = (a & 0x7F_FFFF) | 0x80_0000;
        let shift = 126 - e;
        let q = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        q + u32::from(rem > half || (rem == half && q & 1 == 1))
    };
    (sign | h) as u16
}

/// The key of one random stream: a (plan seed, tensor, expert) triple hashed to two 32-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamKey(pub u32, pub u32);

impl StreamKey {
    /// The stream of expert `expert` on tensor `tensor` under the plan's `seed`.
    pub fn new(seed: u64, tensor: &str, expert: usize) -> StreamKey {
        let h = xxh3_64_with_seed(tensor.as_bytes(), seed);
        let mut z = h ^ (expert as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        StreamKey(z as u32, (z >> 32) as u32)
    }
}

/// A 32-bit integer hash with low bias (C. Wellons' `lowbias32`, second constants).
#[inline(always)]
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x21F0_AAAD);
    x ^= x >> 15;
    x = x.wrapping_mul(0x735A_2D97);
    x ^= x >> 15;
    x
}

/// Scale of a 24-bit integer to `[0, 1)`.
pub const UNIT_24: f32 = 1.0 / (1u32 << 24) as f32;

/// Element `index`'s uniform value in `[0, 1)` (24 random bits, every value exact in `f32`) on
/// the stream `key`: a pure function of its arguments, so every device draws the same masks in
/// any order, with nothing drawn ahead or uploaded.
#[inline(always)]
pub fn uniform(key: StreamKey, index: u32) -> f32 {
    let x = mix32(mix32(index ^ key.0).wrapping_add(key.1));
    (x >> 8) as f32 * UNIT_24
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Finite `f32` values spread over every exponent, plus the boundaries of both formats.
    fn samples() -> Vec<f32> {
        let mut v = Vec::new();
        let mut x: u32 = 0x1234_5678;
        for _ in 0..200_000 {
            x = mix32(x.wrapping_add(0x9E37_79B9));
            let f = f32::from_bits(x);
            if f.is_finite() {
                v.push(f);
            }
        }
        for b in [
            0u32,
            0x3300_0000,
            0x3300_0001,
            0x3380_0000,
            0x387F_FFFF,
            0x3880_0000,
            0x477F_E000,
            0x477F_EFFF,
            0x477F_F000,
            0x477F_FFFF,
            0x7F7F_FFFF,
            0x7F80_0000,
            0x3F80_8000,
            0x3F81_8000,
        ] {
            v.push(f32::from_bits(b));
            v.push(-f32::from_bits(b));
        }
        // Every half and bfloat16 value, and the midpoints next to them.
        for h in 0..=u16::MAX {
            let a = f16::from_bits(h).to_f32();
            let b = bf16::from_bits(h).to_f32();
            for x in [a, b] {
                if x.is_finite() {
                    v.push(x);
                    v.push(f32::from_bits(x.to_bits().wrapping_add(1)));
                    v.push(f32::from_bits(x.to_bits().wrapping_sub(1)));
                }
            }
        }
        v
    }

    #[test]
    fn conversions_round_like_the_half_crate() {
        for x in samples() {
            assert_eq!(
                f32_to_bf16(x),
                bf16::from_f32(x).to_bits(),
                "bf16 of {x:e} ({:#010x})",
                x.to_bits()
            );
            assert_eq!(
                f32_to_f16(x),
                f16::from_f32(x).to_bits(),
                "f16 of {x:e} ({:#010x})",
                x.to_bits()
            );
        }
    }

    #[test]
    fn nan_stays_nan() {
        for bits in [0x7FC0_0000u32, 0xFF80_0001, 0x7F80_0001] {
            let x = f32::from_bits(bits);
            assert!(bf16::from_bits(f32_to_bf16(x)).is_nan());
            assert!(f16::from_bits(f32_to_f16(x)).is_nan());
        }
    }

    #[test]
    fn uniforms_are_fixed_uniform_and_independent_across_streams() {
        // Pinned values: a change of the generator changes every DARE and DELLA merge.
        let key = StreamKey::new(0, "model.layers.0.mlp.up_proj.weight", 0);
        let first: Vec<u32> = (0..4).map(|j| (uniform(key, j) / UNIT_24) as u32).collect();
        assert_eq!(first, PINNED, "the mask generator changed");
        let other = StreamKey::new(0, "model.layers.0.mlp.up_proj.weight", 1);
        let n = 200_000u32;
        let (mut mean, mut below, mut both) = (0f64, 0u32, 0u32);
        for j in 0..n {
            let u = uniform(key, j);
            assert!((0.0..1.0).contains(&u));
            mean += f64::from(u);
            below += u32::from(u < 0.3);
            both += u32::from(u < 0.3 && uniform(other, j) < 0.3);
        }
        let n = f64::from(n);
        assert!((mean / n - 0.5).abs() < 0.005, "mean {}", mean / n);
        assert!((f64::from(below) / n - 0.3).abs() < 0.005);
        // Independent streams: P(both below 0.3) = 0.09.
        assert!(
            (f64::from(both) / n - 0.09).abs() < 0.004,
            "{}",
            f64::from(both) / n
        );
    }

    const PINNED: [u32; 4] = [10_815_874, 16_014_130, 14_091_021, 13_280_915];
}
