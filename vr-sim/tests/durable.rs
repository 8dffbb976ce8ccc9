//! Durable replicas in the simulator (issue 18; `docs/testing.md`,
//! "Durable replicas"): a batch of durable seeds, determinism, and the
//! seeds that found bugs, pinned. Each pinned seed checks its plan's
//! fingerprint first: a seed replays its run only while plan generation
//! is unchanged.

use vr_sim::checks::ViolationKind;
use vr_sim::plan::SeedPlan;
use vr_sim::{plan_for, run_plan, run_seed, Options, SeedReport};

/// The options of the CLI (reconfiguration and disk plans drawn), with
/// durable replicas forced when `durable`.
fn cli_options(durable: bool) -> Options {
    Options {
        reconfiguration_plans: true,
        disk_plans: true,
        durability: durable.then_some(true),
        ..Options::default()
    }
}

/// The plan of `seed` under `options`, after checking its fingerprint.
fn pinned_plan(seed: u64, options: &Options, fingerprint: u64) -> SeedPlan {
    let mut plan = plan_for(seed, options);
    // These runs aimed their whole-cluster crashes at random instants:
    // they came before crashes could be aimed at commits.
    plan.disk.cluster_crash_at_commit = false;
    assert_eq!(
        plan.fingerprint_disk(),
        fingerprint,
        "seed {seed}: plan generation changed, so this seed no longer replays the run that \
         found the bug; find a new seed (revert the fix, run a batch) and update the test"
    );
    plan
}

fn assert_passes(report: &SeedReport) {
    assert!(
        report.passed(),
        "seed {} ({}): {:#?}",
        report.seed,
        report.plan.summary(),
        report.violations
    );
}

/// Durable seeds must pass every checker, and the batch is not vacuous:
/// restarts from disk, whole-cluster crashes, disk faults and recoveries
/// from peers all happen in it.
#[test]
fn a_batch_of_durable_seeds_passes_every_checker() {
    let options = cli_options(true);
    let (mut from_disk, mut cluster_crashes, mut faults, mut repairs, mut lost) = (0, 0, 0, 0, 0);
    for seed in 0..40 {
        let report = run_seed(seed, &options);
        assert_passes(&report);
        assert!(report.plan.disk.durable);
        let d = &report.stats.disk;
        from_disk += d.restarts_from_disk;
        cluster_crashes += d.cluster_crashes;
        faults += d.faults_total();
        repairs += d.repairs_total();
        lost += d.crashes_losing_writes;
    }
    assert!(from_disk > 50, "{from_disk} restarts from disk");
    assert!(
        cluster_crashes > 5,
        "{cluster_crashes} whole-cluster crashes"
    );
    assert!(faults > 20, "{faults} disk faults");
    assert!(repairs > 2, "{repairs} recoveries from peers");
    assert!(lost > 2, "{lost} crashes lost unsynced writes");
}

#[test]
fn a_durable_seed_replays_identically() {
    let options = cli_options(true);
    for seed in [3u64, 17] {
        let a = run_seed(seed, &options);
        let b = run_seed(seed, &options);
        assert!(a.plan.disk.durable);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} replays");
        assert_eq!(a.history, b.history, "seed {seed}: the same history");
        assert_eq!(a.stats, b.stats, "seed {seed}: the same counters");
    }
}

/// Memory-only seeds replay the runs they had before disk plans existed:
/// a seed that draws no disk runs the same with disk plans on or off.
#[test]
fn memory_only_seeds_are_unchanged_by_disk_plans() {
    let mut compared = 0;
    for seed in 0..12 {
        let with = cli_options(false);
        let without = Options {
            disk_plans: false,
            ..with.clone()
        };
        if plan_for(seed, &with).disk.durable {
            continue;
        }
        let a = run_seed(seed, &with);
        let b = run_seed(seed, &without);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        compared += 1;
    }
    assert!(compared >= 4, "{compared} memory-only seeds compared");
}

/// Reference: §4.2 with stable storage. Seed 772 (one replica, three
/// whole-cluster crashes) lost committed ops 17–22: restarted from a disk
/// whose commit-number lagged (16), the replica moved to the next view,
/// whose log replaced its own after op 16 with the same entries; the
/// persist made the truncation durable at once, and the power loss that
/// followed came before the re-appended entries were synced. Fix
/// (vr-core, `note_log_replaced`): the disk's log is cut only where the
/// new log departs from the old.
#[test]
fn seed_772_a_view_change_keeps_its_committed_ops_on_disk() {
    let options = cli_options(false);
    let plan = pinned_plan(772, &options, 0x30a41bed58245592);
    assert!(plan.disk.durable && plan.config.replica_count == 1);
    let report = run_plan(plan, &options);
    assert_passes(&report);
    assert!(report.stats.disk.cluster_crashes >= 2);
}

/// Seed 43 (five replicas, two whole-cluster crashes, frames sized for a
/// prepare window): after a restart from disk a DoViewChange carries the
/// log after the disk's commit-number, which the glue stores only with a
/// promise; it had lagged by 41 ops, no DoViewChange fit a frame, and the
/// cluster never formed a view again (liveness). The simulator, as the
/// embedding, refreshes the disk's commit-number once it lags a window
/// (`Options::disk_commit_refresh`), and durable plans size frames for
/// three windows. Without the refresh the seed still fails.
#[test]
fn seed_43_a_lagging_commit_number_on_disk_blocks_view_changes() {
    let options = cli_options(false);
    let plan = pinned_plan(43, &options, 0x26d71d08e6982a62);
    let report = run_plan(plan.clone(), &options);
    assert_passes(&report);
    assert!(report.stats.disk.commit_refreshes > 0);
    let unrefreshed = Options {
        disk_commit_refresh: false,
        ..options
    };
    let report = run_plan(plan, &unrefreshed);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::Liveness),
        "without the refresh the cluster forms a view again: {:?}",
        report.violations
    );
}

/// Open issue (docs/testing.md, "Durable replicas", open issues): when a
/// power loss persists an unsynced batch's seal but not its entries,
/// vr-storage reports the batch's ops faulty, and the glue has the replica
/// recover from its peers. In a one-replica cluster (or more than f
/// replicas at once) that loses committed ops: seed 510 (one replica)
/// re-formed empty after a whole-cluster crash. Ignored until the repair
/// strategy handles it; the default plans keep such power losses out
/// (`Options::reordered_power_loss`).
#[test]
#[ignore = "open issue: over-reported unsynced tails make more than f replicas recover from peers"]
fn seed_510_a_torn_unsynced_batch_is_not_lost_data() {
    let options = Options {
        reordered_power_loss: true,
        ..cli_options(false)
    };
    let plan = pinned_plan(510, &options, 0xb5119cbcd27d5799);
    assert_passes(&run_plan(plan, &options));
}
