//! Fused host kernels for the CPU backend, where burn's generic operations would make several
//! passes over memory (and a `[1, k] x [k, n]` product runs at about half of memory bandwidth).
//! Results agree with the generic path to float rounding; the tests compare the two.

use std::mem::MaybeUninit;
use std::thread;

/// Columns per thread below which one thread does all the work.
const MIN_COLUMNS_PER_THREAD: usize = 1 << 15;

/// `out[j] = sum_r c[r] * rows[r * n + j]` for `j < n`, over as many threads as the machine has.
pub fn combine_rows(rows: &[f32], n: usize, c: &[f32]) -> Vec<f32> {
    debug_assert_eq!(rows.len(), n * c.len());
    let threads = thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n / MIN_COLUMNS_PER_THREAD)
        .max(1);
    let mut out: Vec<f32> = Vec::with_capacity(n);
    // Whole blocks per thread, so each thread's streaming stores start aligned like the buffer.
    let chunk = n.div_ceil(threads).div_ceil(BLOCK) * BLOCK;
    thread::scope(|scope| {
        for (t, part) in out.spare_capacity_mut()[..n].chunks_mut(chunk).enumerate() {
            scope.spawn(move || combine_part(rows, n, c, t * chunk, part));
        }
    });
    // SAFETY: the chunks above cover `out[..n]` and every element was written.
    unsafe { out.set_len(n) };
    out
}

/// Columns processed together: their partial sums stay in L1 while the rows stream past.
const BLOCK: usize = 1024;

fn combine_part(rows: &[f32], n: usize, c: &[f32], start: usize, part: &mut [MaybeUninit<f32>]) {
    let mut acc = [0f32; BLOCK];
    for (b, block) in part.chunks_mut(BLOCK).enumerate() {
        let from = start + b * BLOCK;
        let len = block.len();
        let acc = &mut acc[..len];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU was just checked to support AVX2.
            unsafe { accumulate_avx2(rows, n, c, from, acc) };
        } else {
            accumulate(rows, n, c, from, acc);
        }
        #[cfg(not(target_arch = "x86_64"))]
        accumulate(rows, n, c, from, acc);
        store_streaming(acc, block);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline; the fence orders the streaming stores above
    // before the thread's completion is observed.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// `acc[j] = sum_r c[r] * rows[r * n + from + j]`: the first row initializes, the others
/// accumulate in order, as the generic path's sum does.
#[inline(always)]
fn accumulate(rows: &[f32], n: usize, c: &[f32], from: usize, acc: &mut [f32]) {
    let len = acc.len();
    let row = |r: usize| &rows[r * n + from..r * n + from + len];
    for (a, &x) in acc.iter_mut().zip(row(0)) {
        *a = c[0] * x;
    }
    for (r, &cr) in c.iter().enumerate().skip(1) {
        for (a, &x) in acc.iter_mut().zip(row(r)) {
            *a += cr * x;
        }
    }
}

/// [`accumulate`] compiled for AVX2 (eight lanes instead of SSE's four; no FMA, so the rounding
/// is the same as the baseline build's).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn accumulate_avx2(rows: &[f32], n: usize, c: &[f32], from: usize, acc: &mut [f32]) {
    accumulate(rows, n, c, from, acc);
}

/// Copies `src` into `dst`, bypassing the cache where the CPU allows it (the output is not read
/// again soon, and a normal store would first read each line in).
fn store_streaming(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        let ptr = dst.as_mut_ptr() as *mut f32;
        let mut i = 0;
        // Scalar stores up to 16-byte alignment, streaming stores of 4 lanes, scalar tail.
        while i < src.len() && !(ptr.wrapping_add(i) as usize).is_multiple_of(16) {
            dst[i].write(src[i]);
            i += 1;
        }
        while i + 4 <= src.len() {
            // SAFETY: `ptr + i` is 16-byte aligned and `i + 4 <= dst.len()`; SSE is baseline.
            unsafe { _mm_stream_ps(ptr.add(i), _mm_loadu_ps(src.as_ptr().add(i))) };
            i += 4;
        }
        for j in i..src.len() {
            dst[j].write(src[j]);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (d, &s) in dst.iter_mut().zip(src) {
        d.write(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_loop_across_thread_splits() {
        for n in [1, 7, 100_003] {
            let k = 4;
            let rows: Vec<f32> = (0..k * n).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
            let c = [0.5f32, -1.0, 2.0, 0.25];
            let got = combine_rows(&rows, n, &c);
            for j in (0..n).step_by(n.div_ceil(50)) {
                let want: f32 = (0..k).map(|r| c[r] * rows[r * n + j]).sum();
                assert!(
                    (got[j] - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "column {j}"
                );
            }
        }
    }
}
