//! A [`Store`] in host memory, run by the [`host`](super::host) engine.

use std::sync::OnceLock;

use super::draws::Draws;
use super::elem::HostRows;
use super::host::{Ranks, Rows, run_to_vec, slerp_sums};
use super::job::Job;
use super::ranks::{Codes, code_layout, row_ranks, task_vector_keys, tensor_codes};
use super::{Store, TensorMeta, for_each_parallel, rank_workers};
use crate::checkpoint::Dtype;
use crate::with_rows;

/// Tensors in host memory, in their stored dtype, with their magnitude ranks and each expert's
/// draw codes (DARE, DELLA) built on first use.
#[derive(Default)]
pub struct HostStore {
    tensors: Vec<TensorMeta>,
    rows: Vec<HostRows>,
    codes: Vec<OnceLock<Vec<Codes>>>,
    row_ranks: Vec<OnceLock<Vec<Codes>>>,
    draws: Vec<Vec<OnceLock<Draws>>>,
}

impl HostStore {
    /// An empty store.
    pub fn new() -> HostStore {
        HostStore::default()
    }

    /// Adds a tensor: `rows` hold the base, then each expert (`meta.experts` of them).
    pub fn push(&mut self, meta: TensorMeta, rows: HostRows) {
        debug_assert_eq!(meta.dtype, rows.dtype());
        let experts = meta.experts;
        self.tensors.push(meta);
        self.rows.push(rows);
        self.codes.push(OnceLock::new());
        self.row_ranks.push(OnceLock::new());
        self.draws
            .push((0..experts).map(|_| OnceLock::new()).collect());
    }

    /// Every expert's magnitude keys of tensor `t`, on one thread per expert.
    fn per_expert<T: Send>(&self, t: usize, f: impl Fn(Vec<u32>) -> T + Sync) -> Vec<T> {
        let k = self.tensors[t].experts;
        with_rows!(&self.rows[t], |all: E| {
            let rows = Rows::split(all, k);
            std::thread::scope(|scope| {
                let workers: Vec<_> = rows
                    .experts
                    .iter()
                    .map(|expert| {
                        let (f, base) = (&f, rows.base);
                        scope.spawn(move || f(task_vector_keys(base, expert)))
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("a rank worker panicked"))
                    .collect()
            })
        })
    }

    fn codes(&self, t: usize) -> &[Codes] {
        self.codes[t].get_or_init(|| self.per_expert(t, |keys| tensor_codes(&keys)))
    }

    fn row_ranks(&self, t: usize) -> &[Codes] {
        let cols = self.tensors[t].row_width();
        self.row_ranks[t].get_or_init(|| self.per_expert(t, |keys| row_ranks(&keys, cols)))
    }

    /// Per expert of tensor `t`, the draw codes of the stream its mask in `job` draws from: built
    /// for the first stream asked for (a run's seed is fixed), `None` for any other.
    fn draws(&self, t: usize, job: &Job) -> Vec<Option<&Draws>> {
        let Job::Gta(g) = job else {
            return Vec::new();
        };
        let n = self.tensors[t].numel();
        g.masks
            .iter()
            .zip(&self.draws[t])
            .map(|(mask, cell)| {
                let key = mask.stream()?;
                Some(cell.get_or_init(|| Draws::new(key, n))).filter(|d| d.key == key)
            })
            .collect()
    }
}

impl Store for HostStore {
    type Merged = HostRows;

    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    fn run(&self, t: usize, job: &Job, dtype: Dtype) -> HostRows {
        let meta = &self.tensors[t];
        let draws = self.draws(t, job);
        let ranks = Ranks::Cached {
            codes: job
                .needs_ranks()
                .then(|| (self.codes(t), code_layout(meta.numel()).1)),
            rows: job.needs_row_ranks().then(|| self.row_ranks(t)),
            draws: &draws,
        };
        with_rows!(&self.rows[t], |all: E| {
            let rows = Rows::split(all, meta.experts);
            match dtype {
                Dtype::F32 => HostRows::F32(run_to_vec::<E, f32>(job, &rows, &ranks)),
                Dtype::BF16 => HostRows::Bf16(run_to_vec::<E, half::bf16>(job, &rows, &ranks)),
                Dtype::F16 => HostRows::F16(run_to_vec::<E, half::f16>(job, &rows, &ranks)),
            }
        })
    }

    fn slerp_sums(&self, t: usize) -> [f32; 3] {
        with_rows!(&self.rows[t], |all: E| slerp_sums(&Rows::split(all, 1)))
    }

    fn bytes(&self) -> usize {
        let cached =
            |c: &OnceLock<Vec<Codes>>| c.get().map_or(0, |v| v.iter().map(Codes::bytes).sum());
        self.rows.iter().map(HostRows::bytes).sum::<usize>()
            + self.codes.iter().map(cached).sum::<usize>()
            + self.row_ranks.iter().map(cached).sum::<usize>()
            + (self.draws.iter().flatten())
                .filter_map(OnceLock::get)
                .map(Draws::bytes)
                .sum::<usize>()
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
