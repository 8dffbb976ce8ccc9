//! Cluster configuration: the parameters every replica and client of one
//! cluster must agree on, plus the tunables of timers and bounds.

use alloc::vec::Vec;

/// Why a [`Config`] was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `replica_count` must be at least 1.
    NoReplicas,
    /// The replica index is not in `0..replica_count`.
    ReplicaIndexOutOfRange,
    /// A timeout or interval is zero, the primary-silence timeout is not
    /// longer than the heartbeat interval (backups would suspect a healthy
    /// primary between two heartbeats), or the clock drift bound is not
    /// shorter than the lease.
    BadTimeouts,
    /// `prepare_window_max` and `batch_ops_max` must be at least 1.
    ZeroWindow,
    /// `message_size_max` cannot hold a Prepare of one `op_size_max`
    /// operation, or `op_size_max` is 2³¹ or more (the wire's limit).
    MessageTooSmall,
    /// `checkpoint_interval_ops` and `client_table_max` must be at least 1.
    ZeroCheckpointInterval,
    /// `witnesses` names a replica twice or out of range, or leaves fewer
    /// full replicas than a quorum (f + 1 of 2f + 1), or
    /// `witness_log_ops_max` is zero.
    BadWitnesses,
    /// `members` is neither empty nor one distinct id per replica.
    BadMembers,
    /// [`crate::Replica::restart`]: the configuration is not durable or not
    /// of the state's epoch, or the checkpoint or log read from disk does
    /// not fit together.
    BadDurableState,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let text = match self {
            ConfigError::NoReplicas => "replica_count must be at least 1",
            ConfigError::ReplicaIndexOutOfRange => "replica index out of range",
            ConfigError::BadTimeouts => {
                "timeouts must be non-zero and view_change_timeout_ns > heartbeat_interval_ns"
            }
            ConfigError::ZeroWindow => "prepare_window_max and batch_ops_max must be at least 1",
            ConfigError::MessageTooSmall => "message_size_max cannot hold one maximal Prepare",
            ConfigError::ZeroCheckpointInterval => {
                "checkpoint_interval_ops and client_table_max must be at least 1"
            }
            ConfigError::BadWitnesses => {
                "witnesses must be distinct replica indexes leaving at least a quorum of full replicas"
            }
            ConfigError::BadMembers => "members must be empty or one distinct id per replica",
            ConfigError::BadDurableState => {
                "the durable state does not fit the configuration, or is inconsistent"
            }
        };
        f.write_str(text)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

