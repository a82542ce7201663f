//! A benchmark of your own vision tasks: a TOML file listing, per task, its classification head
//! and its images. With a base model in Hugging Face layout it gives the same scorer the zoo
//! gives ([`ZooScorer`]), so the `vision` evaluator and AdaMerging run on it as on the zoo.
//!
//! ```toml
//! unit_features = false              # true: features scaled to unit length (CLIP zero-shot heads)
//!
//! [[tasks]]
//! name = "cars"
//! head = "heads/cars.safetensors"     # "weight" [classes, features], optional "bias" [classes]
//! test = "data/cars/test"             # a folder of .png (optional labels.txt) or pixels.safetensors
//! validation = "data/cars/validation" # optional
//! ```
//!
//! Relative paths are relative to the benchmark file's folder.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::Deserialize;

use super::hf::{VisionError, load_encoder, read_model_arch};
use super::inputs::{Inputs, Preprocessing, read_inputs};
use crate::checkpoint::Model;
use crate::rng::Rng;
use crate::zoo::evaluate::{TaskSet, ZooScorer};
use crate::zoo::model::{Head, TensorSource};
use crate::zoo::tasks::{Dataset, Split};

/// One task of a benchmark file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionTask {
    /// The task's name (its scores are named after it).
    pub name: String,
    /// Its head: a safetensors file with `weight` `[classes, features]` and optional `bias`.
    pub head: PathBuf,
    /// Its test inputs.
    pub test: PathBuf,
    /// Its validation inputs, if any.
    #[serde(default)]
    pub validation: Option<PathBuf>,
}

/// A benchmark file, its paths resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionBenchmark {
    /// The file.
    pub file: PathBuf,
    /// Whether the heads see the features scaled to unit length (`unit_features = true`: CLIP
    /// zero-shot heads, whose logits are `logit_scale` times cosines).
    pub unit_features: bool,
    /// Its tasks, in order.
    pub tasks: Vec<VisionTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BenchmarkFile {
    #[serde(default)]
    unit_features: bool,
    tasks: Vec<VisionTask>,
}

