//! A vision task's inputs: a folder of PNG or JPEG images (resized, cropped and normalized as
//! the model's `preprocessor_config.json` says), or a safetensors file of preprocessed pixels,
//! each with optional labels.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
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

/// How an image becomes model inputs, as `transformers`' image processors do it: resized (to
/// a fixed size, or its shortest edge to a length, keeping the aspect ratio), center-cropped,
/// then each byte becomes `(byte * rescale - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessing {
    /// The resize (`do_resize`, `size`, `resample`), if any.
    pub resize: Option<(Resize, FilterType)>,
    /// The center crop `(height, width)` (`do_center_crop`, `crop_size`), if any.
    pub crop: Option<(u32, u32)>,
    /// Factor from bytes to values (`rescale_factor`, 1/255 by default; 1 without rescaling).
    pub rescale: f32,
    /// Per-channel mean (`image_mean`; 0 without normalization).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (`image_std`; 1 without normalization).
    pub std: Vec<f32>,
}

/// A resize target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resize {
    /// To exactly `(height, width)`.
    Exact(u32, u32),
    /// The shortest edge to this length, the other in proportion (rounded down, as
    /// `transformers` does).
    ShortestEdge(u32),
}

impl Preprocessing {
    /// Reads `model_dir/preprocessor_config.json` for `channels` channels.
    pub fn read(model_dir: &Path, channels: usize) -> Result<Preprocessing, InputError> {
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
        let side = |v: &Value, key: &str| -> Option<u32> { v.get(key)?.as_u64().map(|n| n as u32) };
        let size = config.get("size");
        let resize = match size {
            _ if !flag("do_resize") => None,
            None => None,
            Some(Value::Number(n)) => n.as_u64().map(|n| Resize::ShortestEdge(n as u32)),
            Some(v) => match (
                side(v, "height"),
                side(v, "width"),
                side(v, "shortest_edge"),
            ) {
                (Some(h), Some(w), _) => Some(Resize::Exact(h, w)),
                (_, _, Some(e)) => Some(Resize::ShortestEdge(e)),
                _ => {
                    return Err(error(
                        &path,
                        format!("\"size\" is {v}: give height and width, or shortest_edge"),
                    ));
                }
            },
        };
        // PIL's codes, as transformers stores them: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic.
        let filter = match config.get("resample").and_then(Value::as_u64).unwrap_or(2) {
            0 => FilterType::Nearest,
            1 => FilterType::Lanczos3,
            3 => FilterType::CatmullRom,
            _ => FilterType::Triangle,
        };
        let crop = match config.get("crop_size") {
            _ if !config
                .get("do_center_crop")
                .and_then(Value::as_bool)
                .unwrap_or(false) =>
            {
                None
            }
            Some(Value::Number(n)) => n.as_u64().map(|n| (n as u32, n as u32)),
            Some(v) => side(v, "height").zip(side(v, "width")),
            None => None,
        };
        Ok(Preprocessing {
            resize: resize.map(|r| (r, filter)),
            crop,
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
/// (`[count, channels, side, side]`, preprocessed) and optionally `labels` (`[count]`), a
/// `.npy` file of such pixels (float32 or float64, C order; no labels), or a folder of `.png` /
/// `.jpg` images (read in file-name order, prepared by `preprocessing`, which is asked for only
/// then) with an optional `labels.txt`.
pub fn read_inputs(
    path: &Path,
    arch: &VisionArch,
    preprocessing: impl FnOnce() -> Result<Preprocessing, InputError>,
) -> Result<Inputs, InputError> {
    if path.is_dir() {
        read_image_folder(path, arch, &preprocessing()?)
    } else if path.extension().is_some_and(|e| e == "safetensors") {
        read_pixel_file(path, arch)
    } else if path.extension().is_some_and(|e| e == "npy") {
        read_npy(path, arch)
    } else {
        Err(error(
            path,
            "is neither a folder of .png / .jpg images nor a .safetensors or .npy file of pixels",
        ))
    }
}

/// Checks that pixels of shape `shape` fit `arch`; returns the image count.
fn check_pixels_shape(
    path: &Path,
    shape: &[usize],
    arch: &VisionArch,
) -> Result<usize, InputError> {
    let side = arch.image_size;
    if shape.len() != 4 || shape[1..] != [arch.channels, side, side] {
        return Err(error(
            path,
            format!(
                "pixels of shape {shape:?}: the model takes [count, {}, {side}, {side}]",
                arch.channels
            ),
        ));
    }
    Ok(shape[0])
}

/// A NumPy `.npy` file of float pixels (format versions 1 to 3, little-endian, C order).
fn read_npy(path: &Path, arch: &VisionArch) -> Result<Inputs, InputError> {
    let bytes = std::fs::read(path).map_err(|e| error(path, format!("cannot read it: {e}")))?;
    let bad = |what: &str| error(path, format!("not a readable .npy file: {what}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no NumPy magic"));
    }
    let (length, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(&format!("format version {v}"))),
    };
    let header = bytes
        .get(start..start + length)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("a truncated header"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr")
        .and_then(|v| v.strip_prefix('\'')?.split('\'').next())
        .ok_or_else(|| bad("no descr"))?;
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("Fortran order (save it with np.ascontiguousarray)"));
    }
    let shape: Vec<usize> = field("shape")
        .and_then(|v| v.strip_prefix('(')?.split(')').next())
        .ok_or_else(|| bad("no shape"))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("a shape that is not integers")))
        .collect::<Result<_, _>>()?;
    let count = check_pixels_shape(path, &shape, arch)?;
    let data = &bytes[start + length..];
    let n = count * arch.pixels();
    let pixels: Vec<f32> = match descr {
        "<f4" if data.len() == 4 * n => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        "<f8" if data.len() == 8 * n => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        "<f4" | "<f8" => return Err(bad("data of another length than its shape")),
        other => {
            return Err(error(
                path,
                format!("dtype {other}: give preprocessed pixels as float32 or float64"),
            ));
        }
    };
    Ok(Inputs {
        pixels,
        count,
        labels: None,
    })
}