/// The configuration of one cluster (paper §4: "configuration"). Replicas are
/// identified by their index `0..replica_count` in the sorted list of
/// addresses, which the embedding keeps; the core never sees addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Config {
    /// Identifies the cluster on the wire; frames of other clusters are rejected.
    pub cluster: u64,
    /// `n = 2f + 1` replicas (an even `n` works too: quorums are majorities).
    pub replica_count: u8,
    /// Seed of every replica's PRNG (mixed with the replica index), used for
    /// timer jitter. Same seed, same behaviour.
    pub seed: u64,
    /// Pipelining: how many prepared but uncommitted operations the primary
    /// keeps in flight. Further requests wait in a bounded queue.
    pub prepare_window_max: u32,
    /// Requests the primary queues while its window is full; more are dropped
    /// (the client retries).
    pub request_queue_max: u32,
    /// Largest operation (request body) accepted, in bytes.
    pub op_size_max: u32,
    /// Largest frame, header included, that a replica sends; receivers reject
    /// larger ones. Log suffixes in StartView and NewState are cut to fit.
    pub message_size_max: u32,
    /// An idle primary sends `Commit` this often (§4.1: heartbeats).
    pub heartbeat_interval_ns: u64,
    /// The primary resends unacknowledged Prepares this often.
    pub prepare_timeout_ns: u64,
    /// A backup that hears nothing from the primary for this long starts a
    /// view change; a view change that does not finish within it moves on to
    /// the next view (§4.2).
    pub view_change_timeout_ns: u64,
    /// A random extra delay in `0..timeout_jitter_ns` added to each view-change
    /// timeout, so that replicas do not start competing view changes in lockstep.
    pub timeout_jitter_ns: u64,
    /// StartViewChange, DoViewChange and GetState are resent this often until
    /// they have their effect.
    pub resend_interval_ns: u64,
    /// A replica takes a checkpoint (§5.1) every this many committed ops and
    /// drops the log before it, but for `log_tail_ops`.
    pub checkpoint_interval_ops: u64,
    /// Log entries kept below the latest checkpoint, so that a peer lagging
    /// by fewer ops catches up from the log instead of by checkpoint
    /// transfer. The log holds at most `log_tail_ops +
    /// checkpoint_interval_ops + prepare_window_max` entries.
    pub log_tail_ops: u64,
    /// Clients the client table remembers; past it, the client idle longest
    /// is forgotten (the same one on every replica).
    pub client_table_max: u32,
    /// Batching (§6): the most requests one Prepare carries. `1` switches
    /// batching off.
    pub batch_ops_max: u32,
    /// Batching: the most bytes of entries one Prepare carries (also cut to
    /// fit `message_size_max`).
    pub batch_bytes_max: u32,
    /// Batching: how long the primary may hold a batch that is not full: the
    /// first request of a batch arms the batch timer this far ahead. `0`
    /// (the default) makes it due at once: the batch leaves when the
    /// embedding fires its due timers after feeding the inputs ready now,
    /// so a lone request is never delayed and requests that arrive together
    /// (one socket read) share a Prepare (see [`crate::Replica`]).
    pub batch_delay_ns: u64,
    /// Leased reads at the primary (§6): how long a backup promises, after
    /// hearing from the primary, not to start or join a view change, and so
    /// how long the primary may answer read-only operations from its own
    /// state. `0` switches leases off: every operation goes through the log.
    pub lease_duration_ns: u64,
    /// Leased reads: the most by which two replicas' clocks may disagree in
    /// measuring one `lease_duration_ns`. The primary's lease is shortened by
    /// it. Loosely synchronized clock *rates* are an assumption of leases:
    /// with drift beyond this bound a deposed primary can serve a stale read.
    pub clock_drift_max_ns: u64,
    /// Reads at backups (§6): how many reads a replica parks while it has
    /// not yet executed up to the client's op-number. `0` switches backup
    /// reads off (read requests are dropped).
    pub backup_reads_max: u32,
    /// Witnesses (§6): the indexes of replicas that keep the log and vote in
    /// view changes and recoveries but never execute the service and never
    /// become primary. At most `replica_count - quorum()`: with f + 1 full
    /// replicas and f witnesses the cluster tolerates f failures. Empty (the
    /// default): every replica is full.
    pub witnesses: Vec<crate::ReplicaIndex>,
    /// Witness clusters: the most ops the primary lets the log run ahead
    /// of the slowest full replica's commit-number. Every replica keeps its
    /// log back to that point (a witness's log is the only other copy of
    /// those ops), so while a full replica is down the logs grow up to this
    /// bound; past it the primary queues and then drops new requests until
    /// the full replica is back (or replaced by reconfiguration).
    pub witness_log_ops_max: u64,
    /// Reconfiguration (§7): the member id of each replica of this epoch,
    /// in index order: the names an embedding maps to addresses, stable
    /// across epochs ([`crate::Output::Send`] names its destination by
    /// them). Empty (the default): replica `i` is member `i`.
    pub members: Vec<crate::MemberId>,
    /// Reconfiguration (§7): the epoch this configuration belongs to, 0 for
    /// a cluster's first. A replica started with it ([`crate::Replica::recover`])
    /// starts in this epoch.
    pub epoch: u32,
    /// Where a replica's promises live: in memory only (the default; a
    /// replica that restarts recovers from its peers, §4.3), or on its
    /// disk, through the embedding ([`crate::Output::Persist`]): a backup
    /// acknowledges only what its disk holds, and a replica promises a
    /// view only once it is on disk (see `docs/protocol.md`, "Durable
    /// replicas").
    pub durability: Durability,
    /// Test-only: a deliberate protocol bug, for showing that a checker
    /// catches it. `None` in every real configuration.
    #[cfg(feature = "bug-injection")]
    pub injected_bug: Option<InjectedBug>,
}

/// Where a replica keeps what it promised ([`Config::durability`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Durability {
    /// Memory only: a restarted replica has lost everything and runs the
    /// recovery protocol with crash vectors (§4.3). Safe while at most f
    /// replicas are down or recovering at once.
    #[default]
    Memory,
    /// On disk: every log entry a replica acknowledges, and every view it
    /// promises, is persisted first ([`crate::Output::Persist`], answered
    /// with [`crate::Replica::handle_persisted`]); a replica whose disk
    /// survived restarts from it ([`crate::Replica::restart`]). A committed
    /// op is then on a quorum of disks, and survives every replica failing
    /// at once.
    Disk,
}

