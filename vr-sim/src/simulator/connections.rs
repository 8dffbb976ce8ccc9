//! The simulated connection layer under `vr_core::node`: each replica and
//! client is a [`vr_core::node::ReplicaNode`] or
//! [`vr_core::node::ClientNode`], and this module plays the sockets.
//!
//! - Replica slot `i` listens at [`replica_address`]`(i)`; clients listen
//!   nowhere. `Output::Connect { address }` names the target slot.
//! - A connect reaches its target after a network delay. A live target
//!   accepts it (`handle_accepted`) and the connector hears
//!   `handle_connected` at once; a crashed one refuses it (the connector
//!   hears `handle_closed(Failed)` a delay later: backoff); over a cut link
//!   nothing answers and the node's own connect timeout gives up.
//! - Frames queued on a connection still connecting wait for it to open;
//!   a frame is "written" (`handle_written`) when it enters the network.
//! - A close (a node's `Output::Close`, a rejected frame, a crash) reaches
//!   the other end as `handle_closed` a delay later.
//! - The network keeps its datagram faults (loss, duplication, reordering,
//!   corruption, long delays), so a frame may arrive after its connection
//!   closed: a replica then reads it on a connection accepted for it and
//!   closed at once (what a restarted peer's stale retransmission, or data
//!   read just before an EOF, amounts to); a client drops it.
//! - A paused replica handles no connection event until it resumes.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use vr_core::node::{Closed, ConnectionId};

use super::*;

/// Where replica slot `slot` listens: `10.0.<hi>.<lo>:7000` for
/// `slot + 1`.
pub fn replica_address(slot: u8) -> SocketAddr {
    let [hi, lo] = (u16::from(slot) + 1).to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, hi, lo), 7000))
}

/// The slot listening at `address`, if any.
fn slot_at(address: SocketAddr) -> Option<u8> {
    let SocketAddr::V4(v4) = address else {
        return None;
    };
    let [a, b, hi, lo] = v4.ip().octets();
    if (a, b, v4.port()) != (10, 0, 7000) {
        return None;
    }
    u8::try_from(u16::from_be_bytes([hi, lo]).checked_sub(1)?).ok()
}

/// The address a node is seen to connect from (for `handle_accepted`).
fn remote_address(addr: Addr) -> SocketAddr {
    match addr {
        Addr::Replica(i) => replica_address(i),
        Addr::Client(c) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, c), 40000)),
    }
}

/// One end of a simulated connection: a node and its id for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct End {
    pub addr: Addr,
    pub connection: ConnectionId,
}

/// A simulated connection: the connector's end, the acceptor's end once
/// accepted, and the frames the connector queued before that.
#[derive(Debug)]
struct Pair {
    ends: [Option<End>; 2],
    target: Addr,
    queued: Vec<Vec<u8>>,
}

const CONNECTOR: usize = 0;
const ACCEPTOR: usize = 1;

/// Something due on a connection.
#[derive(Clone, Copy, Debug)]
enum LinkEvent {
    /// The connect of a pair reaches its target.
    Arrive { pair: u64 },
    /// One end of a pair learns the connection ended.
    Closed { pair: u64, side: usize, how: Closed },
}

/// Counters of the simulated sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Connects that reached a live target and were accepted.
    pub accepted: u64,
    /// Connects refused: the target was down (or refused by its cap).
    pub refused: u64,
    /// Connects that met a cut link and got no answer (the connector's
    /// timeout ends them).
    pub unanswered: u64,
    /// Connections closed by a node (`Output::Close`, a rejected frame)
    /// or by a crash.
    pub closed: u64,
    /// Frames that arrived after their connection closed at the
    /// receiving replica, read on a connection accepted for them.
    pub stale_frames_read: u64,
    /// Frames that arrived at a client after its connection closed.
    pub stale_frames_dropped: u64,
    /// Frames of which a node used only a part (a corrupted length): the
    /// stream is out of step, so the simulator closes the connection.
    pub streams_broken: u64,
}

/// The node layer's counters (`vr_core::node::NodeStats`), summed over
/// every replica incarnation and client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Outbound connection attempts.
    pub connects: u64,
    /// Attempts after the first to the same peer.
    pub reconnects: u64,
    /// Attempts that failed or timed out.
    pub connect_failures: u64,
    /// Connections closed because they sent what is not a frame of the
    /// cluster.
    pub closed_bad_input: u64,
    /// Frames dropped because their connection's queue was full.
    pub dropped_queue_full: u64,
    /// Frames dropped for want of a connection (backoff, unknown address).
    pub dropped_disconnected: u64,
    /// Replies for clients whose connection was unknown or gone.
    pub replies_unroutable: u64,
    /// Addresses learned from reconfigurations (§7).
    pub addresses_learned: u64,
}

