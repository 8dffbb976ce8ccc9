//! What one seed runs: the cluster, the faults and the workload, all drawn
//! from the seed ("swarm testing": every fault has its own rate, picked per
//! seed from a wide range, and is switched off entirely in about half of the
//! seeds, so that some seeds are almost quiet and some brutal).

use vr_core::prng::Prng;
use vr_core::Config;

/// One millisecond in nanoseconds.
pub const MS: u64 = 1_000_000;
/// One second in nanoseconds.
pub const SECOND: u64 = 1_000_000_000;
/// Probabilities are in parts per million.
pub const PPM: u32 = 1_000_000;

/// The shapes a replica partition takes (between replicas; clients reach
/// every replica throughout, only random message faults touch their links).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartitionShape {
    /// One replica cut off in both directions.
    IsolateOne,
    /// The replicas split in two groups that do not hear each other.
    Split,
    /// Asymmetric: one replica hears nothing, but its messages arrive.
    Deaf,
    /// Asymmetric: one replica hears everything, but its messages are lost.
    Mute,
    /// Every directed link between replicas is cut with probability 1/2:
    /// asymmetric and non-transitive.
    RandomLinks,
}

impl PartitionShape {
    /// Every shape.
    pub const ALL: [PartitionShape; 5] = [
        PartitionShape::IsolateOne,
        PartitionShape::Split,
        PartitionShape::Deaf,
        PartitionShape::Mute,
        PartitionShape::RandomLinks,
    ];

    /// A short name for summaries.
    pub fn name(self) -> &'static str {
        match self {
            PartitionShape::IsolateOne => "isolate",
            PartitionShape::Split => "split",
            PartitionShape::Deaf => "deaf",
            PartitionShape::Mute => "mute",
            PartitionShape::RandomLinks => "links",
        }
    }
}

/// Random message faults of the network, and its latency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFaults {
    /// Probability (ppm) that a message is lost.
    pub loss_ppm: u32,
    /// Probability (ppm) that a message is delivered twice (each copy with
    /// its own delay).
    pub duplicate_ppm: u32,
    /// Probability (ppm) that one byte of a message is changed in flight.
    pub corrupt_ppm: u32,
    /// Probability (ppm) that a message gets an extra delay of up to
    /// `reorder_delay_max_ns`, which reorders it behind later ones.
    pub reorder_ppm: u32,
    /// The largest extra delay of a reordered message.
    pub reorder_delay_max_ns: u64,
    /// The smallest one-way latency.
    pub latency_min_ns: u64,
    /// The largest one-way latency (before any reordering delay).
    pub latency_max_ns: u64,
}

impl LinkFaults {
    /// A network that delivers every message once, intact, after
    /// `latency_min_ns..=latency_max_ns`.
    pub fn clean(latency_min_ns: u64, latency_max_ns: u64) -> LinkFaults {
        LinkFaults {
            loss_ppm: 0,
            duplicate_ppm: 0,
            corrupt_ppm: 0,
            reorder_ppm: 0,
            reorder_delay_max_ns: 0,
            latency_min_ns,
            latency_max_ns,
        }
    }
}

/// The faults of one run's safety phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// Message faults during the safety phase.
    pub links: LinkFaults,
    /// Partition shapes in use; empty: no partitions.
    pub partition_shapes: Vec<PartitionShape>,
    /// Partitions last `partition_duration_min_ns..=partition_duration_max_ns`.
    pub partition_duration_min_ns: u64,
    /// See `partition_duration_min_ns`.
    pub partition_duration_max_ns: u64,
    /// Whether replicas are paused (SIGSTOP-like) and resumed.
    pub pauses: bool,
    /// Pauses last up to this long.
    pub pause_duration_max_ns: u64,
    /// Replicas that crash for good during the run (at most f).
    pub crashes_max: u8,
    /// The nemesis acts (partitions, pauses, crashes) at intervals drawn
    /// uniformly from `0..2 * nemesis_interval_mean_ns`.
    pub nemesis_interval_mean_ns: u64,
    /// Each replica's clock rate in ppm of real time (1_000_000 is exact).
    pub clock_rate_ppm: Vec<u32>,
}

impl FaultPlan {
    /// No faults at all: for scripted scenarios that inject their own.
    pub fn quiet(replica_count: u8) -> FaultPlan {
        FaultPlan {
            links: LinkFaults::clean(100_000, MS),
            partition_shapes: Vec::new(),
            partition_duration_min_ns: 0,
            partition_duration_max_ns: 0,
            pauses: false,
            pause_duration_max_ns: 0,
            crashes_max: 0,
            nemesis_interval_mean_ns: SECOND,
            clock_rate_ppm: vec![PPM; usize::from(replica_count)],
        }
    }

    /// Whether the nemesis has anything to do.
    pub fn has_nemesis(&self) -> bool {
        !self.partition_shapes.is_empty() || self.pauses || self.crashes_max > 0
    }
}

/// The clients and what they do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadPlan {
    /// Concurrent clients, each with one operation outstanding at a time.
    pub client_count: u8,
    /// Keys `0..key_count`; few, so that operations conflict.
    pub key_count: u8,
    /// Operations invoked in the safety phase, at most.
    pub safety_ops: u32,
    /// The safety phase ends after this long even if operations remain.
    pub safety_duration_ns: u64,
    /// A client waits `0..=think_time_max_ns` after a completion before its
    /// next invocation.
    pub think_time_max_ns: u64,
    /// Operations each client invokes after the network heals (after its
    /// outstanding one completes); all must complete in time.
    pub liveness_ops_per_client: u32,
}

/// Restarts with wiped memory (§4.3), long partitions, and a state large
/// enough for checkpoint transfers (§5.1, §5.2) to take many chunks. Drawn
/// from a stream of its own, after everything else, so that
/// [`SeedPlan::classic`] (all of it off) replays the runs of the plans that
/// came before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Whether a crashed replica is restarted, with wiped memory, and runs
    /// recovery (`Replica::recover`).
    pub restarts: bool,
    /// A crashed replica restarts after `1 ms..=restart_delay_max_ns`.
    pub restart_delay_max_ns: u64,
    /// Whether some partitions last long (a third of them, 1 s up to
    /// `long_partition_max_ns`): long enough for the cluster to commit past
    /// a cut-off replica's log tail, so that it catches up by checkpoint.
    pub long_partitions: bool,
    /// See `long_partitions`.
    pub long_partition_max_ns: u64,
    /// Extra pages of the service's state ([`crate::kv::Kv::with_ballast`]).
    pub ballast_pages: u32,
    /// Bytes of each ballast page.
    pub ballast_page_size: u32,
    /// Probability (ppm) that a message between replicas is delayed by up
    /// to `long_delay_max_ns` more, during the safety phase: a vote can
    /// then arrive after its sender crashed and recovered.
    pub long_delay_ppm: u32,
    /// See `long_delay_ppm`.
    pub long_delay_max_ns: u64,
    /// Whether the frames a replica has in flight when it crashes linger,
    /// each delayed by up to `long_delay_max_ns` more: votes sent before
    /// the crash then arrive after the restart (the DISC 2017 schedule).
    pub linger: bool,
}

impl RecoveryPlan {
    /// None of it: crashes are for good, partitions short, no ballast.
    pub fn off() -> RecoveryPlan {
        RecoveryPlan {
            restarts: false,
            restart_delay_max_ns: 0,
            long_partitions: false,
            long_partition_max_ns: 0,
            ballast_pages: 0,
            ballast_page_size: 0,
            long_delay_ppm: 0,
            long_delay_max_ns: 0,
            linger: false,
        }
    }
}

