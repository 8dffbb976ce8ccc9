//! The replica: the paper's server-side state machine (§4).
//!
//! Inputs are [`Replica::handle_message`] and [`Replica::handle_timeout`];
//! outputs are drained with [`Replica::poll_output`] until it returns
//! [`Output::Timeout`], which says when to call `handle_timeout` next. See
//! [`Replica`] for the contract.
//!
//! The handlers live in one module per protocol phase: `normal` (§4.1),
//! `view_change` (§4.2), `recovery` (§4.3), `state_transfer` (§5.2),
//! `checkpoint` (§5.1 and the checkpoint half of §5.2) and `epoch` (§7,
//! reconfiguration).

mod checkpoint;
mod durability;
mod epoch;
mod normal;
mod recovery;
mod state_transfer;
mod view_change;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::checkpoint::{Checkpoint, CheckpointSummary};
use crate::client_table::ClientTable;
use crate::config::{Config, ConfigError};
use crate::message::{
    CrashVector, DoViewChange, EntryKind, LogEntry, MemberId, Message, ReadRequest, ReplicaIndex,
    Reply, Request, StartEpoch,
};
use crate::prng::Prng;
use crate::time::Instant;
use crate::Service;

use checkpoint::CheckpointFetch;
pub use checkpoint::CheckpointFetchStats;
pub use durability::{DurableState, OnDisk, Persist};
use recovery::RecoveryState;

/// A replica's status (§4: "status").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Status {
    /// Processing requests in the current view.
    Normal,
    /// Taking part in a view change to the current view, or fetching the
    /// current view's log before it can take part in it.
    ViewChange,
    /// Restarted without its state (§4.3): learning the latest view and
    /// fetching its state; takes no part in requests or view changes.
    Recovering,
    /// A member of a new epoch fetching the state up to the
    /// reconfiguration that began it, or a new replica waiting to hear of
    /// its epoch (§7.2); takes no part in requests or view changes.
    Transitioning,
    /// Left the configuration in a reconfiguration (§7.2): takes part in
    /// nothing, and tells replicas and clients of older epochs about the
    /// new one. See [`Replica::may_shut_down`].
    Retired,
}

/// An output of the replica, for the embedding to carry out, drained with
/// [`Replica::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `message` to member `to`, stamped with the sender's epoch
    /// `epoch` (the frame header's).
    Send {
        /// The destination's member id ([`Config::members`]; it equals
        /// the destination's index unless the cluster was reconfigured).
        to: MemberId,
        /// The sender's epoch when it sent the message.
        epoch: u32,
        /// The message.
        message: Message,
    },
    /// Send `reply` to the client `reply.client_id`.
    Reply(Reply),
    /// Tell the client `client_id`, which sent a request in an older
    /// epoch, about the current one (§7.3): send it `notice` as a
    /// [`Message::StartEpoch`] on the request's connection.
    NewEpoch {
        /// The client.
        client_id: crate::ClientId,
        /// The current epoch and its members.
        notice: StartEpoch,
    },
    /// Durable replicas only ([`crate::config::Durability::Disk`]): make
    /// this durable, then call [`Replica::handle_persisted`]. Messages
    /// that rest on it are held back until then; the outputs around it
    /// may be carried out meanwhile.
    Persist(Persist),
    /// Nothing more to carry out now; call [`Replica::handle_timeout`] at
    /// this instant (`None`: no timer armed). It may be the current
    /// instant (the batch timer, see [`Replica`]): then call it as soon as
    /// the inputs ready now are fed.
    Timeout(Option<Instant>),
}

