//! The host engine: a [`Job`] executed by fused loops over blocks of elements, on every core.
//! Each block of [`BLOCK`] elements is read once from every row, and all of a method's steps
//! (masks, rescale factors, election, mean) happen in registers and a few block-sized arrays.
//! The arithmetic is [`job`](super::job)'s contract, the one the GPU kernels follow.

use std::mem::MaybeUninit;

use super::bits::{StreamKey, uniform};
use super::draws::{Draws, decide};
use super::elem::Elem;
use super::job::{Consensus, Gta, Job, Mask, Mix};
use super::ranks::{Bound, Codes, magnitude_key};
use super::tree::{Sums, TREE_BLOCK, tree_sums};
use super::{Work, with_fast_cpu};

/// Elements per block of the fused loops.
const BLOCK: usize = TREE_BLOCK;

/// Elements per thread below which one thread does all the work.
const MIN_PER_THREAD: usize = 1 << 15;

/// Threads to use for a tensor of `n` elements.
pub fn threads_for(n: usize) -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |p| p.get()));
    cores.min(n / MIN_PER_THREAD).max(1)
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

    /// Asks the CPU to bring elements `start..start + len` of every row into its cache ahead of
    /// use: a block's arithmetic between its loads otherwise leaves the memory idle, and the
    /// hardware prefetcher stops at each page of the several rows read in turn.
    #[inline(always)]
    pub fn prefetch(&self, start: usize, len: usize) {
        prefetch(self.base, start, len);
        for expert in &self.experts {
            prefetch(expert, start, len);
        }
    }

    /// `tau_i` at element `j`.
    #[inline(always)]
    fn tau(&self, i: usize, j: usize) -> f32 {
        self.experts[i][j].value() - self.base[j].value()
    }
}

/// Asks the CPU to bring `values[start..start + len]` (clamped to the slice) into its cache.
#[inline(always)]
fn prefetch<T>(values: &[T], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let end = (start + len).min(values.len());
        if start >= end {
            return;
        }
        let bytes = (end - start) * std::mem::size_of::<T>();
        let first = values[start..end].as_ptr() as *const i8;
        for offset in (0..bytes).step_by(64) {
            // SAFETY: the address lies inside `values`; a prefetch never faults; SSE is baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(first.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (values, start, len);
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
        /// Per expert, the draw codes of its random mask's stream, where cached.
        draws: &'a [Option<&'a Draws>],
    },
    /// Bounds and row ranks found for this job alone (a merge that runs once).
    Resolved(&'a Resolved),
}

/// One expert's window bounds and row ranks, where its mask needs them.
type ExpertRanks = (Option<(Bound, Bound)>, Option<Codes>);

/// A job's rank bounds and row ranks, found without caches: each window's bounds by selection,
/// each row's ranks by sorting, one thread per expert and at most one expert per core at a time
/// (a selection holds 8 bytes per element).
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Per expert, the bounds of its window mask (`None` for other masks).
    pub windows: Vec<Option<(Bound, Bound)>>,
    /// Per expert, its row ranks, when any mask needs them.
    pub rows: Option<Vec<Codes>>,
}

impl Resolved {
    /// Resolves what `job`'s masks need over `rows` (rows of `cols` elements for DELLA).
    pub fn new<E: Elem>(job: &Job, rows: &Rows<E>, cols: usize) -> Resolved {
        let Job::Gta(g) = job else {
            return Resolved::default();
        };
        let at_once = threads_for(rows.len());
        let mut per_expert: Vec<ExpertRanks> = Vec::with_capacity(g.masks.len());
        for (group, masks) in g.masks.chunks(at_once).enumerate() {
            std::thread::scope(|scope| {
                let workers: Vec<_> = masks
                    .iter()
                    .enumerate()
                    .map(|(ii, mask)| {
                        let i = group * at_once + ii;
                        scope.spawn(move || resolve_expert(mask, rows, i, cols))
                    })
                    .collect();
                per_expert.extend(
                    workers
                        .into_iter()
                        .map(|w| w.join().expect("a rank worker panicked")),
                );
            });
        }
        let needs_rows = job.needs_row_ranks();
        let mut resolved = Resolved::default();
        let mut row_ranks = Vec::new();
        for (window, ranks) in per_expert {
            resolved.windows.push(window);
            // Experts without DELLA's mask get zero ranks of the same width, unused.
            row_ranks.push(ranks.unwrap_or_else(|| Codes::zeros(rows.len(), cols > 1 << 16)));
        }
        if needs_rows {
            resolved.rows = Some(row_ranks);
        }
        resolved
    }
}

