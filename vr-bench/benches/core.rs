//! The core alone: a 3-replica cluster wired in memory, no IO, no encoding
//! (see `vr_bench::mem`). One thread, one core. Every benchmark is a closed
//! loop (each client sends its next request as soon as its reply arrives)
//! on one cluster that keeps running from one sample to the next: the log
//! and the client table stay bounded (checkpoints), so this is the steady
//! state.
//!
//! - `core/batching/{16B,1KiB}/{batch_ops_max}/{clients}`: Prepare
//!   batching off (`batch_ops_max` 1), at `Config`'s default (64) and at
//!   256, with many clients in flight.
//! - `core/one_client/16B`: one client, one request at a time (every
//!   Prepare carries one request whatever `batch_ops_max`).
//! - `core/leased_reads/16B/{reads}pct_{lease,log}/256`: a share of the
//!   requests read-only, answered by the primary under its lease, or
//!   through the log without leases.
//!
//! Throughput is in completed requests (elements) per second.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vr_bench::mem::{MemCluster, MemSpec};

/// Warm-up in requests per client before criterion's own: fills the
/// pipeline and takes the first checkpoints.
const WARMUP_OPS_PER_CLIENT: u64 = 20;

/// Times `iters` requests of a closed loop on `cluster`.
fn closed_loop(cluster: &mut MemCluster, iters: u64) -> Duration {
    let start = Instant::now();
    let done = cluster.closed_loop(iters);
    // The last turn may complete a few more than asked: scale to `iters`.
    start.elapsed().mul_f64(iters as f64 / done.max(1) as f64)
}

fn warmed_up(spec: MemSpec) -> MemCluster {
    let mut cluster = MemCluster::with_spec(spec);
    cluster.closed_loop((WARMUP_OPS_PER_CLIENT * spec.clients as u64).max(10_000));
    cluster
}

fn batching(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/batching");
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    // 1 KiB at one client count only: the batching gain shows there too,
    // and criterion's time is better spent on the 16-byte curve.
    let cases: [(usize, &str, &[usize]); 2] =
        [(16, "16B", &[16, 256, 1024]), (1024, "1KiB", &[256])];
    for (op_size, op_name, clients_list) in cases {
        for batch_ops_max in [1u32, 64, 256] {
            for &clients in clients_list {
                let spec = MemSpec {
                    batch_ops_max,
                    ..MemSpec::writes(clients, op_size)
                };
                let id = BenchmarkId::new(format!("{op_name}/{batch_ops_max}"), clients);
                group.bench_with_input(id, &spec, |b, &spec| {
                    let mut cluster = warmed_up(spec);
                    b.iter_custom(|iters| closed_loop(&mut cluster, iters));
                });
            }
        }
    }
    group.finish();
}

fn one_client(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/one_client");
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("16B", |b| {
        let mut cluster = warmed_up(MemSpec::writes(1, 16));
        b.iter_custom(|iters| closed_loop(&mut cluster, iters));
    });
    group.finish();
}

/// Witnesses (§6): the same workload on 3 full replicas and on 2 full
/// replicas and a witness (replica 2), which acknowledges Prepares but
/// executes nothing. All replicas share this one thread, so the figure is
/// the whole cluster's CPU per committed op.
fn witnesses(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/witnesses");
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for (op_size, op_name) in [(16usize, "16B"), (1024, "1KiB")] {
        for witness in [false, true] {
            let spec = MemSpec {
                witness,
                ..MemSpec::writes(256, op_size)
            };
            let name = format!("{op_name}/{}", if witness { "witness" } else { "full" });
            group.bench_with_input(BenchmarkId::new(name, 256), &spec, |b, &spec| {
                let mut cluster = warmed_up(spec);
                b.iter_custom(|iters| closed_loop(&mut cluster, iters));
            });
        }
    }
    group.finish();
}

fn leased_reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/leased_reads");
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for read_percent in [50u8, 100] {
        for leases in [false, true] {
            let spec = MemSpec {
                leases,
                read_percent,
                ..MemSpec::writes(256, 16)
            };
            let name = format!(
                "16B/{read_percent}pct_{}",
                if leases { "lease" } else { "log" }
            );
            group.bench_with_input(BenchmarkId::new(name, 256), &spec, |b, &spec| {
                let mut cluster = warmed_up(spec);
                b.iter_custom(|iters| closed_loop(&mut cluster, iters));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, batching, one_client, leased_reads, witnesses);
criterion_main!(benches);
