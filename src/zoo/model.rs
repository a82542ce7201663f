//! The zoo's models: a small pre-norm Vision Transformer encoder (and an MLP variant for fast
//! tests), with tensor names in the Hugging Face ViT style so that layer grouping finds the
//! blocks (`vit.encoder.layer.3.attention.attention.query.weight`), and one linear head per task.
//!
//! Encoder and heads are stored apart: merging touches only the encoder; each task keeps the head
//! of its own expert (as the CLIP benchmark keeps each task's fixed classification head).
//! Weights are exported as `[out, in]` matrices, as PyTorch's `nn.Linear` stores them.

use rand::Rng as _;
use rand_distr::StandardNormal;
use std::collections::HashMap;

use burn::module::{Param, ParamId};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::{gelu, log_softmax, softmax};
use serde::{Deserialize, Serialize};

use super::tasks::IMAGE_SIZE;
use crate::rng::Rng;

/// Shape of an encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// `vit` or `mlp`.
    pub kind: EncoderKind,
    /// Width of the tokens (ViT) or hidden layers (MLP).
    pub dim: usize,
    /// Number of transformer blocks (ViT) or hidden layers (MLP).
    pub depth: usize,
    /// Attention heads (ViT).
    pub heads: usize,
    /// Side of a square patch (ViT); `IMAGE_SIZE` must be a multiple.
    pub patch: usize,
    /// Hidden width of each block's MLP, as a multiple of `dim` (ViT).
    pub mlp_ratio: usize,
}

/// The encoder architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// Pre-norm Vision Transformer.
    Vit,
    /// A plain MLP on the pixels (fast tests).
    Mlp,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig::vit()
    }
}

impl EncoderConfig {
    /// The zoo's ViT: 4 blocks of width 64, 4 heads, 4x4 patches.
    pub fn vit() -> EncoderConfig {
        EncoderConfig {
            kind: EncoderKind::Vit,
            dim: 64,
            depth: 4,
            heads: 4,
            patch: 4,
            mlp_ratio: 2,
        }
    }

    /// A small MLP for fast tests.
    pub fn mlp() -> EncoderConfig {
        EncoderConfig {
            kind: EncoderKind::Mlp,
            dim: 64,
            depth: 2,
            heads: 1,
            patch: 1,
            mlp_ratio: 1,
        }
    }

    fn tokens(&self) -> usize {
        (IMAGE_SIZE / self.patch).pow(2) + 1
    }

    /// Initializes an encoder with random weights drawn from `rng` (not from the backend's global
    /// generator, which other threads share), so a seed gives the same encoder anywhere.
    pub fn init<B: Backend>(&self, rng: &mut Rng, device: &B::Device) -> Encoder<B> {
        let norm = || LayerNormConfig::new(self.dim).init(device);
        match self.kind {
            EncoderKind::Vit => Encoder {
                patch: seeded_linear(self.patch * self.patch, self.dim, rng, device),
                cls_token: Param::from_tensor(normal([1, 1, self.dim], 0.02, rng, device)),
                position: Param::from_tensor(normal(
                    [1, self.tokens(), self.dim],
                    0.02,
                    rng,
                    device,
                )),
                blocks: (0..self.depth)
                    .map(|_| Block {
                        norm1: norm(),
                        query: seeded_linear(self.dim, self.dim, rng, device),
                        key: seeded_linear(self.dim, self.dim, rng, device),
                        value: seeded_linear(self.dim, self.dim, rng, device),
                        out: seeded_linear(self.dim, self.dim, rng, device),
                        norm2: norm(),
                        fc1: seeded_linear(self.dim, self.dim * self.mlp_ratio, rng, device),
                        fc2: seeded_linear(self.dim * self.mlp_ratio, self.dim, rng, device),
                    })
                    .collect(),
                layers: Vec::new(),
                norm: norm(),
                heads: self.heads,
                patch_size: self.patch,
            },
            EncoderKind::Mlp => Encoder {
                patch: seeded_linear(IMAGE_SIZE * IMAGE_SIZE, self.dim, rng, device),
                cls_token: Param::from_tensor(Tensor::zeros([1, 1, 1], device)),
                position: Param::from_tensor(Tensor::zeros([1, 1, 1], device)),
                blocks: Vec::new(),
                layers: (0..self.depth)
                    .map(|_| seeded_linear(self.dim, self.dim, rng, device))
                    .collect(),
                norm: norm(),
                heads: 1,
                patch_size: 1,
            },
        }
    }
}

