//! Sums over a tensor in one fixed order, so that the host and every GPU get the same bits: the
//! values are cut into blocks of [`TREE_BLOCK`] (the last one padded with zeros), each block is
//! summed pairwise (`s[i] += s[i + h]` for `h = TREE_BLOCK / 2, ..., 1`), and the block sums are
//! summed the same way, level after level, until one value is left.

/// Values per block of a tree sum.
pub const TREE_BLOCK: usize = 1024;

/// The pairwise sum of one block, padded with zeros to [`TREE_BLOCK`] values.
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

/// `N` tree sums over the same `n` positions, where `fill(start, blocks)` writes the values of
/// positions `start..start + len` of sum `s` into `blocks[s][..len]` (`len` = the rest of the
/// block; the tail stays zero). Blocks run on up to `threads` threads.
pub fn tree_sums<const N: usize>(
    n: usize,
    threads: usize,
    fill: impl Fn(usize, usize, &mut [[f32; TREE_BLOCK]; N]) + Sync,
) -> [f32; N] {
    let blocks = n.div_ceil(TREE_BLOCK).max(1);
    let mut partials = vec![[0f32; N]; blocks];
    let per_thread = blocks.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        for (t, chunk) in partials.chunks_mut(per_thread).enumerate() {
            let fill = &fill;
            let mut work = move || {
                let mut block = [[0f32; TREE_BLOCK]; N];
                for (b, out) in chunk.iter_mut().enumerate() {
                    let start = (t * per_thread + b) * TREE_BLOCK;
                    let len = TREE_BLOCK.min(n.saturating_sub(start));
                    for s in block.iter_mut() {
                        s.fill(0.0);
                    }
                    fill(start, len, &mut block);
                    for (o, s) in out.iter_mut().zip(block.iter_mut()) {
                        *o = block_sum(s);
                    }
                }
            };
            if per_thread == blocks {
                work();
            } else {
                scope.spawn(work);
            }
        }
    });
    let mut sums = [0f32; N];
    for (s, total) in sums.iter_mut().enumerate() {
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
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_sums_are_exact_on_integers_and_independent_of_threads() {
        for n in [0, 1, 1023, 1024, 1025, 3_000_000] {
            let fill = |start: usize, len: usize, out: &mut [[f32; TREE_BLOCK]; 2]| {
                let [a, b] = out;
                for (i, (x, y)) in a.iter_mut().zip(b.iter_mut()).take(len).enumerate() {
                    *x = ((start + i) % 7) as f32;
                    *y = 1.0 / (1.0 + (start + i) as f32);
                }
            };
            let want: f64 = (0..n).map(|j| (j % 7) as f64).sum();
            let one = tree_sums(n, 1, fill);
            assert_eq!(f64::from(one[0]), want, "n = {n}");
            let three = tree_sums(n, 3, fill);
            assert_eq!(one.map(f32::to_bits), three.map(f32::to_bits));
        }
    }
}
