//! The core alone: a cluster of [`vr_core::Replica`]s and
//! [`vr_core::Client`]s in one thread, messages moved between them through
//! in-memory queues, no encoding and no IO (the drive loop of `vr-core`'s
//! crate docs, made reusable).
//!
//! What this measures is the protocol's own work per operation: the client
//! proxy building a Request; the primary's client-table lookup, log append
//! and Prepares; each backup's append and PrepareOk; the primary's commit,
//! the service upcall and the Reply. Every message is moved, never encoded:
//! `vr_core::codec` is not on this path.
//!
//! # Delivery: one turn per replica at a time
//!
//! Each replica has an inbox. The cluster takes the replicas in turn and
//! hands each one everything in its inbox, then drains its outputs once:
//! what an adapter does with the connections that were ready in one turn
//! of its loop (`vr_core::node::ReplicaNode::handle_bytes` for each, then
//! the due timers, the batch timer among them). So the primary's Prepare batching (`Config::batch_ops_max`,
//! [`MemSpec::batch_ops_max`]) works here as it does in the adapters when
//! every request that reached the primary since its last turn was ready
//! at that turn: requests answered together come back
//! together, and leave together in one Prepare of up to `batch_ops_max`
//! entries. With `batch_ops_max` 1 every request has a Prepare (and a
//! PrepareOk from each backup) of its own.
//!
//! # Time
//!
//! The core reads no clock; this cluster gives it a virtual one that moves
//! [`STEP_NS`] per message delivered, and fires every replica's timers when
//! they are due (an idle primary's heartbeats, which keep a lease alive when
//! only reads arrive). Runs are therefore deterministic. Clients' timers are
//! never fired: nothing is lost in memory, so a retry could only duplicate
//! work.
//!
//! # Reads and leases
//!
//! [`MemSpec::read_percent`] of the requests are read-only operations
//! ([`crate::service::BenchService`] answers them without changing its
//! state). With [`MemSpec::leases`] the primary answers them under its
//! lease (§6), with no Prepare; without, they go through the log like
//! writes.

use std::collections::VecDeque;

use hdrhistogram::Histogram;
use vr_core::{Client, ClientConfig, ClientOutput, Config, Instant, Message, Output, Replica};

use crate::service::{BenchService, READ_MARKER};

/// The replicas of every in-memory cluster.
pub const REPLICA_COUNT: u8 = 3;

/// Virtual time that passes per message delivered, in nanoseconds: about
/// what handling one takes, so that timers (10 ms heartbeats, the 50 ms
/// lease) fire about as often, per operation, as on a real clock.
pub const STEP_NS: u64 = 200;

/// The virtual clock's start. Not zero: a Prepare stamped 0 would never
/// start a lease, which only counts echoes of a time after the origin.
const START: Instant = Instant::from_nanos(1_000_000);

/// Leases when [`MemSpec::leases`] is on: the values of `vr-core`'s own
/// lease tests (a 50 ms lease, 5 ms clock drift).
const LEASE_NS: u64 = 50_000_000;
const CLOCK_DRIFT_NS: u64 = 5_000_000;

/// Latency is sampled on one request in this many (a clock read costs a
/// visible share of an operation in memory).
const LATENCY_SAMPLE_EVERY: u64 = 16;

/// What to build: the workload and the core's knobs under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemSpec {
    /// Clients, each with at most one request outstanding.
    pub clients: usize,
    /// Bytes per operation (reads and writes alike).
    pub op_size: usize,
    /// `Config::batch_ops_max`: the most requests per Prepare; 1 is off.
    pub batch_ops_max: u32,
    /// Leased reads at the primary (`Config::lease_duration_ns` 50 ms,
    /// `clock_drift_max_ns` 5 ms); off: every read goes through the log.
    pub leases: bool,
    /// Percentage (0 to 100) of requests that are read-only.
    pub read_percent: u8,
    /// Replica 2 is a witness (§6, `Config::witnesses`): it keeps the log
    /// and acknowledges, but executes nothing and keeps no client table or
    /// checkpoints.
    pub witness: bool,
}

