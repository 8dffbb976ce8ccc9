//! Each runtime on loopback, next to its floor, in one run:
//!
//! - `runtime/{mio,tokio,glommio}/floor/{16B,1KiB}/{clients}`: a plain TCP
//!   ping-pong with that runtime (message as long as the Request frame);
//! - `runtime/{mio,tokio,glommio}/vr/{16B,1KiB}/{clients}`: replicated
//!   writes to that runtime's 3-replica cluster, closed-loop clients of the
//!   same runtime.
//!
//! Throughput is in operations (round trips, or committed writes) per
//! second. Each sample starts fresh clients, lets each finish one
//! unmeasured operation (connecting), then times the sample's operations.
//! `cargo run --release -p vr-bench` gives the same comparison with
//! latency percentiles; these are for criterion's change detection.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vr_bench::load::{LoadSpec, Run, Stop};
use vr_bench::pingpong::{self, EchoServer};
use vr_bench::runtime::{run_load, Cluster, Runtime, Target};

const OP_SIZES: [(usize, &str); 2] = [(16, "16B"), (1024, "1KiB")];
const CLIENTS: [usize; 2] = [1, 64];

/// Time for `ops` operations by `clients` clients of `runtime` on `target`.
fn timed(runtime: Runtime, target: &Target, clients: usize, op_size: usize, ops: u64) -> Duration {
    let run: Arc<Run> = Run::new(LoadSpec {
        clients,
        op_size,
        stop: Stop::Ops(ops),
        rate_per_sec: None,
    });
    run_load(runtime, target, &run, |_| {}).expect("clients start");
    let result = run.result();
    assert_eq!(result.errors, 0, "{runtime}: operations failed");
    result.elapsed
}

fn runtimes(c: &mut Criterion) {
    let mut group = c.benchmark_group("runtime");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for (n, runtime) in Runtime::ALL.into_iter().enumerate() {
        let server = EchoServer::start(runtime).expect("echo server starts");
        for (op_size, op_name) in OP_SIZES {
            let target = Target::Echo {
                address: server.address(),
                message_bytes: pingpong::message_bytes(op_size),
            };
            for clients in CLIENTS {
                let id = BenchmarkId::new(format!("{runtime}/floor/{op_name}"), clients);
                group.bench_function(id, |b| {
                    b.iter_custom(|ops| timed(runtime, &target, clients, op_size, ops))
                });
            }
        }
        server.stop();

        let cluster = Cluster::start(runtime, 0xc817_0000 + n as u64).expect("cluster starts");
        let target = cluster.target();
        for (op_size, op_name) in OP_SIZES {
            for clients in CLIENTS {
                let id = BenchmarkId::new(format!("{runtime}/vr/{op_name}"), clients);
                group.bench_function(id, |b| {
                    b.iter_custom(|ops| timed(runtime, &target, clients, op_size, ops))
                });
            }
        }
        let views = cluster.views();
        if views.iter().any(|&v| v != 0) {
            eprintln!(
                "warning: the {runtime} cluster changed view during the benchmark: {views:?}"
            );
        }
        cluster.stop();
    }
    group.finish();
}

criterion_group!(benches, runtimes);
criterion_main!(benches);
