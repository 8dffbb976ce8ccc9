//! `vr-sim`: runs seeds of the deterministic cluster simulator, or checks a
//! recorded history for linearizability. See `docs/testing.md`.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vr_core::InjectedBug;
use vr_sim::batch::{failure_line, Totals};
use vr_sim::checks::ViolationKind;
use vr_sim::history::{self, Format};
use vr_sim::linearizability::{self, CheckResult};
use vr_sim::trace::Seconds;
use vr_sim::{run_seed, Options, SeedReport};

#[derive(Parser, Debug)]
#[command(
    name = "vr-sim",
    version,
    about = "Deterministic simulator of a vr-core cluster, and a linearizability checker",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a recorded history for linearizability: prints `linearizable`
    /// (exit 0) or `not linearizable` (exit 1); exit 2 if the history cannot
    /// be read or the checker runs out of budget.
    Check {
        /// The history's format.
        #[arg(long, value_parser = parse_format)]
        format: Format,
        /// The history file.
        file: PathBuf,
        /// The checker's step budget per key.
        #[arg(long, default_value_t = linearizability::DEFAULT_STEP_LIMIT)]
        step_limit: u64,
    },
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

/// A deliberate protocol bug to switch on (test tool).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum BugArg {
    /// The primary commits without waiting for a quorum of PrepareOks.
    CommitWithoutQuorum,
    /// The new primary picks the DoViewChange log by op-number only.
    ChooseLogByOpNumberOnly,
    /// Recovery without crash vectors: votes sent before a crash still count.
    RecoveryWithoutCrashVectors,
    /// A replica that learns of a newer view truncates its log in place.
    TruncateLogOnNewView,
    /// A backup answers a read before executing up to the client's op-number.
    BackupReadBeforeExecuting,
    /// Durable replicas: a backup acknowledges, and the primary counts
    /// itself, before the op is on disk (forces durable replicas).
    AckBeforePersist,
    /// Durable replicas: the disk's recovery scan takes a log record whose
    /// checksum fails as data (vr-storage; forces durable replicas).
    TrustUncheckedRecord,
}

impl BugArg {
    /// The storage's bug this names, if it is one.
    fn storage(self) -> Option<vr_storage::InjectedBug> {
        match self {
            BugArg::TrustUncheckedRecord => Some(vr_storage::InjectedBug::TrustUncheckedRecord),
            _ => None,
        }
    }