/// Counters an operator or a test can read. They only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Operations executed by the service upcall.
    pub ops_executed: u64,
    /// Requests answered from the client table instead of being executed.
    pub requests_deduplicated: u64,
    /// Requests dropped: not the primary, not normal, stale, in progress,
    /// oversized, or the queue full.
    pub requests_dropped: u64,
    /// Messages from older views, dropped (§4: "drop the message").
    pub messages_stale_view: u64,
    /// Messages that made no sense in the current state (wrong replica index,
    /// out-of-range numbers) and were dropped.
    pub messages_invalid: u64,
    /// Times this replica, as primary, stopped hearing from a quorum and
    /// started a view change itself.
    pub primary_abdications: u64,
    /// View changes this replica started or joined.
    pub view_changes_started: u64,
    /// Views this replica entered in normal status after a view change.
    pub view_changes_completed: u64,
    /// GetState requests sent.
    pub state_requests_sent: u64,
    /// StartViewChange messages ignored because the primary was heard from
    /// recently (see `docs/protocol.md`, "Departures").
    pub start_view_changes_ignored: u64,
    /// View changes this replica started, as a backup, because its primary
    /// announced a new incarnation: it restarted without its state (§4.3),
    /// and leads the view no more.
    pub view_changes_primary_restarted: u64,
    /// Votes dropped because they came from an incarnation of their sender
    /// older than one this replica knows (crash vectors, §4.3).
    pub messages_stale_incarnation: u64,
    /// Times this replica raised its own incarnation because another
    /// replica knew a later one of it (an unfinished recovery of an earlier
    /// life reached that replica; see `admit_crash_vector`).
    pub incarnations_raised: u64,
    /// Messages ignored while recovering.
    pub messages_ignored_recovering: u64,
    /// Checkpoints taken (§5.1).
    pub checkpoints_taken: u64,
    /// Checkpoints installed from a peer (§5.2).
    pub checkpoints_installed: u64,
    /// Checkpoint pages received and kept, and their bytes.
    pub checkpoint_pages_received: u64,
    /// Bytes of checkpoint pages received and kept.
    pub checkpoint_bytes_received: u64,
    /// Recoveries completed (§4.3), including the forming of a new cluster.
    pub recoveries_completed: u64,
    /// Prepare messages broadcast (batches; resends not counted).
    pub prepare_batches: u64,
    /// Entries those Prepares carried: divided by `prepare_batches`, the
    /// mean batch size.
    pub prepare_batch_entries: u64,
    /// Read-only requests the primary answered under its lease, without
    /// going through the log.
    pub leased_reads: u64,
    /// Reads answered from this replica's state at a client's request
    /// (reads at backups).
    pub backup_reads: u64,
    /// View changes this replica did not start or join because it had
    /// promised the primary a lease.
    pub view_changes_deferred_by_lease: u64,
    /// Witness: times it moved its log's start forward to catch up, past
    /// ops every full replica had executed (it never fetches a checkpoint).
    pub witness_log_skips: u64,
    /// Witness: times it was offered a skip past ops not every full
    /// replica is known to have executed, and waited instead.
    pub witness_skips_deferred: u64,
    /// State requests left unanswered because this replica could serve
    /// neither the log asked for nor a checkpoint that the requester could
    /// use (a witness asked for ops it dropped; see `docs/protocol.md`).
    pub state_requests_unserved: u64,
    /// Reconfiguration requests refused: wrong epoch, invalid members, or
    /// a cluster with witnesses (§7.1).
    pub reconfigurations_refused: u64,
    /// Epochs this replica entered (or retired in) (§7).
    pub epochs_started: u64,
    /// Messages from older epochs (answered with StartEpoch, §7.3).
    pub messages_older_epoch: u64,
    /// Messages from newer epochs, dropped until a StartEpoch arrives.
    pub messages_newer_epoch: u64,
    /// Durable replicas: persists the embedding completed.
    pub persists_completed: u64,
    /// Durable replicas: restarts from disk ([`Replica::restart`]).
    pub restarts_from_disk: u64,
    /// Times this replica formed a new, empty cluster in view 0 because
    /// every other replica answered its recovery that it holds nothing
    /// (§4.3's whole-cluster restart). Expected once at a new cluster's
    /// birth; any other time, a diskless cluster lost its state (more than
    /// f replicas down or recovering at once), and the embedding should
    /// say so loudly.
    pub clusters_formed: u64,
}

/// Deadlines of the replica's timers; `None` is disarmed.
#[derive(Clone, Debug, Default)]
struct Timers {
    /// Primary: send a Commit heartbeat.
    heartbeat: Option<Instant>,
    /// Primary: resend unacknowledged Prepares.
    prepare: Option<Instant>,
    /// Backup: the primary has been silent too long. View change: the view
    /// change has taken too long.
    view_change: Option<Instant>,
    /// View change: resend StartViewChange / DoViewChange.
    view_change_resend: Option<Instant>,
    /// State transfer: resend GetState. Recovery: resend Recovery.
    repair: Option<Instant>,
    /// Primary: send the batch held since then (`batch_delay_ns`).
    batch: Option<Instant>,
    /// Reconfiguration: resend StartEpoch.
    epoch: Option<Instant>,
}

/// A log being fetched before it is installed all at once (§5.2).
///
/// Installing piece by piece would leave the replica advertising a log that
/// is neither its old one nor the new view's, which is how committed
/// operations get lost (see `docs/protocol.md`, "State transfer").
#[derive(Clone, Debug)]
struct Sync {
    /// The view whose log is being fetched.
    view: u64,
    /// The replica asked.
    source: ReplicaIndex,
    /// The fetched entries follow this op-number, the replica's own
    /// commit-number when the fetch began.
    base: u64,
    /// Fetched entries, contiguous from `base + 1`.
    entries: Vec<LogEntry>,
    /// When the fetch is complete.
    goal: SyncGoal,
    /// A checkpoint being fetched because the source's log no longer
    /// reaches back to `base`.
    fetch: Option<CheckpointFetch>,
    /// A fetched checkpoint, installed with the entries when the sync is
    /// complete; `base` is then its op-number.
    staged_checkpoint: Option<Checkpoint>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SyncGoal {
    /// A backup adopting view `view`'s log from its primary: complete when
    /// the entries reach the primary's op-number.
    PrimaryLog,
    /// A new primary completing its view change: complete when the
    /// committed entries reach this op-number.
    CommittedTo(u64),
    /// A transitioning member of a new epoch (§7.2): complete when the
    /// committed entries reach the reconfiguration's op-number; taken from
    /// any member of the epoch, whatever its view.
    Transition(u64),
}

/// One replica of a VR cluster, running the service `S`.
///
/// # The contract
///
/// Methods fall in three groups: getters, inputs (`handle_*`, each taking
/// the current [`Instant`]), and one output, [`Replica::poll_output`].
/// After every input, drain `poll_output` until it returns
/// [`Output::Timeout`]`(t)`; when `t <= now`, call
/// [`Replica::handle_timeout`]`(now)` and drain again. `poll_output` is a
/// pure drain: it never changes protocol state, so an embedding may drain
/// late or in pieces without changing what the replica does.
///
/// Batching (§6) is an explicit timer. A request that joins an empty batch
/// arms the batch timer at `now + batch_delay_ns`; the batch leaves as one
/// Prepare per backup when it fills or when `handle_timeout` fires the
/// timer. With `batch_delay_ns == 0` the timer is due at once (the
/// instant the request joined), so the batch's size is the embedding's
/// choice: one that feeds every input ready now (a socket read's frames)
/// before it fires due timers sends them in one Prepare; one that fires
/// timers after each input sends one Prepare per request. Both are
/// correct.
pub struct Replica<S: Service> {
    config: Config,
    replica: ReplicaIndex,
    /// This replica's member id: its name across epochs (§7).
    member: MemberId,
    /// The current epoch-number (§7).
    epoch: u32,
    epoch_state: epoch::EpochState,
    service: S,
    prng: Prng,

