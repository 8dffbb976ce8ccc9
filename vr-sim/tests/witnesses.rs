//! Witnesses (§6) in the simulator: the fault schedules of random seeds,
//! run once with every replica full and once with the largest number of
//! witnesses the cluster allows (2 full + 1 witness, 3 full + 2 witnesses).
//! Both must pass every check: linearizability, agreement, exactly-once,
//! liveness after the heal and convergence. Random plans also draw
//! witnesses in a third of the seeds (`docs/testing.md`).

use vr_sim::plan::SeedPlan;
use vr_sim::{run_plan, Options};

/// Runs seeds `seeds` with `replica_count` replicas, with the fault plan of
/// each seed, as a full cluster and with `witnesses`; returns the number
/// of witness skips and of ops committed in the witness runs.
fn same_schedules(replica_count: u8, witnesses: &[u8], seeds: std::ops::Range<u64>) -> (u64, u64) {
    let options = Options::default();
    let (mut skips, mut committed) = (0, 0);
    for seed in seeds {
        let mut full = SeedPlan::random(seed, Some(replica_count));
        full.config.witnesses.clear();
        let report = run_plan(full.clone(), &options);
        assert!(
            report.passed(),
            "seed {seed}, full: {:#?}",
            report.violations
        );

        let mut with_witnesses = full;
        with_witnesses.config.witnesses = witnesses.to_vec();
        with_witnesses
            .config
            .validate()
            .expect("a valid witness configuration");
        let report = run_plan(with_witnesses, &options);
        assert!(
            report.passed(),
            "seed {seed}, witnesses {witnesses:?}: {:#?}",
            report.violations
        );
        skips += report.stats.core.witness_log_skips;
        committed += report.stats.ops_committed;
    }
    (skips, committed)
}

#[test]
fn two_full_replicas_and_a_witness_survive_the_schedules_of_full_clusters() {
    let (skips, committed) = same_schedules(3, &[2], 0..40);
    assert!(committed > 0);
    // Restarts and long partitions make witnesses catch up by skipping:
    // the path that needs every full replica to have executed the ops.
    assert!(skips > 0, "no witness ever had to skip");
}

#[test]
fn three_full_replicas_and_two_witnesses_survive_the_schedules_of_full_clusters() {
    let (skips, committed) = same_schedules(5, &[0, 3], 0..40);
    assert!(committed > 0);
    assert!(skips > 0, "no witness ever had to skip");
}
