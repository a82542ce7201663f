//! The merge methods and the parameters each one takes: names, scope, bounds and defaults.
//!
//! Names and defaults follow mergekit where the method exists there (`weight`, `density`,
//! `gamma`, `epsilon`, `lambda`, `normalize`, `rescale`, `t`), so a config means the same thing in
//! both tools.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A merge method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Weighted average of the experts.
    Linear,
    /// Base plus the weighted sum of task vectors.
    TaskArithmetic,
    /// TIES: magnitude trim, sign election, disjoint mean.
    Ties,
    /// DARE: random drop with rescale, then a weighted sum.
    DareLinear,
    /// DARE followed by TIES sign election.
    DareTies,
    /// Model Breadcrumbs: drop the largest and smallest magnitudes, then a weighted sum.
    Breadcrumbs,
    /// Breadcrumbs followed by TIES sign election.
    BreadcrumbsTies,
    /// DELLA: magnitude-ranked keep probabilities, sign election, disjoint mean.
    Della,
    /// DELLA's sampling followed by a weighted sum.
    DellaLinear,
    /// Spherical interpolation between the base and one other model.
    Slerp,
    /// Task arithmetic restricted to weights that several experts find important (TALL masks).
    Consensus,
    /// Task arithmetic scaled linearly with depth (LiNeS).
    Lines,
}

/// Whether a parameter is given per expert or once for the merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One value (or one per group) for each expert.
    PerExpert,
    /// One value (or one per group) for the whole merge.
    Shared,
}

/// The type and bounds of a parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A real number in `[min, max]`; may be given per layer group.
    Real {
        /// Inclusive lower bound.
        min: f64,
        /// Inclusive upper bound.
        max: f64,
    },
    /// A non-negative integer no larger than the number of experts.
    Count,
    /// `true` or `false`.
    Flag,
}

/// A parameter's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DefaultValue {
    /// The user (or the search space) must give it.
    Required,
    /// A number.
    Number(f64),
    /// A flag.
    Flag(bool),
    /// `1 / number of experts`.
    OneOverExperts,
}

/// One parameter a method takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    /// Its name in configs and plans.
    pub name: &'static str,
    /// Per expert or shared.
    pub scope: Scope,
    /// Type and bounds.
    pub kind: Kind,
    /// Default when absent.
    pub default: DefaultValue,
}

const ANY: Kind = Kind::Real {
    min: f64::NEG_INFINITY,
    max: f64::INFINITY,
};
const UNIT: Kind = Kind::Real { min: 0.0, max: 1.0 };

const fn expert(name: &'static str, kind: Kind, default: DefaultValue) -> ParamSpec {
    ParamSpec {
        name,
        scope: Scope::PerExpert,
        kind,
        default,
    }
}

const fn shared(name: &'static str, kind: Kind, default: DefaultValue) -> ParamSpec {
    ParamSpec {
        name,
        scope: Scope::Shared,
        kind,
        default,
    }
}

const WEIGHT: ParamSpec = expert("weight", ANY, DefaultValue::Required);
const WEIGHT_ONE: ParamSpec = expert("weight", ANY, DefaultValue::Number(1.0));
const DENSITY: ParamSpec = expert("density", UNIT, DefaultValue::Number(1.0));
const GAMMA: ParamSpec = expert("gamma", UNIT, DefaultValue::Number(0.01));
const EPSILON: ParamSpec = expert(
    "epsilon",
    Kind::Real { min: 0.0, max: 0.5 },
    DefaultValue::Number(0.15),
);
const T: ParamSpec = shared("t", UNIT, DefaultValue::Required);
const MASK_LAMBDA: ParamSpec = expert(
    "mask_lambda",
    Kind::Real {
        min: 0.0,
        max: f64::INFINITY,
    },
    DefaultValue::Number(1.0),
);
const K: ParamSpec = shared("k", Kind::Count, DefaultValue::Number(2.0));
const ALPHA: ParamSpec = shared("alpha", ANY, DefaultValue::OneOverExperts);
const BETA: ParamSpec = shared("beta", ANY, DefaultValue::Required);
const LAMBDA: ParamSpec = shared("lambda", ANY, DefaultValue::Number(1.0));
const NORMALIZE_ON: ParamSpec = shared("normalize", Kind::Flag, DefaultValue::Flag(true));
const NORMALIZE_OFF: ParamSpec = shared("normalize", Kind::Flag, DefaultValue::Flag(false));
const RESCALE_ON: ParamSpec = shared("rescale", Kind::Flag, DefaultValue::Flag(true));
const RESCALE_OFF: ParamSpec = shared("rescale", Kind::Flag, DefaultValue::Flag(false));

