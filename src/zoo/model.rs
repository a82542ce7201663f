//! The zoo's models: a small pre-norm Vision Transformer encoder (and an MLP variant for fast
//! tests), with tensor names in the Hugging Face ViT style so that layer grouping finds the
//! blocks (`vit.encoder.layer.3.attention.attention.query.weight`), and one linear head per task.
//! The same encoder, configured from a Hugging Face config, is a `transformers` ViT or CLIP
//! vision tower (see [`crate::vision`]).
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
use burn::tensor::activation::{gelu, log_softmax, sigmoid, softmax};
use serde::{Deserialize, Serialize};

use super::tasks::IMAGE_SIZE;
use crate::rng::Rng;
use crate::vision::{Activation, Family, VisionArch};

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
                pre_norm: None,
                projection: None,
                heads: self.heads,
                patch_size: self.patch,
                channels: 1,
                image_size: IMAGE_SIZE,
                activation: Activation::Gelu,
                naming: Naming::Zoo,
                unit_features: false,
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
                pre_norm: None,
                projection: None,
                heads: 1,
                patch_size: 1,
                channels: 1,
                image_size: IMAGE_SIZE,
                activation: Activation::Gelu,
                naming: Naming::Zoo,
                unit_features: false,
            },
        }
    }
}

/// A linear layer of zeros (a template that tensors are imported into).
fn zero_linear<B: Backend>(
    inputs: usize,
    outputs: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(Tensor::zeros([inputs, outputs], device)),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([outputs], device))),
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
    /// The final layer norm (ViT's `layernorm`, CLIP's `post_layernorm`).
    norm: LayerNorm<B>,
    /// CLIP's layer norm of the embedded tokens (`pre_layrnorm`).
    pre_norm: Option<LayerNorm<B>>,
    /// CLIP's projection of the features (`visual_projection`, no bias).
    projection: Option<Linear<B>>,
    heads: usize,
    patch_size: usize,
    channels: usize,
    image_size: usize,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    naming: Naming,
    /// Whether the features are scaled to unit length (CLIP's zero-shot classification).
    #[module(skip)]
    unit_features: bool,
}

/// How an encoder's tensors are named and shaped in its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// The zoo's files: `transformers`' ViT names under `vit.`, the patch projection stored as a
    /// matrix `[width, patch * patch]`.
    Zoo,
    /// `transformers`' ViT under `prefix` (`""` as `ViTModel` saves it, `"vit."` as
    /// `ViTForImageClassification` does); the patch projection is a convolution's
    /// `[width, channels, patch, patch]`.
    Vit {
        /// Prepended to every name.
        prefix: String,
    },
    /// `transformers`' CLIP vision tower under `vision_model.`, and `visual_projection`.
    Clip,
}