/// The optimizations of §6, each drawn on or off per seed. The
/// configuration values live in [`SeedPlan::config`] (`batch_ops_max`,
/// `batch_delay_ns`, `lease_duration_ns`, `clock_drift_max_ns`,
/// `backup_reads_max`); this holds what the workload does with them. Drawn
/// from a stream of its own, after everything else, so that
/// [`SeedPlan::without_optimizations`] replays the plans before them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptimizationPlan {
    /// Whether the plan sets the optimizations at all; `false` keeps
    /// `Config`'s defaults and clients that never read at a backup (the
    /// plans of [`SeedPlan::without_optimizations`]).
    pub drawn: bool,
    /// Probability (ppm) that a client's read goes to a random replica as a
    /// backup read (`Client::read_at`) rather than through the primary; 0:
    /// backup reads off (and `backup_reads_max = 0`).
    pub backup_read_ppm: u32,
}

impl OptimizationPlan {
    /// Config defaults, no backup reads by the workload.
    pub fn off() -> OptimizationPlan {
        OptimizationPlan {
            drawn: false,
            backup_read_ppm: 0,
        }
    }
}

/// How the cluster starts. Drawn from a stream of its own, after
/// everything else, so that a seed that does not boot recovering replays
/// the run it had before boots were simulated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPlan {
    /// Every replica starts with `Replica::recover`, as a `vr-kv node`
    /// always does, and the cluster must form by itself
    /// (`form_new_cluster`, §4.3); `false`: `Replica::new` in view 0 at
    /// time zero.
    pub recovering: bool,
    /// When recovering: replica `i` starts at `start_at_ns[i]` (staggered,
    /// like processes started one after the other); before it, it is down
    /// and frames to it are lost.
    pub start_at_ns: Vec<u64>,
}

impl BootPlan {
    /// Every replica built with `Replica::new` at time zero.
    pub fn fresh() -> BootPlan {
        BootPlan {
            recovering: false,
            start_at_ns: Vec::new(),
        }
    }
}

/// Load that fills batches (§6, batching). Drawn from a stream of its own,
/// after everything else, so that a seed that draws none of it replays
/// the run it had before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// Replicas read their sockets every `poll_interval_ns` (0: a frame is
    /// handled the moment it arrives): the frames that arrived since the
    /// last read are handed to the replica one after the other and its
    /// outputs drained once, as `vr_core::node` does with the bytes of one
    /// read, so requests that arrive together leave in one Prepare.
    pub poll_interval_ns: u64,
    /// Clients added to the workload's (their requests arrive in bursts:
    /// no think time).
    pub extra_clients: u8,
}

impl LoadPlan {
    /// Nothing added.
    pub fn off() -> LoadPlan {
        LoadPlan {
            poll_interval_ns: 0,
            extra_clients: 0,
        }
    }
}

/// A fault the simulator injects into a replica's disk (`vr_storage::MemDisk`)
/// at a random time, on the replicas of [`DiskPlan::fault_replicas`] only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskFault {
    /// A whole 4096-byte sector of a file garbled (a latent sector error
    /// read back as garbage, or a sector torn by a failing drive).
    CorruptSector,
    /// 1–16 bytes garbled at a random offset (bit rot): small enough to
    /// leave a record's header intact and damage only its body.
    BitRot,
    /// The next write lands at a random sector of a log segment instead of
    /// where it was meant to go (firmware or driver bug): the data meant
    /// for its place is missing, and the place it hit is overwritten.
    MisdirectedWrite,
    /// Reads of a sector fail with `EIO` until it is written again (a
    /// latent sector error the drive reports).
    ReadFailure,
}

impl DiskFault {
    /// Every kind.
    pub const ALL: [DiskFault; 4] = [
        DiskFault::CorruptSector,
        DiskFault::BitRot,
        DiskFault::MisdirectedWrite,
        DiskFault::ReadFailure,
    ];

    /// A short name for summaries.
    pub fn name(self) -> &'static str {
        match self {
            DiskFault::CorruptSector => "corrupt-sector",
            DiskFault::BitRot => "bit-rot",
            DiskFault::MisdirectedWrite => "misdirect",
            DiskFault::ReadFailure => "eio",
        }
    }
}

/// Durable replicas (issue 18): each replica keeps its promises on an
/// in-memory disk (`vr_storage::MemDisk` under a `vr_storage::Storage`),
/// crashes lose what was not synced, disks fail, and the whole cluster
/// loses power at once. Drawn from a stream of its own, after everything
/// else ([`SeedPlan::draw_disk`]), so that a memory-only seed replays the
/// run it had before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskPlan {
    /// `Config::durability = Durability::Disk`: every other field is
    /// unused when `false`.
    pub durable: bool,
    /// A persist is synced and answered `latency_min_ns..=latency_max_ns`
    /// after it was written.
    pub latency_min_ns: u64,
    /// See `latency_min_ns`.
    pub latency_max_ns: u64,
    /// The replicas whose disks take [`DiskPlan::fault_kinds`]: at most f,
    /// so that every op keeps an intact copy on a quorum of disks (a
    /// damaged replica recovers from its peers and counts as failed while
    /// it does). Crashes for good take the rest of the f (`crashes_max` is
    /// capped so that the two together stay within f).
    pub fault_replicas: Vec<u8>,
    /// The disk faults in use; empty: none.
    pub fault_kinds: Vec<DiskFault>,
    /// Disk faults strike at intervals drawn from `0..2 ×` this.
    pub fault_interval_mean_ns: u64,
    /// Whole-cluster crashes (every replica at the same instant, each
    /// losing its unsynced writes), at most this many.
    pub cluster_crashes_max: u8,
    /// They strike at intervals drawn from `0..2 ×` this.
    pub cluster_crash_interval_mean_ns: u64,
    /// The cluster restarts from its disks `1 ms..=` this after the crash.
    pub cluster_crash_pause_max_ns: u64,
    /// An aimed whole-cluster crash strikes the moment a primary commits
    /// an op that a backup's persist in flight holds (the backup may have
    /// acknowledged it: wrongly, if before it was durable), or just before
    /// that persist completes; otherwise at a random instant while it is in
    /// flight.
    pub cluster_crash_at_commit: bool,
}

impl DiskPlan {
    /// Memory-only replicas.
    pub fn off() -> DiskPlan {
        DiskPlan {
            durable: false,
            latency_min_ns: 0,
            latency_max_ns: 0,
            fault_replicas: Vec::new(),
            fault_kinds: Vec::new(),
            fault_interval_mean_ns: 0,
            cluster_crashes_max: 0,
            cluster_crash_interval_mean_ns: 0,
            cluster_crash_pause_max_ns: 0,
            cluster_crash_at_commit: false,
        }
    }
}

/// The smallest `clock_drift_max_ns` that covers clock rates between
/// `rate_min_ppm` and `rate_max_ppm` for a lease of `lease_ns`: a backup
/// with the fastest clock ends its promise after `lease / rate_max` of real
/// time, a primary with the slowest counts `lease - drift` of its clock for
/// `(lease - drift) / rate_min`; the second must not be longer:
/// `drift >= lease × (1 - rate_min / rate_max)`. Rounded up, plus a
/// nanosecond per microsecond of lease for the clocks' integer rounding.
pub fn drift_bound_ns(lease_ns: u64, rate_min_ppm: u32, rate_max_ppm: u32) -> u64 {
    let (min, max) = (u128::from(rate_min_ppm), u128::from(rate_max_ppm.max(1)));
    let spread = u128::from(lease_ns) * max.saturating_sub(min);
    (spread.div_ceil(max) as u64) + lease_ns / 1000 + 1
}