/// Deliberate protocol bugs, for tests of checkers; they can be switched on
/// only with the feature `bug-injection`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum InjectedBug {
    /// The primary commits an operation as soon as it is in its own log,
    /// without waiting for a quorum of PrepareOks (breaks §4.1 step 5).
    CommitWithoutQuorum,
    /// The new primary adopts the DoViewChange log with the largest
    /// op-number, ignoring last-normal-view (breaks §4.2 step 3).
    ChooseLogByOpNumberOnly,
    /// Recovery as the paper has it, without crash vectors: messages a
    /// replica sent before it crashed still count after it recovered (the
    /// flaw of §4.3 shown by Michael et al., DISC 2017).
    RecoveryWithoutCrashVectors,
    /// State transfer as the paper has it: a replica that learns of a newer
    /// view truncates its log to its commit-number in place and takes the
    /// new view as its last normal view before the fetched log arrives (the
    /// §5.2 flaw found by Vanlightly's TLA+ model).
    TruncateLogOnNewView,
    /// A backup answers a read at once, without waiting until it has
    /// executed up to the client's op-number (breaks §6, reads at backups).
    BackupReadBeforeExecuting,
    /// Durable replicas: a backup acknowledges a Prepare before its
    /// entry is persisted (breaks "nothing is acknowledged that is not on
    /// disk").
    AckBeforePersist,
}

impl Config {
    /// A configuration with defaults suited to a LAN: 10 ms heartbeats, a
    /// 100 ms primary-silence timeout with up to 50 ms jitter, a window of
    /// 256 prepares, 1 MiB frames, a checkpoint every 4096 ops with a log
    /// tail of 1024, 8192 clients remembered, batches of up to 64 requests
    /// without added delay, backup reads on, leases off, and no witnesses.
    pub fn new(cluster: u64, replica_count: u8) -> Config {
        Config {
            cluster,
            replica_count,
            seed: 0,
            prepare_window_max: 256,
            request_queue_max: 4096,
            op_size_max: 64 * 1024,
            message_size_max: 1024 * 1024,
            heartbeat_interval_ns: 10_000_000,
            prepare_timeout_ns: 20_000_000,
            view_change_timeout_ns: 100_000_000,
            timeout_jitter_ns: 50_000_000,
            resend_interval_ns: 20_000_000,
            checkpoint_interval_ops: 4096,
            log_tail_ops: 1024,
            client_table_max: 8192,
            batch_ops_max: 64,
            batch_bytes_max: 256 * 1024,
            batch_delay_ns: 0,
            lease_duration_ns: 0,
            clock_drift_max_ns: 0,
            backup_reads_max: 1024,
            witnesses: Vec::new(),
            witness_log_ops_max: 1 << 20,
            members: Vec::new(),
            epoch: 0,
            durability: Durability::Memory,
            #[cfg(feature = "bug-injection")]
            injected_bug: None,
        }
    }

