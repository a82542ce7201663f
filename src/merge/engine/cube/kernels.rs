//! The GPU kernels (cubecl: CUDA, or wgpu for tests). Each repeats, operation for operation, the
//! host engine's arithmetic of [`job`](super::super::job), [`bits`](super::super::bits),
//! [`ranks`](super::super::ranks) and [`tree`](super::super::tree), so that both give the same
//! bits: every multiply-add is an explicit `fma`, sums are the fixed trees.
//!
//! Rows are arrays of 32-bit words: one `f32` per word, or two 16-bit values per word (element
//! `2w` in the low half). A unit handles one *pair* of elements `(2p, 2p + 1)`, so that 16-bit
//! outputs are written a whole word at a time; rows are padded to an even length.
//!
//! Per-tensor parameters travel in one `u32` array (`params`, floats as their bits) laid out by
//! [`layout`](super::layout); kernels that find rank bounds or rescale factors write them back
//! into it, for the merge kernel that runs after them.

use cubecl::prelude::*;

/// Stored element types (comptime codes).
pub const DT_F32: u32 = 0;
/// bfloat16.
pub const DT_BF16: u32 = 1;
/// IEEE half.
pub const DT_F16: u32 = 2;

/// Mask kinds (runtime, uniform per expert).
pub const MASK_ALL: u32 = 0;
/// Keep nothing.
pub const MASK_NOTHING: u32 = 1;
/// Rank window.
pub const MASK_WINDOW: u32 = 2;
/// Bernoulli draws.
pub const MASK_RANDOM: u32 = 3;
/// DELLA's magnitude-ranked draws.
pub const MASK_MAGPRUNE: u32 = 4;

/// Words of `params` per expert.
pub const EXPERT_WORDS: u32 = 20;
/// Offsets within an expert's words.
pub const P_KIND: u32 = 0;
/// Keep probability (random) or offset (DELLA).
pub const P_KEEP: u32 = 1;
/// DELLA's slope.
pub const P_SLOPE: u32 = 2;
/// Stream key, low word.
pub const P_KEY0: u32 = 3;
/// Stream key, high word.
pub const P_KEY1: u32 = 4;
/// Weight.
pub const P_WEIGHT: u32 = 5;
/// Lower bound: code, key, index.
pub const P_LO: u32 = 6;
/// Upper bound: code, key, index.
pub const P_HI: u32 = 9;
/// Rescale factor (1 unless a rescale kernel writes it).
pub const P_SCALE: u32 = 12;
/// Bucket codes to gather for the lower / upper bound (`u32::MAX`: none).
pub const P_TARGET: u32 = 13;
/// Rank within the bucket of the lower / upper bound.
pub const P_WITHIN: u32 = 15;
/// Whether the expert's factor is rescaled (1) or not (0).
pub const P_RESCALE: u32 = 19;

/// Units per cube.
pub const CUBE: u32 = 256;
/// Elements per tree block (as [`TREE_BLOCK`](super::super::tree::TREE_BLOCK)).
pub const TREE: usize = 1024;

// ----------------------------------------------------------------------------------------------
// Element access.

#[cube]
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u32) << 16u32;
    let e = (h >> 10u32) & 0x1Fu32;
    let m = h & 0x3FFu32;
    let mut out = f32::from_bits(sign | ((e + 112u32) << 23u32) | (m << 13u32));
    if e == 0u32 {
        let v = f32::cast_from(m) * f32::new(5.9604645e-8);
        out = f32::from_bits(f32::to_bits(v) | sign);
    } else if e == 31u32 {
        out = f32::from_bits(sign | 0x7F80_0000u32 | (m << 13u32));
    }
    out
}

#[cube]
fn f32_to_bf16(x: f32) -> u32 {
    let bits = f32::to_bits(x);
    let mut out = (bits + 0x7FFFu32 + ((bits >> 16u32) & 1u32)) >> 16u32;
    if (bits & 0x7FFF_FFFFu32) > 0x7F80_0000u32 {
        out = (bits >> 16u32) | 0x40u32;
    }
    out
}

