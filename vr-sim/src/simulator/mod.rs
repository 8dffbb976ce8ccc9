//! The cluster simulator: every replica and client of a `vr-core` cluster in
//! one process, on simulated time and a simulated network, driven by one
//! seed.
//!
//! # Determinism
//!
//! A run reads no clock, spawns no thread, opens no socket, and iterates no
//! hash map: same seed (and options), same run, event for event; the trace
//! hash ([`SeedReport::trace_hash`]) proves it. Randomness comes from
//! [`Prng`] streams derived from the seed: one for the plan, one each for
//! the network, the nemesis and the workload, so that a change in one does
//! not reshuffle the others.
//!
//! # Time
//!
//! Simulated time is global nanoseconds. Each replica has its own clock:
//! `local = offset + global × rate` (rates 0.9–1.1 when clocks are skewed),
//! and every deadline it returns is converted back to global time. The loop
//! jumps from one event to the next (a frame arriving, a timer, a client
//! invocation, a fault, a phase change); nothing happens in between.
//!
//! # Phases
//!
//! 1. *Safety*: clients run the workload while the nemesis injects faults
//!    (partitions, pauses, crashes for good, and crashes followed by a
//!    restart with wiped memory, at most f replicas down or recovering at
//!    a time); agreement and exactly-once are checked after every step.
//! 2. *Liveness*: the network is cleaned; crashed replicas due to restart
//!    restart now; the network heals for a random majority of the replicas
//!    that are up and not recovering, and for every recovering one (the
//!    others stay crashed or isolated); clients finish their outstanding
//!    operation and a few more, which must all complete within
//!    [`Options::liveness_timeout_ns`].
//! 3. *Settle*: the cluster idles; the healed replicas (restarted ones
//!    included: they must have recovered) must settle into one view, in
//!    normal status, with the same commit-number, within
//!    [`Options::settle_max_ns`]; replicas at equal commit-numbers must hold
//!    equal service state (every page) and client tables.
//!
//! Finally the client history is checked for linearizability.
//!
//! # Layout
//!
//! This module holds the options, the cluster's state, its construction
//! and the event loop; `faults` the scripted faults and the nemesis;
//! `phases` the heal and the end of each phase; `replicas` delivery to
//! replicas and the checks after each of their steps; `clients` the
//! workload, the history and the backup-read checks; `report` the counters
//! and the end of a run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use vr_core::codec::{self, DecodeError};
use vr_core::message::Command;
use vr_core::prng::Prng;
use vr_core::{
    Client, ClientConfig, Completion, Config, EntryKind, InjectedBug, Instant, MemberId, Message,
    Replica, Service, Stats, Status,
};

use crate::checks::{Agreement, Violation, ViolationKind};
use crate::history::{Event, History, Input};
use crate::kv::{key_name, Kv, KvOp, KvResult, ServiceFault, Tag};
use crate::linearizability::{self, CheckResult};
use crate::network::{Addr, Network, NetworkStats, Packet};
use crate::plan::{
    between, chance, pick, LinkFaults, PartitionShape, PrimaryCrash, SeedPlan, MS, PPM, SECOND,
};
use crate::trace::{describe, Fnv64, Trace, TraceKind};
use crate::workload;

