//! Search spaces: a TOML file (documented in `search_spaces/README.md`) turned into a fixed list
//! of named, bounded dimensions, and the map between points of the unit cube and what a trial
//! runs — the parameters by name and, when the space has models, the [`MergePlan`].
//!
//! Every optimizer works on `[0, 1]^d`; the space owns bounds, log scales, integers, choices and
//! the structure "one weight per (expert, layer group)". Everything is checked at load: a space
//! that loads decodes every point into a valid plan.

mod fidelity;
mod file;
mod param;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde_json::{Map, Value};

pub use fidelity::{DEFAULT_REDUCTION, Fidelity};
pub use file::{BudgetSpec, ObjectiveSpec, ParamScope};
pub use param::{Domain, Scale};

use burn::prelude::Backend;

use crate::checkpoint::{Granularity, LayerGroups, Model, ModelSet};
use crate::eval::EvaluatorConfig;
use crate::merge::{MergeError, MergePlan, Merger, Method, ParamValue, Scope};

/// A space that does not load: the file, the key and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: `{key}` {problem}", file.display())]
pub struct SpaceError {
    /// The space file.
    pub file: PathBuf,
    /// The offending key (a dotted path).
    pub key: String,
    /// What is wrong and how to fix it.
    pub problem: String,
    /// Whether the file itself is wrong, or a model it names.
    pub kind: SpaceErrorKind,
}

/// What a [`SpaceError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceErrorKind {
    /// The space file is wrong.
    Invalid,
    /// A model the space names is missing, unreadable, corrupt or mismatched.
    UnreadableModels,
}

impl SpaceError {
    /// An error about `key` of the space in `file`.
    pub fn new(file: &Path, key: &str, problem: String) -> SpaceError {
        SpaceError {
            file: file.to_path_buf(),
            key: key.to_string(),
            problem,
            kind: SpaceErrorKind::Invalid,
        }
    }

    /// An error about the models that `key` of the space in `file` names.
    pub fn unreadable_models(file: &Path, key: &str, problem: String) -> SpaceError {
        SpaceError {
            kind: SpaceErrorKind::UnreadableModels,
            ..SpaceError::new(file, key, problem)
        }
    }
}

/// A point that is not one of a space's: the wrong number of coordinates, or one that is not
/// a number (a damaged or edited run record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", space.display())]
pub struct PointError {
    /// The space file.
    pub space: PathBuf,
    /// What is wrong.
    pub problem: String,
}

/// The base, the experts and the layer groups of a space with models.
#[derive(Debug, Clone, PartialEq)]
pub struct Models {
    /// The base model.
    pub base: PathBuf,
    /// The experts, in order.
    pub experts: Vec<PathBuf>,
    /// Short names of the experts (their folder or file names), used in parameter names.
    pub labels: Vec<String>,
    /// How tensors are grouped.
    pub granularity: Granularity,
    /// The layer groups' names.
    pub groups: Vec<String>,
}

impl Models {
    /// The base and task vectors on `device`, grouped at the space's granularity.
    pub fn merger<B: Backend>(&self, device: &B::Device) -> Result<Merger<B>, MergeError> {
        let set = ModelSet::open(&self.base, &self.experts)?;
        Merger::load(&set, &self.granularity, device, &ProgressBar::hidden())
    }
}

/// One dimension of the cube.
#[derive(Debug, Clone, PartialEq)]
pub struct Dimension {
    /// Its name in trial logs: `lambda`, `density[digits]`, `weight[digits,vit.encoder.layer.3]`.
    pub name: String,
    /// Type and range.
    pub domain: Domain,
    /// The initial point's coordinate.
    pub init: f64,
}

/// A searched parameter: a method parameter (or, without models, any named value) spread over
/// one or more dimensions.
#[derive(Debug, Clone, PartialEq)]
struct Searched {
    name: String,
    scope: ParamScope,
    first: usize,
}

