//! The comparison `cargo run --release -p vr-bench` runs: the core alone in
//! memory, then for each runtime in turn its 3-replica cluster at several
//! client counts and operation sizes, each row preceded by the ping-pong
//! floor of the same runtime, clients and size; with progress on stderr
//! while it runs.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{new_histogram, LoadSpec, Run, Stop};
use crate::mem::MemCluster;
use crate::pingpong::{self, EchoServer};
use crate::report::{attach_floors, load_average, standard_notes, Kind, Machine, Report, Row};
use crate::runtime::{run_load, Cluster, Runtime, Target};

/// What to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Runtimes, measured in this order.
    pub runtimes: Vec<Runtime>,
    /// Client counts, for the clusters and the floors.
    pub clients: Vec<usize>,
    /// Operation sizes in bytes.
    pub op_sizes: Vec<usize>,
    /// Unmeasured time per row, after every client is connected.
    pub warmup: Duration,
    /// Measured time per row.
    pub measure: Duration,
    /// Open loop at this many operations per second (over all clients);
    /// `None` for a closed loop.
    pub rate_per_sec: Option<f64>,
    /// Core "batches" (requests submitted before driving); empty skips the core.
    pub core_batches: Vec<usize>,
    /// Measured time per core row.
    pub core_measure: Duration,
    /// Whether to measure the ping-pong floors.
    pub floor: bool,
}

impl Plan {
    /// The full comparison: a few minutes.
    pub fn full() -> Plan {
        Plan {
            runtimes: Runtime::ALL.to_vec(),
            clients: vec![1, 4, 16, 64, 256],
            op_sizes: vec![16, 1024],
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(2),
            rate_per_sec: None,
            core_batches: vec![1, 16, 256],
            core_measure: Duration::from_secs(1),
            floor: true,
        }
    }

    /// `--quick`: every runtime, 1, 16 and 256 clients, 16-byte operations,
    /// short windows; well under a minute.
    pub fn quick() -> Plan {
        Plan {
            clients: vec![1, 16, 256],
            op_sizes: vec![16],
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(800),
            core_measure: Duration::from_millis(300),
            ..Plan::full()
        }
    }

    /// How many rows the plan produces.
    pub fn steps(&self) -> usize {
        let per_runtime = self.clients.len() * self.op_sizes.len() * (1 + usize::from(self.floor));
        self.runtimes.len() * per_runtime + self.core_batches.len() * self.op_sizes.len()
    }
}

/// Prints progress on stderr: a line per row, rewritten in place while the
/// row runs when stderr is a terminal.
struct Progress {
    step: usize,
    steps: usize,
    live: bool,
    quiet: bool,
}

impl Progress {
    fn begin(&mut self, what: &str) -> String {
        self.step += 1;
        let label = format!("[{:>2}/{}] {what}", self.step, self.steps);
        if self.live && !self.quiet {
            eprint!("\r\x1b[2K{label} ...");
            let _ = std::io::stderr().flush();
        }
        label
    }

    fn update(&self, label: &str, run: &Run) {
        if !self.live || self.quiet {
            return;
        }
        let state = match run.started_at() {
            None => "connecting".to_owned(),
            Some(go) => {
                let (warmup, measure) = match run.spec().stop {
                    Stop::Window { warmup, measure } => (warmup, measure),
                    Stop::Ops(_) => (Duration::ZERO, Duration::MAX),
                };
                let at = go.elapsed();
                if at < warmup {
                    format!("warming up {:.1}s", at.as_secs_f64())
                } else {
                    let measured = (at - warmup).min(measure).as_secs_f64();
                    format!(
                        "measuring {measured:.1}s, {:.0} ops/s",
                        run.counted() as f64 / measured.max(1e-3)
                    )
                }
            }
        };
        eprint!("\r\x1b[2K{label}: {state}");
        let _ = std::io::stderr().flush();
    }

    fn end(&self, label: &str, row: &Row) {
        if self.quiet {
            return;
        }
        if self.live {
            eprint!("\r\x1b[2K");
        }
        eprintln!(
            "{label}: {:.0} ops/s, p50 {:.1} us, p99 {:.1} us{}",
            row.ops_per_sec,
            row.p50_us,
            row.p99_us,
            if row.errors > 0 {
                format!(", {} errors", row.errors)
            } else {
                String::new()
            }
        );
    }
}

