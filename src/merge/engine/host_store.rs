//! A [`Store`] in host memory, run by the [`host`](super::host) engine.

use std::sync::OnceLock;

use super::elem::HostRows;
use super::host::{Ranks, Rows, run_to_vec, slerp_sums};
use super::job::Job;
use super::ranks::{Codes, code_layout, row_ranks, task_vector_keys, tensor_codes};
use super::{Store, TensorMeta, for_each_parallel, rank_workers};
use crate::checkpoint::Dtype;
use crate::with_rows;

/// Tensors in host memory, in their stored dtype, with their magnitude ranks built on first use.
#[derive(Default)]
pub struct HostStore {
    tensors: Vec<TensorMeta>,
    rows: Vec<HostRows>,
    codes: Vec<OnceLock<Vec<Codes>>>,
    row_ranks: Vec<OnceLock<Vec<Codes>>>,
}

impl HostStore {
    /// An empty store.
    pub fn new() -> HostStore {
        HostStore::default()
    }

    /// Adds a tensor: `rows` hold the base, then each expert (`meta.experts` of them).
    pub fn push(&mut self, meta: TensorMeta, rows: HostRows) {
        debug_assert_eq!(meta.dtype, rows.dtype());
        self.tensors.push(meta);
        self.rows.push(rows);
        self.codes.push(OnceLock::new());
        self.row_ranks.push(OnceLock::new());
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
}

impl Store for HostStore {
    type Merged = HostRows;

    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    fn run(&self, t: usize, job: &Job, dtype: Dtype) -> HostRows {
        let meta = &self.tensors[t];
        let ranks = Ranks::Cached {
            codes: job
                .needs_ranks()
                .then(|| (self.codes(t), code_layout(meta.numel()).1)),
            rows: job.needs_row_ranks().then(|| self.row_ranks(t)),
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
