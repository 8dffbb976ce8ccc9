//! The comparison `cargo run --release -p vr-bench` runs: the core alone in
//! memory, then for each runtime in turn its 3-replica cluster at several
//! client counts and operation sizes, each row preceded by the ping-pong
//! floor of the same runtime, clients and size; with progress on stderr
//! while it runs.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{new_histogram, LoadSpec, Run, Stop};
use crate::mem::{MemCluster, MemSpec};
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
    /// `Config::batch_ops_max` values of the runtime rows: a cluster of
    /// each runs side by side, and each client count and size is measured
    /// on each (1 is no batching).
    pub batch_ops_max: Vec<u32>,
    /// `Config::batch_delay_ns` of the runtime clusters that batch
    /// (`batch_ops_max` above 1). 0, the default, holds a batch only until
    /// the replica's loop flushes the node, once per turn after feeding it
    /// every connection that was ready.
    pub batch_delay_ns: u64,
    /// Client counts of the core rows; empty skips the core.
    pub core_clients: Vec<usize>,
    /// `Config::batch_ops_max` values of the core rows.
    pub core_batch_ops_max: Vec<u32>,
    /// Read percentages for the core's leased-read rows: each is measured
    /// with leases off and on, at [`Plan::core_lease_clients`] clients and
    /// `Config`'s default batching. Empty: no such rows.
    pub core_read_percents: Vec<u8>,
    /// Clients of the core's leased-read rows.
    pub core_lease_clients: usize,
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
            batch_ops_max: vec![1, 64],
            batch_delay_ns: 0,
            core_clients: vec![1, 16, 256, 1024],
            core_batch_ops_max: vec![1, 64, 256],
            core_read_percents: vec![50, 100],
            core_lease_clients: 256,
            core_measure: Duration::from_secs(1),
            floor: true,
        }
    }

    /// `--quick`: every runtime, 1, 16 and 256 clients, 16-byte operations,
    /// short windows; well under a minute.
    pub fn quick() -> Plan {
        Plan {
            clients: vec![1, 16, 256],
            core_clients: vec![1, 16, 256],
            op_sizes: vec![16],
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(800),
            core_measure: Duration::from_millis(300),
            ..Plan::full()
        }
    }

    /// How many rows the plan produces.
    pub fn steps(&self) -> usize {
        let per_runtime = self.clients.len()
            * self.op_sizes.len()
            * (self.batch_ops_max.len() + usize::from(self.floor));
        let core = if self.core_clients.is_empty() {
            0
        } else {
            self.core_clients.len() * self.core_batch_ops_max.len()
                + 2 * self.core_read_percents.len()
        };
        self.runtimes.len() * per_runtime + core * self.op_sizes.len()
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
    for spec in core_specs(plan) {
        let label = progress.begin(&format!(
            "core in memory, {} B ops, {} clients, batch_ops_max {}, {}% reads{}",
            spec.op_size,
            spec.clients,
            spec.batch_ops_max,
            spec.read_percent,
            if spec.leases { ", leases" } else { "" }
        ));
        let row = run_core(spec, plan.core_measure);
        progress.end(&label, &row);
        rows.push(row);
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
        // A cluster per batch_ops_max, side by side (an idle one costs its
        // heartbeats), so that the rows of one client count and size are
        // taken one right after the other. A cluster id of its own each, so
        // a stray frame from an earlier cluster's socket could never be
        // taken for this one's.
        let mut clusters = Vec::new();
        for (b, &batch_ops_max) in plan.batch_ops_max.iter().enumerate() {
            let mut config = vr_core::Config::new(0xbe7c_0000 + (n * 16 + b) as u64, 3);
            config.batch_ops_max = batch_ops_max;
            if batch_ops_max > 1 {
                config.batch_delay_ns = plan.batch_delay_ns;
            }
            clusters.push(Cluster::start_with(runtime, config)?);
        }
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
                for cluster in &clusters {
                    let batch_ops_max = cluster.config.batch_ops_max;
                    let label = progress.begin(&format!(
                        "{runtime} replicated write, {op_size} B, {clients} clients, batch_ops_max {batch_ops_max}"
                    ));
                    let target = cluster.target();
                    let before = cluster.primary_stats();
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
                    let after = cluster.primary_stats();
                    row.batch_ops_max = Some(batch_ops_max);
                    row.prepare_batch_mean = batch_mean(&before, &after);
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
        }
        for cluster in clusters {
            cluster.stop();
        }
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
        None,
        result.ops,
        result.elapsed.as_secs_f64(),
        &result.latency_ns,
        result.errors,
    ))
}

/// The core rows of `plan`: every client count and `batch_ops_max`, then
/// the leased-read pairs, for each operation size.
pub fn core_specs(plan: &Plan) -> Vec<MemSpec> {
    let mut specs = Vec::new();
    if plan.core_clients.is_empty() {
        return specs;
    }
    let default_batch = vr_core::Config::new(1, 3).batch_ops_max;
    for &op_size in &plan.op_sizes {
        for &batch_ops_max in &plan.core_batch_ops_max {
            for &clients in &plan.core_clients {
                specs.push(MemSpec {
                    batch_ops_max,
                    ..MemSpec::writes(clients, op_size)
                });
            }
        }
        for &read_percent in &plan.core_read_percents {
            for leases in [false, true] {
                specs.push(MemSpec {
                    clients: plan.core_lease_clients,
                    op_size,
                    batch_ops_max: default_batch,
                    leases,
                    read_percent,
                    witness: false,
                });
            }
        }
    }
    specs
}

/// Mean entries per Prepare between two snapshots of a primary's counters.
fn batch_mean(before: &vr_core::Stats, after: &vr_core::Stats) -> Option<f64> {
    let batches = after.prepare_batches.checked_sub(before.prepare_batches)?;
    let entries = after
        .prepare_batch_entries
        .checked_sub(before.prepare_batch_entries)?;
    (batches > 0).then(|| entries as f64 / batches as f64)
}

/// The core alone: a closed loop of `spec.clients` clients, warmed up, then
/// measured for about `duration` in slices (the clock is read between
/// slices; latency is sampled, see [`MemCluster::record_latency`]).
pub fn run_core(spec: MemSpec, duration: Duration) -> Row {
    let mut cluster = MemCluster::with_spec(spec);
    // Fills the pipeline and takes the first checkpoints.
    let warmup_ops = (20 * spec.clients as u64).max(10_000);
    cluster.closed_loop(warmup_ops);
    let slice_ops = (4 * spec.clients as u64).max(2_000);
    let before = cluster.replicas()[0].stats().clone();
    cluster.record_latency(new_histogram());
    let start = Instant::now();
    let mut ops = 0;
    while start.elapsed() < duration {
        ops += cluster.closed_loop(slice_ops);
    }
    let elapsed = start.elapsed();
    let latency_ns = cluster.take_latency().unwrap_or_else(new_histogram);
    let after = cluster.replicas()[0].stats().clone();
    let mut row = Row::new(
        "core",
        Kind::Core,
        spec.op_size,
        spec.clients,
        Some(spec.batch_ops_max),
        ops,
        elapsed.as_secs_f64(),
        &latency_ns,
        0,
    );
    row.prepare_batch_mean = batch_mean(&before, &after);
    row.read_percent = spec.read_percent;
    row.leases = spec.leases;
    row
}