    /// Whether the bug lives in durable replicas only.
    fn needs_disk(self) -> bool {
        matches!(
            self,
            BugArg::AckBeforePersist | BugArg::TrustUncheckedRecord
        )
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DurabilityArg {
    /// Every replica keeps its state in memory only.
    Memory,
    /// Every replica keeps its promises on a simulated disk.
    Disk,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BootArg {
    /// Every replica starts with `Replica::recover`.
    Recovering,
    /// Every replica starts with `Replica::new` in view 0.
    Fresh,
}

impl BugArg {
    /// vr-core's bug this names, if it is one.
    fn core(self) -> Option<InjectedBug> {
        Some(match self {
            BugArg::CommitWithoutQuorum => InjectedBug::CommitWithoutQuorum,
            BugArg::ChooseLogByOpNumberOnly => InjectedBug::ChooseLogByOpNumberOnly,
            BugArg::RecoveryWithoutCrashVectors => InjectedBug::RecoveryWithoutCrashVectors,
            BugArg::TruncateLogOnNewView => InjectedBug::TruncateLogOnNewView,
            BugArg::BackupReadBeforeExecuting => InjectedBug::BackupReadBeforeExecuting,
            BugArg::AckBeforePersist => InjectedBug::AckBeforePersist,
            BugArg::TrustUncheckedRecord => return None,
        })
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Run one seed and print its report.
    #[arg(long, conflicts_with_all = ["seeds", "start"])]
    seed: Option<u64>,
    /// Run this many seeds (default 100); print one line per failing seed
    /// and the totals. A long soak: `--release … --seeds 100000`.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of `--seeds` (default: random, printed).
    #[arg(long)]
    start: Option<u64>,
    /// Force the cluster size (default: 1, 3 or 5, drawn per seed).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=15))]
    replicas: Option<u8>,
    /// Print the readable event log of the seed (with `--seed`).
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Write the client history of the seed as JSON lines (with `--seed`).
    #[arg(long, requires = "seed")]
    history_out: Option<PathBuf>,
    /// Switch on a deliberate protocol bug (to see the checkers catch it).
    #[arg(long, value_enum)]
    bug: Option<BugArg>,
    /// Draw classic plans: crashes for good, default checkpoints (rarely
    /// reached), no ballast: the plans before restarts were simulated.
    #[arg(long)]
    classic: bool,
    /// How every seed's cluster starts: `recovering` (every replica with
    /// `Replica::recover`, at staggered times, as `vr-kv node`s do) or
    /// `fresh` (`Replica::new`); default: drawn per seed (a quarter of the
    /// seeds with three or more replicas boot recovering).
    #[arg(long, value_enum)]
    boot: Option<BootArg>,
    /// Draw no reconfiguration (§7); by default a quarter of the seeds
    /// with three or five replicas, no witnesses and a fresh boot move to
    /// a new membership during the safety phase.
    #[arg(long)]
    no_reconfiguration: bool,
    /// Where replicas keep their state: `memory` (the paper's replicas)
    /// or `disk` (durable replicas on a simulated disk with faults); default:
    /// drawn per seed (half of the seeds that do not boot recovering are
    /// durable).
    #[arg(long, value_enum)]
    durability: Option<DurabilityArg>,
    /// Durable replicas: let a power loss of the whole cluster (or of a
    /// one-replica cluster) persist any subset of the unsynced sectors
    /// (an open issue: see docs/testing.md, "Durable replicas").
    #[arg(long)]
    reordered_power_loss: bool,
    /// Skip the linearizability check (faster soaks of the other checkers).
    #[arg(long)]
    no_linearizability: bool,
    /// Simulated seconds within which every operation must complete after
    /// the heal.
    #[arg(long, default_value_t = 60)]
    liveness_timeout_s: u64,
    /// Worker threads for `--seeds` (each seed runs on one thread, alone and
    /// deterministic); default: the number of cores.
    #[arg(long)]
    jobs: Option<usize>,
    /// Stop a batch after this many failing seeds.
    #[arg(long)]
    max_failures: Option<u64>,
    /// Print a line for every seed, not only failing ones.
    #[arg(long, short)]
    verbose: bool,
    /// Report violations of this kind but do not fail on them (repeatable;
    /// a stop-gap for a known open issue, e.g. `--allow convergence`).
    #[arg(long, value_enum)]
    allow: Vec<KindArg>,
}

/// A kind of violation, as `--allow` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KindArg {
    Linearizability,
    Agreement,
    ExactlyOnce,
    Liveness,
    Convergence,
    Codec,
    Service,
    Panic,
    Stuck,
    BackupRead,
    Storage,
}

impl KindArg {
    fn kind(self) -> ViolationKind {
        match self {
            KindArg::Linearizability => ViolationKind::Linearizability,
            KindArg::Agreement => ViolationKind::Agreement,
            KindArg::ExactlyOnce => ViolationKind::ExactlyOnce,
            KindArg::Liveness => ViolationKind::Liveness,
            KindArg::Convergence => ViolationKind::Convergence,
            KindArg::Codec => ViolationKind::Codec,
            KindArg::Service => ViolationKind::Service,
            KindArg::Panic => ViolationKind::Panic,
            KindArg::Stuck => ViolationKind::Stuck,
            KindArg::BackupRead => ViolationKind::BackupRead,
            KindArg::Storage => ViolationKind::Storage,
        }
    }
}

/// Whether `report` has a violation that `--allow` does not excuse.
fn fails(report: &SeedReport, args: &RunArgs) -> bool {
    report
        .violations
        .iter()
        .any(|v| !args.allow.iter().any(|a| a.kind() == v.kind))
}

thread_local! {
    /// Where the last panic on this thread happened, for reports.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check {
            format,
            file,
            step_limit,
        }) => check(format, &file, step_limit),
        None => run(&cli.run),
    }
}

