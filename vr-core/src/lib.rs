//! Viewstamped Replication Revisited (Liskov & Cowling, 2012) as a sans-IO
//! state machine.
//!
//! A [`Replica`] is pure state: it performs no IO, reads no clock and spawns
//! no thread. The embedding feeds it inputs and carries out its outputs:
//!
//! - inputs: [`Replica::handle_message`] for every decoded frame and
//!   [`Replica::handle_timeout`] when the deadline from
//!   [`Replica::poll_timeout`] passes; both take the current [`Instant`];
//! - outputs: [`Replica::poll_action`], to be drained completely after every
//!   input: send a message to a replica, or a reply to a client.
//!
//! Randomness (timer jitter) comes from a PRNG seeded by [`Config::seed`], so
//! the same inputs give the same outputs. The replicated service is a
//! [`Service`]: its [`Service::execute`] upcall runs once per committed
//! operation, in op-number order, on every replica.
//!
//! The [`Client`] proxy is a state machine of the same shape. [`codec`] turns
//! messages into frames and back.
//!
//! # A drive loop
//!
//! ```
//! use std::collections::VecDeque;
//! use vr_core::{Action, Client, ClientConfig, Config, Instant, Message, Replica, Service};
//!
//! /// A counter: every operation adds its first byte and returns the total.
//! struct Counter(u64);
//! impl Service for Counter {
//!     fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
//!         self.0 += u64::from(op[0]);
//!         self.0.to_le_bytes().to_vec()
//!     }
//! }
//!
//! let config = Config::new(1, 3);
//! let now = Instant::ZERO;
//! let mut replicas: Vec<_> = (0..3)
//!     .map(|i| Replica::new(config.clone(), i, Counter(0), now).unwrap())
//!     .collect();
//! let mut client = Client::new(ClientConfig::new(&config, 42), 0);
//! client.request(now, vec![5]).unwrap();
//!
//! // A network that delivers every message at once, in order. A real
//! // embedding encodes with `vr_core::codec` and writes to sockets.
//! let mut to_replicas: VecDeque<(u8, Message)> = VecDeque::new();
//! let mut result = None;
//! while result.is_none() {
//!     while let Some(action) = client.poll_action() {
//!         let vr_core::ClientAction::Send { replica, message } = action;
//!         to_replicas.push_back((replica, message));
//!     }
//!     let Some((to, message)) = to_replicas.pop_front() else { break };
//!     let replica = &mut replicas[usize::from(to)];
//!     replica.handle_message(now, message);
//!     while let Some(action) = replica.poll_action() {
//!         match action {
//!             Action::Send { replica, message } => to_replicas.push_back((replica, message)),
//!             Action::Reply(reply) => result = client.handle_reply(now, reply),
//!         }
//!     }
//! }
//! assert_eq!(result.unwrap().result, 5u64.to_le_bytes());
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod client;
pub mod client_table;
pub mod codec;
pub mod config;
pub mod message;
pub mod node;
pub mod prng;
pub mod replica;
pub mod time;

pub use client::{Client, ClientAction, ClientConfig, ClientError, Completion};
pub use config::InjectedBug;
pub use config::{Config, ConfigError};
pub use message::{ClientId, LogEntry, Message, ReplicaIndex};
pub use replica::{Action, Replica, Stats, Status};
pub use time::Instant;

/// The replicated service: a deterministic state machine (§2, "the service").
///
/// `execute` is called once for every committed operation, in op-number
/// order, on every replica. It must be deterministic: the same sequence of
/// operations must give the same results and the same state everywhere.
pub trait Service {
    /// Executes `op`, the operation committed at `op_number`, and returns the
    /// result for the client.
    fn execute(&mut self, op_number: u64, op: &[u8]) -> alloc::vec::Vec<u8>;
}
