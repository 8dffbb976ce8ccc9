//! The simulated network: frames in flight ordered by delivery time, random
//! message faults (loss, duplication, corruption, delay and reordering) and
//! directed link cuts (partitions).
//!
//! Frames are the bytes of [`vr_core::codec::encode`], each on a simulated
//! connection of the node layer; on delivery they go to the receiving node
//! (`handle_bytes`), so a corrupted frame meets the real decoder.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use vr_core::prng::Prng;

use crate::plan::{between, chance, LinkFaults};
use crate::trace::{Fnv64, Trace, TraceKind};

/// A node of the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    /// Replica `i`.
    Replica(u8),
    /// Client `i` (its index in the simulation).
    Client(u8),
}

impl Addr {
    /// A number identifying the node in trace hashes.
    pub fn code(self) -> u64 {
        match self {
            Addr::Replica(i) => u64::from(i),
            Addr::Client(i) => 0x100 + u64::from(i),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Replica(i) => write!(f, "r{i}"),
            Addr::Client(i) => write!(f, "c{i}"),
        }
    }
}

/// A frame in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The sender.
    pub from: Addr,
    /// The destination.
    pub to: Addr,
    /// The simulated connection it travels on (the simulator's id, shared
    /// by both ends); a frame may outlive its connection.
    pub pair: u64,
    /// The encoded message, possibly corrupted.
    pub frame: Vec<u8>,
    /// Whether the network changed a byte of it.
    pub corrupted: bool,
}

/// Counters of what the network did. They only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Frames handed to the network.
    pub sent: u64,
    /// Frames that reached their destination node.
    pub delivered: u64,
    /// Frames lost at random.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Frames with a byte changed.
    pub corrupted: u64,
    /// Frames given an extra (reordering) delay.
    pub delayed: u64,
    /// Frames dropped because their link was cut when they arrived.
    pub partition_drops: u64,
    /// Frames dropped because the network held too many in flight.
    pub overflow_drops: u64,
    /// Frames between replicas given a long delay.
    pub long_delayed: u64,
}

/// Frames in flight beyond this are dropped: a bound on memory, and on the
/// work a run can create for itself.
pub const IN_FLIGHT_MAX: usize = 200_000;

/// The network.
#[derive(Clone, Debug)]
pub struct Network {
    in_flight: BTreeMap<(u64, u64), Packet>,
    next_seq: u64,
    /// Directed links that are cut: `(from, to)`.
    cut: BTreeSet<(Addr, Addr)>,
    /// Directed links whose frames are held back (scripted schedules), with
    /// the commands held (empty: all): they arrive only when released.
    hold: BTreeMap<(Addr, Addr), Vec<u8>>,
    /// Frames held back, in arrival order.
    held: Vec<Packet>,
    faults: LinkFaults,
    /// Probability (ppm) that a frame between replicas is held up for
    /// `0..=long_delay_max_ns` more (a stale connection's retransmission):
    /// long enough to arrive after its sender crashed and recovered.
    long_delay_ppm: u32,
    long_delay_max_ns: u64,
    /// Frames to a replica arrive at a multiple of this (0: when due): the
    /// replica reads its sockets at intervals (`LoadPlan`).
    poll_interval_ns: u64,
    prng: Prng,
    stats: NetworkStats,
}

impl Network {
    /// A network with the given faults, drawing its randomness from `seed`.
    pub fn new(faults: LinkFaults, seed: u64) -> Network {
        Network {
            in_flight: BTreeMap::new(),
            next_seq: 0,
            cut: BTreeSet::new(),
            hold: BTreeMap::new(),
            held: Vec::new(),
            faults,
            long_delay_ppm: 0,
            long_delay_max_ns: 0,
            poll_interval_ns: 0,
            prng: Prng::new(seed),
            stats: NetworkStats::default(),
        }
    }

    /// Frames to replicas arrive at multiples of `interval_ns` from now
    /// on (0: when due).
    pub fn set_poll_interval(&mut self, interval_ns: u64) {
        self.poll_interval_ns = interval_ns;
    }

    /// The counters.
    pub fn stats(&self) -> &NetworkStats {
        &self.stats
    }

    /// Replaces the message faults (the simulator cleans the network for the
    /// liveness phase). Frames already in flight keep their fate.
    pub fn set_faults(&mut self, faults: LinkFaults) {
        self.faults = faults;
    }

