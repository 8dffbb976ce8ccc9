//! Bytes and connections in, bytes and connections out: everything an
//! embedding needs around a [`Replica`](crate::Replica) or a
//! [`Client`](crate::Client) except the sockets and the clock.
//!
//! A [`ReplicaNode`] wraps a replica with the wire codec, a connection
//! table, the member → address book, reconnect backoff, per-connection
//! queue accounting and client reply routing. A [`ClientNode`] does the
//! same for a client. An adapter keeps only socket calls, timers and
//! buffers: it never decodes a message or an address.
//!
//! # The contract
//!
//! Both nodes have the same shape (quinn-proto's and str0m's):
//!
//! - **inputs**, each with the current [`Instant`]:
//!   `handle_bytes(now, connection, bytes)` for bytes read from a
//!   connection, `handle_timeout(now)` once the deadline passed,
//!   `handle_accepted`, `handle_connected`, `handle_written` and
//!   `handle_closed` for what happened to sockets, and for a durable
//!   replica `handle_persisted`;
//! - **outputs**, drained with `poll_output(&mut buffer)` after every
//!   batch of inputs until it returns [`Output::Timeout`]: open a
//!   connection ([`Output::Connect`]), send a frame that was appended to
//!   the caller's `buffer` ([`Output::Transmit`]), close a connection
//!   ([`Output::Close`]), or something to act on or log
//!   ([`Output::Event`]). Draining never changes protocol state.
//! - **batching is a timer.** With [`crate::Config::batch_delay_ns`] 0 the
//!   primary's batch of new requests is due at the instant its first
//!   request arrived, so [`Output::Timeout`] names `now`. An embedding that
//!   feeds every connection that is ready (one `epoll_wait`, one batch of
//!   queued events) before it calls `handle_timeout` sends the requests of
//!   all of them in one Prepare (§6, "batching"); one that calls it after
//!   each read sends one Prepare per request. Both are correct.
//!
//! A whole embedding, in memory: one replica, one client, and "sockets"
//! that are queues of bytes (`vr-core/examples/udp_loop.rs` does the same
//! over UDP with three replicas; the adapters over TCP):
//!
//! ```
//! use std::collections::VecDeque;
//! use vr_core::node::{ClientEvent, ClientNode, ClientOptions, ConnectionId, Output};
//! use vr_core::node::{ReplicaNode, ReplicaOptions};
//! use vr_core::{Client, ClientConfig, Config, Instant, MemberId, Service};
//!
//! struct Echo;
//! impl Service for Echo {
//!     fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
//!         op.to_vec()
//!     }
//!     fn page_count(&self) -> u64 {
//!         0
//!     }
//!     fn read_page(&self, _index: u64, _out: &mut Vec<u8>) {}
//!     fn install_pages(&mut self, _pages: &[&[u8]]) {}
//! }
//!
//! let config = Config::new(7, 1);
//! let address = "127.0.0.1:7000".parse().unwrap();
//! let now = Instant::ZERO;
//! let options = ReplicaOptions::new(config.clone(), vec![address], MemberId(0));
//! let mut replica = ReplicaNode::new(options.build_replica(Echo, now).unwrap(), &options, now);
//! let client = Client::new(ClientConfig::new(&config, 1), 0);
//! let mut client = ClientNode::new(client, 7, 1 << 20, &ClientOptions::new(vec![address]));
//!
//! // One connection, as the two ends name it, and the bytes in flight.
//! let (mut at_client, mut at_replica): (Option<ConnectionId>, Option<ConnectionId>) = (None, None);
//! let (mut to_replica, mut to_client) = (VecDeque::new(), VecDeque::new());
//! let mut buffer = Vec::new();
//! client.request(now, b"hello".to_vec()).unwrap();
//! let result = 'run: loop {
//!     // The client's outputs, drained until it waits.
//!     loop {
//!         buffer.clear();
//!         match client.poll_output(&mut buffer) {
//!             Output::Connect { connection, .. } => {
//!                 // "connect": the replica accepts; the client hears it is open.
//!                 at_client = Some(connection);
//!                 at_replica = replica.handle_accepted(now, None);
//!                 client.handle_connected(now, connection);
//!             }
//!             Output::Transmit { connection, len } => {
//!                 to_replica.extend(&buffer[buffer.len() - len..]);
//!                 client.handle_written(connection, len);
//!             }
//!             Output::Event(ClientEvent::Completed(done)) => break 'run done.result,
//!             Output::Timeout(Some(t)) if t <= now => client.handle_timeout(now),
//!             Output::Timeout(_) => break,
//!             _ => {}
//!         }
//!     }
//!     // The replica: every input of the turn first, then its outputs, with
//!     // the timers due (the batch timer among them) fired on the way.
//!     let bytes: Vec<u8> = to_replica.drain(..).collect();
//!     let used = replica.handle_bytes(now, at_replica.unwrap(), &bytes).unwrap();
//!     assert_eq!(used, bytes.len(), "whole frames");
//!     loop {
//!         buffer.clear();
//!         match replica.poll_output(&mut buffer) {
//!             Output::Transmit { connection, len } => {
//!                 to_client.extend(&buffer[buffer.len() - len..]);
//!                 replica.handle_written(connection, len);
//!             }
//!             Output::Timeout(Some(t)) if t <= now => replica.handle_timeout(now),
//!             Output::Timeout(_) => break,
//!             _ => {}
//!         }
//!     }
//!     let bytes: Vec<u8> = to_client.drain(..).collect();
//!     client.handle_bytes(now, at_client.unwrap(), &bytes).unwrap();
//! };
//! assert_eq!(result, b"hello");
//! ```
//!
//! A [`DecodeError`] from `handle_bytes` other
//! than truncation means the peer is broken or hostile: the node counted
//! it and forgot the connection; the adapter closes the socket.

