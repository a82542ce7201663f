//! Seeded, serializable randomness.
//!
//! Every random choice in mergesearch flows from the run seed through [`derive_seed`] and
//! [`Rng`], so the same seed and inputs give the same results on every machine and device:
//! random masks are drawn on the host, never by a backend's own generator.

use serde::{Deserialize, Serialize};

/// One step of SplitMix64: advances `state` and returns a well-mixed 64-bit value.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for one named stream (for example a tensor's name and an expert index) under `seed`.
///
/// FNV-1a over the label's bytes, mixed with the seed and the stream number by SplitMix64: stable
/// across platforms and releases, unlike `std`'s hasher.
pub fn derive_seed(seed: u64, label: &str, stream: u64) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in label.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    let mut state = seed ^ hash.rotate_left(17) ^ stream.wrapping_mul(0xD605_BBB5_8C8A_BBBB);
    splitmix64(&mut state)
}

/// xoshiro256++ (Blackman and Vigna): fast, small state, good statistical quality.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator whose state is expanded from `seed` by SplitMix64.
    pub fn new(seed: u64) -> Rng {
        let mut s = seed;
        let state = [
            splitmix64(&mut s),
            splitmix64(&mut s),
            splitmix64(&mut s),
            splitmix64(&mut s),
        ];
        Rng { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, 1)` with 24 random bits (every value exactly representable).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Fills a vector with `n` uniform `f32` values in `[0, 1)`, two per 64-bit draw.
    pub fn uniform_f32(&mut self, n: usize) -> Vec<f32> {
        const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
        let mut out = Vec::with_capacity(n);
        while out.len() + 2 <= n {
            let bits = self.next_u64();
            out.push((bits >> 40) as f32 * SCALE);
            out.push(((bits >> 8) & 0xFF_FFFF) as f32 * SCALE);
        }
        if out.len() < n {
            out.push(self.next_f32());
        }
        out
    }

    /// Uniform integer in `0..n` (`n` below 2^32), by the multiply-shift of 32 random bits.
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0 && n as u64 <= 1 << 32, "below({n})");
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Shuffles `values` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, values: &mut [T]) {
        for i in (1..values.len()).rev() {
            values.swap(i, self.below(i + 1));
        }
    }

    /// Standard normal by the Box-Muller transform.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(derive_seed(1, "w", 0), derive_seed(1, "w", 1));
        assert_ne!(derive_seed(1, "w", 0), derive_seed(1, "v", 0));
        assert_ne!(derive_seed(1, "w", 0), derive_seed(2, "w", 0));
        assert_eq!(derive_seed(1, "w", 0), derive_seed(1, "w", 0));
    }

    #[test]
    fn uniform_values_have_the_right_moments() {
        let mut r = Rng::new(3);
        let u = r.uniform_f32(200_001);
        assert_eq!(u.len(), 200_001);
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = u.iter().map(|&x| x as f64).sum::<f64>() / u.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        let below = u.iter().filter(|&&x| x < 0.2).count() as f64 / u.len() as f64;
        assert!((below - 0.2).abs() < 0.005, "P(u < 0.2) = {below}");
    }
}