impl NodeCounters {
    /// Adds a connection layer's counters.
    pub fn add_links(&mut self, links: &vr_core::node::LinkStats) {
        self.connects += links.connects;
        self.reconnects += links.reconnects;
        self.connect_failures += links.connect_failures;
        self.closed_bad_input += links.connections_closed_bad_input;
        self.dropped_queue_full += links.frames_dropped_queue_full;
        self.dropped_disconnected += links.frames_dropped_disconnected;
    }

    /// Adds a replica node's counters.
    pub fn add(&mut self, stats: &vr_core::node::NodeStats) {
        self.add_links(&stats.links);
        self.replies_unroutable += stats.replies_unroutable;
    }
}

/// The connection table.
pub(super) struct Connections {
    pairs: BTreeMap<u64, Pair>,
    /// Live ends, to their pair.
    ends: BTreeMap<(Addr, ConnectionId), u64>,
    next_pair: u64,
    events: BTreeMap<(u64, u64), LinkEvent>,
    next_seq: u64,
    /// Handshake and close delays, apart from the network's stream.
    prng: Prng,
    latency_min_ns: u64,
    latency_max_ns: u64,
    pub counters: LinkCounters,
}

impl Connections {
    pub(super) fn new(seed: u64, latency_min_ns: u64, latency_max_ns: u64) -> Connections {
        Connections {
            pairs: BTreeMap::new(),
            ends: BTreeMap::new(),
            next_pair: 0,
            events: BTreeMap::new(),
            next_seq: 0,
            prng: Prng::new(seed),
            latency_min_ns,
            latency_max_ns,
            counters: LinkCounters::default(),
        }
    }

    /// When the next connection event is due.
    pub(super) fn next_event_at(&self) -> Option<u64> {
        self.events.keys().next().map(|&(at, _)| at)
    }

    fn schedule(&mut self, at: u64, event: LinkEvent) {
        self.next_seq += 1;
        self.events.insert((at, self.next_seq), event);
    }

    fn delay(&mut self) -> u64 {
        between(&mut self.prng, self.latency_min_ns, self.latency_max_ns)
    }

    /// `from` opens `connection` to `address` (`Output::Connect`).
    pub(super) fn connect(
        &mut self,
        now: u64,
        from: Addr,
        connection: ConnectionId,
        address: SocketAddr,
        slots: usize,
    ) {
        self.next_pair += 1;
        let pair = self.next_pair;
        let target = slot_at(address).filter(|&s| usize::from(s) < slots);
        self.pairs.insert(
            pair,
            Pair {
                ends: [
                    Some(End {
                        addr: from,
                        connection,
                    }),
                    None,
                ],
                target: Addr::Replica(target.unwrap_or(0)),
                queued: Vec::new(),
            },
        );
        self.ends.insert((from, connection), pair);
        let at = now + self.delay();
        match target {
            Some(_) => self.schedule(at, LinkEvent::Arrive { pair }),
            // Nobody listens there: refused.
            None => {
                self.counters.refused += 1;
                self.schedule(
                    at,
                    LinkEvent::Closed {
                        pair,
                        side: CONNECTOR,
                        how: Closed::Failed,
                    },
                );
            }
        }
    }

    /// Where a frame `from` queues on `connection` goes: `Some((pair, to))`
    /// to send now, `None` if it waits for the connect (kept here) or the
    /// connection is unknown (dropped).
    pub(super) fn transmit(
        &mut self,
        from: Addr,
        connection: ConnectionId,
        frame: &[u8],
    ) -> Option<(u64, Addr)> {
        let pair_id = *self.ends.get(&(from, connection))?;
        let pair = self.pairs.get_mut(&pair_id)?;
        let side = usize::from(pair.ends[CONNECTOR].map(|e| e.addr) != Some(from));
        match pair.ends[1 - side] {
            Some(other) => Some((pair_id, other.addr)),
            None => {
                pair.queued.push(frame.to_vec());
                None
            }
        }
    }

