//! [`ReplicaNode`]: a replica behind the codec and the connection layer.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::links::{Links, Route};
use super::{
    decode_frames, format_address, parse_address, Closed, ConnectionId, NodeStats, Output,
    ReplicaOptions,
};
use crate::codec::{self, DecodeError};
use crate::message::{ClientId, MemberId, Message};
use crate::replica::{Output as ReplicaOutput, Persist, Replica, Status};
use crate::time::Instant;
use crate::Service;

/// Something a replica node reports: act on [`NodeEvent::Persist`]; log
/// the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// Durable replicas ([`crate::config::Durability::Disk`]): make this
    /// durable, then call [`ReplicaNode::handle_persisted`] with its
    /// `sequence`. One is in flight at a time: the replica emits the next
    /// only after that call.
    Persist(Persist),
    /// The replica's view or status changed.
    StatusChanged {
        /// The new view-number.
        view: u64,
        /// The new status.
        status: Status,
        /// Whether it is now the primary.
        primary: bool,
    },
    /// The replica entered a new epoch, or retired in it (§7).
    EpochChanged {
        /// The new epoch-number.
        epoch: u32,
        /// Its members, in index order.
        members: Vec<MemberId>,
    },
    /// A member's address was learned from a reconfiguration (§7); the
    /// node connects there from now on.
    AddressLearned {
        /// The member.
        member: MemberId,
        /// Where it listens.
        address: SocketAddr,
    },
    /// The replica formed a new, empty cluster in view 0: every other
    /// replica answered its recovery that it holds nothing
    /// ([`crate::Stats::clusters_formed`]). Expected at a new cluster's
    /// first start; at any other time a diskless cluster has lost its
    /// state (more than f replicas were down or recovering at once), and
    /// the embedding should say so loudly.
    ClusterFormed {
        /// The view formed (0).
        view: u64,
    },
    /// A connection sent a frame that could not be decoded; the node
    /// forgot the connection, and the adapter closes it.
    FrameRejected {
        /// The connection.
        connection: ConnectionId,
        /// Why.
        error: DecodeError,
    },
}

impl NodeEvent {
    /// Whether an operator must notice it (an adapter logs it as a
    /// warning): a cluster formed afresh, which loses a diskless cluster's
    /// state unless it is new, or a connection sending what is not a frame
    /// of this cluster. The rest is routine.
    pub fn needs_attention(&self) -> bool {
        matches!(
            self,
            NodeEvent::ClusterFormed { .. } | NodeEvent::FrameRejected { .. }
        )
    }
}

impl core::fmt::Display for NodeEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NodeEvent::Persist(p) => write!(f, "persist {}", p.sequence),
            NodeEvent::StatusChanged {
                view,
                status,
                primary,
            } => {
                write!(
                    f,
                    "status changed: view {view}, {status:?}, primary {primary}"
                )
            }
            NodeEvent::EpochChanged { epoch, members } => {
                write!(f, "epoch changed: epoch {epoch}, members {members:?}")
            }
            NodeEvent::AddressLearned { member, address } => {
                write!(f, "member {member} address learned: {address}")
            }
            NodeEvent::ClusterFormed { view } => write!(
                f,
                "formed a new, empty cluster in view {view}: every other replica answered that \
                 it holds no state; if this cluster held data, that data is lost (more than f \
                 replicas were down or recovering at once)"
            ),
            NodeEvent::FrameRejected { connection, error } => {
                write!(
                    f,
                    "rejected a frame from {connection} ({error:?}); closing it"
                )
            }
        }
    }
}

/// The connection each client's latest request came in on. Bounded: on
/// overflow the least recently used route is forgotten (that client's next
/// retry re-creates it).
struct Routes {
    map: BTreeMap<ClientId, (ConnectionId, u64)>,
    max: usize,
    clock: u64,
}

