//! [`ClientNode`]: a client proxy behind the codec and the connection
//! layer.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::links::{LinkLimits, Links, Route};
use super::options::duration_ns;
use super::{
    decode_frames, format_address, parse_address, Closed, ConnectionId, LinkStats, Output,
};
use crate::client::{Client, ClientError, ClientOutput, Completion};
use crate::codec::{self, DecodeError};
use crate::message::{MemberId, Message, ReplicaIndex};
use crate::time::Instant;

/// How a client node reaches the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Replica `i` of the client's first epoch (member id
    /// `ClientConfig::members[i]`, or `i` when that is empty) listens on
    /// `addresses[i]`.
    pub addresses: Vec<SocketAddr>,
    /// Bound on each connection's queue of unsent frames, in bytes; an
    /// empty queue takes one frame of any size.
    pub queue_bytes_max: usize,
    /// First wait before reconnecting to a replica after a failure.
    pub reconnect_backoff_min: core::time::Duration,
    /// The wait doubles after each failure up to this.
    pub reconnect_backoff_max: core::time::Duration,
    /// How long a connect may take before the node gives up on it.
    pub connect_timeout: core::time::Duration,
}

impl ClientOptions {
    /// Options for a cluster at `addresses`: 1 MiB queues, reconnects after
    /// 10 ms growing to 1 s, connects given 2 s.
    pub fn new(addresses: Vec<SocketAddr>) -> ClientOptions {
        ClientOptions {
            addresses,
            queue_bytes_max: 1 << 20,
            reconnect_backoff_min: core::time::Duration::from_millis(10),
            reconnect_backoff_max: core::time::Duration::from_secs(1),
            connect_timeout: core::time::Duration::from_secs(2),
        }
    }
}

/// What a client node reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The outstanding request finished.
    Completed(Completion),
    /// The outstanding request was abandoned after
    /// [`crate::ClientConfig::request_attempts_max`] attempts: its outcome
    /// is unknown.
    Failed {
        /// Its request-number.
        request_number: u64,
        /// Why.
        error: ClientError,
    },
    /// The reconfiguration started with [`ClientNode::reconfigure`] is
    /// done: the cluster runs in `epoch` (§7).
    Reconfigured {
        /// Its request-number.
        request_number: u64,
        /// The new epoch-number.
        epoch: u32,
    },
    /// The client follows a newer epoch (§7.3).
    EpochChanged {
        /// The epoch-number.
        epoch: u32,
        /// Its members, in index order.
        members: Vec<MemberId>,
    },
    /// A member's address was learned from a newer epoch's notice.
    AddressLearned {
        /// The member.
        member: MemberId,
        /// Where it listens.
        address: SocketAddr,
    },
    /// A replica sent something that is not a frame of this cluster; the
    /// node forgot the connection, and the adapter closes it.
    FrameRejected {
        /// The connection.
        connection: ConnectionId,
        /// Why.
        error: DecodeError,
    },
}

/// A client proxy with the codec and the connection layer around it. See
/// the [module docs](super) for the contract.
pub struct ClientNode {
    client: Client,
    cluster: u64,
    frame_size_max: usize,
    links: Links,
    after_connect: Option<(ConnectionId, u32, Message)>,
    events: VecDeque<ClientEvent>,
    /// The request-number of an outstanding reconfiguration.
    reconfiguration: Option<u64>,
    last_epoch: u32,
    /// Whether the addresses of `last_epoch`'s members were taken into the
    /// address book (a notice may come without them; a later one of the
    /// same epoch may bring them).
    epoch_addresses_learned: bool,
}

impl ClientNode {
    /// Wraps `client` for the cluster `cluster`; replies larger than
    /// `frame_size_max` are rejected.
    pub fn new(
        client: Client,
        cluster: u64,
        frame_size_max: usize,
        options: &ClientOptions,
    ) -> ClientNode {
        let limits = LinkLimits {
            queue_bytes_max: options.queue_bytes_max,
            backoff_min_ns: duration_ns(options.reconnect_backoff_min),
            backoff_max_ns: duration_ns(options.reconnect_backoff_max),
            connect_timeout_ns: duration_ns(options.connect_timeout),
            inbound_max: 0,
        };
        let mut links = Links::new(limits, None);
        // The configuration names each replica's member id (after a
        // reconfiguration, not its index).
        for (member, address) in client.members().into_iter().zip(&options.addresses) {
            links.learn(Instant::ZERO, member, *address);
        }
        ClientNode {
            last_epoch: client.epoch(),
            epoch_addresses_learned: true,
            client,
            cluster,
            frame_size_max,
            links,
            after_connect: None,
            events: VecDeque::new(),
            reconfiguration: None,
        }
    }

