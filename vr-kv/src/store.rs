//! The key-value state machine that every replica runs: a [`Db`] changed
//! only by committed operations, a [`vr_core::Service`].
//!
//! # Determinism
//!
//! The result of every command depends only on the state and the
//! operation. Nothing reads a clock or a random number: time is the *log
//! time*, carried by the operations ([`crate::batch`]): each operation
//! holds the wall clock of the node that built it, and executing it sets
//! the log time to `max(log time, stamped time)`, so every replica sees the
//! same, never decreasing, time at the same operation. Keys expire by that
//! time ([`crate::db`]); every operation also deletes up to
//! [`SWEEP_PER_OP`] keys whose deadline has passed (active expiry, in the
//! log). `SPOP` and `SRANDMEMBER` choose by the write sequence number.
//!
//! # Reads outside the log
//!
//! A batch of reads may be answered without the log (the primary's lease,
//! backup reads) at the later of the log time and its own stamp. If a key
//! it reads would be due by then, the batch is not read-only: it goes
//! through the log, which deletes the key on every replica, so a read
//! never reports a key gone that the log still holds.

use crate::batch::{decode_op, encode_rejected, encode_results_at, Entry};
use crate::command::{check, keys_of, unsupported, Exec, Spec, ERR_READONLY};
use crate::commands::strings::string;
use crate::db::{Db, ELEMENT_PAGES, KEY_PAGES};
use crate::resp::Reply;

/// Redis's `proto-max-bulk-len`: the longest value `APPEND` may build.
pub const VALUE_BYTES_MAX_DEFAULT: usize = 512 * 1024 * 1024;

/// Expired keys each operation deletes, earliest deadline first, before its
/// commands: bounded, so an operation's cost does not depend on how many
/// keys expired at once.
pub const SWEEP_PER_OP: usize = 64;

/// Pages of the state: key pages, element pages, then the meta page.
pub const PAGES: u64 = KEY_PAGES + ELEMENT_PAGES + 1;

/// The replicated key-value store: a [`vr_core::Service`] whose operations
/// are batches of Redis commands ([`crate::batch`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Store {
    db: Db,
    /// The op number of the last operation executed, 0 before the first.
    op_number: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty store; `APPEND` and `SETRANGE` may build values up to
    /// [`VALUE_BYTES_MAX_DEFAULT`] bytes, as in Redis.
    pub fn new() -> Store {
        Store::with_value_bytes_max(VALUE_BYTES_MAX_DEFAULT)
    }

    /// An empty store whose strings may not grow past `value_bytes_max`.
    /// All replicas of one cluster must agree on it, or their states
    /// diverge.
    pub fn with_value_bytes_max(value_bytes_max: usize) -> Store {
        let mut db = Db::new();
        db.value_bytes_max = value_bytes_max;
        Store { db, op_number: 0 }
    }

    /// The keyspace.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The string at `key`, if it holds a live string.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        string(&self.db, key).ok().flatten().map(Vec::as_slice)
    }

    /// How many keys are held (as `DBSIZE`).
    pub fn len(&self) -> usize {
        self.db.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }

    /// The op number of the last operation [`vr_core::Service::execute`]
    /// ran, 0 if none.
    pub fn op_number(&self) -> u64 {
        self.op_number
    }

    /// The log time, ms since the Unix epoch.
    pub fn log_time(&self) -> u64 {
        self.db.now()
    }

    /// The write sequence number: one per command executed (and one per
    /// operation for its sweep). `WATCH` compares key versions with it.
    pub fn seq(&self) -> u64 {
        self.db.seq
    }

    /// Moves the log time forward to `time_ms` (never back), as an
    /// operation stamped `time_ms` would, and deletes due keys as its
    /// sweep would. For tests and tools driving a store directly.
    pub fn advance_time(&mut self, time_ms: u64) {
        self.db.set_now(self.db.now().max(time_ms));
        self.db.seq += 1;
        self.db.sweep(SWEEP_PER_OP);
    }

    /// Runs one command, reads and writes alike, and returns Redis's reply.
    /// An error reply leaves the store unchanged.
    pub fn apply(&mut self, args: &[Vec<u8>]) -> Reply {
        // Only writes take a sequence number: a read leaves the state as
        // it was, sequence included.
        if check(args).is_ok_and(|spec| matches!(spec.exec, Exec::Write(_))) {
            self.db.seq += 1;
        }
        let reply = run(&mut self.db, args);
        self.db.settle();
        reply
    }

    /// Runs a read-only command against the current state without changing
    /// it: for reads a replica serves locally (a `READONLY` connection),
    /// which may be stale. A write gets Redis's replica answer, `READONLY
    /// You can't write against a read only replica.`, after the same
    /// unknown-command and arity checks Redis makes first.
    pub fn read(&self, args: &[Vec<u8>]) -> Reply {
        match check(args) {
            Ok(spec) => match spec.exec {
                Exec::Read(f) => f(&self.db, args),
                Exec::Write(_) => Reply::Error(ERR_READONLY.to_owned()),
                Exec::Session => not_in_store(spec),
                Exec::Unsupported(what) => unsupported(spec.name, what),
            },
            Err(reply) => reply,
        }
    }

    fn run_transaction(&mut self, watched: &[(u64, Vec<u8>)], commands: &[Vec<Vec<u8>>]) -> Reply {
        // A watched key due now is deleted first, a change like any other.
        for (_, key) in watched {
            self.db.expire_if_due(key);
        }
        if watched.iter().any(|(seq, key)| self.db.version(key) > *seq) {
            return Reply::Array(None);
        }
        Reply::Array(Some(commands.iter().map(|args| self.apply(args)).collect()))
    }
}