/// How a run is carried out and judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Force the cluster size (1, 3, 5, …); `None` draws 1, 3 or 5 per seed.
    pub replica_count: Option<u8>,
    /// Switch on a deliberate protocol bug in every replica (test tool).
    pub injected_bug: Option<InjectedBug>,
    /// Keep readable trace lines in the report.
    pub trace: bool,
    /// Run the linearizability checker on the history.
    pub check_linearizability: bool,
    /// The checker's step budget per key; past it the verdict is unknown
    /// (reported, not a violation).
    pub linearizability_step_limit: u64,
    /// After the network heals, every client operation must complete
    /// within this much simulated time.
    pub liveness_timeout_ns: u64,
    /// After the workload completes, the healed replicas must settle into
    /// one view with the same commit-number within this much simulated time.
    pub settle_max_ns: u64,
    /// Draw [`SeedPlan::classic`] plans: no restarts, default checkpoints,
    /// no ballast (the plans of the seeds found before those existed).
    pub classic_plans: bool,
    /// Draw batching, leases and backup reads per seed (§6; the default).
    /// `false` draws [`SeedPlan::without_optimizations`]: the plans of the
    /// seeds found before those were simulated.
    pub optimization_plans: bool,
    /// Force every replica to boot recovering (`Some(true)`) or fresh
    /// (`Some(false)`); `None` draws it per seed (random plans only).
    pub boot_recovering: Option<bool>,
    /// Draw a reconfiguration (§7) in a quarter of the random seeds that
    /// allow one ([`SeedPlan::draw_reconfiguration`]). Off by default in
    /// the library (the pinned batches replay the plans before it); the
    /// CLI switches it on.
    pub reconfiguration_plans: bool,
    /// Draw durable replicas with a disk model in half of the random seeds
    /// that do not boot recovering ([`SeedPlan::draw_disk`]). Off by
    /// default in the library (the pinned seeds replay the plans before
    /// it); the CLI switches it on.
    pub disk_plans: bool,
    /// Force durable replicas (`Some(true)`) or memory-only ones
    /// (`Some(false)`) in every random seed; `None` draws it (with
    /// `disk_plans`).
    pub durability: Option<bool>,
    /// Switch on a deliberate storage bug in every replica's disk (test
    /// tool; durable seeds only).
    pub storage_bug: Option<vr_storage::InjectedBug>,
    /// Durable replicas: the simulator, as the embedding, writes the
    /// superblock when the commit-number in memory is a prepare window
    /// past the one on disk (the glue writes it only with a promise). On
    /// by default; off reproduces the liveness failure it avoids
    /// (docs/testing.md, "Durable replicas").
    pub disk_commit_refresh: bool,
    /// Durable replicas: a power loss may persist any subset of the
    /// unsynced sectors (`CrashMode::RandomSectors`) in whole-cluster
    /// crashes and in one-replica clusters too. Off by default: there,
    /// vr-storage reports the ops of a torn unsynced batch whose seal
    /// survived as faulty, the glue then has more than f replicas recover
    /// from their peers, and committed ops are lost (an open issue,
    /// docs/testing.md, "Durable replicas"). A single crash in a cluster
    /// of three or more draws it always.
    pub reordered_power_loss: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            replica_count: None,
            injected_bug: None,
            trace: false,
            check_linearizability: true,
            linearizability_step_limit: 1_000_000,
            liveness_timeout_ns: 60 * SECOND,
            settle_max_ns: 10 * SECOND,
            classic_plans: false,
            optimization_plans: true,
            boot_recovering: None,
            reconfiguration_plans: false,
            disk_plans: false,
            durability: None,
            storage_bug: None,
            disk_commit_refresh: true,
            reordered_power_loss: false,
        }
    }
}

mod clients;
mod connections;
mod disk;
mod epochs;
mod faults;
mod phases;
mod replicas;
mod report;

pub use connections::{replica_address, LinkCounters, NodeCounters};
pub use report::{
    CoreCounters, DiskCounters, FinalReplica, LinearizabilityVerdict, RunStats, SeedReport,
};

/// Runs `seed` with a random plan: the whole two-phase run and every checker.
pub fn run_seed(seed: u64, options: &Options) -> SeedReport {
    run_plan(plan_for(seed, options), options)
}

/// The plan [`run_seed`] runs for `seed` with `options`.
pub fn plan_for(seed: u64, options: &Options) -> SeedPlan {
    let mut plan = if options.classic_plans {
        SeedPlan::classic(seed, options.replica_count)
    } else if !options.optimization_plans {
        SeedPlan::without_optimizations(seed, options.replica_count)
    } else {
        SeedPlan::random(seed, options.replica_count)
    };
    if options.boot_recovering.is_some() {
        plan.draw_boot_forced(options.boot_recovering);
    }
    if options.reconfiguration_plans && !options.classic_plans {
        plan.draw_reconfiguration();
        plan.draw_stranding();
    }
    if (options.disk_plans || options.durability.is_some()) && !options.classic_plans {
        plan.draw_disk_forced(options.durability);
    }
    plan.config.injected_bug = options.injected_bug;
    plan
}

/// Runs `plan` to the end. A panic in the code under test is caught and
/// reported as a [`ViolationKind::Panic`], so that one bad seed does not end
/// a batch.
pub fn run_plan(plan: SeedPlan, options: &Options) -> SeedReport {
    let built = catch_unwind(AssertUnwindSafe(|| Simulator::new(plan.clone(), options)));
    let mut sim = match built {
        Ok(sim) => sim,
        Err(payload) => {
            return SeedReport {
                seed: plan.seed,
                violations: vec![Violation {
                    kind: ViolationKind::Panic,
                    time_ns: 0,
                    detail: format!("building the cluster: {}", panic_message(payload.as_ref())),
                }],
                plan,
                stats: RunStats::default(),
                trace_hash: 0,
                trace_lines: Vec::new(),
                history: Vec::new(),
                linearizability: LinearizabilityVerdict::Skipped,
                final_replicas: Vec::new(),
            };
        }
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| sim.run_to_end()));
    if let Err(payload) = outcome {
        let message = panic_message(payload.as_ref());
        sim.abort(ViolationKind::Panic, message);
    }
    sim.finish()
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// A replica's clock: `local = offset + global × rate_ppm / 10⁶`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Clock {
    offset_ns: u64,
    rate_ppm: u32,
}