    /// The client inside.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The member → address book.
    pub fn addresses(&self) -> Vec<(MemberId, SocketAddr)> {
        self.links.addresses().collect()
    }

    /// The connection layer's counters.
    pub fn stats(&self) -> LinkStats {
        self.links.snapshot()
    }

    // ---- Inputs ----

    /// Starts a request; see [`Client::request`].
    pub fn request(&mut self, now: Instant, op: Vec<u8>) -> Result<u64, ClientError> {
        self.links.set_now(now);
        self.client.request(now, op)
    }

    /// Starts a read of the read-only `op` at replica `replica` of the
    /// client's epoch, typically a backup (§6, "reads at backups"); see
    /// [`Client::read_at`].
    pub fn read_at(
        &mut self,
        now: Instant,
        replica: ReplicaIndex,
        op: Vec<u8>,
    ) -> Result<u64, ClientError> {
        self.links.set_now(now);
        self.client.read_at(now, replica, op)
    }

    /// Starts a reconfiguration to `members`, listening at `addresses`
    /// (§7.1); [`ClientEvent::Reconfigured`] reports its end.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        members: Vec<MemberId>,
        addresses: &[SocketAddr],
    ) -> Result<u64, ClientError> {
        self.links.set_now(now);
        let addresses = addresses.iter().map(|a| format_address(*a)).collect();
        let number = self
            .client
            .reconfigure_with_addresses(now, members, addresses)?;
        self.reconfiguration = Some(number);
        Ok(number)
    }

    /// Gives up on the outstanding request; see [`Client::abandon`].
    pub fn abandon(&mut self) -> Option<u64> {
        self.reconfiguration = None;
        self.client.abandon()
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

    /// `connection` closed or failed; the replica behind it backs off.
    pub fn handle_closed(&mut self, now: Instant, connection: ConnectionId, how: Closed) {
        self.links.set_now(now);
        self.links.closed(now, connection, how);
    }

    /// Consumes whole frames from the front of `bytes`, read from
    /// `connection`, and returns how many bytes were used. Replies and
    /// epoch notices are taken in; other frames are ignored. An error:
    /// the node forgot the connection; close it.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        bytes: &[u8],
    ) -> Result<usize, DecodeError> {
        self.links.set_now(now);
        let mut notices = Vec::new();
        let client = &mut self.client;
        let (used, frames, result) = decode_frames(
            bytes,
            self.cluster,
            self.frame_size_max,
            |message, _| match message {
                Message::Reply(reply) => client.handle_reply(now, reply),
                // A replica of a newer epoch (§7.3): followed below.
                Message::StartEpoch(notice) => notices.push(notice),
                _ => {}
            },
        );
        for notice in notices {
            self.client.handle_start_epoch(now, notice);
            self.observe_epoch(now);
        }
        let result = result.map(|()| used);
        self.links.received(connection, frames, used as u64);
        if let Err(error) = &result {
            self.links.closed(now, connection, Closed::Rejected);
            self.events.push_back(ClientEvent::FrameRejected {
                connection,
                error: error.clone(),
            });
        }
        result
    }

    /// Resends the outstanding request when its deadline passed, and gives
    /// up on connects past theirs.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.links.set_now(now);
        self.client.handle_timeout(now);
        self.links.expire(now);
    }

    // ---- Outputs ----

    /// The next thing to do; frames are appended to `buffer`. Drain until
    /// [`Output::Timeout`] after every input.
    pub fn poll_output(&mut self, buffer: &mut Vec<u8>) -> Output<ClientEvent> {
        if let Some(connection) = self.links.poll_close() {
            return Output::Close { connection };
        }
        if let Some((connection, epoch, message)) = self.after_connect.take() {
            if let Some(len) = self.encode(connection, epoch, &message, buffer) {
                return Output::Transmit { connection, len };
            }
        }
        if let Some(event) = self.events.pop_front() {
            return Output::Event(event);
        }
        loop {
            match self.client.poll_output() {
                ClientOutput::Timeout(deadline) => {
                    let links = self.links.deadline();
                    return Output::Timeout(deadline.into_iter().chain(links).min());
                }
                ClientOutput::Completed(done)
                    if Some(done.request_number) == self.reconfiguration =>
                {
                    self.reconfiguration = None;
                    // The primary answers a reconfiguration with the new
                    // epoch-number (§7.1).
                    let epoch = (done.result.get(..4).and_then(|b| b.try_into().ok()))
                        .map_or(0, u32::from_le_bytes);
                    return Output::Event(ClientEvent::Reconfigured {
                        request_number: done.request_number,
                        epoch,
                    });
                }
                ClientOutput::Completed(done) => {
                    return Output::Event(ClientEvent::Completed(done))
                }
                ClientOutput::Failed {
                    request_number,
                    error,
                } => {
                    if Some(request_number) == self.reconfiguration {
                        self.reconfiguration = None;
                    }
                    return Output::Event(ClientEvent::Failed {
                        request_number,
                        error,
                    });
                }
                ClientOutput::Send { to, epoch, message } => match self.links.route(to) {
                    Route::Open(connection) => {
                        if let Some(len) = self.encode(connection, epoch, &message, buffer) {
                            return Output::Transmit { connection, len };
                        }
                    }
                    Route::Connect(connection, address) => {
                        self.after_connect = Some((connection, epoch, message));
                        return Output::Connect {
                            connection,
                            address,
                        };
                    }
                    Route::Unreachable => self.links.stats.frames_dropped_disconnected += 1,
                },
            }
        }
    }

    /// The deadline `poll_output` would end with, without draining.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self.links.deadline();
        self.client.poll_timeout().into_iter().chain(links).min()
    }

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
        codec::encode_in_epoch(message, self.cluster, epoch, buffer);
        Some(buffer.len() - start)
    }

    /// Learns the addresses of a newer epoch the client now follows.
    fn observe_epoch(&mut self, now: Instant) {
        let epoch = self.client.epoch();
        let new_epoch = epoch != self.last_epoch;
        let addresses_known = !self.client.addresses().is_empty();
        if !new_epoch && (self.epoch_addresses_learned || !addresses_known) {
            return;
        }
        self.last_epoch = epoch;
        self.epoch_addresses_learned = addresses_known;
        let members = self.client.members();
        for (member, address) in members.iter().zip(self.client.addresses()) {
            let Some(address) = parse_address(address) else {
                continue;
            };
            if self.links.learn(now, *member, address) {
                self.events.push_back(ClientEvent::AddressLearned {
                    member: *member,
                    address,
                });
            }
        }
        if new_epoch {
            self.events
                .push_back(ClientEvent::EpochChanged { epoch, members });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientConfig;
    use crate::config::Config;

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// §7: after a reconfiguration a replica's member id is not its index.
    /// A client built for such a configuration knows replica `i` at
    /// `addresses[i]` under the member id the configuration gives it, so
    /// that its sends to that member go there.
    #[test]
    fn addresses_are_booked_under_the_configurations_member_ids() {
        let mut config = ClientConfig::new(&Config::new(3, 3), 9);
        config.members = vec![MemberId(0), MemberId(2), MemberId(5)];
        let addresses = vec![address(7000), address(7002), address(7005)];
        let node = ClientNode::new(
            Client::new(config, 0),
            3,
            1 << 20,
            &ClientOptions::new(addresses.clone()),
        );
        assert_eq!(
            node.addresses(),
            vec![
                (MemberId(0), addresses[0]),
                (MemberId(2), addresses[1]),
                (MemberId(5), addresses[2])
            ]
        );
    }

    /// A client of three replicas at ports 7000..7002, cluster 3.
    fn three_replica_client() -> ClientNode {
        let config = ClientConfig::new(&Config::new(3, 3), 9);
        let addresses = vec![address(7000), address(7001), address(7002)];
        ClientNode::new(
            Client::new(config, 0),
            3,
            1 << 20,
            &ClientOptions::new(addresses),
        )
    }

    /// §6, reads at backups: `read_at` sends a ReadRequest to the replica
    /// it names (connecting to that replica's address first), not to the
    /// primary, carrying the op and the highest op-number seen; a second
    /// read while one is outstanding is refused.
    #[test]
    fn read_at_sends_a_read_request_to_the_named_replica() {
        let mut node = three_replica_client();
        let now = Instant::from_nanos(1_000);
        let number = node
            .read_at(now, ReplicaIndex(2), b"get k".to_vec())
            .expect("no request outstanding");
        let mut buffer = Vec::new();
        let connection = match node.poll_output(&mut buffer) {
            Output::Connect {
                connection,
                address: to,
            } => {
                assert_eq!(to, address(7002));
                connection
            }
            other => panic!("expected a connect to replica 2, got {other:?}"),
        };
        node.handle_connected(now, connection);
        let len = match node.poll_output(&mut buffer) {
            Output::Transmit { connection: c, len } if c == connection => len,
            other => panic!("expected the read on the new connection, got {other:?}"),
        };
        let frame = &buffer[buffer.len() - len..];
        let (message, _) = codec::decode(frame, 3, 1 << 20).expect("a valid frame");
        match message {
            Message::ReadRequest(read) => {
                assert_eq!(read.request_number, number);
                assert_eq!(read.op, b"get k".to_vec());
                assert_eq!(read.op_number_min, 0);
            }
            other => panic!("expected a ReadRequest, got {other:?}"),
        }
        assert!(matches!(
            node.poll_output(&mut buffer),
            Output::Timeout(Some(_))
        ));
        assert_eq!(
            node.read_at(now, ReplicaIndex(1), b"get k".to_vec()),
            Err(ClientError::Busy)
        );
    }

    /// §7.3: a client may hear of a new epoch first from a replica that
    /// knows no addresses (one restarted from a configuration naming only
    /// members). A later notice of the same epoch that carries them must
    /// still fill in the address book, or the new members stay unreachable
    /// for good (found by `vr-sim` seed 4018 of `reconfiguration.rs`).
    #[test]
    fn a_later_notice_of_the_same_epoch_brings_the_new_members_addresses() {
        let mut node = three_replica_client();
        let now = Instant::from_nanos(1_000);
        let members: Vec<MemberId> = (0..5).map(MemberId).collect();
        let notice = |addresses: Vec<Vec<u8>>| {
            let mut frame = Vec::new();
            let message = Message::StartEpoch(crate::message::StartEpoch {
                view: 1,
                epoch: 1,
                op_number: 50,
                entry_view: 0,
                members: members.clone(),
                addresses,
                sender: MemberId(0),
            });
            codec::encode_in_epoch(&message, 3, 1, &mut frame);
            frame
        };
        let mut buffer = Vec::new();
        let mut drain = |node: &mut ClientNode| {
            let mut events = Vec::new();
            loop {
                match node.poll_output(&mut buffer) {
                    Output::Timeout(_) => return events,
                    Output::Event(event) => events.push(event),
                    _ => {}
                }
            }
        };
        let bare = notice(Vec::new());
        assert_eq!(
            node.handle_bytes(now, ConnectionId(0), &bare),
            Ok(bare.len())
        );
        let events = drain(&mut node);
        assert!(events
            .iter()
            .any(|e| matches!(e, ClientEvent::EpochChanged { epoch: 1, .. })));
        assert_eq!(node.client().epoch(), 1);
        assert_eq!(
            node.addresses().len(),
            3,
            "no address for members 3 and 4 yet"
        );
        let full = notice((7000..7005).map(|p| format_address(address(p))).collect());
        assert_eq!(
            node.handle_bytes(now, ConnectionId(0), &full),
            Ok(full.len())
        );
        let events = drain(&mut node);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, ClientEvent::EpochChanged { .. })),
            "the same epoch is not announced twice: {events:?}"
        );
        assert_eq!(
            node.addresses()
                .into_iter()
                .filter(|(m, _)| m.0 >= 3)
                .collect::<Vec<_>>(),
            vec![(MemberId(3), address(7003)), (MemberId(4), address(7004))]
        );
    }
}
