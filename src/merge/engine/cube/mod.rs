//! A [`Store`] on a GPU, run by the cubecl [`kernels`]: CUDA in the `cuda` build, wgpu in the
//! `wgpu` build (for the kernel tests without an NVIDIA GPU). Rows stay in the checkpoints'
//! dtype as 32-bit words; magnitude ranks are built on the host on first use (one download of
//! the rows) and kept on the device; per candidate and tensor, one small parameter array goes up
//! and nothing comes back (except SLERP's three sums).

pub mod check;
pub mod kernels;

use std::sync::OnceLock;

use cubecl::prelude::*;
use cubecl::server::Handle;

use self::kernels as k;
use super::elem::HostRows;
use super::host::Resolved;
use super::job::{Consensus, Gta, Job, Mask, Mix};
use super::ranks::{Codes, code_layout, row_ranks, task_vector_keys, tensor_codes};
use super::{Store, TensorMeta, for_each_parallel, rank_workers};
use crate::checkpoint::Dtype;
use crate::with_rows;

/// Tensors on a GPU, in their stored dtype, with their magnitude ranks built on first use.
pub struct CubeStore<R: Runtime> {
    client: ComputeClient<R>,
    tensors: Vec<TensorMeta>,
    data: Vec<Handle>,
    codes: Vec<OnceLock<Handle>>,
    row_ranks: Vec<OnceLock<Handle>>,
    cached_bytes: std::sync::atomic::AtomicUsize,
    dummy: Handle,
}

/// A merged tensor on the GPU: `n` values of `dtype` packed in 32-bit words.
pub struct CubeMerged {
    /// The device buffer.
    pub handle: Handle,
    /// The element type.
    pub dtype: Dtype,
    /// Number of elements.
    pub n: usize,
}

fn dtype_code(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F32 => k::DT_F32,
        Dtype::BF16 => k::DT_BF16,
        Dtype::F16 => k::DT_F16,
    }
}

/// Elements rounded up to a whole pair.
fn padded(n: usize) -> usize {
    n + (n & 1)
}

/// 32-bit words per row of `n` elements of `dtype`.
fn row_words(n: usize, dtype: Dtype) -> usize {
    match dtype {
        Dtype::F32 => padded(n),
        Dtype::BF16 | Dtype::F16 => padded(n) / 2,
    }
}

/// Packs rows of codes or ranks (one row per expert) into words: two 16-bit values per word,
/// or one 32-bit value.
fn pack_codes(rows: &[Codes]) -> Vec<u32> {
    let mut words = Vec::new();
    for row in rows {
        match row {
            Codes::U16(v) => {
                for pair in v.chunks(2) {
                    words.push(u32::from(pair[0]) | (u32::from(*pair.get(1).unwrap_or(&0)) << 16));
                }
            }
            Codes::U32(v) => {
                words.extend_from_slice(v);
                if v.len() % 2 == 1 {
                    words.push(0);
                }
            }
        }
    }
    words
}

fn as_bytes(words: &[u32]) -> &[u8] {
    u32::as_bytes(words)
}

/// A launch over `units` units in cubes of [`kernels::CUBE`].
fn grid<R: Runtime>(client: &ComputeClient<R>, units: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(k::CUBE);
    (
        cubecl::calculate_cube_count_elemwise(client, units.max(1), dim),
        dim,
    )
}

impl<R: Runtime> CubeStore<R> {
    /// An empty store on the device of `client`.
    pub fn new(client: ComputeClient<R>) -> CubeStore<R> {
        let dummy = client.create_from_slice(as_bytes(&[0u32, 0]));
        CubeStore {
            client,
            tensors: Vec::new(),
            data: Vec::new(),
            codes: Vec::new(),
            row_ranks: Vec::new(),
            cached_bytes: std::sync::atomic::AtomicUsize::new(0),
            dummy,
        }
    }

    /// The compute client.
    pub fn client(&self) -> &ComputeClient<R> {
        &self.client
    }

    /// Adds a tensor: `rows` are the little-endian bytes of the base, then each expert, in
    /// `meta.dtype`.
    pub fn push(&mut self, meta: TensorMeta, rows: &[&[u8]]) {
        let n = meta.numel();
        let words = row_words(n, meta.dtype);
        let mut bytes = Vec::with_capacity(rows.len() * words * 4);
        for row in rows {
            bytes.extend_from_slice(row);
            bytes.resize(bytes.len() + words * 4 - row.len(), 0);
        }
        self.data.push(self.client.create_from_slice(&bytes));
        self.tensors.push(meta);
        self.codes.push(OnceLock::new());
        self.row_ranks.push(OnceLock::new());
    }

