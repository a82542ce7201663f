//! The host engine: a [`Job`] executed by fused loops over blocks of elements, on every core.
//! Each block of [`BLOCK`] elements is read once from every row, and all of a method's steps
//! (masks, rescale factors, election, mean) happen in registers and a few block-sized arrays.
//! The arithmetic is [`job`](super::job)'s contract, the one the GPU kernels follow.

use std::mem::MaybeUninit;

use super::bits::{StreamKey, uniform};
use super::elem::Elem;
use super::job::{Consensus, Gta, Job, Mask, Mix};
use super::ranks::{Bound, Codes, magnitude_key};
use super::tree::{TREE_BLOCK, tree_sums};

/// Elements per block of the fused loops.
const BLOCK: usize = TREE_BLOCK;

/// Elements per thread below which one thread does all the work.
const MIN_PER_THREAD: usize = 1 << 15;

/// Threads to use for a tensor of `n` elements.
pub fn threads_for(n: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n / MIN_PER_THREAD)
        .max(1)
}

/// One tensor's rows: the base and each expert, `n` elements each.
pub struct Rows<'a, E> {
    /// The base.
    pub base: &'a [E],
    /// The experts, in order.
    pub experts: Vec<&'a [E]>,
}

impl<'a, E: Elem> Rows<'a, E> {
    /// Splits `[base, expert_1, ..., expert_k]` stored one after the other.
    pub fn split(all: &'a [E], k: usize) -> Rows<'a, E> {
        let n = all.len() / (k + 1);
        Rows {
            base: &all[..n],
            experts: (1..=k).map(|i| &all[i * n..(i + 1) * n]).collect(),
        }
    }

    /// Elements per row.
    pub fn len(&self) -> usize {
        self.base.len()
    }

    /// Whether the rows are empty.
    pub fn is_empty(&self) -> bool {
        self.base.is_empty()
    }

    /// `tau_i` at element `j`.
    #[inline(always)]
    fn tau(&self, i: usize, j: usize) -> f32 {
        self.experts[i][j].value() - self.base[j].value()
    }
}

/// Where the masks of a job find magnitude ranks.
pub enum Ranks<'a> {
    /// Cached codes per expert (tensor-wide, with their shift) and exact row ranks per expert,
    /// each present when the job needs it.
    Cached {
        /// Tensor-wide codes and shift.
        codes: Option<(&'a [Codes], u32)>,
        /// Row ranks.
        rows: Option<&'a [Codes]>,
    },
    /// Nothing cached: window bounds are found by selection and row ranks computed (a merge
    /// that runs once).
    Select {
        /// Columns per row (DELLA).
        cols: usize,
    },
}

/// A job's mask for one expert, with its ranks at hand.
enum HostMask<'a> {
    All,
    Nothing,
    Window {
        lo: Bound,
        hi: Bound,
        codes: Option<&'a Codes>,
    },
    Random {
        keep: f32,
        key: StreamKey,
    },
    MagPrune {
        offset: f32,
        slope: f32,
        key: StreamKey,
        ranks: std::borrow::Cow<'a, Codes>,
    },
}

/// Runs `job` over `rows`, writing every element of `out` (one per element of a row).
pub fn run<E: Elem, O: Elem>(job: &Job, rows: &Rows<E>, ranks: &Ranks, out: &mut [MaybeUninit<O>]) {
    let n = rows.len();
    debug_assert_eq!(out.len(), n);
    match job {
        Job::Combine { base, taus } => for_blocks(n, out, 0, |start, len, acc, _| {
            combine_block(rows, *base, taus, start, len, acc)
        }),
        Job::Consensus(c) => for_blocks(n, out, 0, |start, len, acc, _| {
            consensus_block(rows, c, start, len, acc)
        }),
        Job::Gta(g) => {
            let masks: Vec<HostMask> = (0..rows.experts.len())
                .map(|i| host_mask(&g.masks[i], i, rows, ranks))
                .collect();
            let scales: Vec<f32> = if g.rescale {
                (0..masks.len())
                    .map(|i| rescale_factor(rows, i, &masks[i]))
                    .collect()
            } else {
                vec![1.0; masks.len()]
            };
            for_blocks(n, out, masks.len(), |start, len, acc, kept| {
                for (i, d) in kept.iter_mut().enumerate() {
                    fill_kept(rows, i, &masks[i], scales[i], start, &mut d[..len]);
                }
                mix_block(rows, g, kept, start, len, acc);
            });
        }
    }
}

