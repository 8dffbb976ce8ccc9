//! Summaries of many seeds: the totals line block of `vr-sim --seeds N`
//! and the one-line account of a failing seed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::checks::ViolationKind;
use crate::plan::{PartitionShape, SECOND};
use crate::simulator::{CoreCounters, LinearizabilityVerdict, SeedReport};

/// Totals over a batch of seeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds with at least one violation.
    pub failed: u64,
    /// Seeds whose plan has a reconfiguration (§7).
    pub seeds_reconfiguration: u64,
    /// Reconfigurations completed (the administrator saw the new epoch).
    pub reconfigurations_completed: u64,
    /// Seeds with a reconfiguration that failed a check.
    pub seeds_reconfiguration_failed: u64,
    /// Scripted primary crashes around a reconfiguration.
    pub scripted_primary_crashes: u64,
    /// Simulated time, summed.
    pub simulated_ns: u64,
    /// Client operations invoked.
    pub ops_invoked: u64,
    /// Client operations completed.
    pub ops_completed: u64,
    /// Operations committed.
    pub ops_committed: u64,
    /// Messages sent.
    pub messages: u64,
    /// Messages lost at random.
    pub lost: u64,
    /// Messages duplicated.
    pub duplicated: u64,
    /// Messages corrupted.
    pub corrupted: u64,
    /// Frames the decoder rejected.
    pub rejected: u64,
    /// Messages delayed (reordered).
    pub delayed: u64,
    /// Messages dropped by cut links.
    pub partition_drops: u64,
    /// Messages between replicas given a long delay.
    pub long_delayed: u64,
    /// Partitions, by shape.
    pub partitions: BTreeMap<PartitionShape, u64>,
    /// Pauses.
    pub pauses: u64,
    /// Crashes.
    pub crashes: u64,
    /// Restarts with wiped memory.
    pub restarts: u64,
    /// Restarted replicas that became normal again.
    pub recovered: u64,
    /// The longest time from a restart to normal status.
    pub recovery_ns_max: u64,
    /// Seeds in which some replica installed a checkpoint from a peer.
    pub seeds_with_checkpoint_transfer: u64,
    /// Checkpoint roots compared across replicas.
    pub checkpoints_compared: u64,
    /// vr-core's counters, summed.
    pub core: CoreCounters,
    /// Replicas with a skewed clock.
    pub skewed_clocks: u64,
    /// Views formed after view 0.
    pub views_formed: u64,
    /// The longest time from heal to the last completion.
    pub liveness_ns_max: u64,
    /// Violations, by kind.
    pub violations: BTreeMap<ViolationKind, u64>,
    /// Histories the checker could not decide within its budget.
    pub linearizability_unknown: u64,
    /// Seeds by cluster size.
    pub by_replica_count: BTreeMap<u8, u64>,
    /// Seeds with batching on (`batch_ops_max > 1`), with leases, with
    /// backup reads by the workload (§6).
    pub seeds_batching: u64,
    /// See `seeds_batching`.
    pub seeds_leases: u64,
    /// See `seeds_batching`.
    pub seeds_backup_reads: u64,
    /// Seeds whose cluster has witnesses.
    pub seeds_witnesses: u64,
    /// Backup reads completed by clients, and those whose value was
    /// compared with the committed sequence.
    pub backup_reads_completed: u64,
    /// See `backup_reads_completed`.
    pub backup_reads_value_checked: u64,
    /// The most entries one Prepare carried.
    pub prepare_entries_max: u64,
    /// Seeds with batching on and load that fills batches (`LoadPlan`),
    /// and the Prepares and entries of those seeds.
    pub seeds_load: u64,
    /// See `seeds_load`.
    pub load_prepare_batches: u64,
    /// See `seeds_load`.
    pub load_prepare_entries: u64,
    /// Of those, the seeds with burst clients, and their Prepares, entries
    /// and largest Prepare.
    pub seeds_burst: u64,
    /// See `seeds_burst`.
    pub burst_prepare_batches: u64,
    /// See `seeds_burst`.
    pub burst_prepare_entries: u64,
    /// See `seeds_burst`.
    pub burst_prepare_entries_max: u64,
    /// Seeds whose replicas all booted recovering, those in which the
    /// cluster formed, and the slowest formation.
    pub seeds_boot: u64,
    /// See `seeds_boot`.
    pub seeds_boot_formed: u64,
    /// See `seeds_boot`.
    pub formed_ns_max: u64,
    /// Seeds with durable replicas (a disk model), and those of them that
    /// failed.
    pub seeds_durable: u64,
    /// See `seeds_durable`.
    pub seeds_durable_failed: u64,
    /// Durable seeds with disk faults, and with whole-cluster crashes.
    pub seeds_disk_faults: u64,
    /// See `seeds_disk_faults`.
    pub seeds_cluster_crashes: u64,
    /// The disks' counters, summed.
    pub disk: crate::simulator::DiskCounters,
}

