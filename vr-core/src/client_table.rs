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
/// Bounded by the number of distinct clients; evicting idle clients needs a
/// deterministic rule all replicas agree on, which is future work noted in
/// `docs/protocol.md`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTable {
    entries: BTreeMap<ClientId, ClientEntry>,
}

impl ClientTable {
    /// An empty table.
    pub fn new() -> ClientTable {
        ClientTable::default()
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
        self.entries.insert(
            client_id,
            ClientEntry {
                request_number,
                op_number,
                result,
            },
        );
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
}