/// Calls `block(start, len, acc, scratch)` for every block of `n` elements, on several threads
/// (each with `scratch` block-sized arrays of its own), and writes `acc[..len]` (the block's
/// results) to `out`.
fn for_blocks<O: Elem>(
    n: usize,
    out: &mut [MaybeUninit<O>],
    scratch: usize,
    block: impl Fn(usize, usize, &mut [f32; BLOCK], &mut [[f32; BLOCK]]) + Sync,
) {
    let threads = threads_for(n);
    let chunk = n.div_ceil(threads).div_ceil(BLOCK).max(1) * BLOCK;
    std::thread::scope(|scope| {
        for (t, part) in out.chunks_mut(chunk).enumerate() {
            let block = &block;
            let mut work = move || {
                let mut acc = [0f32; BLOCK];
                let mut arrays = vec![[0f32; BLOCK]; scratch];
                for (b, dst) in part.chunks_mut(BLOCK).enumerate() {
                    let len = dst.len();
                    block(t * chunk + b * BLOCK, len, &mut acc, &mut arrays);
                    store(&acc[..len], dst);
                }
            };
            if chunk >= n {
                work();
            } else {
                scope.spawn(work);
            }
        }
    });
}

/// Writes results in the output type; `f32` bypasses the cache (the candidate is not read back
/// soon, and a normal store would first read each line in).
#[inline(always)]
fn store<O: Elem>(acc: &[f32], dst: &mut [MaybeUninit<O>]) {
    if std::any::TypeId::of::<O>() == std::any::TypeId::of::<f32>() {
        // SAFETY: `O` is `f32`, so the slices have the same layout.
        let dst = unsafe { &mut *(dst as *mut [MaybeUninit<O>] as *mut [MaybeUninit<f32>]) };
        store_streaming(acc, dst);
    } else {
        for (d, &a) in dst.iter_mut().zip(acc) {
            d.write(O::from_f32(a));
        }
    }
}

fn store_streaming(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_sfence, _mm_stream_ps};
        let ptr = dst.as_mut_ptr() as *mut f32;
        let mut i = 0;
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
        // SAFETY: SSE is baseline; the fence orders the streaming stores before the thread's
        // completion is observed.
        unsafe { _mm_sfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (d, &s) in dst.iter_mut().zip(src) {
        d.write(s);
    }
}

/// Compiles `$body` a second time with AVX2 and FMA enabled and picks it at run time, so the
/// loops vectorize with hardware fused multiply-adds (the results are the same either way:
/// `mul_add` is always fused).
macro_rules! fast_path {
    ($name:ident($($arg:ident: $ty:ty),*) $body:block) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $name<E: Elem>($($arg: $ty),*) $body
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU was just checked to support both extensions.
            unsafe { $name::<E>($($arg),*) }
        } else {
            $body
        }
        #[cfg(not(target_arch = "x86_64"))]
        $body
    }};
}

fn combine_block<E: Elem>(
    rows: &Rows<E>,
    c0: f32,
    c: &[f32],
    start: usize,
    len: usize,
    acc: &mut [f32; BLOCK],
) {
    fast_path!(combine(rows: &Rows<E>, c0: f32, c: &[f32], start: usize, len: usize, acc: &mut [f32; BLOCK]) {
        let base = &rows.base[start..start + len];
        let acc = &mut acc[..len];
        for (a, b) in acc.iter_mut().zip(base) {
            *a = b.value() * c0;
        }
        for (expert, &ci) in rows.experts.iter().zip(c) {
            for ((a, b), e) in acc.iter_mut().zip(base).zip(&expert[start..start + len]) {
                *a = ci.mul_add(e.value() - b.value(), *a);
            }
        }
    })
}

