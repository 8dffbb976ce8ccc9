//! Scripted fault schedules on the simulator, each aimed at one liveness
//! hazard of view changes (Liskov & Cowling 2012, §4.2, and the departures in
//! `docs/protocol.md`). Every run ends with the simulator's full checks:
//! agreement, exactly-once, liveness, convergence and linearizability.

use vr_core::Status;
use vr_sim::network::Addr;
use vr_sim::plan::{SeedPlan, SECOND};
use vr_sim::{Options, SeedReport, Simulator};

/// Heals everything, runs the liveness and settle phases, and returns the
/// report, asserting that every checker passed.
fn heal_and_finish(mut sim: Simulator) -> SeedReport {
    sim.heal();
    sim.start_liveness(false);
    sim.run_to_end();
    let report = sim.finish();
    assert!(report.passed(), "violations: {:#?}", report.violations);
    report
}

/// The schedule that livelocks naive view changes: a backup whose outgoing
/// messages arrive but who hears nothing. It times out again and again,
/// raising its view and sending StartViewChange each time. In the paper's
/// protocol the others join every one of those views, so the cluster keeps
/// changing view (and cannot commit while the deaf replica is the new
/// primary). Here (stickiness, `docs/protocol.md` departure 2) the cluster
/// keeps committing in view 0 throughout, and after the heal the deaf backup
/// goes back to the running view (departure 3) and catches up.
#[test]
fn deaf_backup_asymmetric_partition_does_not_livelock() {
    for n in [3u8, 5] {
        let plan = SeedPlan::quiet(7 + u64::from(n), n, 4, 3);
        let mut sim = Simulator::new(plan, &Options::default());
        sim.run_until(SECOND);
        let deaf = n - 1;
        let before = sim.ops_completed();
        assert!(
            before > 20,
            "the cluster commits before the partition: {before}"
        );
        for other in 0..n - 1 {
            sim.cut(Addr::Replica(other), Addr::Replica(deaf));
        }
        sim.run_until(6 * SECOND);

        let during = sim.ops_completed() - before;
        assert!(
            during > 200,
            "n={n}: only {during} ops completed during the partition"
        );
        let primary = sim.replica(0).expect("r0 is alive");
        assert!(
            primary.view() == 0 && primary.is_primary(),
            "n={n}: the deaf backup deposed the primary (r0 in view {}, {:?})",
            primary.view(),
            primary.status()
        );
        let deaf_replica = sim.replica(deaf).expect("the deaf replica is alive");
        assert!(
            deaf_replica.view() >= 5 && deaf_replica.status() == Status::ViewChange,
            "n={n}: the deaf backup kept starting view changes (view {})",
            deaf_replica.view()
        );
        assert!(
            deaf_replica.stats().view_changes_started >= 5,
            "n={n}: the deaf backup started {} view changes",
            deaf_replica.stats().view_changes_started
        );

        sim.heal();
        sim.run_until(7 * SECOND);
        let primary = sim.replica(0).expect("r0 is alive");
        let deaf_replica = sim.replica(deaf).expect("the deaf replica is alive");
        assert_eq!(
            (deaf_replica.view(), deaf_replica.status()),
            (primary.view(), Status::Normal),
            "n={n}: the deaf backup rejoined the running view after the heal"
        );
        assert!(
            primary.commit_number() - deaf_replica.commit_number() <= 16,
            "n={n}: the deaf backup caught up ({} vs {})",
            deaf_replica.commit_number(),
            primary.commit_number()
        );
        heal_and_finish(sim);
    }
}

/// The mirror image: the primary hears nothing, but its heartbeats reach the
/// backups, so their primary-silence timers never fire. It must step down
/// (`docs/protocol.md` departure 4) so that a new view forms and commits.
#[test]
fn deaf_primary_steps_down_and_the_cluster_moves_on() {
    let plan = SeedPlan::quiet(21, 3, 4, 3);
    let mut sim = Simulator::new(plan, &Options::default());
    sim.run_until(SECOND);
    sim.cut(Addr::Replica(1), Addr::Replica(0));
    sim.cut(Addr::Replica(2), Addr::Replica(0));
    let before = sim.ops_completed();
    sim.run_until(4 * SECOND);
    let during = sim.ops_completed() - before;
    assert!(
        during > 100,
        "a new view commits during the partition: {during} ops"
    );
    let r1 = sim.replica(1).expect("r1 is alive");
    assert!(
        r1.view() > 0,
        "a new view formed (r1 in view {})",
        r1.view()
    );
    heal_and_finish(sim);
}