impl MemSpec {
    /// Writes only, `Config`'s default batching (64), no leases.
    pub fn writes(clients: usize, op_size: usize) -> MemSpec {
        MemSpec {
            clients,
            op_size,
            batch_ops_max: Config::new(1, REPLICA_COUNT).batch_ops_max,
            leases: false,
            read_percent: 0,
            witness: false,
        }
    }

    /// The cluster configuration this spec runs.
    pub fn config(&self) -> Config {
        let mut config = Config::new(1, REPLICA_COUNT);
        config.batch_ops_max = self.batch_ops_max;
        if self.leases {
            config.lease_duration_ns = LEASE_NS;
            config.clock_drift_max_ns = CLOCK_DRIFT_NS;
        }
        if self.witness {
            config.witnesses = vec![vr_core::ReplicaIndex(REPLICA_COUNT - 1)];
        }
        config
    }
}

/// A 3-replica cluster and its clients, wired in memory.
pub struct MemCluster {
    replicas: Vec<Replica<BenchService>>,
    clients: Vec<Client>,
    /// Clients with no request outstanding, used as a stack.
    idle: Vec<usize>,
    /// Per replica, messages delivered to it at its next turn.
    inboxes: Vec<VecDeque<Message>>,
    /// Messages in all inboxes.
    in_flight: usize,
    /// The replica whose turn is next.
    turn: usize,
    /// The inbox being delivered (swapped with the replica's, so both keep
    /// their capacity).
    delivering: VecDeque<Message>,
    /// The operations requests carry.
    write_op: Vec<u8>,
    read_op: Vec<u8>,
    read_percent: u64,
    /// Bresenham's error term for `read_percent`: which request reads.
    read_credit: u64,
    /// Closed loop: a client whose request completes sends the next one at once.
    closed_loop: bool,
    now: Instant,
    completed: u64,
    latency: Option<Latency>,
}

/// Sampled latency: per client the wall-clock start of its request, when
/// it is sampled.
struct Latency {
    started: Vec<Option<std::time::Instant>>,
    histogram: Histogram<u64>,
    count: u64,
}

impl MemCluster {
    /// A fresh cluster (view 0, empty logs) with `clients` idle clients
    /// writing `op_size` bytes, with `Config`'s default batching.
    pub fn new(clients: usize, op_size: usize) -> MemCluster {
        MemCluster::with_spec(MemSpec::writes(clients, op_size))
    }

    /// A fresh cluster running `spec`.
    pub fn with_spec(spec: MemSpec) -> MemCluster {
        let config = spec.config();
        // The primary keeps the whole prepare window busy; clients beyond it
        // wait in its request queue, which must hold them all.
        assert!(
            spec.clients <= config.request_queue_max as usize + config.prepare_window_max as usize,
            "more clients in flight than the primary can hold"
        );
        assert!(spec.read_percent <= 100, "a percentage");
        let replicas = (0..REPLICA_COUNT)
            .map(|i| {
                Replica::new(
                    config.clone(),
                    vr_core::ReplicaIndex(i),
                    BenchService::new(),
                    START,
                )
                .expect("a valid Config")
            })
            .collect();
        let clients = (0..spec.clients)
            // Client id 0 is avoided only for readability of traces.
            .map(|i| Client::new(ClientConfig::new(&config, i as u128 + 1), 0))
            .collect::<Vec<_>>();
        let mut read_op = vec![0x5a; spec.op_size.max(1)];
        read_op[0] = READ_MARKER;
        MemCluster {
            replicas,
            idle: (0..clients.len()).rev().collect(),
            clients,
            inboxes: (0..REPLICA_COUNT).map(|_| VecDeque::new()).collect(),
            in_flight: 0,
            turn: 0,
            delivering: VecDeque::new(),
            write_op: vec![0x5a; spec.op_size],
            read_op,
            read_percent: u64::from(spec.read_percent),
            read_credit: 0,
            closed_loop: false,
            now: START,
            completed: 0,
            latency: None,
        }
    }