/// What expert `i`'s mask needs of its ranks, found without caches.
fn resolve_expert<E: Elem>(mask: &Mask, rows: &Rows<E>, i: usize, cols: usize) -> ExpertRanks {
    let (base, expert) = (rows.base, rows.experts[i]);
    match *mask {
        Mask::Window { lo, hi } => {
            let keys = base
                .iter()
                .zip(expert)
                .map(|(b, e)| magnitude_key(e.value() - b.value()));
            (Some(Bound::window_by_selection(keys, lo, hi)), None)
        }
        Mask::MagPrune { .. } => {
            let keys = super::ranks::task_vector_keys(base, expert);
            (None, Some(super::ranks::row_ranks(&keys, cols)))
        }
        _ => (None, None),
    }
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
        draws: Option<&'a [u8]>,
    },
    MagPrune {
        offset: f32,
        slope: f32,
        key: StreamKey,
        ranks: &'a Codes,
        draws: Option<&'a [u8]>,
    },
}

/// Runs `job` over `rows`, writing every element of `out` (one per element of a row).
pub fn run<E: Elem, O: Elem>(job: &Job, rows: &Rows<E>, ranks: &Ranks, out: &mut [MaybeUninit<O>]) {
    debug_assert_eq!(out.len(), rows.len());
    match job {
        Job::Combine { base, taus } => for_blocks(
            out,
            &CombineBlocks {
                rows,
                c0: *base,
                c: taus,
            },
        ),
        Job::Consensus(c) => for_blocks(out, &ConsensusBlocks { rows, c }),
        Job::Gta(g) => {
            let masks: Vec<HostMask> = (0..rows.experts.len())
                .map(|i| host_mask(&g.masks[i], i, rows, ranks))
                .collect();
            let scales: Vec<f32> = if g.rescale {
                rescale_factors(rows, &masks)
            } else {
                vec![1.0; masks.len()]
            };
            for_blocks(
                out,
                &GtaBlocks {
                    rows,
                    g,
                    masks: &masks,
                    scales: &scales,
                },
            );
        }
    }
}

/// A computation over blocks of elements.
trait Blocks: Sync {
    /// Block-sized arrays each thread needs besides the result.
    fn scratch(&self) -> usize {
        0
    }

    /// Computes the results of elements `start..start + len` into `acc[..len]`. Marked
    /// `#[inline(always)]` in implementations, so it compiles with the loop around it.
    fn block(&self, start: usize, len: usize, acc: &mut [f32; BLOCK], scratch: &mut [[f32; BLOCK]]);
}

struct CombineBlocks<'a, E> {
    rows: &'a Rows<'a, E>,
    c0: f32,
    c: &'a [f32],
}

impl<E: Elem> Blocks for CombineBlocks<'_, E> {
    #[inline(always)]
    fn block(&self, start: usize, len: usize, acc: &mut [f32; BLOCK], _: &mut [[f32; BLOCK]]) {
        self.rows.prefetch(start + BLOCK, BLOCK);
        combine_block(self.rows, self.c0, self.c, start, len, acc)
    }
}

struct ConsensusBlocks<'a, E> {
    rows: &'a Rows<'a, E>,
    c: &'a Consensus,
}

