//! One tensor's merge inputs on a device: the base and the task vectors `tau_i = theta_i - theta_base`,
//! plus everything derived from them that no plan changes (sorted magnitudes, DELLA ranks),
//! computed on first use and kept.

use std::any::Any;
use std::sync::OnceLock;

use burn::backend::flex::FlexTensor;

use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::host_kernel;
use crate::checkpoint::{BlockPosition, CheckpointError, ModelSet};

/// A tensor's base and task vectors, stacked as rows `[base, tau_1, ..., tau_k]` of one matrix so
/// that any linear combination is one matrix product, plus plan-independent caches.
pub struct TensorInputs<B: Backend> {
    name: String,
    shape: Vec<usize>,
    block: Option<BlockPosition>,
    stacked: Tensor<B, 2>,
    sorted_magnitudes: Vec<OnceLock<Vec<f32>>>,
    della_ranks: Vec<OnceLock<Tensor<B, 1>>>,
}

impl<B: Backend> TensorInputs<B> {
    /// Builds the inputs from host values: `experts[i]` are the full weights of expert `i`.
    pub fn new(
        name: &str,
        shape: &[usize],
        block: Option<BlockPosition>,
        base: &[f32],
        experts: &[Vec<f32>],
        device: &B::Device,
    ) -> TensorInputs<B> {
        let n = base.len();
        let mut rows = Vec::with_capacity((experts.len() + 1) * n);
        rows.extend_from_slice(base);
        for expert in experts {
            debug_assert_eq!(expert.len(), n, "expert shape checked by ModelSet");
            rows.extend_from_slice(expert);
        }
        Self::from_weights(name, shape, block, rows, experts.len(), device)
    }