    /// Requests completed (replies received by their clients) since `new`.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Clients with no request outstanding.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// The replicas, for checks.
    pub fn replicas(&self) -> &[Replica<BenchService>] {
        &self.replicas
    }

    /// Starts recording the wall-clock latency of one request in
    /// `LATENCY_SAMPLE_EVERY` (16) into a histogram (nanoseconds); see
    /// [`MemCluster::take_latency`].
    pub fn record_latency(&mut self, histogram: Histogram<u64>) {
        self.latency = Some(Latency {
            started: vec![None; self.clients.len()],
            histogram,
            count: 0,
        });
    }

    /// The latency histogram, and stops recording.
    pub fn take_latency(&mut self) -> Option<Histogram<u64>> {
        self.latency.take().map(|l| l.histogram)
    }

    /// Starts one request on each of up to `batch` idle clients, without
    /// delivering anything yet; returns how many were started.
    pub fn submit(&mut self, batch: usize) -> usize {
        let mut started = 0;
        while started < batch {
            let Some(client) = self.idle.pop() else { break };
            self.start(client);
            started += 1;
        }
        started
    }

    /// Delivers messages until none is in flight. Returns the requests
    /// completed meanwhile.
    pub fn drive(&mut self) -> u64 {
        let before = self.completed;
        while self.step() {}
        self.completed - before
    }

    /// Closed loop: starts every idle client, then keeps each client busy
    /// (a completed request is followed at once by the next) until `ops`
    /// more requests have completed, then lets the requests still in flight
    /// finish so the cluster is quiescent again. Returns the requests
    /// completed, `ops` plus those that were in flight.
    pub fn run_closed_loop(&mut self, ops: u64) -> u64 {
        let before = self.completed;
        self.closed_loop(ops);
        self.stop_closed_loop();
        self.completed - before
    }

    /// Closed loop without the end: starts every idle client and keeps them
    /// busy until `ops` more requests have completed, leaving the rest in
    /// flight, so that calls in a row measure the steady state. Returns the
    /// requests completed.
    pub fn closed_loop(&mut self, ops: u64) -> u64 {
        let before = self.completed;
        let goal = before + ops;
        self.closed_loop = true;
        self.submit(usize::MAX);
        while self.completed < goal && self.step() {}
        self.completed - before
    }

    /// Ends a closed loop: no new requests, and the ones in flight finish.
    pub fn stop_closed_loop(&mut self) -> u64 {
        self.closed_loop = false;
        self.drive()
    }

    /// Gives one replica with mail everything in its inbox, then carries
    /// out what it caused; returns whether any replica had mail.
    fn step(&mut self) -> bool {
        if self.in_flight == 0 {
            return false;
        }
        let count = self.replicas.len();
        while self.inboxes[self.turn].is_empty() {
            self.turn = (self.turn + 1) % count;
        }
        let to = self.turn;
        self.turn = (self.turn + 1) % count;
        std::mem::swap(&mut self.inboxes[to], &mut self.delivering);
        self.in_flight -= self.delivering.len();
        let replica = &mut self.replicas[to];
        // A replica never messages itself, so nothing joins `delivering`
        // while it is delivered.
        for message in self.delivering.drain(..) {
            self.now = self.now + STEP_NS;
            // Epoch 0: the benchmark cluster is never reconfigured.
            replica.handle_message(self.now, 0, message);
        }
        self.carry_out(to);
        self.fire_due_timers();
        true
    }

