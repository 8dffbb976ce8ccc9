//! The client table (§4, "client-table"): per client, the latest request
//! number executed and its reply, so that nothing is executed twice and a
//! retried request gets the cached reply.
//!
//! Every execution on every replica looks the table up and records into it,
//! so it is on the hot path of every operation: lookups go through a small
//! open-addressing hash index over a slab of entries, and the eviction order
//! is a linked list through the slab, kept in op-number order. Recording a
//! known client is a lookup and two pointer moves, with no allocation; a new
//! client in a full table takes the evicted client's slot. (Two `BTreeMap`s,
//! the earlier design, cost 18–25% of a committed operation's instructions
//! in `vr-bench`'s in-memory profile.)

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::message::ClientId;

/// What the table remembers of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientEntry {
    /// The latest request-number executed for this client.
    pub request_number: u64,
    /// The op-number at which it was executed.
    pub op_number: u64,
    /// The reply to that request.
    pub result: Vec<u8>,
}

/// Outcome of looking a request up in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Never executed: go ahead.
    New,
    /// The latest executed request: here is its reply to resend.
    Latest(&'a ClientEntry),
    /// Older than the latest executed: drop it.
    Stale,
}

/// Request-numbers one incarnation of a client may use (§4.3, "client
/// recovery"): a client that recovers continues in the next block of this
/// many numbers, so every number its earlier incarnations used, even of
/// requests still in flight, is below the fence the recovery sets.
pub const REQUEST_NUMBERS_PER_INCARNATION: u64 = 1 << 40;

/// The fence a recovering client's query sets (§4.3, "client recovery"):
/// the first number of the block after the one holding `latest`, the latest
/// request-number executed for it. An earlier incarnation numbered its
/// requests from the start of `latest`'s block (0, or the fence its own
/// recovery set), one by one, so all of them, executed or still in flight,
/// lie below the new fence, and the table drops them as stale once the
/// fence is recorded. `None` when the numbers are exhausted: the fence
/// would pass [`crate::message::NUMBER_MAX`], above which replicas drop
/// requests (2^22 recoveries of one client id).
pub fn recovery_fence(latest: u64) -> Option<u64> {
    (latest / REQUEST_NUMBERS_PER_INCARNATION)
        .checked_add(1)?
        .checked_mul(REQUEST_NUMBERS_PER_INCARNATION)
        .filter(|&fence| fence < crate::message::NUMBER_MAX)
}

/// No slot: an empty index bucket, or the end of the eviction list.
const NIL: u32 = u32::MAX;

/// The smallest index: 8 buckets.
const INDEX_BITS_MIN: u32 = 3;

/// One client's entry and its place in the eviction order.
#[derive(Clone)]
struct Slot {
    client_id: ClientId,
    entry: ClientEntry,
    /// The slot of the client that executed just before this one, or `NIL`.
    older: u32,
    /// The slot of the client that executed just after this one, or `NIL`.
    newer: u32,
}

/// The client table. It is updated only when an operation is executed, and
/// operations are executed in op-number order on every replica, so every
/// replica's table is the same function of the committed prefix. That is what
/// lets a new primary answer a retried request without executing it again.
///
/// Bounded: past `table_max` clients, recording a new client evicts the one
/// whose latest request executed longest ago (the smallest op-number). The
/// rule depends only on the committed prefix, so every replica evicts the
/// same client. An evicted client that retries its last request has it
/// executed again; a client idle for `table_max` other clients' requests is
/// assumed gone (see `docs/protocol.md`, "Bounded memory").
///
/// Two tables are equal when they hold the same entries and bound: the
/// layout in memory, which depends on the order of insertions, is not part
/// of what a table is.
#[derive(Clone)]
pub struct ClientTable {
    /// The entries, in no particular order; never shrinks (a new client in
    /// a full table reuses the evicted client's slot).
    slots: Vec<Slot>,
    /// Open addressing with linear probing: bucket → slot, or `NIL`. Its
    /// length is a power of two, at least twice `slots.len()`, so probes
    /// stay short. Client ids are drawn at random by clients (see
    /// `ClientConfig::client_id`), so a multiplicative hash of their bits
    /// spreads them; ids chosen to collide cost longer probes (at worst
    /// `table_max`), never a different outcome.
    index: Vec<u32>,
    /// `64 - log2(index.len())`: the shift that maps a hash to a bucket.
    index_shift: u32,
    /// The slot executed longest ago (evicted next), or `NIL` when empty.
    oldest: u32,
    /// The slot executed most recently, or `NIL` when empty.
    newest: u32,
    table_max: usize,
}