/// A linear layer initialized as burn's default, `U(-k, k)` with `k = 1 / sqrt(inputs)`, from `rng`.
fn seeded_linear<B: Backend>(
    inputs: usize,
    outputs: usize,
    rng: &mut Rng,
    device: &B::Device,
) -> Linear<B> {
    let k = 1.0 / (inputs as f64).sqrt();
    let mut uniform = |shape: Vec<usize>| {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| ((2.0 * rng.random::<f64>() - 1.0) * k) as f32)
            .collect();
        TensorData::new(values, shape)
    };
    Linear {
        weight: Param::from_tensor(Tensor::from_data(uniform(vec![inputs, outputs]), device)),
        bias: Some(Param::from_tensor(Tensor::from_data(
            uniform(vec![outputs]),
            device,
        ))),
    }
}

/// A tensor of normal values with standard deviation `std`, from `rng`.
fn normal<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    rng: &mut Rng,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| (std * rng.sample::<f64, _>(StandardNormal)) as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    out: Linear<B>,
    norm2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

/// The shared encoder: images in, one feature vector per image out.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    patch: Linear<B>,
    cls_token: Param<Tensor<B, 3>>,
    position: Param<Tensor<B, 3>>,
    blocks: Vec<Block<B>>,
    layers: Vec<Linear<B>>,
    norm: LayerNorm<B>,
    heads: usize,
    patch_size: usize,
}

impl<B: Backend> Block<B> {
    /// The block on `batch` sequences of `tokens` tokens, stored as rows `[batch * tokens, dim]`:
    /// every linear layer is then one matrix product over all tokens (and its weight gradient
    /// another), not one small product per image.
    fn forward(&self, x: Tensor<B, 2>, batch: usize, tokens: usize, heads: usize) -> Tensor<B, 2> {
        let dim = x.dims()[1];
        let head_dim = dim / heads;
        let h = self.norm1.forward(x.clone());
        let (q, k, v) = (
            self.query.forward(h.clone()),
            self.key.forward(h.clone()),
            self.value.forward(h),
        );
        // Head by head on column slices of the token rows: no 4-D permutation of the
        // activations (which the CPU backend copies element by element), and each head's output
        // lands in its columns of the attended rows.
        let scale = 1.0 / (head_dim as f64).sqrt();
        let rows = batch * tokens;
        let column = |t: &Tensor<B, 2>, h: usize| {
            t.clone()
                .slice([0..rows, h * head_dim..(h + 1) * head_dim])
                .reshape([batch, tokens, head_dim])
        };
        let attended = Tensor::cat(
            (0..heads)
                .map(|h| {
                    let scores = column(&q, h)
                        .mul_scalar(scale)
                        .matmul(column(&k, h).swap_dims(1, 2));
                    softmax(scores, 2).matmul(column(&v, h))
                })
                .collect(),
            2,
        )
        .reshape([rows, dim]);
        let x = x + self.out.forward(attended);
        let h = self.norm2.forward(x.clone());
        x + self.fc2.forward(gelu(self.fc1.forward(h)))
    }
}

