//! Space-filling designs: they ignore the values told and spread their points evenly, for
//! screening a search space, for runs too short for a model to pay off, or to give a model-based
//! optimizer its first points.
//!
//! * [`Sobol`]: the Sobol low-discrepancy sequence with Joe and Kuo's direction numbers (up to
//!   [`Sobol::MAX_DIM`] dimensions), randomized by Matoušek's linear matrix scramble and a random
//!   digital shift drawn from the seed. Both keep the net structure: every block of `2^k` points
//!   starting at a multiple of `2^k` has exactly one point in each of the `2^k` equal intervals of
//!   every coordinate, while the randomization removes the unscrambled sequence's artefacts
//!   (points on the cube's faces, coordinates equal across dimensions) and makes it an unbiased
//!   estimator. Ask batches of a power of two to keep the balance per batch.
//! * [`LatinHypercube`]: each batch is an independent Latin hypercube sample, with exactly one
//!   point in each of the `batch` equal intervals of every coordinate.
//! * [`Grid`]: the full factorial of a number of levels per coordinate, enumerated in a fixed
//!   order; once every point has been asked, asks return nothing.

use rand::Rng as _;
use rand::RngCore as _;
use rand::seq::SliceRandom as _;
use serde::{Deserialize, Serialize};

use super::joe_kuo::{DIRECTIONS, MAX_DIM};
use super::{OptimError, Optimizer, Told, check_dim_batch};
use crate::rng::{Rng, derive_seed};

/// The number of digits (bits) of each Sobol coordinate.
const BITS: usize = 64;

/// The unscrambled direction numbers of dimension `d` (zero-based, below [`MAX_DIM`]): entry
/// `k` is `v_{k+1} = m_{k+1} / 2^{k+1}` as a 64-bit binary fraction.
fn directions(d: usize) -> [u64; BITS] {
    let mut v = [0u64; BITS];
    if d == 0 {
        for (k, vk) in v.iter_mut().enumerate() {
            *vk = 1 << (BITS - 1 - k);
        }
        return v;
    }
    let (poly, m) = DIRECTIONS[d - 1];
    let s = m.len();
    for k in 0..BITS {
        v[k] = if k < s {
            u64::from(m[k]) << (BITS - 1 - k)
        } else {
            // v_k = v_{k-s} ^ (v_{k-s} >> s) ^ sum over j < s of a_j v_{k-j}, with a_j the
            // coefficient of x^(s-j).
            let mut x = v[k - s] ^ (v[k - s] >> s);
            for j in 1..s {
                if (poly >> (s - j)) & 1 == 1 {
                    x ^= v[k - j];
                }
            }
            x
        };
    }
    v
}

/// Applies a random lower-triangular binary matrix with unit diagonal (Matoušek's linear
/// scramble) to every direction number of one dimension: output digit `i` is the parity of input
/// digits `0..=i` selected by the matrix's row `i`, digit 0 being the most significant.
fn scramble(v: &mut [u64; BITS], rng: &mut Rng) {
    let rows: Vec<u64> = (0..BITS)
        .map(|i| {
            let diagonal = 1u64 << (BITS - 1 - i);
            (rng.next_u64() & (u64::MAX << (BITS - 1 - i))) | diagonal
        })
        .collect();
    for vk in v.iter_mut() {
        let x = *vk;
        *vk = rows.iter().enumerate().fold(0u64, |out, (i, row)| {
            out | (u64::from((row & x).count_ones() & 1) << (BITS - 1 - i))
        });
    }
}

/// A 64-bit binary fraction as an `f64` in `[0, 1)` (its 53 leading bits).
fn to_unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A scrambled Sobol sequence, `batch` points per ask.
///
/// Its JSON holds only the dimension, batch, seed and position; the scrambled direction numbers
/// are rebuilt from the seed on load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SobolState", into = "SobolState")]
pub struct Sobol {
    dim: usize,
    batch: usize,
    seed: u64,
    /// The index of the next point.
    index: u64,
    /// The scrambled direction numbers, one row per dimension.
    directions: Vec<[u64; BITS]>,
    /// The digital shift of each dimension.
    shift: Vec<u64>,
    /// The unshifted digits of point `index`.
    state: Vec<u64>,
}

/// What [`Sobol`] serializes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SobolState {
    dim: usize,
    batch: usize,
    seed: u64,
    index: u64,
}

impl From<Sobol> for SobolState {
    fn from(s: Sobol) -> SobolState {
        SobolState {
            dim: s.dim,
            batch: s.batch,
            seed: s.seed,
            index: s.index,
        }
    }
}