impl<E: Elem> Blocks for ConsensusBlocks<'_, E> {
    #[inline(always)]
    fn block(&self, start: usize, len: usize, acc: &mut [f32; BLOCK], _: &mut [[f32; BLOCK]]) {
        consensus_block(self.rows, self.c, start, len, acc)
    }
}

struct GtaBlocks<'a, E> {
    rows: &'a Rows<'a, E>,
    g: &'a Gta,
    masks: &'a [HostMask<'a>],
    scales: &'a [f32],
}

impl<E: Elem> Blocks for GtaBlocks<'_, E> {
    fn scratch(&self) -> usize {
        // Each expert's kept entries, then the election's total, mixed sum and divisor (the
        // first also holds each task vector before its mask).
        self.masks.len() + 3
    }

    #[inline(always)]
    fn block(&self, start: usize, len: usize, acc: &mut [f32; BLOCK], arrays: &mut [[f32; BLOCK]]) {
        self.rows.prefetch(start + BLOCK, BLOCK);
        let (kept, sums) = arrays.split_at_mut(self.masks.len());
        for (i, d) in kept.iter_mut().enumerate() {
            fill_kept(
                self.rows,
                i,
                &self.masks[i],
                self.scales[i],
                start,
                &mut sums[0],
                &mut d[..len],
            );
        }
        mix_block(self.rows, self.g, kept, sums, start, len, acc);
    }
}

/// One thread's share of blocks, from element `offset`.
struct Part<'a, K, O> {
    blocks: &'a K,
    out: &'a mut [MaybeUninit<O>],
    offset: usize,
}

impl<K: Blocks, O: Elem> Work for Part<'_, K, O> {
    #[inline(always)]
    fn run(&mut self) {
        let mut acc = [0f32; BLOCK];
        let mut arrays = vec![[0f32; BLOCK]; self.blocks.scratch()];
        for (b, dst) in self.out.chunks_mut(BLOCK).enumerate() {
            let len = dst.len();
            self.blocks
                .block(self.offset + b * BLOCK, len, &mut acc, &mut arrays);
            store(&acc[..len], dst);
        }
    }
}