impl Default for ClientTable {
    fn default() -> ClientTable {
        ClientTable::with_max(usize::MAX)
    }
}

impl PartialEq for ClientTable {
    fn eq(&self, other: &ClientTable) -> bool {
        self.table_max == other.table_max
            && self.len() == other.len()
            && self
                .slots
                .iter()
                .all(|s| other.get(s.client_id) == Some(&s.entry))
    }
}

impl Eq for ClientTable {}

impl core::fmt::Debug for ClientTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientTable")
            .field("table_max", &self.table_max)
            .field("entries", &DebugEntries(self))
            .finish()
    }
}

/// The entries of a table in client-id order, for `Debug`.
struct DebugEntries<'a>(&'a ClientTable);

impl core::fmt::Debug for DebugEntries<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl ClientTable {
    /// An empty, unbounded table.
    pub fn new() -> ClientTable {
        ClientTable::default()
    }

    /// An empty table holding at most `table_max` clients (at least one).
    pub fn with_max(table_max: usize) -> ClientTable {
        ClientTable {
            slots: Vec::new(),
            index: alloc::vec![NIL; 1 << INDEX_BITS_MIN],
            index_shift: 64 - INDEX_BITS_MIN,
            oldest: NIL,
            newest: NIL,
            table_max: table_max.max(1),
        }
    }

    /// A table from its entries (installed from a checkpoint).
    pub fn from_entries(entries: BTreeMap<ClientId, ClientEntry>, table_max: usize) -> ClientTable {
        let mut table = ClientTable::with_max(table_max);
        let mut entries: Vec<(ClientId, ClientEntry)> = entries.into_iter().collect();
        // Linked oldest first, so the eviction order is the op-number order.
        entries.sort_by_key(|(_, entry)| entry.op_number);
        for (client_id, entry) in entries {
            table.insert_new(client_id, entry);
        }
        table
    }

    /// The entries in client-id order (sorted on each call: for checkpoints
    /// and checks, not for the request path).
    pub fn iter(&self) -> impl Iterator<Item = (&ClientId, &ClientEntry)> {
        let mut sorted: Vec<(&ClientId, &ClientEntry)> = self
            .slots
            .iter()
            .map(|s| (&s.client_id, &s.entry))
            .collect();
        sorted.sort_unstable_by_key(|&(&client_id, _)| client_id);
        sorted.into_iter()
    }

