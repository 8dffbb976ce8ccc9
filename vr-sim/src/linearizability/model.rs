//! The sequential specification of one key: a register holding `nil` or a
//! string, with interned states and memoised transitions.

use std::collections::HashMap;

use super::hash::FxBuildHasher;
use crate::history::{Input, Output};

/// Index of an interned register value.
pub(super) type StateId = u32;

/// The result of applying one operation to a register value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The operation cannot have taken effect in this state with its output.
    Illegal,
    /// Legal; the value is unchanged.
    Same,
    /// Legal; the value becomes this.
    New(Option<String>),
}

/// Applies `input` to `state`; `output` is the observed output (`None` when
/// unknown, which constrains nothing).
///
/// * read: legal iff the output is the value;
/// * write: sets;
/// * incr: nil and `""` count as 0; illegal on a value that is not an `i64`
///   or when the sum overflows; legal iff the output is the new value;
/// * append: nil counts as `""`;
/// * cas: swaps iff the value equals `from`; legal iff the output agrees.
pub(crate) fn apply(state: &Option<String>, input: &Input, output: Option<&Output>) -> Step {
    match input {
        Input::Read => match output {
            None => Step::Same,
            Some(Output::Read(v)) if v == state => Step::Same,
            Some(_) => Step::Illegal,
        },
        Input::Write(v) => Step::New(Some(v.clone())),
        Input::Append(s) => {
            let mut v = state.clone().unwrap_or_default();
            v.push_str(s);
            Step::New(Some(v))
        }
        Input::Incr(d) => {
            let current = match state.as_deref() {
                None | Some("") => 0,
                Some(s) => match s.parse::<i64>() {
                    Ok(n) => n,
                    Err(_) => return Step::Illegal,
                },
            };
            let Some(new) = current.checked_add(*d) else {
                return Step::Illegal;
            };
            match output {
                None => {}
                Some(Output::Incr(n)) if *n == new => {}
                Some(_) => return Step::Illegal,
            }
            Step::New(Some(new.to_string()))
        }
        Input::Cas { from, to } => {
            let swaps = state == from;
            match output {
                None if swaps => Step::New(to.clone()),
                None => Step::Same,
                Some(Output::Cas { swapped }) if *swapped == swaps => {
                    if swaps {
                        Step::New(to.clone())
                    } else {
                        Step::Same
                    }
                }
                Some(_) => Step::Illegal,
            }
        }
    }
}

/// A register's states, interned, with memoised transitions.
pub(super) struct Model<'a> {
    ops: &'a [(&'a Input, Option<&'a Output>)],
    states: Vec<Option<String>>,
    ids: HashMap<Option<String>, StateId, FxBuildHasher>,
    memo: HashMap<u64, Option<StateId>, FxBuildHasher>,
    /// Bytes of the interned values.
    value_bytes: usize,
}

impl<'a> Model<'a> {
    /// A model whose state 0 is `initial`, for the operations `ops`.
    pub(super) fn new(initial: Option<String>, ops: &'a [(&'a Input, Option<&'a Output>)]) -> Self {
        let mut m = Model {
            ops,
            states: Vec::new(),
            ids: HashMap::default(),
            memo: HashMap::default(),
            value_bytes: 0,
        };
        m.intern(initial);
        m
    }

    fn intern(&mut self, v: Option<String>) -> StateId {
        if let Some(&id) = self.ids.get(&v) {
            return id;
        }
        let id = StateId::try_from(self.states.len()).expect("fewer than 2^32 states");
        // Stored twice: in `states` and as a key of `ids`.
        self.value_bytes += 2 * (32 + v.as_ref().map_or(0, String::len));
        self.states.push(v.clone());
        self.ids.insert(v, id);
        id
    }

    /// Bytes used, roughly.
    pub(super) fn bytes(&self) -> usize {
        self.value_bytes + self.ids.capacity() * 8 + self.memo.capacity() * 24
    }

    /// The value of state `id`.
    pub(super) fn value(&self, id: StateId) -> &Option<String> {
        &self.states[id as usize]
    }

    /// The state after operation `op` in state `state`, or `None` if `op`
    /// cannot take effect there.
    pub(super) fn step(&mut self, state: StateId, op: u32) -> Option<StateId> {
        let key = (u64::from(state) << 32) | u64::from(op);
        if let Some(&r) = self.memo.get(&key) {
            return r;
        }
        let (input, output) = self.ops[op as usize];
        let r = match apply(&self.states[state as usize], input, output) {
            Step::Illegal => None,
            Step::Same => Some(state),
            Step::New(v) => Some(self.intern(v)),
        };
        self.memo.insert(key, r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn register_semantics() {
        let nil = None;
        assert_eq!(
            apply(&nil, &Input::Read, Some(&Output::Read(None))),
            Step::Same
        );
        assert_eq!(
            apply(&s(""), &Input::Read, Some(&Output::Read(None))),
            Step::Illegal
        );
        assert_eq!(apply(&s("a"), &Input::Read, None), Step::Same);
        assert_eq!(
            apply(&nil, &Input::Write("b".into()), Some(&Output::Write)),
            Step::New(s("b"))
        );
        assert_eq!(
            apply(&nil, &Input::Append("x".into()), None),
            Step::New(s("x"))
        );
        assert_eq!(
            apply(&s("a"), &Input::Append("x".into()), None),
            Step::New(s("ax"))
        );
        assert_eq!(
            apply(&nil, &Input::Incr(2), Some(&Output::Incr(2))),
            Step::New(s("2"))
        );
        assert_eq!(apply(&s(""), &Input::Incr(-2), None), Step::New(s("-2")));
        assert_eq!(
            apply(&s("5"), &Input::Incr(2), Some(&Output::Incr(8))),
            Step::Illegal
        );
        assert_eq!(apply(&s("x"), &Input::Incr(2), None), Step::Illegal);
        assert_eq!(
            apply(&s(&i64::MAX.to_string()), &Input::Incr(1), None),
            Step::Illegal
        );
        let cas = Input::Cas {
            from: None,
            to: s("t"),
        };
        assert_eq!(
            apply(&nil, &cas, Some(&Output::Cas { swapped: true })),
            Step::New(s("t"))
        );
        assert_eq!(
            apply(&nil, &cas, Some(&Output::Cas { swapped: false })),
            Step::Illegal
        );
        assert_eq!(
            apply(&s(""), &cas, Some(&Output::Cas { swapped: false })),
            Step::Same
        );
        assert_eq!(
            apply(&s(""), &cas, Some(&Output::Cas { swapped: true })),
            Step::Illegal
        );
        assert_eq!(apply(&nil, &cas, None), Step::New(s("t")));
        assert_eq!(apply(&s("q"), &cas, None), Step::Same);
        assert_eq!(
            apply(&nil, &Input::Read, Some(&Output::Write)),
            Step::Illegal
        );
    }
}
