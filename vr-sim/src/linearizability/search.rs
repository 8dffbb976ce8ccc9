//! Depth-first search for a linearization of one key's operations: the
//! Wing & Gong / Lowe algorithm with memoisation, as in Porcupine's
//! `checkSingle`.
//!
//! The invocations and `ok` returns are laid out in real-time order in a
//! doubly-linked list. Walking it from the front, the search tries to
//! linearize (apply to the model) each operation whose invocation it passes;
//! on success it removes the operation's entries from the list ("lifts" it),
//! pushes it on a stack and starts again from the front. Reaching a return
//! means that operation should have been linearized already: the search
//! backtracks by popping the last linearized operation and trying the next
//! candidate after it. A cache of (set of linearized operations, model state)
//! pairs already explored prunes the search: the same pair always leads to the
//! same outcome.
//!
//! Operations whose outcome is unknown have no return entry: they may be
//! linearized at any point after their invocation, or never. The search
//! succeeds as soon as every `ok` operation has been linearized.

use std::collections::HashMap;

use super::hash::{mix64, FxBuildHasher};
use super::model::{Model, StateId};
use crate::history::{Input, Operation, Output};

const NIL: u32 = u32::MAX;
/// Head of the list of `ok` operations' invocations and returns.
const MAIN: u32 = 0;
/// Head of the list of unknown operations' invocations.
const OPEN: u32 = 1;

/// An entry of the list: the invocation or the return of an operation.
#[derive(Clone, Copy)]
struct Node {
    op: u32,
    /// For an invocation: its operation's return node, or `NIL` if the
    /// outcome is unknown. For a return: `NIL`.
    ret: u32,
    is_call: bool,
    prev: u32,
    next: u32,
}

/// The furthest the search got on a history that is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Deepest {
    /// Indices (into the searched operations) in linearization order.
    pub prefix: Vec<usize>,
    /// The register value after `prefix`.
    pub state: Option<String>,
    /// The operation whose return was reached without it being linearized.
    pub blocked: usize,
    /// Every operation invoked before that return and not in `prefix`
    /// (including `blocked`): none could be linearized next.
    pub pending: Vec<usize>,
}

/// The verdict of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists; the furthest point the search reached.
    NotLinearizable(Deepest),
    /// The step budget ran out.
    OutOfBudget,
}

/// Explored (set of linearized operations, state) pairs, hashed by their
/// Zobrist hash; bit sets are stored contiguously in `bits`.
struct Cache {
    words: usize,
    heads: HashMap<u64, u32, FxBuildHasher>,
    /// (state, next entry in the same hash chain or NIL)
    entries: Vec<(StateId, u32)>,
    bits: Vec<u64>,
}

impl Cache {
    fn new(words: usize) -> Self {
        Cache {
            words,
            heads: HashMap::default(),
            entries: Vec::new(),
            bits: Vec::new(),
        }
    }

    /// Inserts the pair; `false` if it was already there.
    fn insert(&mut self, hash: u64, set: &[u64], state: StateId) -> bool {
        let head = self.heads.get(&hash).copied().unwrap_or(NIL);
        let mut e = head;
        while e != NIL {
            let (s, next) = self.entries[e as usize];
            let at = e as usize * self.words;
            if s == state && self.bits[at..at + self.words] == *set {
                return false;
            }
            e = next;
        }
        let id = u32::try_from(self.entries.len()).expect("cache smaller than 2^32 entries");
        self.entries.push((state, head));
        self.bits.extend_from_slice(set);
        self.heads.insert(hash, id);
        true
    }
}

