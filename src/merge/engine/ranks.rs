//! Magnitude ranks, computed once per task vector and kept where its data lives, so that the
//! mask of TIES or Breadcrumbs for any density is one comparison per element, and DELLA's keep
//! probabilities need no sorting per candidate.
//!
//! An element's rank orders `(|tau_j|, j)`: by magnitude, equal magnitudes by position. Ranks
//! over the whole tensor are stored as 16-bit *codes* `rank >> shift` (2 bytes per element per
//! expert) for tensors of up to 2^27 elements, exactly (`shift = 0`) up to 2^16 elements; larger
//! tensors keep exact 32-bit ranks. A rank boundary `R` becomes a [`Bound`]: the code of rank `R`
//! and, where codes are shared by a bucket of `2^shift` elements, the `(|tau|, j)` pair of the
//! element of rank `R`, found per candidate among that bucket alone. DELLA's ranks within rows are
//! exact, 16-bit for rows of up to 2^16 columns.

use super::elem::Elem;

/// Tensors above this many elements keep exact 32-bit ranks instead of 16-bit codes.
pub const MAX_CODED: usize = 1 << 27;

/// The largest bucket of elements that share one code (`2^shift` for `MAX_CODED` elements).
pub const MAX_BUCKET: usize = MAX_CODED >> 16;

/// The bits of `|x|`: for non-negative floats, integer order is numeric order.
#[inline(always)]
pub fn magnitude_key(x: f32) -> u32 {
    x.to_bits() & 0x7FFF_FFFF
}

/// Ranks or codes, one per element, in the narrowest width that holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codes {
    /// 16-bit values.
    U16(Vec<u16>),
    /// 32-bit values.
    U32(Vec<u32>),
}

impl Codes {
    /// `n` zeros, 32-bit if `wide`.
    pub fn zeros(n: usize, wide: bool) -> Codes {
        if wide {
            Codes::U32(vec![0; n])
        } else {
            Codes::U16(vec![0; n])
        }
    }

    fn set(&mut self, j: usize, value: u32) {
        match self {
            Codes::U16(v) => v[j] = value as u16,
            Codes::U32(v) => v[j] = value,
        }
    }

    /// The value of element `j`.
    #[inline(always)]
    pub fn get(&self, j: usize) -> u32 {
        match self {
            Codes::U16(v) => u32::from(v[j]),
            Codes::U32(v) => v[j],
        }
    }

    /// Whether the values are 32-bit.
    pub fn is_wide(&self) -> bool {
        matches!(self, Codes::U32(_))
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Codes::U16(v) => 2 * v.len(),
            Codes::U32(v) => 4 * v.len(),
        }
    }
}

/// How a tensor of `n` elements stores its tensor-wide ranks: `(wide, shift)`.
pub fn code_layout(n: usize) -> (bool, u32) {
    if n > MAX_CODED {
        return (true, 0);
    }
    let bits = usize::BITS - n.saturating_sub(1).leading_zeros();
    (false, bits.saturating_sub(16))
}

/// The element indices of `keys` in ascending `(key, index)` order: a stable LSD radix sort of
/// `key << 32 | index` items on the key's three 11-bit digits (indices start ascending, so
/// equal keys stay in position order). Sequential reads, one scattered write per item and pass.
pub fn stable_order(keys: &[u32]) -> Vec<u32> {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    let n = keys.len();
    let mut items: Vec<u64> = keys
        .iter()
        .enumerate()
        .map(|(j, &k)| (u64::from(k) << 32) | j as u64)
        .collect();
    let mut scratch = vec![0u64; n];
    for pass in 0..3 {
        let shift = 32 + pass * BITS;
        let digit = |item: u64| ((item >> shift) as usize) & (BUCKETS - 1);
        let mut counts = vec![0usize; BUCKETS];
        for &item in &items {
            counts[digit(item)] += 1;
        }
        if counts.contains(&n) {
            continue; // every key has this digit: the pass would not move anything
        }
        let mut start = 0;
        for c in counts.iter_mut() {
            let here = *c;
            *c = start;
            start += here;
        }
        for &item in &items {
            let d = digit(item);
            scratch[counts[d]] = item;
            counts[d] += 1;
        }
        std::mem::swap(&mut items, &mut scratch);
    }
    items.into_iter().map(|item| item as u32).collect()
}