/// Runs `blocks` over every block of `out`'s elements, on several threads, writing the results.
fn for_blocks<K: Blocks, O: Elem>(out: &mut [MaybeUninit<O>], blocks: &K) {
    let n = out.len();
    let threads = threads_for(n);
    let chunk = n.div_ceil(threads).div_ceil(BLOCK).max(1) * BLOCK;
    std::thread::scope(|scope| {
        for (t, out) in out.chunks_mut(chunk).enumerate() {
            let mut part = Part {
                blocks,
                out,
                offset: t * chunk,
            };
            if chunk >= n {
                with_fast_cpu(&mut part);
            } else {
                scope.spawn(move || with_fast_cpu(&mut part));
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

#[inline(always)]
fn combine_block<E: Elem>(
    rows: &Rows<E>,
    c0: f32,
    c: &[f32],
    start: usize,
    len: usize,
    acc: &mut [f32; BLOCK],
) {
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
}

/// Expert `i`'s kept entries of elements `start..start + out.len()`: its task vector into
/// `taus` (scratch of at least that length), then masked and scaled into `out`. (Read from
/// and written to different arrays: masking in place lets LLVM emit masked stores, which AMD
/// cores execute in microcode.)
#[inline(always)]
fn fill_kept<E: Elem>(
    rows: &Rows<E>,
    i: usize,
    mask: &HostMask,
    scale: f32,
    start: usize,
    taus: &mut [f32],
    out: &mut [f32],
) {
    let len = out.len();
    let base = &rows.base[start..start + len];
    let expert = &rows.experts[i][start..start + len];
    let taus = &mut taus[..len];
    for ((t, b), e) in taus.iter_mut().zip(base).zip(expert) {
        *t = e.value() - b.value();
    }
    let taus = &*taus;
    let keep_or_zero = |keep: bool, tau: f32| if keep { tau * scale } else { 0.0 };
    match mask {
        HostMask::All => {
            for (o, &t) in out.iter_mut().zip(taus) {
                *o = t * scale;
            }
        }
        HostMask::Nothing => out.fill(0.0),
        HostMask::Window { lo, hi, codes } => match codes {
            None => window_block(out, taus, start, *lo, *hi, None, scale),
            Some(Codes::U16(c)) => window_block(
                out,
                taus,
                start,
                *lo,
                *hi,
                Some(&c[start..start + len]),
                scale,
            ),
            Some(Codes::U32(c)) => {
                for (jj, (o, &t)) in out.iter_mut().zip(taus).enumerate() {
                    let j = start + jj;
                    let (code, key) = (c[j], magnitude_key(t));
                    let keep =
                        lo.reached_by(code, key, j as u32) && !hi.reached_by(code, key, j as u32);
                    *o = keep_or_zero(keep, t);
                }
            }
        },
        HostMask::Random { keep, key, draws } => {
            let draws = draws.map(|d| &d[start..start + len]);
            random_block(out, taus, start, *key, draws, |_| *keep, scale);
        }
        HostMask::MagPrune {
            offset,
            slope,
            key,
            ranks,
            draws,
        } => {
            let draws = draws.map(|d| &d[start..start + len]);
            let (slope, offset) = (*slope, *offset);
            // One loop per width, so that it vectorizes.
            match ranks {
                Codes::U16(r) => {
                    let r = &r[start..start + len];
                    let keep = |jj: usize| slope.mul_add(f32::from(r[jj]), offset);
                    random_block(out, taus, start, *key, draws, keep, scale)
                }
                Codes::U32(r) => {
                    let r = &r[start..start + len];
                    let keep = |jj: usize| slope.mul_add(r[jj] as f32, offset);
                    random_block(out, taus, start, *key, draws, keep, scale)
                }
            }
        }
    }
}

/// A random mask over one block: element `jj` (of index `start + jj`) is kept where its uniform
/// value on stream `key` is below `keep(jj)`. With the stream's draw codes, the codes decide all
/// but the elements on the threshold's code (about 1/256 of them), which are drawn exactly; the
/// loops have no branches, so that they vectorize.
#[inline(always)]
fn random_block(
    out: &mut [f32],
    taus: &[f32],
    start: usize,
    key: StreamKey,
    draws: Option<&[u8]>,
    keep: impl Fn(usize) -> f32,
    scale: f32,
) {
    let keep_or_zero = |kept: bool, tau: f32| if kept { tau * scale } else { 0.0 };
    let Some(codes) = draws else {
        for (jj, (o, &t)) in out.iter_mut().zip(taus).enumerate() {
            *o = keep_or_zero(uniform(key, (start + jj) as u32) < keep(jj), t);
        }
        return;
    };
    let mut undecided = [0u8; BLOCK];
    let undecided = &mut undecided[..out.len()];
    for (jj, (((o, &t), &c), u)) in out
        .iter_mut()
        .zip(taus)
        .zip(codes)
        .zip(undecided.iter_mut())
        .enumerate()
    {
        let (sure, open) = decide(c, keep(jj) * 256.0);
        *u = u8::from(open);
        *o = keep_or_zero(sure, t);
    }
    // Visited one by one, so that the generator runs for these elements alone.
    for jj in memchr::memchr_iter(1, undecided) {
        let p = keep(jj);
        out[jj] = keep_or_zero(uniform(key, (start + jj) as u32) < p, taus[jj]);
    }
}

/// A rank window over 16-bit codes (`None`: a one-shot merge, every code 0), written in loops
/// without branches so that they vectorize.
#[inline(always)]
fn window_block(
    out: &mut [f32],
    taus: &[f32],
    start: usize,
    lo: Bound,
    hi: Bound,
    codes: Option<&[u16]>,
    scale: f32,
) {
    let reached = |b: Bound, c: u32, key: u32, j: u32| {
        (c > b.code) | ((c == b.code) & ((key > b.key) | ((key == b.key) & (j >= b.index))))
    };
    let Some(codes) = codes else {
        for (jj, (o, &t)) in out.iter_mut().zip(taus).enumerate() {
            let (j, key) = ((start + jj) as u32, magnitude_key(t));
            let keep = reached(lo, 0, key, j) & !reached(hi, 0, key, j);
            *o = if keep { t * scale } else { 0.0 };
        }
        return;
    };
    // Codes alone decide every element except those sharing a bound's code (a bucket of at
    // most `MAX_BUCKET` elements per bound, in few blocks): decide by code, then decide those
    // elements exactly where a block has any.
    let mut boundary = false;
    for ((o, &t), &c) in out.iter_mut().zip(taus).zip(codes) {
        let c = u32::from(c);
        boundary |= (c == lo.code) | (c == hi.code);
        let keep = (c > lo.code) & (c < hi.code);
        *o = if keep { t * scale } else { 0.0 };
    }
    if !boundary {
        return;
    }
    for (jj, ((o, &t), &c)) in out.iter_mut().zip(taus).zip(codes).enumerate() {
        let c = u32::from(c);
        if c == lo.code || c == hi.code {
            let (j, key) = ((start + jj) as u32, magnitude_key(t));
            let keep = reached(lo, c, key, j) & !reached(hi, c, key, j);
            *o = if keep { t * scale } else { 0.0 };
        }
    }
}

#[inline(always)]
fn mix_block<E: Elem>(
    rows: &Rows<E>,
    g: &Gta,
    kept: &[[f32; BLOCK]],
    sums: &mut [[f32; BLOCK]],
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
            let [total, mixed, div] = sums else {
                unreachable!("the election has three scratch arrays")
            };
            let (total, mixed, div) = (&mut total[..len], &mut mixed[..len], &mut div[..len]);
            // The scratch arrays hold the last block's values: start from zero.
            total.fill(0.0);
            mixed.fill(0.0);
            div.fill(0.0);
            for (d, &wi) in kept.iter().zip(w) {
                for (t, &di) in total.iter_mut().zip(&d[..len]) {
                    *t = wi.mul_add(di, *t);
                }
            }
            for (d, &wi) in kept.iter().zip(w) {
                for (((m, v), &di), &t) in mixed
                    .iter_mut()
                    .zip(div.iter_mut())
                    .zip(&d[..len])
                    .zip(total.iter())
                {
                    let weighted = wi * di;
                    let plus = t >= 0.0;
                    let agrees = ((weighted > 0.0) & plus) | ((weighted < 0.0) & !plus);
                    // Disagreeing entries add `fma(w_i, +0, mixed)`, which is `mixed` bit for
                    // bit (`mixed` is never -0: it starts at +0 and only agreeing, non-zero
                    // products are added). Written as a select, LLVM emits a masked store,
                    // which AMD cores execute in microcode.
                    let all = 0u32.wrapping_sub(u32::from(agrees));
                    *m = wi.mul_add(f32::from_bits(di.to_bits() & all), *m);
                    *v += f32::from_bits(wi.to_bits() & all);
                }
            }
            for (((a, b), &m), &v) in acc[..len]
                .iter_mut()
                .zip(base)
                .zip(mixed.iter())
                .zip(div.iter())
            {
                let m = if normalize {
                    m / if v == 0.0 { 1.0 } else { v }
                } else {
                    m
                };
                *a = m.mul_add(lambda, b.value());
            }
        }
    }
}

#[inline(always)]
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

/// The factors that restore each task vector's L1 norm after its mask: `|tau_i|_1 / |d_i|_1`, or
/// 1 when either norm is below 1e-7 (tree sums in `f32`), all found in one pass over the rows.
fn rescale_factors<E: Elem>(rows: &Rows<E>, masks: &[HostMask]) -> Vec<f32> {
    struct Norms<'a, E> {
        rows: &'a Rows<'a, E>,
        masks: &'a [HostMask<'a>],
    }
    impl<E: Elem> Sums for Norms<'_, E> {
        fn count(&self) -> usize {
            2 * self.masks.len()
        }

        #[inline(always)]
        fn fill(&self, start: usize, len: usize, blocks: &mut [[f32; TREE_BLOCK]]) {
            self.rows.prefetch(start + TREE_BLOCK, TREE_BLOCK);
            for (i, pair) in blocks.chunks_exact_mut(2).enumerate() {
                let [original, kept] = pair else {
                    unreachable!("chunks of two")
                };
                let (original, kept) = (&mut original[..len], &mut kept[..len]);
                fill_kept(self.rows, i, &self.masks[i], 1.0, start, original, kept);
                for (o, d) in original.iter_mut().zip(kept.iter_mut()) {
                    *o = o.abs();
                    *d = d.abs();
                }
            }
        }
    }
    let sums = tree_sums(rows.len(), threads_for(rows.len()), &Norms { rows, masks });
    sums.chunks_exact(2)
        .map(|s| rescale_from_sums(s[0], s[1]))
        .collect()
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
        Mask::Random { keep, key } => HostMask::Random {
            keep,
            key,
            draws: cached_draws(ranks, i, key),
        },
        Mask::Window { lo, hi } => match ranks {
            Ranks::Cached { codes, .. } => {
                let (codes, shift) = codes.expect("the caller caches codes for window masks");
                let codes = &codes[i];
                let n = rows.len();
                let key_of = |j: usize| magnitude_key(rows.tau(i, j));
                let bound = |r: usize| Bound::from_codes(codes, shift, r, key_of);
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
            Ranks::Resolved(r) => {
                let (lo, hi) = r.windows[i].expect("resolved with the job");
                HostMask::Window {
                    lo,
                    hi,
                    codes: None,
                }
            }
        },
        Mask::MagPrune { offset, slope, key } => {
            let row_ranks = match ranks {
                Ranks::Cached { rows, .. } => rows.expect("the caller caches row ranks for DELLA"),
                Ranks::Resolved(r) => r.rows.as_deref().expect("resolved with the job"),
            };
            HostMask::MagPrune {
                offset,
                slope,
                key,
                ranks: &row_ranks[i],
                draws: cached_draws(ranks, i, key),
            }
        }
    }
}