impl Clock {
    fn local(self, global_ns: u64) -> Instant {
        let scaled = u128::from(global_ns) * u128::from(self.rate_ppm) / u128::from(PPM);
        Instant::from_nanos(self.offset_ns.saturating_add(scaled as u64))
    }

    /// The earliest global time whose local time is at or after `local`:
    /// rounding up, so that a timer handed this time finds itself due.
    fn global(self, local: Instant) -> u64 {
        let Some(since) = local.as_nanos().checked_sub(self.offset_ns) else {
            return 0;
        };
        let ns = (u128::from(since) * u128::from(PPM)).div_ceil(u128::from(self.rate_ppm));
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

/// What the simulator last saw of a replica, to notice changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Observed {
    view: u64,
    normal: bool,
    recovering: bool,
    commit_number: u64,
    service_faults: usize,
    /// The op-number and root of its latest checkpoint.
    checkpoint: Option<(u64, [u8; 32])>,
    /// Its epoch (§7).
    epoch: u32,
    /// Whether it was the primary of its view.
    primary: bool,
}

/// A status for traces.
fn status_name(normal: bool, recovering: bool) -> &'static str {
    match (normal, recovering) {
        (true, _) => "Normal",
        (false, true) => "Recovering",
        (false, false) => "ViewChange",
    }
}

/// The node around replica slot `slot`'s `replica`, with the default
/// options of an adapter; it knows where slots `0..book` listen (the
/// first configuration, or for a restart every slot: what an operator
/// configures) and learns the rest from reconfigurations (§7).
fn replica_node(
    config: &Config,
    slot: u8,
    book: u8,
    replica: Replica<Kv>,
    now: Instant,
) -> vr_core::node::ReplicaNode<Kv> {
    let addresses = (0..book).map(replica_address).collect();
    let options = vr_core::node::ReplicaOptions::new(config.clone(), addresses, MemberId(slot));
    vr_core::node::ReplicaNode::new(replica, &options, now)
}

/// A client node for `client_config`, knowing where the `n` replicas of
/// the first configuration listen.
fn client_node(config: &Config, client_config: ClientConfig, n: u8) -> vr_core::node::ClientNode {
    let options = vr_core::node::ClientOptions::new((0..n).map(replica_address).collect());
    vr_core::node::ClientNode::new(
        Client::new(client_config, 0),
        config.cluster,
        config.message_size_max as usize,
        &options,
    )
}

/// Frames a paused replica holds (like a socket buffer); more are dropped.
const HELD_MAX: usize = 4096;

struct ReplicaSlot {
    /// Whether it has been started (a boot seed starts replicas late).
    started: bool,
    /// The replica behind the node layer; `None` while crashed. A restart
    /// builds a fresh one with `Replica::recover` and an empty service:
    /// memory wiped (its connections too).
    node: Option<vr_core::node::ReplicaNode<Kv>>,
    /// Crashed, and restarted at this global time (`None`, while crashed:
    /// for good).
    restart_at: Option<u64>,
    /// Restarted and not yet normal: since when. Counted as failed, like a
    /// crashed replica, so that at most f replicas are down at a time.
    recovering_since: Option<u64>,
    clock: Clock,
    /// Paused until this global time (`None`: running).
    paused_until: Option<u64>,
    /// Frames that arrived while paused, delivered on resume.
    held: VecDeque<Packet>,
    observed: Observed,
    /// Durable replicas: its disk (it survives crashes).
    disk: Option<disk::DiskNode>,
}

/// An operation a client is waiting for.
#[derive(Clone, Debug)]
struct PendingOp {
    tag: Tag,
    key: u8,
    input: Input,
    /// A backup read (§6): the op-number it must reflect at least (the
    /// client's highest seen, as the simulator tracked it).
    backup_read_min: Option<u64>,
}

/// A completed backup read, to compare with the committed sequence at the
/// end of the run.
#[derive(Clone, Debug)]
struct BackupRead {
    client: u8,
    request_number: u64,
    key: u8,
    op_number: u64,
    value: Option<String>,
    completed_at: u64,
}

