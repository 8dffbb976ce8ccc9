//! The node layer (`vr_core::node`) under the simulator's faults: the
//! connection table, refused connects, backoff and reconnects, as every
//! adapter relies on them.

use vr_core::{MemberId, Status};
use vr_sim::plan::{SeedPlan, MS, SECOND};
use vr_sim::{Options, Simulator};

/// A crashed replica's peers see its connections close, fail to connect
/// to it while it is down (refused: the node backs off), and connect again
/// once it restarted, over which its recovery (§4.3) completes.
#[test]
fn connects_to_a_crashed_replica_fail_back_off_and_succeed_after_its_restart() {
    let plan = SeedPlan::quiet(7, 3, 2, 3);
    let mut sim = Simulator::new(plan, &Options::default());
    sim.run_until(500 * MS);
    let before = sim.replica_node_stats(0).expect("r0 runs").links;
    assert_eq!(before.connect_failures, 0, "nothing failed yet");
    assert!(
        (before.connections.iter()).any(|c| c.member == Some(MemberId(2)) && c.connected),
        "r0 is connected to r2"
    );
    sim.crash(2, Some(2 * SECOND));
    sim.run_until(1900 * MS);
    let during = sim.replica_node_stats(0).expect("r0 runs").links;
    assert!(
        during.connect_failures > 0,
        "r0's connects to the crashed r2 were refused: {during:?}"
    );
    assert!(
        !(during.connections.iter()).any(|c| c.member == Some(MemberId(2)) && c.connected),
        "r0 holds no open connection to the crashed r2"
    );
    sim.run_until(4 * SECOND);
    let after = sim.replica_node_stats(0).expect("r0 runs").links;
    assert!(
        after.reconnects > during.reconnects,
        "r0 connected to r2 again after its restart"
    );
    assert!(
        (after.connections.iter()).any(|c| c.member == Some(MemberId(2)) && c.connected),
        "r0 is connected to r2 again"
    );
    assert_eq!(
        sim.replica(2).expect("restarted").status(),
        Status::Normal,
        "r2 recovered over the new connections"
    );
    sim.start_liveness(false);
    sim.run_to_end();
    let report = sim.finish();
    assert!(report.passed(), "{:#?}", report.violations);
    assert!(report.stats.links.refused > 0);
    assert!(report.stats.node.connect_failures > 0);
}