fn fill_kept<E: Elem>(
    rows: &Rows<E>,
    i: usize,
    mask: &HostMask,
    scale: f32,
    start: usize,
    out: &mut [f32],
) {
    let len = out.len();
    let base = &rows.base[start..start + len];
    let expert = &rows.experts[i][start..start + len];
    let taus = base.iter().zip(expert).map(|(b, e)| e.value() - b.value());
    let keep_or_zero = |keep: bool, tau: f32| if keep { tau * scale } else { 0.0 };
    match mask {
        HostMask::All => out.iter_mut().zip(taus).for_each(|(o, t)| *o = t * scale),
        HostMask::Nothing => out.fill(0.0),
        HostMask::Window { lo, hi, codes } => {
            for (jj, (o, t)) in out.iter_mut().zip(taus).enumerate() {
                let j = start + jj;
                let code = codes.map_or(0, |c| c.get(j));
                let key = magnitude_key(t);
                let keep =
                    lo.reached_by(code, key, j as u32) && !hi.reached_by(code, key, j as u32);
                *o = keep_or_zero(keep, t);
            }
        }
        HostMask::Random { keep, key } => {
            for (jj, (o, t)) in out.iter_mut().zip(taus).enumerate() {
                *o = keep_or_zero(uniform(*key, (start + jj) as u32) < *keep, t);
            }
        }
        HostMask::MagPrune {
            offset,
            slope,
            key,
            ranks,
        } => {
            for (jj, (o, t)) in out.iter_mut().zip(taus).enumerate() {
                let j = start + jj;
                let p = slope.mul_add(ranks.get(j) as f32, *offset);
                *o = keep_or_zero(uniform(*key, j as u32) < p, t);
            }
        }
    }
}

fn mix_block<E: Elem>(
    rows: &Rows<E>,
    g: &Gta,
    kept: &[[f32; BLOCK]],
    start: usize,
    len: usize,
    acc: &mut [f32; BLOCK],
) {
    let base = &rows.base[start..start + len];
    let w = &g.weights;
    match g.mix {
        Mix::Sum { base: c0 } => {
            let acc = &mut acc[..len];
            for (a, b) in acc.iter_mut().zip(base) {
                *a = b.value() * c0;
            }
            for (d, &wi) in kept.iter().zip(w) {
                for (a, &di) in acc.iter_mut().zip(&d[..len]) {
                    *a = wi.mul_add(di, *a);
                }
            }
        }
        Mix::Elect { normalize, lambda } => {
            for (jj, (a, b)) in acc[..len].iter_mut().zip(base).enumerate() {
                let mut total = 0f32;
                for (d, &wi) in kept.iter().zip(w) {
                    total = wi.mul_add(d[jj], total);
                }
                let positive = total >= 0.0;
                let (mut mixed, mut div) = (0f32, 0f32);
                for (d, &wi) in kept.iter().zip(w) {
                    let weighted = wi * d[jj];
                    let agrees = if positive {
                        weighted > 0.0
                    } else {
                        weighted < 0.0
                    };
                    mixed = if agrees {
                        wi.mul_add(d[jj], mixed)
                    } else {
                        mixed
                    };
                    div += if agrees { wi } else { 0.0 };
                }
                if normalize {
                    mixed /= if div == 0.0 { 1.0 } else { div };
                }
                *a = mixed.mul_add(lambda, b.value());
            }
        }
    }
}

fn consensus_block<E: Elem>(
    rows: &Rows<E>,
    c: &Consensus,
    start: usize,
    len: usize,
    acc: &mut [f32; BLOCK],
) {
    let k = rows.experts.len();
    for (jj, a) in acc[..len].iter_mut().enumerate() {
        let j = start + jj;
        let mut mtl = 0f32;
        for i in 0..k {
            mtl = c.weights[i].mul_add(rows.tau(i, j), mtl);
        }
        let mut votes = 0u32;
        for i in 0..k {
            let tau = rows.tau(i, j);
            votes += u32::from(tau.abs() > c.mask_lambda[i] * (mtl - tau).abs());
        }
        let b = rows.base[j].value();
        *a = if votes >= c.min_votes {
            mtl.mul_add(c.lambda, b)
        } else {
            b
        };
    }
}

