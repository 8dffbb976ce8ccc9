//! Batching across connections, on every runtime, with `Config`'s defaults
//! (`batch_ops_max` 64, `batch_delay_ns` 0: the batch timer is due at once).
//!
//! Each client has its own connection and one request outstanding, so a
//! Prepare carries more than one entry only if the adapter feeds the
//! primary the requests of several connections before it fires the node's
//! batch timer (`ReplicaNode::handle_bytes` for each, then
//! `handle_timeout` once per turn; `vr_core::node`, "The contract"). An
//! adapter that fires timers after each connection's read sends exactly
//! one entry per Prepare here: this test then fails.
//!
//! Not a timed test: it counts entries per Prepare, never how fast.

use std::sync::Arc;

use vr_bench::load::{LoadSpec, Run, Stop};
use vr_bench::runtime::{run_load, Cluster, Runtime};

/// Concurrent clients: enough that several requests reach the primary
/// between two of its turns even on a loaded two-vCPU machine.
const CLIENTS: usize = 64;
/// Counted writes per client, after each client's first (unmeasured) one.
const WRITES_PER_CLIENT: u64 = 50;
/// The smallest mean that shows batching. Without it the mean is exactly
/// 1.0; with it, 64 closed-loop clients give several per Prepare.
const MEAN_ENTRIES_MIN: f64 = 2.0;

fn requests_of_many_connections_share_prepares(runtime: Runtime, cluster_id: u64) {
    let cluster = Cluster::start(runtime, cluster_id).expect("the cluster starts");
    let before = cluster.primary_stats();
    let run = Run::new(LoadSpec {
        clients: CLIENTS,
        op_size: 16,
        stop: Stop::Ops(CLIENTS as u64 * WRITES_PER_CLIENT),
        rate_per_sec: None,
    });
    run_load(runtime, &cluster.target(), &Arc::clone(&run), |_| {}).expect("the clients run");
    let result = run.result();
    let after = cluster.primary_stats();
    let views = cluster.views();
    cluster.stop();
    assert_eq!(result.errors, 0, "{runtime}: writes failed");
    assert_eq!(
        views,
        vec![0, 0, 0],
        "{runtime}: the primary must not change"
    );
    let batches = after.prepare_batches - before.prepare_batches;
    let entries = after.prepare_batch_entries - before.prepare_batch_entries;
    assert!(
        entries >= CLIENTS as u64 * WRITES_PER_CLIENT,
        "{runtime}: every write was prepared ({entries} entries)"
    );
    let mean = entries as f64 / batches as f64;
    eprintln!("{runtime}: {entries} entries in {batches} Prepares, {mean:.2} per Prepare");
    assert!(
        mean >= MEAN_ENTRIES_MIN,
        "{runtime}: {entries} entries in {batches} Prepares ({mean:.2} each): \
         requests from different connections did not share Prepares"
    );
}

#[test]
fn mio_batches_requests_across_connections() {
    requests_of_many_connections_share_prepares(Runtime::Mio, 0xba7c_0001);
}

#[test]
fn tokio_batches_requests_across_connections() {
    requests_of_many_connections_share_prepares(Runtime::Tokio, 0xba7c_0002);
}

#[test]
fn glommio_batches_requests_across_connections() {
    requests_of_many_connections_share_prepares(Runtime::Glommio, 0xba7c_0003);
}
