//! Seeds that found bugs in vr-core, kept as regression tests: each failed
//! with its fix reverted and passes with it (`docs/testing.md`, "Bugs found
//! and fixed"). A seed replays its run only while plan generation is
//! unchanged, which the plan fingerprint checks; a change to the core may
//! still steer a seed elsewhere, so each test also says what the schedule
//! once exposed.

use vr_sim::plan::SeedPlan;
use vr_sim::plan::SECOND;
use vr_sim::{run_plan, run_seed, Options, SeedReport, Simulator};

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

/// Runs `seed` with the plans of before the optimizations (restarts,
/// checkpoints, ballast; `Config`'s defaults for batching and reads), after
/// checking that plan generation still draws the plan that found the bug
/// (`fingerprint_full` covers everything such a plan holds).
fn run_current(seed: u64, fingerprint: u64) -> SeedReport {
    assert_eq!(
        SeedPlan::without_optimizations(seed, None).fingerprint_full(),
        fingerprint,
        "seed {seed}: plan generation changed, so this seed no longer replays the run that \
         found the bug; find a new seed (revert the fix, run a batch) and update the test"
    );
    let options = Options {
        optimization_plans: false,
        ..Options::default()
    };
    run_seed(seed, &options)
}

fn assert_current_passes(seed: u64, fingerprint: u64) {
    let report = run_current(seed, fingerprint);
    assert!(
        report.passed(),
        "seed {seed} ({}): {} violations, the first: {:?}",
        report.plan.summary(),
        report.violations.len(),
        report.violations.first()
    );
}

/// A replica whose log a checkpoint had dropped up to `log_base` installed
/// a StartView (or completed a view change) keeping its log from an
/// op-number below `log_base`: the log was left misnumbered, and the
/// replica executed the wrong entries (agreement: "executed op 89 from a
/// log entry numbered 85"). Fix: `install_view` and
/// `complete_view_change` keep the log from `log_base` at least and skip
/// the installed entries below it (committed, so the same).
#[test]
fn seed_166_view_installed_over_a_truncated_log() {
    assert_current_passes(166, 0xc8599065cdc502fb);
}

/// A checkpoint fetch with frames too small for one tree node's children
/// (under 618 bytes; `Config::validate` allows less) got empty tree answers
/// forever: the replica never caught up (convergence). Fix: such a fetch
/// asks for every page and checks the whole checkpoint against the root.
#[test]
fn seed_139_checkpoint_fetch_in_small_frames_completes() {
    assert_current_passes(139, 0x0775213ac01707ec);
}

/// A primary counted a backup fetching its log (GetState) as alive, but
/// not one fetching a checkpoint: it abdicated during every long
/// checkpoint transfer, and the transfer restarted in the next view,
/// forever (liveness: 1606 views). Fix: checkpoint requests count too.
#[test]
fn seed_65_primary_does_not_abdicate_during_checkpoint_transfer() {
    assert_current_passes(65, 0x9b7923e7f2ab09e1);
}

/// Every NewState, even a duplicated or stale one, made a lagging backup
/// send another GetState: with the network duplicating messages, requests
/// and answers multiplied geometrically (9.5 million messages in a run that
/// needs 6 thousand; it passed every checker, slowly). Fix: only an answer
/// that advanced the log asks for more.
#[test]
fn seed_1813_duplicated_answers_do_not_multiply_requests() {
    let report = run_current(1813, 0x4995be37db240a73);
    assert!(report.passed(), "{:?}", report.violations.first());
    assert!(
        report.stats.network.sent < 100_000,
        "{} messages sent",
        report.stats.network.sent
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

/// A CheckpointTree answer counted 64 bytes for its fixed part, which is
/// 66: an answer holding exactly two full nodes' children in a frame of
/// 1136 bytes (2 × 520 + 96) was 2 bytes over `message_size_max`, and its
/// receiver rejected it (found by seed 93 of the first recovery plans).
/// Fix: `on_get_checkpoint_tree` budgets the answer's real fixed size.
#[test]
fn checkpoint_tree_answers_fit_their_frame() {
    let mut plan = SeedPlan::quiet(93, 3, 4, 3);
    plan.config.op_size_max = 64;
    plan.config.prepare_window_max = 4;
    plan.config.message_size_max = 2 * 520 + 96;
    plan.config.checkpoint_interval_ops = 16;
    plan.config.log_tail_ops = 0;
    plan.recovery.ballast_pages = 100;
    plan.recovery.ballast_page_size = 1024;
    let mut sim = Simulator::new(plan, &Options::default());
    sim.run_until(SECOND);
    sim.isolate_replica(2);
    sim.run_until(2 * SECOND);
    sim.heal();
    sim.start_liveness(false);
    sim.run_to_end();
    let report = sim.finish();
    assert!(
        report.passed(),
        "{} violations, the first: {:?}",
        report.violations.len(),
        report.violations.first()
    );
    assert!(
        report.stats.core.checkpoints_installed > 0,
        "a checkpoint was transferred"
    );
}