impl Totals {
    /// Adds one seed.
    pub fn add(&mut self, report: &SeedReport) {
        let s = &report.stats;
        self.seeds += 1;
        if !report.passed() {
            self.failed += 1;
        }
        self.simulated_ns += s.simulated_ns;
        self.ops_invoked += s.ops_invoked;
        self.ops_completed += s.ops_completed;
        self.ops_committed += s.ops_committed;
        self.messages += s.network.sent;
        self.lost += s.network.lost;
        self.duplicated += s.network.duplicated;
        self.corrupted += s.network.corrupted;
        self.rejected += s.frames_rejected;
        self.delayed += s.network.delayed;
        self.partition_drops += s.network.partition_drops;
        self.long_delayed += s.network.long_delayed;
        for (shape, count) in &s.partitions {
            *self.partitions.entry(*shape).or_default() += count;
        }
        self.pauses += s.pauses;
        self.crashes += s.crashes;
        self.restarts += s.restarts;
        self.recovered += s.recovered;
        self.recovery_ns_max = self.recovery_ns_max.max(s.recovery_ns_max);
        if s.core.checkpoints_installed > 0 {
            self.seeds_with_checkpoint_transfer += 1;
        }
        self.checkpoints_compared += s.checkpoints_compared;
        self.core.merge(&s.core);
        self.skewed_clocks += s.skewed_clocks;
        self.views_formed += s.views_formed;
        self.liveness_ns_max = self.liveness_ns_max.max(s.liveness_ns);
        for v in &report.violations {
            *self.violations.entry(v.kind).or_default() += 1;
        }
        if report.linearizability == LinearizabilityVerdict::Unknown {
            self.linearizability_unknown += 1;
        }
        let c = &report.plan.config;
        if report.plan.optimizations.drawn {
            self.seeds_batching += u64::from(c.batch_ops_max > 1);
            self.seeds_leases += u64::from(c.lease_duration_ns > 0);
            self.seeds_backup_reads += u64::from(report.plan.optimizations.backup_read_ppm > 0);
            self.seeds_witnesses += u64::from(!c.witnesses.is_empty());
        }
        self.backup_reads_completed += s.backup_reads_completed;
        self.backup_reads_value_checked += s.backup_reads_value_checked;
        self.prepare_entries_max = self.prepare_entries_max.max(s.prepare_entries_max);
        if report.plan.load != crate::plan::LoadPlan::off() && report.plan.config.batch_ops_max > 1
        {
            self.seeds_load += 1;
            self.load_prepare_batches += s.core.prepare_batches;
            self.load_prepare_entries += s.core.prepare_batch_entries;
            if report.plan.load.extra_clients > 0 {
                self.seeds_burst += 1;
                self.burst_prepare_batches += s.core.prepare_batches;
                self.burst_prepare_entries += s.core.prepare_batch_entries;
                self.burst_prepare_entries_max =
                    self.burst_prepare_entries_max.max(s.prepare_entries_max);
            }
        }
        if report.plan.reconfiguration.is_some() {
            self.seeds_reconfiguration += 1;
            self.reconfigurations_completed += s.reconfigurations_completed;
            self.seeds_reconfiguration_failed += u64::from(!report.passed());
            self.scripted_primary_crashes += s.scripted_primary_crashes;
        }
        if report.plan.disk.durable {
            self.seeds_durable += 1;
            self.seeds_durable_failed += u64::from(!report.passed());
            self.seeds_disk_faults += u64::from(!report.plan.disk.fault_kinds.is_empty());
            self.seeds_cluster_crashes += u64::from(report.plan.disk.cluster_crashes_max > 0);
            self.disk.merge(&s.disk);
        }
        if report.plan.boot.recovering {
            self.seeds_boot += 1;
            if let Some(formed) = s.formed_ns {
                self.seeds_boot_formed += 1;
                self.formed_ns_max = self.formed_ns_max.max(formed);
            }
        }
        *self
            .by_replica_count
            .entry(report.plan.config.replica_count)
            .or_default() += 1;
    }

