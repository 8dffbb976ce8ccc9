//! A necessary condition for finishing a linearization, for keys with only
//! reads, writes and appends: the value only grows (by appends) until the next
//! write, so each read still to be linearized must return the current value
//! plus appends, or the value of a write still to be linearized, invoked
//! before the read returned, plus appends. A search node where some read can
//! no longer get its value has no way to finish and is not explored.
//!
//! This matters when unordered appends pile up between reads: without it the
//! search tries their orders one by one and learns only at the next read.
//!
//! On such keys an unknown write or append is also only worth linearizing
//! where the next read sees it (see `search::observed`).

use std::collections::HashMap;

use super::hash::FxBuildHasher;
use super::model::{Model, StateId};
use crate::history::{Input, Operation, Output};

/// The reads to check and the writes that could give each its value.
pub(super) struct Lookahead {
    /// Per operation: for an `ok` read, its value and the writes (operation
    /// indices) invoked before it returned whose value its value starts with.
    reads: Vec<Option<(Option<String>, Vec<u32>)>>,
    /// (state, read) -> can the read get its value from that state by appends.
    memo: HashMap<u64, bool, FxBuildHasher>,
}

impl Lookahead {
    /// The lookahead for `ops`, or `None` if some operation is not a read, a
    /// write or an append.
    pub(super) fn new(ops: &[&Operation]) -> Option<Lookahead> {
        if !ops
            .iter()
            .all(|o| matches!(o.input, Input::Read | Input::Write(_) | Input::Append(_)))
        {
            return None;
        }
        let reads = ops
            .iter()
            .map(|r| {
                let Some(Output::Read(value)) = r.output() else {
                    return None;
                };
                let ret = r.return_event.expect("an ok operation has a return event");
                let writes = ops
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| match (&w.input, value) {
                        (Input::Write(x), Some(v)) => {
                            w.call_event < ret && v.starts_with(x.as_str())
                        }
                        _ => false,
                    })
                    .map(|(i, _)| i as u32)
                    .collect();
                Some((value.clone(), writes))
            })
            .collect();
        Some(Lookahead {
            reads,
            memo: HashMap::default(),
        })
    }

    /// Whether operation `op` is a read this lookahead checks.
    pub(super) fn is_read(&self, op: u32) -> bool {
        self.reads[op as usize].is_some()
    }

    /// Can appends turn `state` into the value read `op` returned?
    pub(super) fn grows_into(&mut self, model: &Model<'_>, state: StateId, op: u32) -> bool {
        let (value, _) = self.reads[op as usize].as_ref().expect("a checked read");
        let key = (u64::from(state) << 32) | u64::from(op);
        *self
            .memo
            .entry(key)
            .or_insert_with(|| match (model.value(state), value) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(s), Some(v)) => v.starts_with(s.as_str()),
            })
    }

    /// Can read `op` still return its value, from `state` with the
    /// operations in `set` linearized?
    pub(super) fn possible(
        &mut self,
        model: &Model<'_>,
        state: StateId,
        op: u32,
        set: &[u64],
    ) -> bool {
        self.grows_into(model, state, op)
            || self.reads[op as usize]
                .as_ref()
                .expect("a checked read")
                .1
                .iter()
                .any(|&w| set[w as usize / 64] & (1 << (w % 64)) == 0)
    }
}
