//! Seeds that found bugs in vr-core, kept as regression tests: each failed
//! with its fix reverted and passes with it (`docs/testing.md`, "Bugs found
//! and fixed"). A seed replays its run only while plan generation is
//! unchanged, which the plan fingerprint checks; a change to the core may
//! still steer a seed elsewhere, so each test also says what the schedule
//! once exposed.

use vr_sim::plan::SeedPlan;
use vr_sim::{run_plan, Options};

/// Runs `seed` with the plan generation of its time: the classic plan
/// (before restarts, checkpoints and ballast were simulated) for the bugs
/// found then.
fn assert_passes(seed: u64, fingerprint: u64) {
    let plan = SeedPlan::classic(seed, None);
    assert_eq!(
        plan.fingerprint(),
        fingerprint,
        "seed {seed}: plan generation changed, so this seed no longer replays the run that \
         found the bug; find a new seed (revert the fix, run a batch) and update the test"
    );
    let report = run_plan(plan, &Options::default());
    assert!(
        report.passed(),
        "seed {seed} ({}): {:#?}",
        report.plan.summary(),
        report.violations
    );
}

/// A replica that sent its DoViewChange to itself (it was the new view's
/// primary) counted that as a promise not to rejoin older views; once that
/// view failed to form it could never rejoin the running view (found by seed
/// 54 of an earlier plan). Fix: `check_start_view_change_quorum` records the
/// promise only for a DoViewChange sent to another replica.
#[test]
fn seed_2416_self_promise_does_not_strand_a_replica() {
    assert_passes(2416, 0x861969e13823bee4);
}

/// A replica fetching a long log in small frames (state transfer) let its
/// view-change timer expire mid-fetch, moved on, came back and refetched from
/// scratch, forever (seed 1076 of an earlier plan; here a liveness failure).
/// Fix: a fetch that advances re-arms the timer.
#[test]
fn seed_613_slow_state_transfer_completes() {
    assert_passes(613, 0x440df1e3a4a04679);
}

/// A StartView delayed by reordering reached a replica going back to that
/// (older) view; installing it truncated the log below the commit-number: a
/// panic at the next DoViewChange, and acknowledged entries dropped (seed
/// 1678 of an earlier plan). Fix: a replica already normal in that view
/// fetches the current log instead.
#[test]
fn seed_572_stale_start_view_is_not_installed() {
    assert_passes(572, 0x14c634df47d4f174);
}

/// A stale NewState completed the fetch of a replica going back to a view in
/// which it had acknowledged ops; its log lost a committed op and the next
/// view formed without it: an agreement and a linearizability violation
/// (seed 4631 of an earlier plan). Fix: a NewState ending before the
/// replica's own op-number is ignored.
#[test]
fn seed_28293_stale_new_state_loses_no_committed_op() {
    assert_passes(28293, 0x4ab7e3a44e879cd3);
}

/// A primary abdicated (it heard no quorum of PrepareOks) while the backup it
/// needed was still fetching the log, which restarted in the next view, over
/// and over (seed 3571 of an earlier plan: 2280 views, no progress). Fix: a
/// GetState for the current view counts as hearing from that backup.
#[test]
fn seed_1585_primary_does_not_abdicate_during_state_transfer() {
    assert_passes(1585, 0x5d184aa3660f354c);
}

/// A replica fetching its view's log joined the higher view of a lone,
/// stranded replica's StartViewChange (sent every resend interval), threw
/// the fetch away, went back, and never completed it; the cluster, a quorum
/// short, stalled. Fix: a replica fetching from its view's primary hears
/// that primary and ignores a lone StartViewChange like a normal backup.
#[test]
fn seed_25238_fetching_replica_ignores_a_lone_start_view_change() {
    assert_passes(25238, 0x895095356b43eef1);
}
