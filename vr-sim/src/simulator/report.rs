//! What a run reports: counters, the verdicts, and the end of a run.

use super::*;

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
    /// The simulated sockets under the nodes.
    pub links: LinkCounters,
    /// The node layer's counters (`vr_core::node`), over every replica
    /// incarnation and client.
    pub node: NodeCounters,
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
    /// The most entries one Prepare carried (batches and resends).
    pub prepare_entries_max: u64,
    /// When every replica booted recovering: the time at which a quorum
    /// was first normal in one view (`None`: not a boot seed, or never).
    pub formed_ns: Option<u64>,
    /// Reconfigurations (§7) the plan asked for (0 or 1).
    pub reconfigurations_planned: u64,
    /// Reconfigurations the administrator's client saw complete.
    pub reconfigurations_completed: u64,
    /// The op-number of the completed reconfiguration (0: none).
    pub reconfiguration_op: u64,
    /// The latest epoch any replica entered.
    pub epoch_max: u32,
    /// Scripted primary crashes around a reconfiguration.
    pub scripted_primary_crashes: u64,
    /// Restarted replicas that learned, recovering, that a reconfiguration
    /// removed them (they retire, and are no longer counted as failed).
    pub retired_while_recovering: u64,
    /// Durable replicas: their disks.
    pub disk: DiskCounters,
}

/// What the disks of durable replicas did and suffered (issue 18).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// Persists written (each then synced and answered, unless a crash
    /// came first).
    pub persists_written: u64,
    /// Whole-cluster crashes.
    pub cluster_crashes: u64,
    /// Crashes, by what the disk lost of its unsynced writes.
    pub crashes_keep_all: u64,
    /// See `crashes_keep_all`.
    pub crashes_lose_all: u64,
    /// See `crashes_keep_all`.
    pub crashes_random_sectors: u64,
    /// See `crashes_keep_all`.
    pub crashes_torn_last: u64,
    /// Crashes that lost (some of) unsynced writes: there were some, and
    /// the mode was not `KeepAll`.
    pub crashes_losing_writes: u64,
    /// Disk faults injected, by kind.
    pub corrupt_sectors: u64,
    /// See `corrupt_sectors`.
    pub bit_rot: u64,
    /// See `corrupt_sectors`.
    pub misdirected_writes: u64,
    /// See `corrupt_sectors`.
    pub read_failures: u64,
    /// Restarts from an intact disk (`Replica::restart`).
    pub restarts_from_disk: u64,
    /// Restarts from a disk that was not intact, which recovered from
    /// their peers instead, by reason (`RecoverFromPeers`, or what went
    /// wrong opening the disk).
    pub repairs: BTreeMap<String, u64>,
    /// Recoveries from peers whose state then reached the disk (the
    /// recovery marker removed).
    pub recoveries_finished: u64,
    /// IO errors of the storage (the replica stopped and restarted).
    pub storage_errors: u64,
    /// Superblock writes to refresh a lagging commit-number
    /// (`Options::disk_commit_refresh`).
    pub commit_refreshes: u64,
}

impl DiskCounters {
    /// Restarts that recovered from peers, for any reason.
    pub fn repairs_total(&self) -> u64 {
        self.repairs.values().sum()
    }

    /// Disk faults injected, of every kind.
    pub fn faults_total(&self) -> u64 {
        self.corrupt_sectors + self.bit_rot + self.misdirected_writes + self.read_failures
    }

    /// Adds another run's counters.
    pub fn merge(&mut self, other: &DiskCounters) {
        self.persists_written += other.persists_written;
        self.cluster_crashes += other.cluster_crashes;
        self.crashes_keep_all += other.crashes_keep_all;
        self.crashes_lose_all += other.crashes_lose_all;
        self.crashes_random_sectors += other.crashes_random_sectors;
        self.crashes_torn_last += other.crashes_torn_last;
        self.crashes_losing_writes += other.crashes_losing_writes;
        self.corrupt_sectors += other.corrupt_sectors;
        self.bit_rot += other.bit_rot;
        self.misdirected_writes += other.misdirected_writes;
        self.read_failures += other.read_failures;
        self.restarts_from_disk += other.restarts_from_disk;
        for (why, count) in &other.repairs {
            *self.repairs.entry(why.clone()).or_default() += count;
        }
        self.recoveries_finished += other.recoveries_finished;
        self.storage_errors += other.storage_errors;
        self.commit_refreshes += other.commit_refreshes;
    }