/// Everything a seed runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedPlan {
    /// The seed everything was drawn from.
    pub seed: u64,
    /// The replicas' configuration (including `injected_bug`).
    pub config: Config,
    /// Faults.
    pub faults: FaultPlan,
    /// Workload.
    pub workload: WorkloadPlan,
    /// Restarts, long partitions, ballast.
    pub recovery: RecoveryPlan,
    /// Batching, leases, backup reads (§6).
    pub optimizations: OptimizationPlan,
    /// How the cluster starts.
    pub boot: BootPlan,
    /// Load that fills batches.
    pub load: LoadPlan,
    /// A reconfiguration (§7) during the safety phase, if any.
    pub reconfiguration: Option<ReconfigurationPlan>,
    /// With witnesses: at the heal, the most advanced full replicas crash
    /// for good (as many as the fault bound allows), so that the liveness
    /// phase needs the most lagging full replica to lead and to catch up
    /// from the witnesses (§6; issue 17, item 2). Not part of the
    /// fingerprints: drawn by `run_seed` with the reconfiguration plans.
    pub strand_laggard: bool,
    /// Durable replicas and their disks' faults. Not part of the older
    /// fingerprints: drawn by `run_seed` with `Options::disk_plans`.
    pub disk: DiskPlan,
}

/// When the scripted crash of a reconfiguration plan hits the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimaryCrash {
    /// No scripted crash.
    Never,
    /// The old epoch's primary crashes right after it appended the
    /// reconfiguration to its log (and sent its Prepare).
    AfterRequest,
    /// The old epoch's primary crashes right after it executed the
    /// reconfiguration (and sent its StartEpoch messages and reply).
    AfterCommit,
}

/// A reconfiguration (§7): an administrator's client asks, at `at_ns`, to
/// move the cluster to `members`, and retries until it completes (the
/// primary refuses it silently while another is in progress). Replica
/// slots are member ids; a new member `m` is started with `Replica::join`
/// at time zero and waits for the new epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconfigurationPlan {
    /// The members of the new epoch.
    pub members: Vec<vr_core::MemberId>,
    /// When the administrator sends the request (during the safety phase,
    /// or at the heal if the safety phase ended before).
    pub at_ns: u64,
    /// A scripted crash of the primary around the reconfiguration.
    pub crash_primary: PrimaryCrash,
    /// The crashed primary restarts (`Replica::recover`) this long after.
    pub restart_delay_ns: u64,
    /// Whether a replica of the first epoch restarts with the first
    /// epoch's configuration, as a restarted `vr-kv node` does and
    /// `docs/operations.md` allows, rather than with the latest one the
    /// simulator knows: it then learns the current epoch from its peers, or
    /// recovers in an older epoch and executes its way forward (issue 17,
    /// item 1).
    pub restart_in_first_epoch: bool,
}

impl ReconfigurationPlan {
    /// Short text for summaries.
    pub fn summary(&self) -> String {
        let crash = match self.crash_primary {
            PrimaryCrash::Never => String::new(),
            PrimaryCrash::AfterRequest => " crash-primary=after-request".to_string(),
            PrimaryCrash::AfterCommit => " crash-primary=after-commit".to_string(),
        };
        let restart = if self.restart_in_first_epoch {
            " restart-in=first-epoch"
        } else {
            ""
        };
        // Numbers, as the summary always printed them.
        let members: Vec<u8> = self.members.iter().map(|m| m.0).collect();
        format!(
            " reconfigure-to={members:?}@{}ms{crash}{restart}",
            self.at_ns / MS
        )
    }
}

/// A value in `low..=high`.
pub(crate) fn between(prng: &mut Prng, low: u64, high: u64) -> u64 {
    debug_assert!(low <= high);
    low + prng.below(high - low + 1)
}

/// Whether an event of probability `ppm` happens.
pub(crate) fn chance(prng: &mut Prng, ppm: u32) -> bool {
    prng.below(u64::from(PPM)) < u64::from(ppm)
}

/// One of `items`, uniformly.
pub(crate) fn pick<T: Copy>(prng: &mut Prng, items: &[T]) -> T {
    assert!(!items.is_empty(), "pick from an empty slice");
    items[prng.below(items.len() as u64) as usize]
}

/// Draws a rate in `0..=max_ppm`, or 0 in half of the seeds.
fn maybe_rate(prng: &mut Prng, max_ppm: u32) -> u32 {
    if prng.below(2) == 0 {
        0
    } else {
        between(prng, 1, u64::from(max_ppm)) as u32
    }
}

/// The size of an operation the workload may send: ample for the KV
/// operations (a header of 14 bytes and a short value).
pub const OP_SIZE_MAX: u32 = 256;

/// The operation size of plans with small frames: still ample for the KV
/// operations (14 bytes and a value of at most about 25).
pub const OP_SIZE_MAX_SMALL: u32 = 64;

/// The smallest `message_size_max` that holds a DoViewChange with a full
/// prepare window of maximal operations (and so one maximal Prepare):
/// docs/protocol.md (departure 1) assumes the suffix fits, and a
/// DoViewChange that does not is rejected by design.
pub fn smallest_frame(prepare_window_max: u32, op_size_max: u32) -> u32 {
    let entry_max = vr_core::codec::LOG_ENTRY_FIXED_SIZE as u32 + op_size_max;
    let one_prepare = vr_core::codec::HEADER_SIZE as u32 + 8 + entry_max + 64;
    (vr_core::codec::HEADER_SIZE as u32 + 64)
        .saturating_add(prepare_window_max.saturating_mul(entry_max))
        .max(one_prepare)
}

impl SeedPlan {
    /// Draws the plan of `seed`. `replica_count` overrides the random
    /// choice of 1, 3 or 5 replicas.
    pub fn random(seed: u64, replica_count: Option<u8>) -> SeedPlan {
        let mut plan = SeedPlan::without_optimizations(seed, replica_count);
        plan.draw_optimizations();
        plan.draw_boot();
        plan.draw_load();
        plan
    }

    /// In a quarter of the seeds with three or five replicas, no witnesses
    /// and a fresh boot: a reconfiguration during the safety phase, to a
    /// larger, smaller or same-size membership (new members get the ids
    /// after the initial ones), sometimes with the primary crashing around
    /// it. Drawn from a stream of its own, after everything else, so that
    /// the other seeds replay the runs they had before. Not part of
    /// [`SeedPlan::random`] (whose plans the pinned seeds' tests rebuild
    /// and modify): `run_seed` draws it with
    /// `Options::reconfiguration_plans`, as the CLI does by default.
    pub fn draw_reconfiguration(&mut self) {
        let mut prng = Prng::new(self.seed ^ 0x0EC0_4F16_7E90_C4A3);
        let n = self.config.replica_count;
        if n < 3 || self.config.has_witnesses() || self.boot.recovering || prng.below(4) != 0 {
            return;
        }
        let old: Vec<u8> = (0..n).collect();
        let members: Vec<u8> = match (n, prng.below(3)) {
            (3, 0) => (0..5).collect(),
            (5, 0) => {
                let mut kept = old.clone();
                while kept.len() > 3 {
                    let i = prng.below(kept.len() as u64) as usize;
                    kept.remove(i);
                }
                kept
            }
            _ => {
                let mut next = old.clone();
                let i = prng.below(u64::from(n)) as usize;
                next[i] = n;
                next
            }
        };
        let crash_primary = pick(
            &mut prng,
            &[
                PrimaryCrash::Never,
                PrimaryCrash::Never,
                PrimaryCrash::AfterRequest,
                PrimaryCrash::AfterCommit,
            ],
        );
        let latest = (self.workload.safety_duration_ns / 2).max(20 * MS);
        let at_ns = between(&mut prng, 10 * MS, latest);
        let restart_delay_ns = between(&mut prng, MS, 2 * SECOND);
        // Drawn last: the plans drawn before it keep their other choices.
        let restart_in_first_epoch = prng.below(2) == 0;
        self.reconfiguration = Some(ReconfigurationPlan {
            members: members.into_iter().map(vr_core::MemberId).collect(),
            at_ns,
            crash_primary,
            restart_delay_ns,
            restart_in_first_epoch,
        });
    }

