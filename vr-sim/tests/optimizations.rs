//! The optimizations of §6 in the simulator: plans draw batching, leases
//! and backup reads on or off per seed (`docs/testing.md`, "Optimizations
//! in the simulator"). Leased reads are ordinary reads for the
//! linearizability checker; backup reads are checked against their own,
//! weaker promise. The drift schedule shows that the clock-drift bound
//! matters: beyond it a deposed primary serves a stale read, which the
//! checker catches; inside it the same schedule passes.

use vr_sim::plan::SeedPlan;
use vr_sim::{run_seed, Options, Simulator};

/// A seed whose plan draws every optimization, to check that plan
/// generation still draws it (a changed plan no longer replays the run).
fn plan_of(seed: u64, fingerprint: u64) -> SeedPlan {
    let plan = SeedPlan::random(seed, None);
    assert_eq!(
        plan.fingerprint_optimizations(),
        fingerprint,
        "seed {seed}: plan generation changed, so this seed no longer replays the run that \
         found the bug; find a new seed (revert the fix, run a batch) and update the test"
    );
    plan
}

/// One replica, batches held for `batch_delay_ns`, checkpoints every 7
/// ops: the ops committed (one replica is a quorum) and a checkpoint
/// dropped them from the log before the batch timer fired; the flush then
/// sliced the log below `log_base` (a `debug_assert!` panic; harmless in
/// release, where there is no backup to send to). Fix (`flush_batch`):
/// nothing below `log_base` is left to send.
#[test]
fn seed_11_delayed_batch_after_a_checkpoint_with_one_replica() {
    let plan = plan_of(11, 0x8a39_ce8c_c01a_b60b);
    assert_eq!(plan.config.replica_count, 1);
    assert!(plan.config.batch_delay_ns > 0);
    let report = run_seed(11, &Options::default());
    assert!(report.passed(), "{:#?}", report.violations);
}

/// The drift schedule (`docs/protocol.md`, "Leased reads"; issue 7): three
/// replicas, r0 the primary of view 0 with a clock at a quarter of real
/// speed, r1 and r2 exact; one key, eight clients, c0..c3 only read and
/// reach only r0 (so they keep asking it), c4..c7 read and write.
///
/// 1. One second of normal operation: r0 holds its lease.
/// 2. r0 is cut off from r1 and r2 (clients still reach it). Their lease
///    promises run out after `lease_duration_ns` of their clocks; they form
///    view 1, and the writers, whose requests to r0 cannot commit, resend
///    to every replica and commit in view 1.
/// 3. r0 measures its lease on its slow clock. With a drift bound below
///    `lease × (1 − 0.25)` it believes the lease holds for longer than the
///    promises did, and answers the readers' reads from its old state after
///    the view-1 writes completed: stale reads, which the linearizability
///    checker must catch. With the bound covering the skew, r0's lease ends
///    before any promise, its reads go to its log and wait, and the run is
///    linearizable.
fn drift_schedule(seed: u64, drift_max_ns: u64) -> vr_sim::SeedReport {
    use vr_sim::network::Addr;
    use vr_sim::plan::{MS, SECOND};
    let mut plan = SeedPlan::quiet(seed, 3, 8, 1);
    let lease_ns = 100 * MS;
    plan.config.heartbeat_interval_ns = 10 * MS;
    plan.config.view_change_timeout_ns = lease_ns;
    plan.config.timeout_jitter_ns = 10 * MS;
    plan.config.prepare_timeout_ns = 20 * MS;
    plan.config.resend_interval_ns = 20 * MS;
    plan.config.lease_duration_ns = lease_ns;
    plan.config.clock_drift_max_ns = drift_max_ns;
    plan.config.validate().expect("a valid configuration");
    plan.faults.clock_rate_ppm = vec![250_000, 1_000_000, 1_000_000];
    let mut sim = Simulator::new(plan, &Options::default());
    for c in 0..4 {
        sim.set_reads_only(c, true);
        for r in 1..3 {
            sim.cut(Addr::Client(c), Addr::Replica(r));
            sim.cut(Addr::Replica(r), Addr::Client(c));
        }
    }
    sim.run_until(SECOND);
    assert!(
        sim.replica(0)
            .is_some_and(|r| r.is_primary() && r.view() == 0),
        "seed {seed}: r0 leads view 0 before the cut"
    );
    sim.isolate_replica(0);
    sim.run_until(2 * SECOND);
    assert!(
        sim.replica(1)
            .is_some_and(|r| r.is_primary() && r.view() > 0),
        "seed {seed}: r1 leads a new view"
    );
    sim.heal();
    sim.start_liveness(false);
    sim.run_to_end();
    sim.finish()
}

/// The lease duration of [`drift_schedule`] and the smallest bound that
/// covers its clocks (a quarter speed against real time).
fn drift_covering_ns() -> u64 {
    vr_sim::plan::drift_bound_ns(100_000_000, 250_000, 1_000_000)
}

#[test]
fn drift_beyond_the_bound_lets_a_deposed_primary_serve_a_stale_read() {
    for seed in 0..3 {
        let report = drift_schedule(seed, 1_000_000);
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.kind == vr_sim::checks::ViolationKind::Linearizability),
            "seed {seed}: the checker catches the stale leased read: {:#?}",
            report.violations
        );
        assert!(report.stats.core.leased_reads > 0);
    }
}

#[test]
fn drift_inside_the_bound_keeps_leased_reads_linearizable() {
    for seed in 0..3 {
        let report = drift_schedule(seed, drift_covering_ns());
        assert!(report.passed(), "seed {seed}: {:#?}", report.violations);
        assert!(
            report.stats.core.leased_reads > 0,
            "seed {seed}: leases were used"
        );
    }
}
