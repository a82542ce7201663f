//! `transformers` vision encoders on disk: a model directory's `config.json` read into a
//! [`VisionArch`], its safetensors into an [`Encoder`], and an encoder written back as a
//! directory that `transformers` loads (`ViTModel`, `CLIPVisionModelWithProjection`).
//!
//! Only the encoder's tensors are read: a checkpoint may hold more (ViT's pooler and classifier,
//! CLIP's text tower), which are left alone. Every tensor the encoder needs must be there with
//! the shape the config implies; errors name the directory, the tensor or the config key.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rand_distr::{Distribution, Normal};
use serde_json::{Value, json};

use super::{Activation, Family, VisionArch};
use crate::checkpoint::{CheckpointError, Model};
use crate::rng::Rng;
use crate::zoo::build::write_model;
use crate::zoo::model::{Encoder, LoadError, NamedTensor, Naming, TensorSource};

/// The config file of a Hugging Face model directory.
pub const CONFIG_FILE: &str = "config.json";

/// A vision model directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// `config.json` is missing, malformed or describes something else.
    #[error("{}: {problem}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The safetensors files cannot be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A tensor the encoder needs is missing or misshapen.
    #[error("{}: {source}", dir.display())]
    Weights {
        /// The model directory.
        dir: PathBuf,
        /// The tensor and what is wrong with it.
        source: LoadError,
    },
}

/// Reads the encoder architecture from `dir/config.json`: a ViT (`model_type` `vit`), a CLIP
/// vision tower (`clip_vision_model`) or a whole CLIP model (`clip`, whose `vision_config` is
/// read). Keys missing from the file take `transformers`' defaults for that model type. The
/// projection is not read here: whether there is one depends on the checkpoint (see
/// [`load_encoder`]).
pub fn read_arch(dir: &Path) -> Result<VisionArch, VisionError> {
    let path = dir.join(CONFIG_FILE);
    let fail = |problem: String| VisionError::Config {
        path: path.clone(),
        problem,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        fail(format!(
            "cannot read it ({e}): a Hugging Face model directory holds its config.json"
        ))
    })?;
    let config: Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("no \"model_type\"".into()))?;
    let (family, keys) = match model_type {
        "vit" => (Family::Vit, &config),
        "clip_vision_model" => (Family::Clip, &config),
        "clip" => (
            Family::Clip,
            config
                .get("vision_config")
                .ok_or_else(|| fail("a \"clip\" config without \"vision_config\"".into()))?,
        ),
        other => {
            return Err(fail(format!(
                "model_type {other:?} is not a supported vision encoder (vit, clip, clip_vision_model)"
            )));
        }
    };
    let vit = family == Family::Vit;
    let size = |key: &str, vit_default: usize, clip_default: usize| -> Result<usize, VisionError> {
        match keys.get(key) {
            None => Ok(if vit { vit_default } else { clip_default }),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| fail(format!("{key:?} is {v}, not a positive integer"))),
        }
    };
    let eps = match keys.get("layer_norm_eps") {
        None => {
            if vit {
                1e-12
            } else {
                1e-5
            }
        }
        Some(v) => v
            .as_f64()
            .filter(|e| *e > 0.0)
            .ok_or_else(|| fail(format!("\"layer_norm_eps\" is {v}, not a positive number")))?,
    };
    let act = keys
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or(if vit { "gelu" } else { "quick_gelu" });
    let activation = match act {
        "gelu" => Activation::Gelu,
        "quick_gelu" => Activation::QuickGelu,
        other => {
            return Err(fail(format!(
                "\"hidden_act\" {other:?} is not supported (gelu, quick_gelu)"
            )));
        }
    };
    let arch = VisionArch {
        family,
        width: size("hidden_size", 768, 768)?,
        depth: size("num_hidden_layers", 12, 12)?,
        heads: size("num_attention_heads", 12, 12)?,
        intermediate: size("intermediate_size", 3072, 3072)?,
        patch: size("patch_size", 16, 32)?,
        image_size: size("image_size", 224, 224)?,
        channels: size("num_channels", 3, 3)?,
        eps,
        activation,
        qkv_bias: !vit
            || keys
                .get("qkv_bias")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        projection: None,
    };
    if !arch.width.is_multiple_of(arch.heads) {
        return Err(fail(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            arch.width, arch.heads
        )));
    }
    if !arch.image_size.is_multiple_of(arch.patch) {
        return Err(fail(format!(
            "image_size {} is not a multiple of patch_size {}",
            arch.image_size, arch.patch
        )));
    }
    Ok(arch)
}

