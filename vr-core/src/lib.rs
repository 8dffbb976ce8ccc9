//! Viewstamped Replication Revisited (Liskov & Cowling, 2012) as a sans-IO
//! state machine.
//!
//! A [`Replica`] is pure state: it performs no IO, reads no clock and spawns
//! no thread. The embedding feeds it inputs and carries out its outputs:
//!
//! - inputs: [`Replica::handle_message`] for every decoded frame, with the
//!   epoch its header carries, and [`Replica::handle_timeout`]; both take
//!   the current [`Instant`];
//! - one output: [`Replica::poll_output`]. The contract: after every input
//!   drain `poll_output` until it returns [`Output::Timeout`]`(t)`; when
//!   `t <= now` call `handle_timeout(now)` and drain again; otherwise call
//!   it at `t`. Draining changes no state. Batching (§6) is the batch
//!   timer, due at once without `batch_delay_ns`: feeding every input that
//!   is ready before firing due timers batches those requests into one
//!   Prepare (see [`Replica`]).
//!
//! Replicas are named by their [`MemberId`] (stable across epochs) in
//! [`Output::Send`], and by their [`ReplicaIndex`] (their place in one
//! epoch's configuration) in the protocol; [`Config::member_id`] and
//! [`Config::index_of_member`] convert. Reconfiguration (§7) moves a
//! cluster to new members in a new *epoch*; see `docs/protocol.md`,
//! "Reconfiguration".
//!
//! Durable replicas ([`Config::durability`] = [`Durability::Disk`]) also
//! emit [`Output::Persist`]: the embedding writes it to disk, syncs, and
//! calls [`Replica::handle_persisted`]; the replica acknowledges and
//! promises only what is on disk, and one whose disk survived a crash
//! comes back with [`Replica::restart`].
//!
//! Randomness (timer jitter) comes from a PRNG seeded by [`Config::seed`], so
//! the same inputs give the same outputs. The replicated service is a
//! [`Service`]: its [`Service::execute`] upcall runs once per committed
//! operation, in op-number order, on every replica.
//!
//! The [`Client`] proxy is a state machine of the same shape: it drains
//! with [`Client::poll_output`] into [`ClientOutput`]s (sends,
//! completions, failures, and the deadline last). [`codec`] turns
//! messages into frames and back.
//!
//! Most embeddings use [`node`] instead: [`node::ReplicaNode`] and
//! [`node::ClientNode`] put the codec, a connection table, the member →
//! address book, reconnect backoff, queue bounds and reply routing around
//! a replica or a client, with the same contract (`handle_*(now, …)` in,
//! `poll_output(&mut buffer)` out, drained until `Timeout`). An adapter
//! on them keeps only sockets, timers and buffers; the `node` module docs
//! have a complete drive loop.
//!
//! # A drive loop
//!
//! ```
//! use std::collections::VecDeque;
//! use vr_core::{Client, ClientConfig, ClientOutput, Config, Instant, MemberId, Message, Output};
//! use vr_core::Replica;
//! use vr_core::{ReplicaIndex, Service};
//!
//! /// A counter: every operation adds its first byte and returns the total.
//! struct Counter(u64);
//! impl Service for Counter {
//!     fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
//!         self.0 += u64::from(op[0]);
//!         self.0.to_le_bytes().to_vec()
//!     }
//!     // The whole state is one page (see `Service` for larger states).
//!     fn page_count(&self) -> u64 {
//!         1
//!     }
//!     fn read_page(&self, _index: u64, out: &mut Vec<u8>) {
//!         out.extend_from_slice(&self.0.to_le_bytes());
//!     }
//!     fn install_pages(&mut self, pages: &[&[u8]]) {
//!         self.0 = pages[0].try_into().map(u64::from_le_bytes).unwrap_or(0);
//!     }
//! }
//!
//! let config = Config::new(1, 3);
//! let now = Instant::ZERO;
//! let mut replicas: Vec<_> = (0..3)
//!     .map(|i| Replica::new(config.clone(), ReplicaIndex(i), Counter(0), now).unwrap())
//!     .collect();
//! let mut client = Client::new(ClientConfig::new(&config, 42), 0);
//! client.request(now, vec![5]).unwrap();
//!
//! // A network that delivers every message at once, in order. A real
//! // embedding encodes with `vr_core::codec` and writes to sockets.
//! let mut to_replicas: VecDeque<(MemberId, u32, Message)> = VecDeque::new();
//! let mut result = None;
//! while result.is_none() {
//!     // The client's outputs, drained the same way.
//!     loop {
//!         match client.poll_output() {
//!             ClientOutput::Send { to, epoch, message } => to_replicas.push_back((to, epoch, message)),
//!             ClientOutput::Completed(done) => result = Some(done),
//!             // Abandoned after `request_attempts_max` attempts.
//!             ClientOutput::Failed { error, .. } => panic!("{error}"),
//!             ClientOutput::Timeout(_) => break,
//!         }
//!     }
//!     let Some((to, epoch, message)) = to_replicas.pop_front() else { break };
//!     // Sends name members; replicas are stored by index.
//!     let index = config.index_of_member(to).unwrap();
//!     let replica = &mut replicas[index.as_usize()];
//!     replica.handle_message(now, epoch, message);
//!     // Drain until the deadline; fire it when it is due (here: the
//!     // batch timer, which sends the Prepare), and drain again.
//!     loop {
//!         match replica.poll_output() {
//!             Output::Send { to, epoch, message } => to_replicas.push_back((to, epoch, message)),
//!             Output::Reply(reply) => client.handle_reply(now, reply),
//!             // Only after a reconfiguration (§7): tell the client.
//!             Output::NewEpoch { .. } => {}
//!             // Only with `Durability::Disk`: write it, sync, then call
//!             // `replica.handle_persisted(now, persist.sequence)`.
//!             Output::Persist(_) => {}
//!             Output::Timeout(Some(t)) if t <= now => replica.handle_timeout(now),
//!             // A real embedding sleeps until then (or the next input).
//!             Output::Timeout(_) => break,
//!         }
//!     }
//! }
//! assert_eq!(result.unwrap().result, 5u64.to_le_bytes());
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod checkpoint;
pub mod client;
pub mod client_table;
pub mod codec;
pub mod config;
mod id_hash;
pub mod message;
pub mod node;
pub mod prng;
pub mod replica;
pub mod time;