impl<B: Backend> Encoder<B> {
    /// Features of a batch of images `[batch, IMAGE_SIZE * IMAGE_SIZE]`: the ViT's normalized
    /// class token, or the MLP's last normalized hidden layer.
    pub fn forward(&self, images: Tensor<B, 2>) -> Tensor<B, 2> {
        let [batch, _] = images.dims();
        if self.blocks.is_empty() {
            let mut h = gelu(self.patch.forward(images));
            for layer in &self.layers {
                h = h.clone() + gelu(layer.forward(h));
            }
            return self.norm.forward(h);
        }
        let p = self.patch_size;
        let side = IMAGE_SIZE / p;
        let patches = images
            .reshape([batch, side, p, side, p])
            .swap_dims(2, 3)
            .reshape([batch * side * side, p * p]);
        let dim = self.position.dims()[2];
        let embedded = self
            .patch
            .forward(patches)
            .reshape([batch, side * side, dim]);
        let cls = self.cls_token.val().expand([batch, 1, dim]);
        let tokens = side * side + 1;
        let mut x = (Tensor::cat(vec![cls, embedded], 1) + self.position.val())
            .reshape([batch * tokens, dim]);
        for block in &self.blocks {
            x = block.forward(x, batch, tokens, self.heads);
        }
        // The final norm acts on each token alone: only the class tokens need it.
        let cls = x
            .reshape([batch, tokens, dim])
            .slice([0..batch, 0..1, 0..dim])
            .reshape([batch, dim]);
        self.norm.forward(cls)
    }
}

/// A flattened tensor with its shape, as exported or as a merge candidate holds it.
pub type NamedTensor<B> = (String, Vec<usize>, Tensor<B, 1>);

/// Tensors by name, from which a module is rebuilt.
pub struct TensorSource<B: Backend> {
    tensors: HashMap<String, (Vec<usize>, Tensor<B, 1>)>,
}

/// A tensor the module needs is missing or has the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("zoo model tensor {name:?}: {problem}")]
pub struct LoadError {
    /// The tensor.
    pub name: String,
    /// What is wrong.
    pub problem: String,
}

impl<B: Backend> TensorSource<B> {
    /// Indexes `tensors` by name.
    pub fn new(tensors: impl IntoIterator<Item = NamedTensor<B>>) -> TensorSource<B> {
        TensorSource {
            tensors: tensors.into_iter().map(|(n, s, t)| (n, (s, t))).collect(),
        }
    }

    fn take<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Tensor<B, D>, LoadError> {
        let (stored, t) = self.tensors.get(name).ok_or_else(|| LoadError {
            name: name.to_string(),
            problem: "missing".into(),
        })?;
        if stored.as_slice() != shape {
            return Err(LoadError {
                name: name.to_string(),
                problem: format!("has shape {stored:?}, the model needs {shape:?}"),
            });
        }
        Ok(t.clone().reshape(shape))
    }
}

/// A parameter holding an imported tensor as it is: unlike `Param::from_tensor` it does not make
/// the tensor a leaf of the autograd graph, so an encoder imported from tensors computed from
/// trainable values (merge coefficients) stays differentiable with respect to them.
fn imported<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::initialized(ParamId::new(), tensor)
}

fn flat<B: Backend, const D: usize>(name: String, t: Tensor<B, D>) -> NamedTensor<B> {
    let shape = t.dims().to_vec();
    let n: usize = shape.iter().product();
    (name, shape, t.reshape([n]))
}

/// Exports a linear layer as `{prefix}.weight` (`[out, in]`) and `{prefix}.bias`.
fn export_linear<B: Backend>(prefix: &str, l: &Linear<B>, out: &mut Vec<NamedTensor<B>>) {
    out.push(flat(format!("{prefix}.weight"), l.weight.val().transpose()));
    if let Some(b) = &l.bias {
        out.push(flat(format!("{prefix}.bias"), b.val()));
    }
}

fn import_linear<B: Backend>(
    prefix: &str,
    like: &Linear<B>,
    src: &TensorSource<B>,
) -> Result<Linear<B>, LoadError> {
    let [i, o] = like.weight.dims();
    Ok(Linear {
        weight: imported(src.take(&format!("{prefix}.weight"), [o, i])?.transpose()),
        bias: match &like.bias {
            Some(_) => Some(imported(src.take(&format!("{prefix}.bias"), [o])?)),
            None => None,
        },
    })
}

fn export_norm<B: Backend>(prefix: &str, n: &LayerNorm<B>, out: &mut Vec<NamedTensor<B>>) {
    out.push(flat(format!("{prefix}.weight"), n.gamma.val()));
    if let Some(b) = &n.beta {
        out.push(flat(format!("{prefix}.bias"), b.val()));
    }
}

