//! A fixed amount of core work for a profiler: the in-memory cluster of
//! `vr_bench::mem` runs rounds of `batch` requests (or, with `closed`, a
//! closed loop of that many clients) until `ops` requests have completed.
//!
//! ```sh
//! cargo build --release -p vr-bench --example profile_core
//! valgrind --tool=callgrind target/release/examples/profile_core 16 1 200000
//! perf record -g target/release/examples/profile_core 16 1 2000000
//! ```
//!
//! Arguments: op size in bytes, batch (or clients), operations, and
//! optionally `closed`. Prints the rate, which under a profiler means little.

use std::time::Instant;

use vr_bench::mem::MemCluster;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| {
        args.get(i)
            .map(|a| a.parse().expect("numeric arguments: op size, batch, ops"))
            .unwrap_or(default)
    };
    let (op_size, batch, ops) = (arg(0, 16) as usize, arg(1, 1) as usize, arg(2, 200_000));
    let closed = args.get(3).is_some_and(|a| a == "closed");
    let mut cluster = MemCluster::new(batch, op_size);
    let start = Instant::now();
    if closed {
        cluster.run_closed_loop(ops);
    } else {
        while cluster.completed() < ops {
            cluster.submit(batch);
            cluster.drive();
        }
    }
    let elapsed = start.elapsed();
    println!(
        "{} ops of {op_size} B, {} {batch}: {:.0} ops/s",
        cluster.completed(),
        if closed { "clients" } else { "batch" },
        cluster.completed() as f64 / elapsed.as_secs_f64()
    );
}