    /// Checks the configuration for values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replica_count == 0 {
            return Err(ConfigError::NoReplicas);
        }
        if self.heartbeat_interval_ns == 0
            || self.prepare_timeout_ns == 0
            || self.resend_interval_ns == 0
            || self.view_change_timeout_ns <= self.heartbeat_interval_ns
        {
            return Err(ConfigError::BadTimeouts);
        }
        if self.prepare_window_max == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        if self.checkpoint_interval_ops == 0 || self.client_table_max == 0 {
            return Err(ConfigError::ZeroCheckpointInterval);
        }
        if self.batch_ops_max == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        if self.lease_duration_ns != 0 && self.clock_drift_max_ns >= self.lease_duration_ns {
            return Err(ConfigError::BadTimeouts);
        }
        let mut witnesses = self.witnesses.clone();
        witnesses.sort_unstable();
        witnesses.dedup();
        if witnesses.len() != self.witnesses.len()
            || witnesses.iter().any(|&w| w.0 >= self.replica_count)
            || usize::from(self.replica_count) - witnesses.len() < self.quorum()
            || self.witness_log_ops_max == 0
        {
            return Err(ConfigError::BadWitnesses);
        }
        if !self.members.is_empty() {
            let mut members = self.members.clone();
            members.sort_unstable();
            members.dedup();
            if members.len() != self.members.len()
                || self.members.len() != usize::from(self.replica_count)
            {
                return Err(ConfigError::BadMembers);
            }
        }
        let prepare_max = crate::codec::HEADER_SIZE
            + 8 // commit_number
            + crate::codec::LOG_ENTRY_FIXED_SIZE
            + self.op_size_max as usize
            + 64; // slack for fields a later version adds
        if (self.message_size_max as usize) < prepare_max || self.op_size_max >= 1 << 31 {
            return Err(ConfigError::MessageTooSmall);
        }
        Ok(())
    }

    /// The number of replicas that form a quorum: a majority, `f + 1` for `n = 2f + 1`.
    pub fn quorum(&self) -> usize {
        usize::from(self.replica_count) / 2 + 1
    }

    /// Whether the test-only bug `bug` is switched on.
    pub(crate) fn has_bug(&self, bug: InjectedBug) -> bool {
        #[cfg(feature = "bug-injection")]
        let on = self.injected_bug == Some(bug);
        #[cfg(not(feature = "bug-injection"))]
        let on = {
            let _ = bug;
            false
        };
        on
    }

    /// The primary of `view`: `view mod n` (§4, no voting), counting full
    /// replicas only: a witness is never primary, and with at most f
    /// replicas down some full replica is up, so views keep rotating onto
    /// one that can serve.
    pub fn primary_index(&self, view: u64) -> crate::ReplicaIndex {
        primary_of(view, self.replica_count, &self.witnesses)
    }

    /// Whether `replica` is a witness (§6).
    pub fn is_witness(&self, replica: crate::ReplicaIndex) -> bool {
        self.witnesses.contains(&replica)
    }

    /// Whether some replicas are witnesses.
    pub fn has_witnesses(&self) -> bool {
        !self.witnesses.is_empty()
    }

    /// The member id of replica `index` (§7): the one conversion from an
    /// index to a member, so that the compiler catches the other way.
    /// Without [`Config::members`] member `i` is replica `i`.
    pub fn member_id(&self, index: crate::ReplicaIndex) -> crate::MemberId {
        self.members
            .get(index.as_usize())
            .copied()
            .unwrap_or(crate::MemberId(index.0))
    }

    /// The index of member `member` in this epoch, if it is one: the one
    /// conversion from a member to an index.
    pub fn index_of_member(&self, member: crate::MemberId) -> Option<crate::ReplicaIndex> {
        if self.members.is_empty() {
            return (member.0 < self.replica_count).then_some(crate::ReplicaIndex(member.0));
        }
        let position = self.members.iter().position(|&m| m == member)?;
        // At most 255 members (`replica_count` is a u8): the position fits.
        u8::try_from(position).ok().map(crate::ReplicaIndex)
    }

    /// Every member id of this epoch, in index order.
    pub fn member_ids(&self) -> Vec<crate::MemberId> {
        self.replica_indexes().map(|i| self.member_id(i)).collect()
    }

    /// Whether `index` names a replica of this epoch (below `replica_count`).
    pub fn has_replica(&self, index: crate::ReplicaIndex) -> bool {
        index.0 < self.replica_count
    }

    /// Every replica index of this epoch: `0..replica_count`. The iterator
    /// borrows nothing, so a replica can mutate itself while it runs.
    pub fn replica_indexes(&self) -> impl Iterator<Item = crate::ReplicaIndex> + use<> {
        (0..self.replica_count).map(crate::ReplicaIndex)
    }

    /// The configuration of the epoch that a reconfiguration to `members`
    /// starts (§7): the same cluster and tunables, the new members, no
    /// witnesses (reconfiguration of clusters with witnesses is not
    /// supported). `None` if `members` cannot form a configuration.
    pub fn with_members(&self, members: &[crate::MemberId]) -> Option<Config> {
        let count = u8::try_from(members.len()).ok().filter(|&n| n > 0)?;
        let mut next = self.clone();
        next.replica_count = count;
        next.members = members.to_vec();
        next.epoch = self.epoch.checked_add(1)?;
        next.witnesses = Vec::new();
        next.validate().ok()?;
        Some(next)
    }
}