/// The names (and stored shapes) of a [`Naming`].
struct Names {
    prefix: String,
    patch: &'static str,
    /// The patch projection is stored as a convolution kernel.
    conv_patch: bool,
    cls: &'static str,
    position: &'static str,
    /// Class token and position embeddings are stored without their leading 1 (CLIP).
    squeezed: bool,
    pre_norm: &'static str,
    layers: &'static str,
    /// A block's norm1, query, key, value, attention output, fc1, fc2, norm2.
    parts: [&'static str; 8],
    norm: &'static str,
    projection: &'static str,
}

impl Naming {
    fn names(&self) -> Names {
        const VIT_PARTS: [&str; 8] = [
            "layernorm_before",
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
            "layernorm_after",
        ];
        let vit = |prefix: &str, conv_patch| Names {
            prefix: prefix.to_string(),
            patch: "embeddings.patch_embeddings.projection",
            conv_patch,
            cls: "embeddings.cls_token",
            position: "embeddings.position_embeddings",
            squeezed: false,
            pre_norm: "",
            layers: "encoder.layer",
            parts: VIT_PARTS,
            norm: "layernorm",
            projection: "",
        };
        match self {
            Naming::Zoo => vit("vit.", false),
            Naming::Vit { prefix } => vit(prefix, true),
            Naming::Clip => Names {
                prefix: "vision_model.".into(),
                patch: "embeddings.patch_embedding",
                conv_patch: true,
                cls: "embeddings.class_embedding",
                position: "embeddings.position_embedding.weight",
                squeezed: true,
                pre_norm: "pre_layrnorm",
                layers: "encoder.layers",
                parts: [
                    "layer_norm1",
                    "self_attn.q_proj",
                    "self_attn.k_proj",
                    "self_attn.v_proj",
                    "self_attn.out_proj",
                    "mlp.fc1",
                    "mlp.fc2",
                    "layer_norm2",
                ],
                norm: "post_layernorm",
                projection: "visual_projection",
            },
        }
    }
}

impl<B: Backend> Block<B> {
    /// The block on `batch` sequences of `tokens` tokens, stored as rows `[batch * tokens, dim]`:
    /// every linear layer is then one matrix product over all tokens (and its weight gradient
    /// another), not one small product per image.
    fn forward(
        &self,
        x: Tensor<B, 2>,
        [batch, tokens, heads]: [usize; 3],
        activation: Activation,
    ) -> Tensor<B, 2> {
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
        x + self.fc2.forward(activation.apply(self.fc1.forward(h)))
    }
}

impl Activation {
    fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Gelu => gelu(x),
            Activation::QuickGelu => x.clone() * sigmoid(x.mul_scalar(1.702)),
        }
    }
}