    /// `from` closed `connection` (or forgot it): its end goes, and the
    /// other end hears of it a delay later.
    pub(super) fn close(&mut self, now: u64, from: Addr, connection: ConnectionId, how: Closed) {
        let Some(pair_id) = self.ends.remove(&(from, connection)) else {
            return;
        };
        self.counters.closed += 1;
        let Some(pair) = self.pairs.get_mut(&pair_id) else {
            return;
        };
        let side = usize::from(
            pair.ends[CONNECTOR]
                != Some(End {
                    addr: from,
                    connection,
                }),
        );
        pair.ends[side] = None;
        pair.queued.clear();
        if pair.ends[1 - side].is_some() {
            let at = now + self.delay();
            self.schedule(
                at,
                LinkEvent::Closed {
                    pair: pair_id,
                    side: 1 - side,
                    how,
                },
            );
        } else {
            self.pairs.remove(&pair_id);
        }
    }

    /// Every live end of `addr` (a crash closes them all).
    pub(super) fn ends_of(&self, addr: Addr) -> Vec<ConnectionId> {
        (self
            .ends
            .range((addr, ConnectionId(0))..=(addr, ConnectionId(u64::MAX))))
        .map(|((_, c), _)| *c)
        .collect()
    }

    /// The receiving end's connection id for a frame on `pair` to `to`, if
    /// that end is still open.
    pub(super) fn receiver(&self, pair: u64, to: Addr) -> Option<ConnectionId> {
        let p = self.pairs.get(&pair)?;
        let end = p.ends.iter().flatten().find(|e| e.addr == to)?;
        (self.ends.get(&(end.addr, end.connection)) == Some(&pair)).then_some(end.connection)
    }

    /// Live connections, for tests.
    pub(super) fn open_count(&self) -> usize {
        self.ends.len()
    }
}

impl Simulator {
    /// Handles the connection event due now, if any; `false` if none.
    pub(super) fn link_event(&mut self) -> bool {
        let now = self.now;
        let Some(entry) = self.connections.events.first_entry() else {
            return false;
        };
        if entry.key().0 > now {
            return false;
        }
        let event = entry.remove();
        match event {
            LinkEvent::Arrive { pair } => self.connect_arrives(pair),
            LinkEvent::Closed { pair, side, how } => self.close_arrives(pair, side, how),
        }
        true
    }

    /// A paused replica handles no connection event until it resumes.
    fn defer_if_paused(&mut self, addr: Addr, event: LinkEvent) -> bool {
        let Addr::Replica(i) = addr else {
            return false;
        };
        let Some(until) = self.replicas[usize::from(i)].paused_until else {
            return false;
        };
        self.connections.schedule(until, event);
        true
    }

    fn connect_arrives(&mut self, pair_id: u64) {
        let now = self.now;
        let Some(pair) = self.connections.pairs.get(&pair_id) else {
            return;
        };
        // The connector gave up before: nothing to answer.
        let Some(connector) = pair.ends[CONNECTOR] else {
            return;
        };
        let target = pair.target;
        if self.defer_if_paused(target, LinkEvent::Arrive { pair: pair_id }) {
            return;
        }
        let Addr::Replica(t) = target else {
            return;
        };
        let local = self.replicas[usize::from(t)].clock.local(now);
        let refuse = |sim: &mut Simulator, how| {
            sim.connections.counters.refused += 1;
            let at = now + sim.connections.delay();
            sim.connections.schedule(
                at,
                LinkEvent::Closed {
                    pair: pair_id,
                    side: CONNECTOR,
                    how,
                },
            );
        };
        if self.network.is_cut(connector.addr, target)
            || self.network.is_cut(target, connector.addr)
        {
            // The handshake is lost: the connector's connect timeout ends it.
            self.connections.counters.unanswered += 1;
            self.trace.record(
                now,
                TraceKind::Link,
                &[1, connector.addr.code(), target.code()],
                || {
                    format!(
                        "{} -> {target}: connect unanswered (link cut)",
                        connector.addr
                    )
                },
            );
            return;
        }
        let Some(node) = self.replicas[usize::from(t)].node.as_mut() else {
            self.trace.record(
                now,
                TraceKind::Link,
                &[2, connector.addr.code(), target.code()],
                || format!("{} -> {target}: connect refused (down)", connector.addr),
            );
            refuse(self, Closed::Failed);
            return;
        };
        let Some(accepted) = node.handle_accepted(local, Some(remote_address(connector.addr)))
        else {
            refuse(self, Closed::Eof);
            return;
        };
        self.connections.counters.accepted += 1;
        self.connections.ends.insert((target, accepted), pair_id);
        let queued = match self.connections.pairs.get_mut(&pair_id) {
            Some(pair) => {
                pair.ends[ACCEPTOR] = Some(End {
                    addr: target,
                    connection: accepted,
                });
                std::mem::take(&mut pair.queued)
            }
            None => Vec::new(),
        };
        self.trace.record(
            now,
            TraceKind::Link,
            &[3, connector.addr.code(), target.code()],
            || format!("{} -> {target}: connected", connector.addr),
        );
        self.drain_addr(target);
        // The connector hears it is open, and its queued frames leave.
        match connector.addr {
            Addr::Replica(i) => {
                let local = self.replicas[usize::from(i)].clock.local(now);
                if let Some(node) = self.replicas[usize::from(i)].node.as_mut() {
                    node.handle_connected(local, connector.connection);
                    for frame in &queued {
                        node.handle_written(connector.connection, frame.len());
                    }
                }
            }
            Addr::Client(c) => {
                let node = self.client_node_mut(c);
                node.handle_connected(Instant::from_nanos(now), connector.connection);
                for frame in &queued {
                    node.handle_written(connector.connection, frame.len());
                }
            }
        }
        for frame in queued {
            self.send_frame(connector.addr, target, pair_id, frame);
        }
        self.drain_addr(connector.addr);
    }

