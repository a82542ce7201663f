//! Reading a space file: the TOML schema, `--set` overrides, and every check that makes a loaded
//! space safe to decode.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fidelity::Fidelity;
use super::param::{Domain, Scale};
use super::{Dimension, Models, Searched, Space, SpaceError, group_names, labels};
use crate::checkpoint::Granularity;
use crate::eval::{EvaluatorConfig, ensure_built};
use crate::merge::{Kind, Method, ParamValue, Scope};
use crate::zoo::build::read_manifest;

/// How many values a searched merge parameter has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamScope {
    /// One value for the whole merge.
    Shared,
    /// One per layer group, shared by the experts.
    Group,
    /// One per expert.
    Expert,
    /// One per expert and layer group.
    ExpertGroup,
}

/// An objective of the scalar score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSpec {
    /// The objective's name, as an evaluator reports it.
    pub name: String,
    /// Its weight in the weighted mean (directions are applied first: minimized objectives
    /// count negatively).
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// How long a run goes and how it is batched.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Trials to run.
    #[serde(default)]
    pub trials: Option<usize>,
    /// Wall-clock seconds after which no new batch starts.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Points per batch (default: the optimizer's own, e.g. a CMA-ES generation).
    #[serde(default)]
    pub batch: Option<usize>,
    /// Trials evaluated at once.
    #[serde(default)]
    pub workers: Option<usize>,
    /// One worker per listed GPU (instead of `workers`): its merger on that GPU when the run's
    /// device is a GPU, and its external programs started with `CUDA_VISIBLE_DEVICES` set to it.
    #[serde(default)]
    pub gpus: Option<Vec<usize>>,
    /// Failed trials in a row that stop the run (default 10; 0 never stops).
    #[serde(default)]
    pub max_failures: Option<usize>,
    /// Items scored in all (over every trial, evaluator and fidelity rung) after which no new
    /// batch starts: a budget in evaluation cost, for evaluators that count their items.
    #[serde(default)]
    pub items: Option<u64>,
    /// Seconds spent in evaluators in all after which no new batch starts.
    #[serde(default)]
    pub eval_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    models: Option<ModelsFile>,
    #[serde(default)]
    merge: Option<MergeFile>,
    #[serde(default)]
    params: Vec<ParamFile>,
    evaluators: Vec<EvaluatorConfig>,
    #[serde(default)]
    heldout: Vec<EvaluatorConfig>,
    objectives: Vec<ObjectiveSpec>,
    #[serde(default)]
    budget: BudgetSpec,
    #[serde(default)]
    fidelity: Option<Fidelity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    #[serde(default)]
    zoo: Option<PathBuf>,
    #[serde(default)]
    base: Option<PathBuf>,
    #[serde(default)]
    experts: Vec<PathBuf>,
    /// Your own vision tasks (a [`crate::vision::benchmark`] file), for AdaMerging.
    #[serde(default)]
    tasks: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeFile {
    method: MethodChoice,
    #[serde(default)]
    granularity: Granularity,
    #[serde(default)]
    fixed: BTreeMap<String, ParamValue>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MethodChoice {
    One(String),
    Several(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamFile {
    name: String,
    #[serde(default)]
    scope: Option<ParamScope>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    low: Option<toml::Value>,
    #[serde(default)]
    high: Option<toml::Value>,
    #[serde(default)]
    values: Option<Vec<toml::Value>>,
    #[serde(default)]
    scale: Scale,
    #[serde(default)]
    init: Option<toml::Value>,
}

/// Loads, overrides and checks the space in `file`.
pub fn load(
    file: &Path,
    overrides: &[String],
    progress: &ProgressBar,
) -> Result<Space, SpaceError> {
    let fail = |key: &str, problem: String| SpaceError::new(file, key, problem);
    let text = std::fs::read_to_string(file)
        .map_err(|e| fail("(file)", format!("cannot be read: {e}")))?;
    let mut raw: toml::Value =
        toml::from_str(&text).map_err(|e| fail("(file)", format!("is not valid TOML: {e}")))?;
    for assignment in overrides {
        apply_override(&mut raw, assignment).map_err(|e| fail(assignment, e))?;
    }
    from_value(file, raw, progress)
}

/// Checks a space already parsed (and overridden) from `file`.
pub fn from_value(
    file: &Path,
    raw: toml::Value,
    progress: &ProgressBar,
) -> Result<Space, SpaceError> {
    let fail = |key: &str, problem: String| SpaceError::new(file, key, problem);
    let spec: SpaceFile = raw.clone().try_into().map_err(|e: toml::de::Error| {
        fail(
            "(schema)",
            format!("{} (see search_spaces/README.md)", e.message()),
        )
    })?;
    if spec.evaluators.is_empty() {
        return Err(fail(
            "evaluators",
            "is empty: declare at least one [[evaluators]] table".into(),
        ));
    }
    if spec.objectives.is_empty() {
        return Err(fail(
            "objectives",
            "is empty: name at least one objective an evaluator reports".into(),
        ));
    }
    for (i, o) in spec.objectives.iter().enumerate() {
        if !(o.weight.is_finite() && o.weight >= 0.0) {
            return Err(fail(
                &format!("objectives[{i}].weight"),
                format!("must be a non-negative number, not {}", o.weight),
            ));
        }
    }
    if spec.budget.trials == Some(0)
        || spec.budget.batch == Some(0)
        || spec.budget.workers == Some(0)
    {
        return Err(fail(
            "budget",
            "trials, batch and workers must be at least 1".into(),
        ));
    }
    if spec.budget.gpus.as_ref().is_some_and(Vec::is_empty) {
        return Err(fail(
            "budget.gpus",
            "lists no GPU: give their indices, e.g. gpus = [0, 1]".into(),
        ));
    }
    if spec.budget.items == Some(0) {
        return Err(fail("budget.items", "must be at least 1".into()));
    }
    if let Some(s) = spec
        .budget
        .eval_seconds
        .filter(|s| !(s.is_finite() && *s > 0.0))
    {
        return Err(fail(
            "budget.eval_seconds",
            format!("must be a positive number of seconds, not {s}"),
        ));
    }
    if let Some((key, problem)) = spec.fidelity.as_ref().and_then(Fidelity::problem) {
        return Err(fail(&format!("fidelity.{key}"), problem));
    }
    let models = match (&spec.models, &spec.merge) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(fail(
                "merge",
                "is missing: a space with models needs [merge] method = ...".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(fail(
                "models",
                "is missing: [merge] needs [models] base and experts (or zoo)".into(),
            ));
        }
        (Some(m), Some(merge)) => Some(load_models(m, &merge.granularity, progress).map_err(
            |e| match e {
                ModelsProblem::Invalid(key, problem) => fail(key, problem),
                ModelsProblem::Unreadable(key, problem) => {
                    SpaceError::unreadable_models(file, key, problem)
                }
            },
        )?),
    };
    let methods: Vec<Method> = match spec.merge.as_ref().map(|m| &m.method) {
        None => Vec::new(),
        Some(MethodChoice::One(m)) => vec![parse_method(m).map_err(|e| fail("merge.method", e))?],
        Some(MethodChoice::Several(list)) if list.is_empty() => {
            return Err(fail(
                "merge.method",
                "is an empty list: name one method or several to choose among".into(),
            ));
        }
        Some(MethodChoice::Several(list)) => list
            .iter()
            .map(|m| parse_method(m))
            .collect::<Result<_, _>>()
            .map_err(|e| fail("merge.method", e))?,
    };
    let fixed = spec
        .merge
        .as_ref()
        .map(|m| m.fixed.clone())
        .unwrap_or_default();
    for name in fixed.keys() {
        if !methods
            .iter()
            .any(|m| m.params().iter().any(|p| p.name == name))
        {
            return Err(fail(
                &format!("merge.fixed.{name}"),
                format!("is not a parameter of {}", method_list(&methods)),
            ));
        }
    }
    let mut dimensions = Vec::new();
    let mut searched = Vec::new();
    let method_dimension = (methods.len() > 1).then(|| {
        dimensions.push(Dimension {
            name: "method".into(),
            domain: Domain::Categorical {
                values: methods.iter().map(|m| Value::from(m.to_string())).collect(),
            },
            init: 0.5 / methods.len() as f64,
        });
        0
    });
    for (i, p) in spec.params.iter().enumerate() {
        let key = format!("params[{i}] ({})", p.name);
        if spec.params[..i].iter().any(|q| q.name == p.name) || fixed.contains_key(&p.name) {
            return Err(fail(
                &key,
                "is given twice (searched twice, or both searched and fixed)".into(),
            ));
        }
        let domain = domain(p).map_err(|e| fail(&key, e))?;
        let first = dimensions.len();
        let names = match &models {
            None => {
                if p.scope.is_some_and(|s| s != ParamScope::Shared) {
                    return Err(fail(
                        &key,
                        "has a per-expert or per-group scope, but the space has no models".into(),
                    ));
                }
                vec![p.name.clone()]
            }
            Some(models) => {
                let scope = merge_param_scope(p, &methods, &domain).map_err(|e| fail(&key, e))?;
                searched.push(Searched {
                    name: p.name.clone(),
                    scope,
                    first,
                });
                dimension_names(&p.name, scope, models)
            }
        };
        let inits = initial_values(p, &domain, names.len(), models.as_ref())
            .map_err(|e| fail(&format!("{key}.init"), e))?;
        for (name, init) in names.into_iter().zip(inits) {
            dimensions.push(Dimension {
                name,
                domain: domain.clone(),
                init,
            });
        }
    }
    if dimensions.is_empty() {
        return Err(fail(
            "params",
            "declares nothing to search: add [[params]] tables (or several methods)".into(),
        ));
    }
    let space = Space {
        file: file.to_path_buf(),
        name: spec.name.clone().unwrap_or_else(|| {
            file.file_stem()
                .map_or("space".into(), |s| s.to_string_lossy().to_string())
        }),
        seed: spec.seed,
        models,
        methods,
        fixed,
        dimensions,
        evaluators: spec.evaluators,
        heldout: spec.heldout,
        objectives: spec.objectives,
        budget: spec.budget,
        fidelity: spec.fidelity.filter(|f| f.rungs() > 0),
        method_dimension,
        searched,
        resolved: raw,
    };
    check_plans(&space).map_err(|e| fail("params", e))?;
    Ok(space)
}

/// Every method's plan at the initial point and at both corners of the cube must resolve.
fn check_plans(space: &Space) -> Result<(), String> {
    let Some(models) = &space.models else {
        return Ok(());
    };
    let labels: Vec<String> = models.labels.clone();
    for u in [None, Some(0.0), Some(1.0)] {
        let mut point = u.map_or_else(|| space.initial_point(), |u| vec![u; space.dim()]);
        for (m, method) in space.methods.iter().enumerate() {
            if let Some(i) = space.method_dimension {
                point[i] = (m as f64 + 0.5) / space.methods.len() as f64;
            }
            let plan = space.plan(*method, models, &point).map_err(|e| e.problem)?;
            plan.resolve(&models.groups, &labels).map_err(|e| {
                let at = u.map_or("the initial point".to_string(), |u| {
                    format!("the corner where every coordinate is {u}")
                });
                format!("at {at}, the {method} plan does not resolve: {e}")
            })?;
        }
    }
    Ok(())
}

/// Why the models of a space cannot be used: the table is wrong, or the files are.
enum ModelsProblem {
    /// `(key, problem)`: the `[models]` table.
    Invalid(&'static str, String),
    /// `(key, problem)`: a model that is missing, unreadable, corrupt or mismatched.
    Unreadable(&'static str, String),
}

fn load_models(
    m: &ModelsFile,
    granularity: &Granularity,
    progress: &ProgressBar,
) -> Result<Models, ModelsProblem> {
    let (base, experts) = match (&m.zoo, &m.base) {
        (Some(_), Some(_)) => {
            return Err(ModelsProblem::Invalid(
                "models",
                "gives both zoo and base: use one".into(),
            ));
        }
        (None, None) => {
            return Err(ModelsProblem::Invalid(
                "models.base",
                "is missing (or give zoo = \"results/zoo\")".into(),
            ));
        }
        (Some(_), None) if m.tasks.is_some() => {
            return Err(ModelsProblem::Invalid(
                "models.tasks",
                "is given with zoo, which brings its own tasks (tasks is for your own models)"
                    .into(),
            ));
        }
        (Some(zoo), None) => {
            if !m.experts.is_empty() {
                return Err(ModelsProblem::Invalid(
                    "models.experts",
                    "is given with zoo, which brings its own experts".into(),
                ));
            }
            let unreadable =
                |e: &dyn std::fmt::Display| ModelsProblem::Unreadable("models.zoo", e.to_string());
            ensure_built(zoo, progress).map_err(|e| unreadable(&e))?;
            let manifest = read_manifest(zoo)
                .map_err(|e| unreadable(&e))?
                .ok_or_else(|| unreadable(&"has no zoo.json"))?;
            (
                zoo.join(&manifest.base),
                manifest.tasks.iter().map(|t| zoo.join(&t.expert)).collect(),
            )
        }
        (None, Some(base)) => (base.clone(), m.experts.clone()),
    };
    if experts.is_empty() {
        return Err(ModelsProblem::Invalid(
            "models.experts",
            "is empty: list the fine-tuned models to merge".into(),
        ));
    }
    let set = crate::checkpoint::ModelSet::open(&base, &experts)
        .map_err(|e| ModelsProblem::Unreadable("models", e.to_string()))?;
    drop(set);
    let groups = group_names(&base, granularity)
        .map_err(|e| ModelsProblem::Invalid("merge.granularity", e))?;
    Ok(Models {
        labels: labels(&experts),
        base,
        experts,
        granularity: granularity.clone(),
        groups,
    })
}

fn parse_method(name: &str) -> Result<Method, String> {
    name.parse()
        .map_err(|e: crate::merge::UnknownMethod| e.to_string())
}

fn method_list(methods: &[Method]) -> String {
    let names: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
    format!("method {}", names.join(" or "))
}

fn domain(p: &ParamFile) -> Result<Domain, String> {
    let number = |v: &Option<toml::Value>, key: &str| -> Result<f64, String> {
        match v {
            Some(toml::Value::Float(x)) => Ok(*x),
            Some(toml::Value::Integer(x)) => Ok(*x as f64),
            Some(other) => Err(format!("`{key}` must be a number, not {other}")),
            None => Err(format!("needs `{key}`")),
        }
    };
    match p.kind.as_deref().unwrap_or(if p.values.is_some() {
        "categorical"
    } else {
        "real"
    }) {
        "real" | "float" => {
            let (low, high) = (number(&p.low, "low")?, number(&p.high, "high")?);
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(format!(
                    "has an empty or infinite range [{low}, {high}]: `low` must be below `high`"
                ));
            }
            if p.scale == Scale::Log && low <= 0.0 {
                return Err(format!(
                    "is on a log scale, so `low` must be positive, not {low}"
                ));
            }
            Ok(Domain::Real {
                low,
                high,
                scale: p.scale,
            })
        }
        "int" | "integer" => {
            let (low, high) = (number(&p.low, "low")?, number(&p.high, "high")?);
            if low.fract() != 0.0 || high.fract() != 0.0 || low > high {
                return Err(format!(
                    "needs integer bounds with low <= high, not [{low}, {high}]"
                ));
            }
            Ok(Domain::Int {
                low: low as i64,
                high: high as i64,
            })
        }
        "categorical" => {
            let values = p
                .values
                .as_ref()
                .filter(|v| !v.is_empty())
                .ok_or("is categorical and needs a non-empty `values` list")?;
            Ok(Domain::Categorical {
                values: values.iter().map(toml_to_json).collect(),
            })
        }
        other => Err(format!(
            "has unknown type {other:?} (use \"real\", \"int\" or \"categorical\")"
        )),
    }
}

/// The scope of a searched merge parameter, checked against the methods that take it.
fn merge_param_scope(
    p: &ParamFile,
    methods: &[Method],
    domain: &Domain,
) -> Result<ParamScope, String> {
    let specs: Vec<_> = methods
        .iter()
        .filter_map(|m| m.params().iter().find(|s| s.name == p.name))
        .collect();
    let Some(spec) = specs.first() else {
        let known: std::collections::BTreeSet<&str> = methods
            .iter()
            .flat_map(|m| m.params().iter().map(|s| s.name))
            .collect();
        return Err(format!(
            "is not a parameter of {} (it takes {known:?})",
            method_list(methods)
        ));
    };
    if !matches!(domain, Domain::Real { .. }) && !matches!(spec.kind, Kind::Count) {
        return Err("is a merge parameter and must be real (type = \"real\")".into());
    }
    if matches!(spec.kind, Kind::Flag) {
        return Err("is a flag: set it under [merge.fixed] instead of searching it".into());
    }
    let default = match spec.scope {
        Scope::PerExpert => ParamScope::Expert,
        Scope::Shared => ParamScope::Shared,
    };
    let scope = p.scope.unwrap_or(default);
    if spec.scope == Scope::Shared && matches!(scope, ParamScope::Expert | ParamScope::ExpertGroup)
    {
        return Err(format!(
            "is shared by all experts, so its scope is \"shared\" or \"group\", not {scope:?}"
        ));
    }
    Ok(scope)
}

fn dimension_names(name: &str, scope: ParamScope, models: &Models) -> Vec<String> {
    match scope {
        ParamScope::Shared => vec![name.to_string()],
        ParamScope::Group => models
            .groups
            .iter()
            .map(|g| format!("{name}[{g}]"))
            .collect(),
        ParamScope::Expert => models
            .labels
            .iter()
            .map(|e| format!("{name}[{e}]"))
            .collect(),
        ParamScope::ExpertGroup => models
            .labels
            .iter()
            .flat_map(|e| {
                models
                    .groups
                    .iter()
                    .map(move |g| format!("{name}[{e},{g}]"))
            })
            .collect(),
    }
}

/// The initial coordinates: `init` as one value, or one per expert; the centre without it.
fn initial_values(
    p: &ParamFile,
    domain: &Domain,
    count: usize,
    models: Option<&Models>,
) -> Result<Vec<f64>, String> {
    let Some(init) = &p.init else {
        return Ok(vec![0.5; count]);
    };
    let values: Vec<Value> = match init {
        toml::Value::Array(list) => {
            let experts = models.map_or(0, |m| m.experts.len());
            let per_expert = matches!(
                p.scope,
                Some(ParamScope::Expert | ParamScope::ExpertGroup) | None
            ) && experts > 0;
            if !per_expert || list.len() != experts {
                return Err(format!(
                    "has {} values; give one value, or one per expert ({experts} experts){}",
                    list.len(),
                    if list.len() > experts {
                        ": there are more values than experts"
                    } else {
                        ""
                    }
                ));
            }
            let each = count / experts;
            list.iter()
                .flat_map(|v| std::iter::repeat_n(toml_to_json(v), each))
                .collect()
        }
        single => vec![toml_to_json(single); count],
    };
    values.iter().map(|v| domain.encode(v)).collect()
}

fn toml_to_json(value: &toml::Value) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Sets `a.b.c=value` in a TOML document; the value is TOML (`0.5`, `"ties"`, `[1, 2]`) or else
/// taken as a string.
fn apply_override(doc: &mut toml::Value, assignment: &str) -> Result<(), String> {
    let (path, text) = assignment
        .split_once('=')
        .ok_or("is not of the form key=value")?;
    let value = toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()));
    let keys: Vec<&str> = path.trim().split('.').collect();
    let mut node = doc;
    for key in &keys[..keys.len() - 1] {
        let table = node
            .as_table_mut()
            .ok_or_else(|| format!("cannot set {path}: {key} is inside a non-table"))?;
        node = table
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| format!("cannot set {path}: its parent is not a table"))?;
    table.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}