impl ReplicaSlot {
    /// The replica, unless crashed.
    fn replica(&self) -> Option<&Replica<Kv>> {
        self.node.as_ref().map(vr_core::node::ReplicaNode::replica)
    }
}

struct ClientSlot {
    /// The client proxy behind the node layer.
    node: vr_core::node::ClientNode,
    pending: Option<PendingOp>,
    next_invoke_at: Option<u64>,
    liveness_ops_left: u32,
    /// Requests made so far, which is the last request-number used.
    requests_made: u64,
    /// The highest op-number in a reply this client completed with (the
    /// simulator's own count, to check the client's `op_number_seen`).
    op_number_seen: u64,
    /// Scripted: the client's next operations are all reads.
    reads_only: bool,
}

/// The administrator's client of a reconfiguration plan (§7): it sends
/// the request at `issue_at` and retries until it completes. It is client
/// `client_count` on the network.
struct AdminSlot {
    node: vr_core::node::ClientNode,
    /// When to send the request (`None`: sent).
    issue_at: Option<u64>,
    /// The request-number, once sent.
    request: Option<u64>,
    /// When it completed, and the epoch it returned.
    completed: Option<(u64, u32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Safety { until: u64 },
    Liveness { healed_at: u64, deadline: u64 },
    Settle { since: u64, until: u64 },
    Done,
}

#[derive(Clone, Copy, Debug)]
struct ActivePartition {
    shape: PartitionShape,
    heal_at: u64,
}

/// Runs more events than this and the run is declared stuck.
const EVENTS_MAX: u64 = 50_000_000;
/// Handles this many events without time moving and the run is declared
/// stuck (a timer that fires without moving its deadline, say).
const SAME_INSTANT_EVENTS_MAX: u64 = 100_000;

/// A running simulation. [`run_seed`] drives one from start to end; tests
/// of scripted scenarios drive one step by step ([`Simulator::run_until`],
/// [`Simulator::cut`], [`Simulator::heal`], [`Simulator::start_liveness`]).
pub struct Simulator {
    plan: SeedPlan,
    options: Options,
    config: Config,
    now: u64,
    replicas: Vec<ReplicaSlot>,
    clients: Vec<ClientSlot>,
    network: Network,
    /// The simulated sockets under the nodes.
    connections: connections::Connections,
    nemesis_prng: Prng,
    nemesis_next_at: Option<u64>,
    partition: Option<ActivePartition>,
    /// Crashes for good still allowed.
    crashes_left: u8,
    /// Counters of crashed replica incarnations.
    retired: CoreCounters,
    /// Node-layer counters of crashed replica incarnations.
    retired_links: NodeCounters,
    workload_prng: Prng,
    phase: Phase,
    /// Replicas healed for the liveness phase (all alive ones before it).
    healed: BTreeSet<u8>,
    /// The members of epoch 0 (replica slots are member ids).
    initial_members: Vec<MemberId>,
    /// The latest epoch a replica entered, and its configuration.
    epoch: u32,
    epoch_config: Config,
    /// The reconfiguration plan's administrator.
    admin: Option<AdminSlot>,
    /// A scripted primary crash (`PrimaryCrash`) due after this step.
    crash_due: Option<u8>,
    /// Whether the scripted primary crash happened (or was skipped).
    primary_crash_done: bool,
    /// Durable replicas: the disks' stream (latencies, crash modes, disk
    /// faults, whole-cluster crashes), apart from the others so that
    /// memory-only seeds draw what they drew before.
    disk_prng: Prng,
    /// When the next disk fault strikes.
    disk_fault_next_at: Option<u64>,
    /// When the next whole-cluster crash strikes.
    cluster_crash_next_at: Option<u64>,
    /// Whole-cluster crashes still to come.
    cluster_crashes_left: u8,
    /// A whole-cluster crash waits for the next persist written.
    cluster_crash_armed: bool,
    /// The whole-cluster crash due was aimed at a persist in flight.
    cluster_crash_aimed: bool,
    /// An aimed crash waiting for a commit (`DiskPlan::cluster_crash_at_commit`):
    /// the backup whose persist is in flight, and the first op it holds.
    cluster_crash_watch: Option<(u8, u64)>,
    /// A whole-cluster crash is under way (its crashes are not the
    /// nemesis's single ones).
    cluster_crashing: bool,
    agreement: Agreement,
    backup_reads: Vec<BackupRead>,
    views_formed: BTreeSet<u64>,
    history: Vec<Event>,
    violations: Vec<Violation>,
    trace: Trace,
    stats: RunStats,
    safety_ops_invoked: u64,
    events: u64,
    same_instant_events: u64,
    last_event_at: u64,
}

impl Simulator {
    /// A cluster at time zero, as `plan` describes it.
    pub fn new(plan: SeedPlan, options: &Options) -> Simulator {
        let seed = plan.seed;
        let mut config = plan.config.clone();
        if plan.reconfiguration.is_some() {
            // The administrator is one more client: the client table keeps
            // room for every client (an evicted one would have a retried
            // request executed again, by design).
            config.client_table_max += 1;
        }
        let n = config.replica_count;
        let mut clock_prng = Prng::new(seed ^ 0xC10C_C10C);
        let mut replicas = (0..n)
            .map(|i| {
                let rate_ppm = plan
                    .faults
                    .clock_rate_ppm
                    .get(usize::from(i))
                    .copied()
                    .unwrap_or(PPM);
                let clock = Clock {
                    offset_ns: clock_prng.below(1000 * SECOND),
                    rate_ppm: rate_ppm.max(1),
                };
                // Config::validate ran when the plan was drawn; a plan built by
                // hand with a bad config is a programming error in the test.
                if plan.boot.recovering {
                    // Started later, recovering: down until then.
                    let start_at = plan.boot.start_at_ns.get(usize::from(i)).copied();
                    return ReplicaSlot {
                        started: false,
                        node: None,
                        restart_at: Some(start_at.unwrap_or(0)),
                        recovering_since: None,
                        clock,
                        paused_until: None,
                        held: VecDeque::new(),
                        observed: Observed::default(),
                        disk: None,
                    };
                }
                let kv =
                    Kv::with_ballast(plan.recovery.ballast_pages, plan.recovery.ballast_page_size);
                let replica =
                    Replica::new(config.clone(), vr_core::ReplicaIndex(i), kv, clock.local(0))
                        .unwrap_or_else(|e| panic!("invalid replica configuration: {e}"));
                ReplicaSlot {
                    started: true,
                    node: Some(replica_node(&config, i, n, replica, clock.local(0))),
                    restart_at: None,
                    recovering_since: None,
                    clock,
                    paused_until: None,
                    held: VecDeque::new(),
                    observed: Observed {
                        normal: true,
                        ..Observed::default()
                    },
                    disk: None,
                }
            })
            .collect::<Vec<_>>();
        if plan.disk.durable {
            for (i, node) in replicas.iter_mut().enumerate() {
                let storage = disk::storage_config(
                    config.cluster,
                    i as u8,
                    config.log_tail_ops,
                    options.storage_bug,
                );
                node.disk = Some(disk::DiskNode::format(storage));
            }
        }
        // New members of a reconfiguration plan: slots after the initial
        // ones (slots are member ids), each a `Replica::join` from time
        // zero, waiting for the new epoch. Clocks from a stream of their
        // own, rates among the plan's (the lease drift bound covers them).
        let target = plan
            .reconfiguration
            .as_ref()
            .map_or(Vec::new(), |r| r.members.clone());
        let slots = target.iter().map(|&m| m.0 + 1).max().unwrap_or(0).max(n);
        let mut join_prng = Prng::new(seed ^ 0x7015_E4C0_FF1E_5EED);
        for member in n..slots {
            let rates = &plan.faults.clock_rate_ppm;
            let rate_ppm = if rates.is_empty() {
                PPM
            } else {
                pick(&mut join_prng, rates)
            };
            let clock = Clock {
                offset_ns: join_prng.below(1000 * SECOND),
                rate_ppm: rate_ppm.max(1),
            };
            let replica = target.contains(&MemberId(member)).then(|| {
                let kv =
                    Kv::with_ballast(plan.recovery.ballast_pages, plan.recovery.ballast_page_size);
                let nonce = join_prng.next_u64();
                Replica::join(
                    config.clone(),
                    vr_core::MemberId(member),
                    kv,
                    clock.local(0),
                    nonce,
                )
                .unwrap_or_else(|e| panic!("invalid joiner configuration: {e}"))
            });
            replicas.push(ReplicaSlot {
                started: replica.is_some(),
                // A new member knows where the cluster it joins listens;
                // the others' addresses come with the new epoch (§7).
                node: replica.map(|r| replica_node(&config, member, n, r, clock.local(0))),
                restart_at: None,
                recovering_since: None,
                clock,
                paused_until: None,
                held: VecDeque::new(),
                observed: Observed::default(),
                disk: None,
            });
        }
        let mut workload_prng = Prng::new(seed ^ 0x3052_4B10_AD00);
        let clients = (0..plan.workload.client_count)
            .map(|_| {
                let client_id = (u128::from(workload_prng.next_u64()) << 64)
                    | u128::from(workload_prng.next_u64());
                let mut client_config = ClientConfig::new(&config, client_id);
                client_config.request_attempts_max = 0; // retry forever
                let think = between(&mut workload_prng, 0, plan.workload.think_time_max_ns);
                ClientSlot {
                    node: client_node(&config, client_config, n),
                    pending: None,
                    next_invoke_at: Some(think),
                    liveness_ops_left: 0,
                    requests_made: 0,
                    op_number_seen: 0,
                    reads_only: false,
                }
            })
            .collect::<Vec<ClientSlot>>();
        let admin = plan.reconfiguration.as_ref().map(|r| {
            let client_id =
                (u128::from(join_prng.next_u64()) << 64) | u128::from(join_prng.next_u64());
            let mut client_config = ClientConfig::new(&config, client_id);
            client_config.request_attempts_max = 0; // retry forever
            AdminSlot {
                node: client_node(&config, client_config, n),
                issue_at: Some(r.at_ns),
                request: None,
                completed: None,
            }
        });
        let mut stats = RunStats {
            reconfigurations_planned: u64::from(plan.reconfiguration.is_some()),
            skewed_clocks: plan
                .faults
                .clock_rate_ppm
                .iter()
                .filter(|&&r| r != PPM)
                .count() as u64,
            ..RunStats::default()
        };
        stats.views_formed = 0;
        let mut nemesis_prng = Prng::new(seed ^ 0x0E3E_5150);
        let nemesis_next_at = plan.faults.has_nemesis().then(|| {
            between(
                &mut nemesis_prng,
                1,
                2 * plan.faults.nemesis_interval_mean_ns,
            )
        });
        let mut disk_prng = Prng::new(seed ^ 0xD15C_D15C_0A7E_5EED);
        let d = &plan.disk;
        let disk_fault_next_at = (d.durable && !d.fault_kinds.is_empty())
            .then(|| between(&mut disk_prng, 1, 2 * d.fault_interval_mean_ns));
        let cluster_crash_next_at = (d.durable && d.cluster_crashes_max > 0)
            .then(|| between(&mut disk_prng, 1, 2 * d.cluster_crash_interval_mean_ns));
        let cluster_crashes_left = d.cluster_crashes_max;
        let mut trace = Trace::new(options.trace);
        trace.record(0, TraceKind::Phase, &[0], || {
            format!("seed {seed}: safety phase; {}", plan.summary())
        });
        let mut network = Network::new(plan.faults.links.clone(), seed ^ 0x0E7_0E7);
        network.set_long_delays(
            plan.recovery.long_delay_ppm,
            plan.recovery.long_delay_max_ns,
        );
        network.set_poll_interval(plan.load.poll_interval_ns);
        let links = &plan.faults.links;
        let connections = connections::Connections::new(
            seed ^ 0x11_4C_0E_C7,
            links.latency_min_ns,
            links.latency_max_ns,
        );
        Simulator {
            network,
            connections,
            nemesis_prng,
            nemesis_next_at,
            partition: None,
            crashes_left: plan.faults.crashes_max,
            retired: CoreCounters::default(),
            retired_links: NodeCounters::default(),
            workload_prng,
            phase: Phase::Safety {
                until: plan.workload.safety_duration_ns,
            },
            healed: (0..n).collect(),
            initial_members: (0..n).map(MemberId).collect(),
            epoch: 0,
            epoch_config: config.clone(),
            admin,
            crash_due: None,
            primary_crash_done: false,
            disk_prng,
            disk_fault_next_at,
            cluster_crash_next_at,
            cluster_crashes_left,
            cluster_crash_armed: false,
            cluster_crash_aimed: false,
            cluster_crash_watch: None,
            cluster_crashing: false,
            agreement: Agreement::new(),
            backup_reads: Vec::new(),
            views_formed: BTreeSet::new(),
            history: Vec::new(),
            violations: Vec::new(),
            trace,
            stats,
            safety_ops_invoked: 0,
            events: 0,
            same_instant_events: 0,
            last_event_at: 0,
            replicas,
            clients,
            config,
            options: options.clone(),
            plan,
            now: 0,
        }
    }