    /// In half of the seeds with witnesses, restarts and no
    /// reconfiguration: strand the most lagging full replica at the heal
    /// ([`SeedPlan::strand_laggard`]). Drawn from a stream of its own,
    /// after everything else, so that the other seeds replay their runs.
    pub fn draw_stranding(&mut self) {
        let mut prng = Prng::new(self.seed ^ 0x57A4_D1A6_6A4D_0B17);
        self.strand_laggard = self.config.has_witnesses()
            && self.recovery.restarts
            && self.reconfiguration.is_none()
            && prng.below(2) == 0;
    }

    /// In half of the seeds that do not boot recovering: durable replicas
    /// ([`DiskPlan`]). Drawn from a stream of its own, after everything
    /// else (reconfiguration included, which a durable seed drops: a
    /// durable replica must restart with its epoch's configuration, which
    /// the simulator does not store), so that the memory-only seeds replay
    /// the runs they had before. Not part of [`SeedPlan::random`]:
    /// `run_seed` draws it with `Options::disk_plans`, as the CLI does by
    /// default.
    pub fn draw_disk(&mut self) {
        self.draw_disk_forced(None);
    }

    /// Draws the disk plan; `Some(durable)` forces the choice (a forced
    /// durable seed that drew a recovering boot boots fresh instead) and
    /// draws the same disk as an unforced durable seed.
    pub fn draw_disk_forced(&mut self, durable: Option<bool>) {
        let mut prng = Prng::new(self.seed ^ 0xD15C_5EED_0F1A_57E5);
        // Witnesses are not durable yet: a witness moves its log's start
        // past ops without a checkpoint (`witness_log_skips`), which the
        // disk's log cannot represent (vr-storage refuses the gap).
        let drawn = prng.below(2) == 0 && !self.boot.recovering && !self.config.has_witnesses();
        self.disk = DiskPlan::off();
        if !durable.unwrap_or(drawn) {
            self.config.durability = vr_core::Durability::Memory;
            return;
        }
        self.boot = BootPlan::fresh();
        self.reconfiguration = None;
        self.config.witnesses.clear();
        self.strand_laggard = false;
        self.config.durability = vr_core::Durability::Disk;
        // After a restart from disk a DoViewChange carries the log after
        // the commit-number the disk held, which lags the one in memory by
        // up to a window (`Simulator::disk_complete` refreshes it then):
        // frames hold a DoViewChange of three windows.
        let frame = smallest_frame(3 * self.config.prepare_window_max, self.config.op_size_max);
        self.config.message_size_max = self.config.message_size_max.max(frame);
        let n = self.config.replica_count;
        let f = (n.max(1) - 1) / 2;
        let l = &self.faults.links;
        let quiet = !self.faults.has_nemesis()
            && l.loss_ppm == 0
            && l.duplicate_ppm == 0
            && l.corrupt_ppm == 0
            && l.reorder_ppm == 0;
        // Most seeds a fast device (an NVMe fdatasync: 50–500 µs), a
        // quarter a slow one (0.5–5 ms): group commit then gathers more.
        let (latency_min_ns, latency_max_ns) = if prng.below(4) == 0 {
            let min = between(&mut prng, 500_000, MS);
            (min, between(&mut prng, MS, 5 * MS))
        } else {
            (50_000, between(&mut prng, 50_000, 500_000))
        };
        let mut fault_replicas = Vec::new();
        if !quiet && f > 0 && prng.below(2) == 0 {
            let count = between(&mut prng, 1, u64::from(f)) as usize;
            while fault_replicas.len() < count {
                let r = prng.below(u64::from(n)) as u8;
                if !fault_replicas.contains(&r) {
                    fault_replicas.push(r);
                }
            }
            fault_replicas.sort_unstable();
        }
        let mut fault_kinds: Vec<DiskFault> = DiskFault::ALL
            .into_iter()
            .filter(|_| prng.below(2) == 0)
            .collect();
        if fault_kinds.is_empty() {
            fault_kinds.push(pick(&mut prng, &DiskFault::ALL));
        }
        if fault_replicas.is_empty() {
            fault_kinds.clear();
        }
        let fault_interval_mean_ns = between(&mut prng, 20 * MS, SECOND);
        let cluster_crashes_max = if !quiet && prng.below(2) == 0 {
            between(&mut prng, 1, 4) as u8
        } else {
            0
        };
        let cluster_crash_interval_mean_ns = between(&mut prng, 100 * MS, 3 * SECOND);
        let cluster_crash_pause_max_ns = between(&mut prng, MS, 2 * SECOND);
        // Drawn last, so that the draws before it are those of the seeds
        // that ran before it existed.
        let cluster_crash_at_commit = prng.below(2) == 0;
        // A replica crashed for good and one whose disk is damaged are
        // both lost to the quorum: together at most f.
        let room = f.saturating_sub(fault_replicas.len() as u8);
        self.faults.crashes_max = self.faults.crashes_max.min(room);
        self.disk = DiskPlan {
            durable: true,
            latency_min_ns,
            latency_max_ns,
            fault_replicas,
            fault_kinds,
            fault_interval_mean_ns,
            cluster_crashes_max,
            cluster_crash_interval_mean_ns,
            cluster_crash_pause_max_ns,
            cluster_crash_at_commit,
        };
    }

    /// This plan with a reconfiguration to `members` at `at_ns` (scripted
    /// tests). Witnesses are dropped: reconfiguration refuses them.
    pub fn with_reconfiguration(
        mut self,
        members: &[vr_core::MemberId],
        at_ns: u64,
        crash_primary: PrimaryCrash,
    ) -> SeedPlan {
        self.config.witnesses.clear();
        self.reconfiguration = Some(ReconfigurationPlan {
            members: members.to_vec(),
            at_ns,
            crash_primary,
            restart_delay_ns: 300 * MS,
            restart_in_first_epoch: false,
        });
        self
    }

    /// With three or more replicas: in a quarter of the seeds, replicas
    /// read their sockets at intervals (50 µs to 5 ms); in a third of the
    /// seeds with batching on and a window of 4 or more, 16 to 56 more
    /// clients with no think time, on more keys, and replicas that read at
    /// intervals: requests arrive together, or queue while the window is
    /// full, and leave many to a Prepare.
    fn draw_load(&mut self) {
        let mut prng = Prng::new(self.seed ^ 0x10AD_BA7C_4E50_F11D);
        if self.config.replica_count < 3 {
            return; // One replica sends no Prepare.
        }
        if prng.below(4) == 0 {
            self.load.poll_interval_ns = between(&mut prng, 50_000, 5 * MS);
        }
        let window = self.config.prepare_window_max;
        if self.config.batch_ops_max > 1 && window >= 4 && prng.below(3) == 0 {
            if self.load.poll_interval_ns == 0 {
                self.load.poll_interval_ns = between(&mut prng, 50_000, 5 * MS);
            }
            let extra = between(&mut prng, 16, 56) as u8;
            self.load.extra_clients = extra;
            self.workload.client_count += extra;
            self.workload.think_time_max_ns = 0;
            self.config.client_table_max += u32::from(extra);
            // About three clients a key: the checker's search grows
            // exponentially with the operations open at once on one key.
            self.workload.key_count = self
                .workload
                .key_count
                .max(self.workload.client_count.div_ceil(3));
        }
    }

    /// In a quarter of the seeds with three or more replicas, every replica
    /// starts recovering (`Replica::recover`), at staggered times: the
    /// cluster must form by itself, with the seed's faults acting from the
    /// start (restarts during formation included). With one replica,
    /// recovery forms the cluster at once: nothing to exercise.
    fn draw_boot(&mut self) {
        self.draw_boot_forced(None);
    }

