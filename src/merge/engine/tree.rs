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

/// Values of `N` sums over the same positions, written block by block.
pub trait Sums<const N: usize>: Sync {
    /// Writes the values of positions `start..start + len` of sum `s` into `blocks[s][..len]`.
    /// Marked `#[inline(always)]` in implementations, so it compiles with the loop around it.
    fn fill(&self, start: usize, len: usize, blocks: &mut [[f32; TREE_BLOCK]; N]);
}

/// The block sums of one thread's share of blocks.
struct Part<'a, const N: usize, S: Sums<N>> {
    sums: &'a S,
    n: usize,
    first_block: usize,
    out: &'a mut [[f32; N]],
}

impl<const N: usize, S: Sums<N>> super::Work for Part<'_, N, S> {
    #[inline(always)]
    fn run(&mut self) {
        let mut block = [[0f32; TREE_BLOCK]; N];
        for (b, out) in self.out.iter_mut().enumerate() {
            let start = (self.first_block + b) * TREE_BLOCK;
            let len = TREE_BLOCK.min(self.n.saturating_sub(start));
            for s in block.iter_mut() {
                s.fill(0.0);
            }
            self.sums.fill(start, len, &mut block);
            for (o, s) in out.iter_mut().zip(block.iter_mut()) {
                *o = block_sum(s);
            }
        }
    }
}

/// `N` tree sums over the same `n` positions; block sums run on up to `threads` threads.
pub fn tree_sums<const N: usize, S: Sums<N>>(n: usize, threads: usize, sums: &S) -> [f32; N] {
    let blocks = n.div_ceil(TREE_BLOCK).max(1);
    let mut partials = vec![[0f32; N]; blocks];
    let per_thread = blocks.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        for (t, out) in partials.chunks_mut(per_thread).enumerate() {
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
    let mut totals = [0f32; N];
    for (s, total) in totals.iter_mut().enumerate() {
        let mut level: Vec<f32> = partials.iter().map(|p| p[s]).collect();
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
        impl Sums<2> for Test {
            fn fill(&self, start: usize, len: usize, out: &mut [[f32; TREE_BLOCK]; 2]) {
                let [a, b] = out;
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
            assert_eq!(one.map(f32::to_bits), three.map(f32::to_bits));
        }
    }
}