/// The magnitude keys of the task vector `expert - base`.
pub fn task_vector_keys<E: Elem>(base: &[E], expert: &[E]) -> Vec<u32> {
    base.iter()
        .zip(expert)
        .map(|(b, e)| magnitude_key(e.value() - b.value()))
        .collect()
}

/// Tensor-wide rank codes of the task vector with magnitude `keys` (see [`code_layout`]).
pub fn tensor_codes(keys: &[u32]) -> Codes {
    let (wide, shift) = code_layout(keys.len());
    let mut codes = Codes::zeros(keys.len(), wide);
    for (rank, &j) in stable_order(keys).iter().enumerate() {
        codes.set(j as usize, (rank >> shift) as u32);
    }
    codes
}

/// The positions of the elements of `values` equal to `wanted`, on several threads. Matches are
/// rare (one bucket of codes), so groups of elements are tested with one vectorized comparison
/// each and only groups with a match are searched.
fn positions_of<T: Copy + PartialEq + Send + Sync>(values: &[T], wanted: T) -> Vec<usize> {
    const GROUP: usize = 64;
    let threads = super::host::threads_for(values.len());
    let chunk = values.len().div_ceil(threads).div_ceil(GROUP).max(1) * GROUP;
    let scan = |first: usize, part: &[T]| {
        let mut found = Vec::new();
        for (g, group) in part.chunks(GROUP).enumerate() {
            if group.iter().fold(false, |hit, &c| hit | (c == wanted)) {
                let at = first + g * GROUP;
                found.extend(
                    (0..group.len())
                        .filter(|&i| group[i] == wanted)
                        .map(|i| at + i),
                );
            }
        }
        found
    };
    if threads == 1 {
        return scan(0, values);
    }
    std::thread::scope(|s| {
        let parts: Vec<_> = values
            .chunks(chunk)
            .enumerate()
            .map(|(t, part)| s.spawn(move || scan(t * chunk, part)))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("a code scan panicked"))
            .collect()
    })
}

/// Exact ranks within each row of `cols` elements (the whole vector when `cols == n`).
pub fn row_ranks(keys: &[u32], cols: usize) -> Codes {
    let cols = cols.max(1);
    let mut ranks = Codes::zeros(keys.len(), cols > 1 << 16);
    let mut order: Vec<u64> = Vec::with_capacity(cols);
    for (r, row) in keys.chunks(cols).enumerate() {
        order.clear();
        order.extend(
            row.iter()
                .enumerate()
                .map(|(c, &k)| (u64::from(k) << 32) | c as u64),
        );
        order.sort_unstable();
        for (rank, &composite) in order.iter().enumerate() {
            ranks.set(r * cols + (composite as u32) as usize, rank as u32);
        }
    }
    ranks
}

/// The boundary "rank at least `R`" of a rank window, as a test on an element's code, magnitude
/// key and position: `code > self.code`, or an equal code and `(key, index) >= (self.key,
/// self.index)`. Without codes (a one-shot merge) every element's code counts as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The code of rank `R`.
    pub code: u32,
    /// The magnitude key of the element of rank `R` (0 where the code alone decides).
    pub key: u32,
    /// The position of the element of rank `R` (0 where the code alone decides).
    pub index: u32,
}

impl Bound {
    /// A lower bound every element passes.
    pub const NONE_BELOW: Bound = Bound {
        code: 0,
        key: 0,
        index: 0,
    };
    /// An upper bound no element reaches.
    pub const NONE_ABOVE: Bound = Bound {
        code: u32::MAX,
        key: u32::MAX,
        index: u32::MAX,
    };

    /// Whether an element with this code, key and position has rank at least `R`.
    #[inline(always)]
    pub fn reached_by(self, code: u32, key: u32, index: u32) -> bool {
        code > self.code
            || (code == self.code && (key > self.key || (key == self.key && index >= self.index)))
    }

    /// The bound of rank `rank` from cached codes (`shift` from [`code_layout`]): with exact
    /// codes the code decides; otherwise the element of that rank is found among its bucket.
    pub fn from_codes(
        codes: &Codes,
        shift: u32,
        rank: usize,
        key_of: impl Fn(usize) -> u32,
    ) -> Bound {
        if shift == 0 {
            return Bound {
                code: rank as u32,
                key: 0,
                index: 0,
            };
        }
        let code = (rank >> shift) as u32;
        let within = rank - ((code as usize) << shift);
        let members = match codes {
            Codes::U16(v) => positions_of(v, code as u16),
            Codes::U32(v) => positions_of(v, code),
        };
        let mut bucket: Vec<u64> = members
            .into_iter()
            .map(|j| (u64::from(key_of(j)) << 32) | j as u64)
            .collect();
        let (_, &mut nth, _) = bucket.select_nth_unstable(within);
        Bound {
            code,
            key: (nth >> 32) as u32,
            index: nth as u32,
        }
    }