fn import_norm<B: Backend>(
    prefix: &str,
    like: &LayerNorm<B>,
    src: &TensorSource<B>,
) -> Result<LayerNorm<B>, LoadError> {
    let [d] = like.gamma.dims();
    let mut norm = like.clone();
    norm.gamma = imported(src.take(&format!("{prefix}.weight"), [d])?);
    if norm.beta.is_some() {
        norm.beta = Some(imported(src.take(&format!("{prefix}.bias"), [d])?));
    }
    Ok(norm)
}

/// Hugging Face ViT names of a block's parts: (field, name suffix).
const BLOCK_LINEARS: [(&str, &str); 6] = [
    ("query", "attention.attention.query"),
    ("key", "attention.attention.key"),
    ("value", "attention.attention.value"),
    ("out", "attention.output.dense"),
    ("fc1", "intermediate.dense"),
    ("fc2", "output.dense"),
];

impl<B: Backend> Block<B> {
    fn linear(&self, field: &str) -> &Linear<B> {
        match field {
            "query" => &self.query,
            "key" => &self.key,
            "value" => &self.value,
            "out" => &self.out,
            "fc1" => &self.fc1,
            _ => &self.fc2,
        }
    }

    fn linear_mut(&mut self, field: &str) -> &mut Linear<B> {
        match field {
            "query" => &mut self.query,
            "key" => &mut self.key,
            "value" => &mut self.value,
            "out" => &mut self.out,
            "fc1" => &mut self.fc1,
            _ => &mut self.fc2,
        }
    }
}

impl<B: Backend> Encoder<B> {
    /// The encoder's tensors with Hugging Face ViT-style names, in a fixed order.
    pub fn export(&self) -> Vec<NamedTensor<B>> {
        let mut out = Vec::new();
        if self.blocks.is_empty() {
            export_linear("mlp.input", &self.patch, &mut out);
            for (i, l) in self.layers.iter().enumerate() {
                export_linear(&format!("mlp.layers.{i}"), l, &mut out);
            }
            export_norm("mlp.norm", &self.norm, &mut out);
            return out;
        }
        export_linear(
            "vit.embeddings.patch_embeddings.projection",
            &self.patch,
            &mut out,
        );
        out.push(flat(
            "vit.embeddings.cls_token".into(),
            self.cls_token.val(),
        ));
        out.push(flat(
            "vit.embeddings.position_embeddings".into(),
            self.position.val(),
        ));
        for (i, block) in self.blocks.iter().enumerate() {
            let p = format!("vit.encoder.layer.{i}");
            export_norm(&format!("{p}.layernorm_before"), &block.norm1, &mut out);
            for (field, suffix) in BLOCK_LINEARS {
                export_linear(&format!("{p}.{suffix}"), block.linear(field), &mut out);
            }
            export_norm(&format!("{p}.layernorm_after"), &block.norm2, &mut out);
        }
        export_norm("vit.layernorm", &self.norm, &mut out);
        out
    }

    /// A copy of this encoder whose weights come from `src` (names as [`Encoder::export`]). The
    /// weights keep their autograd graph: on an autodiff backend the encoder is differentiable
    /// with respect to whatever the tensors were computed from.
    pub fn import(&self, src: &TensorSource<B>) -> Result<Encoder<B>, LoadError> {
        let mut e = self.clone();
        if self.blocks.is_empty() {
            e.patch = import_linear("mlp.input", &self.patch, src)?;
            for (i, l) in self.layers.iter().enumerate() {
                e.layers[i] = import_linear(&format!("mlp.layers.{i}"), l, src)?;
            }
            e.norm = import_norm("mlp.norm", &self.norm, src)?;
            return Ok(e);
        }
        e.patch = import_linear(
            "vit.embeddings.patch_embeddings.projection",
            &self.patch,
            src,
        )?;
        e.cls_token = imported(src.take("vit.embeddings.cls_token", self.cls_token.dims())?);
        e.position =
            imported(src.take("vit.embeddings.position_embeddings", self.position.dims())?);
        for (i, block) in self.blocks.iter().enumerate() {
            let p = format!("vit.encoder.layer.{i}");
            let b = &mut e.blocks[i];
            b.norm1 = import_norm(&format!("{p}.layernorm_before"), &block.norm1, src)?;
            for (field, suffix) in BLOCK_LINEARS {
                *b.linear_mut(field) =
                    import_linear(&format!("{p}.{suffix}"), block.linear(field), src)?;
            }
            b.norm2 = import_norm(&format!("{p}.layernorm_after"), &block.norm2, src)?;
        }
        e.norm = import_norm("vit.layernorm", &self.norm, src)?;
        Ok(e)
    }
}