use alloc::vec::Vec;
use core::net::SocketAddr;

mod client_node;
mod links;
mod options;
mod replica_node;

pub use client_node::{ClientEvent, ClientNode, ClientOptions};
pub use options::ReplicaOptions;
pub use replica_node::{NodeEvent, ReplicaNode};

use crate::codec::{self, DecodeError};
use crate::message::{MemberId, Message};
use crate::time::Instant;

/// The node's name for one connection. The node allocates it: for an
/// outbound connection in [`Output::Connect`], for an inbound one in
/// `handle_accepted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConnectionId(pub u64);

impl core::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// What the adapter must do next, from `poll_output`. `E` is the node's
/// event type ([`NodeEvent`] or [`ClientEvent`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<E> {
    /// Open a connection to `address` for `connection`, and report the
    /// outcome with `handle_connected` or `handle_closed`. Frames for it
    /// may follow at once: queue them until it is open.
    Connect {
        /// The id the node gave it.
        connection: ConnectionId,
        /// Where the member listens.
        address: SocketAddr,
    },
    /// The last `len` bytes of the caller's buffer are one frame to queue
    /// on `connection`. The node already checked the connection's queue
    /// bound (see `handle_written`).
    Transmit {
        /// Where it goes.
        connection: ConnectionId,
        /// The frame's size, header included.
        len: usize,
    },
    /// Close `connection` and drop what is queued on it: the node gave up
    /// on it (a connect timed out, or the member moved) and forgot it.
    Close {
        /// The connection.
        connection: ConnectionId,
    },
    /// Something to act on or to log.
    Event(E),
    /// Nothing more to do until this instant (`None`: until an input):
    /// call `handle_timeout` then. An instant at or before now means at
    /// once; the embedding first feeds whatever else is ready (batching).
    Timeout(Option<Instant>),
}

/// How a connection ended, for `handle_closed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The other end closed it between frames.
    Eof,
    /// The other end closed it in the middle of a frame.
    EofMidFrame,
    /// An IO error, or a connect that failed.
    Failed,
    /// The node rejected what it sent (`handle_bytes` returned an error).
    Rejected,
}

/// Why frames were rejected, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RejectCounts {
    /// Bad magic or unsupported version: not our protocol.
    pub foreign: u64,
    /// Larger than the frame size limit.
    pub oversized: u64,
    /// From another cluster.
    pub wrong_cluster: u64,
    /// Checksum mismatch.
    pub bad_checksum: u64,
    /// Unknown command or malformed body.
    pub malformed: u64,
}

impl RejectCounts {
    pub(crate) fn count(&mut self, error: &crate::codec::DecodeError) {
        use crate::codec::DecodeError;
        match error {
            DecodeError::BadMagic | DecodeError::UnsupportedVersion(_) => self.foreign += 1,
            DecodeError::Oversized { .. } => self.oversized += 1,
            DecodeError::WrongCluster { .. } => self.wrong_cluster += 1,
            DecodeError::BadChecksum => self.bad_checksum += 1,
            DecodeError::UnknownCommand(_)
            | DecodeError::Malformed(_)
            | DecodeError::Truncated { .. } => self.malformed += 1,
        }
    }
}

