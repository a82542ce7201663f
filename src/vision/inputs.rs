//! A vision task's inputs: a folder of PNG images (normalized as the model's
//! `preprocessor_config.json` says), or a safetensors file of preprocessed pixels, each with
//! optional labels.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::VisionArch;
use crate::checkpoint::{CheckpointError, Model};

/// The preprocessor config of a Hugging Face vision model directory.
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// The labels file of an image folder: one class index per line, in file-name order.
pub const LABELS_FILE: &str = "labels.txt";

/// A task's inputs that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct InputError {
    /// The file or folder.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

fn error(path: &Path, problem: impl Into<String>) -> InputError {
    InputError {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Images ready for the encoder, with their labels when given.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// `count * arch.pixels()` values, image after image, channel-major.
    pub pixels: Vec<f32>,
    /// The number of images.
    pub count: usize,
    /// One class index per image, when the inputs have labels.
    pub labels: Option<Vec<u32>>,
}

/// How pixel bytes become model inputs: `(byte * rescale - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    /// Factor from bytes to values (`rescale_factor`, 1/255 by default; 1 without rescaling).
    pub rescale: f32,
    /// Per-channel mean (`image_mean`; 0 without normalization).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (`image_std`; 1 without normalization).
    pub std: Vec<f32>,
}

impl Normalization {
    /// Reads `model_dir/preprocessor_config.json` for `channels` channels.
    pub fn read(model_dir: &Path, channels: usize) -> Result<Normalization, InputError> {
        let path = model_dir.join(PREPROCESSOR_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            error(
                &path,
                format!(
                    "cannot read it ({e}): image folders are normalized with the base model's image mean and std (or give the task a .safetensors file of preprocessed pixels)"
                ),
            )
        })?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| error(&path, format!("not valid JSON: {e}")))?;
        let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(true);
        let per_channel = |key: &str, default: f32| -> Result<Vec<f32>, InputError> {
            let values: Vec<f32> = match config.get(key) {
                None => vec![default],
                Some(Value::Number(n)) => vec![n.as_f64().unwrap_or(f64::NAN) as f32],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_f64().map_or(f32::NAN, |x| x as f32))
                    .collect(),
                Some(other) => {
                    return Err(error(&path, format!("{key:?} is {other}, not numbers")));
                }
            };
            match values.len() {
                1 => Ok(vec![values[0]; channels]),
                n if n == channels && values.iter().all(|v| v.is_finite()) => Ok(values),
                _ => Err(error(
                    &path,
                    format!("{key:?} has {values:?}: the model takes {channels} channels"),
                )),
            }
        };
        let rescale = match config.get("rescale_factor") {
            _ if !flag("do_rescale") => 1.0,
            None => 1.0 / 255.0,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| error(&path, format!("\"rescale_factor\" is {v}, not a number")))?
                as f32,
        };
        let normalize = flag("do_normalize");
        Ok(Normalization {
            rescale,
            mean: if normalize {
                per_channel("image_mean", 0.0)?
            } else {
                vec![0.0; channels]
            },
            std: if normalize {
                per_channel("image_std", 1.0)?
            } else {
                vec![1.0; channels]
            },
        })
    }
}

/// Reads a task's inputs at `path`: a `.safetensors` file holding `pixels`
/// (`[count, channels, side, side]`, preprocessed) and optionally `labels` (`[count]`), or a
/// folder of `.png` images (read in file-name order, normalized by `normalization`, which is
/// asked for only then) with an optional `labels.txt`.
pub fn read_inputs(
    path: &Path,
    arch: &VisionArch,
    normalization: impl FnOnce() -> Result<Normalization, InputError>,
) -> Result<Inputs, InputError> {
    if path.is_dir() {
        read_image_folder(path, arch, &normalization()?)
    } else if path.extension().is_some_and(|e| e == "safetensors") {
        read_pixel_file(path, arch)
    } else {
        Err(error(
            path,
            "is neither a folder of .png images nor a .safetensors file of pixels",
        ))
    }
}