/// A benchmark that cannot be used: its file, a task's head or inputs, or the base model.
#[derive(Debug, thiserror::Error)]
pub enum BenchmarkError {
    /// The benchmark file, or one of its tasks' files.
    #[error("{}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The base model.
    #[error(transparent)]
    Model(#[from] VisionError),
}

fn file_error(path: &Path, problem: impl Into<String>) -> BenchmarkError {
    BenchmarkError::File {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

impl VisionBenchmark {
    /// Reads the benchmark file at `file`.
    pub fn read(file: &Path) -> Result<VisionBenchmark, BenchmarkError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| file_error(file, format!("cannot read it: {e}")))?;
        let parsed: BenchmarkFile =
            toml::from_str(&text).map_err(|e| file_error(file, e.to_string()))?;
        if parsed.tasks.is_empty() {
            return Err(file_error(file, "lists no [[tasks]]"));
        }
        let folder = file.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| folder.join(p);
        let mut names = std::collections::BTreeSet::new();
        let tasks = parsed
            .tasks
            .into_iter()
            .map(|t| {
                if !names.insert(t.name.clone()) {
                    return Err(file_error(
                        file,
                        format!("task {:?} is listed twice", t.name),
                    ));
                }
                Ok(VisionTask {
                    head: resolve(&t.head),
                    test: resolve(&t.test),
                    validation: t.validation.as_deref().map(resolve),
                    name: t.name,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(VisionBenchmark {
            file: file.to_path_buf(),
            unit_features: parsed.unit_features,
            tasks,
        })
    }

    /// The scorer of the encoder of `base` (a Hugging Face model directory) with each task's
    /// head on its inputs of `split`.
    pub fn scorer<B: Backend>(
        &self,
        base: &Path,
        split: Split,
        device: &B::Device,
    ) -> Result<ZooScorer<B>, BenchmarkError> {
        self.read_tasks(base, split)?.scorer(device)
    }

    /// Each task's head and inputs of `split`, read and checked against the encoder of `base`
    /// once, for scorers on any backend (decoding images is the costly part).
    pub fn read_tasks(&self, base: &Path, split: Split) -> Result<TaskInputs, BenchmarkError> {
        let arch = read_model_arch(base)?;
        let mut tasks = TaskInputs {
            base: base.to_path_buf(),
            split,
            unit_features: self.unit_features,
            names: Vec::new(),
            labelled: Vec::new(),
            heads: Vec::new(),
            data: Vec::new(),
        };
        for task in &self.tasks {
            let head = read_head(&task.name, &task.head, arch.feature_width())?;
            let path = match split {
                Split::Test => &task.test,
                Split::Validation => task.validation.as_ref().ok_or_else(|| {
                    file_error(
                        &self.file,
                        format!(
                            "task {:?} has no validation inputs (give validation = ...)",
                            task.name
                        ),
                    )
                })?,
                Split::Train => {
                    return Err(file_error(&self.file, "tasks have no training split"));
                }
            };
            let Inputs {
                pixels,
                count,
                labels,
            } = read_inputs(path, &arch, || Preprocessing::read(base, arch.channels))
                .map_err(|e| file_error(&e.path, format!("task {:?}: {}", task.name, e.problem)))?;
            let classes = head.classes;
            if let Some(bad) = labels.iter().flatten().find(|&&l| l as usize >= classes) {
                return Err(file_error(
                    path,
                    format!(
                        "task {:?}: label {bad} is not below the head's {classes} classes",
                        task.name
                    ),
                ));
            }
            tasks.names.push(task.name.clone());
            tasks.labelled.push(labels.is_some());
            tasks.heads.push(head);
            tasks.data.push(Dataset {
                images: pixels,
                labels: labels.unwrap_or_else(|| vec![0; count]),
                classes,
            });
        }
        Ok(tasks)
    }
}

/// A benchmark's tasks of one split, read on the host (see [`VisionBenchmark::read_tasks`]).
pub struct TaskInputs {
    base: PathBuf,
    split: Split,
    unit_features: bool,
    names: Vec<String>,
    labelled: Vec<bool>,
    heads: Vec<HeadWeights>,
    data: Vec<Dataset>,
}

impl TaskInputs {
    /// The scorer of the base's encoder with these tasks, on `device`.
    pub fn scorer<B: Backend>(&self, device: &B::Device) -> Result<ZooScorer<B>, BenchmarkError> {
        let (arch, template) = load_encoder::<B>(&self.base, device)?;
        let template = if self.unit_features {
            template.with_unit_features()
        } else {
            template
        };
        let tasks = TaskSet {
            names: self.names.clone(),
            labelled: self.labelled.clone(),
            heads: self.heads.iter().map(|h| h.head(device)).collect(),
            data: self.data.clone(),
            pixels: arch.pixels(),
        };
        Ok(ZooScorer::from_tasks(template, tasks, self.split, device))
    }
}

/// A task's linear head as read from its file.
struct HeadWeights {
    task: String,
    /// `[classes, width]`, row-major.
    weight: Vec<f32>,
    /// `[classes]`.
    bias: Vec<f32>,
    classes: usize,
    width: usize,
}

impl HeadWeights {
    /// The head on `device`.
    fn head<B: Backend>(&self, device: &B::Device) -> Head<B> {
        let tensor = |values: &[f32]| {
            Tensor::<B, 1>::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
        };
        let (task, classes) = (&self.task, self.classes);
        let source = TensorSource::new([
            (
                format!("heads.{task}.weight"),
                vec![classes, self.width],
                tensor(&self.weight),
            ),
            (
                format!("heads.{task}.bias"),
                vec![classes],
                tensor(&self.bias),
            ),
        ]);
        Head::new(self.width, classes, &mut Rng::new(0), device)
            .import(task, &source)
            .expect("a head's weights were checked against its shape when read")
    }
}

/// The head of task `task` in the safetensors file `path`, for features of width `width`.
fn read_head(task: &str, path: &Path, width: usize) -> Result<HeadWeights, BenchmarkError> {
    let fail = |problem: String| file_error(path, format!("task {task:?}'s head: {problem}"));
    let file = Model::open(path).map_err(|e| fail(e.to_string()))?;
    let weight = file
        .get("weight")
        .ok_or_else(|| fail("has no tensor \"weight\" ([classes, features])".into()))?;
    let shape = weight.info.shape.clone();
    if shape.len() != 2 || shape[1] != width {
        return Err(fail(format!(
            "\"weight\" has shape {shape:?}; the encoder gives {width} features, so it must be [classes, {width}]"
        )));
    }
    let classes = shape[0];
    let read = |name: &str| file.read_f32(name).map_err(|e| fail(e.to_string()));
    let bias = match file.get("bias") {
        None => vec![0.0; classes],
        Some(b) if b.info.shape != [classes] => {
            return Err(fail(format!(
                "\"bias\" has shape {:?}, not [{classes}]",
                b.info.shape
            )));
        }
        Some(_) => read("bias")?,
    };
    Ok(HeadWeights {
        task: task.to_string(),
        weight: read("weight")?,
        bias,
        classes,
        width,
    })
}
