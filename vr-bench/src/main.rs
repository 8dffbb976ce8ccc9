//! `cargo run --release -p vr-bench`: compares the runtime adapters on
//! loopback against each runtime's TCP ping-pong floor and the core alone,
//! prints a table, and writes `results.json` and `chart.svg` under
//! `target/vr-bench/`. `vr-bench restart` times killed `vr-kv node`
//! processes back to normal instead. See `docs/benchmarks.md`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vr_bench::report::{table, write_chart, write_json};
use vr_bench::restart::{restart_table, run_restarts, Mode, RestartPlan, Victim};
use vr_bench::runner::{run, Plan};
use vr_bench::runtime::Runtime;

/// Replicated writes per second and their latency, per runtime, next to
/// what loopback TCP allows.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Subcommands>,
    /// A short run (under a minute): 1, 16 and 256 clients, 16-byte
    /// operations, batch_ops_max 1 and 64. Other options override its
    /// choices.
    #[arg(long)]
    quick: bool,
    /// Runtimes to measure [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    runtime: Vec<Runtime>,
    /// Client counts [default: 1,4,16,64,256].
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Operation sizes in bytes [default: 16,1024].
    #[arg(long, value_delimiter = ',')]
    op_size: Vec<usize>,
    /// Seconds measured per row [default: 2, quick 0.8].
    #[arg(long)]
    seconds: Option<f64>,
    /// Seconds of warm-up per row, after the clients connect [default: 0.5,
    /// quick 0.2].
    #[arg(long)]
    warmup: Option<f64>,
    /// Open loop: send at this many operations per second over all clients
    /// and measure latency from each operation's intended send time (no
    /// coordinated omission). Default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// `Config::batch_ops_max` of the runtime clusters, one cluster each;
    /// 1 is no Prepare batching [default: 1,64].
    #[arg(long, value_delimiter = ',')]
    batch_ops_max: Vec<u32>,
    /// `Config::batch_delay_ns` in microseconds for the runtime clusters
    /// that batch: how long the primary may hold a batch that is not full
    /// [default: 0, a batch leaves when the replica's loop flushes the
    /// node after feeding it every connection ready in one turn].
    #[arg(long)]
    batch_delay_us: Option<f64>,
    /// Client counts of the core rows [default: 1,16,256,1024; quick
    /// 1,16,256].
    #[arg(long, value_delimiter = ',')]
    core_clients: Vec<usize>,
    /// `Config::batch_ops_max` of the core rows [default: 1,64,256].
    #[arg(long, value_delimiter = ',')]
    core_batch_ops_max: Vec<u32>,
    /// Read percentages of the core's leased-read rows, each with leases
    /// off and on, at 256 clients [default: 50,100].
    #[arg(long, value_delimiter = ',')]
    core_reads: Vec<u8>,
    /// Skip the in-memory core rows.
    #[arg(long)]
    no_core: bool,
    /// Skip the ping-pong floors.
    #[arg(long)]
    no_floor: bool,
    /// Where to write results.json and chart.svg [default: target/vr-bench].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Subcommands {
    /// Restart to normal: kills a backup or the primary of three `vr-kv
    /// node` processes under load, restarts it with the same command, and
    /// times it until it is normal with every write committed at the kill.
    Restart(RestartArgs),
}

/// `vr-bench restart`'s options.
#[derive(clap::Args, Debug)]
struct RestartArgs {
    /// The vr-kv binary [default: vr-kv beside this binary].
    #[arg(long)]
    vr_kv: Option<PathBuf>,
    /// Runtimes [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    runtime: Vec<Runtime>,
    /// Durable, diskless [default: both].
    #[arg(long, value_enum, value_delimiter = ',')]
    mode: Vec<Mode>,
    /// Which replica to kill [default: backup,primary].
    #[arg(long, value_enum, value_delimiter = ',')]
    victim: Vec<Victim>,
    /// Trials per runtime, mode and victim.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// Keys written before the trials, and overwritten during them.
    #[arg(long, default_value_t = 20_000)]
    keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 150)]
    value_bytes: usize,
    /// Writers during the trials.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// SETs per second of all writers together [default: closed loop,
    /// each writer sends its next SET when the last is answered].
    #[arg(long)]
    rate: Option<f64>,
    /// Milliseconds under load between a healthy cluster and the next kill.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// Seconds after which a trial counts as failed.
    #[arg(long, default_value_t = 20)]
    timeout_secs: u64,
    /// Keep the nodes' logs and data directories (printed).
    #[arg(long)]
    keep: bool,
}