    /// Drains replica `from`'s outputs: messages to the inboxes, replies to
    /// the clients (which in a closed loop send their next request). A
    /// timer due now (the batch timer) fires in `fire_due_timers`, after
    /// the whole inbox was fed: its requests share a Prepare.
    fn carry_out(&mut self, from: usize) {
        let MemCluster {
            replicas,
            clients,
            idle,
            inboxes,
            in_flight,
            write_op,
            read_op,
            read_percent,
            read_credit,
            closed_loop,
            now,
            completed,
            latency,
            ..
        } = self;
        let replica = &mut replicas[from];
        loop {
            match replica.poll_output() {
                Output::Timeout(_) => break,
                // Never reconfigured: member ids are the replicas' indexes.
                Output::Send { to, message, .. } => {
                    inboxes[usize::from(to)].push_back(message);
                    *in_flight += 1;
                }
                // The benchmark cluster is never reconfigured, and keeps
                // its replicas in memory.
                Output::NewEpoch { .. } | Output::Persist(_) => {}
                Output::Reply(reply) => {
                    // Client ids are index + 1 (see `with_spec`).
                    let index = (reply.client_id - 1) as usize;
                    clients[index].handle_reply(*now, reply);
                    // A completion, or nothing (a duplicate reply); the
                    // drain stops at the client's timeout.
                    if !matches!(clients[index].poll_output(), ClientOutput::Completed(_)) {
                        continue;
                    }
                    *completed += 1;
                    if let Some(latency) = latency {
                        if let Some(started) = latency.started[index].take() {
                            let ns = started.elapsed().as_nanos().max(1) as u64;
                            latency.histogram.saturating_record(ns);
                        }
                    }
                    if !*closed_loop {
                        idle.push(index);
                        continue;
                    }
                    // Bresenham: `read_percent` reads in every 100 requests,
                    // evenly spread.
                    *read_credit += *read_percent;
                    let op = if *read_credit >= 100 {
                        *read_credit -= 100;
                        &read_op[..]
                    } else {
                        &write_op[..]
                    };
                    start(
                        &mut clients[index],
                        index,
                        op,
                        *now,
                        inboxes,
                        in_flight,
                        latency,
                    );
                }
            }
        }
    }

    /// Fires the timers of every replica that has one due.
    fn fire_due_timers(&mut self) {
        for r in 0..self.replicas.len() {
            if self.replicas[r]
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                self.replicas[r].handle_timeout(self.now);
                self.carry_out(r);
            }
        }
    }

    fn start(&mut self, client: usize) {
        self.read_credit += self.read_percent;
        let op = if self.read_credit >= 100 {
            self.read_credit -= 100;
            &self.read_op[..]
        } else {
            &self.write_op[..]
        };
        start(
            &mut self.clients[client],
            client,
            op,
            self.now,
            &mut self.inboxes,
            &mut self.in_flight,
            &mut self.latency,
        );
    }
}

