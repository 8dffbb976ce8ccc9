//! Clusters whose replicas all start recovering (`Replica::recover`), as
//! `vr-kv node`s always do: the recovery protocol (Liskov & Cowling 2012,
//! §4.3, with crash vectors) must form a new cluster by itself when every
//! replica lost its state, or is new (`docs/protocol.md`, "Forming a
//! cluster"; `docs/testing.md`, bug 15).

use vr_core::message::Command;
use vr_core::Status;
use vr_sim::network::Addr;
use vr_sim::plan::{BootPlan, SeedPlan, MS, SECOND};
use vr_sim::{run_seed, Options, Simulator};

/// A seed of the random plans that boots recovering, after checking that
/// plan generation still draws the plan that found the bug.
fn assert_boot_seed_passes(seed: u64, fingerprint: u64) {
    let plan = SeedPlan::random(seed, None);
    assert!(plan.boot.recovering, "seed {seed} boots recovering");
    assert_eq!(
        plan.fingerprint_boot(),
        fingerprint,
        "seed {seed}: plan generation changed, so this seed no longer replays the run that \
         found the bug; find a new seed (revert the fix, run a batch) and update the test"
    );
    let report = run_seed(seed, &Options::default());
    assert!(
        report.passed(),
        "seed {seed} ({}): {:#?}",
        report.plan.summary(),
        report.violations
    );
    assert!(report.stats.formed_ns.is_some(), "seed {seed}: formed");
}

/// Bug 15, first half, found by seed 32 (three replicas, no partition, no
/// crash: the CLI test's setting). r0, primary of view 0, formed the
/// cluster first and appended a client's request; the others then saw a
/// replica holding an op and would not form with it, and r0 could not
/// commit without them: no write, for ever. Fix (`forming_cluster`): a
/// primary that formed the cluster takes no request before f backups
/// answer it in view 0.
#[test]
fn seed_32_the_first_primary_takes_no_request_before_a_quorum_formed() {
    assert_boot_seed_passes(32, 0xa295_9c38_249c_c003);
}

/// Bug 15, second half, found by seed 1541 (restarts during formation).
/// A recovering replica answers with the crash vector it has, in which its
/// own incarnation is 0 until it picks one; a replica that knew a higher
/// incarnation of it dropped the answer as coming from an older
/// incarnation, so with enough restarts nobody collected the f + 1 answers
/// of round 1. Fix (`on_recovery_response`): a Recovering answer is no
/// vote and is not dropped for its sender's own entry.
#[test]
fn seed_1541_answers_of_recovering_replicas_count_after_restarts() {
    assert_boot_seed_passes(1541, 0x590a_c5a8_9412_3856);
}

/// Bug 15 as a directed schedule: three replicas start recovering at once;
/// r0's answers to r1 and r2 are held, so r0 forms view 0 alone, as
/// primary, while r1 and r2 still wait for it. The clients' requests are
/// held until r0 has formed and then reach it while it is primary alone.
/// Unfixed, r0 appends them; once its answers flow, r1 and r2 see a
/// replica holding ops and never form (liveness). Fixed, r0 holds no op
/// until f backups answer it, and the cluster forms and serves.
///
/// (Through the node layer r0 forms only after its connects to r1 and r2
/// complete, after the clients' first requests arrived; their resends
/// came after r0 had abdicated, so the requests are held and released
/// once r0 is primary.)
#[test]
fn a_primary_that_formed_alone_keeps_its_log_empty_until_others_join() {
    const CLIENTS: u8 = 4;
    for seed in 0..3u64 {
        let mut plan = SeedPlan::quiet(300 + seed, 3, CLIENTS, 3);
        plan.boot = BootPlan {
            recovering: true,
            start_at_ns: vec![0; 3],
        };
        let mut sim = Simulator::new(plan, &Options::default());
        for to in [1, 2] {
            sim.hold(
                Addr::Replica(0),
                Addr::Replica(to),
                &[Command::RecoveryResponse],
            );
        }
        for c in 0..CLIENTS {
            sim.hold(Addr::Client(c), Addr::Replica(0), &[Command::Request]);
        }
        let mut t = 0;
        while !sim.replica(0).is_some_and(|r| r.is_primary()) {
            t += MS;
            assert!(t < 100 * MS, "seed {seed}: r0 formed view 0 alone");
            sim.run_until(t);
        }
        for c in 0..CLIENTS {
            sim.release(Addr::Client(c), Addr::Replica(0));
        }
        sim.run_until(t + 50 * MS);
        let r0 = sim.replica(0).expect("r0 started");
        assert!(
            r0.is_primary() && r0.view() == 0,
            "seed {seed}: r0 is still primary of view 0 alone ({:?} in view {})",
            r0.status(),
            r0.view()
        );
        for i in [1, 2] {
            let r = sim.replica(i).expect("started");
            assert_eq!(r.status(), Status::Recovering, "seed {seed}: r{i}");
        }
        // The clients' requests reached r0 while it was primary alone.
        assert!(
            r0.stats().requests_dropped > 0 || r0.op_number() > 0,
            "seed {seed}: clients asked r0"
        );
        assert_eq!(r0.op_number(), 0, "seed {seed}: r0 took no request");
        for to in [1, 2] {
            sim.discard_held(Addr::Replica(0), Addr::Replica(to));
        }
        sim.run_until(2 * SECOND);
        assert!(
            sim.ops_completed() > 20,
            "seed {seed}: the cluster formed and serves ({} ops)",
            sim.ops_completed()
        );
        sim.start_liveness(false);
        sim.run_to_end();
        let report = sim.finish();
        assert!(report.passed(), "seed {seed}: {:#?}", report.violations);
    }
}

