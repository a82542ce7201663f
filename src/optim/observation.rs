//! An evaluated point as model-based optimizers keep it, serialized bit-exactly.

use serde::{Deserialize, Serialize};

use super::exact;

/// A point and its minimized objective values (what the values are — `[value]`, every
/// objective, or none for a failed trial — is the keeping optimizer's convention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Observation {
    /// The point (unit cube).
    #[serde(with = "exact::vec")]
    pub point: Vec<f64>,
    /// Its minimized objective values.
    #[serde(with = "exact::vec")]
    pub objectives: Vec<f64>,
}
