//! The connection layer both nodes share: which connections exist, who is
//! at the other end, where each member listens, when to try a failed peer
//! again, and how many bytes each connection has queued.
//!
//! Sans-IO like the rest: the adapter opens and closes sockets when told
//! ([`super::Output::Connect`], [`super::Output::Close`]) and reports what
//! happened to them; this module decides.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::{Closed, ConnectionId, ConnectionStats, LinkStats};
use crate::message::MemberId;
use crate::time::Instant;

/// The tunables of [`Links`], from the node's options.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkLimits {
    pub queue_bytes_max: usize,
    pub backoff_min_ns: u64,
    pub backoff_max_ns: u64,
    pub connect_timeout_ns: u64,
    pub inbound_max: usize,
}

/// One connection the adapter holds open (or is opening) for the node.
#[derive(Clone, Debug)]
struct Link {
    /// The member this node connected to; `None` for an accepted one.
    member: Option<MemberId>,
    remote: Option<SocketAddr>,
    queued_bytes: usize,
    frames_in: u64,
    bytes_in: u64,
    frames_out: u64,
    bytes_out: u64,
    writes: u64,
}

/// What the node knows of one member's listener.
#[derive(Clone, Debug)]
struct Peer {
    address: Option<SocketAddr>,
    link: Option<ConnectionId>,
    /// No new connect before this, after a failure.
    retry_at: Instant,
    /// When the last connection failed or was lost.
    failed_at: Instant,
    backoff_ns: u64,
    attempted: bool,
}

/// Where a frame for a member goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// On this connection, open or opening.
    Open(ConnectionId),
    /// On a connection the adapter must open first.
    Connect(ConnectionId, SocketAddr),
    /// Nowhere: address unknown, or waiting out a backoff.
    Unreachable,
}

/// The connection table and the member → address book.
#[derive(Clone, Debug)]
pub(crate) struct Links {
    limits: LinkLimits,
    next_id: u64,
    links: BTreeMap<ConnectionId, Link>,
    /// The outbound connections still connecting, and when to give up on
    /// each: kept apart so that the per-turn deadline and expiry look at
    /// these few, not at every client connection.
    connecting: BTreeMap<ConnectionId, Instant>,
    peers: BTreeMap<MemberId, Peer>,
    /// This node's own member id, never connected to.
    me: Option<MemberId>,
    inbound: usize,
    /// The node's clock as of its last input: draining takes no `now`.
    now: Instant,
    /// Connections the node gave up on, for the adapter to close.
    to_close: VecDeque<ConnectionId>,
    pub(crate) stats: LinkStats,
}

/// Member ids are a `u8`: the book never holds more than this.
const PEERS_MAX: usize = 1 << u8::BITS;

impl Links {
    pub(crate) fn new(limits: LinkLimits, me: Option<MemberId>) -> Links {
        Links {
            limits,
            next_id: 1,
            links: BTreeMap::new(),
            connecting: BTreeMap::new(),
            peers: BTreeMap::new(),
            me,
            inbound: 0,
            now: Instant::ZERO,
            to_close: VecDeque::new(),
            stats: LinkStats::default(),
        }
    }

    /// Records the time of an input.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// The time of the latest input.
    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    fn allocate(&mut self) -> ConnectionId {
        let id = ConnectionId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Sets `member`'s address. A member whose address changed has its
    /// connection closed (it pointed at the old one) and is tried again at
    /// once. Returns whether anything changed.
    pub(crate) fn learn(&mut self, now: Instant, member: MemberId, address: SocketAddr) -> bool {
        if Some(member) == self.me
            || (!self.peers.contains_key(&member) && self.peers.len() >= PEERS_MAX)
        {
            return false;
        }
        let backoff_ns = self.limits.backoff_min_ns;
        let peer = self.peers.entry(member).or_insert(Peer {
            address: None,
            link: None,
            retry_at: now,
            failed_at: now,
            backoff_ns,
            attempted: false,
        });
        if peer.address == Some(address) {
            return false;
        }
        peer.address = Some(address);
        peer.retry_at = now;
        peer.backoff_ns = backoff_ns;
        if let Some(id) = peer.link.take() {
            self.links.remove(&id);
            self.connecting.remove(&id);
            self.to_close.push_back(id);
        }
        true
    }

    /// The address book: every member with a known address.
    pub(crate) fn addresses(&self) -> impl Iterator<Item = (MemberId, SocketAddr)> + '_ {
        self.peers
            .iter()
            .filter_map(|(m, p)| Some((*m, p.address?)))
    }