#[cube]
fn f32_to_f16(x: f32) -> u32 {
    let bits = f32::to_bits(x);
    let sign = (bits >> 16u32) & 0x8000u32;
    let a = bits & 0x7FFF_FFFFu32;
    let mut h = 0u32;
    if a > 0x7F80_0000u32 {
        h = 0x7E00u32 | ((a >> 13u32) & 0x3FFu32);
    } else if a >= 0x477F_F000u32 {
        h = 0x7C00u32;
    } else if a >= 0x3880_0000u32 {
        let r = a + 0x0FFFu32 + ((a >> 13u32) & 1u32);
        h = (r - 0x3800_0000u32) >> 13u32;
    } else if a > 0x3300_0000u32 {
        let e = a >> 23u32;
        let m = (a & 0x7F_FFFFu32) | 0x80_0000u32;
        let shift = 126u32 - e;
        let q = m >> shift;
        let rem = m & ((1u32 << shift) - 1u32);
        let half = 1u32 << (shift - 1u32);
        let up = rem > half || (rem == half && (q & 1u32) == 1u32);
        h = q + select(up, 1u32, 0u32);
    }
    sign | h
}

/// Element `2p + lane` of row `row` (`row_words` words per row).
#[cube]
fn load(
    data: &Array<u32>,
    row: u32,
    row_words: u32,
    p: u32,
    lane: u32,
    #[comptime] dtype: u32,
) -> f32 {
    let base = (row * row_words) as usize;
    if comptime![dtype == DT_F32] {
        f32::from_bits(data[base + (2u32 * p + lane) as usize])
    } else {
        let w = data[base + p as usize];
        if comptime![dtype == DT_BF16] {
            f32::from_bits(select(lane == 0u32, w << 16u32, w & 0xFFFF_0000u32))
        } else {
            f16_to_f32(select(lane == 0u32, w & 0xFFFFu32, w >> 16u32))
        }
    }
}

/// Writes the pair `(a, b)` at pair `p` (the second only when `2p + 1 < n`).
#[cube]
fn store(out: &mut Array<u32>, p: u32, n: u32, a: f32, b: f32, #[comptime] dtype: u32) {
    if comptime![dtype == DT_F32] {
        out[(2u32 * p) as usize] = f32::to_bits(a);
        if 2u32 * p + 1u32 < n {
            out[(2u32 * p + 1u32) as usize] = f32::to_bits(b);
        }
    } else if comptime![dtype == DT_BF16] {
        out[p as usize] = f32_to_bf16(a) | (f32_to_bf16(b) << 16u32);
    } else {
        out[p as usize] = f32_to_f16(a) | (f32_to_f16(b) << 16u32);
    }
}

/// Code (or rank) `j` of row `row` of a code array; `wide` codes are one per word.
#[cube]
fn code_at(codes: &Array<u32>, row: u32, n_pad: u32, j: u32, #[comptime] wide: bool) -> u32 {
    if comptime![wide] {
        codes[(row * n_pad + j) as usize]
    } else {
        let w = codes[((row * n_pad + j) / 2u32) as usize];
        select((j & 1u32) == 0u32, w & 0xFFFFu32, w >> 16u32)
    }
}

// ----------------------------------------------------------------------------------------------
// Randomness and bounds.

#[cube]
fn mix32(x0: u32) -> u32 {
    let mut x = x0;
    x ^= x >> 16u32;
    x *= 0x21F0_AAADu32;
    x ^= x >> 15u32;
    x *= 0x735A_2D97u32;
    x ^= x >> 15u32;
    x
}

#[cube]
fn uniform(key0: u32, key1: u32, index: u32) -> f32 {
    let x = mix32(mix32(index ^ key0) + key1);
    f32::cast_from(x >> 8u32) * f32::new(5.9604645e-8)
}

