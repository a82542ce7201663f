//! Successive halving within a batch: every candidate is scored at the space's cheapest
//! fidelity rung, the best `1/reduction` of those scored at a rung (by scalar score there) are
//! scored again at the next, and each trial's record carries every rung it reached, its scores
//! being those of the highest. The rule reads only the records, so a resumed run promotes the
//! same trials as an uninterrupted one.

use crate::record::{RungScores, TrialRecord};
use crate::space::Fidelity;

/// The ids of the trials promoted from rung `from` to the next: of `batch`'s trials that were
/// scored at `from`, the [`Fidelity::promotions`] of those that succeeded there, best scalar
/// first (lower ids first on ties).
pub fn promoted(fidelity: &Fidelity, batch: &[&TrialRecord], from: usize) -> Vec<u64> {
    let mut scored: Vec<(u64, f64)> = batch
        .iter()
        .filter_map(|t| Some((t.id, t.rungs.get(from)?.scalar?)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(fidelity.promotions(scored.len()));
    scored.into_iter().map(|(id, _)| id).collect()
}

/// `fresh`, the trial scored at one more rung (with `items_per_task` items per task), on top of
/// the rungs of its `previous` record: the rungs so far plus this one, the costs added up, and
/// this rung's outcome as the trial's.
pub fn add_rung(
    previous: Option<&TrialRecord>,
    fresh: TrialRecord,
    items_per_task: usize,
) -> TrialRecord {
    let rung = RungScores {
        items_per_task,
        scores: fresh.scores.clone(),
        scalar: fresh.scalar,
        items: fresh.items,
        eval_seconds: fresh.eval_seconds,
    };
    let Some(previous) = previous else {
        return TrialRecord {
            rungs: vec![rung],
            ..fresh
        };
    };
    let mut rungs = previous.rungs.clone();
    rungs.push(rung);
    TrialRecord {
        rungs,
        items: previous.items.zip(fresh.items).map(|(a, b)| a + b),
        merge_seconds: previous.merge_seconds + fresh.merge_seconds,
        eval_seconds: previous.eval_seconds + fresh.eval_seconds,
        started: previous.started,
        predicted: previous.predicted.clone(),
        ..fresh
    }
}

/// The rung a trial's scores come from (0 without rungs).
pub fn top_rung(trial: &TrialRecord) -> usize {
    trial.rungs.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::record::Status;

    fn trial(id: u64, scalars: &[Option<f64>]) -> TrialRecord {
        TrialRecord {
            id,
            generation: 0,
            status: Status::Ok,
            point: vec![0.5],
            params: serde_json::Map::new(),
            scores: BTreeMap::new(),
            scalar: *scalars.last().unwrap(),
            merge_seconds: 1.0,
            eval_seconds: 1.0,
            started: 0.0,
            finished: 0.0,
            error: None,
            predicted: None,
            items: Some(10),
            rungs: scalars
                .iter()
                .map(|&scalar| RungScores {
                    items_per_task: 10,
                    scores: BTreeMap::new(),
                    scalar,
                    items: Some(10),
                    eval_seconds: 1.0,
                })
                .collect(),
        }
    }

    #[test]
    fn the_best_third_of_the_successful_trials_go_on_ties_to_the_lower_id() {
        let f = Fidelity {
            items: vec![10, 40, 160],
            reduction: 3.0,
        };
        let batch = [
            trial(0, &[Some(0.5)]),
            trial(1, &[Some(0.9), Some(0.6)]),
            trial(2, &[None]),
            trial(3, &[Some(0.7), Some(0.8)]),
            trial(4, &[Some(0.7)]),
            trial(5, &[Some(0.1)]),
            trial(6, &[Some(0.9)]),
        ];
        let refs: Vec<&TrialRecord> = batch.iter().collect();
        // Six succeeded at rung 0: two go on, 0.9 (ids 1 and 6, the lower first).
        assert_eq!(promoted(&f, &refs, 0), [1, 6]);
        // Two were scored at rung 1: one goes on, the better there.
        assert_eq!(promoted(&f, &refs, 1), [3]);
        assert!(promoted(&f, &refs, 2).is_empty());
    }

    #[test]
    fn a_rung_adds_its_cost_and_its_outcome_becomes_the_trials() {
        let first = add_rung(None, trial(3, &[Some(0.5)]), 10);
        assert_eq!(first.rungs.len(), 1);
        let mut fresh = trial(3, &[Some(0.7)]);
        fresh.rungs.clear();
        fresh.items = Some(40);
        let second = add_rung(Some(&first), fresh, 40);
        assert_eq!(second.scalar, Some(0.7));
        assert_eq!(second.items, Some(50));
        assert_eq!(second.eval_seconds, 2.0);
        assert_eq!(
            second
                .rungs
                .iter()
                .map(|r| r.items_per_task)
                .collect::<Vec<_>>(),
            [10, 40]
        );
        assert_eq!(top_rung(&second), 1);
    }
}