    /// Reads a merged tensor back to the host.
    pub fn read(&self, merged: &CubeMerged) -> HostRows {
        let bytes = self
            .client
            .read_one(merged.handle.clone())
            .expect("a merged tensor reads back");
        let used = merged.n * merged.dtype.size();
        HostRows::decode(merged.dtype, &[&bytes[..used]])
    }

    /// Tensor `t`'s rows, read back to the host.
    fn host_rows(&self, t: usize) -> HostRows {
        let meta = &self.tensors[t];
        let n = meta.numel();
        let stride = row_words(n, meta.dtype) * 4;
        let bytes = self
            .client
            .read_one(self.data[t].clone())
            .expect("a tensor's rows read back");
        let rows: Vec<&[u8]> = (0..=meta.experts)
            .map(|r| &bytes[r * stride..r * stride + n * meta.dtype.size()])
            .collect();
        HostRows::decode(meta.dtype, &rows)
    }

    /// Every expert's codes from its magnitude keys, uploaded as one array.
    fn upload_per_expert(&self, t: usize, f: impl Fn(&[u32]) -> Codes + Sync) -> Handle {
        let meta = &self.tensors[t];
        let host = self.host_rows(t);
        let rows: Vec<Codes> = with_rows!(&host, |all: E| {
            let rows = super::host::Rows::split(all, meta.experts);
            std::thread::scope(|scope| {
                let workers: Vec<_> = rows
                    .experts
                    .iter()
                    .map(|e| {
                        let (f, base) = (&f, rows.base);
                        scope.spawn(move || f(&task_vector_keys(base, e)))
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("a rank worker panicked"))
                    .collect()
            })
        });
        let words = pack_codes(&rows);
        self.cached_bytes
            .fetch_add(words.len() * 4, std::sync::atomic::Ordering::Relaxed);
        self.client.create_from_slice(as_bytes(&words))
    }

    fn codes(&self, t: usize) -> &Handle {
        self.codes[t].get_or_init(|| self.upload_per_expert(t, tensor_codes))
    }

    fn row_ranks(&self, t: usize) -> &Handle {
        let cols = self.tensors[t].row_width();
        self.row_ranks[t].get_or_init(|| self.upload_per_expert(t, |keys| row_ranks(keys, cols)))
    }

    fn upload(&self, words: &[u32]) -> Handle {
        self.client.create_from_slice(as_bytes(words))
    }

    /// Array arguments over a handle of `len` elements.
    fn arg(&self, handle: &Handle, len: usize) -> ArrayArg<R> {
        // SAFETY: every handle passed here holds at least `len` elements of the kernel's type.
        unsafe { ArrayArg::from_raw_parts(handle.clone(), len) }
    }

    fn run_combine(&self, t: usize, c0: f32, c: &[f32], out: &Handle, out_dtype: Dtype) {
        let meta = &self.tensors[t];
        let n = meta.numel();
        let pairs = padded(n) / 2;
        let mut words = vec![c0.to_bits()];
        words.extend(c.iter().map(|x| x.to_bits()));
        let params = self.upload(&words);
        let (count, dim) = grid(&self.client, pairs);
        // SAFETY: the buffers hold the rows, parameters and output the kernel indexes.
        unsafe {
            k::combine::launch_unchecked::<R>(
                &self.client,
                count,
                dim,
                self.arg(&self.data[t], (meta.experts + 1) * row_words(n, meta.dtype)),
                self.arg(&params, words.len()),
                self.arg(out, row_words(n, out_dtype)),
                pairs as u32,
                row_words(n, meta.dtype) as u32,
                n as u32,
                meta.experts as u32,
                dtype_code(meta.dtype),
                dtype_code(out_dtype),
            );
        }
    }

    fn run_consensus(&self, t: usize, c: &Consensus, out: &Handle, out_dtype: Dtype) {
        let meta = &self.tensors[t];
        let n = meta.numel();
        let pairs = padded(n) / 2;
        let mut words: Vec<u32> = c.weights.iter().map(|x| x.to_bits()).collect();
        words.extend(c.mask_lambda.iter().map(|x| x.to_bits()));
        words.push(c.min_votes);
        words.push(c.lambda.to_bits());
        let params = self.upload(&words);
        let (count, dim) = grid(&self.client, pairs);
        // SAFETY: as in `run_combine`.
        unsafe {
            k::consensus::launch_unchecked::<R>(
                &self.client,
                count,
                dim,
                self.arg(&self.data[t], (meta.experts + 1) * row_words(n, meta.dtype)),
                self.arg(&params, words.len()),
                self.arg(out, row_words(n, out_dtype)),
                pairs as u32,
                row_words(n, meta.dtype) as u32,
                n as u32,
                meta.experts as u32,
                dtype_code(meta.dtype),
                dtype_code(out_dtype),
            );
        }
    }

    /// The parameter words of a GTA job, and whether any bound needs its bucket resolved on the
    /// device (never with `resolved` bounds).
    fn gta_params(&self, t: usize, g: &Gta, resolved: Option<&Resolved>) -> (Vec<u32>, bool) {
        let meta = &self.tensors[t];
        let n = meta.numel();
        let (_, shift) = code_layout(n);
        let kk = meta.experts;
        let ew = k::EXPERT_WORDS as usize;
        let mut words = vec![0u32; kk * ew + 2];
        let mut bucketed = false;
        for (i, mask) in g.masks.iter().enumerate() {
            let w = &mut words[i * ew..(i + 1) * ew];
            w[k::P_WEIGHT as usize] = g.weights[i].to_bits();
            w[k::P_SCALE as usize] = 1f32.to_bits();
            w[k::P_RESCALE as usize] = u32::from(g.rescale);
            w[k::P_TARGET as usize] = u32::MAX;
            w[k::P_TARGET as usize + 1] = u32::MAX;
            let (kind, keep, slope, key) = match *mask {
                Mask::All => (k::MASK_ALL, 0.0, 0.0, None),
                Mask::Nothing => (k::MASK_NOTHING, 0.0, 0.0, None),
                Mask::Random { keep, key } => (k::MASK_RANDOM, keep, 0.0, Some(key)),
                Mask::MagPrune { offset, slope, key } => {
                    (k::MASK_MAGPRUNE, offset, slope, Some(key))
                }
                Mask::Window { .. } if resolved.is_some() => {
                    let (lo, hi) = resolved
                        .and_then(|r| r.windows[i])
                        .expect("resolved with the job");
                    for (at, b) in [(k::P_LO, lo), (k::P_HI, hi)] {
                        w[at as usize..at as usize + 3].copy_from_slice(&[b.code, b.key, b.index]);
                    }
                    (k::MASK_WINDOW, 0.0, 0.0, None)
                }
                Mask::Window { lo, hi } => {
                    let mut set = |side: usize, rank: Option<usize>, none: [u32; 3]| {
                        let at = if side == 0 { k::P_LO } else { k::P_HI } as usize;
                        let bound = match rank {
                            None => none,
                            Some(r) if shift == 0 => [r as u32, 0, 0],
                            Some(r) => {
                                let code = r >> shift;
                                w[k::P_TARGET as usize + side] = code as u32;
                                w[k::P_WITHIN as usize + side] = (r - (code << shift)) as u32;
                                bucketed = true;
                                [code as u32, 0, 0]
                            }
                        };
                        w[at..at + 3].copy_from_slice(&bound);
                    };
                    set(0, (lo > 0).then_some(lo), [0, 0, 0]);
                    set(1, (hi < n).then_some(hi), [u32::MAX; 3]);
                    (k::MASK_WINDOW, 0.0, 0.0, None)
                }
            };
            w[k::P_KIND as usize] = kind;
            w[k::P_KEEP as usize] = f32::to_bits(keep);
            w[k::P_SLOPE as usize] = f32::to_bits(slope);
            if let Some(key) = key {
                w[k::P_KEY0 as usize] = key.0;
                w[k::P_KEY1 as usize] = key.1;
            }
        }
        let (c0, lambda) = match g.mix {
            Mix::Sum { base } => (base, 0.0),
            Mix::Elect { lambda, .. } => (0.0, lambda),
        };
        words[kk * ew] = c0.to_bits();
        words[kk * ew + 1] = f32::to_bits(lambda);
        (words, bucketed)
    }

    fn run_gta(
        &self,
        t: usize,
        g: &Gta,
        resolved: Option<&Resolved>,
        out: &Handle,
        out_dtype: Dtype,
    ) {
        let meta = &self.tensors[t];
        let n = meta.numel();
        let kk = meta.experts;
        let pairs = padded(n) / 2;
        let data_len = (kk + 1) * row_words(n, meta.dtype);
        let rw = row_words(n, meta.dtype) as u32;
        let (wide_codes, _) = code_layout(n);
        let wide_ranks = meta.row_width() > 1 << 16;
        // A one-shot merge brings its bounds and row ranks; a cached store uses its caches.
        let needs_codes = resolved.is_none() && g.masks.iter().any(Mask::needs_ranks);
        let needs_ranks = g.masks.iter().any(Mask::needs_row_ranks);
        let codes = if needs_codes {
            self.codes(t)
        } else {
            &self.dummy
        };
        let given_ranks = resolved
            .and_then(|r| r.rows.as_ref())
            .map(|rows| self.upload(&pack_codes(rows)));
        let ranks = match &given_ranks {
            Some(handle) => handle,
            None if needs_ranks => self.row_ranks(t),
            None => &self.dummy,
        };
        let codes_len = if needs_codes {
            kk * padded(n) / if wide_codes { 1 } else { 2 }
        } else {
            2
        };
        let ranks_len = if needs_ranks {
            kk * padded(n) / if wide_ranks { 1 } else { 2 }
        } else {
            2
        };
        let (words, bucketed) = self.gta_params(t, g, resolved);
        let params = self.upload(&words);
        let dt = dtype_code(meta.dtype);
        if bucketed {
            let cap = super::ranks::MAX_BUCKET;
            let counters = self.upload(&vec![0u32; 2 * kk]);
            let lists = self.client.empty(2 * kk * cap * 2 * 4);
            let (count, dim) = grid(&self.client, pairs);
            // SAFETY: lists hold `cap` pairs per (expert, side); a bucket never holds more.
            unsafe {
                k::gather_buckets::launch_unchecked::<R>(
                    &self.client,
                    count,
                    dim,
                    self.arg(&self.data[t], data_len),
                    self.arg(codes, codes_len),
                    self.arg(&params, words.len()),
                    self.arg(&counters, 2 * kk),
                    self.arg(&lists, 2 * kk * cap * 2),
                    pairs as u32,
                    rw,
                    n as u32,
                    cap as u32,
                    kk as u32,
                    dt,
                );
                let (count, dim) = grid(&self.client, 2 * kk * k::CUBE as usize);
                k::pick_bounds::launch_unchecked::<R>(
                    &self.client,
                    count,
                    dim,
                    self.arg(&params, words.len()),
                    self.arg(&counters, 2 * kk),
                    self.arg(&lists, 2 * kk * cap * 2),
                    cap as u32,
                    kk as u32,
                );
            }
        }
        if g.rescale {
            let blocks = n.div_ceil(k::TREE).max(1);
            let partials = self.client.empty(2 * kk * blocks * 4);
            let (count, dim) = grid(&self.client, blocks * k::CUBE as usize);
            // SAFETY: `partials` holds `2k` rows of `blocks` sums.
            unsafe {
                k::rescale_blocks::launch_unchecked::<R>(
                    &self.client,
                    count,
                    dim,
                    self.arg(&self.data[t], data_len),
                    self.arg(codes, codes_len),
                    self.arg(ranks, ranks_len),
                    self.arg(&params, words.len()),
                    self.arg(&partials, 2 * kk * blocks),
                    blocks as u32,
                    rw,
                    n as u32,
                    kk as u32,
                    dt,
                    needs_codes,
                    wide_codes,
                    wide_ranks,
                );
            }
            let sums = self.reduce_rows(partials, 2 * kk, blocks);
            // SAFETY: `sums` holds one sum per row.
            unsafe {
                k::rescale_finish::launch_unchecked::<R>(
                    &self.client,
                    CubeCount::Static(1, 1, 1),
                    CubeDim::new_1d(1),
                    self.arg(&params, words.len()),
                    self.arg(&sums, 2 * kk),
                    kk as u32,
                );
            }
        }
        let (elect, normalize) = match g.mix {
            Mix::Sum { .. } => (false, false),
            Mix::Elect { normalize, .. } => (true, normalize),
        };
        let (count, dim) = grid(&self.client, pairs);
        // SAFETY: as in `run_combine`; codes and ranks are dummies only when no mask reads them.
        unsafe {
            k::gta::launch_unchecked::<R>(
                &self.client,
                count,
                dim,
                self.arg(&self.data[t], data_len),
                self.arg(codes, codes_len),
                self.arg(ranks, ranks_len),
                self.arg(&params, words.len()),
                self.arg(out, row_words(n, out_dtype)),
                pairs as u32,
                rw,
                n as u32,
                kk as u32,
                dt,
                dtype_code(out_dtype),
                elect,
                normalize,
                needs_codes,
                wide_codes,
                wide_ranks,
            );
        }
    }

    /// Reduces `rows` rows of `len` partial sums to one sum per row, level after level.
    fn reduce_rows(&self, mut level: Handle, rows: usize, mut len: usize) -> Handle {
        while len > 1 {
            let out_len = len.div_ceil(k::TREE);
            let next = self.client.empty(rows * out_len * 4);
            let (count, dim) = grid(&self.client, rows * out_len * k::CUBE as usize);
            // SAFETY: `level` holds `rows * len` sums, `next` `rows * out_len`.
            unsafe {
                k::tree_level::launch_unchecked::<R>(
                    &self.client,
                    count,
                    dim,
                    self.arg(&level, rows * len),
                    self.arg(&next, rows * out_len),
                    rows as u32,
                    len as u32,
                    out_len as u32,
                );
            }
            level = next;
            len = out_len;
        }
        level
    }

    /// A device buffer of `bytes` bytes and a copy of `from` into it, through the copy kernel
    /// (4-word vectors): the streaming bandwidth a merge is compared with.
    pub fn copy(&self, from: &Handle, bytes: usize) -> Handle {
        let to = self.client.empty(bytes);
        let vectors = bytes / 16;
        let (count, dim) = grid(&self.client, vectors);
        // SAFETY: both buffers hold `vectors` vectors of 4 words.
        unsafe {
            k::copy_words::launch_unchecked::<R>(
                &self.client,
                count,
                dim,
                4,
                self.arg(from, vectors),
                self.arg(&to, vectors),
            );
        }
        to
    }

    /// Runs `job` on tensor `t`, with its bounds and row ranks `resolved` on the host if given
    /// (a merge that runs once), else from the store's caches.
    pub fn run_with(
        &self,
        t: usize,
        job: &Job,
        dtype: Dtype,
        resolved: Option<&Resolved>,
    ) -> CubeMerged {
        let n = self.tensors[t].numel();
        let out = self.client.empty(row_words(n, dtype).max(1) * 4);
        match job {
            Job::Combine { base, taus } => self.run_combine(t, *base, taus, &out, dtype),
            Job::Consensus(c) => self.run_consensus(t, c, &out, dtype),
            Job::Gta(g) => self.run_gta(t, g, resolved, &out, dtype),
        }
        CubeMerged {
            handle: out,
            dtype,
            n,
        }
    }

    /// Waits for every queued kernel.
    pub fn sync(&self) {
        cubecl::future::block_on(self.client.sync()).expect("the device synchronizes");
    }
}

impl<R: Runtime> Store for CubeStore<R> {
    type Merged = CubeMerged;

    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    fn run(&self, t: usize, job: &Job, dtype: Dtype) -> CubeMerged {
        self.run_with(t, job, dtype, None)
    }

