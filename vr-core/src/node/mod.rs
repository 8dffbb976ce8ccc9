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
//! ```text
//! loop {
//!     for each ready socket: read → node.handle_bytes(now, id, &buf)
//!     loop match node.poll_output(&mut scratch) {
//!         Connect { connection, address } => open it; later handle_connected / handle_closed
//!         Transmit { connection, len }    => queue scratch[scratch.len() - len..] on it
//!         Close { connection }            => drop the socket
//!         Event(e)                        => act on it (Persist) or log it
//!         Timeout(Some(t)) if t <= now    => node.handle_timeout(now)
//!         Timeout(deadline)               => sleep until it or the next input; break
//!     }
//!     write queued bytes; node.handle_written(id, n) for each write
//! }
//! ```
//!
//! A [`DecodeError`](crate::codec::DecodeError) from `handle_bytes` other
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

use crate::message::MemberId;
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

/// A member's address as a reconfiguration carries it: `ip:port` text.
pub fn parse_address(bytes: &[u8]) -> Option<SocketAddr> {
    core::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A member's address as a reconfiguration carries it.
pub fn format_address(address: SocketAddr) -> Vec<u8> {
    alloc::format!("{address}").into_bytes()
}