impl Routes {
    fn route(&mut self, client_id: ClientId, connection: ConnectionId) {
        self.clock += 1;
        if !self.map.contains_key(&client_id) && self.map.len() >= self.max {
            // Evict the least recently used route. Linear, but only on
            // overflow, and bounded by `max`.
            let oldest = (self.map.iter())
                .min_by_key(|(_, (_, t))| *t)
                .map(|(c, _)| *c);
            if let Some(oldest) = oldest {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(client_id, (connection, self.clock));
    }

    fn get(&self, client_id: ClientId) -> Option<(ConnectionId, u64)> {
        self.map.get(&client_id).copied()
    }

    fn forget(&mut self, connection: ConnectionId) {
        self.map.retain(|_, (c, _)| *c != connection);
    }
}

/// A replica with the codec, the connection layer and client routing
/// around it. See the [module docs](super) for the contract.
pub struct ReplicaNode<S: Service> {
    replica: Replica<S>,
    frame_size_max: usize,
    links: Links,
    routes: Routes,
    /// A message for a connection announced by the last `Connect`.
    after_connect: Option<(ConnectionId, u32, Message)>,
    events: VecDeque<NodeEvent>,
    last_status: (u64, Status, bool),
    last_epoch: Option<u32>,
    /// Whether the addresses of `last_epoch` were there to learn (a
    /// replica booted into an epoch may come by them later).
    epoch_addresses_learned: bool,
    /// `Stats::clusters_formed` when last looked at.
    clusters_formed: u64,
    stats: NodeStats,
}

impl<S: Service> ReplicaNode<S> {
    /// Wraps `replica`, built from `options` (see
    /// [`ReplicaOptions::build_replica`]): its address book starts from
    /// `options.addresses`, and its limits are the options'.
    pub fn new(mut replica: Replica<S>, options: &ReplicaOptions, now: Instant) -> Self {
        let mut links = Links::new(options.link_limits(), Some(options.replica));
        for (member, address) in options.address_book() {
            links.learn(now, member, address);
        }
        // A replica its embedder built in a later epoch's configuration
        // lacks the addresses the reconfiguration carried. If the options
        // know every member's, it passes those on in its StartEpoch
        // notices, so that clients and replicas of older epochs can reach
        // members they never knew (§7.2).
        if replica.epoch() > 0 && replica.epoch_addresses().is_empty() {
            let book: BTreeMap<MemberId, SocketAddr> = options.address_book().collect();
            let addresses: Option<Vec<Vec<u8>>> = (replica.epoch_members().iter())
                .map(|member| book.get(member).copied().map(format_address))
                .collect();
            if let Some(addresses) = addresses {
                replica.restore_epoch_addresses(addresses);
            }
        }
        let last_status = (replica.view(), replica.status(), replica.is_primary());
        ReplicaNode {
            frame_size_max: replica.config().message_size_max as usize,
            clusters_formed: replica.stats().clusters_formed,
            replica,
            links,
            routes: Routes {
                map: BTreeMap::new(),
                max: options.client_routes_max.max(1),
                clock: 0,
            },
            after_connect: None,
            events: VecDeque::new(),
            last_status,
            last_epoch: None,
            epoch_addresses_learned: false,
            stats: NodeStats::default(),
        }
    }

    /// The replica inside.
    pub fn replica(&self) -> &Replica<S> {
        &self.replica
    }

    // ---- Inputs ----

    /// An inbound connection was accepted from `remote`: its id, or `None`
    /// when the inbound cap is reached (close it; counted).
    pub fn handle_accepted(
        &mut self,
        now: Instant,
        remote: Option<SocketAddr>,
    ) -> Option<ConnectionId> {
        self.links.set_now(now);
        self.links.accepted(now, remote)
    }

    /// An outbound connection from [`Output::Connect`] is open.
    pub fn handle_connected(&mut self, now: Instant, connection: ConnectionId) {
        self.links.set_now(now);
        self.links.connected(connection);
    }

    /// `bytes` of `connection`'s queue were written.
    pub fn handle_written(&mut self, connection: ConnectionId, bytes: usize) {
        self.links.written(connection, bytes);
    }

    /// `connection` closed or failed (a connect included). Its client
    /// routes are forgotten; a peer connection backs off. Unknown ids (the
    /// node closed them already) are ignored.
    pub fn handle_closed(&mut self, now: Instant, connection: ConnectionId, how: Closed) {
        self.links.set_now(now);
        if self.links.closed(now, connection, how) {
            self.routes.forget(connection);
        }
    }

    /// Consumes whole frames from the front of `bytes`, read from
    /// `connection`, and returns how many bytes were used; the rest is an
    /// incomplete frame to keep for later. An error means the connection
    /// sent something that is not a frame of this cluster: it was counted
    /// and reported, the node forgot the connection, and the adapter closes
    /// it. The replica's outputs wait for `poll_output`; a primary's new
    /// requests wait for `handle_timeout` (batching: see the module docs).
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        bytes: &[u8],
    ) -> Result<usize, DecodeError> {
        self.links.set_now(now);
        let cluster = self.replica.config().cluster;
        let (replica, routes) = (&mut self.replica, &mut self.routes);
        let (used, frames, result) =
            decode_frames(bytes, cluster, self.frame_size_max, |message, epoch| {
                let client_id = match &message {
                    Message::Request(m) => Some(m.client_id),
                    Message::ReadRequest(m) => Some(m.client_id),
                    Message::Reconfiguration(m) => Some(m.client_id),
                    _ => None,
                };
                if let Some(client_id) = client_id {
                    routes.route(client_id, connection);
                }
                replica.handle_message(now, epoch, message);
            });
        let result = result.map(|()| used);
        self.stats.frames_in += frames;
        self.stats.bytes_in += used as u64;
        self.links.received(connection, frames, used as u64);
        if let Err(error) = &result {
            self.stats.rejected.count(error);
            self.handle_closed(now, connection, Closed::Rejected);
            self.events.push_back(NodeEvent::FrameRejected {
                connection,
                error: error.clone(),
            });
        }
        result
    }

    /// Fires the replica's timers that are due (the batch timer included)
    /// and gives up on connects past their deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.links.set_now(now);
        self.replica.handle_timeout(now);
        self.links.expire(now);
    }