/// Where the encoder's tensors are in `model`: ViT's under `vit.` or at the top level, CLIP's
/// under `vision_model.`.
fn naming_of(model: &Model, family: Family, dir: &Path) -> Result<Naming, VisionError> {
    let missing = |name: &str, what: &str| VisionError::Weights {
        dir: dir.to_path_buf(),
        source: LoadError {
            name: name.to_string(),
            problem: format!("missing: the config says {what}, and its checkpoint lacks this"),
        },
    };
    match family {
        Family::Vit => ["vit.", ""]
            .into_iter()
            .find(|p| model.get(&format!("{p}embeddings.cls_token")).is_some())
            .map(|p| Naming::Vit {
                prefix: p.to_string(),
            })
            .ok_or_else(|| missing("embeddings.cls_token", "ViT")),
        Family::Clip => model
            .get("vision_model.embeddings.class_embedding")
            .map(|_| Naming::Clip)
            .ok_or_else(|| missing("vision_model.embeddings.class_embedding", "CLIP")),
    }
}

/// The architecture of the model directory `dir`, its projection included (read from the
/// checkpoint's header, opened as `model`).
fn arch_of(dir: &Path, model: &Model) -> Result<VisionArch, VisionError> {
    let mut arch = read_arch(dir)?;
    if arch.family == Family::Clip {
        arch.projection = model
            .get("visual_projection.weight")
            .map(|e| e.info.shape[0]);
    }
    Ok(arch)
}

/// The architecture of the `transformers` model directory `dir` as [`load_encoder`] builds it
/// (with CLIP's projection when the checkpoint has one), without reading its weights.
pub fn read_model_arch(dir: &Path) -> Result<VisionArch, VisionError> {
    arch_of(dir, &Model::open(dir)?)
}

/// Loads the vision encoder of the `transformers` model directory `dir` onto `device`, with its
/// architecture (CLIP's `visual_projection` is used when the checkpoint has it).
pub fn load_encoder<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(VisionArch, Encoder<B>), VisionError> {
    let model = Model::open(dir)?;
    let arch = arch_of(dir, &model)?;
    let naming = naming_of(&model, arch.family, dir)?;
    let template = Encoder::template(&arch, naming, device);
    let mut tensors = Vec::new();
    for (name, _, _) in template.export() {
        if let Some(entry) = model.get(&name) {
            let shape = entry.info.shape.clone();
            let values = model.read_f32(&name)?;
            let n = values.len();
            let t = Tensor::<B, 1>::from_data(TensorData::new(values, [n]), device);
            tensors.push((name, shape, t));
        }
    }
    let encoder = template
        .import(&TensorSource::new(tensors))
        .map_err(|source| VisionError::Weights {
            dir: dir.to_path_buf(),
            source,
        })?;
    Ok((arch, encoder))
}

/// Writes `encoder` (of architecture `arch`, named for `transformers`) to `dir` as a model
/// directory that `transformers` loads: `ViTModel` or `CLIPVisionModelWithProjection` (when
/// `arch` has a projection, else `CLIPVisionModel`), float32 safetensors and `config.json`.
pub fn write_encoder<B: Backend>(
    encoder: &Encoder<B>,
    arch: &VisionArch,
    dir: &Path,
) -> Result<(), VisionError> {
    write_model(dir, encoder.export())?;
    let path = dir.join(CONFIG_FILE);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&config_of(arch)).unwrap_or_default(),
    )
    .map_err(|e| VisionError::Config {
        path: path.clone(),
        problem: format!("cannot write it: {e}"),
    })
}