    // ---- Getters for scenario tests ----

    /// Simulated global time, in ns.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Replica `i`, unless it crashed.
    pub fn replica(&self, i: u8) -> Option<&Replica<Kv>> {
        self.replicas.get(usize::from(i)).and_then(|r| r.replica())
    }

    /// Replica `i`'s node-layer counters, unless it crashed.
    pub fn replica_node_stats(&self, i: u8) -> Option<vr_core::node::NodeStats> {
        let slot = self.replicas.get(usize::from(i))?;
        slot.node.as_ref().map(vr_core::node::ReplicaNode::stats)
    }

    /// Client `c`'s connection-layer counters (the administrator is client
    /// `client_count`).
    pub fn client_link_stats(&self, c: u8) -> Option<vr_core::node::LinkStats> {
        if let Some(slot) = self.clients.get(usize::from(c)) {
            return Some(slot.node.stats());
        }
        let admin = self.admin.as_ref().filter(|_| c == self.admin_index())?;
        Some(admin.node.stats())
    }

    /// Violations found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Client operations completed so far.
    pub fn ops_completed(&self) -> u64 {
        self.stats.ops_completed
    }

    /// Operations committed so far (by any replica).
    pub fn ops_committed(&self) -> u64 {
        self.agreement.len()
    }

    /// Whether the run is over.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The frames held back so far ([`Simulator::hold`]), decoded, with
    /// their link.
    pub fn held_messages(&self) -> Vec<(Addr, Addr, Message)> {
        let max = self.config.message_size_max as usize;
        self.network
            .held()
            .iter()
            .filter_map(|p| {
                let (message, _) = codec::decode(&p.frame, self.config.cluster, max).ok()?;
                Some((p.from, p.to, message))
            })
            .collect()
    }