fn read_pixel_file(path: &Path, arch: &VisionArch) -> Result<Inputs, InputError> {
    let fail = |e: CheckpointError| error(path, e.to_string());
    let file = Model::open(path).map_err(fail)?;
    let entry = file
        .get("pixels")
        .ok_or_else(|| error(path, "has no tensor \"pixels\""))?;
    let count = check_pixels_shape(path, &entry.info.shape, arch)?;
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

/// The image files a folder holds.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn read_image_folder(
    dir: &Path,
    arch: &VisionArch,
    preprocessing: &Preprocessing,
) -> Result<Inputs, InputError> {
    let listing = std::fs::read_dir(dir).map_err(|e| error(dir, format!("cannot list it: {e}")))?;
    let mut files: Vec<PathBuf> = listing
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(error(dir, "holds no .png or .jpg image"));
    }
    let mut pixels = Vec::with_capacity(files.len() * arch.pixels());
    for file in &files {
        prepare_image(file, arch, preprocessing, &mut pixels)?;
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

/// Appends the image `file`, prepared by `preprocessing` and channel-major, to `out`.
fn prepare_image(
    file: &Path,
    arch: &VisionArch,
    preprocessing: &Preprocessing,
    out: &mut Vec<f32>,
) -> Result<(), InputError> {
    let decoded = image::ImageReader::open(file)
        .map_err(|e| error(file, format!("cannot open it: {e}")))?
        .with_guessed_format()
        .map_err(|e| error(file, format!("cannot read it: {e}")))?
        .decode()
        .map_err(|e| error(file, format!("cannot decode it as PNG or JPEG: {e}")))?;
    let mut rgb = decoded.to_rgb8();
    if let Some((target, filter)) = preprocessing.resize {
        let (w, h) = rgb.dimensions();
        let (nh, nw) = match target {
            Resize::Exact(h, w) => (h, w),
            Resize::ShortestEdge(edge) if h <= w => {
                (edge, (edge as u64 * w as u64 / h as u64) as u32)
            }
            Resize::ShortestEdge(edge) => ((edge as u64 * h as u64 / w as u64) as u32, edge),
        };
        if (nw, nh) != (w, h) {
            rgb = image::imageops::resize(&rgb, nw, nh, filter);
        }
    }
    if let Some((ch, cw)) = preprocessing.crop {
        let (w, h) = rgb.dimensions();
        if ch <= h && cw <= w {
            let (top, left) = ((h - ch) / 2, (w - cw) / 2);
            rgb = image::imageops::crop_imm(&rgb, left, top, cw, ch).to_image();
        }
    }
    let side = arch.image_size as u32;
    let (w, h) = rgb.dimensions();
    if (w, h) != (side, side) {
        return Err(error(
            file,
            format!(
                "is {w}x{h} pixels after the preprocessor config's resize and crop; the model takes {side}x{side}"
            ),
        ));
    }
    if arch.channels != 3 && arch.channels != 1 {
        return Err(error(
            file,
            format!(
                "the model takes {} channels; images give 1 or 3",
                arch.channels
            ),
        ));
    }
    let grey = (arch.channels == 1).then(|| image::imageops::grayscale(&rgb));
    let n = (side * side) as usize;
    for c in 0..arch.channels {
        let (mean, std) = (preprocessing.mean[c], preprocessing.std[c]);
        let byte = |i: usize| match &grey {
            Some(g) => g.as_raw()[i],
            None => rgb.as_raw()[i * 3 + c],
        };
        out.extend((0..n).map(|i| (f32::from(byte(i)) * preprocessing.rescale - mean) / std));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::Family;

    /// A version-1 `.npy` file of `values` with dtype `descr` and `shape`.
    fn npy(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({},), }}",
            if fortran { "True" } else { "False" },
            dims.join(", ")
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn npy_pixels_are_read_and_bad_ones_named() {
        let arch = VisionArch::tiny(Family::Vit);
        let dir = std::env::temp_dir().join(format!("mergesearch-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pixels.npy");
        let values: Vec<f32> = (0..2 * arch.pixels()).map(|i| i as f32 * 0.5).collect();
        let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = [2, 3, 16, 16];
        std::fs::write(&path, npy("<f4", false, &shape, &f32_bytes)).unwrap();
        let read = read_inputs(&path, &arch, || unreachable!()).unwrap();
        assert_eq!((read.count, &read.pixels, read.labels), (2, &values, None));
        let f64_bytes: Vec<u8> = values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect();
        std::fs::write(&path, npy("<f8", false, &shape, &f64_bytes)).unwrap();
        assert_eq!(
            read_inputs(&path, &arch, || unreachable!()).unwrap().pixels,
            values
        );
        for (descr, fortran, shape, expected) in [
            ("<f4", true, [2, 3, 16, 16], "Fortran"),
            ("<f4", false, [2, 3, 8, 32], "[count, 3, 16, 16]"),
            ("<i8", false, [2, 3, 16, 16], "float32"),
        ] {
            std::fs::write(&path, npy(descr, fortran, &shape, &f64_bytes)).unwrap();
            let e = read_inputs(&path, &arch, || unreachable!())
                .unwrap_err()
                .to_string();
            assert!(e.contains("pixels.npy") && e.contains(expected), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