/// The primary of `view` in a cluster of `replica_count` replicas with
/// `witnesses`: the `view mod full`-th full replica (see
/// [`Config::primary_index`]). Shared with the client proxy.
pub(crate) fn primary_of(
    view: u64,
    replica_count: u8,
    witnesses: &[crate::ReplicaIndex],
) -> crate::ReplicaIndex {
    let full = u64::from(replica_count).saturating_sub(witnesses.len() as u64);
    if witnesses.is_empty() || full == 0 {
        // The remainder is below replica_count, a u8, so the cast cannot truncate.
        return crate::ReplicaIndex((view % u64::from(replica_count.max(1))) as u8);
    }
    let mut rank = view % full;
    for replica in (0..replica_count).map(crate::ReplicaIndex) {
        if !witnesses.contains(&replica) {
            if rank == 0 {
                return replica;
            }
            rank -= 1;
        }
    }
    // Unreachable for a valid configuration: there are `full` full replicas.
    crate::ReplicaIndex(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemberId, ReplicaIndex};

    #[test]
    fn quorum_is_a_majority() {
        // §4: f + 1 of 2f + 1; for even n a majority keeps quorums intersecting.
        let q = |n| Config::new(1, n).quorum();
        assert_eq!(q(1), 1);
        assert_eq!(q(2), 2);
        assert_eq!(q(3), 2);
        assert_eq!(q(4), 3);
        assert_eq!(q(5), 3);
    }

    #[test]
    fn primary_rotates_round_robin() {
        let config = Config::new(1, 3);
        let primaries: alloc::vec::Vec<_> = (0..6).map(|v| config.primary_index(v).0).collect();
        assert_eq!(primaries, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn validate_rejects_unworkable_values() {
        assert_eq!(Config::new(1, 3).validate(), Ok(()));
        assert_eq!(Config::new(1, 0).validate(), Err(ConfigError::NoReplicas));
        let mut c = Config::new(1, 3);
        c.view_change_timeout_ns = c.heartbeat_interval_ns;
        assert_eq!(c.validate(), Err(ConfigError::BadTimeouts));
        let mut c = Config::new(1, 3);
        c.prepare_window_max = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroWindow));
        let mut c = Config::new(1, 3);
        c.message_size_max = 100;
        assert_eq!(c.validate(), Err(ConfigError::MessageTooSmall));
    }

    #[test]
    fn witnesses_leave_a_quorum_of_full_replicas_and_are_never_primary() {
        // §6: f + 1 full replicas and at most f witnesses.
        let with = |n, w: &[u8]| {
            let mut c = Config::new(1, n);
            c.witnesses = w.iter().map(|&i| ReplicaIndex(i)).collect();
            c
        };
        assert_eq!(with(3, &[2]).validate(), Ok(()));
        assert_eq!(with(5, &[1, 3]).validate(), Ok(()));
        assert_eq!(with(3, &[1, 2]).validate(), Err(ConfigError::BadWitnesses));
        assert_eq!(with(5, &[1, 1]).validate(), Err(ConfigError::BadWitnesses));
        assert_eq!(with(3, &[3]).validate(), Err(ConfigError::BadWitnesses));
        let c = with(5, &[1, 3]);
        let primaries: alloc::vec::Vec<_> = (0..7).map(|v| c.primary_index(v).0).collect();
        assert_eq!(primaries, [0, 2, 4, 0, 2, 4, 0]);
        assert!(c.is_witness(ReplicaIndex(3)) && !c.is_witness(ReplicaIndex(2)));
    }

    #[test]
    fn member_ids_and_indexes_convert_only_through_the_configuration() {
        // §7: after a reconfiguration a replica's index (its place in the
        // epoch's sorted configuration) and its member id differ.
        let c = Config::new(1, 3);
        assert_eq!(c.member_id(ReplicaIndex(2)), MemberId(2));
        assert_eq!(c.index_of_member(MemberId(2)), Some(ReplicaIndex(2)));
        assert_eq!(c.index_of_member(MemberId(3)), None);
        let c = c
            .with_members(&[MemberId(0), MemberId(4), MemberId(7)])
            .unwrap();
        assert_eq!(c.member_id(ReplicaIndex(1)), MemberId(4));
        assert_eq!(c.member_id(ReplicaIndex(2)), MemberId(7));
        assert_eq!(c.index_of_member(MemberId(7)), Some(ReplicaIndex(2)));
        assert_eq!(c.index_of_member(MemberId(2)), None);
        assert!(c.has_replica(ReplicaIndex(2)) && !c.has_replica(ReplicaIndex(3)));
        assert_eq!(c.member_ids(), [MemberId(0), MemberId(4), MemberId(7)]);
    }
}