    /// Durable replicas: the embedding made [`NodeEvent::Persist`] number
    /// `sequence` durable.
    pub fn handle_persisted(&mut self, now: Instant, sequence: u64) {
        self.links.set_now(now);
        self.replica.handle_persisted(now, sequence);
    }

    // ---- Outputs ----

    /// The next thing to do; frames are appended to `buffer`. Drain until
    /// [`Output::Timeout`] after every batch of inputs.
    pub fn poll_output(&mut self, buffer: &mut Vec<u8>) -> Output<NodeEvent> {
        if let Some(connection) = self.links.poll_close() {
            self.routes.forget(connection);
            return Output::Close { connection };
        }
        if let Some((connection, epoch, message)) = self.after_connect.take() {
            if let Some(len) = self.encode(connection, epoch, &message, buffer) {
                return Output::Transmit { connection, len };
            }
        }
        self.observe();
        if let Some(event) = self.events.pop_front() {
            return Output::Event(event);
        }
        loop {
            let (connection, epoch, message) = match self.replica.poll_output() {
                ReplicaOutput::Timeout(deadline) => {
                    let links = self.links.deadline();
                    return Output::Timeout(deadline.into_iter().chain(links).min());
                }
                ReplicaOutput::Persist(persist) => {
                    return Output::Event(NodeEvent::Persist(persist))
                }
                ReplicaOutput::Send { to, epoch, message } => match self.links.route(to) {
                    Route::Open(connection) => (connection, epoch, message),
                    Route::Connect(connection, address) => {
                        self.after_connect = Some((connection, epoch, message));
                        return Output::Connect {
                            connection,
                            address,
                        };
                    }
                    Route::Unreachable => {
                        self.links.stats.frames_dropped_disconnected += 1;
                        continue;
                    }
                },
                ReplicaOutput::Reply(reply) => match self.routes.get(reply.client_id) {
                    Some((connection, _)) => {
                        (connection, self.replica.epoch(), Message::Reply(reply))
                    }
                    None => {
                        self.stats.replies_unroutable += 1;
                        continue;
                    }
                },
                ReplicaOutput::NewEpoch { client_id, notice } => match self.routes.get(client_id) {
                    Some((connection, _)) => (
                        connection,
                        self.replica.epoch(),
                        Message::StartEpoch(notice),
                    ),
                    None => {
                        self.stats.replies_unroutable += 1;
                        continue;
                    }
                },
            };
            if let Some(len) = self.encode(connection, epoch, &message, buffer) {
                return Output::Transmit { connection, len };
            }
        }
    }