/// Whether `(code, key, index)` reaches the bound stored at `params[at..at + 3]`.
#[cube]
fn reaches(params: &Array<u32>, at: u32, code: u32, key: u32, index: u32) -> bool {
    let bc = params[at as usize];
    let bk = params[(at + 1u32) as usize];
    let bi = params[(at + 2u32) as usize];
    code > bc || (code == bc && (key > bk || (key == bk && index >= bi)))
}

/// Expert `i`'s kept entry `tau` at element `j` (its scale not applied): `tau` or 0.
#[cube]
fn keep(
    params: &Array<u32>,
    codes: &Array<u32>,
    ranks: &Array<u32>,
    i: u32,
    j: u32,
    tau: f32,
    n_pad: u32,
    #[comptime] has_codes: bool,
    #[comptime] wide_codes: bool,
    #[comptime] wide_ranks: bool,
) -> f32 {
    let at = i * EXPERT_WORDS;
    let kind = params[(at + P_KIND) as usize];
    let mut kept = tau;
    if kind == MASK_NOTHING {
        kept = f32::new(0.0);
    } else if kind == MASK_WINDOW {
        let mut code = 0u32;
        if comptime![has_codes] {
            code = code_at(codes, i, n_pad, j, wide_codes);
        }
        let key = f32::to_bits(tau) & 0x7FFF_FFFFu32;
        let lo = reaches(params, at + P_LO, code, key, j);
        let hi = reaches(params, at + P_HI, code, key, j);
        kept = select(lo && !hi, tau, f32::new(0.0));
    } else if kind == MASK_RANDOM {
        let u = uniform(
            params[(at + P_KEY0) as usize],
            params[(at + P_KEY1) as usize],
            j,
        );
        let p = f32::from_bits(params[(at + P_KEEP) as usize]);
        kept = select(u < p, tau, f32::new(0.0));
    } else if kind == MASK_MAGPRUNE {
        let u = uniform(
            params[(at + P_KEY0) as usize],
            params[(at + P_KEY1) as usize],
            j,
        );
        let rank = f32::cast_from(code_at(ranks, i, n_pad, j, wide_ranks));
        let p = fma(
            f32::from_bits(params[(at + P_SLOPE) as usize]),
            rank,
            f32::from_bits(params[(at + P_KEEP) as usize]),
        );
        kept = select(u < p, tau, f32::new(0.0));
    }
    kept
}

// ----------------------------------------------------------------------------------------------
// Merge kernels.

/// `acc = b * c0`, then `acc = fma(c_i, tau_i, acc)`; `params = [c0, c_1, ..., c_k]` (bits).
#[cube(launch_unchecked)]
pub fn combine(
    data: &Array<u32>,
    params: &Array<u32>,
    out: &mut Array<u32>,
    pairs: u32,
    row_words: u32,
    n: u32,
    #[comptime] k: u32,
    #[comptime] dtype: u32,
    #[comptime] out_dtype: u32,
) {
    let p = ABSOLUTE_POS as u32;
    if p >= pairs {
        terminate!();
    }
    let c0 = f32::from_bits(params[0]);
    let b0 = load(data, 0u32, row_words, p, 0u32, dtype);
    let b1 = load(data, 0u32, row_words, p, 1u32, dtype);
    let mut a0 = b0 * c0;
    let mut a1 = b1 * c0;
    #[unroll]
    for i in 0..k {
        let c = f32::from_bits(params[(i + 1u32) as usize]);
        a0 = fma(c, load(data, i + 1u32, row_words, p, 0u32, dtype) - b0, a0);
        a1 = fma(c, load(data, i + 1u32, row_words, p, 1u32, dtype) - b1, a1);
    }
    store(out, p, n, a0, a1, out_dtype);
}