fn check(format: Format, file: &PathBuf, step_limit: u64) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            println!("cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let history = match history::parse(format, &text) {
        Ok(h) => h,
        Err(e) => {
            println!("cannot read {} as {}: {e}", file.display(), format.as_str());
            return ExitCode::from(2);
        }
    };
    match linearizability::check_with_limit(&history, step_limit) {
        CheckResult::Linearizable => {
            println!("linearizable");
            ExitCode::SUCCESS
        }
        result @ CheckResult::NotLinearizable { .. } => {
            println!("not linearizable");
            println!("{result}");
            ExitCode::from(1)
        }
        result @ CheckResult::Unknown { .. } => {
            println!("{result}");
            ExitCode::from(2)
        }
    }
}

fn options(args: &RunArgs) -> Options {
    Options {
        replica_count: args.replicas,
        injected_bug: args.bug.and_then(BugArg::core),
        storage_bug: args.bug.and_then(BugArg::storage),
        disk_plans: true,
        reordered_power_loss: args.reordered_power_loss,
        durability: match args.durability {
            Some(d) => Some(matches!(d, DurabilityArg::Disk)),
            None => args.bug.filter(|b| b.needs_disk()).map(|_| true),
        },
        trace: args.trace,
        check_linearizability: !args.no_linearizability,
        classic_plans: args.classic,
        boot_recovering: args.boot.map(|b| matches!(b, BootArg::Recovering)),
        reconfiguration_plans: !args.no_reconfiguration,
        liveness_timeout_ns: args.liveness_timeout_s.saturating_mul(1_000_000_000),
        ..Options::default()
    }
}

/// Installs a panic hook that records where a panic happened instead of
/// printing it: the simulator catches panics of the code under test and
/// reports them as violations of their seed.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(location));
    }));
}

/// Runs one seed, adding the panic location to a panic violation.
fn run_one(seed: u64, options: &Options) -> SeedReport {
    LAST_PANIC.with(|p| p.borrow_mut().take());
    let mut report = run_seed(seed, options);
    if let Some(location) = LAST_PANIC.with(|p| p.borrow_mut().take()) {
        for v in &mut report.violations {
            if v.kind == ViolationKind::Panic {
                v.detail = format!("{} (at {location})", v.detail);
            }
        }
    }
    report
}

fn run(args: &RunArgs) -> ExitCode {
    quiet_panics();
    let options = options(args);
    if let Some(seed) = args.seed {
        return run_single(seed, args, &options);
    }
    let count = args.seeds.unwrap_or(100);
    let start = args.start.unwrap_or_else(|| {
        // A random start for exploratory batches; the seeds are printed, so
        // every failure is reproducible with `--seed`.
        RandomState::new().hash_one(0xD1CE_u64)
    });
    println!(
        "running {count} seeds from {start} (reproduce one with: vr-sim --seed S --trace){}",
        args.bug
            .map(|b| format!("; injected bug {b:?}"))
            .unwrap_or_default()
    );
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let wall = std::time::Instant::now();
    let next = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let failing = AtomicU64::new(0);
    let max_failures = args.max_failures.unwrap_or(u64::MAX);
    let totals = Mutex::new(Totals::default());
    let print = Mutex::new(());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                quiet_panics();
                loop {
                    if failures.load(Ordering::Relaxed) >= max_failures {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let seed = start.wrapping_add(i);
                    let report = run_one(seed, &options);
                    let _guard = print.lock().unwrap_or_else(|e| e.into_inner());
                    if !report.passed() {
                        failures.fetch_add(1, Ordering::Relaxed);
                        if fails(&report, args) {
                            failing.fetch_add(1, Ordering::Relaxed);
                        }
                        println!("{}", failure_line(&report));
                    } else if args.verbose {
                        println!(
                            "ok seed {} ops {} views {} sim {}s",
                            seed,
                            report.stats.ops_completed,
                            report.stats.views_formed,
                            Seconds(report.stats.simulated_ns)
                        );
                    }
                    let _ = std::io::stdout().flush();
                    totals
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .add(&report);
                }
            });
        }
    });
    let totals = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    println!("{}", totals.render());
    println!(
        "wall time: {:.1} s on {jobs} threads",
        wall.elapsed().as_secs_f64()
    );
    if failing.into_inner() > 0 {
        ExitCode::from(1)
    } else {
        if totals.failed > 0 {
            println!("every violation is of a kind allowed by --allow");
        }
        ExitCode::SUCCESS
    }
}

