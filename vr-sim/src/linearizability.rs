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
//! no effect and no constrained output, so they are dropped before searching,
//! and so are unknown writes and appends that no read can have observed (on
//! keys with only reads, writes and appends). The search also prunes
//! (set, value) pairs dominated by explored ones and tries interchangeable
//! unknown operations in one order only; see `search.rs` for why each is
//! sound.
//!
//! The search is exhaustive, so [`CheckResult::Linearizable`] and
//! [`CheckResult::NotLinearizable`] are definite; when the step budget runs out
//! first the result is [`CheckResult::Unknown`].

mod hash;
mod lookahead;
mod model;
mod search;

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{show, History, Input, Operation, Outcome, Output};

/// The memory a key's search may use (for its tables of explored states and
/// register values) before it gives up with [`CheckResult::Unknown`]: 1 GiB.
pub const MAX_MEMORY_BYTES: usize = search::MAX_MEMORY_BYTES;

/// The default step budget per key of [`check`]: one step is one attempt to
/// apply an operation to the model. None of Porcupine's test histories needs
/// more than about 3,000; a step costs roughly 0.05 to 2 µs in a release
/// build (more with long values), so running out takes seconds.
pub const DEFAULT_STEP_LIMIT: u64 = 20_000_000;

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's operations have a linearization.
    Linearizable,
    /// The operations on `key` have no linearization. The search's furthest
    /// point explains why: `longest_prefix` is a linearization of some of the
    /// operations (leaving the key at `state_after_prefix`) that no other
    /// path of the search got beyond, and from there `blocked`, which
    /// completed `ok` and so must be linearized, cannot be: no order of the
    /// `pending` operations (the candidates to go next) lets it return what it
    /// returned before it returned.
    NotLinearizable {
        /// The key (the first, in key order, whose operations are not linearizable).
        key: String,
        /// The longest linearizable prefix found, in linearization order.
        longest_prefix: Vec<Operation>,
        /// The key's value after `longest_prefix` (`None`: nil).
        state_after_prefix: Option<String>,
        /// An `ok` operation that no extension of `longest_prefix` can
        /// include: a read that can no longer see its value, or an operation
        /// whose return was reached with no candidate able to go next.
        blocked: Box<Operation>,
        /// The operations not in `longest_prefix` that were candidates to go
        /// next (including `blocked`), in invocation order.
        pending: Vec<Operation>,
    },
    /// No key is known not to be linearizable, but the search on `key` gave
    /// up without a verdict: it used up its step budget, or its tables grew
    /// past the memory limit ([`MAX_MEMORY_BYTES`]).
    Unknown {
        /// The first key (in key order) whose search gave up.
        key: String,
        /// The steps it had taken.
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
                "unknown: the search on key {key:?} gave up after {steps} steps \
                 (out of step budget or memory)"
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
                    "not linearizable on key {key:?}: operation #{} completed ok but cannot be \
                     linearized after the longest linearizable prefix found ({} operations, \
                     leaving the value {}), whatever else goes next.",
                    blocked.id,
                    longest_prefix.len(),
                    show(state_after_prefix),
                )?;
                writeln!(f, "blocked:\n  {blocked}")?;
                writeln!(f, "prefix, in linearization order:")?;
                for op in longest_prefix {
                    writeln!(f, "  {op}")?;
                }
                writeln!(f, "candidates to go next:")?;
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
    for (key, mut ops) in by_key {
        drop_unobservable(&mut ops);
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
                        steps: spent,
                    });
                }
            }
        }
    }
    (unknown.unwrap_or(CheckResult::Linearizable), stats)
}

/// Removes unknown writes and appends that no read can have observed, on
/// keys that have only reads, writes and appends.
///
/// Such an operation's string appears in the value from its linearization
/// point until the next write, so every read linearized in between returns a
/// value containing it. If no `ok` read returning after its invocation
/// contains it, no read lies in between; appends have no output, so leaving
/// the operation out (it need not take effect) keeps any linearization valid.
/// With increments or compare-and-sets on the key the value matters to more
/// than reads, and nothing is removed.
fn drop_unobservable(ops: &mut Vec<&Operation>) {
    let only_rwa = ops
        .iter()
        .all(|o| matches!(o.input, Input::Read | Input::Write(_) | Input::Append(_)));
    if !only_rwa {
        return;
    }
    let reads: Vec<(usize, &str)> = ops
        .iter()
        .filter_map(|o| match o.output() {
            Some(Output::Read(Some(v))) => Some((o.return_event.unwrap_or(usize::MAX), v.as_str())),
            _ => None,
        })
        .collect();
    ops.retain(|o| {
        let (Outcome::Unknown, Input::Write(x) | Input::Append(x)) = (&o.outcome, &o.input) else {
            return true;
        };
        reads
            .iter()
            .any(|&(ret, v)| ret > o.call_event && v.contains(x.as_str()))
    });
}

#[cfg(test)]
mod tests;
