//! The core alone: a 3-replica cluster wired in memory, no IO, no encoding
//! (see `vr_bench::mem`). One thread, one core.
//!
//! - `core/batch/{16B,1KiB}/{1,16,256}`: submit a "batch" of that many
//!   requests from as many idle clients, then drive the cluster until every
//!   one has its Reply. NOT Prepare batching: the core puts each request in
//!   mostly a Prepare of its own in this harness; a batch here is requests in
//!   flight together.
//! - `core/closed_loop/{16B,1KiB}/{clients}`: many clients in flight, each
//!   sending its next request as soon as its reply arrives.
//!
//! Throughput is in committed operations (elements) per second.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vr_bench::mem::MemCluster;

/// A fresh cluster after this many operations, so that a sample's cost
/// does not depend on how long the benchmark has run: it keeps memory
/// bounded whatever the core retains (before checkpoints, the logs grew
/// without bound and millions of 1 KiB operations measured page faults as
/// much as the protocol).
const OPS_PER_CLUSTER: u64 = 200_000;

const OP_SIZES: [(usize, &str); 2] = [(16, "16B"), (1024, "1KiB")];

fn batch(c: &mut Criterion) {
    println!("core/batch: a batch is requests submitted before the cluster is driven; not Config::batch_ops_max (the harness drains after every message)");
    let mut group = c.benchmark_group("core/batch");
    group.measurement_time(Duration::from_secs(3));
    for (op_size, op_name) in OP_SIZES {
        for batch in [1usize, 16, 256] {
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(op_name, batch), &batch, |b, &batch| {
                let mut cluster = MemCluster::new(batch, op_size);
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        if cluster.completed() >= OPS_PER_CLUSTER {
                            cluster = MemCluster::new(batch, op_size);
                        }
                        let start = Instant::now();
                        cluster.submit(batch);
                        let done = cluster.drive();
                        elapsed += start.elapsed();
                        debug_assert_eq!(done, batch as u64);
                    }
                    elapsed
                });
            });
        }
    }
    group.finish();
}

fn closed_loop(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/closed_loop");
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for (op_size, op_name) in OP_SIZES {
        for clients in [64usize, 1024] {
            group.bench_with_input(
                BenchmarkId::new(op_name, clients),
                &clients,
                |b, &clients| {
                    b.iter_custom(|iters| {
                        // Whole clusters of OPS_PER_CLUSTER operations, then the
                        // rest; the time per operation includes filling and
                        // draining the pipeline once per cluster.
                        let mut elapsed = Duration::ZERO;
                        let mut left = iters;
                        while left > 0 {
                            let ops = left.min(OPS_PER_CLUSTER);
                            let mut cluster = MemCluster::new(clients, op_size);
                            let start = Instant::now();
                            let done = cluster.run_closed_loop(ops);
                            // The in-flight tail also completed: scale to `ops`.
                            elapsed += start.elapsed().mul_f64(ops as f64 / done as f64);
                            left -= ops;
                        }
                        elapsed
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, batch, closed_loop);
criterion_main!(benches);