/// A copy of `t` with no autograd history.
fn detached<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_data(t.to_data(), &t.device())
}

/// A task's classification head on the encoder's features.
#[derive(Module, Debug)]
pub struct Head<B: Backend> {
    linear: Linear<B>,
}

impl<B: Backend> Head<B> {
    /// A head from `dim` features to `classes` logits, initialized from `rng`.
    pub fn new(dim: usize, classes: usize, rng: &mut Rng, device: &B::Device) -> Head<B> {
        Head {
            linear: seeded_linear(dim, classes, rng, device),
        }
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear.forward(features)
    }

    /// The head restricted to the classes `classes` (a task's rows of a joint-label head).
    pub fn classes(&self, classes: std::ops::Range<usize>) -> Head<B> {
        let [dim, _] = self.linear.weight.dims();
        // Copied through the host: the slices start a head of their own, not a view into this
        // one's autograd graph.
        let weight = detached(self.linear.weight.val().slice([0..dim, classes.clone()]));
        let bias = self
            .linear
            .bias
            .as_ref()
            .map(|b| detached(b.val().slice([classes])));
        Head {
            linear: Linear {
                weight: Param::from_tensor(weight),
                bias: bias.map(Param::from_tensor),
            },
        }
    }

    /// Exports as `heads.{task}.weight` / `.bias`.
    pub fn export(&self, task: &str) -> Vec<NamedTensor<B>> {
        let mut out = Vec::new();
        export_linear(&format!("heads.{task}"), &self.linear, &mut out);
        out
    }

    /// A copy with weights from `src`.
    pub fn import(&self, task: &str, src: &TensorSource<B>) -> Result<Head<B>, LoadError> {
        Ok(Head {
            linear: import_linear(&format!("heads.{task}"), &self.linear, src)?,
        })
    }
}

/// Every task's head side by side, so that one batch holding rows of several tasks is scored at
/// once: one matrix product gives each row the logits of all tasks' classes, and an additive
/// mask keeps those of the row's own task (the others get [`MASKED`], which a softmax turns into
/// exactly zero).
#[derive(Debug, Clone)]
pub struct TaskHeads<B: Backend> {
    /// `[dim, classes of all tasks]`.
    weight: Tensor<B, 2>,
    /// `[1, classes of all tasks]`.
    bias: Tensor<B, 2>,
    /// Task `t`'s classes are columns `offsets[t]..offsets[t + 1]`.
    offsets: Vec<usize>,
}

/// The logit given to the classes of the other tasks: finite, so that masked entries of a
/// log-softmax stay finite and their products with zero probabilities are zero, not NaN.
pub const MASKED: f32 = -1e9;

impl<B: Backend> TaskHeads<B> {
    /// The heads of the tasks, in order.
    pub fn new(heads: &[Head<B>]) -> TaskHeads<B> {
        let mut offsets = vec![0];
        for head in heads {
            let [_, classes] = head.linear.weight.dims();
            offsets.push(offsets.last().copied().unwrap_or(0) + classes);
        }
        let total = *offsets.last().unwrap_or(&0);
        let weight = Tensor::cat(heads.iter().map(|h| h.linear.weight.val()).collect(), 1);
        let bias = Tensor::cat(
            heads
                .iter()
                .map(|h| {
                    let b = h.linear.bias.as_ref().expect("zoo heads have a bias");
                    b.val()
                })
                .collect(),
            0,
        )
        .reshape([1, total]);
        TaskHeads {
            weight,
            bias,
            offsets,
        }
    }

