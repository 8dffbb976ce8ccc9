//! Frames in, frames out: the part of an embedding that every runtime
//! adapter would otherwise write again.
//!
//! A [`ReplicaNode`] wraps a [`Replica`] with the wire codec, routes replies
//! back to the connection their client's request came in on, counts what it
//! rejects, and reports status changes as [`NodeEvent`]s. An adapter then only
//! moves bytes between sockets and the node, and calls the timer; it never
//! looks inside a message. [`ClientNode`] does the same for a [`Client`].
//!
//! Framing: the adapter keeps a receive buffer per connection and calls
//! [`ReplicaNode::handle_bytes`] with it; the node consumes whole frames from
//! the front and says how many bytes it used. A [`DecodeError`] other than
//! [`DecodeError::Truncated`] means the peer is broken or hostile: close the
//! connection.
//!
//! Batching across connections: [`ReplicaNode::handle_bytes`] drains the
//! replica's outputs before it returns, and fires the timers due by then
//! (with `batch_delay_ns` 0, the batch timer, see [`Replica`]), so requests
//! that came in one call share a Prepare but requests of two calls do not. An adapter that finds
//! several connections readable in one turn calls
//! [`ReplicaNode::feed_bytes`] for each and [`ReplicaNode::flush`] once,
//! before it sends and sleeps, and so batches the requests of every client
//! that was ready (§6).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::client::{Client, ClientError, ClientOutput, Completion};
use crate::codec::{self, DecodeError};
use crate::message::{ClientId, MemberId, Message};
use crate::replica::{Output, Replica, Status};
use crate::time::Instant;
use crate::Service;

/// An adapter's name for one connection (its token or slot number).
pub type ConnectionId = u64;

/// How a runtime adapter runs one replica: the same options for every
/// adapter (`vr-tokio`, `vr-mio`, `vr-glommio`), so that switching runtimes
/// changes one import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaOptions {
    /// The cluster's configuration, the same on every replica.
    pub config: crate::Config,
    /// Member `i` listens on `addresses[i]` (without reconfiguration,
    /// replica `i`): as many as `config.replica_count`, or, for a joining
    /// replica, at least up to its own member id. Members added later by a
    /// reconfiguration that carries addresses are learned from it
    /// ([`NodeEvent::EpochChanged`]).
    pub addresses: Vec<core::net::SocketAddr>,
    /// This replica's member id: its name for the life of the cluster,
    /// the key of `addresses`. Without reconfiguration (`config.members`
    /// empty) it equals the replica's index; otherwise the index is
    /// `config.index_of_member(replica)`. A joining replica has no index
    /// until its epoch starts.
    pub replica: MemberId,
    /// A new replica that joins a running cluster when a reconfiguration
    /// adds it (§7, [`crate::Replica::join`]); `replica` is then its
    /// member id and `config` gives only the cluster id and tunables.
    pub join: bool,
    /// Bound on each connection's queue of unsent frames, in bytes. Frames
    /// beyond it are dropped and counted (the protocol retransmits what
    /// matters); an empty queue takes one frame of any size.
    pub peer_queue_bytes_max: usize,
    /// First wait before reconnecting to a peer after a failure.
    pub reconnect_backoff_min: core::time::Duration,
    /// The wait doubles after each failure up to this. An accepted
    /// connection cuts every wait short (to `reconnect_backoff_min` after
    /// the failure): a peer that restarted connects first, as soon as it
    /// has something to say.
    pub reconnect_backoff_max: core::time::Duration,
    /// Clients whose replies the node can route at a time.
    pub client_routes_max: usize,
    /// Inbound connections (peers and clients) open at a time; more are
    /// accepted and closed at once.
    pub client_connections_max: usize,
    /// `None`: the replica is a member of a new cluster and starts in view 0
    /// ([`crate::Replica::new`]). `Some(nonce)`: it restarts without its
    /// state and recovers it from the others ([`crate::Replica::recover`];
    /// the nonce must be fresh on every start, e.g. from the OS's random
    /// source). A process that may be restarting after a crash must use
    /// `Some`; when every replica starts that way they form the cluster.
    pub recovery_nonce: Option<u64>,
}