/// One element of a generalized task arithmetic merge (see `job`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn gta_element(
    data: &Array<u32>,
    codes: &Array<u32>,
    ranks: &Array<u32>,
    params: &Array<u32>,
    p: u32,
    lane: u32,
    row_words: u32,
    n_pad: u32,
    #[comptime] k: u32,
    #[comptime] dtype: u32,
    #[comptime] elect: bool,
    #[comptime] normalize: bool,
    #[comptime] has_codes: bool,
    #[comptime] wide_codes: bool,
    #[comptime] wide_ranks: bool,
) -> f32 {
    let j = 2u32 * p + lane;
    let mix = k * EXPERT_WORDS;
    let b = load(data, 0u32, row_words, p, lane, dtype);
    if comptime![elect] {
        let mut total = f32::new(0.0);
        #[unroll]
        for i in 0..k {
            let tau = load(data, i + 1u32, row_words, p, lane, dtype) - b;
            let scale = f32::from_bits(params[(i * EXPERT_WORDS + P_SCALE) as usize]);
            let w = f32::from_bits(params[(i * EXPERT_WORDS + P_WEIGHT) as usize]);
            let d = keep(
                params, codes, ranks, i, j, tau, n_pad, has_codes, wide_codes, wide_ranks,
            ) * scale;
            total = fma(w, d, total);
        }
        let positive = total >= f32::new(0.0);
        let mut mixed = f32::new(0.0);
        let mut div = f32::new(0.0);
        #[unroll]
        for i in 0..k {
            let tau = load(data, i + 1u32, row_words, p, lane, dtype) - b;
            let scale = f32::from_bits(params[(i * EXPERT_WORDS + P_SCALE) as usize]);
            let w = f32::from_bits(params[(i * EXPERT_WORDS + P_WEIGHT) as usize]);
            let d = keep(
                params, codes, ranks, i, j, tau, n_pad, has_codes, wide_codes, wide_ranks,
            ) * scale;
            let weighted = w * d;
            let agrees = select(positive, weighted > f32::new(0.0), weighted < f32::new(0.0));
            mixed = select(agrees, fma(w, d, mixed), mixed);
            div += select(agrees, w, f32::new(0.0));
        }
        if comptime![normalize] {
            mixed /= select(div == f32::new(0.0), f32::new(1.0), div);
        }
        fma(mixed, f32::from_bits(params[(mix + 1u32) as usize]), b)
    } else {
        let mut acc = b * f32::from_bits(params[mix as usize]);
        #[unroll]
        for i in 0..k {
            let tau = load(data, i + 1u32, row_words, p, lane, dtype) - b;
            let scale = f32::from_bits(params[(i * EXPERT_WORDS + P_SCALE) as usize]);
            let w = f32::from_bits(params[(i * EXPERT_WORDS + P_WEIGHT) as usize]);
            let d = keep(
                params, codes, ranks, i, j, tau, n_pad, has_codes, wide_codes, wide_ranks,
            ) * scale;
            acc = fma(w, d, acc);
        }
        acc
    }
}

/// The generalized task arithmetic merge of one tensor: masks, factors, sum or election.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gta(
    data: &Array<u32>,
    codes: &Array<u32>,
    ranks: &Array<u32>,
    params: &Array<u32>,
    out: &mut Array<u32>,
    pairs: u32,
    row_words: u32,
    n: u32,
    #[comptime] k: u32,
    #[comptime] dtype: u32,
    #[comptime] out_dtype: u32,
    #[comptime] elect: bool,
    #[comptime] normalize: bool,
    #[comptime] has_codes: bool,
    #[comptime] wide_codes: bool,
    #[comptime] wide_ranks: bool,
) {
    let p = ABSOLUTE_POS as u32;
    if p >= pairs {
        terminate!();
    }
    let n_pad = 2u32 * pairs;
    let a = gta_element(
        data, codes, ranks, params, p, 0u32, row_words, n_pad, k, dtype, elect, normalize,
        has_codes, wide_codes, wide_ranks,
    );
    let b = gta_element(
        data, codes, ranks, params, p, 1u32, row_words, n_pad, k, dtype, elect, normalize,
        has_codes, wide_codes, wide_ranks,
    );
    store(out, p, n, a, b, out_dtype);
}