    /// The totals as a few lines of text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let sizes: Vec<String> = self
            .by_replica_count
            .iter()
            .map(|(n, c)| format!("n={n}: {c}"))
            .collect();
        let partitions: Vec<String> = self
            .partitions
            .iter()
            .map(|(shape, c)| format!("{} {c}", shape.name()))
            .collect();
        let violations: Vec<String> = self
            .violations
            .iter()
            .map(|(kind, c)| format!("{kind} {c}"))
            .collect();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "seeds: {} ({}), passed {}, failed {}",
            self.seeds,
            sizes.join(", "),
            self.seeds - self.failed,
            self.failed
        );
        let _ = writeln!(
            out,
            "simulated: {:.1} s; client ops: {} invoked, {} completed; {} ops committed",
            self.simulated_ns as f64 / SECOND as f64,
            self.ops_invoked,
            self.ops_completed,
            self.ops_committed
        );
        let _ = writeln!(
            out,
            "faults: {} messages: {} lost, {} duplicated, {} corrupted ({} frames rejected), {} delayed, \
             {} delayed long, {} dropped by partitions; partitions: [{}]; {} pauses; {} crashes; {} skewed clocks",
            self.messages,
            self.lost,
            self.duplicated,
            self.corrupted,
            self.rejected,
            self.delayed,
            self.long_delayed,
            self.partition_drops,
            partitions.join(", "),
            self.pauses,
            self.crashes,
            self.skewed_clocks
        );
        let _ = writeln!(
            out,
            "view changes: {} views formed; slowest recovery after heal: {:.3} s",
            self.views_formed,
            self.liveness_ns_max as f64 / SECOND as f64
        );
        let _ = writeln!(
            out,
            "recovery: {} restarts, {} recovered (slowest {:.3} s), {} recoveries completed (core count); \
             {} stale-incarnation votes dropped",
            self.restarts,
            self.recovered,
            self.recovery_ns_max as f64 / SECOND as f64,
            self.core.recoveries_completed,
            self.core.messages_stale_incarnation
        );
        let _ = writeln!(
            out,
            "checkpoints: {} taken, {} installed from a peer (in {} seeds), {} pages and {} bytes received; \
             {} roots compared across replicas",
            self.core.checkpoints_taken,
            self.core.checkpoints_installed,
            self.seeds_with_checkpoint_transfer,
            self.core.checkpoint_pages_received,
            self.core.checkpoint_bytes_received,
            self.checkpoints_compared
        );
        let _ = writeln!(
            out,
            "optimizations (§6): batching in {} seeds ({} Prepares, mean batch {:.2} entries, largest {}); \
             leases in {} seeds ({} leased reads, {} view changes deferred by a lease); \
             backup reads in {} seeds ({} answered by replicas, {} completed, {} values checked); \
             witnesses in {} seeds ({} log skips, {} deferred)",
            self.seeds_batching,
            self.core.prepare_batches,
            self.core.prepare_batch_entries as f64 / self.core.prepare_batches.max(1) as f64,
            self.prepare_entries_max,
            self.seeds_leases,
            self.core.leased_reads,
            self.core.view_changes_deferred_by_lease,
            self.seeds_backup_reads,
            self.core.backup_reads,
            self.backup_reads_completed,
            self.backup_reads_value_checked,
            self.seeds_witnesses,
            self.core.witness_log_skips,
            self.core.witness_skips_deferred
        );
        let _ = writeln!(
            out,
            "batching under load: {} seeds with replicas reading at intervals ({} Prepares, mean batch {:.2} entries), \
             {} of them with burst clients ({} Prepares, mean batch {:.2} entries, largest {})",
            self.seeds_load,
            self.load_prepare_batches,
            self.load_prepare_entries as f64 / self.load_prepare_batches.max(1) as f64,
            self.seeds_burst,
            self.burst_prepare_batches,
            self.burst_prepare_entries as f64 / self.burst_prepare_batches.max(1) as f64,
            self.burst_prepare_entries_max
        );
        let _ = writeln!(
            out,
            "boot: {} seeds started every replica recovering; the cluster formed in {} (slowest at {:.3} s)",
            self.seeds_boot,
            self.seeds_boot_formed,
            self.formed_ns_max as f64 / SECOND as f64
        );
        let _ = writeln!(
            out,
            "reconfiguration (§7): {} seeds, {} reconfigurations completed, {} scripted primary crashes; \
             {} of those seeds failed",
            self.seeds_reconfiguration,
            self.reconfigurations_completed,
            self.scripted_primary_crashes,
            self.seeds_reconfiguration_failed
        );
        let _ = writeln!(
            out,
            "durable replicas (issue 18): {} seeds ({} with disk faults, {} with whole-cluster crashes; {} failed); \
             {} persists completed; disks: {}",
            self.seeds_durable,
            self.seeds_disk_faults,
            self.seeds_cluster_crashes,
            self.seeds_durable_failed,
            self.core.persists_completed,
            self.disk.render()
        );
        let _ = write!(
            out,
            "violations: {} [{}]; linearizability undecided (checker budget): {}",
            self.violations.values().sum::<u64>(),
            violations.join(", "),
            self.linearizability_unknown
        );
        out
    }
}

/// One line about a failing seed: its seed, the kinds of violation, the
/// first violation (cut short) and the plan.
pub fn failure_line(report: &SeedReport) -> String {
    let mut kinds: Vec<&str> = report.violations.iter().map(|v| v.kind.name()).collect();
    kinds.dedup();
    let first = report
        .violations
        .first()
        .map(|v| {
            let text = v.to_string().replace('\n', " | ");
            if text.chars().count() > 300 {
                format!("{}…", text.chars().take(300).collect::<String>())
            } else {
                text
            }
        })
        .unwrap_or_default();
    format!(
        "FAIL seed {} [{}] {} -- {}",
        report.seed,
        kinds.join(","),
        first,
        report.plan.summary()
    )
}