/// A checked search space.
#[derive(Debug, Clone)]
pub struct Space {
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Its name (default: the file stem).
    pub name: String,
    /// The run seed.
    pub seed: u64,
    /// Models, when the space merges.
    pub models: Option<Models>,
    /// The methods searched over (one: fixed).
    pub methods: Vec<Method>,
    /// Fixed method parameters.
    pub fixed: BTreeMap<String, ParamValue>,
    /// The dimensions, in order.
    pub dimensions: Vec<Dimension>,
    /// The evaluators' tables.
    pub evaluators: Vec<EvaluatorConfig>,
    /// The held-out evaluators' tables (`[[heldout]]`): they score the run's chosen merge once,
    /// after the search, on data the search never sees, reporting the same objectives.
    pub heldout: Vec<EvaluatorConfig>,
    /// The objectives and their weights in the scalar score.
    pub objectives: Vec<ObjectiveSpec>,
    /// Budget, batch and workers.
    pub budget: BudgetSpec,
    /// Successive-halving rungs, when the space declares a non-empty `[fidelity]` table.
    pub fidelity: Option<Fidelity>,
    /// The method dimension's index, when several methods are searched.
    method_dimension: Option<usize>,
    searched: Vec<Searched>,
    /// The raw TOML after overrides, recorded in `run.json`.
    pub resolved: toml::Value,
}

/// A decoded point: the parameters by name and the merge plan, if the space merges.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Each dimension's value by name, plus `method` when it is searched.
    pub params: Map<String, Value>,
    /// The merge, when the space has models.
    pub plan: Option<MergePlan>,
}

impl Space {
    /// Loads and checks the space in `file` after applying `overrides` (`key.path=value`, the
    /// value in TOML syntax or a bare string). Builds the zoo first when the space uses it and
    /// it is missing (showing `progress`).
    pub fn load(
        file: &Path,
        overrides: &[String],
        progress: &ProgressBar,
    ) -> Result<Space, SpaceError> {
        file::load(file, overrides, progress)
    }

    /// Rebuilds a space from the resolved TOML a run recorded (`run.json`), for `export`.
    pub fn from_resolved(
        file: &Path,
        resolved: toml::Value,
        progress: &ProgressBar,
    ) -> Result<Space, SpaceError> {
        file::from_value(file, resolved, progress)
    }

    /// The number of dimensions.
    pub fn dim(&self) -> usize {
        self.dimensions.len()
    }

    /// The initial point (each parameter's `init`, or the centre).
    pub fn initial_point(&self) -> Vec<f64> {
        self.dimensions.iter().map(|d| d.init).collect()
    }

    /// Decodes a point of the unit cube (finite coordinates are clamped into it). A point that
    /// cannot be one of this space's (the wrong length, a coordinate that is not a number: a
    /// damaged or edited record) is an error, never a panic.
    pub fn decode(&self, point: &[f64]) -> Result<Decoded, PointError> {
        let fail = |problem: String| PointError {
            space: self.file.clone(),
            problem,
        };
        if point.len() != self.dim() {
            return Err(fail(format!(
                "the point has {} coordinates, the space {} dimensions",
                point.len(),
                self.dim()
            )));
        }
        if let Some((d, u)) = self
            .dimensions
            .iter()
            .zip(point)
            .find(|(_, u)| !u.is_finite())
        {
            return Err(fail(format!(
                "coordinate {:?} is {u}, not a number in [0, 1]",
                d.name
            )));
        }
        let params: Map<String, Value> = self
            .dimensions
            .iter()
            .zip(point)
            .map(|(d, &u)| (d.name.clone(), d.domain.decode(u)))
            .collect();
        let plan = match &self.models {
            None => None,
            Some(models) => {
                let method = match self.method_dimension {
                    Some(i) => {
                        let choice = &params[&self.dimensions[i].name];
                        choice
                            .as_str()
                            .and_then(|m| m.parse().ok())
                            .ok_or_else(|| {
                                fail(format!("the method choice {choice} is not a merge method"))
                            })?
                    }
                    None => self.methods[0],
                };
                Some(self.plan(method, models, point)?)
            }
        };
        Ok(Decoded { params, plan })
    }