    /// The connection a frame for `member` goes on, opening one if the
    /// member's backoff has passed.
    pub(crate) fn route(&mut self, member: MemberId) -> Route {
        let now = self.now;
        let Some(peer) = self.peers.get_mut(&member) else {
            return Route::Unreachable;
        };
        if let Some(id) = peer.link {
            return Route::Open(id);
        }
        let Some(address) = peer.address else {
            return Route::Unreachable;
        };
        if now < peer.retry_at {
            return Route::Unreachable;
        }
        self.stats.connects += 1;
        if peer.attempted {
            self.stats.reconnects += 1;
        }
        peer.attempted = true;
        let id = ConnectionId(self.next_id);
        self.next_id += 1;
        peer.link = Some(id);
        self.connecting
            .insert(id, now + self.limits.connect_timeout_ns);
        self.links.insert(
            id,
            Link {
                member: Some(member),
                remote: Some(address),
                queued_bytes: 0,
                frames_in: 0,
                bytes_in: 0,
                frames_out: 0,
                bytes_out: 0,
                writes: 0,
            },
        );
        Route::Connect(id, address)
    }

    /// Whether a frame of `len` bytes fits `id`'s queue; if so it is
    /// counted as queued. An empty queue takes one frame of any size.
    pub(crate) fn admit(&mut self, id: ConnectionId, len: usize) -> bool {
        let Some(link) = self.links.get_mut(&id) else {
            self.stats.frames_dropped_disconnected += 1;
            return false;
        };
        if link.queued_bytes != 0 && link.queued_bytes + len > self.limits.queue_bytes_max {
            self.stats.frames_dropped_queue_full += 1;
            return false;
        }
        link.queued_bytes += len;
        link.frames_out += 1;
        link.bytes_out += len as u64;
        true
    }

    pub(crate) fn written(&mut self, id: ConnectionId, bytes: usize) {
        self.stats.writes += 1;
        if let Some(link) = self.links.get_mut(&id) {
            link.queued_bytes = link.queued_bytes.saturating_sub(bytes);
            link.writes += 1;
        }
    }

    pub(crate) fn received(&mut self, id: ConnectionId, frames: u64, bytes: u64) {
        if let Some(link) = self.links.get_mut(&id) {
            link.frames_in += frames;
            link.bytes_in += bytes;
        }
    }

    /// An inbound connection arrived: its id, or `None` when
    /// `inbound_max` are open (the adapter closes it).
    pub(crate) fn accepted(
        &mut self,
        now: Instant,
        remote: Option<SocketAddr>,
    ) -> Option<ConnectionId> {
        self.set_now(now);
        if self.inbound >= self.limits.inbound_max {
            self.stats.connections_refused += 1;
            return None;
        }
        self.inbound += 1;
        self.stats.connections_accepted += 1;
        // A peer that restarted connects as soon as it has something to
        // say (its recovery, its first vote), from an address that does not
        // say who it is: every peer waiting out a backoff may be tried at
        // its next frame, rather than after up to `backoff_max`.
        let min = self.limits.backoff_min_ns;
        for peer in self.peers.values_mut() {
            let early = peer.failed_at + min;
            if peer.link.is_none() && early < peer.retry_at {
                peer.retry_at = early;
                peer.backoff_ns = min;
            }
        }
        let id = self.allocate();
        self.links.insert(
            id,
            Link {
                member: None,
                remote,
                queued_bytes: 0,
                frames_in: 0,
                bytes_in: 0,
                frames_out: 0,
                bytes_out: 0,
                writes: 0,
            },
        );
        Some(id)
    }