    /// Replicas crashed, or restarted and not yet normal again.
    pub fn failed_count(&self) -> usize {
        (0..self.replicas.len()).filter(|&i| self.failed(i)).count()
    }

    /// Whether replica `i` counts against the fault bound: down, or
    /// recovering (see `recovering`).
    fn failed(&self, i: usize) -> bool {
        self.replicas[i].node.is_none() || self.recovering(i)
    }

    /// Whether replica `i` is restarted and not yet recovered, or
    /// recovering again: a replica that recovered in an older epoch
    /// recovers anew when it enters one its earlier incarnation may have
    /// voted in (docs/protocol.md, "Entering a later epoch after a
    /// recovery"); until then it is as good as down.
    fn recovering(&self, i: usize) -> bool {
        let node = &self.replicas[i];
        node.recovering_since.is_some()
            || node
                .replica()
                .is_some_and(|r| r.status() == Status::Recovering)
    }

    // ---- Driving ----

    /// Runs every event up to global time `t_ns` (or until the run ends).
    pub fn run_until(&mut self, t_ns: u64) {
        while self.step(t_ns) {}
        if self.phase != Phase::Done {
            self.now = self.now.max(t_ns);
        }
    }

    /// Runs through all phases to the end.
    pub fn run_to_end(&mut self) {
        while self.step(u64::MAX) {}
    }