fn run_single(seed: u64, args: &RunArgs, options: &Options) -> ExitCode {
    let report = run_one(seed, options);
    for line in &report.trace_lines {
        println!("{line}");
    }
    if let Some(path) = &args.history_out {
        let mut text = String::new();
        for event in &report.history {
            text.push_str(&history::write_jsonl(event));
            text.push('\n');
        }
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let s = &report.stats;
    println!("seed {seed}: {}", report.plan.summary());
    println!(
        "simulated {} s; ops: {} invoked, {} completed, {} open, {} committed; views formed {} (max view {}); \
         liveness after heal {:.3} s; trace hash {:016x} ({} events)",
        Seconds(s.simulated_ns),
        s.ops_invoked,
        s.ops_completed,
        s.ops_open,
        s.ops_committed,
        s.views_formed,
        s.view_max,
        s.liveness_ns as f64 / 1e9,
        report.trace_hash,
        s.events
    );
    println!(
        "faults: {} sent, {} lost, {} duplicated, {} corrupted, {} rejected, {} delayed ({} long), {} dropped by partitions, \
         partitions {:?}, {} pauses, {} crashes, {} skewed clocks, {} isolated at heal",
        s.network.sent,
        s.network.lost,
        s.network.duplicated,
        s.network.corrupted,
        s.frames_rejected,
        s.network.delayed,
        s.network.long_delayed,
        s.network.partition_drops,
        s.partitions,
        s.pauses,
        s.crashes,
        s.skewed_clocks,
        s.isolated_at_heal
    );
    println!(
        "recovery: {} restarts, {} recovered (slowest {:.3} s), {} recoveries completed; checkpoints: {} taken, \
         {} installed ({} pages, {} bytes received), {} roots compared; {} stale-incarnation votes dropped",
        s.restarts,
        s.recovered,
        s.recovery_ns_max as f64 / 1e9,
        s.core.recoveries_completed,
        s.core.checkpoints_taken,
        s.core.checkpoints_installed,
        s.core.checkpoint_pages_received,
        s.core.checkpoint_bytes_received,
        s.checkpoints_compared,
        s.core.messages_stale_incarnation
    );
    println!(
        "optimizations: {} Prepares (mean batch {:.2} entries, largest {}), {} leased reads, {} view changes \
         deferred by a lease, {} backup reads ({} completed, {} values checked)",
        s.core.prepare_batches,
        s.core.prepare_batch_entries as f64 / s.core.prepare_batches.max(1) as f64,
        s.prepare_entries_max,
        s.core.leased_reads,
        s.core.view_changes_deferred_by_lease,
        s.core.backup_reads,
        s.backup_reads_completed,
        s.backup_reads_value_checked
    );
    if report.plan.boot.recovering {
        match s.formed_ns {
            Some(t) => println!(
                "boot: every replica started recovering; a quorum was normal in one view at {}",
                Seconds(t)
            ),
            None => println!("boot: every replica started recovering; no quorum was ever normal"),
        }
    }
    if let Some(plan) = &report.plan.reconfiguration {
        println!(
            "reconfiguration: to {:?}; {} completed (epoch {}, at op {}); {} scripted primary crashes",
            plan.members,
            s.reconfigurations_completed,
            s.epoch_max,
            s.reconfiguration_op,
            s.scripted_primary_crashes
        );
    }
    if report.plan.disk.durable {
        println!(
            "disks: {}; {} persists completed",
            s.disk.render(),
            s.core.persists_completed
        );
    }
    println!("linearizability: {:?}", report.linearizability);
    if report.passed() {
        println!("ok");
        ExitCode::SUCCESS
    } else {
        for v in &report.violations {
            println!("VIOLATION {v}");
        }
        if fails(&report, args) {
            ExitCode::from(1)
        } else {
            println!("every violation is of a kind allowed by --allow");
            ExitCode::SUCCESS
        }
    }
}