/// One element of a consensus merge.
#[cube]
fn consensus_element(
    data: &Array<u32>,
    params: &Array<u32>,
    p: u32,
    lane: u32,
    row_words: u32,
    #[comptime] k: u32,
    #[comptime] dtype: u32,
) -> f32 {
    let b = load(data, 0u32, row_words, p, lane, dtype);
    let mut mtl = f32::new(0.0);
    #[unroll]
    for i in 0..k {
        let tau = load(data, i + 1u32, row_words, p, lane, dtype) - b;
        mtl = fma(f32::from_bits(params[i as usize]), tau, mtl);
    }
    let mut votes = 0u32;
    #[unroll]
    for i in 0..k {
        let tau = load(data, i + 1u32, row_words, p, lane, dtype) - b;
        let m = f32::from_bits(params[(k + i) as usize]);
        votes += select(f32::abs(tau) > m * f32::abs(mtl - tau), 1u32, 0u32);
    }
    let lambda = f32::from_bits(params[(2u32 * k + 1u32) as usize]);
    select(votes >= params[(2u32 * k) as usize], fma(mtl, lambda, b), b)
}

/// Consensus: `params = [w_1..w_k, m_1..m_k, min_votes, lambda]` (floats as bits).
#[cube(launch_unchecked)]
pub fn consensus(
    data: &Array<u32>,
    params: &Array<u32>,
    out: &mut Array<u32>,
    pairs: u32,
    row_words: u32,
    n: u32,
    #[comptime] k: u32,
    #[comptime] dtype: u32,
    #[comptime] out_dtype: u32,
) {
    let p = ABSOLUTE_POS as u32;
    if p >= pairs {
        terminate!();
    }
    let a = consensus_element(data, params, p, 0u32, row_words, k, dtype);
    let b = consensus_element(data, params, p, 1u32, row_words, k, dtype);
    store(out, p, n, a, b, out_dtype);
}

// ----------------------------------------------------------------------------------------------
// Rank bounds: the element of a given rank within a bucket of equal codes.

/// Appends `(key, index)` of every element whose code is a bound's target bucket to that bound's
/// list (`lists[(2i + side) * cap * 2 ..]`, pairs of words), counting in `counters[2i + side]`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gather_buckets(
    data: &Array<u32>,
    codes: &Array<u32>,
    params: &Array<u32>,
    counters: &mut Array<Atomic<u32>>,
    lists: &mut Array<u32>,
    pairs: u32,
    row_words: u32,
    n: u32,
    cap: u32,
    #[comptime] k: u32,
    #[comptime] dtype: u32,
) {
    let p = ABSOLUTE_POS as u32;
    if p >= pairs {
        terminate!();
    }
    let n_pad = 2u32 * pairs;
    #[unroll]
    for lane in 0..2u32 {
        let j = 2u32 * p + lane;
        if j < n {
            #[unroll]
            for i in 0..k {
                let code = code_at(codes, i, n_pad, j, false);
                #[unroll]
                for side in 0..2u32 {
                    if code == params[(i * EXPERT_WORDS + P_TARGET + side) as usize] {
                        let b = load(data, 0u32, row_words, p, lane, dtype);
                        let tau = load(data, i + 1u32, row_words, p, lane, dtype) - b;
                        let slot = counters[(2u32 * i + side) as usize].fetch_add(1u32);
                        let list = (2u32 * i + side) * cap * 2u32;
                        lists[(list + 2u32 * slot) as usize] = f32::to_bits(tau) & 0x7FFF_FFFFu32;
                        lists[(list + 2u32 * slot + 1u32) as usize] = j;
                    }
                }
            }
        }
    }
}

