//! The optimizations of §6 in the simulator: plans draw batching, leases
//! and backup reads on or off per seed (`docs/testing.md`, "Optimizations
//! in the simulator"). Leased reads are ordinary reads for the
//! linearizability checker; backup reads are checked against their own,
//! weaker promise. The drift schedule shows that the clock-drift bound
//! matters: beyond it a deposed primary serves a stale read, which the
//! checker catches; inside it the same schedule passes.

use vr_sim::plan::SeedPlan;
use vr_sim::{run_seed, Options};

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
