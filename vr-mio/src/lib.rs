//! Viewstamped Replication over TCP with a hand-written [`mio`] event loop.
//!
//! The protocol lives in [`vr_core`]; this crate only moves bytes and time.
//! Each replica runs on its own thread: one [`mio::Poll`] loop that sleeps
//! until the next socket event or the core's next deadline
//! ([`vr_core::node::ReplicaNode::poll_timeout`]), feeds received bytes to
//! the node, and writes the frames the node produces. Other threads talk to
//! the loop through a [`mio::Waker`] ([`ReplicaHandle::stats`],
//! [`ReplicaHandle::stop`]).
//!
//! - Replica-to-replica connections are opened on demand, when the node
//!   first has a frame for a peer, with a non-blocking connect; after a
//!   failure the next attempt waits an exponential backoff.
//! - Each connection's outgoing queue is bounded
//!   ([`ReplicaOptions::peer_queue_bytes_max`]); frames beyond it are dropped
//!   and counted, since VR retransmits what matters.
//! - Everything queued for a connection goes out in as few
//!   `write_vectored` calls as the socket allows (up to 64 frames a call).
//! - A connection that sends anything but valid frames of this cluster is
//!   logged, counted and closed; everyone else is served on.
//!
//! [`Client`] is a blocking client on its own small mio loop.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vr_core::{ClientConfig, Config, Service};
//! use vr_mio::{start_replica_with_listener, Client, ReplicaOptions};
//!
//! /// Appends every operation to a shared list and echoes it.
//! struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);
//! impl Service for Recorder {
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
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::new(7, 1);
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let addresses = vec![listener.local_addr()?];
//! let executed = Arc::new(Mutex::new(Vec::new()));
//! let options = ReplicaOptions::new(config.clone(), addresses.clone(), vr_core::MemberId(0));
//! let replica = start_replica_with_listener(options, listener, Recorder(executed.clone()))?;
//!
//! let mut client = Client::connect(addresses, ClientConfig::new(&config, 1), config.cluster)?;
//! assert_eq!(client.submit(b"hello".to_vec())?, b"hello");
//! replica.stop();
//! assert_eq!(*executed.lock().unwrap(), vec![b"hello".to_vec()]);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
mod conn;
mod replica;

use std::net::SocketAddr;
use std::time::Duration;

use vr_core::node::{ConnectionId, NodeStats};
use vr_core::MemberId;

pub use client::{Client, ClientError};
pub use replica::{
    start_durable_replica_with_listener, start_replica, start_replica_with_listener, ReplicaHandle,
};
pub use vr_storage::data_dir::{Boot, DataDir};

pub use vr_core::node::ReplicaOptions;

/// One open connection, as seen by the replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionStats {
    /// The id the node knows it by.
    pub id: ConnectionId,
    /// The remote address.
    pub peer: SocketAddr,
    /// For a connection this replica opened: the member it leads to.
    /// `None` for an accepted connection (a peer's or a client's).
    pub replica: Option<MemberId>,
    /// Whether an outbound connect has completed (always true for accepted ones).
    pub connected: bool,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Bytes queued and not yet written.
    pub queued_bytes: usize,
}

/// A snapshot of a replica's counters, from [`ReplicaHandle::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterStats {
    /// The node's counters: view, status, op and commit numbers, frames in,
    /// frames and bytes out per replica, rejected frames by reason.
    pub node: NodeStats,
    /// The connections open now, with their traffic.
    pub connections: Vec<ConnectionStats>,
    /// Inbound connections accepted.
    pub connections_accepted: u64,
    /// Inbound connections closed at once because `client_connections_max`
    /// were open.
    pub connections_refused: u64,
    /// Connections closed because they sent something that is not a frame
    /// of this cluster (the reason is in `node.rejected`).
    pub connections_closed_bad_input: u64,
    /// Connections whose peer closed in the middle of a frame.
    pub connections_closed_mid_frame: u64,
    /// Frames dropped because their connection's queue was full.
    pub frames_dropped_queue_full: u64,
    /// Frames dropped because there was no connection to send them on: a
    /// peer waiting out its reconnect backoff, or a client that left.
    pub frames_dropped_disconnected: u64,
    /// Outbound connection attempts, the first to each peer included.
    pub connects: u64,
    /// Outbound connection attempts after the first to the same peer.
    pub reconnects: u64,
    /// Outbound connection attempts that failed or timed out.
    pub connect_failures: u64,
    /// `write_vectored` calls: with `node` frames out, shows the batching.
    pub writes: u64,
}

/// The core's clock: nanoseconds since `origin`, the loop's start.
/// A member's address as a reconfiguration carries it: `ip:port` text.
fn parse_address(bytes: &[u8]) -> Option<std::net::SocketAddr> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn core_time(origin: std::time::Instant, now: std::time::Instant) -> vr_core::Instant {
    let ns = now.saturating_duration_since(origin).as_nanos();
    vr_core::Instant::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// A core deadline on the std clock. A deadline past what the std clock can
/// represent (centuries away) becomes a year from now: sleep, wake, recheck.
fn std_time(origin: std::time::Instant, deadline: vr_core::Instant) -> std::time::Instant {
    let year = Duration::from_secs(365 * 24 * 3600);
    origin
        .checked_add(Duration::from_nanos(deadline.as_nanos()))
        .or_else(|| std::time::Instant::now().checked_add(year))
        .unwrap_or(origin)
}
