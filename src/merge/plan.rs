//! `MergePlan`: what to merge and how — the decoded point of a search, the body of a merge
//! config, and what `export` writes. [`MergePlan::resolve`] checks it against the method and the
//! layer groups (unchecked parameters become checked ones before any tensor is touched) and
//! expands it into one [`GroupParams`] per layer group.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::method::{DefaultValue, Kind, Method, ParamSpec, Scope};

/// A parameter's value as written: a number, a flag, or one number per layer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// One number for every group.
    Number(f64),
    /// `true` or `false`.
    Flag(bool),
    /// One number per layer group, in group order.
    PerGroup(Vec<f64>),
}

/// A merge: method, shared parameters, each expert's parameters, and the seed of random methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergePlan {
    /// The method.
    pub method: Method,
    /// Shared parameters by name.
    #[serde(default)]
    pub shared: BTreeMap<String, ParamValue>,
    /// Per-expert parameters by name, one map per expert in order.
    pub experts: Vec<BTreeMap<String, ParamValue>>,
    /// Seed from which random methods derive one stream per tensor and expert.
    #[serde(default)]
    pub seed: u64,
}

/// A plan that does not fit its method or its layer groups.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{context}: {problem}")]
pub struct PlanError {
    /// Where: the method and, for per-expert parameters, the expert.
    pub context: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// Every parameter of a method, resolved for one layer group. Fields a method does not take
/// hold neutral values and are ignored by it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupParams {
    /// Per-expert `weight`.
    pub weight: Vec<f64>,
    /// Per-expert `density` (fraction of entries kept).
    pub density: Vec<f64>,
    /// Per-expert `gamma` (breadcrumbs: fraction of largest entries dropped).
    pub gamma: Vec<f64>,
    /// Per-expert `epsilon` (DELLA: half-width of the keep probabilities).
    pub epsilon: Vec<f64>,
    /// Per-expert `mask_lambda` (consensus: TALL mask threshold).
    pub mask_lambda: Vec<f64>,
    /// Shared `lambda`: scale of the merged task vector.
    pub lambda: f64,
    /// Shared `normalize`: divide by the sum of (agreeing) weights.
    pub normalize: bool,
    /// Shared `rescale`: restore each sparsified task vector's L1 norm.
    pub rescale: bool,
    /// Shared `t` (slerp).
    pub t: f64,
    /// Shared `k` (consensus: experts that must agree a weight matters).
    pub k: usize,
    /// Shared `alpha` (LiNeS: scale of the shallowest layer and of non-block tensors).
    pub alpha: f64,
    /// Shared `beta` (LiNeS: added scale at the deepest layer).
    pub beta: f64,
}

/// A checked plan: one [`GroupParams`] per layer group.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPlan {
    /// The method.
    pub method: Method,
    /// Parameters for each layer group, in group order.
    pub groups: Vec<GroupParams>,
    /// The seed of random methods.
    pub seed: u64,
}

impl MergePlan {
    /// A plan with no parameters set yet.
    pub fn new(method: Method, experts: usize, seed: u64) -> MergePlan {
        MergePlan {
            method,
            shared: BTreeMap::new(),
            experts: vec![BTreeMap::new(); experts],
            seed,
        }
    }

    /// Checks the plan against its method and `group_names`, and expands it per group.
    ///
    /// `expert_labels` name the experts in errors (their paths, typically).
    pub fn resolve(
        &self,
        group_names: &[String],
        expert_labels: &[String],
    ) -> Result<ResolvedPlan, PlanError> {
        let method = self.method;
        let n_experts = self.experts.len();
        let (lo, hi) = method.expert_range();
        if n_experts < lo || n_experts > hi {
            let wanted = if lo == hi {
                format!("exactly {lo}")
            } else {
                format!("at least {lo}")
            };
            return Err(PlanError {
                context: format!("method {method}"),
                problem: format!("takes {wanted} expert(s), got {n_experts}"),
            });
        }
        let label = |i: usize| {
            expert_labels.get(i).map_or_else(
                || format!("expert {}", i + 1),
                |l| format!("expert {} ({l})", i + 1),
            )
        };
        check_names(
            method,
            Scope::Shared,
            &self.shared,
            &format!("method {method}"),
        )?;
        for (i, params) in self.experts.iter().enumerate() {
            check_names(
                method,
                Scope::PerExpert,
                params,
                &format!("method {method}, {}", label(i)),
            )?;
        }

        let n_groups = group_names.len();
        let mut groups = vec![neutral(n_experts); n_groups];
        for spec in method.params() {
            match spec.scope {
                Scope::Shared => {
                    let context = format!("method {method}");
                    let values = resolve_one(
                        spec,
                        self.shared.get(spec.name),
                        group_names,
                        n_experts,
                        &context,
                    )?;
                    for (g, v) in values.into_iter().enumerate() {
                        set_shared(&mut groups[g], spec.name, v);
                    }
                }
                Scope::PerExpert => {
                    for (i, params) in self.experts.iter().enumerate() {
                        let context = format!("method {method}, {}", label(i));
                        let values = resolve_one(
                            spec,
                            params.get(spec.name),
                            group_names,
                            n_experts,
                            &context,
                        )?;
                        for (g, v) in values.into_iter().enumerate() {
                            set_expert(&mut groups[g], spec.name, i, v);
                        }
                    }
                }
            }
        }
        if matches!(method, Method::Della | Method::DellaLinear) {
            check_della(&groups, group_names, &label)?;
        }
        Ok(ResolvedPlan {
            method,
            groups,
            seed: self.seed,
        })
    }
}