/// The `config.json` of an encoder of architecture `arch`.
fn config_of(arch: &VisionArch) -> Value {
    let act = match arch.activation {
        Activation::Gelu => "gelu",
        Activation::QuickGelu => "quick_gelu",
    };
    let mut config = json!({
        "hidden_size": arch.width,
        "num_hidden_layers": arch.depth,
        "num_attention_heads": arch.heads,
        "intermediate_size": arch.intermediate,
        "patch_size": arch.patch,
        "image_size": arch.image_size,
        "num_channels": arch.channels,
        "layer_norm_eps": arch.eps,
        "hidden_act": act,
        "torch_dtype": "float32",
    });
    let extra = match arch.family {
        Family::Vit => json!({
            "architectures": ["ViTModel"],
            "model_type": "vit",
            "qkv_bias": arch.qkv_bias,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        }),
        Family::Clip => json!({
            "architectures": [if arch.projection.is_some() {
                "CLIPVisionModelWithProjection"
            } else {
                "CLIPVisionModel"
            }],
            "model_type": "clip_vision_model",
            "projection_dim": arch.projection.unwrap_or(arch.width),
            "attention_dropout": 0.0,
        }),
    };
    if let (Value::Object(config), Value::Object(extra)) = (&mut config, extra) {
        config.extend(extra);
    }
    config
}

/// The naming `transformers` gives an encoder of `family` saved on its own (`ViTModel`,
/// `CLIPVisionModel...`).
pub fn standalone_naming(family: Family) -> Naming {
    match family {
        Family::Vit => Naming::Vit {
            prefix: String::new(),
        },
        Family::Clip => Naming::Clip,
    }
}