    // The paper's replica state (§4).
    status: Status,
    view: u64,
    last_normal_view: u64,
    op_number: u64,
    /// Every op up to here is committed and has been executed here.
    commit_number: u64,
    /// The highest commit-number heard of; above `commit_number` while this
    /// replica still lacks some committed ops.
    commit_max: u64,
    /// `log[i].op_number == log_base + i + 1`.
    log: Vec<LogEntry>,
    /// The op-number before the first entry of `log`: entries up to it were
    /// dropped after a checkpoint. Never above `commit_number`.
    log_base: u64,
    client_table: ClientTable,
    /// The latest checkpoint, served to peers that need state the log no
    /// longer holds.
    checkpoint: Checkpoint,
    /// An older checkpoint kept while a peer fetches it, with the log after
    /// it (see `take_checkpoint`).
    retained: Option<Checkpoint>,
    /// The peer that last asked for (or was offered) the latest
    /// checkpoint, and when.
    checkpoint_fetcher: Option<(ReplicaIndex, Instant)>,
    /// The peer fetching the retained checkpoint or the log after it, and
    /// when it last asked.
    retained_fetcher: Option<(ReplicaIndex, Instant)>,
    /// The time of the latest input; also stamps the Prepares sent when
    /// the outputs are drained.
    now: Instant,
    /// Per replica, the latest incarnation known; this replica's own entry
    /// is its incarnation (§4.3, crash vectors).
    crash_vector: CrashVector,
    /// While recovering: the recovery in progress.
    recovery: Option<RecoveryState>,
    /// Set once this replica, restarted without its memory, completed a
    /// recovery: what it then installed (see `earlier_life_may_have_entered`
    /// and docs/protocol.md, "Entering a later epoch after a recovery").
    recovered: Option<Recovered>,
    /// Started by [`Replica::recover_lost_disk`]: a durable replica whose
    /// disk held data it lost. Never forms a new cluster.
    lost_disk: bool,

    // Primary state.
    /// Per replica, the highest op-number it acknowledged in this view.
    prepare_ok_op: Vec<u64>,
    /// Per replica, the highest commit-number it reported in this view.
    prepare_ok_commit: Vec<u64>,
    /// Per replica, when the primary last heard a PrepareOk from it.
    prepare_ok_heard_at: Vec<Instant>,
    /// Per client, the highest request number queued or in the log and not
    /// yet executed: one lookup tells a retry from a new request.
    requests_in_progress: crate::id_hash::ClientIdMap<u64>,
    /// Requests waiting for room in the prepare window.
    request_queue: VecDeque<Request>,
    /// Entries after this op-number are in the log but not yet sent to the
    /// backups: the batch being built (§6).
    unsent_from: u64,
    /// Bytes of the batch being built.
    batch_bytes: usize,
    /// Per replica, the latest of this primary's timestamps it echoed: it
    /// promised not to join a view change for a lease since then.
    lease_acked_ns: Vec<u64>,
    /// The op-number when this replica's current view began; it serves no
    /// leased read before all of it is committed in this view.
    view_start_op: u64,

    // Backup state for leases and reads.
    /// Not to start or join a view change before this (a lease promised to
    /// the primary).
    lease_promise_until: Instant,
    /// The latest timestamp received from the primary of the current view.
    primary_timestamp_ns: u64,
    /// Reads waiting until this replica has executed up to their op-number.
    parked_reads: VecDeque<ReadRequest>,

    // Witnesses (§6).
    /// Every full replica (not recovering) has executed the ops up to here:
    /// the highest such point this replica computed (as primary) or heard
    /// of. Only grows: a full replica's commit-number never goes back, and
    /// one that restarts empty takes no part until it has fetched a
    /// primary's state, which is past it. In a cluster with witnesses,
    /// logs are kept back to it, and witnesses keep nothing below it.
    full_commit_min: u64,

    // View-change state (§4.2).
    start_view_change_from: ReplicaSet,
    do_view_change_from: Vec<Option<DoViewChange>>,
    /// The DoViewChange this replica sent for the current view, kept to resend.
    do_view_change_sent: Option<DoViewChange>,
    /// The highest view for which this replica sent a DoViewChange to
    /// another replica (a promise not to rejoin an older view).
    do_view_change_view_max: u64,
    /// New primary: the StartView suffix starts after this op-number, the
    /// smallest commit-number among the DoViewChanges it used.
    start_view_suffix_from: u64,
    /// When the primary of the current view was last heard from.
    primary_heard_at: Instant,

