//! Sums over a tensor in one fixed order, so that the host and every GPU get the same bits: the
//! values are cut into blocks of [`TREE_BLOCK`] (the last one padded with zeros), each block is
//! summed pairwise (`s[i] += s[i + h]` for `h = TREE_BLOCK / 2, ..., 1`), and the block sums are
//! summed the same way, level after level, until one value is left.

/// Values per block of a tree sum.
pub const TREE_BLOCK: usize = 1024;

/// The pairwise sum of one block, padded with zeros to [`TREE_BLOCK`] values.
#[inline(always)]
pub fn block_sum(block: &mut [f32; TREE_BLOCK]) -> f32 {
    let mut h = TREE_BLOCK / 2;
    while h > 0 {
        let (low, high) = block.split_at_mut(h);
        for (a, b) in low.iter_mut().zip(high.iter()) {
            *a += *b;
        }
        h /= 2;
    }
    block[0]
}

/// Values of several sums over the same positions, written block by block.
pub trait Sums: Sync {
    /// How many sums.
    fn count(&self) -> usize;

    /// Writes the values of positions `start..start + len` of sum `s` into `blocks[s][..len]`
    /// (`blocks` holds [`count`](Sums::count) zeroed blocks). Marked `#[inline(always)]` in
    /// implementations, so it compiles with the loop around it.
    fn fill(&self, start: usize, len: usize, blocks: &mut [[f32; TREE_BLOCK]]);
}

/// The block sums of one thread's share of blocks: `count` per block, block after block.
struct Part<'a, S: Sums> {
    sums: &'a S,
    n: usize,
    first_block: usize,
    out: &'a mut [f32],
}

impl<S: Sums> super::Work for Part<'_, S> {
    #[inline(always)]
    fn run(&mut self) {
        let count = self.sums.count();
        let mut blocks = vec![[0f32; TREE_BLOCK]; count];
        for (b, out) in self.out.chunks_mut(count).enumerate() {
            let start = (self.first_block + b) * TREE_BLOCK;
            let len = TREE_BLOCK.min(self.n.saturating_sub(start));
            for s in blocks.iter_mut() {
                s.fill(0.0);
            }
            self.sums.fill(start, len, &mut blocks);
            for (o, s) in out.iter_mut().zip(blocks.iter_mut()) {
                *o = block_sum(s);
            }
        }
    }
}

/// The tree sums of `sums` over the same `n` positions, in order; block sums run on up to
/// `threads` threads.
pub fn tree_sums<S: Sums>(n: usize, threads: usize, sums: &S) -> Vec<f32> {
    let count = sums.count();
    if count == 0 {
        return Vec::new();
    }
    let blocks = n.div_ceil(TREE_BLOCK).max(1);
    let mut partials = vec![0f32; blocks * count];
    let per_thread = blocks.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        for (t, out) in partials.chunks_mut(per_thread * count).enumerate() {
            let mut part = Part {
                sums,
                n,
                first_block: t * per_thread,
                out,
            };
            if per_thread == blocks {
                super::with_fast_cpu(&mut part);
            } else {
                scope.spawn(move || super::with_fast_cpu(&mut part));
            }
        }
    });
    let mut totals = vec![0f32; count];
    for (s, total) in totals.iter_mut().enumerate() {
        let mut level: Vec<f32> = partials.iter().skip(s).step_by(count).copied().collect();
        while level.len() > 1 {
            level = level
                .chunks(TREE_BLOCK)
                .map(|c| {
                    let mut block = [0f32; TREE_BLOCK];
                    block[..c.len()].copy_from_slice(c);
                    block_sum(&mut block)
                })
                .collect();
        }
        *total = level[0];
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_sums_are_exact_on_integers_and_independent_of_threads() {
        struct Test;
        impl Sums for Test {
            fn count(&self) -> usize {
                2
            }

            fn fill(&self, start: usize, len: usize, out: &mut [[f32; TREE_BLOCK]]) {
                let [a, b] = out else { unreachable!() };
                for (i, (x, y)) in a.iter_mut().zip(b.iter_mut()).take(len).enumerate() {
                    *x = ((start + i) % 7) as f32;
                    *y = 1.0 / (1.0 + (start + i) as f32);
                }
            }
        }
        for n in [0, 1, 1023, 1024, 1025, 3_000_000] {
            let want: f64 = (0..n).map(|j| (j % 7) as f64).sum();
            let one = tree_sums(n, 1, &Test);
            assert_eq!(f64::from(one[0]), want, "n = {n}");
            let three = tree_sums(n, 3, &Test);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one), bits(&three));
        }
    }
}
