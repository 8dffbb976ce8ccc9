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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use vr_core::codec::{self, DecodeError};
use vr_core::message::Command;
use vr_core::prng::Prng;
use vr_core::{
    Action, Client, ClientAction, ClientConfig, ClientId, Completion, Config, InjectedBug, Instant,
    Message, Replica, Service, Stats, Status,
};

use crate::checks::{Agreement, Violation, ViolationKind};
use crate::history::{Event, History, Input};
use crate::kv::{key_name, Kv, KvOp, KvResult, ServiceFault, Tag};
use crate::linearizability::{self, CheckResult};
use crate::network::{Addr, Network, NetworkStats, Packet};
use crate::plan::{between, chance, pick, LinkFaults, PartitionShape, SeedPlan, MS, PPM, SECOND};
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
        }
    }
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Simulated time at the end of the run.
    pub simulated_ns: u64,
    /// Client operations invoked.
    pub ops_invoked: u64,
    /// Client operations that completed.
    pub ops_completed: u64,
    /// Client operations still open at the end (recorded as `info`).
    pub ops_open: u64,
    /// Operations committed (the length of the agreed sequence).
    pub ops_committed: u64,
    /// Views after view 0 in which some replica became a normal primary.
    pub views_formed: u64,
    /// The highest view any replica reached.
    pub view_max: u64,
    /// What the network did.
    pub network: NetworkStats,
    /// Frames the decoder rejected (all of them corrupted by the network,
    /// unless a codec violation says otherwise).
    pub frames_rejected: u64,
    /// DoViewChange frames over `message_size_max`, rejected by their
    /// receiver as docs/protocol.md (departure 1) accepts.
    pub oversized_do_view_changes: u64,
    /// Frames dropped because their destination had crashed.
    pub crash_drops: u64,
    /// Frames a paused replica could not hold (its buffer was full).
    pub pause_drops: u64,
    /// Partitions started, by shape.
    pub partitions: BTreeMap<PartitionShape, u64>,
    /// Replica pauses.
    pub pauses: u64,
    /// Replica crashes (for good or followed by a restart).
    pub crashes: u64,
    /// Replicas restarted with wiped memory (`Replica::recover`).
    pub restarts: u64,
    /// Restarted replicas that became normal again (seen by the simulator).
    pub recovered: u64,
    /// The longest time from a restart to normal status.
    pub recovery_ns_max: u64,
    /// Checkpoint roots compared across replicas (distinct op-numbers).
    pub checkpoints_compared: u64,
    /// vr-core's counters, summed over every replica incarnation.
    pub core: CoreCounters,
    /// Replicas whose clock rate is not exact.
    pub skewed_clocks: u64,
    /// Replicas left isolated in the liveness phase.
    pub isolated_at_heal: u64,
    /// From the heal to the last client completion (0 if never reached).
    pub liveness_ns: u64,
    /// From the last client completion until the healed replicas settled
    /// (0 if they never did).
    pub settle_ns: u64,
    /// Trace events.
    pub events: u64,
    /// Backup reads (§6) completed; they are checked against their own
    /// promise, not for linearizability.
    pub backup_reads_completed: u64,
    /// Backup reads whose value was compared with the committed sequence
    /// (the others fell where it has a hole).
    pub backup_reads_value_checked: u64,
}

/// vr-core's counters ([`vr_core::Stats`]) of interest, summed over every
/// replica of a run, crashed incarnations included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Recoveries completed (§4.3), as the replicas count them.
    pub recoveries_completed: u64,
    /// Checkpoints taken (§5.1).
    pub checkpoints_taken: u64,
    /// Checkpoints installed from a peer (§5.2).
    pub checkpoints_installed: u64,
    /// Checkpoint pages received.
    pub checkpoint_pages_received: u64,
    /// Bytes of checkpoint pages received.
    pub checkpoint_bytes_received: u64,
    /// Votes dropped as coming from an older incarnation (crash vectors).
    pub messages_stale_incarnation: u64,
    /// GetState and checkpoint requests sent.
    pub state_requests_sent: u64,
    /// Reads the primary answered under its lease (§6).
    pub leased_reads: u64,
    /// Reads a replica answered as a backup read (§6).
    pub backup_reads: u64,
    /// View changes a backup deferred while its lease promise lasted.
    pub view_changes_deferred_by_lease: u64,
    /// Prepares broadcast (batches).
    pub prepare_batches: u64,
    /// Entries those Prepares carried.
    pub prepare_batch_entries: u64,
    /// Times a witness skipped ops every full replica executed (§6).
    pub witness_log_skips: u64,
    /// Times a witness was offered a skip it could not yet take.
    pub witness_skips_deferred: u64,
}

impl CoreCounters {
    /// Adds one replica's counters.
    pub fn add(&mut self, stats: &Stats) {
        self.recoveries_completed += stats.recoveries_completed;
        self.checkpoints_taken += stats.checkpoints_taken;
        self.checkpoints_installed += stats.checkpoints_installed;
        self.checkpoint_pages_received += stats.checkpoint_pages_received;
        self.checkpoint_bytes_received += stats.checkpoint_bytes_received;
        self.messages_stale_incarnation += stats.messages_stale_incarnation;
        self.state_requests_sent += stats.state_requests_sent;
        self.leased_reads += stats.leased_reads;
        self.backup_reads += stats.backup_reads;
        self.view_changes_deferred_by_lease += stats.view_changes_deferred_by_lease;
        self.prepare_batches += stats.prepare_batches;
        self.prepare_batch_entries += stats.prepare_batch_entries;
        self.witness_log_skips += stats.witness_log_skips;
        self.witness_skips_deferred += stats.witness_skips_deferred;
    }

    /// Adds another sum.
    pub fn merge(&mut self, other: &CoreCounters) {
        self.recoveries_completed += other.recoveries_completed;
        self.checkpoints_taken += other.checkpoints_taken;
        self.checkpoints_installed += other.checkpoints_installed;
        self.checkpoint_pages_received += other.checkpoint_pages_received;
        self.checkpoint_bytes_received += other.checkpoint_bytes_received;
        self.messages_stale_incarnation += other.messages_stale_incarnation;
        self.state_requests_sent += other.state_requests_sent;
        self.leased_reads += other.leased_reads;
        self.backup_reads += other.backup_reads;
        self.view_changes_deferred_by_lease += other.view_changes_deferred_by_lease;
        self.prepare_batches += other.prepare_batches;
        self.prepare_batch_entries += other.prepare_batch_entries;
        self.witness_log_skips += other.witness_log_skips;
        self.witness_skips_deferred += other.witness_skips_deferred;
    }
}

/// The linearizability verdict of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinearizabilityVerdict {
    /// Not checked (switched off).
    Skipped,
    /// Linearizable.
    Linearizable,
    /// Not linearizable (a violation is recorded too).
    NotLinearizable,
    /// The checker ran out of budget.
    Unknown,
}