    /// Stops the run with a violation (a panic in the code under test).
    fn abort(&mut self, kind: ViolationKind, detail: String) {
        self.violation(kind, detail);
        self.phase = Phase::Done;
    }

    /// One event at or before `limit`; `false` when there is none (or the
    /// run is over).
    fn step(&mut self, limit: u64) -> bool {
        self.advance_phase();
        if self.phase == Phase::Done {
            return false;
        }
        let Some(t) = self.next_event_time().filter(|&t| t <= limit) else {
            return false;
        };
        self.now = self.now.max(t);
        if self.now == self.last_event_at {
            self.same_instant_events += 1;
        } else {
            self.same_instant_events = 0;
            self.last_event_at = self.now;
        }
        self.events += 1;
        if self.events > EVENTS_MAX || self.same_instant_events > SAME_INSTANT_EVENTS_MAX {
            let detail = format!(
                "{} events, {} at this instant: the simulation makes no progress",
                self.events, self.same_instant_events
            );
            self.abort(ViolationKind::Stuck, detail);
            return false;
        }
        self.dispatch();
        true
    }

    fn phase_deadline(&self) -> Option<u64> {
        match self.phase {
            Phase::Safety { until } => Some(until),
            Phase::Liveness { deadline, .. } => Some(deadline),
            Phase::Settle { until, .. } => Some(until),
            Phase::Done => None,
        }
    }

    fn replica_deadline(&self, i: usize) -> Option<u64> {
        let node = &self.replicas[i];
        if node.paused_until.is_some() {
            return None;
        }
        let local = node.node.as_ref()?.poll_timeout()?;
        Some(node.clock.global(local).max(self.now))
    }