/// Random seeds that all boot recovering, at staggered times, with the
/// seeds' faults (restarts during formation included): every checker
/// passes, and the cluster forms in each.
#[test]
fn a_batch_of_seeds_booting_recovering_passes() {
    let options = Options {
        boot_recovering: Some(true),
        ..Options::default()
    };
    for seed in 0..24 {
        let report = run_seed(seed, &options);
        assert!(
            report.passed(),
            "seed {seed} ({}): {:#?}",
            report.plan.summary(),
            report.violations
        );
        assert!(report.stats.formed_ns.is_some(), "seed {seed}: formed");
    }
}

/// Seed 825657 of a `vr-sim --seeds` batch: a replica restarted while the
/// others were normal in view 1 with nothing in their logs took "every
/// other replica holds nothing" for a cluster still forming and formed view
/// 0 alone, as primary, behind the others; ops it then committed in view 0
/// (with a replica that recovered into it) were dropped by the next view
/// change, where the empty log of view 1 outranked them. Fix
/// (`check_recovery_quorum`): only answers in view 0 holding nothing count
/// as a cluster still forming.
#[test]
fn seed_825657_a_recovering_replica_does_not_form_view_0_behind_a_later_view() {
    let options = Options {
        reconfiguration_plans: true, // as the CLI runs it
        ..Options::default()
    };
    let report = run_seed(825657, &options);
    let summary = report.plan.summary();
    assert!(
        summary.contains("boot=recovering") && summary.contains("restarts<=347ms"),
        "plan generation changed ({summary}); find the seed again"
    );
    assert!(
        report.passed(),
        "seed 825657 ({summary}): {:#?}",
        report.violations
    );
}

/// Seeds 2034580 and 2000801 of a `vr-sim --seeds` batch: in round 1 of
/// recovery a replica asked again only the replicas that had not answered,
/// so with the one that had not answered partitioned it waited for ever;
/// in 2034580 the replicas that had answered had since moved to a new epoch
/// that removed the recovering one, and it never heard. Fix
/// (`send_recovery`): every resend asks every replica.
#[test]
fn recovery_round_one_asks_everyone_again() {
    let options = Options {
        reconfiguration_plans: true, // as the CLI runs it
        ..Options::default()
    };
    for (seed, mark) in [
        (2034580, "reconfigure-to=[0, 1, 3]@2591ms"),
        (2000801, "witnesses=[1, 3]"),
    ] {
        let report = run_seed(seed, &options);
        let summary = report.plan.summary();
        assert!(
            summary.contains(mark),
            "seed {seed}: plan generation changed ({summary}); find the seed again"
        );
        assert!(
            report.passed(),
            "seed {seed} ({summary}): {:#?}",
            report.violations
        );
    }
}

/// Seed 2016416 of a `vr-sim --seeds` batch (issue 17, item 6; five
/// replicas booting recovering, 61 crash-restarts): r4's round 2 of one
/// life, with incarnation 2, never finished, but its frames lingered and
/// reached r0 and r2 later, after r4's next life had chosen incarnation 1
/// in a round 1 whose answers all came from replicas that were recovering
/// themselves (a cluster booting is more than f replicas recovering at
/// once). r0 and r2 then dropped every vote of r4 as stale, and with r1
/// and r3 recovering no view formed again. Incarnation 2 never voted (its
/// recovery never finished), so reusing a lower number lost nothing; the
/// argument is in `docs/protocol.md`, "Crash vectors". Fix
/// (`admit_crash_vector`): a replica told of a later incarnation of itself
/// moves above it.
#[test]
fn seed_2016416_a_replica_known_by_a_later_incarnation_moves_above_it() {
    let options = Options {
        reconfiguration_plans: true, // as the CLI runs it
        ..Options::default()
    };
    let report = run_seed(2016416, &options);
    let summary = report.plan.summary();
    assert!(
        summary.contains("boot=recovering") && summary.contains("restarts<=1012ms"),
        "plan generation changed ({summary}); find the seed again"
    );
    assert!(
        report.passed(),
        "seed 2016416 ({summary}): {:#?}",
        report.violations
    );
}
