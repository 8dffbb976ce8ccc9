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
//!     let options = ReplicaOptions::new(config.clone(), addresses.clone(), i);
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
use std::time::Duration;

use vr_core::node::{ConnectionId, NodeStats};
use vr_core::Config;

pub use client::{Client, FRAME_SIZE_MAX_DEFAULT};
pub use replica::{start_replica, start_replica_with_listener, ReplicaHandle};
pub use vr_core::ClientError;

/// How to run one replica.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// The cluster's configuration, the same on every replica.
    pub config: Config,
    /// Replica `i` listens on `addresses[i]`; one per replica.
    pub addresses: Vec<SocketAddr>,
    /// This replica's index.
    pub replica: u8,
    /// Bound on the bytes queued for each connection (to a peer, or back to
    /// a client). Frames beyond it are dropped and counted: VR resends what
    /// matters, so a slow peer costs retransmissions rather than memory.
    pub peer_queue_bytes_max: usize,
    /// First delay before re-opening a failed connection to a peer.
    pub reconnect_backoff_min: Duration,
    /// The delay doubles after each failure up to this.
    pub reconnect_backoff_max: Duration,
    /// Clients whose replies are routed at a time (see `ReplicaNode::new`).
    pub client_routes_max: usize,
    /// Inbound connections (peers and clients) open at a time; further
    /// connections are closed as soon as they are accepted.
    pub client_connections_max: usize,
}

impl ReplicaOptions {
    /// Options for replica `replica` with queues of four maximal frames,
    /// reconnects backing off from 5 ms to 500 ms, 4096 client routes and
    /// 1024 inbound connections.
    pub fn new(config: Config, addresses: Vec<SocketAddr>, replica: u8) -> ReplicaOptions {
        let frame_bytes_max = config.message_size_max as usize;
        ReplicaOptions {
            config,
            addresses,
            replica,
            peer_queue_bytes_max: 4 * frame_bytes_max,
            reconnect_backoff_min: Duration::from_millis(5),
            reconnect_backoff_max: Duration::from_millis(500),
            client_routes_max: 4096,
            client_connections_max: 1024,
        }
    }
}

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