impl ReplicaOptions {
    /// Options for replica `replica` with defaults for a LAN: queues of four
    /// maximal frames, reconnects after 10 ms growing to 1 s, 4096 client
    /// routes and 1024 inbound connections.
    pub fn new(
        config: crate::Config,
        addresses: Vec<core::net::SocketAddr>,
        replica: MemberId,
    ) -> Self {
        let peer_queue_bytes_max = 4 * config.message_size_max as usize;
        ReplicaOptions {
            config,
            addresses,
            replica,
            peer_queue_bytes_max,
            reconnect_backoff_min: core::time::Duration::from_millis(10),
            reconnect_backoff_max: core::time::Duration::from_secs(1),
            client_routes_max: 4096,
            client_connections_max: 1024,
            recovery_nonce: None,
            join: false,
        }
    }

    /// The replica these options describe, starting at `now`: new, or
    /// recovering when `recovery_nonce` is set.
    pub fn build_replica<S: crate::Service>(
        &self,
        service: S,
        now: crate::Instant,
    ) -> Result<crate::Replica<S>, crate::ConfigError> {
        if self.join {
            let nonce = self.recovery_nonce.unwrap_or(0);
            return crate::Replica::join(self.config.clone(), self.replica, service, now, nonce);
        }
        let index = self
            .config
            .index_of_member(self.replica)
            .ok_or(crate::ConfigError::ReplicaIndexOutOfRange)?;
        match self.recovery_nonce {
            None => crate::Replica::new(self.config.clone(), index, service, now),
            Some(nonce) => crate::Replica::recover(self.config.clone(), index, service, now, nonce),
        }
    }

    /// Checks what no adapter can run with, and says why.
    pub fn validate(&self) -> Result<(), &'static str> {
        self.config
            .validate()
            .map_err(|_| "invalid cluster configuration")?;
        if self.join {
            if usize::from(self.replica) >= self.addresses.len() {
                return Err("a joining replica needs its own address");
            }
        } else {
            if self.addresses.len() != usize::from(self.config.replica_count) {
                return Err("one address per replica is needed");
            }
            if self.config.index_of_member(self.replica).is_none() {
                return Err("replica index out of range");
            }
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_min > self.reconnect_backoff_max
        {
            return Err("reconnect backoff must satisfy 0 < min <= max");
        }
        if self.client_routes_max == 0 || self.client_connections_max == 0 {
            return Err("client_routes_max and client_connections_max must be positive");
        }
        Ok(())
    }
}

/// Where a frame must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// To the replica with member id `i` (its index unless the cluster was
    /// reconfigured: see [`crate::Config::members`]).
    Replica(MemberId),
    /// Back on an existing connection: a reply to a client.
    Connection(ConnectionId),
}

/// One encoded frame to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub destination: Destination,
    /// The whole frame, header included.
    pub frame: Vec<u8>,
}

/// Something an operator wants to see, for the adapter to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// The replica's view or status changed.
    StatusChanged {
        /// The new view-number.
        view: u64,
        /// The new status.
        status: Status,
        /// Whether it is now the primary.
        primary: bool,
    },
    /// The replica entered a new epoch, or retired in it (§7): `members` are its members in
    /// index order, with their addresses if the reconfiguration carried
    /// them (`ip:port` text for the adapters; empty otherwise). The adapter
    /// adds the members it did not know to its peers.
    EpochChanged {
        /// The new epoch-number.
        epoch: u32,
        /// The members, and their addresses (empty if not carried).
        members: Vec<(MemberId, Vec<u8>)>,
    },
    /// Durable replicas ([`crate::config::Durability::Disk`]): make this
    /// durable, then call [`ReplicaNode::handle_persisted`] with its
    /// `sequence`. The replica emits the next only after that.
    Persist(crate::replica::Persist),
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
    /// A connection sent a frame that could not be decoded.
    FrameRejected {
        /// The connection, which the adapter should close.
        connection: ConnectionId,
        /// Why.
        error: DecodeError,
    },
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