/// Expert `i`'s cached draw codes, where they are those of stream `key`.
fn cached_draws<'a>(ranks: &Ranks<'a>, i: usize, key: StreamKey) -> Option<&'a [u8]> {
    match ranks {
        Ranks::Cached { draws, .. } => draws
            .get(i)
            .copied()
            .flatten()
            .filter(|d| d.key == key)
            .map(|d| d.codes.as_slice()),
        Ranks::Resolved(_) => None,
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
    struct Products<'a, E>(&'a Rows<'a, E>);
    impl<E: Elem> Sums for Products<'_, E> {
        fn count(&self) -> usize {
            3
        }

        #[inline(always)]
        fn fill(&self, start: usize, len: usize, blocks: &mut [[f32; TREE_BLOCK]]) {
            let [s00, s11, s01] = blocks else {
                unreachable!("three sums")
            };
            let base = &self.0.base[start..start + len];
            let expert = &self.0.experts[0][start..start + len];
            for (jj, (b, e)) in base.iter().zip(expert).enumerate() {
                let (v0, v1) = (b.value(), e.value());
                s00[jj] = v0 * v0;
                s11[jj] = v1 * v1;
                s01[jj] = v0 * v1;
            }
        }
    }
    let sums = tree_sums(rows.len(), threads_for(rows.len()), &Products(rows));
    [sums[0], sums[1], sums[2]]
}