impl TryFrom<SobolState> for Sobol {
    type Error = OptimError;

    fn try_from(s: SobolState) -> Result<Sobol, OptimError> {
        let mut sobol = Sobol::new(s.dim, s.batch, s.seed)?;
        sobol.seek(s.index);
        Ok(sobol)
    }
}

impl Sobol {
    /// The most dimensions the embedded direction numbers cover.
    pub const MAX_DIM: usize = MAX_DIM;

    /// A Sobol sequence over `dim` coordinates (at most [`Sobol::MAX_DIM`]) asking `batch`
    /// points at a time, scrambled and shifted with randomness drawn from `seed`.
    pub fn new(dim: usize, batch: usize, seed: u64) -> Result<Sobol, OptimError> {
        check_dim_batch(dim, batch)?;
        if dim > MAX_DIM {
            return Err(OptimError::invalid(
                "dim",
                format!("must be at most {MAX_DIM} for sobol (use lhs or random beyond)"),
                dim,
            ));
        }
        let mut all = Vec::with_capacity(dim);
        let mut shift = Vec::with_capacity(dim);
        for d in 0..dim {
            let mut rng = Rng::new(derive_seed(seed, "optim/sobol", d as u64));
            let mut v = directions(d);
            scramble(&mut v, &mut rng);
            all.push(v);
            shift.push(rng.next_u64());
        }
        Ok(Sobol {
            dim,
            batch,
            seed,
            index: 0,
            directions: all,
            shift,
            state: vec![0; dim],
        })
    }

    /// The number of points asked so far.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Moves to point `index`: its digits are the XOR of the direction numbers selected by the
    /// bits of `index`'s Gray code.
    fn seek(&mut self, index: u64) {
        let gray = index ^ (index >> 1);
        for (state, v) in self.state.iter_mut().zip(&self.directions) {
            *state = (0..BITS)
                .filter(|&k| (gray >> k) & 1 == 1)
                .fold(0, |x, k| x ^ v[k]);
        }
        self.index = index;
    }

    /// The next point, or `None` after the last of the 2^64 - 1 points.
    fn next_point(&mut self) -> Option<Vec<f64>> {
        let next = self.index.checked_add(1)?;
        let point = self
            .state
            .iter()
            .zip(&self.shift)
            .map(|(&x, &shift)| to_unit(x ^ shift))
            .collect();
        // Gray-code order: point n+1 differs from point n in the direction number indexed by the
        // number of trailing zeros of n+1.
        let k = next.trailing_zeros() as usize;
        for (state, v) in self.state.iter_mut().zip(&self.directions) {
            *state ^= v[k];
        }
        self.index = next;
        Some(point)
    }
}

impl Optimizer for Sobol {
    fn ask(&mut self) -> Vec<Vec<f64>> {
        (0..self.batch).map_while(|_| self.next_point()).collect()
    }

    fn tell(&mut self, _results: &[Told]) {}
}

/// Latin hypercube samples, an independent one of `batch` points per ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatinHypercube {
    dim: usize,
    batch: usize,
    rng: Rng,
}

impl LatinHypercube {
    /// Latin hypercubes over `dim` coordinates of `batch` points each, drawn from `seed`.
    pub fn new(dim: usize, batch: usize, seed: u64) -> Result<LatinHypercube, OptimError> {
        check_dim_batch(dim, batch)?;
        Ok(LatinHypercube {
            dim,
            batch,
            rng: Rng::new(derive_seed(seed, "optim/lhs", 0)),
        })
    }
}

impl Optimizer for LatinHypercube {
    fn ask(&mut self) -> Vec<Vec<f64>> {
        let n = self.batch;
        let mut points = vec![vec![0.0; self.dim]; n];
        let mut strata: Vec<usize> = (0..n).collect();
        for d in 0..self.dim {
            strata.shuffle(&mut self.rng);
            for (point, &stratum) in points.iter_mut().zip(&strata) {
                point[d] = (stratum as f64 + self.rng.random::<f64>()) / n as f64;
            }
        }
        points
    }

    fn tell(&mut self, _results: &[Told]) {}
}

/// The full factorial design over `levels[d]` evenly spaced values of each coordinate `d`
/// (`0, 1/(L-1), ..., 1`, or `0.5` alone for one level), `batch` points per ask.
///
/// Points come in lexicographic order of their level indices with the last coordinate varying
/// fastest; after the last point, asks return nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    levels: Vec<usize>,
    batch: usize,
    /// The index of the next point.
    next: u64,
    /// The number of points, the product of the levels.
    total: u64,
}

