//! `cargo run --release -p vr-bench --bin durable`: durable replicated
//! writes (issue 18) on each runtime, beside a plain fsync-per-write floor
//! on the same disk, in one run.
//!
//! - **floor**: one thread appending a 4 KiB block to a file and
//!   `fdatasync`ing it, again and again: what one durable write costs with
//!   no replication and no batching (a WAL without group commit).
//! - **durable rows**: three replicas of a runtime on loopback with
//!   `Durability::Disk`, data directories under `--dir`, 16-byte ops from
//!   1, 16 and 256 closed-loop clients; a write is acknowledged once a
//!   quorum (the primary and one backup) has it on disk. `persists/write`
//!   is the primary's persists per committed write: each carries a batch
//!   of entries and costs one `fdatasync` of the log (plus the
//!   superblock's when a view changes), so it is the fsyncs per write.
//!   Group commit makes it fall as clients are added.
//!
//! The rows are taken one after another in one process, a floor row right
//! before each runtime's, so that a change in the machine's load shows in
//! both. Quote medians of several
//! runs, and the ratios to the floor of the same run.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use vr_bench::load::{new_histogram, LoadSpec, Run, Stop};
use vr_bench::runtime::{run_load, Cluster, Runtime};

#[derive(Parser, Debug)]
#[command(about = "Durable replicated writes per runtime, beside a plain fsync loop")]
struct Args {
    /// Runtimes [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    runtime: Vec<Runtime>,
    /// Client counts [default: 1,16,256].
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Seconds measured per row.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of warm-up per row.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Where the data directories go (emptied first) [default:
    /// target/vr-bench/durable]. Put it on the disk you want to measure.
    #[arg(long)]
    dir: Option<PathBuf>,
}

struct Row {
    what: String,
    clients: usize,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    persists_per_write: Option<f64>,
    errors: u64,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtimes = if args.runtime.is_empty() {
        Runtime::ALL.to_vec()
    } else {
        args.runtime.clone()
    };
    let clients = if args.clients.is_empty() {
        vec![1, 16, 256]
    } else {
        args.clients.clone()
    };
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/vr-bench/durable"));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::create_dir_all(&root)?;
    let measure = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);
    let mut rows = Vec::new();
    for (n, &runtime) in runtimes.iter().enumerate() {
        // The floor right before each runtime's rows: the disk's speed
        // drifts (other tenants, the device's own cache), and a ratio to a
        // floor taken minutes earlier would carry that drift.
        rows.push(fsync_floor(&root, warmup, measure)?);
        print_row(rows.last().unwrap());
        let config = vr_core::Config::new(0xd15c_0000 + n as u64, 3);
        let cluster = Cluster::start_durable(runtime, config, &root.join(runtime.name()))?;
        wait_for_primary(&cluster);
        for &c in &clients {
            let before = cluster.replica_stats(0);
            let run = Run::new(LoadSpec {
                clients: c,
                op_size: 16,
                stop: Stop::Window { warmup, measure },
                rate_per_sec: None,
            });
            run_load(runtime, &cluster.target(), &run, |_| {})?;
            let after = cluster.replica_stats(0);
            let result = run.result();
            let committed = after.ops_executed.saturating_sub(before.ops_executed);
            let persists = after
                .persists_completed
                .saturating_sub(before.persists_completed);
            let row = Row {
                what: format!("{runtime} durable"),
                clients: c,
                ops_per_sec: result.ops_per_sec(),
                p50_us: result.latency_ns.value_at_quantile(0.5) as f64 / 1e3,
                p99_us: result.latency_ns.value_at_quantile(0.99) as f64 / 1e3,
                persists_per_write: (committed > 0).then(|| persists as f64 / committed as f64),
                errors: result.errors,
            };
            print_row(&row);
            rows.push(row);
        }
        let views: Vec<u64> = (0..3).map(|i| cluster.node_stats(i).view).collect();
        if views.iter().any(|&v| v != 0) {
            eprintln!("warning: {runtime} cluster changed view during the run: {views:?}");
        }
        cluster.stop();
    }
    println!();
    println!("| what | clients | ops/s | p50 µs | p99 µs | persists (fdatasyncs) per write at the primary | vs floor |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut floor = f64::NAN;
    for row in &rows {
        if row.persists_per_write.is_none() {
            floor = row.ops_per_sec;
        }
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {:.2}× |",
            row.what,
            row.clients,
            row.ops_per_sec,
            row.p50_us,
            row.p99_us,
            row.persists_per_write
                .map_or("1 (by construction)".to_owned(), |p| format!("{p:.3}")),
            row.ops_per_sec / floor
        );
    }
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

fn print_row(row: &Row) {
    eprintln!(
        "{:<16} {:>4} clients: {:>9.0} ops/s  p50 {:>7.0} µs  p99 {:>7.0} µs  persists/write {}  errors {}",
        row.what,
        row.clients,
        row.ops_per_sec,
        row.p50_us,
        row.p99_us,
        row.persists_per_write
            .map_or("-".to_owned(), |p| format!("{p:.3}")),
        row.errors
    );
}

/// Waits until replica 0 is the normal primary of a formed cluster.
fn wait_for_primary(cluster: &Cluster) {
    let start = Instant::now();
    while !(0..3).any(|i| {
        let s = cluster.node_stats(i);
        s.primary && s.status == Some(vr_core::Status::Normal)
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the durable cluster did not form"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One thread appending 4 KiB and fdatasyncing, for `warmup + measure`.
fn fsync_floor(root: &Path, warmup: Duration, measure: Duration) -> std::io::Result<Row> {
    let path = root.join("fsync-floor");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let block = vec![0x5au8; 4096];
    let mut latency = new_histogram();
    let start = Instant::now();
    let mut ops = 0u64;
    let mut measured_from = None;
    loop {
        let now = Instant::now();
        let elapsed = now - start;
        if elapsed >= warmup + measure {
            break;
        }
        file.write_all(&block)?;
        file.sync_data()?;
        if elapsed >= warmup {
            measured_from.get_or_insert(now);
            ops += 1;
            let _ = latency.record(now.elapsed().as_nanos() as u64);
        }
    }
    let window = measured_from.map_or(measure, |from| from.elapsed());
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Row {
        what: "fsync floor".to_owned(),
        clients: 1,
        ops_per_sec: ops as f64 / window.as_secs_f64(),
        p50_us: latency.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: latency.value_at_quantile(0.99) as f64 / 1e3,
        persists_per_write: None,
        errors: 0,
    })
}