    /// Builds the inputs from `[base, expert_1, ..., expert_k]` concatenated, turning the expert
    /// rows into task vectors in place.
    fn from_weights(
        name: &str,
        shape: &[usize],
        block: Option<BlockPosition>,
        mut rows: Vec<f32>,
        k: usize,
        device: &B::Device,
    ) -> TensorInputs<B> {
        let n = rows.len() / (k + 1);
        let (base, experts) = rows.split_at_mut(n);
        for expert in experts.chunks_mut(n.max(1)) {
            expert
                .iter_mut()
                .zip(base.iter())
                .for_each(|(e, b)| *e -= b);
        }
        let stacked = Tensor::from_data(TensorData::new(rows, [k + 1, n]), device);
        TensorInputs {
            name: name.to_string(),
            shape: shape.to_vec(),
            block,
            stacked,
            sorted_magnitudes: (0..k).map(|_| OnceLock::new()).collect(),
            della_ranks: (0..k).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Its block position, if its name carries a block index.
    pub fn block(&self) -> Option<BlockPosition> {
        self.block
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.stacked.dims()[1]
    }

    /// Number of experts.
    pub fn experts(&self) -> usize {
        self.stacked.dims()[0] - 1
    }

    /// The device the inputs live on.
    pub fn device(&self) -> B::Device {
        self.stacked.device()
    }

    /// The base weights, flattened.
    pub fn base(&self) -> Tensor<B, 1> {
        self.row(0)
    }

    /// Task vector `i`, flattened.
    pub fn tau(&self, i: usize) -> Tensor<B, 1> {
        self.row(i + 1)
    }

    fn row(&self, r: usize) -> Tensor<B, 1> {
        let n = self.numel();
        self.stacked.clone().slice([r..r + 1, 0..n]).reshape([n])
    }

    /// `c_0 * base + sum_i c_{i+1} * tau_i` in one matrix product (`coefficients.len() == k + 1`).
    ///
    /// On the CPU (burn's Flex backend) this is one fused, multi-threaded pass over the rows in
    /// host memory, which runs near memory bandwidth. Elsewhere it is a `[1, k+1] x [k+1, n]`
    /// product; large tensors are cut into column chunks computed as one batched product, which
    /// backends parallelize over the batch.
    pub fn combine(&self, coefficients: &[f64]) -> Tensor<B, 1> {
        let k1 = coefficients.len();
        debug_assert_eq!(k1, self.experts() + 1);
        let n = self.numel();
        let row: Vec<f32> = coefficients.iter().map(|&c| c as f32).collect();
        let device = self.device();
        if let Some(merged) = with_host_rows(&self.stacked, |rows| {
            host_kernel::combine_rows(rows, n, &row)
        }) {
            return Tensor::from_data(TensorData::new(merged, [n]), &device);
        }
        let chunks = column_chunks(n);
        if chunks == 1 {
            let row = Tensor::<B, 2>::from_data(TensorData::new(row, [1, k1]), &device);
            return row.matmul(self.stacked.clone()).reshape([n]);
        }
        let row = Tensor::<B, 3>::from_data(TensorData::new(row, [1, 1, k1]), &device);
        let columns = self
            .stacked
            .clone()
            .reshape([k1, chunks, n / chunks])
            .swap_dims(0, 1);
        row.expand([chunks, 1, k1]).matmul(columns).reshape([n])
    }

    /// `sum_i c_i * tau_i` in one matrix product (`coefficients.len() == k`).
    pub fn combine_taus(&self, coefficients: &[f64]) -> Tensor<B, 1> {
        let mut all = Vec::with_capacity(coefficients.len() + 1);
        all.push(0.0);
        all.extend_from_slice(coefficients);
        self.combine(&all)
    }

    /// `|tau_i|` sorted ascending, on the host (computed once).
    pub fn sorted_magnitudes(&self, i: usize) -> &[f32] {
        self.sorted_magnitudes[i].get_or_init(|| {
            let mut m: Vec<f32> = host_values(self.tau(i)).into_iter().map(f32::abs).collect();
            m.sort_unstable_by(f32::total_cmp);
            m
        })
    }

    /// DELLA's normalized rank of each `|tau_i|` within its row, in `[0, 1]` (computed once).
    ///
    /// Rows are the first dimension (a 1-D tensor is one row); ranks ascend with magnitude, equal
    /// magnitudes ranked by position. A one-column row has rank 0.
    pub fn della_ranks(&self, i: usize) -> Tensor<B, 1> {
        self.della_ranks[i]
            .get_or_init(|| {
                let values = host_values(self.tau(i));
                let n = values.len();
                let rows = if self.shape.len() >= 2 {
                    self.shape[0].max(1)
                } else {
                    1
                };
                let cols = if n == 0 { 0 } else { n / rows };
                let mut ranks = vec![0f32; n];
                let mut order: Vec<usize> = Vec::with_capacity(cols);
                for r in 0..rows {
                    let row = &values[r * cols..(r + 1) * cols];
                    order.clear();
                    order.extend(0..cols);
                    order.sort_by(|&a, &b| row[a].abs().total_cmp(&row[b].abs()));
                    let denom = cols.saturating_sub(1).max(1) as f64;
                    for (rank, &j) in order.iter().enumerate() {
                        ranks[r * cols + j] = (rank as f64 / denom) as f32;
                    }
                }
                Tensor::from_data(TensorData::new(ranks, [n]), &self.device())
            })
            .clone()
    }
}

/// Calls `f` with the rows of `stacked` as one host slice, without copying, when the backend
/// keeps tensors in host memory (burn's Flex) as contiguous f32; `None` on other backends.
fn with_host_rows<B: Backend, R>(stacked: &Tensor<B, 2>, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let TensorPrimitive::Float(primitive) = stacked.clone().into_primitive() else {
        return None;
    };
    let flex = (&primitive as &dyn Any).downcast_ref::<FlexTensor>()?;
    let (start, end) = flex.layout().contiguous_offsets()?;
    if flex.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    Some(f(&flex.storage::<f32>()[start..end]))
}

/// Column chunks for [`TensorInputs::combine`]: the most of 16, 8, 4 or 2 that divides `n` into
/// chunks of at least 64Ki elements, else 1.
fn column_chunks(n: usize) -> usize {
    const MIN_CHUNK: usize = 1 << 16;
    [16, 8, 4, 2]
        .into_iter()
        .find(|&c| n.is_multiple_of(c) && n / c >= MIN_CHUNK)
        .unwrap_or(1)
}

/// Reads a tensor back to the host as `f32` values.
pub fn host_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converts to f32")
}

impl<B: Backend> TensorInputs<B> {
    /// Reads tensor `name` of the base and every expert of `set` and puts it on `device`.
    ///
    /// The values are decoded straight into the stacked rows, and each file's pages are released
    /// once read, so a streaming merge holds about `k + 1` copies of one tensor in f32.
    pub fn read(
        set: &ModelSet,
        name: &str,
        block: Option<BlockPosition>,
        device: &B::Device,
    ) -> Result<TensorInputs<B>, CheckpointError> {
        let entry = set.base.entry(name)?;
        let k = set.experts.len();
        let mut rows = Vec::with_capacity((k + 1) * entry.info.numel());
        for model in std::iter::once(&set.base).chain(&set.experts) {
            model.read_f32_into(name, &mut rows)?;
            model.release(name);
        }
        Ok(TensorInputs::from_weights(
            name,
            &entry.info.shape,
            block,
            rows,
            k,
            device,
        ))
    }
}