impl<B: Backend> Encoder<B> {
    /// Features of a batch of images `[batch, channels * side * side]` (channel-major, each
    /// channel row-major; the zoo's are `IMAGE_SIZE * IMAGE_SIZE`, one channel): the ViT's
    /// normalized class token (projected, for CLIP with a projection), or the MLP's last
    /// normalized hidden layer.
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
        let side = self.image_size / p;
        // Each patch's pixels in the order of a convolution kernel: channel, row, column.
        let patches = if self.channels == 1 {
            images
                .reshape([batch, side, p, side, p])
                .swap_dims(2, 3)
                .reshape([batch * side * side, p * p])
        } else {
            images
                .reshape([batch, self.channels, side, p, side, p])
                .permute([0, 2, 4, 1, 3, 5])
                .reshape([batch * side * side, self.channels * p * p])
        };
        let dim = self.position.dims()[2];
        let embedded = self
            .patch
            .forward(patches)
            .reshape([batch, side * side, dim]);
        let cls = self.cls_token.val().expand([batch, 1, dim]);
        let tokens = side * side + 1;
        let mut x = (Tensor::cat(vec![cls, embedded], 1) + self.position.val())
            .reshape([batch * tokens, dim]);
        if let Some(norm) = &self.pre_norm {
            x = norm.forward(x);
        }
        for block in &self.blocks {
            x = block.forward(x, [batch, tokens, self.heads], self.activation);
        }
        // The final norm acts on each token alone: only the class tokens need it.
        let cls = x
            .reshape([batch, tokens, dim])
            .slice([0..batch, 0..1, 0..dim])
            .reshape([batch, dim]);
        let features = self.norm.forward(cls);
        let features = match &self.projection {
            Some(projection) => projection.forward(features),
            None => features,
        };
        if self.unit_features {
            let length = features.clone().powi_scalar(2).sum_dim(1).sqrt();
            features / length
        } else {
            features
        }
    }

    /// This encoder with its features scaled to unit length, as CLIP scores zero-shot heads
    /// (`logit_scale` times the cosine of image and text embeddings).
    pub fn with_unit_features(mut self) -> Encoder<B> {
        self.unit_features = true;
        self
    }

    /// An encoder of the architecture `arch` with every weight zero and layer norms of scale
    /// 1, whose tensors are named as `naming` says: the template that a checkpoint's tensors
    /// are imported into (see [`Encoder::import`]).
    pub fn template(arch: &VisionArch, naming: Naming, device: &B::Device) -> Encoder<B> {
        let width = arch.width;
        let norm = || {
            LayerNormConfig::new(width)
                .with_epsilon(arch.eps)
                .init(device)
        };
        let linear = |i, o| zero_linear(i, o, true, device);
        let qkv = || zero_linear(width, width, arch.qkv_bias, device);
        let clip = arch.family == Family::Clip;
        Encoder {
            patch: zero_linear(
                arch.channels * arch.patch * arch.patch,
                width,
                !clip,
                device,
            ),
            cls_token: Param::from_tensor(Tensor::zeros([1, 1, width], device)),
            position: Param::from_tensor(Tensor::zeros([1, arch.tokens(), width], device)),
            blocks: (0..arch.depth)
                .map(|_| Block {
                    norm1: norm(),
                    query: qkv(),
                    key: qkv(),
                    value: qkv(),
                    out: linear(width, width),
                    norm2: norm(),
                    fc1: linear(width, arch.intermediate),
                    fc2: linear(arch.intermediate, width),
                })
                .collect(),
            layers: Vec::new(),
            norm: norm(),
            pre_norm: clip.then(norm),
            projection: arch
                .projection
                .map(|p| zero_linear(width, p, false, device)),
            heads: arch.heads,
            patch_size: arch.patch,
            channels: arch.channels,
            image_size: arch.image_size,
            activation: arch.activation,
            naming,
            unit_features: false,
        }
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
        self.take_as(name, &shape, shape)
    }

    /// The tensor `name`, which must be stored with the shape `stored`, as `shape` (the same
    /// elements in the same order).
    fn take_as<const D: usize>(
        &self,
        name: &str,
        stored: &[usize],
        shape: [usize; D],
    ) -> Result<Tensor<B, D>, LoadError> {
        let (found, t) = self.tensors.get(name).ok_or_else(|| LoadError {
            name: name.to_string(),
            problem: "missing".into(),
        })?;
        if found.as_slice() != stored {
            return Err(LoadError {
                name: name.to_string(),
                problem: format!("has shape {found:?}, the model needs {stored:?}"),
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
    flat_as(name, t, shape)
}

/// `t` flattened, recorded with the shape `shape` (of as many elements).
fn flat_as<B: Backend, const D: usize>(
    name: String,
    t: Tensor<B, D>,
    shape: Vec<usize>,
) -> NamedTensor<B> {
    let n: usize = shape.iter().product();
    (name, shape, t.reshape([n]))
}

/// Exports a linear layer as `{prefix}.weight` (`[out, in]`) and `{prefix}.bias`.
fn export_linear<B: Backend>(prefix: &str, l: &Linear<B>, out: &mut Vec<NamedTensor<B>>) {
    let [i, o] = l.weight.dims();
    export_linear_as(prefix, l, vec![o, i], out);
}

/// Exports a linear layer with its `[out, in]` weight stored as `weight_shape` (e.g. a patch
/// convolution's `[out, channels, patch, patch]`).
fn export_linear_as<B: Backend>(
    prefix: &str,
    l: &Linear<B>,
    weight_shape: Vec<usize>,
    out: &mut Vec<NamedTensor<B>>,
) {
    out.push(flat_as(
        format!("{prefix}.weight"),
        l.weight.val().transpose(),
        weight_shape,
    ));
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
    import_linear_as(prefix, like, &[o, i], src)
}

/// Imports a linear layer whose `[out, in]` weight is stored as `weight_shape`.
fn import_linear_as<B: Backend>(
    prefix: &str,
    like: &Linear<B>,
    weight_shape: &[usize],
    src: &TensorSource<B>,
) -> Result<Linear<B>, LoadError> {
    let [i, o] = like.weight.dims();
    Ok(Linear {
        weight: imported(
            src.take_as(&format!("{prefix}.weight"), weight_shape, [o, i])?
                .transpose(),
        ),
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

/// A block's linear layers, in the order of their names in [`Names::parts`] (after norm1).
const BLOCK_LINEARS: [&str; 6] = ["query", "key", "value", "out", "fc1", "fc2"];

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
        let n = self.naming.names();
        let name = |suffix: &str| format!("{}{suffix}", n.prefix);
        let shapes = self.stored_shapes(&n);
        export_linear_as(&name(n.patch), &self.patch, shapes.patch, &mut out);
        out.push(flat_as(name(n.cls), self.cls_token.val(), shapes.cls));
        out.push(flat_as(
            name(n.position),
            self.position.val(),
            shapes.position,
        ));
        if let Some(norm) = &self.pre_norm {
            export_norm(&name(n.pre_norm), norm, &mut out);
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let p = name(&format!("{}.{i}", n.layers));
            export_norm(&format!("{p}.{}", n.parts[0]), &block.norm1, &mut out);
            for (field, suffix) in BLOCK_LINEARS.iter().zip(&n.parts[1..7]) {
                export_linear(&format!("{p}.{suffix}"), block.linear(field), &mut out);
            }
            export_norm(&format!("{p}.{}", n.parts[7]), &block.norm2, &mut out);
        }
        export_norm(&name(n.norm), &self.norm, &mut out);
        if let Some(projection) = &self.projection {
            export_linear(n.projection, projection, &mut out);
        }
        out
    }

    /// The stored shapes of the patch projection's weight, the class token and the position
    /// embeddings under the naming `n`.
    fn stored_shapes(&self, n: &Names) -> StoredShapes {
        let [_, tokens, width] = self.position.dims();
        let (c, p) = (self.channels, self.patch_size);
        StoredShapes {
            patch: if n.conv_patch {
                vec![width, c, p, p]
            } else {
                vec![width, c * p * p]
            },
            cls: if n.squeezed {
                vec![width]
            } else {
                vec![1, 1, width]
            },
            position: if n.squeezed {
                vec![tokens, width]
            } else {
                vec![1, tokens, width]
            },
        }
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
        let n = self.naming.names();
        let name = |suffix: &str| format!("{}{suffix}", n.prefix);
        let shapes = self.stored_shapes(&n);
        e.patch = import_linear_as(&name(n.patch), &self.patch, &shapes.patch, src)?;
        e.cls_token = imported(src.take_as(&name(n.cls), &shapes.cls, self.cls_token.dims())?);
        e.position =
            imported(src.take_as(&name(n.position), &shapes.position, self.position.dims())?);
        if let Some(norm) = &self.pre_norm {
            e.pre_norm = Some(import_norm(&name(n.pre_norm), norm, src)?);
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let p = name(&format!("{}.{i}", n.layers));
            let b = &mut e.blocks[i];
            b.norm1 = import_norm(&format!("{p}.{}", n.parts[0]), &block.norm1, src)?;
            for (field, suffix) in BLOCK_LINEARS.iter().zip(&n.parts[1..7]) {
                *b.linear_mut(field) =
                    import_linear(&format!("{p}.{suffix}"), block.linear(field), src)?;
            }
            b.norm2 = import_norm(&format!("{p}.{}", n.parts[7]), &block.norm2, src)?;
        }
        e.norm = import_norm(&name(n.norm), &self.norm, src)?;
        if let Some(projection) = &self.projection {
            e.projection = Some(import_linear(n.projection, projection, src)?);
        }
        Ok(e)
    }
}

/// See [`Encoder::stored_shapes`].
struct StoredShapes {
    patch: Vec<usize>,
    cls: Vec<usize>,
    position: Vec<usize>,
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

    /// The number of classes.
    pub fn classes_count(&self) -> usize {
        self.linear.weight.dims()[1]
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
