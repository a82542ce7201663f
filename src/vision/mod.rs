//! Vision encoders in Hugging Face layout: ViT (`ViTModel`, `ViTForImageClassification`) and
//! CLIP's vision tower (`CLIPVisionModel`, `CLIPVisionModelWithProjection`, `CLIPModel`). A
//! directory of `config.json` and safetensors is read into the same burn encoder the zoo uses
//! ([`crate::zoo::model::Encoder`]), configured from the config, and an encoder is written back
//! in the layout `transformers` reads.

pub mod benchmark;
pub mod hf;
pub mod inputs;

/// The transformer families whose vision encoders are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// ViT: post-embedding blocks, a final layer norm over the tokens, the class token's
    /// features.
    Vit,
    /// CLIP's vision tower: a layer norm before the first block, the class token normalized
    /// after the last (`post_layernorm`) and, when present, projected (`visual_projection`).
    Clip,
}

/// The nonlinearity between a block's two MLP layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * Phi(x)` with the exact normal CDF (`gelu` in `transformers`).
    Gelu,
    /// `x * sigmoid(1.702 x)` (`quick_gelu`, CLIP's).
    QuickGelu,
}

/// The shape of a ViT-style encoder, as a Hugging Face config gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionArch {
    /// ViT or CLIP.
    pub family: Family,
    /// Token width (`hidden_size`).
    pub width: usize,
    /// Transformer blocks (`num_hidden_layers`).
    pub depth: usize,
    /// Attention heads (`num_attention_heads`); `width` must be a multiple.
    pub heads: usize,
    /// Hidden width of each block's MLP (`intermediate_size`).
    pub intermediate: usize,
    /// Side of a square patch in pixels (`patch_size`).
    pub patch: usize,
    /// Side of the square input image in pixels (`image_size`), a multiple of `patch`.
    pub image_size: usize,
    /// Input channels (`num_channels`).
    pub channels: usize,
    /// Every layer norm's epsilon (`layer_norm_eps`).
    pub eps: f64,
    /// The MLP's nonlinearity (`hidden_act`).
    pub activation: Activation,
    /// Whether query, key and value have biases (ViT's `qkv_bias`; CLIP's always do).
    pub qkv_bias: bool,
    /// Output width of CLIP's `visual_projection`, when the checkpoint has one.
    pub projection: Option<usize>,
}

impl VisionArch {
    /// A tiny encoder of `family` (width 32, 2 blocks of 4 heads, MLP 48, 3-channel 16-pixel
    /// images in 4-pixel patches; CLIP with a 24-wide projection), as `transformers` would
    /// configure it: test models made without downloading anything.
    pub fn tiny(family: Family) -> VisionArch {
        let vit = family == Family::Vit;
        VisionArch {
            family,
            width: 32,
            depth: 2,
            heads: 4,
            intermediate: 48,
            patch: 4,
            image_size: 16,
            channels: 3,
            eps: if vit { 1e-12 } else { 1e-5 },
            activation: if vit {
                Activation::Gelu
            } else {
                Activation::QuickGelu
            },
            qkv_bias: true,
            projection: (!vit).then_some(24),
        }
    }

    /// Tokens per image: one per patch and the class token.
    pub fn tokens(&self) -> usize {
        (self.image_size / self.patch).pow(2) + 1
    }

    /// Width of the features the encoder returns: the projection's, else the tokens'.
    pub fn feature_width(&self) -> usize {
        self.projection.unwrap_or(self.width)
    }

    /// Values per input image: `channels x image_size x image_size`, channel-major.
    pub fn pixels(&self) -> usize {
        self.channels * self.image_size * self.image_size
    }
}