/// One connection open now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConnectionStats {
    /// Its id.
    pub connection: ConnectionId,
    /// The remote address, where the adapter said it.
    pub remote: Option<SocketAddr>,
    /// The member this node connected to; `None` for an accepted one.
    pub member: Option<MemberId>,
    /// Whether it is open (an outbound one may still be connecting).
    pub connected: bool,
    /// Whole frames accepted from it.
    pub frames_in: u64,
    /// Bytes of those frames.
    pub bytes_in: u64,
    /// Frames queued on it.
    pub frames_out: u64,
    /// Bytes of those frames.
    pub bytes_out: u64,
    /// Writes reported on it: fewer than `frames_out` when frames queued
    /// together left together.
    pub writes: u64,
    /// Bytes queued and not yet reported written.
    pub queued_bytes: usize,
}

/// The connection layer's counters, the same for every adapter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LinkStats {
    /// The connections open now.
    pub connections: Vec<ConnectionStats>,
    /// Inbound connections accepted.
    pub connections_accepted: u64,
    /// Inbound connections refused because the cap were open.
    pub connections_refused: u64,
    /// Connections closed because they sent something that is not a frame
    /// of this cluster (by reason in [`NodeStats::rejected`]).
    pub connections_closed_bad_input: u64,
    /// Connections whose other end closed in the middle of a frame.
    pub connections_closed_mid_frame: u64,
    /// Frames dropped because their connection's queue was full.
    pub frames_dropped_queue_full: u64,
    /// Frames dropped because there was no connection to send them on: a
    /// peer waiting out its backoff or of unknown address, or a client
    /// that left.
    pub frames_dropped_disconnected: u64,
    /// Outbound connection attempts, the first to each peer included.
    pub connects: u64,
    /// Outbound connection attempts after the first to the same peer.
    pub reconnects: u64,
    /// Outbound connection attempts that failed or timed out.
    pub connect_failures: u64,
    /// Writes reported with `handle_written`: beside frames out, shows
    /// the batching of the adapter's writes.
    pub writes: u64,
}

/// A snapshot of what a replica node has done: one type for every adapter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeStats {
    /// Frames accepted.
    pub frames_in: u64,
    /// Bytes of accepted frames.
    pub bytes_in: u64,
    /// Frames sent to replicas.
    pub frames_to_replicas: u64,
    /// Bytes of those frames.
    pub bytes_to_replicas: u64,
    /// Frames sent to clients (replies and epoch notices).
    pub frames_to_clients: u64,
    /// Bytes of those frames.
    pub bytes_to_clients: u64,
    /// Rejected frames, by reason.
    pub rejected: RejectCounts,
    /// Replies for clients whose connection was unknown or gone.
    pub replies_unroutable: u64,
    /// The connection layer.
    pub links: LinkStats,
    /// The replica's view-number.
    pub view: u64,
    /// The replica's epoch (§7).
    pub epoch: u32,
    /// The members of the replica's epoch, in index order.
    pub members: Vec<MemberId>,
    /// Whether the replica is the primary of its view.
    pub primary: bool,
    /// Whether the replica left the configuration and may be shut down
    /// ([`crate::Replica::may_shut_down`]).
    pub may_shut_down: bool,
    /// The replica's status.
    pub status: Option<crate::replica::Status>,
    /// The replica's op-number.
    pub op_number: u64,
    /// The replica's commit-number.
    pub commit_number: u64,
    /// The replica's protocol counters.
    pub replica: crate::replica::Stats,
}

/// Decodes whole frames from the front of `bytes`, handing each message and
/// its sender's epoch to `each`: the bytes and frames used, and the error
/// if a frame is bad (a truncated tail is not an error: it waits for more
/// bytes).
pub(crate) fn decode_frames(
    bytes: &[u8],
    cluster: u64,
    frame_size_max: usize,
    mut each: impl FnMut(Message, u32),
) -> (usize, u64, Result<(), DecodeError>) {
    let (mut used, mut frames) = (0, 0);
    while used < bytes.len() {
        match codec::decode_in_epoch(&bytes[used..], cluster, frame_size_max) {
            Ok((message, epoch, size)) => {
                used += size;
                frames += 1;
                each(message, epoch);
            }
            Err(DecodeError::Truncated { .. }) => break,
            Err(error) => return (used, frames, Err(error)),
        }
    }
    (used, frames, Ok(()))
}

/// A member's address as a reconfiguration carries it: `ip:port` text.
pub fn parse_address(bytes: &[u8]) -> Option<SocketAddr> {
    core::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A member's address as a reconfiguration carries it.
pub fn format_address(address: SocketAddr) -> Vec<u8> {
    alloc::format!("{address}").into_bytes()
}