/// Starts a request of `op` on the idle client at `index` and puts its
/// message in flight.
fn start(
    client: &mut Client,
    index: usize,
    op: &[u8],
    now: Instant,
    inboxes: &mut [VecDeque<Message>],
    in_flight: &mut usize,
    latency: &mut Option<Latency>,
) {
    if let Some(latency) = latency {
        latency.count += 1;
        if latency.count.is_multiple_of(LATENCY_SAMPLE_EVERY) {
            latency.started[index] = Some(std::time::Instant::now());
        }
    }
    // A client is started only when idle, and the op fits op_size_max.
    client
        .request(now, op.to_vec())
        .expect("an idle client with an op under op_size_max");
    // A request's outputs are its first send, to the primary.
    while let ClientOutput::Send { to, message, .. } = client.poll_output() {
        inboxes[usize::from(to)].push_back(message);
        *in_flight += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_of_a_batch_commits_everywhere_in_the_same_order() {
        let mut cluster = MemCluster::new(16, 16);
        for _ in 0..10 {
            assert_eq!(cluster.submit(16), 16);
            assert_eq!(cluster.drive(), 16, "one drive answers the whole batch");
            assert_eq!(cluster.idle(), 16);
        }
        let primary = &cluster.replicas()[0];
        assert_eq!(primary.commit_number(), 160);
        assert_eq!(primary.service().executed(), 160);
        // Backups learn the last commits from the next Prepare or Commit, so
        // they may lag; what they executed is a prefix of the same order.
        for backup in &cluster.replicas()[1..] {
            assert_eq!(backup.op_number(), 160, "every op is in every log");
            assert!(backup.commit_number() >= 160 - 16);
        }
    }

    #[test]
    fn closed_loop_keeps_every_client_busy_until_the_goal() {
        let mut cluster = MemCluster::new(300, 16);
        let done = cluster.run_closed_loop(5000);
        // A turn may complete up to one request per client past the goal,
        // and as many were in flight then.
        assert!((5000..=5000 + 2 * 300).contains(&done), "{done}");
        assert_eq!(cluster.idle(), 300, "in-flight requests finished");
        assert_eq!(cluster.replicas()[0].commit_number(), done);
    }

    #[test]
    fn requests_that_arrive_together_share_a_prepare_up_to_batch_ops_max() {
        for (batch_ops_max, mean_min, mean_max) in [(1, 1.0, 1.0), (64, 32.0, 64.0)] {
            let mut cluster = MemCluster::with_spec(MemSpec {
                batch_ops_max,
                ..MemSpec::writes(256, 16)
            });
            cluster.run_closed_loop(20_000);
            let stats = cluster.replicas()[0].stats();
            let mean = stats.prepare_batch_entries as f64 / stats.prepare_batches as f64;
            assert!(
                (mean_min..=mean_max).contains(&mean),
                "batch_ops_max {batch_ops_max}: {mean} entries per Prepare"
            );
        }
    }

    #[test]
    fn with_a_lease_the_primary_answers_reads_without_prepares() {
        for leases in [false, true] {
            let mut cluster = MemCluster::with_spec(MemSpec {
                leases,
                read_percent: 50,
                ..MemSpec::writes(16, 16)
            });
            let done = cluster.run_closed_loop(10_000);
            let primary = &cluster.replicas()[0];
            let leased = primary.stats().leased_reads;
            if leases {
                // All but the reads sent before the first write's echo
                // started the lease.
                assert!(leased > done / 2 - 100, "{leased} of {done}");
                assert!(primary.op_number() < done / 2 + 100);
            } else {
                assert_eq!(leased, 0);
                assert_eq!(primary.op_number(), done);
            }
            assert_eq!(primary.view(), 0);
        }
    }

    #[test]
    fn a_witness_acknowledges_but_executes_nothing() {
        let mut cluster = MemCluster::with_spec(MemSpec {
            witness: true,
            ..MemSpec::writes(16, 16)
        });
        let done = cluster.run_closed_loop(5_000);
        let [primary, backup, witness] = cluster.replicas() else {
            panic!("three replicas")
        };
        assert_eq!(primary.stats().ops_executed, done);
        // The backup learns the last commits with the next message.
        assert!(backup.stats().ops_executed > done / 2);
        assert!(witness.is_witness());
        assert_eq!(witness.stats().ops_executed, 0);
        assert!(witness.op_number() >= primary.commit_number());
    }

    #[test]
    fn heartbeats_keep_a_lease_over_reads_alone() {
        let mut cluster = MemCluster::with_spec(MemSpec {
            leases: true,
            read_percent: 100,
            ..MemSpec::writes(4, 16)
        });
        // Long enough in virtual time for a lease to expire twice over if no
        // heartbeat renewed it: 500,000 reads (one message each) are 100 ms.
        let done = cluster.run_closed_loop(500_000);
        let primary = &cluster.replicas()[0];
        assert!(primary.stats().leased_reads > done - 100);
        assert!(primary.op_number() < 100, "reads stay out of the log");
        assert!(primary.commit_number() == primary.op_number());
        assert!(cluster.replicas().iter().all(|r| r.view() == 0));
    }
}