    sync: Option<Sync>,
    /// Durable replicas: what is on disk, and what is on its way there.
    persist: durability::PersistState,
    timers: Timers,
    /// Outputs not yet drained; never holds [`Output::Timeout`].
    outbox: VecDeque<Output>,
    stats: Stats,
}

/// What a replica installed when it completed a recovery (§4.3): the log's
/// end, the view it joined, and that view's primary's commit-number.
#[derive(Clone, Copy, Debug)]
struct Recovered {
    log_op: u64,
    view: u64,
    commit_number: u64,
}

/// A set of replica indexes (at most 256 replicas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ReplicaSet([u64; 4]);

impl ReplicaSet {
    fn insert(&mut self, replica: ReplicaIndex) {
        self.0[usize::from(replica.0 / 64)] |= 1 << (replica.0 % 64);
    }
    fn remove(&mut self, replica: ReplicaIndex) {
        self.0[usize::from(replica.0 / 64)] &= !(1 << (replica.0 % 64));
    }
    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

impl<S: Service> Replica<S> {
    /// A replica with index `replica` starting in view 0 with an empty log,
    /// as every replica of a new cluster does. `now` arms its first timers.
    ///
    /// Only for forming a new cluster: a replica that restarts after a crash
    /// must use [`Replica::recover`], since it may have promised things it
    /// no longer remembers.
    pub fn new(
        config: Config,
        replica: ReplicaIndex,
        service: S,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let mut this = Replica::blank(config, replica, service, now, 0)?;
        this.take_checkpoint(0);
        this.enter_normal_timers(now);
        Ok(this)
    }

    /// A new replica, member `member`, that will join a running cluster
    /// when a reconfiguration adds it (§7.2): it waits, transitioning, for
    /// a [`Message::StartEpoch`], then fetches the state and takes part.
    /// `config` gives the cluster id and tunables (its replica count and
    /// members are replaced by the new epoch's). `service` must be empty.
    ///
    /// Only for a replica that never took part in the cluster: one that
    /// restarts after taking part must use [`Replica::recover`] with the
    /// configuration of the epoch it was in.
    pub fn join(
        config: Config,
        member: MemberId,
        service: S,
        now: Instant,
        nonce: u64,
    ) -> Result<Self, ConfigError> {
        // Index 0 until a StartEpoch gives it its place.
        let mut this = Replica::blank(config, ReplicaIndex(0), service, now, nonce)?;
        this.member = member;
        this.take_checkpoint(0);
        this.status = Status::Transitioning;
        this.timers.repair = Some(now + this.config.view_change_timeout_ns);
        Ok(this)
    }

    /// A replica restarted without its state (§4.3): it runs the recovery
    /// protocol, fetches the current state from the primary and then
    /// serves. `service` must be empty, as after a fresh start.
    ///
    /// `nonce` must differ on every restart (take it from the operating
    /// system's random source): responses to an earlier incarnation's
    /// recovery must not be mistaken for answers to this one. When every
    /// replica of the cluster is recovering at once, they form a new
    /// cluster with an empty state, so a whole cluster started with
    /// `recover` bootstraps itself.
    pub fn recover(
        config: Config,
        replica: ReplicaIndex,
        service: S,
        now: Instant,
        nonce: u64,
    ) -> Result<Self, ConfigError> {
        let mut this = Replica::blank(config, replica, service, now, nonce)?;
        // Before the crash this replica may have promised a primary a lease
        // (§6): it keeps that promise, which ends at most a lease after its
        // last message from the primary, before now. Forgetting it could let
        // a view change cut a lease short and a deposed primary serve a
        // stale read.
        this.lease_promise_until = now + this.config.lease_duration_ns;
        this.take_checkpoint(0);
        this.start_recovery(now);
        Ok(this)
    }

    /// A durable replica ([`crate::Durability::Disk`]) whose disk held data
    /// that is now lost or damaged (a replaced disk, a corrupt record): it
    /// recovers like [`Replica::recover`], but, having held data, it never
    /// forms a new cluster, and while it recovers no other replica does
    /// ([`crate::message::RecoveryStatus::RecoveringDataLost`]): a new, empty view 0 would
    /// serve without the acknowledged writes its disk held. A durable
    /// replica whose disk never held data (a new cluster's first start)
    /// uses `recover`.
    pub fn recover_lost_disk(
        config: Config,
        replica: ReplicaIndex,
        service: S,
        now: Instant,
        nonce: u64,
    ) -> Result<Self, ConfigError> {
        let mut this = Replica::blank(config, replica, service, now, nonce)?;
        this.lost_disk = true;
        this.lease_promise_until = now + this.config.lease_duration_ns;
        this.take_checkpoint(0);
        this.start_recovery(now);
        Ok(this)
    }