    /// Draws the boot plan; `Some(recovering)` forces the choice (with one
    /// replica too) and draws the same start times as an unforced seed.
    pub fn draw_boot_forced(&mut self, recovering: Option<bool>) {
        let mut prng = Prng::new(self.seed ^ 0xB007_5EED_C1A5_7E12);
        let n = self.config.replica_count;
        let drawn = n >= 3 && prng.below(4) == 0;
        self.boot = BootPlan::fresh();
        if !recovering.unwrap_or(drawn) {
            return;
        }
        let stagger_max_ns = pick(&mut prng, &[0, MS, 20 * MS, 200 * MS, 2 * SECOND]);
        self.boot = BootPlan {
            recovering: true,
            start_at_ns: (0..n)
                .map(|_| between(&mut prng, 0, stagger_max_ns))
                .collect(),
        };
    }

    /// The plan of `seed` as drawn before the optimizations of §6 were
    /// simulated: [`SeedPlan::classic`] with restarts, checkpoints and
    /// ballast, `Config`'s defaults for batching and reads. The regression
    /// seeds of bugs found then replay with it.
    pub fn without_optimizations(seed: u64, replica_count: Option<u8>) -> SeedPlan {
        let mut plan = SeedPlan::classic(seed, replica_count);
        plan.draw_recovery();
        plan
    }

    /// Draws batching, leases and backup reads, each on in about half of
    /// the seeds, from a stream of its own.
    fn draw_optimizations(&mut self) {
        let mut prng = Prng::new(self.seed ^ 0x0B71_3A71_0E5B_A7C4);
        let config = &mut self.config;
        // Batching: off (§4.1 exactly) or up to 2..=64 entries a Prepare,
        // sometimes held for a delay of up to a heartbeat.
        if prng.below(2) == 0 {
            config.batch_ops_max = 1;
            config.batch_delay_ns = 0;
        } else {
            config.batch_ops_max = pick(&mut prng, &[2, 3, 4, 8, 16, 64]);
            config.batch_delay_ns = if prng.below(3) == 0 {
                between(&mut prng, 10_000, config.heartbeat_interval_ns)
            } else {
                0
            };
        }
        // Leases: off, or a lease of 2 heartbeats up to the view-change
        // timeout, with a drift bound that covers the plan's clock rates
        // (sometimes generously: up to half the lease).
        if prng.below(2) == 0 {
            config.lease_duration_ns = 0;
            config.clock_drift_max_ns = 0;
        } else {
            let lease = between(
                &mut prng,
                2 * config.heartbeat_interval_ns,
                config
                    .view_change_timeout_ns
                    .max(2 * config.heartbeat_interval_ns),
            );
            let rates = &self.faults.clock_rate_ppm;
            let min = rates.iter().copied().min().unwrap_or(PPM);
            let max = rates.iter().copied().max().unwrap_or(PPM);
            let bound = drift_bound_ns(lease, min, max);
            let drift = if prng.below(4) == 0 {
                between(&mut prng, bound, (lease / 2).max(bound))
            } else {
                bound
            };
            config.lease_duration_ns = lease;
            config.clock_drift_max_ns = drift.min(lease - 1);
        }
        // Backup reads: off, or a share of the reads sent to a random
        // replica, which parks up to `backup_reads_max` of them.
        let backup_read_ppm = if prng.below(2) == 0 {
            config.backup_reads_max = 0;
            0
        } else {
            config.backup_reads_max = pick(&mut prng, &[1, 4, 1024]);
            between(&mut prng, 100_000, PPM.into()) as u32
        };
        // Witnesses (§6), in a third of the seeds with room for them: 1 of
        // 3 replicas, or 1 or 2 of 5, at random indexes.
        let n = config.replica_count;
        let witnesses_max = n - (n / 2 + 1);
        if witnesses_max > 0 && prng.below(3) == 0 {
            let count = between(&mut prng, 1, u64::from(witnesses_max)) as usize;
            let mut chosen = Vec::new();
            while chosen.len() < count {
                let w = vr_core::ReplicaIndex(prng.below(u64::from(n)) as u8);
                if !chosen.contains(&w) {
                    chosen.push(w);
                }
            }
            chosen.sort_unstable();
            config.witnesses = chosen;
        }
        debug_assert_eq!(config.validate(), Ok(()));
        self.optimizations = OptimizationPlan {
            drawn: true,
            backup_read_ppm,
        };
    }

    /// The plan of `seed` as drawn before restarts, checkpoints and
    /// ballast were simulated: default checkpoint interval (4096 ops, so
    /// rarely reached), crashes for good, short partitions. The regression
    /// seeds of bugs found then replay with it.
    pub fn classic(seed: u64, replica_count: Option<u8>) -> SeedPlan {
        // A stream of its own, so that later draws (network, workload) do not
        // shift when the plan draws one more number.
        let mut prng = Prng::new(seed ^ 0x005E_ED0F_91A4);
        let n = replica_count.unwrap_or_else(|| pick(&mut prng, &[1, 3, 3, 3, 5, 5, 5]));
        let f = (n.max(1) - 1) / 2;

        let mut config = Config::new(seed, n);
        config.seed = seed;
        config.op_size_max = OP_SIZE_MAX;
        // One op a Prepare, as before batching (§6) existed: the seeds of
        // these plans replay the runs that found their bugs.
        config.batch_ops_max = 1;
        config.heartbeat_interval_ns = between(&mut prng, 5, 20) * MS;
        config.view_change_timeout_ns = config.heartbeat_interval_ns * between(&mut prng, 5, 15);
        config.timeout_jitter_ns = config.view_change_timeout_ns / 2;
        config.prepare_timeout_ns = 2 * config.heartbeat_interval_ns;
        config.resend_interval_ns = 2 * config.heartbeat_interval_ns;
        config.prepare_window_max = pick(&mut prng, &[1, 2, 4, 16, 256]);
        config.request_queue_max = pick(&mut prng, &[1, 4, 64, 4096]);
        // Small frames force log suffixes (StartView, NewState) to be cut,
        // which exercises state transfer. The smallest still holds a
        // DoViewChange with a full prepare window of maximal operations:
        // docs/protocol.md (departure 1) assumes the suffix fits, and a
        // DoViewChange that does not is rejected by design.
        let smallest = smallest_frame(config.prepare_window_max, OP_SIZE_MAX);
        config.message_size_max =
            pick(&mut prng, &[smallest, 2 * smallest, 16 * 1024, 1024 * 1024]).max(smallest);
        debug_assert_eq!(config.validate(), Ok(()));

        let quiet = prng.below(8) == 0;
        let latency_min_ns = between(&mut prng, 10_000, MS);
        let latency_max_ns = latency_min_ns + between(&mut prng, 0, 10 * MS);
        let links = if quiet {
            LinkFaults::clean(latency_min_ns, latency_max_ns)
        } else {
            LinkFaults {
                loss_ppm: maybe_rate(&mut prng, 300_000),
                duplicate_ppm: maybe_rate(&mut prng, 500_000),
                corrupt_ppm: maybe_rate(&mut prng, 50_000),
                reorder_ppm: maybe_rate(&mut prng, 500_000),
                reorder_delay_max_ns: between(&mut prng, MS, 300 * MS),
                latency_min_ns,
                latency_max_ns,
            }
        };
        let partition_shapes = if quiet || n < 2 || prng.below(4) == 0 {
            Vec::new()
        } else {
            let shapes: Vec<_> = PartitionShape::ALL
                .into_iter()
                .filter(|_| prng.below(2) == 0)
                .collect();
            if shapes.is_empty() {
                vec![pick(&mut prng, &PartitionShape::ALL)]
            } else {
                shapes
            }
        };
        let partition_duration_min_ns = between(&mut prng, 10 * MS, 500 * MS);
        let partition_duration_max_ns =
            partition_duration_min_ns + between(&mut prng, 0, 5 * SECOND);
        let pauses = !quiet && prng.below(2) == 0;
        let pause_duration_max_ns = between(&mut prng, 10 * MS, 3 * SECOND);
        let crashes_max = if quiet || f == 0 || prng.below(2) == 0 {
            0
        } else {
            between(&mut prng, 1, u64::from(f)) as u8
        };
        let nemesis_interval_mean_ns = between(&mut prng, 50 * MS, 2 * SECOND);
        let skewed = !quiet && prng.below(2) == 0;
        let clock_rate_ppm = (0..n)
            .map(|_| {
                if skewed {
                    between(&mut prng, 900_000, 1_100_000) as u32
                } else {
                    PPM
                }
            })
            .collect();

        let workload = WorkloadPlan {
            client_count: between(&mut prng, 1, 8) as u8,
            key_count: between(&mut prng, 2, 5) as u8,
            safety_ops: between(&mut prng, 10, 1000) as u32,
            safety_duration_ns: between(&mut prng, SECOND / 2, 30 * SECOND),
            think_time_max_ns: between(&mut prng, 0, 20 * MS),
            liveness_ops_per_client: between(&mut prng, 1, 3) as u32,
        };
        SeedPlan {
            seed,
            config,
            faults: FaultPlan {
                links,
                partition_shapes,
                partition_duration_min_ns,
                partition_duration_max_ns,
                pauses,
                pause_duration_max_ns,
                crashes_max,
                nemesis_interval_mean_ns,
                clock_rate_ppm,
            },
            workload,
            recovery: RecoveryPlan::off(),
            optimizations: OptimizationPlan::off(),
            boot: BootPlan::fresh(),
            load: LoadPlan::off(),
            reconfiguration: None,
            strand_laggard: false,
            disk: DiskPlan::off(),
        }
    }

