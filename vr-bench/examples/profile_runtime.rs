//! A fixed amount of loopback work for a profiler or `strace -c`: `ops`
//! replicated writes (`vr`) or ping-pong round trips (`floor`) by `clients`
//! closed-loop clients of one runtime, after one unmeasured operation per
//! client.
//!
//! ```sh
//! cargo build --release -p vr-bench --example profile_runtime
//! strace -f -c -o syscalls.txt target/release/examples/profile_runtime mio vr 1 20000
//! perf record -g target/release/examples/profile_runtime tokio vr 64 500000
//! ```
//!
//! Arguments: runtime (`mio`, `tokio`, `glommio`), `vr` or `floor`,
//! clients, operations, and optionally the op size in bytes (16).

use clap::ValueEnum;
use vr_bench::load::{LoadSpec, Run, Stop};
use vr_bench::pingpong::{message_bytes, EchoServer};
use vr_bench::runtime::{run_load, Cluster, Runtime, Target};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: profile_runtime mio|tokio|glommio vr|floor CLIENTS OPS [OP_SIZE]";
    let runtime = Runtime::from_str(args.first().expect(usage), true).expect(usage);
    let vr = args.get(1).expect(usage) == "vr";
    let number = |i: usize, default: u64| {
        args.get(i)
            .map(|a| a.parse::<u64>().expect(usage))
            .unwrap_or(default)
    };
    let (clients, ops, op_size) = (
        number(2, 1) as usize,
        number(3, 10_000),
        number(4, 16) as usize,
    );
    let run = Run::new(LoadSpec {
        clients,
        op_size,
        stop: Stop::Ops(ops),
        rate_per_sec: None,
    });
    if vr {
        let cluster = Cluster::start(runtime, 0x9f0f)?;
        run_load(runtime, &cluster.target(), &run, |_| {})?;
        cluster.stop();
    } else {
        let server = EchoServer::start(runtime)?;
        let target = Target::Echo {
            address: server.address(),
            message_bytes: message_bytes(op_size),
        };
        run_load(runtime, &target, &run, |_| {})?;
        server.stop();
    }
    let result = run.result();
    println!(
        "{runtime} {}: {} ops in {:.3} s, {:.0} ops/s, p50 {:.1} us, {} errors",
        if vr { "vr" } else { "floor" },
        result.ops,
        result.elapsed.as_secs_f64(),
        result.ops_per_sec(),
        result.latency_ns.value_at_quantile(0.5) as f64 / 1000.0,
        result.errors
    );
    Ok(())
}