    fn close_arrives(&mut self, pair_id: u64, side: usize, how: Closed) {
        let Some(end) = (self.connections.pairs.get(&pair_id)).and_then(|p| p.ends[side]) else {
            return;
        };
        if self.defer_if_paused(
            end.addr,
            LinkEvent::Closed {
                pair: pair_id,
                side,
                how,
            },
        ) {
            return;
        }
        if let Some(pair) = self.connections.pairs.get_mut(&pair_id) {
            pair.ends[side] = None;
            if pair.ends.iter().all(Option::is_none) {
                self.connections.pairs.remove(&pair_id);
            }
        }
        self.connections.ends.remove(&(end.addr, end.connection));
        let now = self.now;
        self.trace.record(
            now,
            TraceKind::Link,
            &[4, end.addr.code(), end.connection.0],
            || format!("{}: {} closed ({how:?})", end.addr, end.connection),
        );
        match end.addr {
            Addr::Replica(i) => {
                let local = self.replicas[usize::from(i)].clock.local(now);
                if let Some(node) = self.replicas[usize::from(i)].node.as_mut() {
                    node.handle_closed(local, end.connection, how);
                }
            }
            Addr::Client(c) => {
                self.client_node_mut(c).handle_closed(
                    Instant::from_nanos(now),
                    end.connection,
                    how,
                );
            }
        }
        self.drain_addr(end.addr);
    }

    /// Carries out a node's outputs after an input that came from outside
    /// its own step.
    fn drain_addr(&mut self, addr: Addr) {
        match addr {
            Addr::Replica(i) => self.replica_step(i, |_, _| {}),
            Addr::Client(c) => self.drain_client(c),
        }
    }

    /// The frames a node output, into the network, traced.
    pub(super) fn send_frame(&mut self, from: Addr, to: Addr, pair: u64, frame: Vec<u8>) {
        let now = self.now;
        let command = codec::peek_header(&frame).map(|h| h.command);
        let max = self.config.message_size_max as usize;
        let cluster = self.config.cluster;
        if command == Some(Command::Prepare as u8) {
            if let Ok((Message::Prepare(prepare), _)) = codec::decode(&frame, cluster, max) {
                let entries = prepare.entries.len() as u64;
                self.stats.prepare_entries_max = self.stats.prepare_entries_max.max(entries);
            }
        }
        self.trace.record(
            now,
            TraceKind::Send,
            &[from.code(), to.code()],
            || match codec::decode(&frame, cluster, usize::MAX) {
                Ok((message, _)) => format!("{from} -> {to}: {}", describe(&message)),
                Err(e) => format!("{from} -> {to}: an undecodable frame ({e})"),
            },
        );
        self.network
            .send(now, (from, to, pair), frame, &mut self.trace);
    }

    /// Closes every connection of `addr` (it crashed): the other ends hear
    /// of it a delay later.
    pub(super) fn close_all(&mut self, addr: Addr) {
        for connection in self.connections.ends_of(addr) {
            self.connections
                .close(self.now, addr, connection, Closed::Eof);
        }
    }

    /// Live simulated connections (both ends counted), for tests.
    pub fn open_connections(&self) -> usize {
        self.connections.open_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_their_slot_and_nothing_else() {
        for slot in [0u8, 1, 4, 254, 255] {
            assert_eq!(slot_at(replica_address(slot)), Some(slot));
        }
        assert_eq!(slot_at(remote_address(Addr::Client(3))), None);
        assert_eq!(slot_at("10.0.0.0:7000".parse().unwrap()), None);
        assert_eq!(slot_at("10.0.0.1:7001".parse().unwrap()), None);
    }
}