    fn blank(
        config: Config,
        replica: ReplicaIndex,
        service: S,
        now: Instant,
        nonce: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if !config.has_replica(replica) {
            return Err(ConfigError::ReplicaIndexOutOfRange);
        }
        let n = usize::from(config.replica_count);
        // Mix the index into the seed so replicas draw different jitter,
        // and the nonce so that a restarted replica draws new numbers.
        let prng = Prng::new(
            config.seed
                ^ (u64::from(replica.0) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ nonce.rotate_left(17),
        );
        Ok(Replica {
            replica,
            member: config.member_id(replica),
            epoch: config.epoch,
            epoch_state: epoch::EpochState::starting(&config),
            service,
            prng,
            status: Status::Normal,
            view: 0,
            last_normal_view: 0,
            op_number: 0,
            commit_number: 0,
            commit_max: 0,
            log: Vec::new(),
            log_base: 0,
            client_table: ClientTable::with_max(config.client_table_max as usize),
            checkpoint: Checkpoint::empty(),
            retained: None,
            checkpoint_fetcher: None,
            retained_fetcher: None,
            now,
            crash_vector: core::iter::repeat_n(0, n).collect(),
            recovery: None,
            recovered: None,
            lost_disk: false,
            prepare_ok_op: alloc::vec![0; n],
            prepare_ok_commit: alloc::vec![0; n],
            prepare_ok_heard_at: alloc::vec![now; n],
            requests_in_progress: crate::id_hash::ClientIdMap::default(),
            request_queue: VecDeque::new(),
            unsent_from: 0,
            batch_bytes: 0,
            lease_acked_ns: alloc::vec![0; n],
            view_start_op: 0,
            lease_promise_until: Instant::ZERO,
            primary_timestamp_ns: 0,
            parked_reads: VecDeque::new(),
            full_commit_min: 0,
            start_view_change_from: ReplicaSet::default(),
            do_view_change_from: alloc::vec![None; n],
            do_view_change_sent: None,
            do_view_change_view_max: 0,
            start_view_suffix_from: 0,
            primary_heard_at: now,
            sync: None,
            persist: durability::PersistState::default(),
            timers: Timers::default(),
            outbox: VecDeque::new(),
            stats: Stats::default(),
            config,
        })
    }

    // ---- Getters ----

    /// This replica's index.
    pub fn replica(&self) -> ReplicaIndex {
        self.replica
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The current view-number.
    pub fn view(&self) -> u64 {
        self.view
    }
    /// The latest view in which this replica's status was normal.
    pub fn last_normal_view(&self) -> u64 {
        self.last_normal_view
    }
    /// The current status.
    pub fn status(&self) -> Status {
        self.status
    }
    /// The op-number of the latest entry in the log.
    pub fn op_number(&self) -> u64 {
        self.op_number
    }
    /// The op-number of the latest operation committed and executed here.
    pub fn commit_number(&self) -> u64 {
        self.commit_number
    }
    /// Whether this replica is the primary of its view in normal status.
    pub fn is_primary(&self) -> bool {
        self.status == Status::Normal && self.primary_index() == self.replica
    }
    /// The primary of the current view.
    pub fn primary_index(&self) -> ReplicaIndex {
        self.config.primary_index(self.view)
    }
    /// Whether this replica is a witness (§6): it keeps the log and votes,
    /// but never executes the service and is never primary.
    pub fn is_witness(&self) -> bool {
        self.config.is_witness(self.replica)
    }
    /// The op-number up to which every full replica has executed, as far as
    /// this replica knows (see [`Prepare::full_commit_min`](crate::message::Prepare::full_commit_min)).
    pub fn full_commit_min(&self) -> u64 {
        self.full_commit_min
    }
    /// The log held: op-numbers `log_base() + 1 ..= op_number()`. Entries up
    /// to `log_base()` were dropped after a checkpoint.
    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }
    /// The op-number before the first entry of [`Replica::log`].
    pub fn log_base(&self) -> u64 {
        self.log_base
    }
    /// The latest checkpoint's summary (§5.1).
    pub fn checkpoint(&self) -> &CheckpointSummary {
        &self.checkpoint.summary
    }
    /// Bytes of page data the latest checkpoint holds.
    pub fn checkpoint_size_bytes(&self) -> usize {
        self.checkpoint.size_bytes()
    }
    /// This replica's incarnation: how many times it recovered, as far as
    /// the cluster knows (§4.3).
    pub fn incarnation(&self) -> u64 {
        self.crash_vector[usize::from(self.replica)]
    }
    /// The crash vector: per replica, the latest incarnation known.
    pub fn crash_vector(&self) -> &[u64] {
        &self.crash_vector
    }
    /// The client table.
    pub fn client_table(&self) -> &ClientTable {
        &self.client_table
    }
    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    // ---- Inputs ----

    /// Handles one message from a replica or a client, sent in epoch
    /// `epoch` (the frame header's, [`crate::codec::decode_in_epoch`]).
    /// Messages that do not apply in the current state are counted and
    /// dropped; none panics. A message of an older epoch is answered with
    /// [`Message::StartEpoch`], one of a newer epoch is dropped until a
    /// StartEpoch arrives (§7.3).
    pub fn handle_message(&mut self, now: Instant, epoch: u32, message: Message) {
        self.now = now;
        if !message.numbers_in_range() {
            // No replica sends such numbers (see `NUMBER_MAX`): a crafted
            // frame, dropped before anything can overflow on them.
            self.stats.messages_invalid += 1;
            return;
        }
        match message {
            Message::StartEpoch(m) => self.on_start_epoch(now, m),
            Message::EpochStarted(m) => self.on_epoch_started(m),
            Message::GetState(_)
            | Message::GetCheckpointTree(_)
            | Message::GetCheckpointPages(_)
                if self.status == Status::Retired
                    && epoch == self.epoch
                    && self.epoch_state.start_op <= self.commit_number =>
            {
                self.serve_as_retired(now, message)
            }
            _ if epoch < self.epoch => self.on_older_epoch_message(epoch, message),
            _ if epoch > self.epoch => self.stats.messages_newer_epoch += 1,
            _ => match self.status {
                Status::Recovering => self.handle_message_recovering(now, message),
                Status::Transitioning => self.handle_message_transitioning(now, message),
                Status::Retired => self.stats.messages_stale_view += 1,
                Status::Normal | Status::ViewChange => self.dispatch(now, message),
            },
        }
        self.apply_pending_epoch(now);
        self.issue_persist();
    }

    fn dispatch(&mut self, now: Instant, message: Message) {
        match message {
            Message::Request(m) => self.on_request(now, m),
            Message::Prepare(m) => self.on_prepare(now, m),
            Message::PrepareOk(m) => self.on_prepare_ok(now, m),
            Message::Commit(m) => self.on_commit(now, m),
            Message::StartViewChange(m) => self.on_start_view_change(now, m),
            Message::DoViewChange(m) => self.on_do_view_change(now, m),
            Message::StartView(m) => self.on_start_view(now, m),
            Message::GetState(m) => self.on_get_state(now, m),
            Message::NewState(m) => self.on_new_state(now, m),
            Message::Recovery(m) => self.on_recovery(now, m),
            Message::RecoveryResponse(_) => self.stats.messages_stale_view += 1,
            Message::GetCheckpointTree(m) => self.on_get_checkpoint_tree(now, m),
            Message::CheckpointTree(m) => self.on_checkpoint_tree(now, m),
            Message::GetCheckpointPages(m) => self.on_get_checkpoint_pages(now, m),
            Message::CheckpointPages(m) => self.on_checkpoint_pages(now, m),
            Message::ReadRequest(m) => self.on_read_request(m),
            Message::Reconfiguration(m) => self.on_reconfiguration(now, m),
            // Replies travel to clients only; the epoch messages were
            // handled before.
            Message::Reply(_) | Message::StartEpoch(_) | Message::EpochStarted(_) => {
                self.stats.messages_invalid += 1
            }
        }
    }

    /// While recovering, only recovery and state transfer go on (§4.3: "the
    /// replica does not participate in request processing or view changes").
    fn handle_message_recovering(&mut self, now: Instant, message: Message) {
        match message {
            Message::Recovery(m) => self.on_recovery(now, m),
            Message::RecoveryResponse(m) => self.on_recovery_response(now, m),
            Message::NewState(m) => self.on_new_state(now, m),
            Message::CheckpointTree(m) => self.on_checkpoint_tree(now, m),
            Message::CheckpointPages(m) => self.on_checkpoint_pages(now, m),
            _ => self.stats.messages_ignored_recovering += 1,
        }
    }

    /// Fires every timer whose deadline is at or before `now`, the batch
    /// timer first (see [`Replica`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.timers.batch.is_some_and(|t| t <= now) {
            self.flush_batch();
        }
        if self.timers.heartbeat.is_some_and(|t| t <= now) {
            self.on_heartbeat_timeout(now);
        }
        if self.timers.prepare.is_some_and(|t| t <= now) {
            self.on_prepare_timeout(now);
        }
        if self.timers.view_change_resend.is_some_and(|t| t <= now) {
            self.on_view_change_resend_timeout(now);
        }
        if self.timers.repair.is_some_and(|t| t <= now) {
            self.on_repair_timeout(now);
        }
        if self.timers.view_change.is_some_and(|t| t <= now) {
            if self.status == Status::Transitioning {
                self.timers.view_change = None;
                self.on_transition_timeout(now);
            } else {
                self.on_view_change_timeout(now);
            }
        }
        if self.timers.epoch.is_some_and(|t| t <= now) {
            self.on_epoch_timeout(now);
        }
        self.apply_pending_epoch(now);
        self.issue_persist();
    }