fn restart(args: RestartArgs) -> std::io::Result<()> {
    let vr_kv = match args.vr_kv {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("vr-kv"),
    };
    let plan = RestartPlan {
        vr_kv,
        runtimes: or_all(args.runtime, &Runtime::ALL),
        modes: or_all(args.mode, &[Mode::Disk, Mode::Diskless]),
        victims: or_all(args.victim, &[Victim::Backup, Victim::Primary]),
        trials: args.trials.max(1),
        keys: args.keys.max(1),
        value_bytes: args.value_bytes,
        writers: args.writers,
        rate_per_sec: args.rate,
        settle: Duration::from_millis(args.settle_ms),
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
        work_dir: std::env::temp_dir(),
        keep: args.keep,
    };
    eprintln!(
        "vr-bench restart: load average {} ({} CPUs); {} trials each",
        vr_bench::report::load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        plan.trials
    );
    let rows = run_restarts(&plan)?;
    println!();
    print!("{}", restart_table(&rows));
    println!(
        "restart to normal: from spawning the killed node's process until its VR.STATUS says \
         status:normal with the commit_number the primary had at the kill; load average after {}",
        vr_bench::report::load_average()
    );
    Ok(())
}

/// `chosen`, or `all` when nothing was chosen.
fn or_all<T: Clone>(chosen: Vec<T>, all: &[T]) -> Vec<T> {
    if chosen.is_empty() {
        all.to_vec()
    } else {
        chosen
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if let Some(Subcommands::Restart(restart_args)) = args.command {
        return restart(restart_args);
    }
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if !args.runtime.is_empty() {
        plan.runtimes = args.runtime;
    }
    if !args.clients.is_empty() {
        plan.clients = args.clients;
    }
    if !args.op_size.is_empty() {
        plan.op_sizes = args.op_size;
    }
    if let Some(s) = args.seconds {
        plan.measure = Duration::from_secs_f64(s);
    }
    if let Some(s) = args.warmup {
        plan.warmup = Duration::from_secs_f64(s);
    }
    if !args.batch_ops_max.is_empty() {
        plan.batch_ops_max = args.batch_ops_max;
    }
    if let Some(us) = args.batch_delay_us {
        plan.batch_delay_ns = (us * 1000.0) as u64;
    }
    if !args.core_clients.is_empty() {
        plan.core_clients = args.core_clients;
    }
    if !args.core_batch_ops_max.is_empty() {
        plan.core_batch_ops_max = args.core_batch_ops_max;
    }
    if !args.core_reads.is_empty() {
        plan.core_read_percents = args.core_reads;
    }
    if args.no_core {
        plan.core_clients.clear();
    }
    plan.floor = !args.no_floor;
    plan.rate_per_sec = args.rate;
    if plan.clients.contains(&0)
        || plan.core_clients.contains(&0)
        || plan.op_sizes.is_empty()
        || plan.batch_ops_max.is_empty()
        || plan.batch_ops_max.contains(&0)
        || plan.core_batch_ops_max.contains(&0)
        || plan.core_read_percents.iter().any(|&p| p > 100)
    {
        eprintln!(
            "client counts and batch_ops_max must be at least 1, read percentages at most 100, \
             and one op size and one batch_ops_max are needed"
        );
        std::process::exit(2);
    }
    let out = args.out.unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out)?;

    eprintln!(
        "vr-bench: {} rows, load average {} ({} CPUs); writing to {}",
        plan.steps(),
        vr_bench::report::load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        out.display()
    );
    let report = run(&plan, false)?;
    println!();
    print!("{}", table(&report.rows));
    println!();
    for note in &report.notes {
        println!("note: {note}");
    }
    println!(
        "load average before {} / after {}; {}",
        report.machine.load_before, report.machine.load_after, report.load
    );
    let json = out.join("results.json");
    let chart = out.join("chart.svg");
    write_json(&report, &json)?;
    write_chart(&report.rows, &chart)?;
    println!("wrote {} and {}", json.display(), chart.display());
    Ok(())
}

/// `$CARGO_TARGET_DIR/vr-bench`, else the workspace's `target/vr-bench`.
fn default_out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("vr-bench")
}