/// What a seed did and what the checkers found.
#[derive(Clone, Debug)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// The plan it ran.
    pub plan: SeedPlan,
    /// Everything the checkers found; empty for a good run.
    pub violations: Vec<Violation>,
    /// Counters.
    pub stats: RunStats,
    /// The hash of every trace event: equal for equal runs.
    pub trace_hash: u64,
    /// Readable trace lines, if [`Options::trace`].
    pub trace_lines: Vec<String>,
    /// The client history, in real-time order.
    pub history: Vec<Event>,
    /// The linearizability verdict.
    pub linearizability: LinearizabilityVerdict,
}

impl SeedReport {
    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs `seed` with a random plan: the whole two-phase run and every checker.
pub fn run_seed(seed: u64, options: &Options) -> SeedReport {
    let mut plan = if options.classic_plans {
        SeedPlan::classic(seed, options.replica_count)
    } else if !options.optimization_plans {
        SeedPlan::without_optimizations(seed, options.replica_count)
    } else {
        SeedPlan::random(seed, options.replica_count)
    };
    plan.config.injected_bug = options.injected_bug;
    run_plan(plan, options)
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
}

/// A status for traces.
fn status_name(normal: bool, recovering: bool) -> &'static str {
    match (normal, recovering) {
        (true, _) => "Normal",
        (false, true) => "Recovering",
        (false, false) => "ViewChange",
    }
}

/// Frames a paused replica holds (like a socket buffer); more are dropped.
const HELD_MAX: usize = 4096;