    /// Task `t`'s classes are columns `offsets()[t]..offsets()[t + 1]` of the joint logits.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// The additive mask of a row of task `task`: 0 on its classes, [`MASKED`] elsewhere.
    pub fn mask_row(&self, task: usize) -> Vec<f32> {
        let total = *self.offsets.last().unwrap_or(&0);
        (0..total)
            .map(|c| {
                if (self.offsets[task]..self.offsets[task + 1]).contains(&c) {
                    0.0
                } else {
                    MASKED
                }
            })
            .collect()
    }

    /// Log-probabilities `[rows, all classes]` of `features` over each row's own task's classes
    /// (`mask`: one [`TaskHeads::mask_row`] per row).
    pub fn log_probs(&self, features: Tensor<B, 2>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
        let logits = features.matmul(self.weight.clone()) + self.bias.clone() + mask;
        log_softmax(logits, 1)
    }
}

/// Each row's Shannon entropy `[rows, 1]` from its log-probabilities.
pub fn entropy<B: Backend>(log_p: Tensor<B, 2>) -> Tensor<B, 2> {
    (log_p.clone().exp() * log_p).sum_dim(1).neg()
}

/// An encoder with one head: what trains as an expert, and what scores one task.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    /// The shared encoder.
    pub encoder: Encoder<B>,
    /// The task's head.
    pub head: Head<B>,
}

impl<B: Backend> Classifier<B> {
    /// Logits for a batch of images.
    pub fn forward(&self, images: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head.forward(self.encoder.forward(images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    #[test]
    fn export_names_follow_hugging_face_and_import_round_trips() {
        let device = Default::default();
        for config in [EncoderConfig::vit(), EncoderConfig::mlp()] {
            let encoder = config.init::<B>(&mut Rng::new(1), &device);
            let exported = encoder.export();
            if config.kind == EncoderKind::Vit {
                let names: Vec<&str> = exported.iter().map(|(n, _, _)| n.as_str()).collect();
                assert!(names.contains(&"vit.encoder.layer.3.attention.attention.query.weight"));
                assert!(names.contains(&"vit.embeddings.position_embeddings"));
                let groups =
                    crate::checkpoint::LayerGroups::new(&names, &"layer".parse().unwrap()).unwrap();
                assert_eq!(
                    groups.len(),
                    config.depth + 2,
                    "embeddings, blocks, head: {:?}",
                    groups.names
                );
            }
            let images = Tensor::<B, 2>::random(
                [3, IMAGE_SIZE * IMAGE_SIZE],
                burn::tensor::Distribution::Default,
                &device,
            );
            let before = encoder.forward(images.clone());
            assert_eq!(before.dims(), [3, config.dim]);
            // A fresh encoder loaded with the exported tensors computes the same features (to
            // rounding: the transposed weights change the order of the matrix products' sums).
            let other = config
                .init::<B>(&mut Rng::new(2), &device)
                .import(&TensorSource::new(exported))
                .unwrap();
            let after = other.forward(images);
            let diff = (before - after).abs().max().into_scalar();
            assert!(diff < 1e-4, "{config:?}: features differ by {diff}");
        }
    }

    #[test]
    fn import_names_a_missing_or_misshapen_tensor() {
        let device = Default::default();
        let encoder = EncoderConfig::mlp().init::<B>(&mut Rng::new(3), &device);
        let mut tensors = encoder.export();
        tensors.retain(|(n, _, _)| n != "mlp.norm.bias");
        let err = encoder
            .import(&TensorSource::new(tensors.clone()))
            .unwrap_err();
        assert_eq!(err.name, "mlp.norm.bias");
        tensors[0].1 = vec![1, tensors[0].2.dims()[0]];
        let err = encoder.import(&TensorSource::new(tensors)).unwrap_err();
        assert!(err.problem.contains("shape"), "{err}");
    }
}