    // ---- Outputs ----

    /// The next output to carry out; [`Output::Timeout`] once there is
    /// none. A pure drain: it changes no protocol state.
    pub fn poll_output(&mut self) -> Output {
        match self.outbox.pop_front() {
            Some(output) => {
                debug_assert!(
                    !matches!(output, Output::Timeout(_)),
                    "the outbox holds no Timeout"
                );
                output
            }
            None => Output::Timeout(self.poll_timeout()),
        }
    }

    /// When [`Replica::handle_timeout`] must next be called (a getter; the
    /// same instant [`Output::Timeout`] carries).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = &self.timers;
        [
            t.heartbeat,
            t.prepare,
            t.view_change,
            t.view_change_resend,
            t.repair,
            t.batch,
            t.epoch,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- Helpers shared by the phases ----

    fn send(&mut self, replica: ReplicaIndex, message: Message) {
        if let Some(member) = self.epoch_state.reply_to {
            // A replica that left answering a member of the new epoch.
            self.send_member(member, message);
            return;
        }
        debug_assert!(replica != self.replica, "a replica does not message itself");
        let member = self.config.member_id(replica);
        self.send_member(member, message);
    }

    /// Sends to a member by id, in this replica's epoch.
    fn send_member(&mut self, member: MemberId, message: Message) {
        if self.holds_for_disk(&message) {
            // Sent again once its view is on disk (`handle_persisted`).
            return;
        }
        self.outbox.push_back(Output::Send {
            to: member,
            epoch: self.epoch,
            message,
        });
    }

    fn send_to_others(&mut self, message: Message) {
        let me = self.replica;
        let mut others = self.config.replica_indexes().filter(move |&r| r != me);
        let Some(mut next) = others.next() else {
            return;
        };
        // Clone for all but the last destination, which takes the message
        // itself: a batched Prepare's entries are copied once fewer.
        for replica in others {
            self.send_member(self.config.member_id(next), message.clone());
            next = replica;
        }
        self.send_member(self.config.member_id(next), message);
    }

    fn is_primary_of(&self, view: u64) -> bool {
        self.config.primary_index(view) == self.replica
    }

    fn entry(&self, op_number: u64) -> &LogEntry {
        debug_assert!(op_number > self.log_base && op_number <= self.op_number);
        &self.log[(op_number - self.log_base - 1) as usize]
    }

    /// The entries after op `after` (at least `log_base`).
    fn log_after(&self, after: u64) -> &[LogEntry] {
        debug_assert!(after >= self.log_base);
        let from = (after.saturating_sub(self.log_base) as usize).min(self.log.len());
        &self.log[from..]
    }

    /// Takes the entries after op `keep` (at least `log_base`) out of the
    /// log, to be replaced (a view change's new log, §4.2); hand them to
    /// [`Replica::note_log_replaced`] once the new entries are in.
    fn take_log_after(&mut self, keep: u64) -> Vec<LogEntry> {
        debug_assert!(keep >= self.log_base);
        let at = (keep.saturating_sub(self.log_base) as usize).min(self.log.len());
        self.log.split_off(at)
    }

    /// The entries `old` after op `keep` were replaced by the log's
    /// entries after it now. With durability, the disk's log is cut only
    /// where the new log departs from the old: `keep` is a commit-number,
    /// a lower bound of what is committed (after a restart from disk, the
    /// disk's), so the entries after it may be committed ops this replica
    /// acknowledged, which the new log holds again. Cutting them from the
    /// disk before their copies are durable again (the glue makes a
    /// truncation durable at once) would leave a disk without an op it
    /// acknowledged until the next sync: a power loss then loses a
    /// committed op (vr-sim seed 772: a one-replica cluster restarted from
    /// disk lost ops 17–22 on its next crash).
    fn note_log_replaced(&mut self, keep: u64, old: &[LogEntry]) {
        let new = self.log_after(keep);
        let same = old.iter().zip(new).take_while(|(a, b)| a == b).count();
        if same < old.len() {
            self.note_log_cut(keep + same as u64);
        }
    }

    /// Drops the entries after op `keep` (at least `log_base`).
    fn truncate_log(&mut self, keep: u64) {
        debug_assert!(keep >= self.log_base);
        if keep < self.op_number {
            self.note_log_cut(keep);
        }
        self.log
            .truncate(keep.saturating_sub(self.log_base) as usize);
    }

    /// Appends `entries` (ascending and contiguous) to the log, skipping
    /// those at or below its end: they are committed here (a checkpoint may
    /// have dropped them below `log_base`), so the same in every view.
    fn extend_log(&mut self, entries: impl IntoIterator<Item = LogEntry>) {
        for entry in entries {
            let end = self.log_base + self.log.len() as u64;
            if entry.op_number == end + 1 {
                self.log.push(entry);
            } else {
                debug_assert!(
                    entry.op_number <= end.min(self.commit_number.max(self.log_base)),
                    "an entry skipped is committed here, and none is missing"
                );
            }
        }
    }

    /// Entries `after + 1 ..= until`, cut short so that a message carrying
    /// them stays under `budget_bytes`.
    fn log_slice_bounded(&self, after: u64, until: u64, budget_bytes: usize) -> Vec<LogEntry> {
        let mut out = Vec::new();
        let mut size = 0usize;
        let mut op = after.max(self.log_base) + 1;
        while op <= until {
            let entry = self.entry(op);
            size += entry.encoded_size();
            if size > budget_bytes {
                break;
            }
            out.push(entry.clone());
            op += 1;
        }
        out
    }

    /// The bytes a log suffix may take in a message with a small fixed part.
    fn log_budget_bytes(&self) -> usize {
        (self.config.message_size_max as usize).saturating_sub(crate::codec::HEADER_SIZE + 64)
    }

    fn jitter_ns(&mut self) -> u64 {
        self.prng.below(self.config.timeout_jitter_ns)
    }

    /// Arms the timers of normal status for the replica's role.
    fn enter_normal_timers(&mut self, now: Instant) {
        self.timers = Timers {
            epoch: self.timers.epoch,
            ..Timers::default()
        };
        // Whatever the log holds now was sent (StartView) or received.
        self.unsent_from = self.op_number;
        self.batch_bytes = 0;
        if self.is_primary_of(self.view) {
            self.note_reconfiguration_in_log();
            self.prepare_ok_heard_at.iter_mut().for_each(|t| *t = now);
            self.timers.heartbeat = Some(now + self.config.heartbeat_interval_ns);
            if self.op_number > self.commit_number {
                self.timers.prepare = Some(now + self.config.prepare_timeout_ns);
            }
        } else {
            self.primary_heard_at = now;
            self.arm_view_change_timer(now);
        }
    }

    fn arm_view_change_timer(&mut self, now: Instant) {
        let jitter = self.jitter_ns();
        self.timers.view_change = Some(now + self.config.view_change_timeout_ns + jitter);
    }

    /// Executes committed ops this replica holds, up to `commit`, in order,
    /// exactly once each (§4.1 steps 5 and 7).
    fn commit_to(&mut self, commit: u64) {
        self.commit_max = self.commit_max.max(commit);
        let target = commit.min(self.op_number);
        if self.is_witness() {
            // A witness holds no state: committing is only knowing.
            self.commit_number = self.commit_number.max(target);
            self.trim_witness_log();
            return;
        }
        while self.commit_number < target {
            let op_number = self.commit_number + 1;
            self.execute(op_number);
            self.commit_number = op_number;
            if op_number.is_multiple_of(self.config.checkpoint_interval_ops) {
                self.take_checkpoint(op_number);
            }
        }
        if !self.parked_reads.is_empty() {
            self.answer_parked_reads();
        }
    }

    /// Learns that every full replica executed the ops up to `op_number`.
    fn note_full_commit_min(&mut self, op_number: u64) {
        if op_number > self.full_commit_min {
            self.full_commit_min = op_number;
            if self.is_witness() {
                self.trim_witness_log();
            }
        }
    }

    /// A witness drops the log up to the point every full replica executed
    /// (and it knows committed). Below it, the ops live in every full
    /// replica's state; above it, a witness's log may be the only copy
    /// left besides the primary's, so it keeps it (§6, witnesses).
    fn trim_witness_log(&mut self) {
        let new_base = self.full_commit_min.min(self.commit_number);
        // Dropping from the front of the log moves what follows: drop in
        // runs of at least half the log (or 64 entries), so each entry is
        // moved a bounded number of times, not once per Prepare.
        let droppable = new_base.saturating_sub(self.log_base);
        if droppable < 64.max(self.log.len() as u64 / 2) {
            return;
        }
        self.log.drain(..(droppable as usize).min(self.log.len()));
        self.log_base = new_base;
    }

    /// Whether this witness may drop (or never hold) the ops up to
    /// `op_number` to catch up: if every full replica executed them, they
    /// live in every full replica's state; a recovering witness holds
    /// nothing anyway, and its earlier incarnation's acknowledgements are
    /// fenced by crash vectors. Otherwise it waits: a witness that dropped
    /// ops it acknowledged would leave fewer copies of a committed op than
    /// the quorum that committed it (§6, witnesses).
    fn witness_may_skip_to(&mut self, op_number: u64) -> bool {
        if self.status == Status::Recovering || op_number <= self.full_commit_min {
            return true;
        }
        self.stats.witness_skips_deferred += 1;
        false
    }

    /// A witness behind every full replica's log jumps its log to start at
    /// `op_number`: every full replica executed the ops up to there, so a
    /// witness need not hold them (and has no state to bring along).
    fn witness_skip_to(&mut self, op_number: u64) {
        debug_assert!(self.is_witness() && op_number > self.commit_number);
        self.log.clear();
        self.log_base = op_number;
        self.op_number = op_number;
        self.commit_number = op_number;
        self.commit_max = self.commit_max.max(op_number);
        self.stats.witness_log_skips += 1;
    }

    /// A recovering client's query (§4.3, "client recovery"), executed in
    /// log order: it fences the client's earlier incarnations by recording
    /// the first request-number of a new block
    /// ([`crate::client_table::recovery_fence`]) as the client's latest, so
    /// that every request they sent, even one still in flight, is stale
    /// from here on; the client continues above the fence. The paper's
    /// "two above the latest" assumes at most one old request in flight,
    /// which a client that times out and moves on breaks.
    ///
    /// The query's op is the client's recovery nonce: a retried query of
    /// the same recovery (the log may hold it twice) is answered with the
    /// same fence rather than moving it again past the numbers the client
    /// has begun to use. The result is the fence (`u64` LE) followed by
    /// the nonce, empty when the client's numbers are exhausted.
    fn execute_client_recovery(&mut self, op_number: u64) {
        let entry = &self.log[(op_number - self.log_base - 1) as usize];
        let client_id = entry.client_id;
        let nonce = &entry.op;
        let answer = |fence: u64| {
            let mut result = fence.to_le_bytes().to_vec();
            result.extend_from_slice(nonce);
            result
        };
        let latest = self.client_table.get(client_id);
        let result = match latest {
            // The same recovery, asked again: the same fence.
            Some(latest) if latest.result == answer(latest.request_number) => latest.result.clone(),
            _ => {
                match crate::client_table::recovery_fence(latest.map_or(0, |e| e.request_number)) {
                    Some(fence) => {
                        let result = answer(fence);
                        self.client_table
                            .record(client_id, fence, op_number, result.clone());
                        result
                    }
                    None => Vec::new(),
                }
            }
        };
        if self.is_primary() {
            self.outbox.push_back(Output::Reply(Reply {
                view: self.view,
                client_id,
                request_number: 0,
                op_number,
                result,
            }));
        }
    }

    fn execute(&mut self, op_number: u64) {
        let entry = &self.log[(op_number - self.log_base - 1) as usize];
        if entry.kind == EntryKind::Reconfiguration {
            self.execute_reconfiguration(op_number);
            return;
        }
        let (client_id, request_number) = (entry.client_id, entry.request_number);
        // The table is the same on every replica (it changes only here, in
        // op order), so skipping a duplicate is itself deterministic.
        let lookup = if request_number == 0 {
            self.execute_client_recovery(op_number);
            return;
        } else {
            self.client_table.lookup(client_id, request_number)
        };
        let reply = match lookup {
            crate::client_table::Lookup::New => {
                let result = self.service.execute(op_number, &entry.op);
                self.stats.ops_executed += 1;
                // Only the primary replies: backups move the result into
                // the table, the primary keeps a copy for the Reply.
                let reply = self.is_primary().then(|| result.clone());
                self.client_table
                    .record(client_id, request_number, op_number, result);
                reply
            }
            _ => {
                self.stats.requests_deduplicated += 1;
                None
            }
        };
        // One search of the map for both the test and the removal.
        if let hashbrown::hash_map::Entry::Occupied(in_progress) =
            self.requests_in_progress.entry(client_id)
        {
            if *in_progress.get() <= request_number {
                in_progress.remove();
            }
        }
        if let Some(result) = reply {
            self.outbox.push_back(Output::Reply(Reply {
                view: self.view,
                client_id,
                request_number,
                op_number,
                result,
            }));
        }
    }
}