    /// Sets the rate and bound of long delays between replicas (none by
    /// default; they draw no random numbers while off).
    pub fn set_long_delays(&mut self, ppm: u32, max_ns: u64) {
        self.long_delay_ppm = ppm;
        self.long_delay_max_ns = max_ns;
    }

    /// Cuts the directed link `from → to`.
    pub fn cut(&mut self, from: Addr, to: Addr) {
        self.cut.insert((from, to));
    }

    /// Restores the directed link `from → to`.
    pub fn heal(&mut self, from: Addr, to: Addr) {
        self.cut.remove(&(from, to));
    }

    /// Restores every link.
    pub fn heal_all(&mut self) {
        self.cut.clear();
    }

    /// Holds back every frame arriving on `from → to` from now on whose
    /// command byte is in `commands` (every frame if empty), until
    /// [`Network::release`]: a delay of any length, for scripted schedules
    /// (a vote sent before a crash and delivered after the recovery).
    pub fn hold(&mut self, from: Addr, to: Addr, commands: &[u8]) {
        self.hold.insert((from, to), commands.to_vec());
    }

    /// Stops holding `from → to` and drops its held frames: they are lost.
    /// Returns how many.
    pub fn discard_held(&mut self, from: Addr, to: Addr) -> usize {
        self.hold.remove(&(from, to));
        let before = self.held.len();
        self.held.retain(|p| (p.from, p.to) != (from, to));
        before - self.held.len()
    }

    fn holds(&self, packet: &Packet) -> bool {
        self.hold
            .get(&(packet.from, packet.to))
            .is_some_and(|commands| {
                commands.is_empty()
                    || vr_core::codec::peek_header(&packet.frame)
                        .is_some_and(|h| commands.contains(&h.command))
            })
    }

    /// Stops holding `from → to` and puts its held frames back in flight,
    /// in order, to arrive at `at`. Returns how many.
    pub fn release(&mut self, from: Addr, to: Addr, at: u64) -> usize {
        self.hold.remove(&(from, to));
        let (released, kept): (Vec<Packet>, Vec<Packet>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|p| p.from == from && p.to == to);
        self.held = kept;
        let count = released.len();
        for packet in released {
            self.redeliver(at, packet);
        }
        count
    }

    /// Releases every held link (see [`Network::release`]).
    pub fn release_all(&mut self, at: u64) -> usize {
        self.hold.clear();
        let held = std::mem::take(&mut self.held);
        let count = held.len();
        for packet in held {
            self.redeliver(at, packet);
        }
        count
    }

    /// The frames held back so far.
    pub fn held(&self) -> &[Packet] {
        &self.held
    }

    /// Whether `from → to` is cut.
    pub fn is_cut(&self, from: Addr, to: Addr) -> bool {
        self.cut.contains(&(from, to))
    }