/// Searches for a linearization of `ops` (all on one key; `fail`ed operations
/// already removed) from the register value `initial`, spending at most
/// `*budget` steps (one step = one attempt to apply an operation) and
/// subtracting what it spent.
pub(super) fn search(ops: &[&Operation], initial: Option<String>, budget: &mut u64) -> Verdict {
    let n = ops.len();
    assert!(n < (NIL as usize - 2) / 2, "too many operations on one key");
    let io: Vec<(&Input, Option<&Output>)> = ops.iter().map(|o| (&o.input, o.output())).collect();
    let mut model = Model::new(initial, &io);
    let mut nodes = build_lists(ops);

    let words = n.div_ceil(64).max(1);
    let zobrist: Vec<u64> = (0..n as u64).map(mix64).collect();
    let mut set = vec![0u64; words];
    let mut set_hash = 0u64;
    let mut cache = Cache::new(words);
    let mut remaining = ops.iter().filter(|o| o.output().is_some()).count();
    let mut state: StateId = 0;
    // (call node, state before it, bound when it was tried)
    let mut stack: Vec<(u32, StateId, u32)> = Vec::new();
    let mut deepest: Option<Deepest> = None;
    // The candidates for the next linearization point, in the order tried:
    // first the `ok` operations invoked before the first return in the main
    // list (phase 1, `bound == NIL`), then the unknown ones invoked before it
    // (phase 2, `bound` = that return's node; node ids follow real time).
    let mut entry = nodes[MAIN as usize].next;
    let mut bound = NIL;

    loop {
        if remaining == 0 {
            return Verdict::Linearizable;
        }
        let candidate = if bound == NIL {
            assert!(entry != NIL, "an ok operation's return is in the list until it is linearized");
            if !nodes[entry as usize].is_call {
                bound = entry;
                entry = nodes[OPEN as usize].next;
                continue;
            }
            true
        } else {
            entry != NIL && entry < bound
        };
        if candidate {
            let node = nodes[entry as usize];
            if *budget == 0 {
                return Verdict::OutOfBudget;
            }
            *budget -= 1;
            let op = node.op as usize;
            if let Some(next_state) = model.step(state, node.op) {
                let (word, bit) = (op / 64, 1u64 << (op % 64));
                set[word] |= bit;
                let h = set_hash ^ zobrist[op];
                let key = h ^ mix64(u64::from(next_state) ^ 0xa076_1d64_78bd_642f);
                if cache.insert(key, &set, next_state) {
                    stack.push((entry, state, bound));
                    state = next_state;
                    set_hash = h;
                    lift(&mut nodes, entry);
                    if node.ret != NIL {
                        remaining -= 1;
                    }
                    entry = nodes[MAIN as usize].next;
                    bound = NIL;
                    continue;
                }
                set[word] &= !bit;
            }
            entry = node.next;
            continue;
        }

        // Dead end: the operation returning at `bound` had to be linearized
        // by now, and no candidate leads anywhere new.
        let deeper = match &deepest {
            None => true,
            Some(d) => stack.len() > d.prefix.len(),
        };
        if deeper {
            let mut pending = Vec::new();
            for head in [MAIN, OPEN] {
                let mut e = nodes[head as usize].next;
                while e != NIL && e < bound {
                    if nodes[e as usize].is_call {
                        pending.push(nodes[e as usize].op as usize);
                    }
                    e = nodes[e as usize].next;
                }
            }
            pending.sort_unstable();
            deepest = Some(Deepest {
                prefix: stack.iter().map(|&(c, _, _)| nodes[c as usize].op as usize).collect(),
                state: model.value(state).clone(),
                blocked: nodes[bound as usize].op as usize,
                pending,
            });
        }
        let Some((call, previous, previous_bound)) = stack.pop() else {
            let deepest = deepest.expect("recorded at the first dead end");
            return Verdict::NotLinearizable(deepest);
        };
        let c = nodes[call as usize];
        let op = c.op as usize;
        set[op / 64] &= !(1u64 << (op % 64));
        set_hash ^= zobrist[op];
        state = previous;
        unlift(&mut nodes, call);
        if c.ret != NIL {
            remaining += 1;
        }
        entry = nodes[call as usize].next;
        bound = previous_bound;
    }
}

/// Lays out the entries of `ops` in real-time order in two lists: the main
/// list (headed by node `MAIN`) holds the invocations and returns of the `ok`
/// operations, the other (headed by `OPEN`) the invocations of the operations
/// whose outcome is unknown. Node ids increase in real-time order.
fn build_lists(ops: &[&Operation]) -> Vec<Node> {
    // (event index, op, is_call)
    let mut order: Vec<(usize, u32, bool)> = Vec::with_capacity(2 * ops.len());
    for (i, op) in ops.iter().enumerate() {
        order.push((op.call_event, i as u32, true));
        if op.output().is_some() {
            let ret = op.return_event.expect("an ok operation has a return event");
            order.push((ret, i as u32, false));
        }
    }
    order.sort_unstable();
    let sentinel = Node {
        op: NIL,
        ret: NIL,
        is_call: false,
        prev: NIL,
        next: NIL,
    };
    let mut nodes = vec![sentinel; order.len() + 2];
    let mut tail = [MAIN, OPEN];
    let mut ret_node = vec![NIL; ops.len()];
    for (k, &(_, op, is_call)) in order.iter().enumerate() {
        let id = k as u32 + 2;
        let list = usize::from(is_call && ops[op as usize].output().is_none());
        nodes[id as usize] = Node {
            op,
            ret: NIL,
            is_call,
            prev: tail[list],
            next: NIL,
        };
        nodes[tail[list] as usize].next = id;
        tail[list] = id;
        if !is_call {
            ret_node[op as usize] = id;
        }
    }
    for node in nodes.iter_mut().skip(2) {
        if node.is_call {
            node.ret = ret_node[node.op as usize];
        }
    }
    nodes
}

/// Removes invocation `call` and its return (if any) from the list.
fn lift(nodes: &mut [Node], call: u32) {
    let c = nodes[call as usize];
    nodes[c.prev as usize].next = c.next;
    if c.next != NIL {
        nodes[c.next as usize].prev = c.prev;
    }
    if c.ret != NIL {
        let r = nodes[c.ret as usize];
        nodes[r.prev as usize].next = r.next;
        if r.next != NIL {
            nodes[r.next as usize].prev = r.prev;
        }
    }
}

/// Undoes [`lift`] (lifts must be undone in reverse order).
fn unlift(nodes: &mut [Node], call: u32) {
    let c = nodes[call as usize];
    if c.ret != NIL {
        let r = nodes[c.ret as usize];
        nodes[r.prev as usize].next = c.ret;
        if r.next != NIL {
            nodes[r.next as usize].prev = c.ret;
        }
    }
    nodes[c.prev as usize].next = call;
    if c.next != NIL {
        nodes[c.next as usize].prev = call;
    }
}