    fn next_event_time(&self) -> Option<u64> {
        let mut next = [
            self.phase_deadline(),
            self.nemesis_next_at,
            self.partition.map(|p| p.heal_at),
            self.network.next_arrival(),
            self.connections.next_event_at(),
            self.disk_fault_next_at,
            self.cluster_crash_next_at,
        ]
        .into_iter()
        .flatten()
        .min();
        let mut consider = |t: Option<u64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for (i, node) in self.replicas.iter().enumerate() {
            consider(node.paused_until);
            consider(node.restart_at);
            consider(self.replica_deadline(i));
            consider(self.disk_due(i));
        }
        for node in &self.clients {
            consider(node.node.poll_timeout().map(Instant::as_nanos));
            consider(node.next_invoke_at);
        }
        if let Some(admin) = &self.admin {
            consider(admin.node.poll_timeout().map(Instant::as_nanos));
            consider(admin.issue_at);
        }
        next.map(|t| t.max(self.now))
    }

    /// Handles one due event, in a fixed order of kinds and, within a kind,
    /// of nodes, so that simultaneous events always run in the same order.
    fn dispatch(&mut self) {
        let now = self.now;
        if self.nemesis_next_at.is_some_and(|t| t <= now) {
            self.nemesis_act();
            return;
        }
        if self.partition.is_some_and(|p| p.heal_at <= now) {
            self.heal();
            return;
        }
        if self.cluster_crash_next_at.is_some_and(|t| t <= now) {
            self.cluster_crash_act();
            return;
        }
        if self.disk_fault_next_at.is_some_and(|t| t <= now) {
            self.disk_fault_act();
            return;
        }
        if let Some(i) = (0..self.replicas.len())
            .find(|&i| self.replicas[i].paused_until.is_some_and(|t| t <= now))
        {
            self.resume(i as u8);
            return;
        }
        if let Some(i) = (0..self.replicas.len())
            .find(|&i| self.replicas[i].restart_at.is_some_and(|t| t <= now))
        {
            self.restart(i as u8);
            return;
        }
        if let Some(i) =
            (0..self.replicas.len()).find(|&i| self.disk_due(i).is_some_and(|t| t <= now))
        {
            self.disk_complete(i as u8);
            return;
        }
        // Connects and closes before frames: a frame that arrives at the
        // instant its connection opens finds it open.
        if self.link_event() {
            return;
        }
        if let Some(packet) = self.network.pop_due(now, &mut self.trace) {
            if let (Addr::Replica(i), true) = (packet.to, self.plan.load.poll_interval_ns > 0) {
                // The replica reads every frame that arrived since its
                // last read at once (`LoadPlan::poll_interval_ns`).
                let mut packets = vec![packet];
                while let Some(more) =
                    self.network
                        .pop_due_to(now, Addr::Replica(i), &mut self.trace)
                {
                    packets.push(more);
                }
                self.deliver_to_replica(i, packets);
            } else {
                self.deliver(packet);
            }
            return;
        }
        if let Some(i) =
            (0..self.replicas.len()).find(|&i| self.replica_deadline(i).is_some_and(|t| t <= now))
        {
            self.replica_timeout(i as u8);
            return;
        }
        if let Some(c) = (0..self.clients.len()).find(|&c| {
            self.clients[c]
                .node
                .poll_timeout()
                .is_some_and(|t| t.as_nanos() <= now)
        }) {
            self.client_timeout(c as u8);
            return;
        }
        if let Some(c) = (0..self.clients.len())
            .find(|&c| self.clients[c].next_invoke_at.is_some_and(|t| t <= now))
        {
            self.invoke(c as u8);
            return;
        }
        if let Some(admin) = &self.admin {
            if admin
                .node
                .poll_timeout()
                .is_some_and(|t| t.as_nanos() <= now)
            {
                self.admin_timeout();
            } else if admin.issue_at.is_some_and(|t| t <= now) {
                self.admin_issue();
            }
        }
        // Otherwise only a phase deadline was due: advance_phase handles it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_conversion_rounds_up_so_timers_are_due() {
        for rate_ppm in [900_000u32, 999_999, 1_000_000, 1_000_001, 1_100_000] {
            let clock = Clock {
                offset_ns: 12_345,
                rate_ppm,
            };
            for deadline in [0u64, 1, 12_345, 12_346, 99_999_999, 123_456_789_012] {
                let global = clock.global(Instant::from_nanos(deadline));
                assert!(clock.local(global).as_nanos() >= deadline);
                if global > 0 {
                    assert!(clock.local(global - 1).as_nanos() < deadline.max(12_345 + 1));
                }
            }
        }
    }
}