fn not_in_store(spec: &Spec) -> Reply {
    Reply::Error(format!(
        "ERR '{}' is answered by the connection and cannot run in the log (inside MULTI)",
        spec.name
    ))
}

/// Runs `args` on `db`.
fn run(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    match check(args) {
        // Queued inside MULTI; the transaction's watch is checked already.
        Ok(spec) if spec.name == "unwatch" => Reply::ok(),
        Ok(spec) => match spec.exec {
            Exec::Read(f) => f(db, args),
            Exec::Write(f) => f(db, args),
            Exec::Session => not_in_store(spec),
            Exec::Unsupported(what) => unsupported(spec.name, what),
        },
        Err(reply) => reply,
    }
}

/// Commands that list keys rather than name them: a due key anywhere
/// matters to them.
fn enumerates_keys(spec: &Spec) -> bool {
    matches!(spec.name, "keys" | "scan" | "randomkey" | "dbsize")
}

impl vr_core::Service for Store {
    /// Decodes the batch, advances the log time, sweeps expired keys, runs
    /// each entry in order and returns one reply per entry
    /// ([`crate::batch::encode_results_at`]). A command that fails does not
    /// stop the ones after it, as in a Redis pipeline. Bytes that are not a
    /// batch change nothing and get a rejected result.
    fn execute(&mut self, op_number: u64, op: &[u8]) -> Vec<u8> {
        // VR executes each committed op once, in order; a duplicate request
        // is skipped by the client table, so numbers rise but may jump.
        debug_assert!(
            op_number > self.op_number,
            "op {op_number} executed after op {}",
            self.op_number
        );
        self.op_number = op_number;
        let batch = match decode_op(op) {
            Ok(batch) => batch,
            Err(e) => return encode_rejected(&format!("malformed operation: {e}")),
        };
        self.advance_time(batch.time_ms);
        let replies: Vec<Reply> = batch
            .entries
            .iter()
            .map(|entry| match entry {
                Entry::Command(args) => self.apply(args),
                Entry::Transaction { watched, commands } => self.run_transaction(watched, commands),
            })
            .collect();
        self.db.settle();
        encode_results_at(self.db.seq, &replies)
    }

    fn page_count(&self) -> u64 {
        PAGES
    }

    /// Key pages, element pages ([`crate::db`]), then the meta page: the
    /// op-number, the log time and the write sequence.
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        if index < KEY_PAGES {
            self.db.write_key_page(index as usize, out);
        } else if index < KEY_PAGES + ELEMENT_PAGES {
            self.db
                .write_element_page((index - KEY_PAGES) as usize, out);
        } else if index == PAGES - 1 {
            out.extend_from_slice(&self.op_number.to_le_bytes());
            out.extend_from_slice(&self.db.now().to_le_bytes());
            out.extend_from_slice(&self.db.seq.to_le_bytes());
        }
    }

    fn install_pages(&mut self, pages: &[&[u8]]) {
        let key_pages = &pages[..pages.len().min(KEY_PAGES as usize)];
        let element_pages = pages
            .get(KEY_PAGES as usize..(KEY_PAGES + ELEMENT_PAGES) as usize)
            .unwrap_or(&[]);
        let meta = pages.get((PAGES - 1) as usize).copied().unwrap_or(&[]);
        let word = |i: usize| {
            meta.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        self.op_number = word(0);
        self.db.set_now(word(1));
        self.db.seq = word(2);
        // Pages were checked against their digests: a malformed one is a
        // bug in the writer; keep what parses.
        if !self.db.install(key_pages, element_pages) {
            tracing::error!("malformed store page");
        }
    }

    fn take_changed_pages(&mut self, changed: &mut Vec<u64>) -> bool {
        changed.extend(self.db.take_dirty_pages());
        // The meta page changes with every operation.
        changed.push(PAGES - 1);
        true
    }

    /// A batch is read-only when every entry is a command that only reads
    /// and no key it reads would be due at the later of the log time and
    /// the batch's stamp (see the module docs).
    fn is_read_only(&self, op: &[u8]) -> bool {
        let Ok(batch) = decode_op(op) else {
            return false;
        };
        let time = self.db.now().max(batch.time_ms);
        !batch.entries.is_empty()
            && batch.entries.iter().all(|entry| match entry {
                Entry::Command(args) => match check(args) {
                    Ok(spec) if spec.is_read_only() => {
                        if enumerates_keys(spec) {
                            !self.db.any_due_at(time)
                        } else {
                            keys_of(spec, args).all(|key| !self.db.due_at(key, time))
                        }
                    }
                    Ok(_) => false,
                    // Fails without touching the store either way.
                    Err(_) => crate::command::is_read_only(args),
                },
                Entry::Transaction { .. } => false,
            })
    }

    /// The replies `execute` would give, without changing anything, at
    /// the later of the log time and the batch's stamp.
    fn query(&self, op: &[u8]) -> Vec<u8> {
        match decode_op(op) {
            Ok(batch) => {
                let log_time = self.db.now();
                self.db.set_now(log_time.max(batch.time_ms));
                let replies: Vec<Reply> = batch
                    .entries
                    .iter()
                    .map(|entry| match entry {
                        Entry::Command(args) => self.read(args),
                        Entry::Transaction { .. } => Reply::Error(ERR_READONLY.to_owned()),
                    })
                    .collect();
                self.db.set_now(log_time);
                encode_results_at(self.db.seq, &replies)
            }
            Err(e) => encode_rejected(&format!("malformed operation: {e}")),
        }
    }
}
