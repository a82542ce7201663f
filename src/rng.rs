//! Seeded, serializable randomness.
//!
//! Every random choice in mergesearch flows from the run seed through [`derive_seed`] and
//! [`Rng`], so the same seed and inputs give the same results on every machine and device:
//! random masks are drawn on the host, never by a backend's own generator. [`Rng`] is
//! xoshiro256++ from `rand_xoshiro` (its state expanded from a `u64` by SplitMix64), and values
//! are drawn through `rand`'s distributions (`random`, `random_range`, `shuffle`) and
//! `rand_distr`'s (`StandardNormal`), all of which are specified to give the same values on every
//! platform. The generator's state serializes, so an optimizer's state resumes bit-exactly.
//!
//! A version of mergesearch may change these streams (another generator, distribution or
//! crate version); [`STREAMS`] names them, every run records it in `run.json`, and a run is
//! resumed only by a mergesearch that draws the same streams.

use rand::RngCore;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// The random streams this version draws: recorded in `run.json`, checked on resume.
pub const STREAMS: &str = "xoshiro256++ (rand_xoshiro 0.7) via rand 0.9 and rand_distr 0.5";

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

/// The seeded generator: xoshiro256++ (`rand_xoshiro`), a [`RngCore`], so every `rand` and
/// `rand_distr` method draws from it (`use rand::Rng as _` for `random`, `random_range`,
/// `sample`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rng(Xoshiro256PlusPlus);

impl Rng {
    /// A generator whose state is expanded from `seed` by SplitMix64.
    pub fn new(seed: u64) -> Rng {
        Rng(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// Fills a vector with `n` uniform `f32` values in `[0, 1)`, two per 64-bit draw (each with
    /// 24 random bits, so every value is exactly representable): the merge masks' stream.
    pub fn uniform_f32(&mut self, n: usize) -> Vec<f32> {
        const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
        let mut out = Vec::with_capacity(n);
        while out.len() + 2 <= n {
            let bits = self.next_u64();
            out.push((bits >> 40) as f32 * SCALE);
            out.push(((bits >> 8) & 0xFF_FFFF) as f32 * SCALE);
        }
        if out.len() < n {
            out.push((self.next_u64() >> 40) as f32 * SCALE);
        }
        out
    }
}

impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng as _;
    use rand::seq::SliceRandom;
    use rand_distr::StandardNormal;

    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..4).map(|_| r.next_u64()).collect::<Vec<u64>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_ne!(derive_seed(1, "w", 0), derive_seed(1, "w", 1));
        assert_ne!(derive_seed(1, "w", 0), derive_seed(1, "v", 0));
        assert_ne!(derive_seed(1, "w", 0), derive_seed(2, "w", 0));
        assert_eq!(derive_seed(1, "w", 0), derive_seed(1, "w", 0));
    }

    /// The streams are pinned: these values may change only with [`STREAMS`].
    #[test]
    fn the_streams_are_the_pinned_ones() {
        // xoshiro256++ seeded by SplitMix64, as its reference implementation.
        let mut s = 42u64;
        let state: Vec<u64> = (0..4).map(|_| splitmix64(&mut s)).collect();
        let first = state[0]
            .wrapping_add(state[3])
            .rotate_left(23)
            .wrapping_add(state[0]);
        assert_eq!(Rng::new(42).next_u64(), first);
        let mut r = Rng::new(42);
        let u: f64 = r.random();
        let k = r.random_range(0..1000usize);
        let z: f64 = r.sample(StandardNormal);
        let mut v: Vec<u32> = (0..8).collect();
        v.shuffle(&mut r);
        assert_eq!(u.to_bits(), 4_605_509_828_241_559_245);
        assert_eq!(k, 318);
        assert_eq!(z.to_bits(), 4_609_018_660_546_388_191);
        assert_eq!(v, [0, 1, 5, 7, 4, 3, 6, 2]);
        // The state serializes and resumes the stream.
        let json = serde_json::to_string(&r).unwrap();
        let mut back: Rng = serde_json::from_str(&json).unwrap();
        assert_eq!(back.next_u64(), r.next_u64());
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