    /// The deadline `poll_output` would end with, without draining.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self.links.deadline();
        self.replica.poll_timeout().into_iter().chain(links).min()
    }

    /// A snapshot of the counters, the connections and the replica's
    /// numbers.
    pub fn stats(&self) -> NodeStats {
        let mut stats = self.stats.clone();
        stats.links = self.links.snapshot();
        stats.view = self.replica.view();
        stats.epoch = self.replica.epoch();
        stats.members = self.replica.epoch_members();
        stats.primary = self.replica.is_primary();
        stats.may_shut_down = self.replica.may_shut_down();
        stats.status = Some(self.replica.status());
        stats.op_number = self.replica.op_number();
        stats.commit_number = self.replica.commit_number();
        stats.replica = self.replica.stats().clone();
        stats
    }

    /// Encodes `message` onto `buffer` for `connection` if its queue has
    /// room; the frame's length, or `None` (dropped, counted).
    fn encode(
        &mut self,
        connection: ConnectionId,
        epoch: u32,
        message: &Message,
        buffer: &mut Vec<u8>,
    ) -> Option<usize> {
        let len = codec::encoded_size(message);
        if !self.links.admit(connection, len) {
            return None;
        }
        let start = buffer.len();
        codec::encode_in_epoch(message, self.replica.config().cluster, epoch, buffer);
        debug_assert_eq!(buffer.len() - start, len, "encoded_size is exact");
        if matches!(message, Message::Reply(_) | Message::StartEpoch(_)) {
            self.stats.frames_to_clients += 1;
            self.stats.bytes_to_clients += len as u64;
        } else {
            self.stats.frames_to_replicas += 1;
            self.stats.bytes_to_replicas += len as u64;
        }
        Some(buffer.len() - start)
    }

    /// Turns changes of the replica's epoch, formation and status into
    /// events; learns the addresses a new epoch carries before anything is
    /// sent to its members.
    fn observe(&mut self) {
        let epoch = self.replica.epoch();
        let changed = self.last_epoch != Some(epoch);
        let has_addresses = !self.replica.epoch_addresses().is_empty();
        if changed || (has_addresses && !self.epoch_addresses_learned) {
            let first = self.last_epoch.is_none();
            self.last_epoch = Some(epoch);
            self.epoch_addresses_learned = has_addresses;
            let members = self.replica.epoch_members();
            let addresses = self.replica.epoch_addresses().to_vec();
            let now = self.links.now();
            for (member, address) in members.iter().zip(&addresses) {
                let Some(address) = parse_address(address) else {
                    continue;
                };
                if self.links.learn(now, *member, address) {
                    self.events.push_back(NodeEvent::AddressLearned {
                        member: *member,
                        address,
                    });
                }
            }
            if changed && (!first || epoch != 0) {
                self.events
                    .push_back(NodeEvent::EpochChanged { epoch, members });
            }
        }
        let formed = self.replica.stats().clusters_formed;
        if formed != self.clusters_formed {
            self.clusters_formed = formed;
            self.events.push_back(NodeEvent::ClusterFormed {
                view: self.replica.view(),
            });
        }
        let status = (
            self.replica.view(),
            self.replica.status(),
            self.replica.is_primary(),
        );
        if status != self.last_status {
            self.last_status = status;
            self.events.push_back(NodeEvent::StatusChanged {
                view: status.0,
                status: status.1,
                primary: status.2,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, ClientConfig};
    use crate::config::Config;
    use crate::node::{ClientEvent, ClientNode, ClientOptions};

    struct Echo;
    impl Service for Echo {
        fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
            op.to_vec()
        }
        // Stateless: no pages.
        fn page_count(&self) -> u64 {
            0
        }
        fn read_page(&self, _index: u64, _out: &mut Vec<u8>) {}
        fn install_pages(&mut self, _pages: &[&[u8]]) {}
    }

    fn addresses(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i)))
            .collect()
    }

    fn node(n: u8, me: u8, routes_max: usize) -> ReplicaNode<Echo> {
        node_with(n, me, |o| o.client_routes_max = routes_max)
    }

    fn node_with(n: u8, me: u8, tune: impl FnOnce(&mut ReplicaOptions)) -> ReplicaNode<Echo> {
        let config = Config::new(3, n);
        let mut options = ReplicaOptions::new(config, addresses(u16::from(n)), MemberId(me));
        tune(&mut options);
        let replica = options.build_replica(Echo, Instant::ZERO).unwrap();
        ReplicaNode::new(replica, &options, Instant::ZERO)
    }

    /// Drains `node` until it waits, firing timers due at `now` (the
    /// batch); the frames, each with its connection, and the events.
    fn drain(
        node: &mut ReplicaNode<Echo>,
        now: Instant,
    ) -> (Vec<(ConnectionId, Vec<u8>)>, Vec<NodeEvent>) {
        let (mut frames, mut events, mut buffer) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            match node.poll_output(&mut buffer) {
                Output::Transmit { connection, len } => {
                    frames.push((connection, buffer[buffer.len() - len..].to_vec()));
                }
                Output::Event(event) => events.push(event),
                Output::Connect { connection, .. } => node.handle_connected(now, connection),
                Output::Close { .. } => {}
                Output::Timeout(Some(t)) if t <= now => node.handle_timeout(now),
                Output::Timeout(_) => return (frames, events),
            }
        }
    }

    fn request_frame(client_id: ClientId) -> Vec<u8> {
        let mut frame = Vec::new();
        let request = crate::message::Request {
            client_id,
            request_number: 1,
            op: b"op".to_vec(),
        };
        codec::encode(&Message::Request(request), 3, &mut frame);
        frame
    }

    #[test]
    fn frames_flow_between_a_client_node_and_a_replica_node() {
        let now = Instant::ZERO;
        let mut replica = node(1, 0, 16);
        let config = Config::new(3, 1);
        let options = ClientOptions::new(addresses(1));
        let mut client = ClientNode::new(
            Client::new(ClientConfig::new(&config, 9), 0),
            3,
            1 << 20,
            &options,
        );
        client.request(now, b"hi".to_vec()).unwrap();
        let mut buffer = Vec::new();
        let Output::Connect {
            connection: to_replica,
            address,
        } = client.poll_output(&mut buffer)
        else {
            panic!("the client connects first")
        };
        assert_eq!(address, addresses(1)[0]);
        let Output::Transmit { connection, len } = client.poll_output(&mut buffer) else {
            panic!()
        };
        assert_eq!((connection, len), (to_replica, buffer.len()));
        assert!(matches!(
            client.poll_output(&mut buffer),
            Output::Timeout(Some(_))
        ));
        client.handle_connected(now, to_replica);

        let inbound = replica.handle_accepted(now, None).unwrap();
        // In two pieces: the first is an incomplete frame.
        assert_eq!(replica.handle_bytes(now, inbound, &buffer[..10]), Ok(0));
        assert_eq!(
            replica.handle_bytes(now, inbound, &buffer),
            Ok(buffer.len())
        );
        let (frames, _) = drain(&mut replica, now);
        assert_eq!(frames.len(), 1);
        assert_eq!(
            frames[0].0, inbound,
            "the reply goes back on the request's connection"
        );
        assert_eq!(
            client.handle_bytes(now, to_replica, &frames[0].1),
            Ok(frames[0].1.len())
        );
        let Output::Event(ClientEvent::Completed(done)) = client.poll_output(&mut buffer) else {
            panic!()
        };
        assert_eq!(done.result, b"hi");
        assert_eq!(replica.stats().frames_to_clients, 1);
    }

    #[test]
    fn garbage_is_rejected_counted_and_its_connection_forgotten() {
        let now = Instant::ZERO;
        let mut node = node(1, 0, 16);
        let bad = node.handle_accepted(now, None).unwrap();
        assert_eq!(
            node.handle_bytes(now, bad, &[0xFF; 64]),
            Err(DecodeError::BadMagic)
        );
        let stats = node.stats();
        assert_eq!(stats.rejected.foreign, 1);
        assert_eq!(stats.links.connections_closed_bad_input, 1);
        assert!(
            stats.links.connections.is_empty(),
            "the connection is forgotten"
        );
        let (_, events) = drain(&mut node, now);
        assert!(events.contains(&NodeEvent::FrameRejected {
            connection: bad,
            error: DecodeError::BadMagic
        }));
        // Another cluster's frame.
        let other = node.handle_accepted(now, None).unwrap();
        let mut frame = Vec::new();
        codec::encode(
            &Message::Request(crate::message::Request {
                client_id: 1,
                request_number: 1,
                op: Vec::new(),
            }),
            4,
            &mut frame,
        );
        assert!(matches!(
            node.handle_bytes(now, other, &frame),
            Err(DecodeError::WrongCluster { .. })
        ));
        assert_eq!(node.stats().rejected.wrong_cluster, 1);
        assert_eq!(node.replica().op_number(), 0, "nothing reached the replica");
    }

    #[test]
    fn replica_options_validate() {
        let options = ReplicaOptions::new(Config::new(3, 3), addresses(3), MemberId(2));
        assert_eq!(options.validate(), Ok(()));
        let mut bad = options.clone();
        bad.addresses.pop();
        assert!(bad.validate().is_err());
        let mut bad = options.clone();
        bad.replica = MemberId(3);
        assert!(bad.validate().is_err());
        let mut bad = options;
        bad.reconnect_backoff_min = bad.reconnect_backoff_max * 2;
        assert!(bad.validate().is_err());
    }

    /// §6, batching: requests that arrive before the batch timer fires
    /// share a Prepare; the timer is due at once, so nothing waits.
    #[test]
    fn requests_read_before_the_batch_timer_fires_share_a_prepare() {
        let now = Instant::ZERO;
        let mut node = node(3, 0, 16);
        for client in 0..4u128 {
            let c = node.handle_accepted(now, None).unwrap();
            let frame = request_frame(client);
            assert_eq!(node.handle_bytes(now, c, &frame), Ok(frame.len()));
        }
        let mut buffer = Vec::new();
        assert_eq!(
            node.poll_output(&mut buffer),
            Output::Timeout(Some(now)),
            "the batch is due now"
        );
        assert!(
            buffer.is_empty(),
            "draining sent nothing: it changes no state"
        );
        let (frames, _) = drain(&mut node, now);
        assert_eq!(frames.len(), 2, "one Prepare per backup");
        let stats = node.stats().replica;
        assert_eq!((stats.prepare_batches, stats.prepare_batch_entries), (1, 4));
        // The timer fired after each read: one Prepare per request.
        for client in 4..6u128 {
            let c = node.handle_accepted(now, None).unwrap();
            node.handle_bytes(now, c, &request_frame(client)).unwrap();
            drain(&mut node, now);
        }
        let stats = node.stats().replica;
        assert_eq!((stats.prepare_batches, stats.prepare_batch_entries), (3, 6));
    }

    #[test]
    fn frames_to_a_peer_open_a_connection_first_and_respect_its_queue() {
        let now = Instant::ZERO;
        // A queue bound of one byte: a queue takes one frame until it is
        // reported written.
        let mut node = node_with(3, 0, |o| o.peer_queue_bytes_max = 1);
        let c = node.handle_accepted(now, None).unwrap();
        node.handle_bytes(now, c, &request_frame(1)).unwrap();
        node.handle_timeout(now);
        let mut buffer = Vec::new();
        let mut connects = Vec::new();
        let mut transmits = Vec::new();
        loop {
            match node.poll_output(&mut buffer) {
                Output::Connect {
                    connection,
                    address,
                } => connects.push((connection, address)),
                Output::Transmit { connection, len } => transmits.push((connection, len)),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        assert_eq!(
            connects.iter().map(|c| c.1).collect::<Vec<_>>(),
            addresses(3)[1..].to_vec()
        );
        let to: Vec<_> = transmits.iter().map(|t| t.0).collect();
        assert_eq!(
            to,
            connects.iter().map(|c| c.0).collect::<Vec<_>>(),
            "each Prepare follows its Connect"
        );
        assert_eq!(node.stats().links.connects, 2);
        // The next Prepare finds the queues full.
        node.handle_bytes(now, c, &request_frame(2)).unwrap();
        let (frames, _) = drain(&mut node, now);
        assert!(frames.is_empty());
        assert_eq!(node.stats().links.frames_dropped_queue_full, 2);
        // Reported written: the queue takes frames again.
        for (connection, len) in transmits {
            node.handle_written(connection, len);
        }
        node.handle_bytes(now, c, &request_frame(3)).unwrap();
        let (frames, _) = drain(&mut node, now);
        assert_eq!(frames.len(), 2);
        assert_eq!(node.stats().links.writes, 2);
    }

    #[test]
    fn routes_are_bounded() {
        let now = Instant::ZERO;
        let mut node = node(1, 0, 2);
        for client_id in 0..5u128 {
            let c = node.handle_accepted(now, None).unwrap();
            node.handle_bytes(now, c, &request_frame(client_id))
                .unwrap();
            drain(&mut node, now);
        }
        assert_eq!(node.routes.map.len(), 2);
        assert_eq!(
            node.stats().replies_unroutable,
            0,
            "each reply went out before its route was evicted"
        );
    }

    #[test]
    fn a_restarted_node_in_a_later_epoch_knows_its_members_addresses() {
        // Member ids equal indices here; a node only knows what options or
        // reconfigurations told it.
        let node = node(3, 1, 16);
        let book: Vec<_> = node.links.addresses().collect();
        assert_eq!(
            book,
            vec![
                (MemberId(0), addresses(3)[0]),
                (MemberId(2), addresses(3)[2])
            ],
            "never itself"
        );
    }

    /// A replica built in epoch 1's configuration (members 0, 1 and 3),
    /// recovering, as an embedder may boot it after a reconfiguration.
    fn booted_in_epoch_one(known: &[u16]) -> ReplicaNode<Echo> {
        let members = [MemberId(0), MemberId(1), MemberId(3)];
        let mut config = Config::new(3, 3).with_members(&members).unwrap();
        config.epoch = 1;
        let replica = Replica::recover(
            config.clone(),
            crate::ReplicaIndex(1),
            Echo,
            Instant::ZERO,
            9,
        )
        .unwrap();
        let mut options = ReplicaOptions::new(config, addresses(4), MemberId(1));
        for port in known {
            options.addresses[usize::from(*port)] = SocketAddr::from(([10, 0, 0, 1], *port));
        }
        options.addresses.truncate(known.len().max(3));
        ReplicaNode::new(replica, &options, Instant::ZERO)
    }

    #[test]
    fn a_node_booted_into_an_epoch_passes_on_the_addresses_its_options_know() {
        // §7.2: its StartEpoch notices carry them, so that clients and
        // replicas of older epochs can reach members they never knew.
        let node = booted_in_epoch_one(&[0, 1, 2, 3]);
        let at = |port| format_address(SocketAddr::from(([10, 0, 0, 1], port)));
        assert_eq!(node.replica().epoch_addresses(), &[at(0), at(1), at(3)]);
        // Options that miss a member's address restore none.
        let node = booted_in_epoch_one(&[0, 1, 2]);
        assert!(node.replica().epoch_addresses().is_empty());
    }

    #[test]
    fn addresses_that_come_later_in_the_same_epoch_are_learned() {
        let now = Instant::ZERO;
        let mut node = booted_in_epoch_one(&[0, 1, 2]);
        drain(&mut node, now);
        assert!(!node.links.addresses().any(|(m, _)| m == MemberId(3)));
        let member_3 = SocketAddr::from(([10, 0, 0, 4], 7003));
        let notice = Message::StartEpoch(crate::message::StartEpoch {
            view: 0,
            epoch: 1,
            op_number: 5,
            entry_view: 0,
            members: vec![MemberId(0), MemberId(1), MemberId(3)],
            addresses: [0, 1]
                .map(|port| SocketAddr::from(([10, 0, 0, 1], port)))
                .into_iter()
                .chain([member_3])
                .map(format_address)
                .collect(),
            sender: MemberId(0),
        });
        let mut frame = Vec::new();
        codec::encode_in_epoch(&notice, 3, 1, &mut frame);
        let c = node.handle_accepted(now, None).unwrap();
        node.handle_bytes(now, c, &frame).unwrap();
        let (_, events) = drain(&mut node, now);
        assert!(
            events.contains(&NodeEvent::AddressLearned {
                member: MemberId(3),
                address: member_3
            }),
            "{events:?}"
        );
        assert!(node.links.addresses().any(|a| a == (MemberId(3), member_3)));
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, NodeEvent::EpochChanged { .. })),
            "the epoch did not change"
        );
    }
}