impl Grid {
    /// A grid with `levels[d]` levels on coordinate `d`, asking `batch` points at a time.
    pub fn new(levels: Vec<usize>, batch: usize) -> Result<Grid, OptimError> {
        check_dim_batch(levels.len(), batch)?;
        if let Some(&bad) = levels.iter().find(|&&l| l == 0) {
            return Err(OptimError::invalid("levels", "must all be at least 1", bad));
        }
        let total = levels
            .iter()
            .try_fold(1u64, |acc, &l| acc.checked_mul(l as u64))
            .ok_or_else(|| {
                OptimError::invalid(
                    "levels",
                    "must have a product below 2^64 (use sobol for large spaces)",
                    format!("{levels:?}"),
                )
            })?;
        Ok(Grid {
            levels,
            batch,
            next: 0,
            total,
        })
    }

    /// A grid with the same number of `levels` on each of `dim` coordinates.
    pub fn uniform(dim: usize, levels: usize, batch: usize) -> Result<Grid, OptimError> {
        Grid::new(vec![levels; dim], batch)
    }

    /// The number of points in the grid.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The number of points not yet asked.
    pub fn remaining(&self) -> u64 {
        self.total - self.next
    }

    /// Point `index` of the enumeration.
    fn point(&self, mut index: u64) -> Vec<f64> {
        let mut point = vec![0.0; self.levels.len()];
        for (x, &l) in point.iter_mut().zip(&self.levels).rev() {
            let level = index % l as u64;
            index /= l as u64;
            *x = if l == 1 {
                0.5
            } else {
                level as f64 / (l - 1) as f64
            };
        }
        point
    }
}

impl Optimizer for Grid {
    fn ask(&mut self) -> Vec<Vec<f64>> {
        let n = (self.batch as u64).min(self.remaining());
        let points = (self.next..self.next + n).map(|i| self.point(i)).collect();
        self.next += n;
        points
    }

    fn tell(&mut self, _results: &[Told]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number of primitive polynomials of degree `s` over GF(2): phi(2^s - 1) / s.
    fn primitive_count(s: u32) -> usize {
        let n = (1u64 << s) - 1;
        let phi = (1..=n).filter(|&k| gcd(k, n) == 1).count();
        phi / s as usize
    }

    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }

    /// `a * b` modulo `poly` over GF(2).
    fn mul_mod(mut a: u64, mut b: u64, poly: u64) -> u64 {
        let s = 63 - poly.leading_zeros();
        let mut r = 0;
        while b != 0 {
            if b & 1 == 1 {
                r ^= a;
            }
            b >>= 1;
            a <<= 1;
            if (a >> s) & 1 == 1 {
                a ^= poly;
            }
        }
        r
    }

    /// Whether `x` has multiplicative order `2^s - 1` modulo `poly`, `s` its degree.
    fn is_primitive(poly: u64) -> bool {
        let s = 63 - poly.leading_zeros();
        let order = (1u64 << s) - 1;
        let mut x_pow = 1; // x^k
        for k in 1..=order {
            x_pow = mul_mod(x_pow, 2, poly);
            if x_pow == 1 {
                return k == order;
            }
        }
        false
    }

    #[test]
    fn the_direction_table_is_every_primitive_polynomial_with_valid_numbers() {
        let mut by_degree = [0usize; 12];
        let mut previous = 1;
        for (row, &(poly, m)) in DIRECTIONS.iter().enumerate() {
            let s = 31 - poly.leading_zeros();
            assert_eq!(m.len(), s as usize, "row {row}");
            assert!(poly > previous, "row {row}: polynomials increase");
            previous = poly;
            assert!(
                poly & 1 == 1 && is_primitive(u64::from(poly)),
                "row {row}: {poly}"
            );
            for (k, &mk) in m.iter().enumerate() {
                assert!(
                    mk % 2 == 1 && mk < 1 << (k + 1),
                    "row {row}: m_{} = {mk}",
                    k + 1
                );
            }
            by_degree[s as usize] += 1;
        }
        for (s, &count) in by_degree.iter().enumerate().skip(1) {
            assert_eq!(count, primitive_count(s as u32), "degree {s}");
        }
    }

    #[test]
    fn unscrambled_points_match_the_published_sequence() {
        // The first points of the two-dimensional Sobol sequence (as scipy.stats.qmc.Sobol with
        // scramble=False gives them) and of the third dimension, x^2 + x + 1 with m = 1, 3.
        let expected = [
            [0.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.75, 0.25, 0.25],
            [0.25, 0.75, 0.75],
            [0.375, 0.375, 0.625],
            [0.875, 0.875, 0.125],
            [0.625, 0.125, 0.875],
            [0.125, 0.625, 0.375],
        ];
        let v: Vec<[u64; BITS]> = (0..3).map(directions).collect();
        let mut state = [0u64; 3];
        for (n, row) in expected.iter().enumerate() {
            let got: Vec<f64> = state.iter().map(|&x| to_unit(x)).collect();
            assert_eq!(got, row, "point {n}");
            let k = (n as u64 + 1).trailing_zeros() as usize;
            for d in 0..3 {
                state[d] ^= v[d][k];
            }
        }
    }