    /// How `request_number` from `client_id` relates to what was executed.
    pub fn lookup(&self, client_id: ClientId, request_number: u64) -> Lookup<'_> {
        match self.get(client_id) {
            None => Lookup::New,
            Some(entry) if request_number > entry.request_number => Lookup::New,
            Some(entry) if request_number == entry.request_number => Lookup::Latest(entry),
            Some(_) => Lookup::Stale,
        }
    }

    /// Records the execution of a request.
    pub fn record(
        &mut self,
        client_id: ClientId,
        request_number: u64,
        op_number: u64,
        result: Vec<u8>,
    ) {
        let entry = ClientEntry {
            request_number,
            op_number,
            result,
        };
        let Some(slot) = self.find(client_id) else {
            self.insert_new(client_id, entry);
            return;
        };
        debug_assert!(
            self.slots[slot as usize].entry.request_number < request_number,
            "client table must only move forward"
        );
        self.unlink(slot);
        self.slots[slot as usize].entry = entry;
        self.link_by_op_number(slot);
    }

    /// The entry of one client, if any.
    pub fn get(&self, client_id: ClientId) -> Option<&ClientEntry> {
        self.find(client_id).map(|s| &self.slots[s as usize].entry)
    }

    /// Number of clients known.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no client is known.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    // ---- The slab, the eviction list and the index ----

    /// Adds a client the table does not hold, evicting the client executed
    /// longest ago if the table is full.
    fn insert_new(&mut self, client_id: ClientId, entry: ClientEntry) {
        let slot = if self.slots.len() >= self.table_max && self.oldest != NIL {
            let victim = self.oldest;
            self.unlink(victim);
            let victim_id = self.slots[victim as usize].client_id;
            self.index_remove(victim_id);
            let reused = &mut self.slots[victim as usize];
            reused.client_id = client_id;
            reused.entry = entry;
            victim
        } else {
            let slot = u32::try_from(self.slots.len())
                .ok()
                .filter(|&s| s != NIL)
                .expect("fewer than 2^32 - 1 clients in one table");
            self.slots.push(Slot {
                client_id,
                entry,
                older: NIL,
                newer: NIL,
            });
            if self.slots.len() * 2 > self.index.len() {
                self.grow_index();
            }
            slot
        };
        self.index_insert(client_id, slot);
        self.link_by_op_number(slot);
    }

    /// Takes `slot` out of the eviction list.
    fn unlink(&mut self, slot: u32) {
        let Slot { older, newer, .. } = self.slots[slot as usize];
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
    }

    /// Puts `slot` back in the eviction list at its op-number's place: the
    /// newest end, as executions come in op-number order; walking back
    /// keeps the order right for any other sequence of records.
    fn link_by_op_number(&mut self, slot: u32) {
        let op_number = self.slots[slot as usize].entry.op_number;
        let mut older = self.newest;
        while older != NIL && self.slots[older as usize].entry.op_number > op_number {
            older = self.slots[older as usize].older;
        }
        let newer = match older {
            NIL => core::mem::replace(&mut self.oldest, slot),
            o => core::mem::replace(&mut self.slots[o as usize].newer, slot),
        };
        match newer {
            NIL => self.newest = slot,
            n => self.slots[n as usize].older = slot,
        }
        let s = &mut self.slots[slot as usize];
        s.older = older;
        s.newer = newer;
    }

    /// The bucket where a probe for `client_id` starts: Fibonacci hashing
    /// of the id's two halves folded together.
    fn bucket(&self, client_id: ClientId) -> usize {
        let folded = (client_id as u64) ^ ((client_id >> 64) as u64).rotate_left(32);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.index_shift) as usize
    }

    /// The slot of `client_id`, if the table holds it.
    fn find(&self, client_id: ClientId) -> Option<u32> {
        let mask = self.index.len() - 1;
        let mut bucket = self.bucket(client_id);
        loop {
            match self.index[bucket] {
                NIL => return None,
                s if self.slots[s as usize].client_id == client_id => return Some(s),
                _ => bucket = (bucket + 1) & mask,
            }
        }
    }

    /// Adds `client_id → slot` to the index (the id is not in it yet).
    fn index_insert(&mut self, client_id: ClientId, slot: u32) {
        let mask = self.index.len() - 1;
        let mut bucket = self.bucket(client_id);
        while self.index[bucket] != NIL {
            bucket = (bucket + 1) & mask;
        }
        self.index[bucket] = slot;
    }

    /// Removes `client_id` from the index, shifting later entries of its
    /// probe run back so that no lookup stops early at the hole.
    fn index_remove(&mut self, client_id: ClientId) {
        let mask = self.index.len() - 1;
        let mut hole = self.bucket(client_id);
        while self.slots[self.index[hole] as usize].client_id != client_id {
            hole = (hole + 1) & mask;
        }
        let mut next = (hole + 1) & mask;
        while self.index[next] != NIL {
            let slot = self.index[next];
            let home = self.bucket(self.slots[slot as usize].client_id);
            // The entry may fill the hole if the hole lies between its home
            // bucket and where it sits (cyclically).
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.index[hole] = slot;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.index[hole] = NIL;
    }

    /// Doubles the index and re-inserts every slot.
    fn grow_index(&mut self) {
        let buckets = self.index.len() * 2;
        self.index = alloc::vec![NIL; buckets];
        self.index_shift = 64 - buckets.trailing_zeros();
        for slot in 0..self.slots.len() {
            // Slots fit a u32: `insert_new` checked.
            self.index_insert(self.slots[slot].client_id, slot as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn old_requests_are_stale_and_latest_is_cached() {
        // §4.1 step 2: older → drop; latest → resend reply.
        let mut table = ClientTable::new();
        assert_eq!(table.lookup(7, 1), Lookup::New);
        table.record(7, 1, 1, vec![1]);
        table.record(7, 2, 5, vec![2]);
        assert_eq!(table.lookup(7, 1), Lookup::Stale);
        match table.lookup(7, 2) {
            Lookup::Latest(entry) => assert_eq!(entry.result, vec![2]),
            other => panic!("expected Latest, got {other:?}"),
        }
        assert_eq!(table.lookup(7, 3), Lookup::New);
        assert_eq!(table.lookup(8, 1), Lookup::New);
    }

    #[test]
    fn a_full_table_evicts_the_client_idle_longest() {
        let mut table = ClientTable::with_max(2);
        table.record(1, 1, 1, vec![]);
        table.record(2, 1, 2, vec![]);
        table.record(1, 2, 3, vec![]);
        table.record(3, 1, 4, vec![]);
        assert_eq!(table.len(), 2);
        assert!(table.get(2).is_none(), "client 2 executed longest ago");
        assert!(table.get(1).is_some() && table.get(3).is_some());
    }

    /// The table against the two ordered maps it replaced, over a long
    /// pseudo-random run with few buckets per client (so probe runs wrap
    /// and evictions shift them): same entries, same victims.
    #[test]
    fn behaves_like_ordered_maps_under_churn() {
        let mut table = ClientTable::with_max(40);
        let mut entries: BTreeMap<ClientId, ClientEntry> = BTreeMap::new();
        let mut by_op_number: BTreeMap<u64, ClientId> = BTreeMap::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        for op_number in 1..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // 64 client ids, half of them with equal low halves, so that
            // the fold of both halves matters.
            let client_id = u128::from(x % 64) << (64 * (x % 2) as u32) | u128::from(x % 3);
            let request_number = entries.get(&client_id).map_or(1, |e| e.request_number + 1);
            let result = op_number.to_le_bytes().to_vec();
            table.record(client_id, request_number, op_number, result.clone());
            let entry = ClientEntry {
                request_number,
                op_number,
                result,
            };
            if let Some(previous) = entries.insert(client_id, entry) {
                by_op_number.remove(&previous.op_number);
            } else if entries.len() > 40 {
                let (_, victim) = by_op_number.pop_first().unwrap();
                entries.remove(&victim);
            }
            by_op_number.insert(op_number, client_id);
            assert_eq!(table.len(), entries.len());
            if op_number % 97 == 0 {
                let ours: Vec<_> = table.iter().map(|(&c, e)| (c, e.clone())).collect();
                let theirs: Vec<_> = entries.iter().map(|(&c, e)| (c, e.clone())).collect();
                assert_eq!(ours, theirs, "after op {op_number}");
            }
        }
        for (&client_id, entry) in &entries {
            assert_eq!(table.get(client_id), Some(entry));
        }
        let rebuilt = ClientTable::from_entries(entries, 40);
        assert_eq!(rebuilt, table, "equal whatever the insertion history");
    }

    #[test]
    fn an_installed_table_evicts_by_op_number() {
        let entry = |op_number| ClientEntry {
            request_number: 1,
            op_number,
            result: vec![],
        };
        // Client ids in the opposite order of their op-numbers.
        let entries = (1..=3u128).map(|c| (c, entry(10 - c as u64))).collect();
        let mut table = ClientTable::from_entries(entries, 3);
        table.record(9, 1, 20, vec![]);
        assert!(table.get(3).is_none(), "client 3 executed first (op 7)");
        table.record(8, 1, 21, vec![]);
        assert!(table.get(2).is_none(), "then client 2 (op 8)");
        assert_eq!(table.len(), 3);
    }
}