impl Method {
    /// Every method, in the order the docs list them.
    pub const ALL: [Method; 12] = [
        Method::Linear,
        Method::TaskArithmetic,
        Method::Ties,
        Method::DareLinear,
        Method::DareTies,
        Method::Breadcrumbs,
        Method::BreadcrumbsTies,
        Method::Della,
        Method::DellaLinear,
        Method::Slerp,
        Method::Consensus,
        Method::Lines,
    ];

    /// The name used in configs (mergekit's where it has one).
    pub fn name(self) -> &'static str {
        match self {
            Method::Linear => "linear",
            Method::TaskArithmetic => "task_arithmetic",
            Method::Ties => "ties",
            Method::DareLinear => "dare_linear",
            Method::DareTies => "dare_ties",
            Method::Breadcrumbs => "breadcrumbs",
            Method::BreadcrumbsTies => "breadcrumbs_ties",
            Method::Della => "della",
            Method::DellaLinear => "della_linear",
            Method::Slerp => "slerp",
            Method::Consensus => "consensus",
            Method::Lines => "lines",
        }
    }

    /// The parameters the method takes.
    pub fn params(self) -> &'static [ParamSpec] {
        match self {
            Method::Linear => &[WEIGHT, NORMALIZE_ON],
            Method::TaskArithmetic => &[WEIGHT, LAMBDA, NORMALIZE_OFF],
            Method::Ties => &[WEIGHT, DENSITY, LAMBDA, NORMALIZE_ON, RESCALE_OFF],
            Method::DareLinear | Method::DareTies => {
                &[WEIGHT, DENSITY, LAMBDA, NORMALIZE_OFF, RESCALE_ON]
            }
            Method::Breadcrumbs | Method::BreadcrumbsTies => {
                &[WEIGHT, DENSITY, GAMMA, LAMBDA, NORMALIZE_OFF, RESCALE_OFF]
            }
            Method::Della => &[WEIGHT, DENSITY, EPSILON, LAMBDA, NORMALIZE_ON, RESCALE_ON],
            Method::DellaLinear => &[WEIGHT, DENSITY, EPSILON, LAMBDA, NORMALIZE_OFF, RESCALE_ON],
            Method::Slerp => &[T],
            Method::Consensus => &[WEIGHT_ONE, MASK_LAMBDA, K, LAMBDA],
            Method::Lines => &[WEIGHT_ONE, ALPHA, BETA],
        }
    }

    /// The spec of parameter `name`, if the method takes it.
    pub fn param(self, name: &str) -> Option<&'static ParamSpec> {
        self.params().iter().find(|p| p.name == name)
    }

    /// How many experts the method accepts: `(min, max)`.
    pub fn expert_range(self) -> (usize, usize) {
        match self {
            Method::Slerp => (1, 1),
            _ => (1, usize::MAX),
        }
    }

    /// Whether the method draws random masks (from the plan's seed).
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Method::DareLinear | Method::DareTies | Method::Della | Method::DellaLinear
        )
    }

    /// Whether mergekit has a method of the same name and semantics (for YAML export).
    pub fn in_mergekit(self) -> bool {
        !matches!(self, Method::Consensus | Method::Lines)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A method name that is not one of [`Method::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown merge method {name:?} (expected one of: {})", Method::ALL.map(|m| m.name()).join(", "))]
pub struct UnknownMethod {
    /// The name given.
    pub name: String,
}

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMethod {
                name: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
        }
        let err = "tie".parse::<Method>().unwrap_err().to_string();
        assert!(
            err.contains("\"tie\"") && err.contains("breadcrumbs_ties"),
            "{err}"
        );
    }

    #[test]
    fn defaults_follow_mergekit() {
        let flag = |m: Method, name| match m.param(name).unwrap().default {
            DefaultValue::Flag(b) => b,
            other => panic!("{other:?}"),
        };
        assert!(flag(Method::Ties, "normalize"));
        assert!(flag(Method::Della, "normalize"));
        assert!(!flag(Method::BreadcrumbsTies, "normalize"));
        assert!(!flag(Method::DareTies, "normalize"));
        assert!(flag(Method::DareLinear, "rescale"));
        assert!(flag(Method::DellaLinear, "rescale"));
        assert!(!flag(Method::Ties, "rescale"));
        assert!(flag(Method::Linear, "normalize"));
    }
}