fn read_pixel_file(path: &Path, arch: &VisionArch) -> Result<Inputs, InputError> {
    let fail = |e: CheckpointError| error(path, e.to_string());
    let file = Model::open(path).map_err(fail)?;
    let entry = file
        .get("pixels")
        .ok_or_else(|| error(path, "has no tensor \"pixels\""))?;
    let shape = entry.info.shape.clone();
    let side = arch.image_size;
    if shape.len() != 4 || shape[1..] != [arch.channels, side, side] {
        return Err(error(
            path,
            format!(
                "tensor \"pixels\" has shape {shape:?}: the model takes [count, {}, {side}, {side}]",
                arch.channels
            ),
        ));
    }
    let count = shape[0];
    let labels = match file.get("labels") {
        None => None,
        Some(e) if e.info.shape != [count] => {
            return Err(error(
                path,
                format!(
                    "tensor \"labels\" has shape {:?}, not [{count}] (one per image)",
                    e.info.shape
                ),
            ));
        }
        Some(_) => {
            let values = file.read_f32("labels").map_err(fail)?;
            Some(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| class_index(v as f64, path, i))
                    .collect::<Result<_, _>>()?,
            )
        }
    };
    Ok(Inputs {
        pixels: file.read_f32("pixels").map_err(fail)?,
        count,
        labels,
    })
}

fn class_index(value: f64, path: &Path, item: usize) -> Result<u32, InputError> {
    if value >= 0.0 && value.fract() == 0.0 && value < u32::MAX as f64 {
        Ok(value as u32)
    } else {
        Err(error(
            path,
            format!("label {item} is {value}, not a class index"),
        ))
    }
}

fn read_image_folder(
    dir: &Path,
    arch: &VisionArch,
    normalization: &Normalization,
) -> Result<Inputs, InputError> {
    let listing = std::fs::read_dir(dir).map_err(|e| error(dir, format!("cannot list it: {e}")))?;
    let mut files: Vec<PathBuf> = listing
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(error(dir, "holds no .png image"));
    }
    let mut pixels = Vec::with_capacity(files.len() * arch.pixels());
    for file in &files {
        decode_png(file, arch, normalization, &mut pixels)?;
    }
    let labels_path = dir.join(LABELS_FILE);
    let labels = if labels_path.exists() {
        let text = std::fs::read_to_string(&labels_path)
            .map_err(|e| error(&labels_path, format!("cannot read it: {e}")))?;
        let labels: Vec<u32> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                l.trim()
                    .parse::<f64>()
                    .map_err(|_| {
                        error(
                            &labels_path,
                            format!("line {}: {l:?} is not a class index", i + 1),
                        )
                    })
                    .and_then(|v| class_index(v, &labels_path, i))
            })
            .collect::<Result<_, _>>()?;
        if labels.len() != files.len() {
            return Err(error(
                &labels_path,
                format!(
                    "has {} labels for {} images (one per image, in file-name order)",
                    labels.len(),
                    files.len()
                ),
            ));
        }
        Some(labels)
    } else {
        None
    };
    Ok(Inputs {
        pixels,
        count: files.len(),
        labels,
    })
}

/// Appends the PNG image `file`, channel-major and normalized, to `out`.
fn decode_png(
    file: &Path,
    arch: &VisionArch,
    normalization: &Normalization,
    out: &mut Vec<f32>,
) -> Result<(), InputError> {
    let fail = |e: &dyn std::fmt::Display| error(file, format!("cannot decode it as PNG: {e}"));
    let reader = File::open(file).map_err(|e| error(file, format!("cannot open it: {e}")))?;
    let mut decoder = png::Decoder::new(BufReader::new(reader));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| fail(&e))?;
    let mut buffer = vec![
        0u8;
        reader
            .output_buffer_size()
            .ok_or_else(|| fail(&"too large"))?
    ];
    let info = reader.next_frame(&mut buffer).map_err(|e| fail(&e))?;
    let side = arch.image_size as u32;
    if (info.width, info.height) != (side, side) {
        return Err(error(
            file,
            format!(
                "is {}x{} pixels; the model takes {side}x{side} (resize and crop it first)",
                info.width, info.height
            ),
        ));
    }
    let samples = info.color_type.samples();
    let colors = if samples >= 3 { 3 } else { 1 };
    if colors != arch.channels && !(colors == 1 && arch.channels == 3) {
        return Err(error(
            file,
            format!(
                "has {colors} color channel(s); the model takes {}",
                arch.channels
            ),
        ));
    }
    let n = (side * side) as usize;
    for c in 0..arch.channels {
        let source = if colors == 1 { 0 } else { c };
        let (mean, std) = (normalization.mean[c], normalization.std[c]);
        out.extend((0..n).map(|i| {
            (f32::from(buffer[i * samples + source]) * normalization.rescale - mean) / std
        }));
    }
    Ok(())
}