    /// Draws the recovery part of the plan, and the configuration it needs,
    /// from a stream of its own.
    fn draw_recovery(&mut self) {
        let mut prng = Prng::new(self.seed ^ 0x04EC_07E4_C4EC_4B01);
        let n = self.config.replica_count;
        let f = (n.max(1) - 1) / 2;
        let quiet = !self.faults.has_nemesis();
        let config = &mut self.config;
        // Checkpoints: one seed in eight keeps the default (rarely reached);
        // the others checkpoint every 4..=200 ops, with a log tail of
        // 0..=64 below the checkpoint, so that a replica cut off for a
        // while must catch up by checkpoint transfer.
        if prng.below(8) != 0 {
            config.checkpoint_interval_ops = pick(&mut prng, &[4, 7, 16, 50, 128, 200]);
            config.log_tail_ops = pick(&mut prng, &[0, 0, 1, 5, 16, 64]);
        }
        // At least one entry per client: a client evicted from the table
        // would have its retried request executed again (by design, see
        // `ClientTable`), which the exactly-once check would report.
        config.client_table_max =
            u32::from(self.workload.client_count) + between(&mut prng, 0, 8) as u32;
        let restarts = !quiet && f > 0 && prng.below(2) == 0;
        let restart_delay_max_ns = between(&mut prng, 10 * MS, 5 * SECOND);
        let long_partitions = !self.faults.partition_shapes.is_empty() && prng.below(2) == 0;
        let long_partition_max_ns = between(&mut prng, 2 * SECOND, 10 * SECOND);
        // Ballast with small frames, in a quarter of the seeds: a checkpoint
        // transfer then takes many chunks. The frame must still hold a
        // DoViewChange of a full window, so the window is small and the
        // operations are bounded tighter.
        let (ballast_pages, ballast_page_size) = if prng.below(4) == 0 {
            config.op_size_max = OP_SIZE_MAX_SMALL;
            config.prepare_window_max = pick(&mut prng, &[1, 2, 4]);
            config.request_queue_max = config.request_queue_max.max(64);
            let smallest = smallest_frame(config.prepare_window_max, OP_SIZE_MAX_SMALL);
            // At least twice the smallest: a reply must fit too, and a read
            // of a string key returns everything appended to it.
            config.message_size_max = smallest * pick(&mut prng, &[2, 4, 8]) as u32;
            // A full transfer takes 100..=400 chunks (one round trip each):
            // many, but few enough to finish within the settle phase.
            let chunk = u64::from(config.message_size_max)
                .saturating_sub(128)
                .max(64);
            let total = chunk * between(&mut prng, 100, 400);
            let pages = between(&mut prng, 64, (total / 1024).clamp(64, 512));
            let page_size = (total / pages).clamp(1024, 4096);
            (pages as u32, page_size as u32)
        } else {
            (0, 0)
        };
        let long_delay_ppm = if restarts && prng.below(2) == 0 {
            between(&mut prng, 100, 5_000) as u32
        } else {
            0
        };
        let long_delay_max_ns = between(&mut prng, 100 * MS, 5 * SECOND);
        let linger = restarts && prng.below(2) == 0;
        debug_assert_eq!(config.validate(), Ok(()));
        self.recovery = RecoveryPlan {
            restarts,
            restart_delay_max_ns,
            long_partitions,
            long_partition_max_ns,
            ballast_pages,
            ballast_page_size,
            long_delay_ppm,
            long_delay_max_ns,
            linger,
        };
    }

    /// A plan with no faults: `replica_count` replicas, `client_count`
    /// clients on `key_count` keys, default timings. Scripted scenarios
    /// start from it and inject their own faults.
    pub fn quiet(seed: u64, replica_count: u8, client_count: u8, key_count: u8) -> SeedPlan {
        let mut config = Config::new(seed, replica_count);
        config.seed = seed;
        config.op_size_max = OP_SIZE_MAX;
        SeedPlan {
            seed,
            config,
            faults: FaultPlan::quiet(replica_count),
            workload: WorkloadPlan {
                client_count,
                key_count,
                safety_ops: u32::MAX,
                safety_duration_ns: u64::MAX,
                think_time_max_ns: 5 * MS,
                liveness_ops_per_client: 2,
            },
            recovery: RecoveryPlan::off(),
            optimizations: OptimizationPlan::off(),
            boot: BootPlan::fresh(),
            load: LoadPlan::off(),
            reconfiguration: None,
            strand_laggard: false,
            disk: DiskPlan::off(),
        }
    }

    /// A hash of every value [`SeedPlan::classic`] draws. Regression tests
    /// pin it: if plan generation changes, a seed no longer replays the run
    /// that once found a bug, and the test says so instead of passing
    /// vacuously. [`SeedPlan::fingerprint_full`] covers the rest of
    /// [`SeedPlan::random`].
    pub fn fingerprint(&self) -> u64 {
        let c = &self.config;
        let text = format!(
            "{} {} {} {} {} {} {} {} {} {} {:?} {:?}",
            c.replica_count,
            c.heartbeat_interval_ns,
            c.view_change_timeout_ns,
            c.timeout_jitter_ns,
            c.prepare_timeout_ns,
            c.resend_interval_ns,
            c.prepare_window_max,
            c.request_queue_max,
            c.message_size_max,
            c.op_size_max,
            self.faults,
            self.workload
        );
        crate::trace::Fnv64::of(text.as_bytes())
    }

    /// [`SeedPlan::fingerprint`] and everything else the plan holds: the
    /// checkpoint and client-table bounds and the recovery plan.
    pub fn fingerprint_full(&self) -> u64 {
        let c = &self.config;
        let text = format!(
            "{:x} {} {} {} {:?}",
            self.fingerprint(),
            c.checkpoint_interval_ops,
            c.log_tail_ops,
            c.client_table_max,
            self.recovery
        );
        crate::trace::Fnv64::of(text.as_bytes())
    }

