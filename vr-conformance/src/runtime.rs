//! What the suite needs from an adapter, and the common view of a replica's
//! counters that the tests assert on.

use std::io;
use std::net::{SocketAddr, TcpListener};

use vr_core::message::MemberId;
use vr_core::node::{NodeStats, ReplicaOptions};
use vr_core::{ClientConfig, ClientError, Service};
use vr_host::ReplicaHandle;

/// An adapter under test: how to start and read a replica, and how to drive
/// a client, all blocking.
///
/// Implemented once per runtime in `tests/<runtime>.rs`; everything the
/// suite knows of an adapter goes through here.
pub trait Runtime: 'static {
    /// The runtime's name, for failure messages.
    const NAME: &'static str;
    /// A prefix of the names of every thread the adapter's replicas and
    /// clients start, as `/proc/self/task/*/comm` shows them (the kernel
    /// keeps 15 bytes of a name).
    const THREAD_PREFIX: &'static str;

    /// A client of a cluster. `Send`, so that the suite can bound every
    /// call with a deadline on a thread of its own.
    type Client: Send + 'static;

    /// Starts replica `options.replica` with `service`, on `listener` if
    /// given (bound to its address in `options.addresses`), else binding
    /// that address itself. Every adapter returns the one handle type.
    fn start_replica<S: Service + Send + 'static>(
        options: ReplicaOptions,
        listener: Option<TcpListener>,
        service: S,
    ) -> io::Result<ReplicaHandle>;

    /// A client of cluster `cluster` whose replica `i` is at `addresses[i]`.
    fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<Self::Client>;
    /// Submits `op` and blocks until its result (or the client gives up).
    fn submit(client: &mut Self::Client, op: Vec<u8>) -> Result<Vec<u8>, ClientError>;
    /// Moves the cluster to `members` at `addresses` (§7.1); the new epoch.
    fn reconfigure(
        client: &mut Self::Client,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError>;
    /// The epoch the client believes current, and its members in index order.
    fn epoch(client: &Self::Client) -> (u32, Vec<MemberId>);
}

/// The counters of a replica that the suite asserts on: the node's, and the
/// adapter's connection counters that every adapter keeps.
///
/// What only some adapters report is an `Option` (`None`: not reported), so
/// that an assertion on it is made wherever it can be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The node: view, status, op and commit numbers, rejected frames by
    /// reason, protocol counters.
    pub node: NodeStats,
    /// Inbound connections accepted.
    pub connections_accepted: u64,
    /// Inbound connections closed at once because `client_connections_max`
    /// were open.
    pub connections_refused: u64,
    /// Connections closed because they sent something that is not a valid
    /// frame of this cluster.
    pub connections_closed_bad_input: u64,
    /// Connections the other end closed in the middle of a frame.
    pub connections_closed_mid_frame: u64,
    /// Failed attempts to connect to a peer.
    pub connect_failures: u64,
    /// The inbound connections (peers' and clients') open now.
    pub inbound: Vec<Inbound>,
    /// The connections to peers this replica opened and holds now; `None`
    /// if the adapter does not report them.
    pub outbound: Option<Vec<Outbound>>,
}

/// One open inbound connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inbound {
    /// Bytes received on it.
    pub bytes_in: u64,
    /// Whole frames accepted from it, if the adapter counts them.
    pub frames_in: Option<u64>,
}

/// One open connection to a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outbound {
    /// The member it leads to.
    pub member: MemberId,
    /// Frames written to it, if the adapter counts them per connection.
    pub frames_out: Option<u64>,
    /// Write calls that carried those frames, if counted per connection.
    pub writes: Option<u64>,
}

impl From<NodeStats> for Stats {
    fn from(node: NodeStats) -> Stats {
        let links = &node.links;
        let (outbound, inbound): (Vec<_>, Vec<_>) =
            links.connections.iter().partition(|c| c.member.is_some());
        Stats {
            connections_accepted: links.connections_accepted,
            connections_refused: links.connections_refused,
            connections_closed_bad_input: links.connections_closed_bad_input,
            connections_closed_mid_frame: links.connections_closed_mid_frame,
            connect_failures: links.connect_failures,
            inbound: (inbound.iter())
                .map(|c| Inbound {
                    bytes_in: c.bytes_in,
                    frames_in: Some(c.frames_in),
                })
                .collect(),
            outbound: Some(
                (outbound.iter())
                    .filter_map(|c| {
                        Some(Outbound {
                            member: c.member?,
                            frames_out: Some(c.frames_out),
                            writes: Some(c.writes),
                        })
                    })
                    .collect(),
            ),
            node,
        }
    }
}
