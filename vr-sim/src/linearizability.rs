//! Linearizability checking of key-value histories.
//!
//! A history is linearizable if every operation that completed `ok` can be
//! given a linearization point between its invocation and its completion, and
//! every operation whose outcome is unknown a point after its invocation or
//! none at all, such that applying the operations in the order of their points
//! to the sequential model of a key (a register holding nil or a string, see
//! [`crate::history::Function`]) gives every `ok` operation the output it
//! returned. `fail`ed operations have no effect and are ignored.
//!
//! Keys are independent (P-compositionality): each key's operations are
//! checked on their own, with a depth-first search over linearization points
//! memoising the (set of linearized operations, register value) pairs already
//! explored (Wing & Gong, Lowe, Porcupine's `checkSingle`). Unknown reads have
//! no effect and no constrained output, so they are dropped before searching.
//!
//! The search is exhaustive, so [`CheckResult::Linearizable`] and
//! [`CheckResult::NotLinearizable`] are definite; when the step budget runs out
//! first the result is [`CheckResult::Unknown`].

mod hash;
mod model;
mod search;

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{show, History, Input, Operation, Outcome};

/// The default step budget per key of [`check`]: one step is one attempt to
/// apply an operation to the model. Histories of a few hundred operations per
/// key usually need thousands; the hardest of Porcupine's test histories
/// needs about 1.2 million (≈ 50 ms in a release build).
pub const DEFAULT_STEP_LIMIT: u64 = 20_000_000;

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's operations have a linearization.
    Linearizable,
    /// The operations on `key` have no linearization. The search's furthest
    /// point explains why: after `longest_prefix` (a linearization of some of
    /// the operations, leaving the key at `state_after_prefix`), none of
    /// `pending` could take effect next, yet `blocked` (one of them) had
    /// returned `ok`, so it must have taken effect by then.
    NotLinearizable {
        /// The key (the first, in key order, whose operations are not linearizable).
        key: String,
        /// The longest linearizable prefix found, in linearization order.
        longest_prefix: Vec<Operation>,
        /// The key's value after `longest_prefix` (`None`: nil).
        state_after_prefix: Option<String>,
        /// An `ok` operation that no extension of `longest_prefix` can include
        /// before its return.
        blocked: Box<Operation>,
        /// The operations invoked before `blocked` returned that are not in
        /// `longest_prefix` (including `blocked`).
        pending: Vec<Operation>,
    },
    /// No key is known not to be linearizable, but the search on `key` used
    /// up its budget of `steps` steps without a verdict.
    Unknown {
        /// The first key (in key order) whose search ran out of budget.
        key: String,
        /// The budget that ran out.
        steps: u64,
    },
}

impl CheckResult {
    /// `true` only for [`CheckResult::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Linearizable => f.write_str("linearizable"),
            CheckResult::Unknown { key, steps } => write!(
                f,
                "unknown: the search on key {key:?} ran out of its budget of {steps} steps"
            ),
            CheckResult::NotLinearizable {
                key,
                longest_prefix,
                state_after_prefix,
                blocked,
                pending,
            } => {
                writeln!(
                    f,
                    "not linearizable on key {key:?}: after the longest linearizable prefix found \
                     ({} operations, leaving the value {}), no pending operation can take effect next, \
                     but operation #{} completed ok and so must have taken effect by then.",
                    longest_prefix.len(),
                    show(state_after_prefix),
                    blocked.id
                )?;
                writeln!(f, "prefix, in linearization order:")?;
                for op in longest_prefix {
                    writeln!(f, "  {op}")?;
                }
                writeln!(f, "pending:")?;
                for op in pending {
                    writeln!(f, "  {op}")?;
                }
                Ok(())
            }
        }
    }
}

/// Checks `history` with the default budget of [`DEFAULT_STEP_LIMIT`] steps per key.
pub fn check(history: &History) -> CheckResult {
    check_with_limit(history, DEFAULT_STEP_LIMIT)
}

/// Checks `history`, spending at most `max_steps` steps on each key. Keys are
/// checked in order; the first key that is not linearizable decides the
/// result, otherwise a key that ran out of budget makes it
/// [`CheckResult::Unknown`].
pub fn check_with_limit(history: &History, max_steps: u64) -> CheckResult {
    check_with_stats(history, max_steps).0
}

/// What a check cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// Keys searched (keys with only `fail`ed or unknown reads are not).
    pub keys: usize,
    /// Operations searched (without `fail`ed ones and unknown reads).
    pub operations: usize,
    /// Steps (attempts to apply an operation to the model) over all keys.
    pub steps: u64,
    /// The most steps spent on one key.
    pub max_key_steps: u64,
}

/// [`check_with_limit`], also telling what the check cost. The search stops at
/// the first key that is not linearizable, so later keys are not counted.
pub fn check_with_stats(history: &History, max_steps: u64) -> (CheckResult, CheckStats) {
    let mut stats = CheckStats::default();
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.operations() {
        match (&op.outcome, &op.input) {
            (Outcome::Fail, _) | (Outcome::Unknown, Input::Read) => continue,
            _ => by_key.entry(&op.key).or_default().push(op),
        }
    }
    let initial = history.initial_value().map(str::to_owned);
    let mut unknown = None;
    for (key, ops) in by_key {
        let mut budget = max_steps;
        let verdict = search::search(&ops, initial.clone(), &mut budget);
        let spent = max_steps - budget;
        stats.keys += 1;
        stats.operations += ops.len();
        stats.steps += spent;
        stats.max_key_steps = stats.max_key_steps.max(spent);
        match verdict {
            search::Verdict::Linearizable => {}
            search::Verdict::NotLinearizable(d) => {
                let take = |i: usize| ops[i].clone();
                let result = CheckResult::NotLinearizable {
                    key: key.to_string(),
                    longest_prefix: d.prefix.into_iter().map(take).collect(),
                    state_after_prefix: d.state,
                    blocked: Box::new(take(d.blocked)),
                    pending: d.pending.into_iter().map(take).collect(),
                };
                return (result, stats);
            }
            search::Verdict::OutOfBudget => {
                if unknown.is_none() {
                    unknown = Some(CheckResult::Unknown {
                        key: key.to_string(),
                        steps: max_steps,
                    });
                }
            }
        }
    }
    (unknown.unwrap_or(CheckResult::Linearizable), stats)
}