    /// The cut links, for traces.
    pub fn cut_links(&self) -> impl Iterator<Item = &(Addr, Addr)> {
        self.cut.iter()
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends `frame` at `now`: it may be lost, duplicated, corrupted or
    /// delayed. Whether its link is cut is decided on arrival, so frames in
    /// flight when a partition starts are lost too.
    pub fn send(
        &mut self,
        now: u64,
        (from, to, pair): (Addr, Addr, u64),
        frame: Vec<u8>,
        trace: &mut Trace,
    ) {
        self.stats.sent += 1;
        if chance(&mut self.prng, self.faults.loss_ppm) {
            self.stats.lost += 1;
            trace.record(now, TraceKind::Drop, &[from.code(), to.code(), 0], || {
                format!("{from} -> {to}: lost")
            });
            return;
        }
        let copies = if chance(&mut self.prng, self.faults.duplicate_ppm) {
            self.stats.duplicated += 1;
            trace.record(now, TraceKind::Duplicate, &[from.code(), to.code()], || {
                format!("{from} -> {to}: duplicated")
            });
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut frame = frame.clone();
            let mut corrupted = false;
            if !frame.is_empty() && chance(&mut self.prng, self.faults.corrupt_ppm) {
                let at = self.prng.below(frame.len() as u64) as usize;
                // A non-zero mask, so the byte really changes.
                let mask = 1 + self.prng.below(255) as u8;
                frame[at] ^= mask;
                corrupted = true;
                self.stats.corrupted += 1;
                trace.record(
                    now,
                    TraceKind::Corrupt,
                    &[from.code(), to.code(), at as u64],
                    || format!("{from} -> {to}: byte {at} of {} changed", frame.len()),
                );
            }
            let mut delay = between(
                &mut self.prng,
                self.faults.latency_min_ns,
                self.faults.latency_max_ns,
            );
            if chance(&mut self.prng, self.faults.reorder_ppm) {
                self.stats.delayed += 1;
                delay += between(&mut self.prng, 0, self.faults.reorder_delay_max_ns);
            }
            let between_replicas = matches!((from, to), (Addr::Replica(_), Addr::Replica(_)));
            if self.long_delay_ppm > 0
                && between_replicas
                && chance(&mut self.prng, self.long_delay_ppm)
            {
                self.stats.long_delayed += 1;
                delay += between(&mut self.prng, 0, self.long_delay_max_ns);
            }
            if self.in_flight.len() >= IN_FLIGHT_MAX {
                self.stats.overflow_drops += 1;
                continue;
            }
            let mut at = now + delay;
            if self.poll_interval_ns > 0 && matches!(to, Addr::Replica(_)) {
                at = at.div_ceil(self.poll_interval_ns) * self.poll_interval_ns;
            }
            self.next_seq += 1;
            self.in_flight.insert(
                (at, self.next_seq),
                Packet {
                    from,
                    to,
                    pair,
                    frame,
                    corrupted,
                },
            );
        }
    }

    /// Delays every frame in flight from `from` to a replica by a random
    /// `0..=max_ns` more, each its own: the frames of a crashed process
    /// lingering in the network, to arrive after it restarted. Returns how
    /// many.
    pub fn linger_from(&mut self, from: Addr, max_ns: u64) -> usize {
        let keys: Vec<(u64, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, p)| p.from == from && matches!(p.to, Addr::Replica(_)))
            .map(|(&k, _)| k)
            .collect();
        for key in &keys {
            if let Some(packet) = self.in_flight.remove(key) {
                let at = key.0 + between(&mut self.prng, 0, max_ns);
                self.stats.long_delayed += 1;
                self.redeliver(at, packet);
            }
        }
        keys.len()
    }

    /// Puts a frame back in flight, to arrive at `at` unchanged (frames held
    /// by a paused replica are handed back when it resumes).
    pub fn redeliver(&mut self, at: u64, packet: Packet) {
        self.next_seq += 1;
        self.in_flight.insert((at, self.next_seq), packet);
    }

    /// When the next frame arrives.
    pub fn next_arrival(&self) -> Option<u64> {
        self.in_flight.keys().next().map(|&(at, _)| at)
    }

    /// Takes the next frame due at or before `now` whose link is not cut;
    /// frames whose link is cut are dropped on the way.
    pub fn pop_due(&mut self, now: u64, trace: &mut Trace) -> Option<Packet> {
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                return None;
            }
            let packet = entry.remove();
            if self.is_cut(packet.from, packet.to) {
                self.stats.partition_drops += 1;
                let (from, to) = (packet.from, packet.to);
                trace.record(now, TraceKind::Drop, &[from.code(), to.code(), 1], || {
                    format!("{from} -> {to}: link cut")
                });
                continue;
            }
            if self.holds(&packet) {
                self.held.push(packet);
                continue;
            }
            self.stats.delivered += 1;
            return Some(packet);
        }
        None
    }

    /// Takes the next frame due at or before `now` to `to` whose link is
    /// not cut, if any (frames of other destinations stay in flight; those
    /// to `to` whose link is cut are dropped, those held are held).
    pub fn pop_due_to(&mut self, now: u64, to: Addr, trace: &mut Trace) -> Option<Packet> {
        loop {
            let key = self
                .in_flight
                .range(..=(now, u64::MAX))
                .find(|(_, p)| p.to == to)
                .map(|(&k, _)| k)?;
            let packet = self.in_flight.remove(&key)?;
            if self.is_cut(packet.from, packet.to) {
                self.stats.partition_drops += 1;
                let from = packet.from;
                trace.record(now, TraceKind::Drop, &[from.code(), to.code(), 1], || {
                    format!("{from} -> {to}: link cut")
                });
                continue;
            }
            if self.holds(&packet) {
                self.held.push(packet);
                continue;
            }
            self.stats.delivered += 1;
            return Some(packet);
        }
    }

    /// A hash of a frame, for traces.
    pub fn frame_hash(frame: &[u8]) -> u64 {
        Fnv64::of(frame)
    }
}