/// Runs `plan`; progress goes to stderr unless `quiet`.
pub fn run(plan: &Plan, quiet: bool) -> std::io::Result<Report> {
    let mut machine = Machine::probe();
    let mut progress = Progress {
        step: 0,
        steps: plan.steps(),
        live: std::io::stderr().is_terminal(),
        quiet,
    };
    let mut rows = Vec::new();
    for &op_size in &plan.op_sizes {
        for &batch in &plan.core_batches {
            let label = progress.begin(&format!("core in memory, {op_size} B ops, batch {batch}"));
            let row = run_core(op_size, batch, plan.core_measure);
            progress.end(&label, &row);
            rows.push(row);
        }
    }
    for (n, &runtime) in plan.runtimes.iter().enumerate() {
        // The floor's server and the cluster run side by side, and each
        // floor row is taken right before its VR row, so that a change in
        // the machine's load between the two shows in both. The idle one
        // costs little: a stop-flag check every 10 ms, or heartbeats.
        let server = if plan.floor {
            Some(EchoServer::start(runtime)?)
        } else {
            None
        };
        // A cluster id of its own per runtime, so a stray frame from an
        // earlier cluster's socket could never be taken for this one's.
        let cluster = Cluster::start(runtime, 0xbe7c_0000 + n as u64)?;
        for &op_size in &plan.op_sizes {
            for &clients in &plan.clients {
                if let Some(server) = &server {
                    let label = progress.begin(&format!(
                        "{runtime} ping-pong, {op_size} B, {clients} clients"
                    ));
                    let target = Target::Echo {
                        address: server.address(),
                        message_bytes: pingpong::message_bytes(op_size),
                    };
                    let row = measure(
                        plan,
                        runtime,
                        Kind::Floor,
                        &target,
                        op_size,
                        clients,
                        &mut progress,
                        &label,
                    )?;
                    progress.end(&label, &row);
                    rows.push(row);
                }
                let label = progress.begin(&format!(
                    "{runtime} replicated write, {op_size} B, {clients} clients"
                ));
                let target = cluster.target();
                let mut row = measure(
                    plan,
                    runtime,
                    Kind::Vr,
                    &target,
                    op_size,
                    clients,
                    &mut progress,
                    &label,
                )?;
                row.views = cluster.views();
                if row.views.iter().any(|&v| v != 0) && !quiet {
                    eprintln!(
                        "warning: {runtime} cluster changed view during the run: {:?}",
                        row.views
                    );
                }
                progress.end(&label, &row);
                rows.push(row);
            }
        }
        cluster.stop();
        if let Some(server) = server {
            server.stop();
        }
    }
    attach_floors(&mut rows);
    machine.load_after = load_average();
    let load = match plan.rate_per_sec {
        None => "closed loop".to_owned(),
        Some(rate) => {
            format!("open loop at {rate} ops/s over all clients, latency from intended send time")
        }
    };
    Ok(Report {
        machine,
        load,
        warmup_s: plan.warmup.as_secs_f64(),
        measure_s: plan.measure.as_secs_f64(),
        notes: standard_notes(),
        rows,
    })
}

#[allow(clippy::too_many_arguments)]
fn measure(
    plan: &Plan,
    runtime: Runtime,
    kind: Kind,
    target: &Target,
    op_size: usize,
    clients: usize,
    progress: &mut Progress,
    label: &str,
) -> std::io::Result<Row> {
    let run: Arc<Run> = Run::new(LoadSpec {
        clients,
        op_size,
        stop: Stop::Window {
            warmup: plan.warmup,
            measure: plan.measure,
        },
        rate_per_sec: plan.rate_per_sec,
    });
    run_load(runtime, target, &run, |run| progress.update(label, run))?;
    let result = run.result();
    Ok(Row::new(
        runtime.name(),
        kind,
        op_size,
        clients,
        1,
        result.ops,
        result.elapsed.as_secs_f64(),
        &result.latency_ns,
        result.errors,
    ))
}

/// The core alone: rounds of `batch` requests submitted together and driven
/// to completion, for about `duration`. Each request's latency is its
/// round's duration (all were submitted at the start, the last answered at
/// the end), so the percentiles are those of whole rounds.
pub fn run_core(op_size: usize, batch: usize, duration: Duration) -> Row {
    /// A fresh cluster after this many operations; see `benches/core.rs`.
    const OPS_PER_CLUSTER: u64 = 200_000;
    let mut cluster = MemCluster::new(batch, op_size);
    let mut latency_ns = new_histogram();
    let mut elapsed = Duration::ZERO;
    let mut ops = 0;
    while elapsed < duration {
        if cluster.completed() >= OPS_PER_CLUSTER {
            cluster = MemCluster::new(batch, op_size);
        }
        let start = Instant::now();
        cluster.submit(batch);
        let done = cluster.drive();
        let round = start.elapsed();
        elapsed += round;
        ops += done;
        latency_ns.saturating_record_n(round.as_nanos().max(1) as u64, done);
    }
    Row::new(
        "core",
        Kind::Core,
        op_size,
        batch,
        batch,
        ops,
        elapsed.as_secs_f64(),
        &latency_ns,
        0,
    )
}