struct ReplicaNode {
    /// `None` while crashed. A restart builds a fresh one with
    /// `Replica::recover` and an empty service: memory wiped.
    replica: Option<Replica<Kv>>,
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

struct ClientNode {
    client: Client,
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
    replicas: Vec<ReplicaNode>,
    clients: Vec<ClientNode>,
    client_by_id: BTreeMap<ClientId, u8>,
    network: Network,
    nemesis_prng: Prng,
    nemesis_next_at: Option<u64>,
    partition: Option<ActivePartition>,
    /// Crashes for good still allowed.
    crashes_left: u8,
    /// Counters of crashed replica incarnations.
    retired: CoreCounters,
    workload_prng: Prng,
    phase: Phase,
    /// Replicas healed for the liveness phase (all alive ones before it).
    healed: BTreeSet<u8>,
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
        let config = plan.config.clone();
        let n = config.replica_count;
        let mut clock_prng = Prng::new(seed ^ 0xC10C_C10C);
        let replicas = (0..n)
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
                let kv =
                    Kv::with_ballast(plan.recovery.ballast_pages, plan.recovery.ballast_page_size);
                let replica = Replica::new(config.clone(), i, kv, clock.local(0))
                    .unwrap_or_else(|e| panic!("invalid replica configuration: {e}"));
                ReplicaNode {
                    replica: Some(replica),
                    restart_at: None,
                    recovering_since: None,
                    clock,
                    paused_until: None,
                    held: VecDeque::new(),
                    observed: Observed {
                        normal: true,
                        ..Observed::default()
                    },
                }
            })
            .collect::<Vec<_>>();
        let mut workload_prng = Prng::new(seed ^ 0x3052_4B10_AD00);
        let mut client_by_id = BTreeMap::new();
        let clients = (0..plan.workload.client_count)
            .map(|c| {
                let client_id = (u128::from(workload_prng.next_u64()) << 64)
                    | u128::from(workload_prng.next_u64());
                client_by_id.insert(client_id, c);
                let mut client_config = ClientConfig::new(&config, client_id);
                client_config.request_attempts_max = 0; // retry forever
                let think = between(&mut workload_prng, 0, plan.workload.think_time_max_ns);
                ClientNode {
                    client: Client::new(client_config, 0),
                    pending: None,
                    next_invoke_at: Some(think),
                    liveness_ops_left: 0,
                    requests_made: 0,
                    op_number_seen: 0,
                    reads_only: false,
                }
            })
            .collect();
        let mut stats = RunStats {
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
        let mut trace = Trace::new(options.trace);
        trace.record(0, TraceKind::Phase, &[0], || {
            format!("seed {seed}: safety phase; {}", plan.summary())
        });
        let mut network = Network::new(plan.faults.links.clone(), seed ^ 0x0E7_0E7);
        network.set_long_delays(
            plan.recovery.long_delay_ppm,
            plan.recovery.long_delay_max_ns,
        );
        Simulator {
            network,
            nemesis_prng,
            nemesis_next_at,
            partition: None,
            crashes_left: plan.faults.crashes_max,
            retired: CoreCounters::default(),
            workload_prng,
            phase: Phase::Safety {
                until: plan.workload.safety_duration_ns,
            },
            healed: (0..n).collect(),
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
            client_by_id,
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
        self.replicas
            .get(usize::from(i))
            .and_then(|r| r.replica.as_ref())
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

    fn failed(&self, i: usize) -> bool {
        let node = &self.replicas[i];
        node.replica.is_none() || node.recovering_since.is_some()
    }

    // ---- Scripted faults ----

    /// Cuts the directed link `from → to` until [`Simulator::heal`].
    pub fn cut(&mut self, from: Addr, to: Addr) {
        self.network.cut(from, to);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[1, from.code(), to.code()],
            || format!("cut {from} -> {to}"),
        );
    }

    /// Restores the directed link `from → to` (cut by [`Simulator::cut`]).
    pub fn heal_link(&mut self, from: Addr, to: Addr) {
        self.network.heal(from, to);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[13, from.code(), to.code()],
            || format!("heal {from} -> {to}"),
        );
    }

    /// Cuts replica `i` off from every other replica, both ways (clients
    /// still reach it), until [`Simulator::heal`].
    pub fn isolate_replica(&mut self, i: u8) {
        for j in (0..self.config.replica_count).filter(|&j| j != i) {
            self.cut(Addr::Replica(i), Addr::Replica(j));
            self.cut(Addr::Replica(j), Addr::Replica(i));
        }
    }

    /// Holds back the frames on `from → to` carrying one of `commands`
    /// (every frame if empty) until [`Simulator::release`] or
    /// [`Simulator::discard_held`].
    pub fn hold(&mut self, from: Addr, to: Addr, commands: &[Command]) {
        let bytes: Vec<u8> = commands.iter().map(|&c| c as u8).collect();
        self.network.hold(from, to, &bytes);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[8, from.code(), to.code(), Fnv64::of(&bytes)],
            || format!("hold {from} -> {to}: {commands:?}"),
        );
    }

    /// Stops holding `from → to`; the frames held are lost.
    pub fn discard_held(&mut self, from: Addr, to: Addr) {
        let count = self.network.discard_held(from, to);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[12, from.code(), to.code(), count as u64],
            || format!("discard {count} frames held on {from} -> {to}"),
        );
    }

    /// Pauses replica `i` (it processes nothing; frames for it are kept)
    /// until [`Simulator::resume_replica`] or global time `until`.
    pub fn pause(&mut self, i: u8, until: u64) {
        let node = &mut self.replicas[usize::from(i)];
        if node.replica.is_none() {
            return;
        }
        node.paused_until = Some(until);
        self.stats.pauses += 1;
        let seconds = crate::trace::Seconds(until);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[4, u64::from(i), until],
            || format!("pause r{i} until {seconds}"),
        );
    }

    /// Resumes a paused replica now: the frames it holds arrive, overdue
    /// timers fire.
    pub fn resume_replica(&mut self, i: u8) {
        if self.replicas[usize::from(i)].paused_until.is_some() {
            self.resume(i);
        }
    }

    /// Stops holding `from → to`; the frames held arrive after the minimum
    /// latency, in the order they were sent.
    pub fn release(&mut self, from: Addr, to: Addr) {
        let at = self.now + self.plan.faults.links.latency_min_ns;
        let count = self.network.release(from, to, at);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[9, from.code(), to.code(), count as u64],
            || format!("release {from} -> {to} ({count} frames held)"),
        );
    }

    /// Crashes replica `i` (its memory is lost); `restart_at` schedules its
    /// restart, `None` is for good. Scripted schedules call it directly; the
    /// nemesis keeps at most f replicas failed, a script must itself.
    pub fn crash(&mut self, i: u8, restart_at: Option<u64>) {
        let node = &mut self.replicas[usize::from(i)];
        let Some(replica) = node.replica.take() else {
            return;
        };
        self.retired.add(replica.stats());
        node.paused_until = None;
        node.held.clear();
        node.restart_at = restart_at;
        node.recovering_since = None;
        self.stats.crashes += 1;
        let when = match restart_at {
            Some(t) => format!("restart at {}", crate::trace::Seconds(t)),
            None => "for good".to_string(),
        };
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[5, u64::from(i), restart_at.unwrap_or(0)],
            || format!("crash r{i} ({when})"),
        );
    }

    /// Restarts the crashed replica `i` now, with wiped memory: a fresh
    /// `Replica::recover` and an empty service, and a nonce drawn from the
    /// nemesis stream.
    pub fn restart(&mut self, i: u8) {
        let now = self.now;
        let nonce = self.nemesis_prng.next_u64();
        let recovery = &self.plan.recovery;
        let kv = Kv::with_ballast(recovery.ballast_pages, recovery.ballast_page_size);
        let node = &mut self.replicas[usize::from(i)];
        if node.replica.is_some() {
            return;
        }
        let replica = Replica::recover(self.config.clone(), i, kv, node.clock.local(now), nonce)
            .unwrap_or_else(|e| panic!("invalid replica configuration: {e}"));
        node.replica = Some(replica);
        node.restart_at = None;
        node.recovering_since = Some(now);
        // A new incarnation: its commit-number starts from 0 again.
        node.observed = Observed {
            recovering: true,
            ..Observed::default()
        };
        self.stats.restarts += 1;
        self.trace
            .record(now, TraceKind::Nemesis, &[10, u64::from(i)], || {
                format!("restart r{i} with wiped memory (recovering, nonce {nonce:x})")
            });
        // Drain what `recover` queued (its Recovery messages).
        self.replica_step(i, |_, _| {});
    }

    /// Scripted: client `c` invokes only reads from now on (its draws from
    /// the workload stream are unchanged, the operation becomes a read of
    /// the same key), or the usual mix again.
    pub fn set_reads_only(&mut self, c: u8, reads_only: bool) {
        self.clients[usize::from(c)].reads_only = reads_only;
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.network.heal_all();
        let shape = self.partition.take().map_or("scripted", |p| p.shape.name());
        self.trace.record(self.now, TraceKind::Nemesis, &[2], || {
            format!("heal all links (partition: {shape})")
        });
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

    /// Ends the safety phase: stops the nemesis, cleans the network, heals it
    /// for a majority of the live replicas, and has every client finish its
    /// work. With `isolate_minority`, each live replica outside that majority
    /// is left isolated with probability 1/2; otherwise all are healed.
    pub fn start_liveness(&mut self, isolate_minority: bool) {
        let now = self.now;
        self.nemesis_next_at = None;
        self.partition = None;
        self.network.heal_all();
        self.network
            .release_all(now + self.plan.faults.links.latency_min_ns);
        let links = &self.plan.faults.links;
        self.network.set_faults(LinkFaults::clean(
            links.latency_min_ns,
            links.latency_max_ns,
        ));
        self.network.set_long_delays(0, 0);
        // Crashed replicas due to restart restart now, and must recover.
        for i in 0..self.config.replica_count {
            if self.replicas[usize::from(i)].restart_at.is_some() {
                self.restart(i);
            }
        }
        // The random majority is drawn among the replicas that are up and
        // not recovering: a recovering replica needs a quorum of normal
        // others to recover from. Recovering replicas are always healed.
        let mut alive: Vec<u8> = (0..self.config.replica_count)
            .filter(|&i| !self.failed(usize::from(i)))
            .collect();
        // Fisher-Yates with the nemesis stream: a random majority.
        for i in (1..alive.len()).rev() {
            let j = self.nemesis_prng.below(i as u64 + 1) as usize;
            alive.swap(i, j);
        }
        let quorum = self.config.quorum();
        assert!(
            alive.len() >= quorum,
            "the nemesis crashed more than f replicas ({} alive of {})",
            alive.len(),
            self.config.replica_count
        );
        self.healed.clear();
        for i in 0..self.config.replica_count {
            let node = &self.replicas[usize::from(i)];
            if node.replica.is_some() && node.recovering_since.is_some() {
                self.healed.insert(i);
            }
        }
        for (rank, &i) in alive.iter().enumerate() {
            if rank < quorum || !isolate_minority || self.nemesis_prng.below(2) == 0 {
                self.healed.insert(i);
            } else {
                self.isolate(i);
                self.stats.isolated_at_heal += 1;
            }
        }
        for &i in &self.healed {
            let node = &mut self.replicas[usize::from(i)];
            if node.paused_until.is_some() {
                node.paused_until = Some(now);
            }
        }
        for client in &mut self.clients {
            client.liveness_ops_left = self.plan.workload.liveness_ops_per_client;
            if client.pending.is_none() && client.next_invoke_at.is_none() {
                client.next_invoke_at = Some(now);
            }
        }
        self.phase = Phase::Liveness {
            healed_at: now,
            deadline: now.saturating_add(self.options.liveness_timeout_ns),
        };
        let healed: Vec<_> = self.healed.iter().map(|i| format!("r{i}")).collect();
        self.trace.record(
            now,
            TraceKind::Phase,
            &[1, self.healed.len() as u64],
            || format!("liveness phase: faults off, healed [{}]", healed.join(" ")),
        );
    }

    /// Cuts replica `i` off from every replica and client, both ways.
    fn isolate(&mut self, i: u8) {
        let me = Addr::Replica(i);
        let others = (0..self.config.replica_count)
            .filter(|&j| j != i)
            .map(Addr::Replica)
            .chain((0..self.plan.workload.client_count).map(Addr::Client))
            .collect::<Vec<_>>();
        for other in others {
            self.network.cut(me, other);
            self.network.cut(other, me);
        }
        self.trace
            .record(self.now, TraceKind::Nemesis, &[3, u64::from(i)], || {
                format!("r{i} stays isolated")
            });
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
        let local = node.replica.as_ref()?.poll_timeout()?;
        Some(node.clock.global(local).max(self.now))
    }

    fn next_event_time(&self) -> Option<u64> {
        let mut next = [
            self.phase_deadline(),
            self.nemesis_next_at,
            self.partition.map(|p| p.heal_at),
            self.network.next_arrival(),
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
        }
        for node in &self.clients {
            consider(node.client.poll_timeout().map(Instant::as_nanos));
            consider(node.next_invoke_at);
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
        if let Some(packet) = self.network.pop_due(now, &mut self.trace) {
            self.deliver(packet);
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
                .client
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
        }
        // Otherwise only a phase deadline was due: advance_phase handles it.
    }

    // ---- Phases ----

    fn advance_phase(&mut self) {
        match self.phase {
            Phase::Safety { until } => {
                let ops_done = self.safety_ops_invoked >= u64::from(self.plan.workload.safety_ops);
                if self.now >= until || ops_done {
                    self.start_liveness(true);
                }
            }
            Phase::Liveness {
                healed_at,
                deadline,
            } => {
                let finished = self.clients.iter().all(|c| {
                    c.pending.is_none() && c.next_invoke_at.is_none() && c.liveness_ops_left == 0
                });
                if finished {
                    self.stats.liveness_ns = self.now - healed_at;
                    self.phase = Phase::Settle {
                        since: self.now,
                        until: self.now.saturating_add(self.options.settle_max_ns),
                    };
                    self.trace.record(self.now, TraceKind::Phase, &[2], || {
                        "settle phase: every client operation completed".to_string()
                    });
                } else if self.now >= deadline {
                    let open: Vec<String> = self
                        .clients
                        .iter()
                        .enumerate()
                        .filter_map(|(c, node)| {
                            node.pending.as_ref().map(|p| {
                                format!(
                                    "c{c} req {} {} on {}",
                                    p.tag.request_number,
                                    p.input,
                                    key_name(p.key)
                                )
                            })
                        })
                        .collect();
                    let detail = format!(
                        "{} s after the heal, operations are still open: {}; {}",
                        self.options.liveness_timeout_ns / SECOND,
                        open.join(", "),
                        self.replica_states()
                    );
                    self.violation(ViolationKind::Liveness, detail);
                    self.phase = Phase::Done;
                }
            }
            Phase::Settle { since, until } => {
                let settled = self.settled();
                if settled || self.now >= until {
                    if settled {
                        self.stats.settle_ns = self.now - since;
                    } else {
                        let detail = format!(
                            "{:.1} s after the last completion the healed replicas have not settled: {}",
                            self.options.settle_max_ns as f64 / SECOND as f64,
                            self.replica_states()
                        );
                        self.violation(ViolationKind::Convergence, detail);
                    }
                    self.check_state_agreement();
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// A one-line description of every replica's state, for reports.
    fn replica_states(&self) -> String {
        let states: Vec<String> = self
            .replicas
            .iter()
            .enumerate()
            .map(|(i, node)| match &node.replica {
                None if node.restart_at.is_some() => format!("r{i} crashed (restart pending)"),
                None => format!("r{i} crashed"),
                Some(r) => format!(
                    "r{i} v{} lnv{} {:?}{} op {} commit {}{}",
                    r.view(),
                    r.last_normal_view(),
                    r.status(),
                    if r.is_primary() { " primary" } else { "" },
                    r.op_number(),
                    r.commit_number(),
                    if self.healed.contains(&(i as u8)) {
                        ""
                    } else {
                        " (isolated)"
                    }
                ),
            })
            .collect();
        states.join("; ")
    }

    /// Whether the healed replicas settled: one view, normal status, one
    /// primary, the same commit-number.
    fn settled(&self) -> bool {
        let healed: Vec<&Replica<Kv>> = self
            .healed
            .iter()
            .filter_map(|&i| self.replicas[usize::from(i)].replica.as_ref())
            .collect();
        let view = healed.iter().map(|r| r.view()).max().unwrap_or(0);
        let commit = healed.iter().map(|r| r.commit_number()).max().unwrap_or(0);
        healed.iter().all(|r| {
            r.view() == view && r.status() == Status::Normal && r.commit_number() == commit
        }) && healed.iter().filter(|r| r.is_primary()).count() == 1
    }

    /// Live replicas at equal commit-numbers hold equal service state:
    /// every page (values, executed requests, ballast) and the client table.
    fn check_state_agreement(&mut self) {
        let mut by_commit: BTreeMap<u64, (u8, u64, &Replica<Kv>)> = BTreeMap::new();
        let mut diverged = Vec::new();
        for (i, node) in self.replicas.iter().enumerate() {
            let Some(r) = &node.replica else { continue };
            if r.status() == Status::Recovering || r.is_witness() {
                continue; // It holds no state (yet, or ever).
            }
            let digest = r.service().state_digest();
            match by_commit.get(&r.commit_number()) {
                Some((j, other_digest, other))
                    if *other_digest != digest || other.client_table() != r.client_table() =>
                {
                    diverged.push(format!(
                        "r{i} and r{j} executed {} ops but hold different states: values {:?} vs {:?}",
                        r.commit_number(),
                        r.service().values(),
                        other.service().values()
                    ))
                }
                Some(_) => {}
                None => {
                    by_commit.insert(r.commit_number(), (i as u8, digest, r));
                }
            }
        }
        for detail in diverged {
            self.violation(ViolationKind::Agreement, detail);
        }
    }

    // ---- The nemesis ----

    fn nemesis_act(&mut self) {
        let mean = self.plan.faults.nemesis_interval_mean_ns;
        self.nemesis_next_at = Some(self.now + between(&mut self.nemesis_prng, 1, 2 * mean));
        #[derive(Clone, Copy)]
        enum Act {
            Partition,
            Pause,
            Crash,
        }
        let mut acts = Vec::new();
        if !self.plan.faults.partition_shapes.is_empty() && self.partition.is_none() {
            acts.extend([Act::Partition; 3]);
        }
        if self.plan.faults.pauses {
            acts.extend([Act::Pause; 2]);
        }
        if self.crashes_left > 0 || self.plan.recovery.restarts {
            acts.push(Act::Crash);
        }
        if self.plan.recovery.restarts {
            acts.push(Act::Crash);
        }
        if acts.is_empty() {
            return;
        }
        match pick(&mut self.nemesis_prng, &acts) {
            Act::Partition => self.start_partition(),
            Act::Pause => {
                if let Some(i) = self.victim(|node| node.paused_until.is_none()) {
                    let max = self.plan.faults.pause_duration_max_ns;
                    let until = self.now + between(&mut self.nemesis_prng, MS, max.max(MS));
                    self.replicas[usize::from(i)].paused_until = Some(until);
                    self.stats.pauses += 1;
                    let seconds = crate::trace::Seconds(until);
                    self.trace.record(
                        self.now,
                        TraceKind::Nemesis,
                        &[4, u64::from(i), until],
                        || format!("pause r{i} until {seconds}"),
                    );
                }
            }
            Act::Crash => {
                // At most f replicas down or recovering at a time: a victim
                // that is not failed yet must leave room for itself.
                let f = (usize::from(self.config.replica_count) - 1) / 2;
                let failed = self.failed_count();
                let room = failed < f;
                let restart = self.plan.recovery.restarts
                    && (self.crashes_left == 0 || self.nemesis_prng.below(4) != 0);
                let victim = self.victim(|node| room || node.recovering_since.is_some());
                if let Some(i) = victim {
                    let restart_at = if restart {
                        let max = self.plan.recovery.restart_delay_max_ns;
                        Some(self.now + between(&mut self.nemesis_prng, MS, max.max(MS)))
                    } else {
                        self.crashes_left -= 1;
                        None
                    };
                    self.crash(i, restart_at);
                    if restart && self.plan.recovery.linger {
                        let max = self.plan.recovery.long_delay_max_ns;
                        let count = self.network.linger_from(Addr::Replica(i), max);
                        self.trace.record(
                            self.now,
                            TraceKind::Nemesis,
                            &[14, u64::from(i), count as u64],
                            || format!("{count} frames from r{i} linger in the network"),
                        );
                    }
                }
            }
        }
    }

    /// A live replica that `eligible` accepts: the current primary half of
    /// the time (faults at the primary exercise view changes), else any.
    fn victim(&mut self, eligible: impl Fn(&ReplicaNode) -> bool) -> Option<u8> {
        let candidates: Vec<u8> = (0..self.config.replica_count)
            .filter(|&i| {
                let node = &self.replicas[usize::from(i)];
                node.replica.is_some() && eligible(node)
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let primary = candidates
            .iter()
            .copied()
            .filter(|&i| {
                self.replicas[usize::from(i)]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.is_primary())
            })
            .max_by_key(|&i| {
                self.replicas[usize::from(i)]
                    .replica
                    .as_ref()
                    .map_or(0, |r| r.view())
            });
        match primary {
            Some(p) if self.nemesis_prng.below(2) == 0 => Some(p),
            _ => Some(pick(&mut self.nemesis_prng, &candidates)),
        }
    }

    fn start_partition(&mut self) {
        let n = self.config.replica_count;
        if n < 2 {
            return;
        }
        let shape = pick(
            &mut self.nemesis_prng,
            &self.plan.faults.partition_shapes.clone(),
        );
        let Some(victim) = self.victim(|_| true) else {
            return;
        };
        let others: Vec<u8> = (0..n).filter(|&j| j != victim).collect();
        let mut cuts: Vec<(u8, u8)> = Vec::new();
        match shape {
            PartitionShape::IsolateOne => {
                for &j in &others {
                    cuts.extend([(victim, j), (j, victim)]);
                }
            }
            PartitionShape::Deaf => cuts.extend(others.iter().map(|&j| (j, victim))),
            PartitionShape::Mute => cuts.extend(others.iter().map(|&j| (victim, j))),
            PartitionShape::Split => {
                let side: Vec<bool> = (0..n).map(|_| self.nemesis_prng.below(2) == 0).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[usize::from(a)] != side[usize::from(b)] {
                            cuts.push((a, b));
                        }
                    }
                }
            }
            PartitionShape::RandomLinks => {
                for a in 0..n {
                    for b in 0..n {
                        if a != b && self.nemesis_prng.below(2) == 0 {
                            cuts.push((a, b));
                        }
                    }
                }
            }
        }
        let (min, max) = (
            self.plan.faults.partition_duration_min_ns,
            self.plan.faults.partition_duration_max_ns,
        );
        let mut heal_at = self.now + between(&mut self.nemesis_prng, min, max.max(min));
        if self.plan.recovery.long_partitions && self.nemesis_prng.below(3) == 0 {
            // Long enough for the others to commit past the cut-off replicas'
            // log tail: they catch up by checkpoint transfer.
            let max = self.plan.recovery.long_partition_max_ns;
            heal_at = self.now + between(&mut self.nemesis_prng, SECOND, max.max(SECOND));
        }
        for &(a, b) in &cuts {
            self.network.cut(Addr::Replica(a), Addr::Replica(b));
        }
        self.partition = Some(ActivePartition { shape, heal_at });
        *self.stats.partitions.entry(shape).or_default() += 1;
        let description: Vec<String> = cuts.iter().map(|(a, b)| format!("r{a}->r{b}")).collect();
        let seconds = crate::trace::Seconds(heal_at);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[6, shape as u64, cuts.len() as u64, heal_at],
            || {
                format!(
                    "partition {} until {seconds}: cut [{}]",
                    shape.name(),
                    description.join(" ")
                )
            },
        );
    }

    fn resume(&mut self, i: u8) {
        let now = self.now;
        let node = &mut self.replicas[usize::from(i)];
        node.paused_until = None;
        let held = std::mem::take(&mut node.held);
        let count = held.len();
        for packet in held {
            self.network.redeliver(now, packet);
        }
        self.trace
            .record(now, TraceKind::Nemesis, &[7, u64::from(i)], || {
                format!("resume r{i} ({count} frames held)")
            });
    }

    // ---- Delivery ----

    fn decode(&mut self, packet: &Packet) -> Option<Message> {
        let (from, to) = (packet.from, packet.to);
        let max = self.config.message_size_max as usize;
        let result = codec::decode(&packet.frame, self.config.cluster, max);
        let oversized = matches!(result, Err(DecodeError::Oversized { .. }));
        let error = match result {
            Ok((message, used)) if used == packet.frame.len() => {
                if packet.corrupted {
                    let detail = format!(
                        "{from} -> {to}: a corrupted frame decoded as {}",
                        describe(&message)
                    );
                    self.violation(ViolationKind::Codec, detail);
                    return None;
                }
                return Some(message);
            }
            Ok((_, used)) => format!("{used} of {} bytes used", packet.frame.len()),
            Err(e) => e.to_string(),
        };
        self.stats.frames_rejected += 1;
        self.trace.record(
            self.now,
            TraceKind::Reject,
            &[from.code(), to.code()],
            || format!("{from} -> {to}: rejected: {error}"),
        );
        let command = codec::peek_header(&packet.frame).map(|h| h.command);
        if !packet.corrupted && oversized && command == Some(Command::DoViewChange as u8) {
            // By design (docs/protocol.md, departure 1): a DoViewChange
            // whose suffix does not fit is sent anyway and rejected; the
            // view change goes on without it. Counted, not a violation.
            self.stats.oversized_do_view_changes += 1;
        } else if !packet.corrupted {
            let what = if oversized {
                "sent a frame over message_size_max"
            } else {
                "sent a frame the decoder rejects"
            };
            let detail = format!(
                "{from} {what} ({} bytes to {to}): {error}",
                packet.frame.len()
            );
            self.violation(ViolationKind::Codec, detail);
        }
        None
    }

    fn deliver(&mut self, packet: Packet) {
        match packet.to {
            Addr::Replica(i) => {
                let node = &mut self.replicas[usize::from(i)];
                if node.replica.is_none() {
                    self.stats.crash_drops += 1;
                    return;
                }
                if node.paused_until.is_some() {
                    if node.held.len() < HELD_MAX {
                        node.held.push_back(packet);
                    } else {
                        self.stats.pause_drops += 1;
                    }
                    return;
                }
                let Some(message) = self.decode(&packet) else {
                    return;
                };
                let from = packet.from;
                let hash = Network::frame_hash(&packet.frame);
                self.trace.record(
                    self.now,
                    TraceKind::Deliver,
                    &[from.code(), u64::from(i), hash],
                    || format!("{from} -> r{i}: {}", describe(&message)),
                );
                self.replica_step(i, |replica, now| replica.handle_message(now, message));
            }
            Addr::Client(c) => {
                let Some(message) = self.decode(&packet) else {
                    return;
                };
                let from = packet.from;
                let hash = Network::frame_hash(&packet.frame);
                self.trace.record(
                    self.now,
                    TraceKind::Deliver,
                    &[from.code(), Addr::Client(c).code(), hash],
                    || format!("{from} -> c{c}: {}", describe(&message)),
                );
                match message {
                    Message::Reply(reply) => {
                        let now = Instant::from_nanos(self.now);
                        if let Some(completion) =
                            self.clients[usize::from(c)].client.handle_reply(now, reply)
                        {
                            self.complete(c, &completion);
                        }
                    }
                    other => {
                        let detail = format!("{from} sent a client {}", describe(&other));
                        self.violation(ViolationKind::Codec, detail);
                    }
                }
            }
        }
    }

    // ---- Replicas ----

    fn replica_timeout(&mut self, i: u8) {
        let deadline = self.replica_deadline(usize::from(i));
        self.trace
            .record(self.now, TraceKind::Timeout, &[u64::from(i)], || {
                format!("r{i} timer")
            });
        self.replica_step(i, |replica, now| replica.handle_timeout(now));
        let local = self.replicas[usize::from(i)].clock.local(self.now);
        let still_due = self.replicas[usize::from(i)]
            .replica
            .as_ref()
            .and_then(|r| r.poll_timeout())
            .is_some_and(|t| t <= local);
        if still_due && self.replica_deadline(usize::from(i)) == deadline {
            let detail = format!("r{i}: handle_timeout left its deadline in the past");
            self.abort(ViolationKind::Stuck, detail);
        }
    }

    /// Feeds one input to replica `i` at its local time, sends what it
    /// outputs, and checks what it executed.
    fn replica_step(&mut self, i: u8, input: impl FnOnce(&mut Replica<Kv>, Instant)) {
        let now = self.now;
        let node = &mut self.replicas[usize::from(i)];
        let local = node.clock.local(now);
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        input(replica, local);
        let mut outputs = Vec::new();
        while let Some(action) = replica.poll_action() {
            outputs.push(action);
        }
        self.observe_replica(i);
        for action in outputs {
            match action {
                Action::Send {
                    replica: to,
                    message,
                } => self.send(Addr::Replica(i), Addr::Replica(to), &message),
                Action::Reply(reply) => match self.client_by_id.get(&reply.client_id) {
                    Some(&c) => {
                        self.send(Addr::Replica(i), Addr::Client(c), &Message::Reply(reply))
                    }
                    None => {
                        let detail =
                            format!("r{i} replied to the unknown client {:x}", reply.client_id);
                        self.violation(ViolationKind::Service, detail);
                    }
                },
            }
        }
    }

    /// Checks what replica `i` newly executed against the agreed sequence,
    /// takes its service's faults, and traces view and status changes.
    fn observe_replica(&mut self, i: u8) {
        let now = self.now;
        let node = &self.replicas[usize::from(i)];
        let Some(replica) = node.replica.as_ref() else {
            return;
        };
        let before = node.observed;
        let checkpoint = replica.checkpoint();
        let after = Observed {
            view: replica.view(),
            normal: replica.status() == Status::Normal,
            recovering: replica.status() == Status::Recovering,
            commit_number: replica.commit_number(),
            service_faults: replica.service().faults().len(),
            checkpoint: Some((checkpoint.op_number, checkpoint.root)),
        };
        let mut problems = Vec::new();
        if after.commit_number < before.commit_number {
            problems.push((
                ViolationKind::Agreement,
                format!(
                    "r{i}'s commit-number went back from {} to {}",
                    before.commit_number, after.commit_number
                ),
            ));
        }
        // What the service executed, by the operations' bytes: this covers
        // entries that a checkpoint dropped within the same step.
        for (op_number, op) in replica.service().take_journal() {
            if let Err(detail) = self.agreement.observe_executed(i, op_number, &op) {
                problems.push((ViolationKind::Agreement, detail));
            }
        }
        // The newly committed entries the log still holds (it holds
        // `log_base() + 1 ..= op_number()`), in full: view and request too.
        let base = replica.log_base();
        for op_number in before.commit_number.max(base) + 1..=after.commit_number {
            let Some(entry) = replica.log().get((op_number - base - 1) as usize) else {
                problems.push((
                    ViolationKind::Agreement,
                    format!(
                        "r{i} committed op {op_number} but its log ends at op {}",
                        base + replica.log().len() as u64
                    ),
                ));
                break;
            };
            if let Err(detail) = self.agreement.observe(i, op_number, entry) {
                problems.push((ViolationKind::Agreement, detail));
            }
        }
        // A checkpoint (taken or installed) covers the whole state after its
        // op, client table included: every replica's must be the same.
        if let Some((op_number, root)) = after
            .checkpoint
            .filter(|_| after.checkpoint != before.checkpoint)
        {
            if let Err(detail) = self.agreement.observe_checkpoint(i, op_number, root) {
                problems.push((ViolationKind::Agreement, detail));
            }
        }
        for fault in &replica.service().faults()[before.service_faults..] {
            let kind = match fault {
                ServiceFault::Duplicate { .. } => ViolationKind::ExactlyOnce,
                _ => ViolationKind::Service,
            };
            problems.push((kind, format!("r{i}'s service: {fault:?}")));
        }
        let is_primary = replica.is_primary();
        let status = replica.status();
        if after.commit_number > before.commit_number {
            self.trace.record(
                now,
                TraceKind::Commit,
                &[u64::from(i), after.commit_number],
                || {
                    format!(
                        "r{i} executed ops {}..={}",
                        before.commit_number + 1,
                        after.commit_number
                    )
                },
            );
        }
        if (after.view, after.normal, after.recovering)
            != (before.view, before.normal, before.recovering)
        {
            self.trace.record(
                now,
                TraceKind::View,
                &[
                    u64::from(i),
                    after.view,
                    u64::from(after.normal) + 2 * u64::from(after.recovering),
                ],
                || {
                    format!(
                        "r{i} view {} {:?}{} (was view {} {})",
                        after.view,
                        status,
                        if is_primary { " primary" } else { "" },
                        before.view,
                        status_name(before.normal, before.recovering)
                    )
                },
            );
        }
        let recovered_after = node
            .recovering_since
            .filter(|_| after.normal)
            .map(|since| now - since);
        if let Some(took) = recovered_after {
            let (op, base) = (replica.op_number(), replica.log_base());
            self.trace.record(
                now,
                TraceKind::Nemesis,
                &[11, u64::from(i), after.view, after.commit_number],
                || {
                    format!(
                        "r{i} recovered in {}: view {}, op {op}, commit {}, log from op {}, incarnation {}",
                        crate::trace::Seconds(took),
                        after.view,
                        after.commit_number,
                        base + 1,
                        replica.incarnation()
                    )
                },
            );
        }
        if is_primary && after.view > 0 && self.views_formed.insert(after.view) {
            self.stats.views_formed += 1;
        }
        self.stats.view_max = self.stats.view_max.max(after.view);
        if let Some(took) = recovered_after {
            self.stats.recovered += 1;
            self.stats.recovery_ns_max = self.stats.recovery_ns_max.max(took);
            self.replicas[usize::from(i)].recovering_since = None;
        }
        self.replicas[usize::from(i)].observed = after;
        for (kind, detail) in problems {
            self.violation(kind, detail);
        }
    }

    fn send(&mut self, from: Addr, to: Addr, message: &Message) {
        let mut frame = Vec::with_capacity(codec::encoded_size(message));
        codec::encode(message, self.config.cluster, &mut frame);
        let now = self.now;
        self.trace
            .record(now, TraceKind::Send, &[from.code(), to.code()], || {
                format!("{from} -> {to}: {}", describe(message))
            });
        self.network
            .send(self.now, from, to, frame, &mut self.trace);
    }

    // ---- Clients ----

    fn client_timeout(&mut self, c: u8) {
        let now = Instant::from_nanos(self.now);
        let node = &mut self.clients[usize::from(c)];
        // With unlimited attempts the client never gives up (no error).
        let _ = node.client.handle_timeout(now);
        self.trace.record(
            self.now,
            TraceKind::Timeout,
            &[Addr::Client(c).code()],
            || format!("c{c} resends its request to every replica"),
        );
        self.drain_client(c);
    }

    fn drain_client(&mut self, c: u8) {
        let mut outputs = Vec::new();
        while let Some(action) = self.clients[usize::from(c)].client.poll_action() {
            outputs.push(action);
        }
        for ClientAction::Send { replica, message } in outputs {
            self.send(Addr::Client(c), Addr::Replica(replica), &message);
        }
    }

    fn invoke(&mut self, c: u8) {
        let now = self.now;
        let key_count = self.plan.workload.key_count;
        let in_liveness = matches!(self.phase, Phase::Liveness { .. });
        let node = &mut self.clients[usize::from(c)];
        node.next_invoke_at = None;
        if in_liveness {
            if node.liveness_ops_left == 0 {
                return;
            }
            node.liveness_ops_left -= 1;
        }
        // The client numbers its requests 1, 2, 3, …; the op carries the
        // number so that the service can recognise a second execution.
        let next_number = node.requests_made + 1;
        let mut op = workload::next_op(
            &mut self.workload_prng,
            u32::from(c),
            next_number,
            key_count,
        );
        if node.reads_only {
            op.op = KvOp::Read;
        }
        let input = workload::history_input(&op.op);
        // §6: some reads go to a random replica as backup reads.
        let backup_read_ppm = self.plan.optimizations.backup_read_ppm;
        let backup_read_at = (op.op == KvOp::Read
            && backup_read_ppm > 0
            && chance(&mut self.workload_prng, backup_read_ppm))
        .then(|| {
            self.workload_prng
                .below(u64::from(self.config.replica_count)) as u8
        });
        let seen_mismatch = (backup_read_at.is_some()
            && node.client.op_number_seen() != node.op_number_seen)
            .then(|| (node.client.op_number_seen(), node.op_number_seen));
        let sent = match backup_read_at {
            Some(r) => node
                .client
                .read_at(Instant::from_nanos(now), r, op.encode()),
            None => node.client.request(Instant::from_nanos(now), op.encode()),
        };
        match sent {
            Ok(number) => {
                assert_eq!(
                    number, next_number,
                    "the client numbers requests 1, 2, 3, …"
                );
                node.requests_made = number;
            }
            Err(e) => {
                // The client is idle (no pending op) and the op is small, so
                // this is a broken invariant of the simulator or the client.
                panic!("c{c} refused a request: {e}");
            }
        }
        node.pending = Some(PendingOp {
            tag: op.tag,
            key: op.key,
            input: input.clone(),
            backup_read_min: backup_read_at.map(|_| node.op_number_seen),
        });
        if let Some((believed, replied)) = seen_mismatch {
            let detail =
                format!("c{c} sends a backup read with op {believed}, its replies said {replied}");
            self.violation(ViolationKind::BackupRead, detail);
        }
        self.stats.ops_invoked += 1;
        if !in_liveness {
            self.safety_ops_invoked += 1;
        }
        let key = key_name(op.key);
        let at = match backup_read_at {
            Some(r) => format!(" (backup read at r{r})"),
            None => String::new(),
        };
        self.trace
            .record(now, TraceKind::Invoke, &[u64::from(c), next_number], || {
                format!("c{c} req {next_number}: {input} on {key}{at}")
            });
        if backup_read_at.is_none() {
            // Backup reads promise less than linearizability: they are
            // checked on their own (`complete_backup_read`,
            // `check_backup_reads`).
            self.history
                .push(Event::invoke(u64::from(c), now, key, &input));
        }
        self.drain_client(c);
    }

    fn complete(&mut self, c: u8, completion: &Completion) {
        let now = self.now;
        let request_number = completion.request_number;
        let node = &mut self.clients[usize::from(c)];
        node.op_number_seen = node.op_number_seen.max(completion.op_number);
        let Some(pending) = self.clients[usize::from(c)].pending.take() else {
            let detail = format!("c{c} completed request {request_number} it was not waiting for");
            self.violation(ViolationKind::Service, detail);
            return;
        };
        debug_assert_eq!(pending.tag.request_number, request_number);
        let result = KvResult::decode(&completion.result);
        if let Some(min) = pending.backup_read_min {
            self.complete_backup_read(c, &pending, completion.op_number, min, &result);
        } else {
            self.complete_in_history(c, &pending, &result);
        }
        let think = between(
            &mut self.workload_prng,
            0,
            self.plan.workload.think_time_max_ns,
        );
        let more = match self.phase {
            Phase::Safety { .. } => {
                self.safety_ops_invoked < u64::from(self.plan.workload.safety_ops)
            }
            Phase::Liveness { .. } => self.clients[usize::from(c)].liveness_ops_left > 0,
            Phase::Settle { .. } | Phase::Done => false,
        };
        if more {
            self.clients[usize::from(c)].next_invoke_at = Some(now + think);
        }
    }

    /// A backup read completed (§6): its op-number is at least what the
    /// client had seen (read-your-writes, monotonic reads); its value is
    /// compared with the committed sequence at the end of the run.
    fn complete_backup_read(
        &mut self,
        c: u8,
        pending: &PendingOp,
        op_number: u64,
        min: u64,
        result: &KvResult,
    ) {
        let now = self.now;
        let request_number = pending.tag.request_number;
        let key = key_name(pending.key);
        self.stats.ops_completed += 1;
        self.stats.backup_reads_completed += 1;
        self.trace.record(
            now,
            TraceKind::Complete,
            &[u64::from(c), request_number, op_number],
            || {
                format!(
                    "c{c} req {request_number}: backup read on {key} at op {op_number} -> {result:?}"
                )
            },
        );
        if op_number < min {
            let detail = format!(
                "c{c} req {request_number}: a backup read of {key} reflects op {op_number}, \
                 older than op {min} the client had seen"
            );
            self.violation(ViolationKind::BackupRead, detail);
        }
        match result {
            KvResult::Value(value) => self.backup_reads.push(BackupRead {
                client: c,
                request_number,
                key: pending.key,
                op_number,
                value: value.clone(),
                completed_at: now,
            }),
            other => {
                let detail = format!("c{c} req {request_number}: a backup read returned {other:?}");
                self.violation(ViolationKind::Service, detail);
            }
        }
    }

    /// Compares every backup read's value with the key's value after the
    /// committed ops up to the op-number it reflects, replayed on a fresh
    /// service (which, like a replica's, skips a request executed before).
    fn check_backup_reads(&mut self) {
        let mut reads = std::mem::take(&mut self.backup_reads);
        reads.sort_by_key(|r| (r.op_number, r.client, r.request_number));
        let mut kv = Kv::new();
        let mut executed = 0u64;
        let committed = self.agreement.committed();
        let mut problems = Vec::new();
        let mut checked = 0;
        'reads: for read in &reads {
            while executed < read.op_number {
                let Some(op) = committed.get(&(executed + 1)) else {
                    break 'reads; // A hole: the rest cannot be replayed.
                };
                executed += 1;
                kv.execute(executed, &op.op);
            }
            let _ = kv.take_journal();
            checked += 1;
            let expected = kv.values().get(&read.key).cloned();
            if expected != read.value {
                problems.push(format!(
                    "c{} req {} (completed at {}): a backup read of {} at op {} returned {:?}, \
                     the committed ops up to there give {:?}",
                    read.client,
                    read.request_number,
                    crate::trace::Seconds(read.completed_at),
                    key_name(read.key),
                    read.op_number,
                    read.value,
                    expected
                ));
            }
        }
        self.stats.backup_reads_value_checked += checked;
        for detail in problems {
            self.violation(ViolationKind::BackupRead, detail);
        }
    }

    /// A completed operation that goes to the linearizability checker.
    fn complete_in_history(&mut self, c: u8, pending: &PendingOp, result: &KvResult) {
        let now = self.now;
        let request_number = pending.tag.request_number;
        let key = key_name(pending.key);
        match workload::history_output(&pending.input, result) {
            Ok(output) => {
                self.trace.record(
                    now,
                    TraceKind::Complete,
                    &[u64::from(c), request_number],
                    || {
                        format!(
                            "c{c} req {request_number}: {} on {key} -> {output}",
                            pending.input
                        )
                    },
                );
                self.history
                    .push(Event::ok(u64::from(c), now, key, &pending.input, &output));
                self.stats.ops_completed += 1;
            }
            Err(why) => {
                // The outcome is unknown to the checker; the violation says why.
                self.history
                    .push(Event::info(u64::from(c), now, key, &pending.input));
                self.violation(
                    ViolationKind::Service,
                    format!("c{c} req {request_number}: {why}"),
                );
            }
        }
    }

    // ---- Results ----

    fn violation(&mut self, kind: ViolationKind, detail: String) {
        self.trace
            .record(self.now, TraceKind::Violation, &[kind as u64], || {
                format!("{kind}: {detail}")
            });
        self.violations.push(Violation {
            kind,
            time_ns: self.now,
            detail,
        });
    }

    /// Ends the run: records open operations as `info`, checks the history
    /// for linearizability, and returns the report.
    pub fn finish(mut self) -> SeedReport {
        let now = self.now;
        for c in 0..self.clients.len() {
            if let Some(pending) = self.clients[c].pending.take() {
                self.stats.ops_open += 1;
                if pending.backup_read_min.is_some() {
                    continue; // Not in the history: nothing to check.
                }
                self.history.push(Event::info(
                    c as u64,
                    now,
                    key_name(pending.key),
                    &pending.input,
                ));
            }
        }
        self.check_backup_reads();
        let linearizability = if self.options.check_linearizability {
            self.check_history()
        } else {
            LinearizabilityVerdict::Skipped
        };
        self.stats.simulated_ns = now;
        self.stats.ops_committed = self.agreement.len();
        self.stats.checkpoints_compared = self.agreement.checkpoint_count() as u64;
        let mut core = self.retired.clone();
        for node in &self.replicas {
            if let Some(replica) = &node.replica {
                core.add(replica.stats());
            }
        }
        self.stats.core = core;
        self.stats.network = self.network.stats().clone();
        self.stats.events = self.trace.event_count();
        SeedReport {
            seed: self.plan.seed,
            trace_hash: self.trace.hash(),
            trace_lines: self.trace.take_lines(),
            violations: self.violations,
            stats: self.stats,
            history: self.history,
            linearizability,
            plan: self.plan,
        }
    }

    fn check_history(&mut self) -> LinearizabilityVerdict {
        let history = match History::from_events(self.history.clone(), None) {
            Ok(h) => h,
            Err(e) => {
                self.violation(
                    ViolationKind::Service,
                    format!("the simulator wrote an invalid history: {e}"),
                );
                return LinearizabilityVerdict::Unknown;
            }
        };
        match linearizability::check_with_limit(&history, self.options.linearizability_step_limit) {
            CheckResult::Linearizable => LinearizabilityVerdict::Linearizable,
            CheckResult::Unknown { .. } => LinearizabilityVerdict::Unknown,
            result @ CheckResult::NotLinearizable { .. } => {
                self.violation(ViolationKind::Linearizability, result.to_string());
                LinearizabilityVerdict::NotLinearizable
            }
        }
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