    /// The bounds of the rank window `[lo, hi)` found by selection over the magnitude keys
    /// (no codes), for a merge that runs once.
    pub fn window_by_selection(
        keys: impl ExactSizeIterator<Item = u32>,
        lo: usize,
        hi: usize,
    ) -> (Bound, Bound) {
        let n = keys.len();
        let mut composite: Vec<u64> = keys
            .enumerate()
            .map(|(j, k)| (u64::from(k) << 32) | j as u64)
            .collect();
        let at = |c: u64| Bound {
            code: 0,
            key: (c >> 32) as u32,
            index: c as u32,
        };
        let upper = if hi < n {
            let (_, &mut c, _) = composite.select_nth_unstable(hi);
            at(c)
        } else {
            Bound::NONE_ABOVE
        };
        // After selecting `hi`, the ranks below it sit in `composite[..hi]`, unordered.
        let lower = if lo > 0 {
            let (_, &mut c, _) = composite[..hi].select_nth_unstable(lo);
            at(c)
        } else {
            Bound::NONE_BELOW
        };
        (lower, upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_ranks(keys: &[u32]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&j| (keys[j], j));
        let mut ranks = vec![0; keys.len()];
        for (r, &j) in order.iter().enumerate() {
            ranks[j] = r;
        }
        ranks
    }

    fn keys(n: usize, distinct: u32, seed: u32) -> Vec<u32> {
        (0..n as u32)
            .map(|j| super::super::bits::mix32(j ^ seed) % distinct)
            .collect()
    }

    #[test]
    fn layouts_code_small_tensors_exactly_and_cap_buckets() {
        assert_eq!(code_layout(1), (false, 0));
        assert_eq!(code_layout(1 << 16), (false, 0));
        assert_eq!(code_layout((1 << 16) + 1), (false, 1));
        assert_eq!(code_layout(MAX_CODED), (false, 11));
        assert_eq!(MAX_BUCKET, 1 << 11);
        assert_eq!(code_layout(MAX_CODED + 1), (true, 0));
    }

    #[test]
    fn radix_order_is_the_stable_order() {
        for (n, distinct) in [(1, 1), (1000, 7), (5000, u32::MAX), (3000, 1 << 20)] {
            let k = keys(n, distinct, 3);
            let want = exact_ranks(&k);
            for (r, &j) in stable_order(&k).iter().enumerate() {
                assert_eq!(want[j as usize], r);
            }
        }
    }

    #[test]
    fn bounds_from_bucketed_codes_match_exact_ranks() {
        // 300k elements: shift 3 (buckets of 8), many ties.
        let k = keys(300_000, 1000, 9);
        let ranks = exact_ranks(&k);
        let (_, shift) = code_layout(k.len());
        assert_eq!(shift, 3);
        let codes = tensor_codes(&k);
        for rank in [0, 1, 7, 8, 12_345, 299_999] {
            let b = Bound::from_codes(&codes, shift, rank, |j| k[j]);
            for j in (0..k.len()).step_by(7) {
                let reached = b.reached_by(codes.get(j), k[j], j as u32);
                assert_eq!(reached, ranks[j] >= rank, "rank {rank}, element {j}");
            }
        }
        let (lo, hi) = Bound::window_by_selection(k.iter().copied(), 1000, 250_000);
        for (j, &r) in ranks.iter().enumerate() {
            let kept = lo.reached_by(0, k[j], j as u32) && !hi.reached_by(0, k[j], j as u32);
            assert_eq!(kept, (1000..250_000).contains(&r));
        }
    }

    #[test]
    fn row_ranks_rank_within_rows() {
        let k = keys(60, 5, 1);
        let ranks = row_ranks(&k, 12);
        for r in 0..5 {
            let want = exact_ranks(&k[r * 12..(r + 1) * 12]);
            for (c, &w) in want.iter().enumerate() {
                assert_eq!(ranks.get(r * 12 + c) as usize, w);
            }
        }
    }
}
