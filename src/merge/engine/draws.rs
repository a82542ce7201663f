//! The random draws of DARE and DELLA, cached on the host as 8-bit *draw codes*: the top 8 bits of
//! each element's [`uniform`] value. A run's plan seed is fixed, so each (tensor, expert) stream
//! draws the same values for every candidate, and only the keep probability changes; with the
//! codes at hand, "is `u_j` below `p`" is decided by one comparison for all but the elements whose
//! code shares `p`'s 1/256 interval, which are drawn exactly. The decisions are those of the
//! generator itself, bit for bit; the codes only save computing it (four integer multiplies per
//! element and expert, twice per candidate with DARE's rescale) at one byte per element and
//! expert.

use super::bits::{StreamKey, uniform};
use super::host::threads_for;
use super::{Work, with_fast_cpu};

/// One stream's draw codes over a tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draws {
    /// The stream they were drawn from.
    pub key: StreamKey,
    /// Per element, `floor(256 * u_j)`.
    pub codes: Vec<u8>,
}

impl Draws {
    /// The codes of `n` elements of stream `key`, drawn on every core.
    pub fn new(key: StreamKey, n: usize) -> Draws {
        struct Fill<'a> {
            key: StreamKey,
            first: usize,
            out: &'a mut [u8],
        }
        impl Work for Fill<'_> {
            #[inline(always)]
            fn run(&mut self) {
                for (jj, c) in self.out.iter_mut().enumerate() {
                    *c = code(uniform(self.key, (self.first + jj) as u32));
                }
            }
        }
        let mut codes = vec![0u8; n];
        let chunk = n.div_ceil(threads_for(n)).max(1);
        std::thread::scope(|scope| {
            for (t, out) in codes.chunks_mut(chunk).enumerate() {
                let mut fill = Fill {
                    key,
                    first: t * chunk,
                    out,
                };
                scope.spawn(move || with_fast_cpu(&mut fill));
            }
        });
        Draws { key, codes }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.codes.len()
    }
}

/// The draw code of a uniform value in `[0, 1)`.
#[inline(always)]
fn code(u: f32) -> u8 {
    (u * 256.0) as u8
}

/// What a draw code says of `u < p`, given `p256 = 256 * p` (exact: a power-of-two scaling):
/// `(sure, undecided)`. Sure: every value with this code is below `p`. Undecided: `p` falls inside
/// the code's interval, so the exact value decides. Neither: every value is at or above `p`.
#[inline(always)]
pub fn decide(code: u8, p256: f32) -> (bool, bool) {
    let c = f32::from(code);
    let sure = c + 1.0 <= p256;
    (sure, (c < p256) & !sure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_exactly_what_the_generator_decides() {
        let key = StreamKey::new(3, "layers.0.mlp.weight", 1);
        let n = 100_000;
        let draws = Draws::new(key, n);
        // Thresholds on and next to code boundaries, inside intervals, and out of range.
        let mut thresholds = vec![-0.5f32, 0.0, 1.0, 1.5, 0.2, 0.5, 0.9, f32::NAN];
        for k in [1u32, 51, 128, 255] {
            let edge = k as f32 / 256.0;
            thresholds.extend([
                edge,
                f32::from_bits(edge.to_bits() - 1),
                f32::from_bits(edge.to_bits() + 1),
            ]);
        }
        for p in thresholds {
            let (mut undecided, mut kept) = (0, 0);
            for j in 0..n {
                let exact = uniform(key, j as u32) < p;
                let (sure, open) = decide(draws.codes[j], p * 256.0);
                assert!(!(sure && open));
                if open {
                    undecided += 1;
                } else {
                    assert_eq!(sure, exact, "element {j}, p = {p}");
                }
                kept += usize::from(exact);
            }
            // Only one code's interval (about 1/256 of the elements) is left to the exact value.
            assert!(undecided < n / 128, "p = {p}: {undecided} undecided");
            if p == 0.2 {
                assert!((kept as f64 / n as f64 - 0.2).abs() < 0.01);
            }
        }
    }

    #[test]
    fn codes_do_not_depend_on_threads() {
        let key = StreamKey::new(9, "t", 0);
        let n = 300_000;
        let draws = Draws::new(key, n);
        for j in (0..n).step_by(997) {
            assert_eq!(draws.codes[j], code(uniform(key, j as u32)));
        }
    }
}