pub use client::{Client, ClientConfig, ClientError, ClientOutput, Completion};
pub use config::Durability;
pub use config::InjectedBug;
pub use config::{Config, ConfigError};
pub use message::{ClientId, EntryKind, LogEntry, MemberId, Message, ReplicaIndex, StartEpoch};
pub use replica::{DurableState, OnDisk, Output, Persist, Replica, Stats, Status};
pub use time::Instant;

/// The replicated service: a deterministic state machine (§2, "the service").
///
/// `execute` is called once for every committed operation, in op-number
/// order, on every replica. It must be deterministic: the same sequence of
/// operations must give the same results and the same state everywhere.
///
/// For checkpoints and state transfer (§5.1–5.2) the service also shows its
/// state as a list of *pages*: byte strings, numbered from 0, that together
/// hold the whole state. Replicas that executed the same operations must
/// produce the same pages, byte for byte. A replica that falls behind
/// receives only the pages whose digests differ from its own, so pages
/// should be small (a few KiB) and a write should change few of them:
/// fixed-size slices of an array, or hash buckets of a map, not one
/// serialization of everything.
pub trait Service {
    /// Executes `op`, the operation committed at `op_number`, and returns the
    /// result for the client.
    fn execute(&mut self, op_number: u64, op: &[u8]) -> alloc::vec::Vec<u8>;

    /// How many pages the state has now.
    fn page_count(&self) -> u64;

    /// Appends page `index` (below [`Service::page_count`]) to `out`.
    fn read_page(&self, index: u64, out: &mut alloc::vec::Vec<u8>);

    /// Replaces the whole state with `pages`, as read by [`Service::read_page`]
    /// on a replica that executed the same operations. The pages were checked
    /// against their digests before this call.
    fn install_pages(&mut self, pages: &[&[u8]]);

    /// Optional: appends to `changed` the pages changed since the last call
    /// and returns `true`, so that a checkpoint rereads only those. The
    /// default returns `false`: every page is reread at each checkpoint.
    fn take_changed_pages(&mut self, changed: &mut alloc::vec::Vec<u64>) -> bool {
        let _ = changed;
        false
    }

    /// Whether `op` only reads the state. Read-only operations may be
    /// answered with [`Service::query`] without going through the log: by
    /// the primary under a lease, and by any replica for a backup read
    /// (§6). The default says no operation is read-only.
    fn is_read_only(&self, op: &[u8]) -> bool {
        let _ = op;
        false
    }

    /// Answers the read-only `op` from the current state, as
    /// [`Service::execute`] would, without changing it. Called only for ops
    /// that [`Service::is_read_only`] accepts.
    fn query(&self, op: &[u8]) -> alloc::vec::Vec<u8> {
        let _ = op;
        alloc::vec::Vec::new()
    }
}
