//! Running one trial: decode the point, materialize the merge, run every evaluator, scalarize.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::prelude::*;

use crate::eval::{CandidateWriter, Direction, Evaluator, Handoff, Trial};
use crate::merge::Merger;
use crate::record::{Status, TrialRecord, now};
use crate::rng::derive_seed;
use crate::space::{ObjectiveSpec, Space};

/// The name under which a predicted scalar score is recorded (optimizers of the scalar alone).
pub const PREDICTED_SCALAR: &str = "scalar";

/// The objectives of the scalar score with their directions (from the evaluators).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalarizer {
    /// `(name, direction, weight)`.
    pub terms: Vec<(String, Direction, f64)>,
}

impl Scalarizer {
    /// Matches the space's objectives with what the evaluators report; an objective nobody
    /// reports is an error listing the ones available.
    pub fn new<B: Backend>(
        objectives: &[ObjectiveSpec],
        evaluators: &[Box<dyn Evaluator<B>>],
    ) -> Result<Scalarizer, String> {
        let available: BTreeMap<&str, Direction> = evaluators
            .iter()
            .flat_map(|e| {
                e.objectives()
                    .iter()
                    .map(|o| (o.name.as_str(), o.direction))
            })
            .collect();
        let terms = objectives
            .iter()
            .map(|o| {
                let direction = available.get(o.name.as_str()).ok_or_else(|| {
                    let names: Vec<&&str> = available.keys().collect();
                    format!(
                        "objective {:?} is reported by no evaluator (they report {names:?})",
                        o.name
                    )
                })?;
                Ok((o.name.clone(), *direction, o.weight))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if terms.iter().all(|t| t.2 == 0.0) {
            return Err("every objective has weight 0: give at least one a positive weight".into());
        }
        Ok(Scalarizer { terms })
    }

    /// Every objective's score turned to be minimized (objectives to maximize negated), in the
    /// order of the terms, as optimizers are told them; `None` when one is missing.
    pub fn minimized(&self, scores: &BTreeMap<String, crate::eval::Score>) -> Option<Vec<f64>> {
        self.terms
            .iter()
            .map(|(name, direction, _)| Some(-direction.to_maximized(scores.get(name)?.value)))
            .collect()
    }

    /// An optimizer's prediction (minimized form, as it is told) as scores by name: one value per
    /// objective in the objectives' own units, or, from an optimizer of the scalar score alone,
    /// one value recorded as [`PREDICTED_SCALAR`] (larger is better). `None` for any other shape.
    pub fn predicted_scores(&self, values: &[f64]) -> Option<BTreeMap<String, f64>> {
        if values.len() == self.terms.len() {
            return Some(
                self.terms
                    .iter()
                    .zip(values)
                    .map(|((name, direction, _), &m)| (name.clone(), direction.to_maximized(-m)))
                    .collect(),
            );
        }
        match values {
            [m] => Some(BTreeMap::from([(PREDICTED_SCALAR.to_string(), -m)])),
            _ => None,
        }
    }

    /// The weighted mean of the objectives, each turned so that larger is better.
    pub fn scalar(&self, scores: &BTreeMap<String, crate::eval::Score>) -> Option<f64> {
        let mut total = 0.0;
        let mut weights = 0.0;
        for (name, direction, weight) in &self.terms {
            total += weight * direction.to_maximized(scores.get(name)?.value);
            weights += weight;
        }
        Some(total / weights)
    }
}

/// Which trial to run: its id, its batch, its point and the items per task of its fidelity
/// rung (`None`: each evaluator's own setting).
#[derive(Debug, Clone, Copy)]
pub struct TrialAt<'a> {
    /// The trial's id.
    pub id: u64,
    /// Its batch.
    pub generation: u64,
    /// Its point in the unit cube.
    pub point: &'a [f64],
    /// Items per task at its fidelity rung.
    pub items: Option<usize>,
}

/// Runs trial `at`: decodes its point, materializes the merge, runs every evaluator (at the
/// rung's items per task; those that read the candidate from disk share one copy, written by
/// `writer` when the first asks and removed at the end) and scalarizes. Every failure is a
/// failed record, never an error; a panic is left to the caller's guard
/// ([`super::TrialRunner`]).
pub fn run_trial<B: Backend>(
    space: &Space,
    merger: Option<&Merger<B>>,
    writer: Option<&CandidateWriter>,
    evaluators: &mut [Box<dyn Evaluator<B>>],
    scalarizer: &Scalarizer,
    at: TrialAt<'_>,
) -> TrialRecord {
    let TrialAt {
        id,
        generation,
        point,
        items,
    } = at;
    let started = now();
    let decoded = match space.decode(point) {
        Ok(decoded) => decoded,
        Err(e) => return failed_trial(id, generation, point, started, e.to_string()),
    };
    let clock = Instant::now();
    let candidate = match (merger, &decoded.plan) {
        (Some(merger), Some(plan)) => match merger.materialize(plan) {
            Ok(c) => Ok(Some(c)),
            Err(e) => Err(format!("merge: {e}")),
        },
        _ => Ok(None),
    };
    let merge_seconds = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let mut scores = BTreeMap::new();
    let mut counted = Some(0);
    let mut error = candidate.as_ref().err().cloned();
    if let Ok(candidate) = &candidate {
        let handoff = writer
            .zip(candidate.as_ref())
            .map(|(writer, c)| Handoff::new(writer, c, format!("trial-{id}")));
        let trial = Trial {
            id,
            seed: derive_seed(space.seed, "trial", id),
            params: &decoded.params,
            candidate: candidate.as_ref(),
            model: handoff.as_ref(),
            items,
        };
        for evaluator in evaluators.iter_mut() {
            let (outcome, cost) = match evaluator.evaluate(&trial) {
                Ok(evaluation) => (Ok(evaluation.scores), evaluation.cost),
                Err(failure) => (Err(failure.reason), failure.cost),
            };
            counted = counted.zip(cost.items).map(|(a, b)| a + b);
            match outcome {
                Ok(more) => scores.extend(more),
                Err(reason) => {
                    error = Some(reason);
                    break;
                }
            }
        }
    }
    let scalar = error
        .is_none()
        .then(|| scalarizer.scalar(&scores))
        .flatten();
    if error.is_none() && scalar.is_none() {
        error = Some("an objective of the scalar score is missing from the scores".into());
    }
    TrialRecord {
        id,
        generation,
        status: if error.is_none() {
            Status::Ok
        } else {
            Status::Failed
        },
        point: point.to_vec(),
        params: decoded.params,
        scores,
        scalar,
        merge_seconds,
        eval_seconds: clock.elapsed().as_secs_f64(),
        started,
        finished: now(),
        error,
        predicted: None,
        items: counted,
        rungs: Vec::new(),
    }
    .with_finite_values()
}

/// A trial that failed before producing anything, for `reason`.
pub(crate) fn failed_trial(
    id: u64,
    generation: u64,
    point: &[f64],
    started: f64,
    reason: String,
) -> TrialRecord {
    TrialRecord {
        id,
        generation,
        status: Status::Failed,
        point: point.to_vec(),
        params: serde_json::Map::new(),
        scores: BTreeMap::new(),
        scalar: None,
        merge_seconds: 0.0,
        eval_seconds: 0.0,
        started,
        finished: now(),
        error: Some(reason),
        predicted: None,
        items: None,
        rungs: Vec::new(),
    }
}