    /// [`SeedPlan::fingerprint_full`] and the optimizations (§6).
    pub fn fingerprint_optimizations(&self) -> u64 {
        let c = &self.config;
        let text = format!(
            "{:x} {} {} {} {} {} {} {:?}",
            self.fingerprint_full(),
            c.batch_ops_max,
            c.batch_bytes_max,
            c.batch_delay_ns,
            c.lease_duration_ns,
            c.clock_drift_max_ns,
            c.backup_reads_max,
            self.optimizations
        );
        crate::trace::Fnv64::of(text.as_bytes())
    }

    /// [`SeedPlan::fingerprint_optimizations`] and the boot plan.
    pub fn fingerprint_boot(&self) -> u64 {
        let text = format!("{:x} {:?}", self.fingerprint_optimizations(), self.boot);
        crate::trace::Fnv64::of(text.as_bytes())
    }

    /// [`SeedPlan::fingerprint_boot`] and the load plan.
    pub fn fingerprint_load(&self) -> u64 {
        let text = format!("{:x} {:?}", self.fingerprint_boot(), self.load);
        crate::trace::Fnv64::of(text.as_bytes())
    }

    /// [`SeedPlan::fingerprint_load`] and what `run_seed` draws after it:
    /// the reconfiguration, the stranding and the disk plan. The pinned
    /// seeds of durable runs check it.
    pub fn fingerprint_disk(&self) -> u64 {
        let text = format!(
            "{:x} {:?} {} {:?} {:?}",
            self.fingerprint_load(),
            self.reconfiguration,
            self.strand_laggard,
            self.config.durability,
            self.disk
        );
        // Plans that do not aim crashes at commits replay the runs they had
        // before the choice existed: they keep their fingerprints.
        let text = text.replace(", cluster_crash_at_commit: false", "");
        crate::trace::Fnv64::of(text.as_bytes())
    }

    /// The disk part of [`SeedPlan::summary`]: empty for memory-only
    /// replicas.
    pub fn disk_summary(&self) -> String {
        let d = &self.disk;
        if !d.durable {
            return String::new();
        }
        let mut out = format!(
            " durable disk-latency={}..{}us",
            d.latency_min_ns / 1000,
            d.latency_max_ns / 1000
        );
        if !d.fault_kinds.is_empty() {
            let kinds: Vec<&str> = d.fault_kinds.iter().map(|k| k.name()).collect();
            out += &format!(
                " disk-faults={:?}:{}/{}ms",
                d.fault_replicas,
                kinds.join(","),
                d.fault_interval_mean_ns / MS
            );
        }
        if d.cluster_crashes_max > 0 {
            out += &format!(
                " cluster-crashes<={}/{}ms pause<={}ms",
                d.cluster_crashes_max,
                d.cluster_crash_interval_mean_ns / MS,
                d.cluster_crash_pause_max_ns / MS
            );
            if d.cluster_crash_at_commit {
                out += " aimed-at-commits";
            }
        }
        out
    }

    /// The optimizations part of [`SeedPlan::summary`]: empty for plans
    /// that did not draw them.
    pub fn optimizations_summary(&self) -> String {
        if !self.optimizations.drawn {
            return String::new();
        }
        let c = &self.config;
        let mut out = String::new();
        if c.batch_ops_max > 1 {
            out += &format!(" batch<={}", c.batch_ops_max);
            if c.batch_delay_ns > 0 {
                out += &format!("/{}us", c.batch_delay_ns / 1000);
            }
        } else {
            out += " batch=off";
        }
        if c.lease_duration_ns > 0 {
            out += &format!(
                " lease={}ms/drift<={}us",
                c.lease_duration_ns / MS,
                c.clock_drift_max_ns / 1000
            );
        } else {
            out += " lease=off";
        }
        if self.optimizations.backup_read_ppm > 0 {
            out += &format!(
                " backup-reads={:.0}%/parked<={}",
                f64::from(self.optimizations.backup_read_ppm) / 1e4,
                c.backup_reads_max
            );
        } else {
            out += " backup-reads=off";
        }
        if !c.witnesses.is_empty() {
            let witnesses: Vec<u8> = c.witnesses.iter().map(|w| w.0).collect();
            out += &format!(" witnesses={witnesses:?}");
        }
        out
    }

    /// The boot part of [`SeedPlan::summary`]: empty for a fresh start.
    fn boot_summary(&self) -> String {
        if !self.boot.recovering {
            return String::new();
        }
        let last = self.boot.start_at_ns.iter().max().copied().unwrap_or(0);
        format!(" boot=recovering/last-start={}ms", last / MS)
    }

    /// The load part of [`SeedPlan::summary`]: empty when off.
    fn load_summary(&self) -> String {
        let mut out = String::new();
        if self.load.poll_interval_ns > 0 {
            out += &format!(" poll={}us", self.load.poll_interval_ns / 1000);
        }
        if self.load.extra_clients > 0 {
            out += &format!(" burst-clients={}", self.load.extra_clients);
        }
        out
    }

    /// The recovery part of [`SeedPlan::summary`].
    fn recovery_summary(&self) -> String {
        let c = &self.config;
        let r = &self.recovery;
        let mut out = format!(
            " checkpoint={}/tail={}",
            c.checkpoint_interval_ops, c.log_tail_ops
        );
        if r.restarts {
            out += &format!(" restarts<={}ms", r.restart_delay_max_ns / MS);
        }
        if r.long_partitions {
            out += &format!(" long-partitions<={}s", r.long_partition_max_ns / SECOND);
        }
        if r.ballast_pages > 0 {
            out += &format!(" ballast={}x{}B", r.ballast_pages, r.ballast_page_size);
        }
        if r.linger {
            out += " linger";
        }
        if r.long_delay_ppm > 0 {
            out += &format!(
                " long-delays={:.2}%/{}ms",
                f64::from(r.long_delay_ppm) / 1e4,
                r.long_delay_max_ns / MS
            );
        }
        out
    }