/// A clean split of five replicas into 2 and 3 with the primary in the
/// minority: the majority side forms a new view and commits; after the heal
/// the minority rejoins.
#[test]
fn split_with_primary_in_minority() {
    let plan = SeedPlan::quiet(33, 5, 5, 2);
    let mut sim = Simulator::new(plan, &Options::default());
    sim.run_until(SECOND);
    for a in [0u8, 1] {
        for b in [2u8, 3, 4] {
            sim.cut(Addr::Replica(a), Addr::Replica(b));
            sim.cut(Addr::Replica(b), Addr::Replica(a));
        }
    }
    let before = sim.ops_completed();
    sim.run_until(4 * SECOND);
    assert!(
        sim.ops_completed() - before > 100,
        "the majority side commits"
    );
    heal_and_finish(sim);
}

/// §5.2: a backup cut off while the others commit far past its log tail
/// catches up by checkpoint transfer after the heal, while clients keep
/// the cluster busy (the source keeps taking checkpoints meanwhile).
#[test]
fn lagging_backup_catches_up_by_checkpoint_under_load() {
    for (interval, tail, ballast) in [
        (4u64, 0u64, 0u32),
        (16, 4, 0),
        (128, 16, 0),
        (16, 4, 128),
        (128, 16, 128),
        (1024, 64, 128),
        (4, 0, 128),
    ] {
        let mut plan = SeedPlan::quiet(40 + interval, 3, 6, 3);
        plan.config.checkpoint_interval_ops = interval;
        plan.config.log_tail_ops = tail;
        if ballast > 0 {
            plan.recovery.ballast_pages = ballast;
            plan.recovery.ballast_page_size = 2048;
            plan.config.op_size_max = 64;
            plan.config.prepare_window_max = 4;
            plan.config.message_size_max = 2048;
        }
        let mut sim = Simulator::new(plan, &Options::default());
        sim.run_until(SECOND);
        sim.isolate_replica(2);
        sim.run_until(3 * SECOND);
        let behind = sim.replica(0).map_or(0, |r| r.commit_number())
            - sim.replica(2).map_or(0, |r| r.commit_number());
        assert!(
            behind > interval + tail,
            "interval {interval}: only {behind} ops behind"
        );
        sim.heal();
        let mut caught_up_at = None;
        for step in 1..=500u64 {
            sim.run_until(3 * SECOND + step * 10 * vr_sim::plan::MS);
            let (p, r) = (sim.replica(0).unwrap(), sim.replica(2).unwrap());
            if r.status() == Status::Normal
                && p.commit_number().saturating_sub(r.commit_number()) <= interval + tail + 16
            {
                caught_up_at = Some(step * 10);
                break;
            }
        }
        let r2 = sim.replica(2).unwrap();
        assert!(
            caught_up_at.is_some(),
            "interval {interval}: r2 did not catch up under load"
        );
        assert!(
            r2.stats().checkpoints_installed >= 1,
            "it caught up by checkpoint"
        );
        // The log kept for the transfer is dropped once it is done. (With no
        // tail, any gap in a backup's log is a new transfer, during which
        // the log after the checkpoint it fetches is kept again.)
        let now = sim.now();
        sim.run_until(now + SECOND);
        for i in 0..3 {
            let r = sim.replica(i).unwrap();
            let bound = tail + interval + u64::from(r.config().prepare_window_max);
            assert!(
                tail == 0 || r.log().len() as u64 <= bound,
                "interval {interval}: r{i} holds {} log entries (bound {bound})",
                r.log().len()
            );
        }
        heal_and_finish(sim);
    }
}