/// One cube per (expert, side): finds the entry of its list whose rank among the list is the
/// bound's rank within the bucket, and writes its key and index into the bound.
#[cube(launch_unchecked)]
pub fn pick_bounds(
    params: &mut Array<u32>,
    counters: &Array<u32>,
    lists: &Array<u32>,
    cap: u32,
    #[comptime] k: u32,
) {
    let list = CUBE_POS as u32;
    if list >= 2u32 * k {
        terminate!();
    }
    let i = list / 2u32;
    let side = list % 2u32;
    let at = i * EXPERT_WORDS;
    // Bounds without a bucket to resolve have an empty list.
    let wanted = params[(at + P_TARGET + side) as usize] != 0xFFFF_FFFFu32;
    let count = select(wanted, counters[list as usize], 0u32);
    let within = params[(at + P_WITHIN + side) as usize];
    let mut keys = SharedMemory::<u32>::new(2048usize);
    let mut index = SharedMemory::<u32>::new(2048usize);
    let base = list * cap * 2u32;
    let mut e = UNIT_POS;
    while e < count {
        keys[e as usize] = lists[(base + 2u32 * e) as usize];
        index[e as usize] = lists[(base + 2u32 * e + 1u32) as usize];
        e += CUBE;
    }
    sync_cube();
    let mut e = UNIT_POS;
    while e < count {
        let ke = keys[e as usize];
        let ie = index[e as usize];
        let mut below = 0u32;
        for f in 0..count {
            let kf = keys[f as usize];
            let jf = index[f as usize];
            below += select(kf < ke || (kf == ke && jf < ie), 1u32, 0u32);
        }
        if below == within {
            let bound = at + select(side == 0u32, P_LO, P_HI);
            params[(bound + 1u32) as usize] = ke;
            params[(bound + 2u32) as usize] = ie;
        }
        e += CUBE;
    }
}

// ----------------------------------------------------------------------------------------------
// Tree sums.

/// Sums `values[..TREE]` in place pairwise (`s[i] += s[i + h]`, `h` = 512 ... 1); the result is
/// `values[0]`.
#[cube]
fn tree_in_place(values: &mut SharedMemory<f32>) {
    let mut h = 512u32;
    while h > 0u32 {
        let mut i = UNIT_POS;
        while i < h {
            values[i as usize] = values[i as usize] + values[(i + h) as usize];
            i += CUBE;
        }
        sync_cube();
        h /= 2u32;
    }
}

/// Level 1 of the rescale sums: per expert, the block sums of `|tau|` and of `|kept tau|` into
/// `partials[(2i + s) * blocks + block]` (for every expert, so that barriers stay in uniform
/// control flow; only those with `P_RESCALE` use them).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn rescale_blocks(
    data: &Array<u32>,
    codes: &Array<u32>,
    ranks: &Array<u32>,
    params: &Array<u32>,
    partials: &mut Array<f32>,
    blocks: u32,
    row_words: u32,
    n: u32,
    #[comptime] k: u32,
    #[comptime] dtype: u32,
    #[comptime] has_codes: bool,
    #[comptime] wide_codes: bool,
    #[comptime] wide_ranks: bool,
) {
    let block = CUBE_POS as u32;
    if block >= blocks {
        terminate!();
    }
    let n_pad = n + (n & 1u32);
    let mut original = SharedMemory::<f32>::new(TREE);
    let mut kept = SharedMemory::<f32>::new(TREE);
    #[unroll]
    for i in 0..k {
        let mut e = UNIT_POS;
        while e < 1024u32 {
            let j = block * 1024u32 + e;
            let mut a = f32::new(0.0);
            let mut d = f32::new(0.0);
            if j < n {
                let p = j / 2u32;
                let lane = j % 2u32;
                let tau = load(data, i + 1u32, row_words, p, lane, dtype)
                    - load(data, 0u32, row_words, p, lane, dtype);
                a = f32::abs(tau);
                d = f32::abs(keep(
                    params, codes, ranks, i, j, tau, n_pad, has_codes, wide_codes, wide_ranks,
                ));
            }
            original[e as usize] = a;
            kept[e as usize] = d;
            e += CUBE;
        }
        sync_cube();
        tree_in_place(&mut original);
        tree_in_place(&mut kept);
        if UNIT_POS == 0u32 {
            partials[((2u32 * i) * blocks + block) as usize] = original[0];
            partials[((2u32 * i + 1u32) * blocks + block) as usize] = kept[0];
        }
        sync_cube();
    }
}