    /// A one-line summary for reports.
    pub fn summary(&self) -> String {
        let l = &self.faults.links;
        let shapes: Vec<_> = self
            .faults
            .partition_shapes
            .iter()
            .map(|s| s.name())
            .collect();
        let skewed = self
            .faults
            .clock_rate_ppm
            .iter()
            .filter(|&&r| r != PPM)
            .count();
        format!(
            "n={} clients={} keys={} ops<={} window={} frame={}B loss={:.1}% dup={:.1}% corrupt={:.1}% \
             reorder={:.1}%/{}ms latency={}..{}us partitions=[{}] pauses={} crashes<={} skewed-clocks={}{}{}{}{}{}{}{}",
            self.config.replica_count,
            self.workload.client_count,
            self.workload.key_count,
            self.workload.safety_ops,
            self.config.prepare_window_max,
            self.config.message_size_max,
            f64::from(l.loss_ppm) / 1e4,
            f64::from(l.duplicate_ppm) / 1e4,
            f64::from(l.corrupt_ppm) / 1e4,
            f64::from(l.reorder_ppm) / 1e4,
            l.reorder_delay_max_ns / MS,
            l.latency_min_ns / 1000,
            l.latency_max_ns / 1000,
            shapes.join(","),
            self.faults.pauses,
            self.faults.crashes_max,
            skewed,
            self.recovery_summary(),
            self.optimizations_summary(),
            self.boot_summary(),
            self.load_summary(),
            self.reconfiguration
                .as_ref()
                .map_or(String::new(), ReconfigurationPlan::summary)
                + if self.strand_laggard {
                    " strand-laggard"
                } else {
                    ""
                },
            self.disk_summary(),
            match self.config.injected_bug {
                Some(bug) => format!(" injected-bug={bug:?}"),
                None => String::new(),
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_deterministic_valid_and_varied() {
        let mut sizes = std::collections::BTreeSet::new();
        let mut quiet_links = 0;
        for seed in 0..200 {
            let plan = SeedPlan::random(seed, None);
            assert_eq!(plan, SeedPlan::random(seed, None));
            assert_eq!(plan.config.validate(), Ok(()));
            let n = plan.config.replica_count;
            assert!(u16::from(plan.faults.crashes_max) <= u16::from((n - 1) / 2));
            sizes.insert(n);
            if plan.faults.links.loss_ppm == 0 && plan.faults.links.duplicate_ppm == 0 {
                quiet_links += 1;
            }
        }
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![1, 3, 5]);
        assert!(quiet_links > 10 && quiet_links < 150, "{quiet_links}");
        assert_eq!(SeedPlan::random(1, Some(5)).config.replica_count, 5);
    }

    #[test]
    fn optimizations_are_drawn_on_and_off_and_drift_covers_the_clocks() {
        let (mut batching, mut leases, mut backup_reads) = (0, 0, 0);
        for seed in 0..200 {
            let plan = SeedPlan::random(seed, None);
            let c = &plan.config;
            assert!(plan.optimizations.drawn);
            batching += u32::from(c.batch_ops_max > 1);
            backup_reads += u32::from(plan.optimizations.backup_read_ppm > 0);
            assert_eq!(
                plan.optimizations.backup_read_ppm > 0,
                c.backup_reads_max > 0
            );
            if c.lease_duration_ns > 0 {
                leases += 1;
                let rates = &plan.faults.clock_rate_ppm;
                let (min, max) = (rates.iter().min().unwrap(), rates.iter().max().unwrap());
                // The primary's shortened lease, on the slowest clock, ends
                // before the promise on the fastest one.
                let primary_ns =
                    (c.lease_duration_ns - c.clock_drift_max_ns) as f64 / f64::from(*min);
                let promise_ns = c.lease_duration_ns as f64 / f64::from(*max);
                assert!(primary_ns <= promise_ns, "seed {seed}: {}", plan.summary());
            }
            let old = SeedPlan::without_optimizations(seed, None);
            if plan.load.extra_clients == 0 {
                // Only burst clients change the draws before them.
                assert_eq!(old.fingerprint_full(), plan.fingerprint_full());
            }
            assert!(!old.optimizations.drawn);
        }
        for count in [batching, leases, backup_reads] {
            assert!(
                count > 60 && count < 140,
                "{batching} {leases} {backup_reads}"
            );
        }
    }

    #[test]
    fn boot_and_load_plans_are_drawn_in_some_seeds_and_valid() {
        let (mut boots, mut polls, mut bursts) = (0, 0, 0);
        for seed in 0..400 {
            let plan = SeedPlan::random(seed, None);
            assert_eq!(plan.config.validate(), Ok(()));
            let n = plan.config.replica_count;
            if plan.boot.recovering {
                boots += 1;
                assert!(n >= 3);
                assert_eq!(plan.boot.start_at_ns.len(), usize::from(n));
            }
            polls += u32::from(plan.load.poll_interval_ns > 0);
            if plan.load.extra_clients > 0 {
                bursts += 1;
                assert!(plan.config.batch_ops_max > 1 && plan.load.poll_interval_ns > 0);
                assert!(plan.config.client_table_max >= u32::from(plan.workload.client_count));
                assert!(plan.workload.key_count * 3 >= plan.workload.client_count);
            }
            let mut forced = plan.clone();
            forced.draw_boot_forced(Some(true));
            assert!(forced.boot.recovering);
            if plan.boot.recovering {
                assert_eq!(forced, plan, "forcing draws the same start times");
            }
        }
        assert!((50..160).contains(&boots), "{boots}");
        assert!((60..200).contains(&polls), "{polls}");
        assert!((10..80).contains(&bursts), "{bursts}");
    }

    /// Disk plans: durable in about half of the seeds that may be; at
    /// most f replicas take disk faults, and with the crashes for good at
    /// most f; frames hold a DoViewChange of three windows; a seed drawn
    /// memory-only keeps the plan it had before.
    #[test]
    fn disk_plans_are_drawn_in_half_the_seeds_within_the_fault_bound() {
        let (mut durable, mut faults, mut cluster_crashes, mut slow) = (0, 0, 0, 0);
        for seed in 0..400 {
            let before = SeedPlan::random(seed, None);
            let mut plan = before.clone();
            plan.draw_disk();
            let d = &plan.disk;
            if !d.durable {
                assert_eq!(plan, before, "seed {seed}: a memory-only plan is unchanged");
                continue;
            }
            durable += 1;
            let n = plan.config.replica_count;
            let f = (n - 1) / 2;
            assert!(!before.boot.recovering && !before.config.has_witnesses());
            assert_eq!(plan.config.durability, vr_core::Durability::Disk);
            assert_eq!(plan.config.validate(), Ok(()));
            assert!(d.fault_replicas.len() <= usize::from(f));
            assert!(d.fault_replicas.iter().all(|&r| r < n));
            assert!(
                usize::from(plan.faults.crashes_max) + d.fault_replicas.len() <= usize::from(f)
            );
            assert!(d.fault_kinds.is_empty() == d.fault_replicas.is_empty());
            assert!(d.latency_min_ns >= 50_000 && d.latency_max_ns <= 5 * MS);
            let frame = smallest_frame(3 * plan.config.prepare_window_max, plan.config.op_size_max);
            assert!(plan.config.message_size_max >= frame);
            faults += u32::from(!d.fault_kinds.is_empty());
            cluster_crashes += u32::from(d.cluster_crashes_max > 0);
            slow += u32::from(d.latency_min_ns >= 500_000);
            let mut forced = before.clone();
            forced.draw_disk_forced(Some(true));
            assert_eq!(forced, plan, "forcing draws the same disk");
        }
        assert!((120..220).contains(&durable), "{durable}");
        assert!((20..durable / 2).contains(&faults), "{faults}");
        assert!(
            (durable / 4..durable * 3 / 4).contains(&cluster_crashes),
            "{cluster_crashes}"
        );
        assert!((10..durable / 2).contains(&slow), "{slow}");
    }

    #[test]
    fn recovery_plans_vary_and_classic_plans_are_the_old_ones() {
        let (mut restarts, mut ballast, mut small_checkpoints, mut linger) = (0, 0, 0, 0);
        for seed in 0..400 {
            let plan = SeedPlan::random(seed, None);
            let classic = SeedPlan::classic(seed, None);
            assert_eq!(classic.recovery, RecoveryPlan::off());
            assert_eq!(classic.config.checkpoint_interval_ops, 4096);
            let r = &plan.recovery;
            assert!(!r.restarts || plan.config.replica_count >= 3);
            assert!(plan.config.client_table_max >= u32::from(plan.workload.client_count));
            if r.ballast_pages == 0 && plan.load.extra_clients == 0 {
                // Only ballast plans and burst clients change the classic
                // draws.
                assert_eq!(plan.fingerprint(), classic.fingerprint());
            } else if r.ballast_pages > 0 {
                assert!((64..=512).contains(&r.ballast_pages));
                assert!((1024..=4096).contains(&r.ballast_page_size));
                ballast += 1;
            }
            restarts += u32::from(r.restarts);
            linger += u32::from(r.linger);
            small_checkpoints += u32::from(plan.config.checkpoint_interval_ops <= 200);
        }
        assert!((50..200).contains(&restarts), "{restarts}");
        assert!((50..200).contains(&ballast), "{ballast}");
        assert!((20..150).contains(&linger), "{linger}");
        assert!(small_checkpoints > 300, "{small_checkpoints}");
    }
}
