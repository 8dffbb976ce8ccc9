//! A fixed amount of core work for a profiler: the in-memory cluster of
//! `vr_bench::mem` runs a closed loop of `clients` clients until `ops`
//! requests have completed.
//!
//! ```sh
//! cargo build --release -p vr-bench --example profile_core
//! valgrind --tool=callgrind target/release/examples/profile_core 16 1024 200000 1
//! perf record -g target/release/examples/profile_core 16 256 2000000 256
//! target/release/examples/profile_core 16 256 2000000 64 100 lease
//! ```
//!
//! Arguments: op size in bytes, clients, operations, then optionally
//! `batch_ops_max` (default 64), the percentage of read-only requests
//! (default 0) and `lease` for leased reads; `witness` anywhere makes
//! replica 2 a witness. Prints the rate (which under a
//! profiler means little) and the mean entries per Prepare.

use std::time::Instant;

use vr_bench::mem::{MemCluster, MemSpec};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| {
        args.get(i)
            .map(|a| {
                a.parse()
                    .expect("numeric arguments: op size, clients, ops, batch_ops_max, read %")
            })
            .unwrap_or(default)
    };
    let spec = MemSpec {
        clients: arg(1, 1) as usize,
        op_size: arg(0, 16) as usize,
        batch_ops_max: arg(3, 64) as u32,
        read_percent: arg(4, 0) as u8,
        leases: args.get(5).is_some_and(|a| a == "lease"),
        witness: args.iter().any(|a| a == "witness"),
    };
    let ops = arg(2, 200_000);
    let mut cluster = MemCluster::with_spec(spec);
    let start = Instant::now();
    cluster.run_closed_loop(ops);
    let elapsed = start.elapsed();
    let stats = cluster.replicas()[0].stats();
    println!(
        "{} ops, {spec:?}: {:.0} ops/s; {:.1} entries per Prepare, {} leased reads",
        cluster.completed(),
        cluster.completed() as f64 / elapsed.as_secs_f64(),
        stats.prepare_batch_entries as f64 / stats.prepare_batches.max(1) as f64,
        stats.leased_reads,
    );
}