/// Frames and bytes exchanged with one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Traffic {
    /// Frames sent.
    pub frames_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

/// A snapshot of what a replica node has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeStats {
    /// Frames accepted and bytes they took.
    pub frames_in: u64,
    /// Bytes of accepted frames.
    pub bytes_in: u64,
    /// Outgoing traffic per replica member id (its own slot stays zero).
    pub to_replicas: Vec<Traffic>,
    /// Outgoing traffic to clients, all together.
    pub to_clients: Traffic,
    /// Rejected frames, by reason.
    pub rejected: RejectCounts,
    /// Replies for clients whose connection was unknown or gone.
    pub replies_unroutable: u64,
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
    pub status: Option<Status>,
    /// The replica's op-number.
    pub op_number: u64,
    /// The replica's commit-number.
    pub commit_number: u64,
    /// The replica's protocol counters.
    pub replica: crate::replica::Stats,
}

/// A replica with the codec and client routing around it.
pub struct ReplicaNode<S: Service> {
    replica: Replica<S>,
    frame_size_max: usize,
    /// The connection each client's latest request came in on. Bounded: on
    /// overflow the oldest route is forgotten (that client's next retry
    /// re-creates it).
    routes: BTreeMap<ClientId, (ConnectionId, u64)>,
    routes_max: usize,
    route_clock: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<NodeEvent>,
    last_status: (u64, Status, bool),
    last_epoch: u32,
    /// `Stats::clusters_formed` when last looked at.
    clusters_formed: u64,
    stats: NodeStats,
    /// The instant of the latest input: a flush fires the timers due by
    /// then (the batch timer), as the replica's contract asks.
    now: Instant,
}

impl<S: Service> ReplicaNode<S> {
    /// Wraps `replica`. Frames larger than the configuration's
    /// `message_size_max` are rejected; replies are routed for at most
    /// `routes_max` clients at a time.
    pub fn new(replica: Replica<S>, routes_max: usize) -> Self {
        let n = usize::from(replica.config().replica_count);
        let last_status = (replica.view(), replica.status(), replica.is_primary());
        let mut node = ReplicaNode {
            frame_size_max: replica.config().message_size_max as usize,
            replica,
            routes: BTreeMap::new(),
            routes_max: routes_max.max(1),
            route_clock: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_status,
            last_epoch: 0,
            clusters_formed: 0,
            stats: NodeStats::default(),
            now: Instant::ZERO,
        };
        node.stats.to_replicas = alloc::vec![Traffic::default(); n];
        node
    }

    /// The replica inside.
    pub fn replica(&self) -> &Replica<S> {
        &self.replica
    }

