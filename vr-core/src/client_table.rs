//! The client table (§4, "client-table"): per client, the latest request
//! number executed and its reply, so that nothing is executed twice and a
//! retried request gets the cached reply.

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

/// The client table. It is updated only when an operation is executed, and
/// operations are executed in op-number order on every replica, so every
/// replica's table is the same function of the committed prefix. That is what
/// lets a new primary answer a retried request without executing it again.
///
/// Bounded: past `table_max` clients, recording a new client evicts the one
/// whose latest request executed longest ago. The rule depends only on the
/// committed prefix, so every replica evicts the same client. An evicted
/// client that retries its last request has it executed again; a client
/// idle for `table_max` other clients' requests is assumed gone (see
/// `docs/protocol.md`, "Bounded memory").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTable {
    entries: BTreeMap<ClientId, ClientEntry>,
    /// `op_number -> client`, to find the eviction victim without a scan.
    by_op_number: BTreeMap<u64, ClientId>,
    table_max: usize,
}

impl Default for ClientTable {
    fn default() -> ClientTable {
        ClientTable::with_max(usize::MAX)
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
            entries: BTreeMap::new(),
            by_op_number: BTreeMap::new(),
            table_max: table_max.max(1),
        }
    }

    /// A table from its entries (installed from a checkpoint).
    pub fn from_entries(entries: BTreeMap<ClientId, ClientEntry>, table_max: usize) -> ClientTable {
        let by_op_number = entries
            .iter()
            .map(|(&client, entry)| (entry.op_number, client))
            .collect();
        ClientTable {
            entries,
            by_op_number,
            table_max: table_max.max(1),
        }
    }

    /// The entries in client-id order.
    pub fn iter(&self) -> impl Iterator<Item = (&ClientId, &ClientEntry)> {
        self.entries.iter()
    }

    /// How `request_number` from `client_id` relates to what was executed.
    pub fn lookup(&self, client_id: ClientId, request_number: u64) -> Lookup<'_> {
        match self.entries.get(&client_id) {
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
        debug_assert!(
            self.entries
                .get(&client_id)
                .is_none_or(|e| e.request_number < request_number),
            "client table must only move forward"
        );
        let previous = self.entries.insert(
            client_id,
            ClientEntry {
                request_number,
                op_number,
                result,
            },
        );
        match previous {
            Some(previous) => {
                self.by_op_number.remove(&previous.op_number);
            }
            None if self.entries.len() > self.table_max => {
                if let Some((_, victim)) = self.by_op_number.pop_first() {
                    self.entries.remove(&victim);
                }
            }
            None => {}
        }
        self.by_op_number.insert(op_number, client_id);
    }

    /// The entry of one client, if any.
    pub fn get(&self, client_id: ClientId) -> Option<&ClientEntry> {
        self.entries.get(&client_id)
    }

    /// Number of clients known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no client is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
}