    /// Encodes parameters given by dimension name (all of them) into a point.
    pub fn encode(&self, params: &Map<String, Value>) -> Result<Vec<f64>, String> {
        if let Some(unknown) = params
            .keys()
            .find(|k| !self.dimensions.iter().any(|d| &d.name == *k))
        {
            return Err(format!("{unknown:?} is not a parameter of this space"));
        }
        self.dimensions
            .iter()
            .map(|d| {
                let value = params
                    .get(&d.name)
                    .ok_or_else(|| format!("{:?} is missing", d.name))?;
                d.domain
                    .encode(value)
                    .map_err(|e| format!("{}: {e}", d.name))
            })
            .collect()
    }

    fn plan(
        &self,
        method: Method,
        models: &Models,
        point: &[f64],
    ) -> Result<MergePlan, PointError> {
        let experts = models.experts.len();
        let groups = models.groups.len();
        let mut plan = MergePlan::new(method, experts, self.seed);
        for (name, value) in &self.fixed {
            match method
                .params()
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.scope)
            {
                Some(Scope::Shared) => {
                    plan.shared.insert(name.clone(), value.clone());
                }
                Some(Scope::PerExpert) => {
                    for e in &mut plan.experts {
                        e.insert(name.clone(), value.clone());
                    }
                }
                None => {}
            }
        }
        let number = |i: usize| {
            let dimension = &self.dimensions[i];
            let value = dimension.domain.decode(point[i]);
            value.as_f64().ok_or_else(|| PointError {
                space: self.file.clone(),
                problem: format!(
                    "{:?} decodes to {value}, which is not a number a merge can take",
                    dimension.name
                ),
            })
        };
        for s in &self.searched {
            let Some(spec) = method.params().iter().find(|p| p.name == s.name) else {
                continue;
            };
            let per_group = |first: usize| -> Result<ParamValue, PointError> {
                Ok(ParamValue::PerGroup(
                    (0..groups)
                        .map(|g| number(first + g))
                        .collect::<Result<_, _>>()?,
                ))
            };
            match (spec.scope, s.scope) {
                (Scope::Shared, ParamScope::Shared) => {
                    plan.shared
                        .insert(s.name.clone(), ParamValue::Number(number(s.first)?));
                }
                (Scope::Shared, _) => {
                    plan.shared.insert(s.name.clone(), per_group(s.first)?);
                }
                (Scope::PerExpert, scope) => {
                    for (e, params) in plan.experts.iter_mut().enumerate() {
                        let value = match scope {
                            ParamScope::Shared => ParamValue::Number(number(s.first)?),
                            ParamScope::Group => per_group(s.first)?,
                            ParamScope::Expert => ParamValue::Number(number(s.first + e)?),
                            ParamScope::ExpertGroup => per_group(s.first + e * groups)?,
                        };
                        params.insert(s.name.clone(), value);
                    }
                }
            }
        }
        Ok(plan)
    }
}

/// Short, unique names for model paths: their last component, or `expert<i>` when two agree.
fn labels(paths: &[PathBuf]) -> Vec<String> {
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().to_string(),
            )
        })
        .collect();
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                format!("expert{i}")
            } else {
                n.clone()
            }
        })
        .collect()
}

/// The layer groups of `base` at `granularity`.
fn group_names(base: &Path, granularity: &Granularity) -> Result<Vec<String>, String> {
    let model = Model::open(base).map_err(|e| e.to_string())?;
    let names: Vec<&str> = model
        .tensors()
        .iter()
        .map(|t| t.info.name.as_str())
        .collect();
    Ok(LayerGroups::new(&names, granularity)
        .map_err(|e| e.to_string())?
        .names)
}