fn neutral(n_experts: usize) -> GroupParams {
    GroupParams {
        weight: vec![1.0; n_experts],
        density: vec![1.0; n_experts],
        gamma: vec![0.0; n_experts],
        epsilon: vec![0.0; n_experts],
        mask_lambda: vec![1.0; n_experts],
        lambda: 1.0,
        normalize: false,
        rescale: false,
        t: 0.0,
        k: 0,
        alpha: 1.0,
        beta: 0.0,
    }
}

fn set_shared(g: &mut GroupParams, name: &str, v: f64) {
    match name {
        "lambda" => g.lambda = v,
        "normalize" => g.normalize = v != 0.0,
        "rescale" => g.rescale = v != 0.0,
        "t" => g.t = v,
        "k" => g.k = v as usize,
        "alpha" => g.alpha = v,
        "beta" => g.beta = v,
        other => unreachable!("shared parameter {other} has no field"),
    }
}

fn set_expert(g: &mut GroupParams, name: &str, expert: usize, v: f64) {
    let field = match name {
        "weight" => &mut g.weight,
        "density" => &mut g.density,
        "gamma" => &mut g.gamma,
        "epsilon" => &mut g.epsilon,
        "mask_lambda" => &mut g.mask_lambda,
        other => unreachable!("per-expert parameter {other} has no field"),
    };
    field[expert] = v;
}