    /// One line for reports.
    pub fn render(&self) -> String {
        let repairs: Vec<String> = self
            .repairs
            .iter()
            .map(|(why, c)| format!("{why} {c}"))
            .collect();
        format!(
            "{} persists written; {} whole-cluster crashes; crashes keep-all {}, lose-all {}, random-sectors {}, \
             torn-last {} ({} lost unsynced writes); faults: {} corrupt sectors, {} bit rot, {} misdirected writes, \
             {} read failures; {} restarts from disk, {} recoveries from peers [{}], {} finished on disk; \
             {} storage errors; {} commit-number refreshes",
            self.persists_written,
            self.cluster_crashes,
            self.crashes_keep_all,
            self.crashes_lose_all,
            self.crashes_random_sectors,
            self.crashes_torn_last,
            self.crashes_losing_writes,
            self.corrupt_sectors,
            self.bit_rot,
            self.misdirected_writes,
            self.read_failures,
            self.restarts_from_disk,
            self.repairs_total(),
            repairs.join(", "),
            self.recoveries_finished,
            self.storage_errors,
            self.commit_refreshes
        )
    }
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
    /// Durable replicas: persists completed (answered).
    pub persists_completed: u64,
    /// Durable replicas: restarts from disk, as the replicas count them.
    pub restarts_from_disk: u64,
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
        self.persists_completed += stats.persists_completed;
        self.restarts_from_disk += stats.restarts_from_disk;
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
        self.persists_completed += other.persists_completed;
        self.restarts_from_disk += other.restarts_from_disk;
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
    /// Every running replica at the end, by slot (member id).
    pub final_replicas: Vec<FinalReplica>,
}

/// A replica's state at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalReplica {
    /// Its member id (its slot in the simulator).
    pub member: u8,
    /// Its status.
    pub status: Status,
    /// Its epoch (§7).
    pub epoch: u32,
    /// The members of its epoch.
    pub epoch_members: Vec<u8>,
    /// Its view.
    pub view: u64,
    /// Its commit-number.
    pub commit_number: u64,
    /// Whether it may be shut down (`Replica::may_shut_down`).
    pub may_shut_down: bool,
    /// Whether the liveness phase left it isolated.
    pub isolated: bool,
}

impl SeedReport {
    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl Simulator {
    // ---- Results ----

    pub(super) fn violation(&mut self, kind: ViolationKind, detail: String) {
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
            if let Some(replica) = node.replica() {
                core.add(replica.stats());
            }
        }
        self.stats.core = core;
        let learned = self.stats.node.addresses_learned;
        let mut node = self.retired_links.clone();
        for slot in &self.replicas {
            if let Some(n) = &slot.node {
                node.add(&n.stats());
            }
        }
        for client in &self.clients {
            node.add_links(&client.node.stats());
        }
        if let Some(admin) = &self.admin {
            node.add_links(&admin.node.stats());
        }
        node.addresses_learned = learned;
        self.stats.node = node;
        self.stats.links = self.connections.counters.clone();
        self.stats.network = self.network.stats().clone();
        self.stats.events = self.trace.event_count();
        let final_replicas = self
            .replicas
            .iter()
            .enumerate()
            .filter_map(|(i, node)| {
                let r = node.replica()?;
                Some(FinalReplica {
                    member: i as u8,
                    status: r.status(),
                    epoch: r.epoch(),
                    epoch_members: r.epoch_members().iter().map(|m| m.0).collect(),
                    view: r.view(),
                    commit_number: r.commit_number(),
                    may_shut_down: r.may_shut_down(),
                    isolated: !self.healed.contains(&(i as u8)),
                })
            })
            .collect();
        SeedReport {
            final_replicas,
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

    pub(super) fn check_history(&mut self) -> LinearizabilityVerdict {
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