/// Level 1 of SLERP's sums: block sums of `b^2`, `e^2`, `b * e` into `partials[s * blocks + block]`.
#[cube(launch_unchecked)]
pub fn slerp_blocks(
    data: &Array<u32>,
    partials: &mut Array<f32>,
    blocks: u32,
    row_words: u32,
    n: u32,
    #[comptime] dtype: u32,
) {
    let block = CUBE_POS as u32;
    if block >= blocks {
        terminate!();
    }
    let mut s0 = SharedMemory::<f32>::new(TREE);
    let mut s1 = SharedMemory::<f32>::new(TREE);
    let mut s2 = SharedMemory::<f32>::new(TREE);
    let mut e = UNIT_POS;
    while e < 1024u32 {
        let j = block * 1024u32 + e;
        let mut v0 = f32::new(0.0);
        let mut v1 = f32::new(0.0);
        if j < n {
            v0 = load(data, 0u32, row_words, j / 2u32, j % 2u32, dtype);
            v1 = load(data, 1u32, row_words, j / 2u32, j % 2u32, dtype);
        }
        s0[e as usize] = v0 * v0;
        s1[e as usize] = v1 * v1;
        s2[e as usize] = v0 * v1;
        e += CUBE;
    }
    sync_cube();
    tree_in_place(&mut s0);
    tree_in_place(&mut s1);
    tree_in_place(&mut s2);
    if UNIT_POS == 0u32 {
        partials[block as usize] = s0[0];
        partials[(blocks + block) as usize] = s1[0];
        partials[(2u32 * blocks + block) as usize] = s2[0];
    }
}

/// One level of tree sums over `rows` rows of `len` partial sums each:
/// `output[r * out_len + block]` is the tree sum of `input[r * len + block * 1024 ..]`.
#[cube(launch_unchecked)]
pub fn tree_level(input: &Array<f32>, output: &mut Array<f32>, rows: u32, len: u32, out_len: u32) {
    let cube = CUBE_POS as u32;
    if cube >= rows * out_len {
        terminate!();
    }
    let r = cube / out_len;
    let block = cube % out_len;
    let mut s = SharedMemory::<f32>::new(TREE);
    let mut e = UNIT_POS;
    while e < 1024u32 {
        let j = block * 1024u32 + e;
        let mut v = f32::new(0.0);
        if j < len {
            v = input[(r * len + j) as usize];
        }
        s[e as usize] = v;
        e += CUBE;
    }
    sync_cube();
    tree_in_place(&mut s);
    if UNIT_POS == 0u32 {
        output[cube as usize] = s[0];
    }
}

/// Writes each rescaled expert's factor `original / kept` (1 when either is below 1e-7) from the
/// final sums `sums[2i], sums[2i + 1]`.
#[cube(launch_unchecked)]
pub fn rescale_finish(params: &mut Array<u32>, sums: &Array<f32>, #[comptime] k: u32) {
    if UNIT_POS == 0u32 {
        #[unroll]
        for i in 0..k {
            let at = (i * EXPERT_WORDS + P_SCALE) as usize;
            if params[(i * EXPERT_WORDS + P_RESCALE) as usize] == 1u32 {
                let a = sums[(2u32 * i) as usize];
                let b = sums[(2u32 * i + 1u32) as usize];
                let small = a < f32::new(1e-7) || b < f32::new(1e-7);
                params[at] = f32::to_bits(select(small, f32::new(1.0), a / b));
            }
        }
    }
}

/// A plain copy of 4-word vectors: the device's streaming bandwidth, for the benches.
#[cube(launch_unchecked)]
pub fn copy_words<N: Size>(input: &Array<Vector<u32, N>>, output: &mut Array<Vector<u32, N>>) {
    let i = ABSOLUTE_POS;
    if i < input.len() {
        output[i] = input[i];
    }
}