    fn slerp_sums(&self, t: usize) -> [f32; 3] {
        let meta = &self.tensors[t];
        let n = meta.numel();
        let blocks = n.div_ceil(k::TREE).max(1);
        let partials = self.client.empty(3 * blocks * 4);
        let (count, dim) = grid(&self.client, blocks * k::CUBE as usize);
        // SAFETY: `partials` holds 3 rows of `blocks` sums.
        unsafe {
            k::slerp_blocks::launch_unchecked::<R>(
                &self.client,
                count,
                dim,
                self.arg(&self.data[t], 2 * row_words(n, meta.dtype)),
                self.arg(&partials, 3 * blocks),
                blocks as u32,
                row_words(n, meta.dtype) as u32,
                n as u32,
                dtype_code(meta.dtype),
            );
        }
        let sums = self.reduce_rows(partials, 3, blocks);
        let bytes = self.client.read_one(sums).expect("the sums read back");
        let v = f32::from_bytes(&bytes);
        [v[0], v[1], v[2]]
    }

    fn bytes(&self) -> usize {
        let rows: usize = self
            .tensors
            .iter()
            .map(|m| (m.experts + 1) * row_words(m.numel(), m.dtype) * 4)
            .sum();
        rows + self.cached_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn prepare(&self, ranks: bool, row_ranks: bool) {
        let experts = self.tensors.first().map_or(1, |m| m.experts);
        for_each_parallel(self.tensors.len(), rank_workers(experts), |t| {
            if ranks {
                self.codes(t);
            }
            if row_ranks {
                self.row_ranks(t);
            }
        });
    }
}