    #[test]
    fn scrambled_sobol_is_in_the_cube_and_stratified_in_every_coordinate() {
        let dim = Sobol::MAX_DIM;
        let mut sobol = Sobol::new(dim, 256, 11).unwrap();
        let mut points = sobol.ask();
        points.extend(sobol.ask());
        points.extend(sobol.ask());
        points.extend(sobol.ask());
        assert!(points.iter().flatten().all(|x| (0.0..1.0).contains(x)));
        for k in 0..=10u32 {
            let n = 1usize << k;
            for d in 0..dim {
                let mut seen = vec![false; n];
                for p in &points[..n] {
                    seen[(p[d] * n as f64) as usize] = true;
                }
                assert!(
                    seen.iter().all(|&s| s),
                    "first 2^{k} points, coordinate {d}"
                );
            }
        }
        // The second block of 2^9 points is balanced too.
        for d in 0..dim {
            let mut seen = [false; 512];
            for p in &points[512..] {
                seen[(p[d] * 512.0) as usize] = true;
            }
            assert!(seen.iter().all(|&s| s), "coordinate {d}");
        }
        let other = Sobol::new(dim, 4, 12).unwrap().ask();
        assert_ne!(other[..], points[..4]);
    }

    #[test]
    fn sobol_resumes_from_json_to_the_same_points() {
        let mut a = Sobol::new(5, 3, 4).unwrap();
        a.ask();
        a.ask();
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.len() < 100, "{json}");
        let mut b: Sobol = serde_json::from_str(&json).unwrap();
        assert_eq!(b, a);
        assert_eq!(b.index(), 6);
        assert_eq!(a.ask(), b.ask());
        let err = Sobol::new(Sobol::MAX_DIM + 1, 1, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`dim`") && err.contains("338"), "{err}");
    }

    #[test]
    fn each_latin_hypercube_has_one_point_per_stratum_per_coordinate() {
        let mut lhs = LatinHypercube::new(6, 20, 3).unwrap();
        let first = lhs.ask();
        for batch in [first.clone(), lhs.ask()] {
            assert_eq!(batch.len(), 20);
            for d in 0..6 {
                let mut strata: Vec<usize> = batch.iter().map(|p| (p[d] * 20.0) as usize).collect();
                strata.sort_unstable();
                assert_eq!(strata, (0..20).collect::<Vec<_>>(), "coordinate {d}");
            }
        }
        let json = serde_json::to_string(&lhs).unwrap();
        let mut back: LatinHypercube = serde_json::from_str(&json).unwrap();
        assert_eq!(back.ask(), lhs.ask());
        assert_ne!(LatinHypercube::new(6, 20, 4).unwrap().ask(), first);
    }

    #[test]
    fn the_grid_enumerates_every_level_combination_then_is_exhausted() {
        let mut grid = Grid::new(vec![3, 2, 1], 4).unwrap();
        assert_eq!(grid.total(), 6);
        let mut points = grid.ask();
        assert_eq!(points.len(), 4);
        points.extend(grid.ask());
        assert_eq!(grid.remaining(), 0);
        assert!(grid.ask().is_empty());
        let expected: Vec<Vec<f64>> = [0.0, 0.5, 1.0]
            .iter()
            .flat_map(|&a| [0.0, 1.0].map(|b| vec![a, b, 0.5]))
            .collect();
        assert_eq!(points, expected);

        let mut five = Grid::uniform(3, 5, 7).unwrap();
        let mut all = Vec::new();
        loop {
            let batch = five.ask();
            if batch.is_empty() {
                break;
            }
            all.extend(batch);
        }
        assert_eq!(all.len(), 125);
        let mut distinct: Vec<String> = all.iter().map(|p| format!("{p:?}")).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 125);

        let err = Grid::uniform(40, 5, 1).unwrap_err().to_string();
        assert!(err.contains("`levels`"), "{err}");
        assert!(
            Grid::new(vec![2, 0], 1)
                .unwrap_err()
                .to_string()
                .contains("`levels`")
        );
        assert!(
            Grid::new(vec![], 1)
                .unwrap_err()
                .to_string()
                .contains("`dim`")
        );
    }
}
