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
//! linearized at any point after their invocation, or never. They live in a
//! list of their own and are tried only after the `ok` operations that are
//! candidates at the same point. The search succeeds as soon as every `ok`
//! operation has been linearized.
//!
//! # Pruning
//!
//! 1. The cache also prunes a pair *dominated* by an explored one: same state,
//!    same `ok` operations, a superset of its unknown ones (see [`Cache`]).
//! 2. Unknown operations with the same input are interchangeable once
//!    invoked, so they are used in invocation order only
//!    (see [`earlier_twins`]).
//! 3. A write is never linearized right after an unknown operation: it would
//!    erase that one's effect, and leaving that one out is never worse.
//! 4. On keys with only reads, writes and appends, a node from which a read
//!    about to be linearized can no longer get its value is not explored
//!    (see [`Lookahead`]).
//! 5. On such keys, an unknown write or append is linearized only where the
//!    next read sees it (see [`observed`]).
//!
//! None of these can make the search accept a history that is not
//! linearizable: it accepts only after applying every `ok` operation to the
//! model with its output. Nor do they hide a linearization: call a way to
//! finish a linearization from a node *canonical* if it uses twins in
//! invocation order and no unknown operation that a write erases at once or
//! (rule 5) that the next read does not see. Removing such operations and
//! swapping twins makes any way to finish canonical, with no more unknown
//! operations before its first `ok` one. Suppose the search failed on a
//! linearizable history. Among the explored nodes that can be finished, take
//! one with the most `ok` operations linearized, then the fewest unknown
//! operations before the first `ok` one of a canonical way to finish it, then
//! the fewest operations linearized. The first operation of that way is tried
//! there: rules 2, 4 and 5 allow it, and if rule 3 refuses it, the node's
//! parent can be finished just as well with fewer operations linearized,
//! contradicting the choice. The node it leads to can be finished, so it was
//! explored, or pruned by an explored node that dominates it and so can be
//! finished too; either way it would have been the better choice.

use std::collections::HashMap;

use super::hash::{mix64, FxBuildHasher};
use super::lookahead::Lookahead;
use super::model::{Model, StateId};
use crate::history::{Input, Operation, Output};

const NIL: u32 = u32::MAX;
/// The memory the cache and the model's values may use before the search
/// gives up (as if out of steps).
pub(crate) const MAX_MEMORY_BYTES: usize = 1 << 30;
/// How many list entries [`reads_possible`] looks at, at most.
const LOOKAHEAD_NODES: usize = 64;
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

/// Explored (set of linearized operations, state) pairs, grouped by state and
/// set of `ok` operations (found by a Zobrist hash of the two, and compared
/// exactly); each group holds the sets of unknown operations explored with
/// them, as bit sets over the unknown operations only.
///
/// Besides exact repeats, the cache prunes pairs *dominated* by an explored
/// one: same state, same `ok` operations, and a superset of its unknown
/// operations. Unknown operations need never take effect and have no return
/// to respect, so every way to finish from the dominated pair is also a way
/// to finish from the explored one.
struct Cache {
    /// Words of a bit set over all operations (`ok` ones are compared).
    words: usize,
    /// Words of a bit set over the unknown operations.
    open_words: usize,
    heads: HashMap<u64, u32, FxBuildHasher>,
    /// Per group: (state, next group with the same hash or NIL, first member).
    groups: Vec<(StateId, u32, u32)>,
    /// Per group, `words` words: the linearized `ok` operations.
    group_bits: Vec<u64>,
    /// Per member: the next member of its group or NIL.
    members: Vec<u32>,
    /// Per member, `open_words` words: the linearized unknown operations.
    member_bits: Vec<u64>,
}

impl Cache {
    fn new(words: usize, open_words: usize) -> Self {
        Cache {
            words,
            open_words,
            heads: HashMap::default(),
            groups: Vec::new(),
            group_bits: Vec::new(),
            members: Vec::new(),
            member_bits: Vec::new(),
        }
    }

    /// Bytes used, roughly.
    fn bytes(&self) -> usize {
        self.heads.capacity() * 16
            + self.groups.capacity() * 12
            + self.group_bits.capacity() * 8
            + self.members.capacity() * 4
            + self.member_bits.capacity() * 8
    }

    /// Inserts the pair (state, `ok` operations `definite`, unknown ones
    /// `open`); `false` if it, or a pair dominating it, was there.
    fn insert(&mut self, hash: u64, definite: &[u64], open: &[u64], state: StateId) -> bool {
        let head = self.heads.get(&hash).copied().unwrap_or(NIL);
        let mut g = head;
        while g != NIL {
            let (s, next, first) = self.groups[g as usize];
            let at = g as usize * self.words;
            if s == state && self.group_bits[at..at + self.words] == *definite {
                let mut m = first;
                while m != NIL {
                    let at = m as usize * self.open_words;
                    let old = &self.member_bits[at..at + self.open_words];
                    if old.iter().zip(open).all(|(&old, &new)| old & !new == 0) {
                        return false;
                    }
                    m = self.members[m as usize];
                }
                let id = self.push_member(first, open);
                self.groups[g as usize].2 = id;
                return true;
            }
            g = next;
        }
        let member = self.push_member(NIL, open);
        let id = u32::try_from(self.groups.len()).expect("fewer than 2^32 groups");
        self.groups.push((state, head, member));
        self.group_bits.extend_from_slice(definite);
        self.heads.insert(hash, id);
        true
    }

