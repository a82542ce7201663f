//! Noise-aware choice of a zoo run's merge. A run's best scalar comes from validation *subsets*,
//! so the best trial is partly the luckiest: its score overstates its quality. Scoring the few
//! best trials again on the whole validation split and keeping the best there chooses with less
//! noise; the test split is read only to report the choice, never to make it.

use anyhow::Context;
use burn::prelude::Backend;

use crate::record::TrialRecord;
use crate::space::Space;
use crate::study::ranked_trials;
use crate::zoo::baselines::{Baselines, mean_accuracy};
use crate::zoo::tasks::Split;

/// The trial chosen by [`rescore_top`] and its mean accuracy on the whole validation split.
pub struct Rescored<'a> {
    /// The chosen trial.
    pub trial: &'a TrialRecord,
    /// Its mean accuracy over the tasks on the whole validation split.
    pub validation: f64,
}

/// The mean accuracy over the tasks of `trial`'s merge on `split`.
pub fn trial_accuracy<B: Backend>(
    space: &Space,
    baselines: &Baselines<B>,
    trial: &TrialRecord,
    split: Split,
) -> anyhow::Result<f64> {
    let plan = space
        .decode(&trial.point)?
        .plan
        .context("a zoo space decodes to a merge")?;
    Ok(mean_accuracy(&baselines.score(&plan, split)?))
}

/// Of the `top` best successful trials by scalar, the one with the best mean accuracy on the
/// whole validation split (the better-ranked one on ties); `None` when no trial succeeded or
/// `top` is 0. Calls `scored` after each scoring.
pub fn rescore_top<'a, B: Backend>(
    space: &Space,
    baselines: &Baselines<B>,
    trials: &'a [TrialRecord],
    top: usize,
    mut scored: impl FnMut(),
) -> anyhow::Result<Option<Rescored<'a>>> {
    let mut chosen: Option<Rescored> = None;
    for trial in ranked_trials(trials).into_iter().take(top) {
        let validation = trial_accuracy(space, baselines, trial, Split::Validation)?;
        scored();
        if chosen.as_ref().is_none_or(|c| validation > c.validation) {
            chosen = Some(Rescored { trial, validation });
        }
    }
    Ok(chosen)
}