    pub(crate) fn connected(&mut self, id: ConnectionId) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        self.connecting.remove(&id);
        if let Some(peer) = link.member.and_then(|m| self.peers.get_mut(&m)) {
            peer.backoff_ns = self.limits.backoff_min_ns;
        }
    }

    /// `id` is gone; returns whether it was known (and so was accepted,
    /// for routes to forget).
    pub(crate) fn closed(&mut self, now: Instant, id: ConnectionId, how: Closed) -> bool {
        let Some(link) = self.links.remove(&id) else {
            return false;
        };
        let was_connecting = self.connecting.remove(&id).is_some();
        match how {
            Closed::Rejected => self.stats.connections_closed_bad_input += 1,
            Closed::EofMidFrame => self.stats.connections_closed_mid_frame += 1,
            Closed::Eof | Closed::Failed => {}
        }
        match link.member {
            None => self.inbound -= 1,
            Some(member) => {
                if was_connecting {
                    self.stats.connect_failures += 1;
                }
                if let Some(peer) = self.peers.get_mut(&member) {
                    if peer.link == Some(id) {
                        peer.link = None;
                        peer.failed_at = now;
                        peer.retry_at = now + peer.backoff_ns;
                        peer.backoff_ns =
                            (peer.backoff_ns.saturating_mul(2)).min(self.limits.backoff_max_ns);
                    }
                }
            }
        }
        true
    }

    /// Gives up on connects past their deadline: they are closed as
    /// failures, and [`Links::poll_close`] names them.
    pub(crate) fn expire(&mut self, now: Instant) {
        let expired: Vec<ConnectionId> = (self.connecting.iter())
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.closed(now, id, Closed::Failed);
            self.to_close.push_back(id);
        }
    }

    /// A connection the node gave up on, for the adapter to close.
    pub(crate) fn poll_close(&mut self) -> Option<ConnectionId> {
        self.to_close.pop_front()
    }

    /// The earliest connect deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.connecting.values().min().copied()
    }

    pub(crate) fn snapshot(&self) -> LinkStats {
        let mut stats = self.stats.clone();
        stats.connections = (self.links.iter())
            .map(|(id, l)| ConnectionStats {
                connection: *id,
                remote: l.remote,
                member: l.member,
                connected: !self.connecting.contains_key(id),
                frames_in: l.frames_in,
                bytes_in: l.bytes_in,
                frames_out: l.frames_out,
                bytes_out: l.bytes_out,
                writes: l.writes,
                queued_bytes: l.queued_bytes,
            })
            .collect();
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Links {
        fn route_at(&mut self, now: Instant, member: MemberId) -> Route {
            self.set_now(now);
            self.route(member)
        }
    }

    fn limits() -> LinkLimits {
        LinkLimits {
            queue_bytes_max: 100,
            backoff_min_ns: 10,
            backoff_max_ns: 80,
            connect_timeout_ns: 1_000,
            inbound_max: 2,
        }
    }

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const M1: MemberId = MemberId(1);

    #[test]
    fn a_failed_peer_is_retried_after_a_doubling_backoff() {
        let mut links = Links::new(limits(), Some(MemberId(0)));
        let t = Instant::ZERO;
        links.learn(t, M1, address(7001));
        let Route::Connect(id, _) = links.route_at(t, M1) else {
            panic!("connects at once")
        };
        assert_eq!(
            links.route_at(t, M1),
            Route::Open(id),
            "one connection at a time"
        );
        links.closed(t, id, Closed::Failed);
        assert_eq!(
            links.route_at(t + 9, M1),
            Route::Unreachable,
            "backing off 10 ns"
        );
        let Route::Connect(id, _) = links.route_at(t + 10, M1) else {
            panic!("retried")
        };
        links.closed(t + 10, id, Closed::Failed);
        assert_eq!(
            links.route_at(t + 29, M1),
            Route::Unreachable,
            "backing off 20 ns"
        );
        assert!(matches!(links.route_at(t + 30, M1), Route::Connect(..)));
        let stats = links.snapshot();
        assert_eq!(
            (stats.connects, stats.reconnects, stats.connect_failures),
            (3, 2, 2)
        );
    }

    #[test]
    fn an_accepted_connection_cuts_the_backoff_short() {
        let mut links = Links::new(limits(), Some(MemberId(0)));
        let t = Instant::ZERO;
        links.learn(t, M1, address(7001));
        for _ in 0..4 {
            let Route::Connect(id, _) = links.route_at(links.peers[&M1].retry_at, M1) else {
                panic!()
            };
            links.closed(links.peers[&M1].retry_at, id, Closed::Failed);
        }
        let failed_at = links.peers[&M1].failed_at;
        assert_eq!(
            links.route_at(failed_at + 10, M1),
            Route::Unreachable,
            "a long backoff"
        );
        links.accepted(failed_at + 10, None).unwrap();
        assert!(
            matches!(links.route_at(failed_at + 10, M1), Route::Connect(..)),
            "the peer may be back"
        );
    }

    #[test]
    fn a_connect_past_its_deadline_is_given_up_and_closed() {
        let mut links = Links::new(limits(), None);
        let t = Instant::ZERO;
        links.learn(t, M1, address(7001));
        let Route::Connect(id, _) = links.route_at(t, M1) else {
            panic!()
        };
        assert_eq!(links.deadline(), Some(t + 1_000));
        links.expire(t + 999);
        assert_eq!(links.poll_close(), None);
        links.expire(t + 1_000);
        assert_eq!(links.poll_close(), Some(id));
        assert_eq!(links.snapshot().connect_failures, 1);
        assert_eq!(links.deadline(), None);
    }

    #[test]
    fn queues_are_bounded_but_take_one_oversized_frame() {
        let mut links = Links::new(limits(), None);
        let id = links.accepted(Instant::ZERO, None).unwrap();
        assert!(links.admit(id, 500), "an empty queue takes any frame");
        assert!(!links.admit(id, 1));
        links.written(id, 450);
        assert!(links.admit(id, 50));
        assert!(!links.admit(id, 1));
        assert_eq!(links.snapshot().frames_dropped_queue_full, 2);
        assert!(!links.admit(ConnectionId(99), 1));
        assert_eq!(links.snapshot().frames_dropped_disconnected, 1);
    }

    #[test]
    fn inbound_connections_are_capped() {
        let mut links = Links::new(limits(), None);
        let a = links.accepted(Instant::ZERO, None).unwrap();
        links.accepted(Instant::ZERO, None).unwrap();
        assert_eq!(links.accepted(Instant::ZERO, None), None);
        links.closed(Instant::ZERO, a, Closed::Eof);
        assert!(links.accepted(Instant::ZERO, None).is_some());
        assert_eq!(links.snapshot().connections_refused, 1);
    }

    #[test]
    fn a_moved_member_is_reconnected_at_its_new_address() {
        let mut links = Links::new(limits(), None);
        let t = Instant::ZERO;
        links.learn(t, M1, address(7001));
        let Route::Connect(old, _) = links.route_at(t, M1) else {
            panic!()
        };
        assert!(
            !links.learn(t, M1, address(7001)),
            "same address: nothing to do"
        );
        assert!(links.learn(t, M1, address(8001)));
        assert_eq!(links.poll_close(), Some(old));
        assert!(matches!(links.route_at(t, M1), Route::Connect(_, a) if a == address(8001)));
    }
}