fn check_names(
    method: Method,
    scope: Scope,
    given: &BTreeMap<String, ParamValue>,
    context: &str,
) -> Result<(), PlanError> {
    for name in given.keys() {
        match method.param(name) {
            Some(spec) if spec.scope == scope => {}
            Some(_) => {
                let (is, belongs) = match scope {
                    Scope::Shared => ("shared", "each expert's table"),
                    Scope::PerExpert => ("per-expert", "the shared [params] table"),
                };
                return Err(PlanError {
                    context: context.to_string(),
                    problem: format!(
                        "{name:?} is not a {is} parameter of {method}: move it to {belongs}"
                    ),
                });
            }
            None => {
                let takes: Vec<&str> = method
                    .params()
                    .iter()
                    .filter(|p| p.scope == scope)
                    .map(|p| p.name)
                    .collect();
                let takes = if takes.is_empty() {
                    "none".to_string()
                } else {
                    takes.join(", ")
                };
                return Err(PlanError {
                    context: context.to_string(),
                    problem: format!(
                        "{method} takes no parameter {name:?} here (it takes: {takes})"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// One parameter's value for every group, defaulted and checked (flags become 0/1).
fn resolve_one(
    spec: &ParamSpec,
    given: Option<&ParamValue>,
    group_names: &[String],
    n_experts: usize,
    context: &str,
) -> Result<Vec<f64>, PlanError> {
    let n_groups = group_names.len();
    let err = |problem: String| PlanError {
        context: context.to_string(),
        problem,
    };
    let name = spec.name;
    let values = match (given, spec.kind) {
        (None, _) => match spec.default {
            DefaultValue::Required => {
                return Err(err(format!("parameter {name:?} is required")));
            }
            DefaultValue::Number(v) => vec![v; n_groups],
            DefaultValue::Flag(b) => vec![f64::from(u8::from(b)); n_groups],
            DefaultValue::OneOverExperts => vec![1.0 / n_experts as f64; n_groups],
        },
        (Some(ParamValue::Flag(b)), Kind::Flag) => vec![f64::from(u8::from(*b)); n_groups],
        (Some(ParamValue::Number(v)), Kind::Real { .. } | Kind::Count) => vec![*v; n_groups],
        (Some(ParamValue::PerGroup(list)), Kind::Real { .. }) => {
            if list.len() != n_groups {
                let shown: Vec<&str> = group_names.iter().take(8).map(String::as_str).collect();
                let more = if n_groups > 8 { ", ..." } else { "" };
                return Err(err(format!(
                    "{name:?} has {} values but there are {n_groups} layer groups ({}{more}); give one value or one per group",
                    list.len(),
                    shown.join(", ")
                )));
            }
            list.clone()
        }
        (Some(_), Kind::Flag) => return Err(err(format!("{name:?} must be true or false"))),
        (Some(_), Kind::Count) => return Err(err(format!("{name:?} must be a whole number"))),
        (Some(ParamValue::Flag(_)), Kind::Real { .. }) => {
            return Err(err(format!(
                "{name:?} must be a number or a list of numbers"
            )));
        }
    };
    for (g, &v) in values.iter().enumerate() {
        let at = if n_groups > 1 && matches!(given, Some(ParamValue::PerGroup(_))) {
            format!(" (group {})", group_names[g])
        } else {
            String::new()
        };
        match spec.kind {
            Kind::Real { min, max } if !(v.is_finite() && v >= min && v <= max) => {
                let range = match (min.is_finite(), max.is_finite()) {
                    (true, true) => format!("in [{min}, {max}]"),
                    (true, false) => format!(">= {min}"),
                    _ => "finite".to_string(),
                };
                return Err(err(format!("{name:?} = {v}{at} must be {range}")));
            }
            Kind::Count if !(v >= 0.0 && v.fract() == 0.0 && v <= n_experts as f64) => {
                return Err(err(format!(
                    "{name:?} = {v} must be a whole number from 0 to the number of experts ({n_experts})"
                )));
            }
            _ => {}
        }
    }
    Ok(values)
}

/// DELLA's keep probabilities `density ± epsilon` must lie strictly inside (0, 1) wherever the
/// tensor is sparsified at all (mergekit refuses the same configurations).
fn check_della(
    groups: &[GroupParams],
    group_names: &[String],
    label: &dyn Fn(usize) -> String,
) -> Result<(), PlanError> {
    for (g, p) in groups.iter().enumerate() {
        for i in 0..p.density.len() {
            let (d, e) = (p.density[i], p.epsilon[i]);
            if d > 0.0 && d < 1.0 && (d - e <= 0.0 || d + e >= 1.0) {
                return Err(PlanError {
                    context: format!("method della, {}", label(i)),
                    problem: format!(
                        "density {d} with epsilon {e} in group {} gives keep probabilities outside (0, 1); need epsilon < density < 1 - epsilon",
                        group_names[g]
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("g{i}")).collect()
    }

    fn ties_plan() -> MergePlan {
        let mut plan = MergePlan::new(Method::Ties, 2, 0);
        plan.experts[0].insert("weight".into(), ParamValue::PerGroup(vec![0.1, 0.2, 0.3]));
        plan.experts[0].insert("density".into(), ParamValue::Number(0.2));
        plan.experts[1].insert("weight".into(), ParamValue::Number(0.5));
        plan.shared.insert("lambda".into(), ParamValue::Number(2.0));
        plan
    }

    #[test]
    fn expands_scalars_lists_and_defaults_per_group() {
        let r = ties_plan().resolve(&groups(3), &[]).unwrap();
        assert_eq!(r.groups.len(), 3);
        assert_eq!(r.groups[2].weight, [0.3, 0.5]);
        assert_eq!(r.groups[1].density, [0.2, 1.0]);
        assert!(r.groups[0].normalize, "ties normalizes by default");
        assert!(!r.groups[0].rescale);
        assert_eq!(r.groups[0].lambda, 2.0);
    }

    #[test]
    fn rejects_what_does_not_fit_with_the_fix() {
        let labels = ["a.safetensors".to_string(), "b".to_string()];
        let msg = |p: MergePlan, n| p.resolve(&groups(n), &labels).unwrap_err().to_string();

        let m = msg(ties_plan(), 4);
        assert!(
            m.contains("expert 1 (a.safetensors)") && m.contains("3 values but there are 4"),
            "{m}"
        );

        let mut p = ties_plan();
        p.experts[1].insert("t".into(), ParamValue::Number(0.5));
        let m = msg(p, 3);
        assert!(
            m.contains("takes no parameter \"t\"") && m.contains("weight, density"),
            "{m}"
        );

        let mut p = ties_plan();
        p.experts[1].remove("weight");
        assert!(msg(p, 3).contains("\"weight\" is required"));

        let mut p = ties_plan();
        p.experts[1].insert("density".into(), ParamValue::Number(1.5));
        assert!(msg(p, 3).contains("must be in [0, 1]"));

        let mut p = ties_plan();
        p.experts[1].insert("lambda".into(), ParamValue::Number(1.0));
        assert!(msg(p, 3).contains("move it to the shared [params] table"));

        let mut p = ties_plan();
        p.shared.insert("normalize".into(), ParamValue::Number(1.0));
        assert!(msg(p, 3).contains("true or false"));

        let p = MergePlan::new(Method::Slerp, 2, 0);
        assert!(msg(p, 3).contains("exactly 1 expert"));
    }

    #[test]
    fn della_needs_probabilities_inside_the_unit_interval() {
        let mut p = MergePlan::new(Method::Della, 1, 0);
        p.experts[0].insert("weight".into(), ParamValue::Number(1.0));
        p.experts[0].insert("density".into(), ParamValue::Number(0.1));
        let err = p.resolve(&groups(1), &[]).unwrap_err().to_string();
        assert!(err.contains("epsilon < density"), "{err}");
        p.experts[0].insert("density".into(), ParamValue::Number(0.5));
        assert!(p.resolve(&groups(1), &[]).is_ok());
    }
}