/// An encoder of architecture `arch` with random weights from `seed` (normal, standard
/// deviation 0.05; layer norms' scales around 1), named as `transformers` saves it on its own:
/// test models and demos, made without downloading anything.
pub fn random_encoder<B: Backend>(arch: &VisionArch, seed: u64, device: &B::Device) -> Encoder<B> {
    let template = Encoder::template(arch, standalone_naming(arch.family), device);
    let mut rng = Rng::new(seed);
    let noise = Normal::new(0.0f32, 0.05).expect("a valid standard deviation");
    let tensors: Vec<NamedTensor<B>> = template
        .export()
        .into_iter()
        .map(|(name, shape, _)| {
            let n: usize = shape.iter().product();
            let scale = name.contains("norm") && name.ends_with(".weight");
            let values: Vec<f32> = (0..n)
                .map(|_| noise.sample(&mut rng) + if scale { 1.0 } else { 0.0 })
                .collect();
            let t = Tensor::from_data(TensorData::new(values, [n]), device);
            (name, shape, t)
        })
        .collect();
    template
        .import(&TensorSource::new(tensors))
        .expect("the template's own tensors fit it")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    fn images(arch: &VisionArch, n: usize) -> Tensor<B, 2> {
        Tensor::random(
            [n, arch.pixels()],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &Default::default(),
        )
    }

    #[test]
    fn written_models_read_back_with_their_architecture_and_features() {
        let tmp = std::env::temp_dir().join(format!("mergesearch-vision-{}", std::process::id()));
        for family in [Family::Vit, Family::Clip] {
            let arch = VisionArch::tiny(family);
            let encoder = random_encoder::<B>(&arch, 7, &Default::default());
            let dir = tmp.join(format!("{family:?}"));
            write_encoder(&encoder, &arch, &dir).unwrap();
            let (read, loaded) = load_encoder::<B>(&dir, &Default::default()).unwrap();
            assert_eq!(read, arch);
            let x = images(&arch, 3);
            let (a, b) = (encoder.forward(x.clone()), loaded.forward(x));
            assert_eq!(a.dims(), [3, arch.feature_width()]);
            let diff = (a - b).abs().max().into_scalar();
            assert!(diff < 1e-5, "{family:?}: features differ by {diff}");
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn unit_features_have_length_one() {
        let arch = VisionArch::tiny(Family::Clip);
        let encoder = random_encoder::<B>(&arch, 3, &Default::default()).with_unit_features();
        let x = Tensor::<B, 2>::random(
            [4, arch.pixels()],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &Default::default(),
        );
        let lengths: Vec<f32> = encoder
            .forward(x)
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .into_data()
            .to_vec()
            .unwrap();
        assert!(
            lengths.iter().all(|l| (l - 1.0).abs() < 1e-5),
            "{lengths:?}"
        );
    }

    #[test]
    fn tensors_are_named_and_shaped_as_transformers_saves_them() {
        let names = |family| -> Vec<(String, Vec<usize>)> {
            random_encoder::<B>(&VisionArch::tiny(family), 1, &Default::default())
                .export()
                .into_iter()
                .map(|(n, s, _)| (n, s))
                .collect()
        };
        let vit = names(Family::Vit);
        for (name, shape) in [
            (
                "embeddings.patch_embeddings.projection.weight",
                vec![32, 3, 4, 4],
            ),
            ("embeddings.cls_token", vec![1, 1, 32]),
            ("embeddings.position_embeddings", vec![1, 17, 32]),
            (
                "encoder.layer.1.attention.attention.query.weight",
                vec![32, 32],
            ),
            ("encoder.layer.1.intermediate.dense.weight", vec![48, 32]),
            ("layernorm.bias", vec![32]),
        ] {
            assert!(
                vit.contains(&(name.to_string(), shape.clone())),
                "ViT {name} {shape:?}"
            );
        }
        let clip = names(Family::Clip);
        for (name, shape) in [
            (
                "vision_model.embeddings.patch_embedding.weight",
                vec![32, 3, 4, 4],
            ),
            ("vision_model.embeddings.class_embedding", vec![32]),
            (
                "vision_model.embeddings.position_embedding.weight",
                vec![17, 32],
            ),
            ("vision_model.pre_layrnorm.weight", vec![32]),
            (
                "vision_model.encoder.layers.1.self_attn.out_proj.bias",
                vec![32],
            ),
            ("vision_model.encoder.layers.0.mlp.fc2.weight", vec![32, 48]),
            ("vision_model.post_layernorm.weight", vec![32]),
            ("visual_projection.weight", vec![24, 32]),
        ] {
            assert!(
                clip.contains(&(name.to_string(), shape.clone())),
                "CLIP {name} {shape:?}"
            );
        }
        assert!(
            !clip
                .iter()
                .any(|(n, _)| n == "vision_model.embeddings.patch_embedding.bias"),
            "CLIP's patch embedding has no bias"
        );
    }

    #[test]
    fn bad_configs_and_checkpoints_are_named() {
        let tmp =
            std::env::temp_dir().join(format!("mergesearch-vision-bad-{}", std::process::id()));
        let arch = VisionArch::tiny(Family::Vit);
        let dir = tmp.join("vit");
        write_encoder(
            &random_encoder::<B>(&arch, 2, &Default::default()),
            &arch,
            &dir,
        )
        .unwrap();
        let config = dir.join(CONFIG_FILE);
        let original = std::fs::read_to_string(&config).unwrap();
        let err = |text: &str| {
            std::fs::write(&config, text).unwrap();
            load_encoder::<B>(&dir, &Default::default())
                .unwrap_err()
                .to_string()
        };
        let e = err(&original.replace("\"gelu\"", "\"swish\""));
        assert!(e.contains("config.json") && e.contains("swish"), "{e}");
        let e = err(&original.replace("\"vit\"", "\"bert\""));
        assert!(
            e.contains("\"bert\"") && e.contains("clip_vision_model"),
            "{e}"
        );
        let e = err(&original.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5"));
        assert!(e.contains("num_attention_heads"), "{e}");
        // A config whose width the weights do not have: the tensor is named with both shapes.
        let e = err(&original.replace("\"intermediate_size\": 48", "\"intermediate_size\": 64"));
        assert!(
            e.contains("encoder.layer.0.intermediate.dense.weight") && e.contains("[48, 32]"),
            "{e}"
        );
        std::fs::remove_file(&config).unwrap();
        let e = load_encoder::<B>(&dir, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json"), "{e}");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
