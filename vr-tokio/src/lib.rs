//! Viewstamped Replication over TCP on tokio.
//!
//! The protocol lives in `vr-core` ([`vr_core::node::ReplicaNode`] and
//! [`vr_core::node::ClientNode`]); this crate only moves bytes and time
//! between them and sockets:
//!
//! - [`start_replica`] runs one replica on its own thread with a
//!   current-thread tokio runtime and returns a [`ReplicaHandle`] to read
//!   [`AdapterStats`] and to stop it. One task owns the node; every
//!   connection has a task of its own that owns the socket, writes queued
//!   frames in batches and hands what it reads to the node's task.
//! - [`Client`] submits operations from the caller's tokio runtime, one at a
//!   time, connecting to replicas on demand.
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use vr_core::{ClientConfig, Config, Service};
//! use vr_tokio::{start_replica, Client, ReplicaOptions};
//!
//! /// Appends every operation to a shared log and echoes it.
//! struct Log(Arc<Mutex<Vec<Vec<u8>>>>);
//! impl Service for Log {
//!     fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
//!         self.0.lock().unwrap().push(op.to_vec());
//!         op.to_vec()
//!     }
//!     // For checkpoints and state transfer: one page per operation.
//!     fn page_count(&self) -> u64 {
//!         self.0.lock().unwrap().len() as u64
//!     }
//!     fn read_page(&self, index: u64, out: &mut Vec<u8>) {
//!         out.extend_from_slice(&self.0.lock().unwrap()[index as usize]);
//!     }
//!     fn install_pages(&mut self, pages: &[&[u8]]) {
//!         *self.0.lock().unwrap() = pages.iter().map(|p| p.to_vec()).collect();
//!     }
//! }
//!
//! # async fn example() -> std::io::Result<()> {
//! let config = Config::new(7, 3);
//! let addresses: Vec<std::net::SocketAddr> = vec![
//!     "127.0.0.1:7000".parse().unwrap(),
//!     "127.0.0.1:7001".parse().unwrap(),
//!     "127.0.0.1:7002".parse().unwrap(),
//! ];
//! let mut replicas = Vec::new();
//! for i in 0..3 {
//!     let options = ReplicaOptions::new(config.clone(), addresses.clone(), vr_core::MemberId(i));
//!     replicas.push(start_replica(options, Log(Arc::default()))?);
//! }
//! let mut client = Client::connect(addresses, ClientConfig::new(&config, 42), 7).await?;
//! assert_eq!(client.submit(b"hello".to_vec()).await.unwrap(), b"hello");
//! for replica in replicas {
//!     replica.stop();
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
mod link;
mod replica;

use std::net::SocketAddr;

use vr_core::node::{ConnectionId, NodeStats};

pub use client::Client;
pub use replica::{
    start_durable_replica_with_listener, start_replica, start_replica_with_listener, ReplicaHandle,
};
pub use vr_core::ClientError;
pub use vr_storage::data_dir::{Boot, DataDir};

pub use vr_core::node::ReplicaOptions;

/// What one inbound connection has delivered so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionStats {
    /// The adapter's id for the connection, as the node sees it.
    pub connection: ConnectionId,
    /// The remote address (a peer's or a client's ephemeral port).
    pub peer: SocketAddr,
    /// Whole frames accepted from it.
    pub frames_in: u64,
    /// Bytes of those frames.
    pub bytes_in: u64,
}

/// A snapshot of a replica's counters: the node's and the adapter's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterStats {
    /// The node: view, status, op and commit numbers, rejected frames by
    /// reason, traffic out per replica.
    pub node: NodeStats,
    /// Inbound connections open now, by id.
    pub inbound: Vec<ConnectionStats>,
    /// Inbound connections accepted.
    pub connections_accepted: u64,
    /// Inbound connections closed at once because `client_connections_max`
    /// were open.
    pub connections_refused: u64,
    /// Inbound connections closed because they sent a frame the node
    /// rejected (counted by reason in `node.rejected`).
    pub connections_closed_bad_input: u64,
    /// Inbound connections that ended in the middle of a frame.
    pub connections_closed_mid_frame: u64,
    /// Frames dropped because their connection's queue was full.
    pub frames_dropped_queue_full: u64,
    /// Frames dropped because their connection failed or was gone.
    pub frames_dropped_disconnected: u64,
    /// Connections to peers re-opened after a failure.
    pub reconnects: u64,
    /// Connect attempts to peers that failed.
    pub connect_failures: u64,
}