    /// Consumes whole frames from the front of `bytes`, received on
    /// `connection`, and returns how many bytes were used; the rest is an
    /// incomplete frame to keep for later. An error means the connection
    /// sent something that is not a valid frame for this cluster: it was
    /// counted and reported as an event, and the adapter should close it.
    ///
    /// The same as [`ReplicaNode::feed_bytes`] followed by
    /// [`ReplicaNode::flush`]: the outputs are ready when it returns. An
    /// embedding that reads one connection per turn can use it; one that
    /// reads several should feed each and flush once (see `feed_bytes`).
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        bytes: &[u8],
    ) -> Result<usize, DecodeError> {
        let result = self.feed_bytes(now, connection, bytes);
        self.flush();
        result
    }

    /// Like [`ReplicaNode::handle_bytes`], but leaves the replica's outputs
    /// where they are until [`ReplicaNode::flush`] (or any other input that
    /// drains: [`ReplicaNode::handle_bytes`], [`ReplicaNode::handle_timeout`]).
    ///
    /// Why: with `Config::batch_delay_ns` 0 the primary's batch of new
    /// requests leaves as one Prepare when the outputs are drained (§6,
    /// batching). Each client has its own connection, so draining after
    /// every connection's bytes sends one Prepare per request. An embedding
    /// that found several connections ready in one turn (one `epoll_wait`,
    /// one batch of queued events) feeds each of them and then flushes
    /// once: the requests of all of them share a Prepare, with no timer.
    ///
    /// The embedding must call [`ReplicaNode::flush`] before it blocks
    /// waiting for input; until then nothing fed here has been answered,
    /// and no frame it caused is in [`ReplicaNode::poll_transmit`].
    pub fn feed_bytes(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        bytes: &[u8],
    ) -> Result<usize, DecodeError> {
        self.now = self.now.max(now);
        let cluster = self.replica.config().cluster;
        let mut used = 0;
        while used < bytes.len() {
            match codec::decode_in_epoch(&bytes[used..], cluster, self.frame_size_max) {
                Ok((message, epoch, size)) => {
                    used += size;
                    self.stats.frames_in += 1;
                    self.stats.bytes_in += size as u64;
                    match &message {
                        Message::Request(request) => self.route(request.client_id, connection),
                        Message::ReadRequest(read) => self.route(read.client_id, connection),
                        Message::Reconfiguration(m) => self.route(m.client_id, connection),
                        _ => {}
                    }
                    // Outputs wait for `flush`: requests that arrived
                    // together leave in one Prepare (batching, §6).
                    self.replica.handle_message(now, epoch, message);
                }
                Err(DecodeError::Truncated { .. }) => break,
                Err(error) => {
                    self.count_reject(&error);
                    self.events.push_back(NodeEvent::FrameRejected {
                        connection,
                        error: error.clone(),
                    });
                    return Err(error);
                }
            }
        }
        Ok(used)
    }

    /// Drains the replica's outputs into frames and events: the batch of
    /// requests fed since the last flush leaves as one Prepare (unless
    /// `Config::batch_delay_ns` holds it), and replies, PrepareOks and the
    /// rest become frames for [`ReplicaNode::poll_transmit`]. Cheap when
    /// there is nothing to drain, so an embedding may call it at the end of
    /// every turn whatever happened in it.
    pub fn flush(&mut self) {
        self.drain();
    }

    /// Fires the replica's timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.replica.handle_timeout(now);
        self.drain();
    }
    /// Durable replicas: the embedding made [`NodeEvent::Persist`] number
    /// `sequence` durable.
    pub fn handle_persisted(&mut self, now: Instant, sequence: u64) {
        self.now = self.now.max(now);
        self.replica.handle_persisted(now, sequence);
        self.drain();
    }

    /// When [`ReplicaNode::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.replica.poll_timeout()
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event to log.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Forgets the client routes through a closed connection.
    pub fn connection_closed(&mut self, connection: ConnectionId) {
        self.routes.retain(|_, (c, _)| *c != connection);
    }

    /// A snapshot of the counters and the replica's numbers.
    pub fn stats(&self) -> NodeStats {
        let mut stats = self.stats.clone();
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

    fn route(&mut self, client_id: ClientId, connection: ConnectionId) {
        self.route_clock += 1;
        if !self.routes.contains_key(&client_id) && self.routes.len() >= self.routes_max {
            // Evict the least recently used route. Linear, but only on
            // overflow, and bounded by routes_max.
            if let Some(oldest) = self
                .routes
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(c, _)| *c)
            {
                self.routes.remove(&oldest);
            }
        }
        self.routes
            .insert(client_id, (connection, self.route_clock));
    }

    fn count_reject(&mut self, error: &DecodeError) {
        let r = &mut self.stats.rejected;
        match error {
            DecodeError::BadMagic | DecodeError::UnsupportedVersion(_) => r.foreign += 1,
            DecodeError::Oversized { .. } => r.oversized += 1,
            DecodeError::WrongCluster { .. } => r.wrong_cluster += 1,
            DecodeError::BadChecksum => r.bad_checksum += 1,
            DecodeError::UnknownCommand(_)
            | DecodeError::Malformed(_)
            | DecodeError::Truncated { .. } => r.malformed += 1,
        }
    }

    /// Drains the replica's outputs, firing the timers due by the latest
    /// input's instant (the batch timer) as they come due.
    fn drain(&mut self) {
        let cluster = self.replica.config().cluster;
        // A replica never leaves a timer due after handle_timeout (vr-sim
        // checks it): the bound only keeps a bug from looping for ever.
        let mut timer_rounds = 0;
        loop {
            let output = self.replica.poll_output();
            let epoch = self.replica.epoch();
            let (destination, epoch, message) = match output {
                Output::Timeout(Some(t)) if t <= self.now && timer_rounds < 4 => {
                    timer_rounds += 1;
                    self.replica.handle_timeout(self.now);
                    continue;
                }
                Output::Timeout(_) => break,
                Output::Send { to, epoch, message } => (Destination::Replica(to), epoch, message),
                Output::Reply(reply) => match self.routes.get(&reply.client_id) {
                    Some(&(connection, _)) => (
                        Destination::Connection(connection),
                        epoch,
                        Message::Reply(reply),
                    ),
                    None => {
                        self.stats.replies_unroutable += 1;
                        continue;
                    }
                },
                Output::Persist(persist) => {
                    self.events.push_back(NodeEvent::Persist(persist));
                    continue;
                }
                Output::NewEpoch { client_id, notice } => match self.routes.get(&client_id) {
                    Some(&(connection, _)) => (
                        Destination::Connection(connection),
                        epoch,
                        Message::StartEpoch(notice),
                    ),
                    None => {
                        self.stats.replies_unroutable += 1;
                        continue;
                    }
                },
            };
            let mut frame = Vec::with_capacity(codec::encoded_size(&message));
            codec::encode_in_epoch(&message, cluster, epoch, &mut frame);
            if let Destination::Replica(i) = destination {
                if self.stats.to_replicas.len() <= usize::from(i) {
                    self.stats
                        .to_replicas
                        .resize(usize::from(i) + 1, Traffic::default());
                }
            }
            let traffic = match destination {
                Destination::Replica(i) => &mut self.stats.to_replicas[usize::from(i)],
                Destination::Connection(_) => &mut self.stats.to_clients,
            };
            traffic.frames_out += 1;
            traffic.bytes_out += frame.len() as u64;
            self.transmits.push_back(Transmit { destination, frame });
        }
        let status = (
            self.replica.view(),
            self.replica.status(),
            self.replica.is_primary(),
        );
        if self.replica.epoch() != self.last_epoch {
            self.last_epoch = self.replica.epoch();
            let addresses = self.replica.epoch_addresses();
            let members = (self.replica.epoch_members().into_iter().enumerate())
                .map(|(i, m)| (m, addresses.get(i).cloned().unwrap_or_default()))
                .collect();
            self.events.push_back(NodeEvent::EpochChanged {
                epoch: self.last_epoch,
                members,
            });
        }
        let formed = self.replica.stats().clusters_formed;
        if formed != self.clusters_formed {
            self.clusters_formed = formed;
            self.events.push_back(NodeEvent::ClusterFormed {
                view: self.replica.view(),
            });
        }
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

/// A client proxy with the codec around it.
pub struct ClientNode {
    client: Client,
    cluster: u64,
    frame_size_max: usize,
    transmits: VecDeque<(MemberId, Vec<u8>)>,
}

impl ClientNode {
    /// Wraps `client` for the cluster `cluster`; replies larger than
    /// `frame_size_max` are rejected.
    pub fn new(client: Client, cluster: u64, frame_size_max: usize) -> ClientNode {
        ClientNode {
            client,
            cluster,
            frame_size_max,
            transmits: VecDeque::new(),
        }
    }

    /// The client inside.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Starts a request; see [`Client::request`].
    pub fn request(&mut self, now: Instant, op: Vec<u8>) -> Result<u64, ClientError> {
        let number = self.client.request(now, op)?;
        self.drain();
        Ok(number)
    }

    /// Starts a reconfiguration; see [`Client::reconfigure_with_addresses`].
    pub fn reconfigure(
        &mut self,
        now: Instant,
        members: Vec<MemberId>,
        addresses: Vec<Vec<u8>>,
    ) -> Result<u64, ClientError> {
        let number = self
            .client
            .reconfigure_with_addresses(now, members, addresses)?;
        self.drain();
        Ok(number)
    }

    /// Gives up on the outstanding request; see [`Client::abandon`].
    pub fn abandon(&mut self) -> Option<u64> {
        self.client.abandon()
    }

    /// Consumes whole frames from the front of `bytes` and returns the bytes
    /// used and the completion, if one of them answered the outstanding
    /// request. Frames other than replies are ignored.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<(usize, Option<Completion>), DecodeError> {
        let mut used = 0;
        let mut completion = None;
        while used < bytes.len() {
            match codec::decode(&bytes[used..], self.cluster, self.frame_size_max) {
                Ok((message, size)) => {
                    used += size;
                    match message {
                        Message::Reply(reply) => {
                            self.client.handle_reply(now, reply);
                            if let (Some(done), _) = self.drain() {
                                completion = Some(done);
                            }
                        }
                        Message::StartEpoch(notice) => {
                            // A replica of a newer epoch (§7.3): follow it.
                            self.client.handle_start_epoch(now, notice);
                            self.drain();
                        }
                        _ => {}
                    }
                }
                Err(DecodeError::Truncated { .. }) => break,
                Err(error) => return Err(error),
            }
        }
        Ok((used, completion))
    }

    /// Resends on timeout; returns an error when the request was abandoned.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<ClientError> {
        self.client.handle_timeout(now);
        self.drain().1
    }

    /// When [`ClientNode::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// The next frame to send, and to which member.
    pub fn poll_transmit(&mut self) -> Option<(MemberId, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// Drains the client's outputs: sends become frames; the completion
    /// and the failure, if any, are returned (one request is outstanding at
    /// a time, so an input brings at most one of each).
    fn drain(&mut self) -> (Option<Completion>, Option<ClientError>) {
        let (mut completion, mut error) = (None, None);
        loop {
            match self.client.poll_output() {
                ClientOutput::Send { to, epoch, message } => {
                    let mut frame = Vec::with_capacity(codec::encoded_size(&message));
                    codec::encode_in_epoch(&message, self.cluster, epoch, &mut frame);
                    self.transmits.push_back((to, frame));
                }
                ClientOutput::Completed(done) => completion = Some(done),
                ClientOutput::Failed { error: e, .. } => error = Some(e),
                ClientOutput::Timeout(_) => return (completion, error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientConfig;
    use crate::config::Config;
    use crate::ReplicaIndex;

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

    #[test]
    fn frames_flow_between_client_and_single_replica_node() {
        let config = Config::new(3, 1);
        let now = Instant::ZERO;
        let mut node = ReplicaNode::new(
            Replica::new(config.clone(), ReplicaIndex(0), Echo, now).unwrap(),
            16,
        );
        let mut client = ClientNode::new(Client::new(ClientConfig::new(&config, 9), 0), 3, 1 << 20);
        client.request(now, b"hi".to_vec()).unwrap();
        let (to, frame) = client.poll_transmit().unwrap();
        assert_eq!(to, MemberId(0));
        // Deliver in two pieces: the first is an incomplete frame.
        assert_eq!(node.handle_bytes(now, 77, &frame[..10]), Ok(0));
        assert_eq!(node.handle_bytes(now, 77, &frame), Ok(frame.len()));
        let transmit = node.poll_transmit().unwrap();
        assert_eq!(transmit.destination, Destination::Connection(77));
        let (used, done) = client.handle_bytes(now, &transmit.frame).unwrap();
        assert_eq!(used, transmit.frame.len());
        assert_eq!(done.unwrap().result, b"hi");
        assert_eq!(node.stats().to_clients.frames_out, 1);
    }

    #[test]
    fn garbage_is_rejected_counted_and_reported() {
        let config = Config::new(3, 1);
        let now = Instant::ZERO;
        let mut node = ReplicaNode::new(
            Replica::new(config.clone(), ReplicaIndex(0), Echo, now).unwrap(),
            16,
        );
        let garbage = [0xFFu8; 64];
        assert_eq!(
            node.handle_bytes(now, 5, &garbage),
            Err(DecodeError::BadMagic)
        );
        assert_eq!(node.stats().rejected.foreign, 1);
        assert!(matches!(
            node.poll_event(),
            Some(NodeEvent::FrameRejected {
                connection: 5,
                error: DecodeError::BadMagic
            })
        ));
        // Another cluster's frame.
        let mut other = Vec::new();
        codec::encode(
            &Message::Request(crate::message::Request {
                client_id: 1,
                request_number: 1,
                op: Vec::new(),
            }),
            4,
            &mut other,
        );
        assert!(matches!(
            node.handle_bytes(now, 6, &other),
            Err(DecodeError::WrongCluster { .. })
        ));
        assert_eq!(node.stats().rejected.wrong_cluster, 1);
        assert_eq!(node.replica().op_number(), 0, "nothing reached the replica");
    }

    #[test]
    fn replica_options_validate() {
        let config = Config::new(3, 3);
        let addresses: Vec<core::net::SocketAddr> = (0..3u16)
            .map(|i| core::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i)))
            .collect();
        let options = ReplicaOptions::new(config.clone(), addresses.clone(), MemberId(2));
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
    fn requests_fed_on_several_connections_share_a_prepare() {
        let config = Config::new(3, 3);
        let now = Instant::ZERO;
        let mut node = ReplicaNode::new(
            Replica::new(config, ReplicaIndex(0), Echo, now).unwrap(),
            16,
        );
        for client in 0..4u128 {
            let frame = request_frame(client);
            assert_eq!(node.feed_bytes(now, client as u64, &frame), Ok(frame.len()));
        }
        assert_eq!(
            node.poll_transmit(),
            None,
            "nothing leaves before the flush"
        );
        node.flush();
        let prepares: Vec<_> = core::iter::from_fn(|| node.poll_transmit()).collect();
        assert_eq!(prepares.len(), 2, "one Prepare per backup");
        let stats = node.stats().replica;
        assert_eq!((stats.prepare_batches, stats.prepare_batch_entries), (1, 4));

        // `handle_bytes` flushes each call: one Prepare per connection.
        for client in 4..6u128 {
            let frame = request_frame(client);
            node.handle_bytes(now, client as u64, &frame).unwrap();
        }
        let stats = node.stats().replica;
        assert_eq!((stats.prepare_batches, stats.prepare_batch_entries), (3, 6));
    }

    #[test]
    fn routes_are_bounded() {
        let config = Config::new(3, 1);
        let now = Instant::ZERO;
        let mut node =
            ReplicaNode::new(Replica::new(config, ReplicaIndex(0), Echo, now).unwrap(), 2);
        for client_id in 0..5u128 {
            let mut frame = Vec::new();
            let request = crate::message::Request {
                client_id,
                request_number: 1,
                op: Vec::new(),
            };
            codec::encode(&Message::Request(request), 3, &mut frame);
            node.handle_bytes(now, client_id as u64, &frame).unwrap();
        }
        assert_eq!(node.routes.len(), 2);
        assert_eq!(
            node.stats().replies_unroutable,
            0,
            "each reply went out before its route was evicted"
        );
    }
}