/// The factor that restores task vector `i`'s L1 norm after masking: `|tau|_1 / |d|_1`, or 1
/// when either norm is below 1e-7 (tree sums in `f32`).
fn rescale_factor<E: Elem>(rows: &Rows<E>, i: usize, mask: &HostMask) -> f32 {
    let [original, kept] = tree_sums(rows.len(), threads_for(rows.len()), |start, len, s| {
        let [original, kept] = s;
        fill_kept(rows, i, mask, 1.0, start, &mut kept[..len]);
        for (jj, (o, d)) in original
            .iter_mut()
            .zip(kept.iter_mut())
            .take(len)
            .enumerate()
        {
            *o = rows.tau(i, start + jj).abs();
            *d = d.abs();
        }
    });
    rescale_from_sums(original, kept)
}

/// `original / kept`, or 1 when either is below 1e-7 (mergekit's guard).
pub fn rescale_from_sums(original: f32, kept: f32) -> f32 {
    if original < 1e-7 || kept < 1e-7 {
        1.0
    } else {
        original / kept
    }
}

fn host_mask<'a, E: Elem>(
    mask: &Mask,
    i: usize,
    rows: &Rows<E>,
    ranks: &Ranks<'a>,
) -> HostMask<'a> {
    match *mask {
        Mask::All => HostMask::All,
        Mask::Nothing => HostMask::Nothing,
        Mask::Random { keep, key } => HostMask::Random { keep, key },
        Mask::Window { lo, hi } => {
            let n = rows.len();
            match ranks {
                Ranks::Cached {
                    codes: Some((codes, shift)),
                    ..
                } => {
                    let codes = &codes[i];
                    let key_of = |j: usize| magnitude_key(rows.tau(i, j));
                    let bound = |r: usize| Bound::from_codes(codes, *shift, r, key_of);
                    HostMask::Window {
                        lo: if lo == 0 {
                            Bound::NONE_BELOW
                        } else {
                            bound(lo)
                        },
                        hi: if hi >= n {
                            Bound::NONE_ABOVE
                        } else {
                            bound(hi)
                        },
                        codes: Some(codes),
                    }
                }
                _ => {
                    let keys = super::ranks::task_vector_keys(rows.base, rows.experts[i]);
                    let (lo, hi) = Bound::window_by_selection(&keys, lo, hi);
                    HostMask::Window {
                        lo,
                        hi,
                        codes: None,
                    }
                }
            }
        }
        Mask::MagPrune { offset, slope, key } => {
            let ranks = match ranks {
                Ranks::Cached {
                    rows: Some(rows), ..
                } => std::borrow::Cow::Borrowed(&rows[i]),
                Ranks::Select { cols } => {
                    let keys = super::ranks::task_vector_keys(rows.base, rows.experts[i]);
                    std::borrow::Cow::Owned(super::ranks::row_ranks(&keys, *cols))
                }
                Ranks::Cached { rows: None, .. } => {
                    unreachable!("the caller caches row ranks for jobs that need them")
                }
            };
            HostMask::MagPrune {
                offset,
                slope,
                key,
                ranks,
            }
        }
    }
}

/// Runs `job` into a new vector of `O`.
pub fn run_to_vec<E: Elem, O: Elem>(job: &Job, rows: &Rows<E>, ranks: &Ranks) -> Vec<O> {
    let n = rows.len();
    let mut out: Vec<O> = Vec::with_capacity(n);
    run(job, rows, ranks, &mut out.spare_capacity_mut()[..n]);
    // SAFETY: `run` writes every one of the `n` elements.
    unsafe { out.set_len(n) };
    out
}

/// The tree sums of `|base|^2`, `|expert|^2` and `base . expert` of the first expert (SLERP).
pub fn slerp_sums<E: Elem>(rows: &Rows<E>) -> [f32; 3] {
    tree_sums(
        rows.len(),
        threads_for(rows.len()),
        |start, len, [s00, s11, s01]| {
            let base = &rows.base[start..start + len];
            let expert = &rows.experts[0][start..start + len];
            for (jj, (b, e)) in base.iter().zip(expert).enumerate() {
                let (v0, v1) = (b.value(), e.value());
                s00[jj] = v0 * v0;
                s11[jj] = v1 * v1;
                s01[jj] = v0 * v1;
            }
        },
    )
}
