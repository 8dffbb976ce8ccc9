//! A replicated key-value server speaking the Redis protocol (RESP2) on top
//! of `vr-core`; `docs/kv.md` says what each reply means.
//!
//! # What exists
//!
//! - [`resp`]: a RESP2 codec. [`resp::parse_command`] reads client commands
//!   (RESP arrays of bulk strings, and inline commands as typed into
//!   `telnet`) incrementally and within [`resp::Limits`];
//!   [`resp::Reply::encode`] writes replies.
//! - [`command`]: the command table ([`command::TABLE`]: name, arity, key
//!   positions, and what runs each command), [`Command`] (a command parsed
//!   once against it, used by routing, read-only checks and execution),
//!   and Redis's wording for the errors it gives before running a command.
//! - [`commands`]: the commands the store runs, one module per family
//!   (strings, keys, hashes, lists, sets, sorted sets, server).
//! - [`connection`]: the connection and server commands the front end
//!   answers (`HELLO`, `CLIENT`, `COMMAND`, `CONFIG`, `INFO`, ...).
//! - [`db`]: the keyspace: typed values, expiry by log time, and the pages
//!   (by key, and by part of a collection) that checkpoints hold.
//! - [`batch`]: the bytes of a replicated operation (a time stamp and a
//!   batch of commands and transactions, so one connection's pipeline is
//!   one VR operation) and of its result (one RESP reply per entry).
//! - [`store`]: [`Store`], the deterministic state machine, a
//!   [`vr_core::Service`]. It runs a batch in order, keeps going after a
//!   failed command as a Redis pipeline does, answers any bytes without
//!   panicking, and serves reads from local state ([`Store::read`]).
//! - [`service`]: [`service::SharedStore`], the store as the replica's
//!   service on every runtime, shared with the front end for `READONLY`
//!   reads.
//! - [`session`]: one RESP connection without the network: parsing,
//!   batching (a connection's pipeline becomes one VR operation, within
//!   `op_size_max`), the commands answered locally (`READONLY`,
//!   `VR.STATUS`, `INFO`, `MULTI` queuing, errors), reply order, bad input
//!   and buffer bounds. Every runtime's front end drives the same [`session::Session`].
//! - [`server`]: the server on tokio, mio or glommio
//!   ([`server::Runtime`]): [`server::start_node`] runs one replica
//!   (through `vr-tokio`, `vr-mio` or `vr-glommio`) and a RESP front end on
//!   the same runtime whose connections each submit their batches through a
//!   VR client proxy of their own connected to every replica (so a backup
//!   forwards to the primary); [`server::start_local_on`] runs a whole
//!   cluster on loopback.
//!
//! Apart from [`server`], nothing here does IO or starts a thread; the only
//! clock read is the session's ([`session::NodeView`]), which stamps each
//! operation with the wall time the store's key expiry follows.
//!
//! # What does not exist yet
//!
//! Blocking commands, Pub/Sub, scripting and streams (refused with a clear
//! error; `docs/kv.md` lists what is supported). Replicas keep no durable
//! state.
//!
//! # How the pieces fit
//!
//! What the server does with one connection's bytes, minus the network:
//!
//! ```
//! use vr_core::Service;
//! use vr_kv::batch::{decode_results, encode_batch, BatchResult};
//! use vr_kv::resp::{parse_command, Limits};
//! use vr_kv::Store;
//!
//! // Two pipelined commands from one client.
//! let mut received: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nGET k\r\n";
//! let mut commands = Vec::new();
//! while let Some((args, used)) = parse_command(received, &Limits::default()).unwrap() {
//!     if !args.is_empty() {
//!         commands.push(args);
//!     }
//!     received = &received[used..];
//! }
//!
//! // One VR operation; every replica's Store executes it when committed.
//! let op = encode_batch(&commands);
//! let mut store = Store::new();
//! let result = store.execute(1, &op);
//!
//! // The client gets the replies, in order.
//! let BatchResult::Replies(replies) = decode_results(&result).unwrap() else {
//!     panic!("our own batch is well formed");
//! };
//! assert_eq!(replies.concat(), b"+OK\r\n$1\r\nv\r\n");
//! ```
#![warn(missing_docs)]

pub mod admin;
pub mod batch;
pub mod command;
pub mod commands;
pub mod connection;
pub mod db;
pub mod resp;
pub mod server;
pub mod service;
pub mod session;
pub mod store;

pub use command::{is_known, is_read_only, Command};
pub use resp::{parse_command, Limits, Reply, RespError};
pub use store::Store;
