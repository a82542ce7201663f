//! One trial as recorded: what was asked, what it decoded to, what it scored and what it cost.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::eval::Score;

/// Whether a trial produced scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every evaluator reported every objective.
    Ok,
    /// An evaluator failed; `error` says why.
    Failed,
}

/// A finished trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Trial id, from 0, in the order the optimizer proposed them.
    pub id: u64,
    /// The batch (for CMA-ES, the generation) it belongs to.
    pub generation: u64,
    /// Ok or failed.
    pub status: Status,
    /// The point in the unit cube.
    #[serde(deserialize_with = "numbers_or_nan")]
    pub point: Vec<f64>,
    /// The decoded parameters by name.
    pub params: Map<String, Value>,
    /// Every score reported, by objective name.
    pub scores: BTreeMap<String, Score>,
    /// The weighted scalar score (larger is better), for successful trials.
    pub scalar: Option<f64>,
    /// Seconds spent materializing the merge.
    pub merge_seconds: f64,
    /// Seconds spent in evaluators.
    pub eval_seconds: f64,
    /// Start, in seconds since the Unix epoch.
    pub started: f64,
    /// End, in seconds since the Unix epoch.
    pub finished: f64,
    /// Why the trial failed.
    pub error: Option<String>,
    /// What the optimizer's surrogate predicted for each objective (in the objective's own
    /// units and direction) when it proposed this point, or for the scalar score (`scalar`)
    /// from optimizers of the scalar alone; absent for model-free optimizers.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "finite_map"
    )]
    pub predicted: Option<BTreeMap<String, f64>>,
    /// Items scored, over every evaluator and fidelity rung, when the evaluators count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    /// In a space with fidelity rungs, the trial's scores at each rung it reached, lowest
    /// first; `scores` and `scalar` are those of the last. Empty without rungs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<RungScores>,
}

/// A trial's scores at one fidelity rung.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungScores {
    /// Items per task asked for at this rung.
    pub items_per_task: usize,
    /// Every score reported, by objective name.
    pub scores: BTreeMap<String, Score>,
    /// The weighted scalar score.
    pub scalar: Option<f64>,
    /// Items scored at this rung, when the evaluators count them.
    pub items: Option<u64>,
    /// Seconds spent in evaluators at this rung.
    pub eval_seconds: f64,
}

impl TrialRecord {
    /// The record with only values JSON can hold: a non-finite score (NaN, an infinity) is
    /// removed and fails the trial, naming the objective; so does a non-finite scalar score;
    /// non-finite predictions are dropped. The journal writes what this returns, so it always
    /// reads back.
    pub fn with_finite_values(mut self) -> TrialRecord {
        let bad: Vec<String> = self
            .scores
            .iter()
            .filter(|(_, s)| !s.value.is_finite())
            .map(|(name, s)| format!("{name:?} is {}", s.value))
            .collect();
        self.scores.retain(|_, s| s.value.is_finite());
        for score in self.scores.values_mut() {
            score.stderr = score.stderr.filter(|e| e.is_finite());
        }
        let mut reasons = bad;
        if let Some(scalar) = self.scalar.filter(|s| !s.is_finite()) {
            reasons.push(format!("the scalar score is {scalar}"));
            self.scalar = None;
        }
        if !reasons.is_empty() {
            let found = format!("non-finite score: {}", reasons.join(", "));
            self.error = Some(match self.error.take() {
                Some(error) if self.status == Status::Failed => format!("{error}; {found}"),
                _ => found,
            });
            self.status = Status::Failed;
            self.scalar = None;
        }
        if let Some(predicted) = &mut self.predicted {
            predicted.retain(|_, v| v.is_finite());
        }
        for seconds in [
            &mut self.merge_seconds,
            &mut self.eval_seconds,
            &mut self.started,
            &mut self.finished,
        ] {
            if !seconds.is_finite() {
                *seconds = 0.0;
            }
        }
        self
    }

    /// Whether this record is at `point`, coordinate by coordinate (NaN equal to NaN).
    pub fn is_at(&self, point: &[f64]) -> bool {
        self.point.len() == point.len()
            && self
                .point
                .iter()
                .zip(point)
                .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()))
    }
}

/// A number, or NaN where JSON holds `null` (how a non-finite value is written).
pub(crate) fn number_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A list of numbers, NaN where JSON holds `null`.
fn numbers_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

/// A map of numbers without the entries JSON holds as `null`.
fn finite_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, f64>>, D::Error> {
    Ok(Option::<BTreeMap<String, Option<f64>>>::deserialize(d)?
        .map(|m| m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()))
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Score;

    fn record(scores: &[(&str, f64)], scalar: Option<f64>) -> TrialRecord {
        TrialRecord {
            id: 3,
            generation: 0,
            status: Status::Ok,
            point: vec![0.5],
            params: Map::new(),
            scores: scores
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        Score {
                            value: *v,
                            stderr: Some(f64::INFINITY),
                        },
                    )
                })
                .collect(),
            scalar,
            merge_seconds: 0.0,
            eval_seconds: 0.0,
            started: 0.0,
            finished: 0.0,
            error: None,
            predicted: Some(BTreeMap::from([("scalar".to_string(), f64::NAN)])),
            items: None,
            rungs: Vec::new(),
        }
    }

    #[test]
    fn non_finite_scores_fail_the_trial_and_the_record_reads_back() {
        let t = record(&[("acc", f64::NAN), ("loss", 0.5)], Some(f64::NAN)).with_finite_values();
        assert_eq!(t.status, Status::Failed);
        let error = t.error.clone().unwrap();
        assert!(error.contains("\"acc\" is NaN"), "{error}");
        assert!(error.contains("scalar score is NaN"), "{error}");
        assert_eq!(t.scores.keys().collect::<Vec<_>>(), ["loss"]);
        assert_eq!(t.scores["loss"].stderr, None);
        assert_eq!(t.predicted, Some(BTreeMap::new()));
        let line = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<TrialRecord>(&line).unwrap(), t);
        let fine = record(&[("loss", 0.5)], Some(-0.5)).with_finite_values();
        assert_eq!(fine.status, Status::Ok);
    }

    #[test]
    fn nulls_written_by_older_versions_read_back() {
        let line = r#"{"id":1,"generation":0,"status":"ok","point":[0.1,null],"params":{},"scores":{"acc":{"value":null,"stderr":null}},"scalar":null,"merge_seconds":0.0,"eval_seconds":0.0,"started":0.0,"finished":0.0,"error":null,"predicted":{"scalar":null,"acc":0.5}}"#;
        let t: TrialRecord = serde_json::from_str(line).unwrap();
        assert!(t.point[1].is_nan() && t.is_at(&[0.1, f64::NAN]));
        assert_eq!(
            t.predicted,
            Some(BTreeMap::from([("acc".to_string(), 0.5)]))
        );
        let t = t.with_finite_values();
        assert_eq!(t.status, Status::Failed);
        assert!(t.error.unwrap().contains("\"acc\" is NaN"));
    }
}
