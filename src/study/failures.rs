//! When to give up: a run whose trials keep failing (a full disk, a broken environment, an
//! evaluator that cannot start) would otherwise spend its whole budget on failures. After
//! `budget.max_failures` failed trials in a row (in the order they finish) the run stops
//! starting trials, records the ones in flight, and ends with an error that shows the last
//! failures; `--resume` continues it once the cause is fixed.

use std::collections::VecDeque;

use crate::record::{Status, TrialRecord};

/// Consecutive failed trials that stop a run unless the space says otherwise.
pub const DEFAULT_MAX_FAILURES: usize = 10;

/// How many of the last failures the error quotes.
const QUOTED: usize = 3;

/// When a run gives up on failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Failed trials in a row that stop the run; `None` never stops.
    pub max_consecutive: Option<usize>,
}

impl FailurePolicy {
    /// The policy for `budget.max_failures` (absent: the default; 0: never stop).
    pub fn from_budget(max_failures: Option<usize>) -> FailurePolicy {
        FailurePolicy {
            max_consecutive: match max_failures {
                None => Some(DEFAULT_MAX_FAILURES),
                Some(0) => None,
                Some(n) => Some(n),
            },
        }
    }
}

/// The current run of failed trials.
#[derive(Debug, Clone)]
pub struct FailureStreak {
    policy: FailurePolicy,
    length: usize,
    recent: VecDeque<(u64, String)>,
}

impl FailureStreak {
    /// No failure yet.
    pub fn new(policy: FailurePolicy) -> FailureStreak {
        FailureStreak {
            policy,
            length: 0,
            recent: VecDeque::new(),
        }
    }

    /// Counts a finished trial (a success ends the streak); true once the limit is reached.
    pub fn observe(&mut self, trial: &TrialRecord) -> bool {
        if trial.status == Status::Ok {
            self.length = 0;
            self.recent.clear();
        } else {
            self.length += 1;
            let reason = trial
                .error
                .clone()
                .unwrap_or_else(|| "no reason given".into());
            self.recent.push_back((trial.id, reason));
            if self.recent.len() > QUOTED {
                self.recent.pop_front();
            }
        }
        self.exceeded()
    }

    /// Whether the streak has reached the policy's limit.
    pub fn exceeded(&self) -> bool {
        self.policy
            .max_consecutive
            .is_some_and(|max| self.length >= max)
    }

    /// Failed trials in a row so far.
    pub fn length(&self) -> usize {
        self.length
    }

    /// The last few failures: `(trial id, reason)`, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &(u64, String)> {
        self.recent.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::trial::failed_trial;

    #[test]
    fn a_streak_stops_at_the_limit_and_a_success_resets_it() {
        let mut streak = FailureStreak::new(FailurePolicy::from_budget(Some(3)));
        let fail = |id| failed_trial(id, 0, &[0.5], 0.0, format!("disk full {id}"));
        let mut ok = fail(9);
        ok.status = Status::Ok;
        assert!(!streak.observe(&fail(0)));
        assert!(!streak.observe(&fail(1)));
        assert!(!streak.observe(&ok));
        assert!(!streak.observe(&fail(2)));
        assert!(!streak.observe(&fail(3)));
        assert!(streak.observe(&fail(4)));
        assert_eq!(streak.length(), 3);
        let quoted: Vec<u64> = streak.recent().map(|(id, _)| *id).collect();
        assert_eq!(quoted, [2, 3, 4]);
        let mut never = FailureStreak::new(FailurePolicy::from_budget(Some(0)));
        assert!((0..100).all(|i| !never.observe(&fail(i))));
        assert_eq!(
            FailurePolicy::from_budget(None).max_consecutive,
            Some(DEFAULT_MAX_FAILURES)
        );
    }
}