    fn push_member(&mut self, next: u32, open: &[u64]) -> u32 {
        let id = u32::try_from(self.members.len()).expect("fewer than 2^32 cache entries");
        self.members.push(next);
        self.member_bits.extend_from_slice(open);
        id
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
    let twin = earlier_twins(ops);
    let mut lookahead = Lookahead::new(ops);

    let words = n.div_ceil(64).max(1);
    // Zobrist keys of the `ok` operations; unknown ones do not count in the
    // hash (see `Cache`).
    let zobrist: Vec<u64> = (0..n)
        .map(|i| {
            if ops[i].output().is_some() {
                mix64(i as u64)
            } else {
                0
            }
        })
        .collect();
    // Linearized operations: all (`set`), the `ok` ones (`definite`), and the
    // unknown ones numbered among themselves (`open`).
    let mut set = vec![0u64; words];
    let mut definite = vec![0u64; words];
    let mut open_index = vec![NIL; n];
    let mut open_count = 0;
    for (i, op) in ops.iter().enumerate() {
        if op.output().is_none() {
            open_index[i] = open_count;
            open_count += 1;
        }
    }
    let mut open = vec![0u64; (open_count as usize).div_ceil(64)];
    let mut set_hash = 0u64;
    let mut cache = Cache::new(words, open.len());
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
            assert!(
                entry != NIL,
                "an ok operation's return is in the list until it is linearized"
            );
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
            let t = twin[node.op as usize];
            let twin_unused = t != NIL && set[t as usize / 64] & (1 << (t % 64)) == 0;
            // A write right after an unknown operation would undo it:
            // linearizing the write without it is no worse.
            let undoes = matches!(io[node.op as usize].0, Input::Write(_))
                && stack
                    .last()
                    .is_some_and(|&(c, _, _)| nodes[c as usize].ret == NIL);
            if twin_unused || undoes {
                // (For a twin: an earlier one is unused; that one is tried.)
                entry = node.next;
                continue;
            }
            if *budget == 0 {
                return Verdict::OutOfBudget;
            }
            *budget -= 1;
            let op = node.op as usize;
            if let Some(next_state) = model.step(state, node.op) {
                let (word, bit) = (op / 64, 1u64 << (op % 64));
                set[word] |= bit;
                toggle(&mut definite, &mut open, &open_index, op);
                let h = set_hash ^ zobrist[op];
                let key = h ^ mix64(u64::from(next_state) ^ 0xa076_1d64_78bd_642f);
                let viable = match &mut lookahead {
                    None => true,
                    Some(la) => {
                        if node.ret == NIL && !observed(la, &model, &nodes, next_state) {
                            false
                        } else if let Err(read) =
                            reads_possible(la, &model, &nodes, &set, next_state, entry)
                        {
                            // The operation could go here, but then `read`
                            // cannot get its value: that is as far as this
                            // path goes.
                            if deeper(&deepest, stack.len() + 1) {
                                let mut prefix = prefix_ops(&nodes, &stack);
                                prefix.push(op);
                                let limit = first_return(&nodes, node.ret);
                                let mut pending = pending_ops(&nodes, limit, entry);
                                if !pending.contains(&(read as usize)) {
                                    pending.push(read as usize);
                                    pending.sort_unstable();
                                }
                                deepest = Some(Deepest {
                                    prefix,
                                    state: model.value(next_state).clone(),
                                    blocked: read as usize,
                                    pending,
                                });
                            }
                            false
                        } else {
                            true
                        }
                    }
                };
                if viable && cache.insert(key, &definite, &open, next_state) {
                    if cache.bytes() + model.bytes() > MAX_MEMORY_BYTES {
                        return Verdict::OutOfBudget;
                    }
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
                toggle(&mut definite, &mut open, &open_index, op);
            }
            entry = node.next;
            continue;
        }

        // Dead end: the operation returning at `bound` had to be linearized
        // by now, and no candidate leads anywhere new.
        if deeper(&deepest, stack.len()) {
            deepest = Some(Deepest {
                prefix: prefix_ops(&nodes, &stack),
                state: model.value(state).clone(),
                blocked: nodes[bound as usize].op as usize,
                pending: pending_ops(&nodes, bound, NIL),
            });
        }
        let Some((call, previous, previous_bound)) = stack.pop() else {
            let deepest = deepest.expect("recorded at the first dead end");
            return Verdict::NotLinearizable(deepest);
        };
        let c = nodes[call as usize];
        let op = c.op as usize;
        set[op / 64] &= !(1u64 << (op % 64));
        toggle(&mut definite, &mut open, &open_index, op);
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

/// Whether the next `ok` reads to linearize can still return their values
/// from `state` once invocation `call` is linearized (see [`Lookahead`]): the
/// reads invoked before the first return still in the main list, and the
/// first read invoked after it (which is often the one that tells the order of
/// the appends before it). At most [`LOOKAHEAD_NODES`] entries are looked at.
fn reads_possible(
    la: &mut Lookahead,
    model: &Model<'_>,
    nodes: &[Node],
    set: &[u64],
    state: StateId,
    call: u32,
) -> Result<(), u32> {
    let own_return = nodes[call as usize].ret;
    let mut past_first_return = false;
    let mut e = nodes[MAIN as usize].next;
    let mut seen = 0;
    while e != NIL && seen < LOOKAHEAD_NODES {
        let node = nodes[e as usize];
        if node.is_call {
            if e != call && la.is_read(node.op) {
                if !la.possible(model, state, node.op, set) {
                    return Err(node.op);
                }
                if past_first_return {
                    break;
                }
            }
        } else if e != own_return {
            past_first_return = true;
        }
        e = node.next;
        seen += 1;
    }
    Ok(())
}

/// The operations on the stack, in linearization order.
fn prefix_ops(nodes: &[Node], stack: &[(u32, StateId, u32)]) -> Vec<usize> {
    stack
        .iter()
        .map(|&(c, _, _)| nodes[c as usize].op as usize)
        .collect()
}

/// The first return node in the main list other than `skip` (or `NIL`).
fn first_return(nodes: &[Node], skip: u32) -> u32 {
    let mut e = nodes[MAIN as usize].next;
    while e != NIL && (nodes[e as usize].is_call || e == skip) {
        e = nodes[e as usize].next;
    }
    e
}

/// The operations whose invocations are still in the lists before node
/// `limit` (all of them if `limit` is `NIL`), except invocation `skip`.
fn pending_ops(nodes: &[Node], limit: u32, skip: u32) -> Vec<usize> {
    let mut pending = Vec::new();
    for head in [MAIN, OPEN] {
        let mut e = nodes[head as usize].next;
        while e != NIL && e < limit {
            if nodes[e as usize].is_call && e != skip {
                pending.push(nodes[e as usize].op as usize);
            }
            e = nodes[e as usize].next;
        }
    }
    pending.sort_unstable();
    pending
}

/// Whether a dead end at `depth` goes further than `deepest`.
fn deeper(deepest: &Option<Deepest>, depth: usize) -> bool {
    match deepest {
        None => true,
        Some(d) => d.prefix.len() < depth,
    }
}

/// Whether an unknown write or append that leaves the value `state` is seen
/// by a read that can be the next one linearized: one invoked before the first
/// return of a read still in the main list. (Leaving out an unknown write or
/// append that the next read does not see keeps a linearization valid: the
/// value it made is overwritten before any read. So the search linearizes
/// unknown operations only where they are seen.)
fn observed(la: &mut Lookahead, model: &Model<'_>, nodes: &[Node], state: StateId) -> bool {
    let mut e = nodes[MAIN as usize].next;
    let mut seen = 0;
    while e != NIL {
        if seen == LOOKAHEAD_NODES {
            return true; // too far to look: allow it
        }
        let node = nodes[e as usize];
        if la.is_read(node.op) {
            if !node.is_call {
                return false;
            }
            if la.grows_into(model, state, node.op) {
                return true;
            }
        }
        e = node.next;
        seen += 1;
    }
    false
}

/// For each operation whose outcome is unknown, the latest one invoked before
/// it with the same input (or `NIL`). Twins are interchangeable once both are
/// invoked, so the search uses them in invocation order: an operation is tried
/// only after its earlier twin has been linearized. (Any linearization can be
/// rewritten so: where it uses a twin while an earlier one is unused, swap
/// their roles; neither has a return to respect.)
fn earlier_twins(ops: &[&Operation]) -> Vec<u32> {
    let mut open: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].output().is_none())
        .collect();
    open.sort_unstable_by_key(|&i| ops[i].call_event);
    let mut last: HashMap<&Input, u32, FxBuildHasher> = HashMap::default();
    let mut twin = vec![NIL; ops.len()];
    for i in open {
        if let Some(t) = last.insert(&ops[i].input, i as u32) {
            twin[i] = t;
        }
    }
    twin
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

/// Flips operation `op` in the bit set of `ok` operations or in that of
/// unknown ones (numbered by `open_index`).
fn toggle(definite: &mut [u64], open: &mut [u64], open_index: &[u32], op: usize) {
    match open_index[op] {
        NIL => definite[op / 64] ^= 1 << (op % 64),
        i => open[i as usize / 64] ^= 1 << (i % 64),
    }
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
