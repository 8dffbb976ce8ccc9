//! `vr-kv`: a replicated key-value server speaking the Redis protocol.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use vr_kv::server::{start_local_in, start_node, NodeOptions};

#[derive(Parser)]
#[command(
    name = "vr-kv",
    version,
    about = "A replicated key-value store speaking RESP2, on Viewstamped Replication"
)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

/// `--runtime`: which adapter runs the replica and the RESP front end. All
/// three serve the same commands with the same replies and speak one wire
/// protocol, so the replicas of one cluster may mix them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Runtime {
    /// vr-tokio; the front end on a current-thread tokio runtime.
    Tokio,
    /// vr-mio; the front end on one mio event loop.
    Mio,
    /// vr-glommio (io_uring, Linux 5.8 or later); the front end on a glommio executor.
    Glommio,
}

impl From<Runtime> for vr_kv::server::Runtime {
    fn from(runtime: Runtime) -> Self {
        match runtime {
            Runtime::Tokio => vr_kv::server::Runtime::Tokio,
            Runtime::Mio => vr_kv::server::Runtime::Mio,
            Runtime::Glommio => vr_kv::server::Runtime::Glommio,
        }
    }
}

#[derive(Subcommand)]
enum Mode {
    /// Runs one replica of a cluster and its RESP listener.
    Node {
        /// Every replica's VR address, in replica order, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
        /// This node's index in --cluster.
        #[arg(long)]
        replica: u8,
        /// Where to listen for Redis clients.
        #[arg(long)]
        listen_resp: SocketAddr,
        /// The cluster id, the same on every replica.
        #[arg(long, default_value_t = 1)]
        cluster_id: u64,
        /// The runtime of the replica and of its RESP front end.
        #[arg(long, value_enum, default_value_t = Runtime::Tokio)]
        runtime: Runtime,
        /// Indexes in --cluster of the witnesses (§6: they keep the log and
        /// vote, hold no data, and are never primary), the same on every
        /// node; at most f of 2f+1.
        #[arg(long, value_delimiter = ',')]
        witnesses: Vec<u8>,
        /// A new node joining a running cluster: it waits until a
        /// `vr-kv reconfigure` adds it, then fetches the data. --cluster is
        /// then the registry of every member's address by member id (this
        /// node's included), and --replica this node's member id.
        #[arg(long)]
        join: bool,
        /// Keep this replica's log, promises and checkpoints in DIR (created
        /// if missing): a write is acknowledged only once it is on the disks
        /// of a quorum, and restarting with the same DIR resumes from it.
        /// Without it the node is diskless (state in memory only).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
    },
    /// Moves a running cluster to new members (§7 reconfiguration): adds,
    /// removes or replaces nodes while it serves. New nodes must be running
    /// with `node --join` first. Prints the new epoch and the registry for
    /// the next reconfiguration.
    Reconfigure {
        /// The registry: every member's VR address, by member id (the
        /// --cluster the nodes were started with, plus members added since).
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
        /// The new members' VR addresses; at least one current member.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<SocketAddr>,
        /// The cluster id.
        #[arg(long, default_value_t = 1)]
        cluster_id: u64,
        /// How long to wait for the reconfiguration to commit, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Runs a whole cluster on 127.0.0.1 in this process, every replica on --runtime.
    Local {
        /// How many replicas.
        #[arg(long, default_value_t = 3)]
        replicas: u8,
        /// The cluster id.
        #[arg(long, default_value_t = 1)]
        cluster_id: u64,
        /// The runtime of the replica and of its RESP front end.
        #[arg(long, value_enum, default_value_t = Runtime::Tokio)]
        runtime: Runtime,
        /// How many of the replicas (the last ones) are witnesses (§6); at
        /// most f of 2f+1.
        #[arg(long, default_value_t = 0)]
        witnesses: u8,
        /// Keep replica I's data in DIR/replica-I (created if missing);
        /// running `local` again with the same DIR resumes from it. Without
        /// it the replicas are diskless.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
    },
}

/// Waits for Ctrl-C or SIGTERM (`Ok(true)`), or until `alive` says the
/// node can no longer serve (`Ok(false)`), checked every 100 ms.
fn wait_for_signal(alive: impl Fn() -> bool) -> std::io::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let died = async {
            while alive() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                result = tokio::signal::ctrl_c() => result.map(|()| true),
                _ = term.recv() => Ok(true),
                () = died => Ok(false),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::select! {
                result = tokio::signal::ctrl_c() => result.map(|()| true),
                () = died => Ok(false),
            }
        }
    })
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Mode::Node {
            cluster,
            replica,
            listen_resp,
            cluster_id,
            runtime,
            witnesses,
            join,
            data_dir,
        } => {
            if usize::from(replica) >= cluster.len() {
                return Err(format!(
                    "--replica {replica} is out of range: --cluster lists {} addresses",
                    cluster.len()
                ));
            }
            if cluster.len() > usize::from(u8::MAX) {
                return Err("at most 255 replicas".to_owned());
            }
            let mut options =
                NodeOptions::new(cluster_id, cluster, vr_core::MemberId(replica), listen_resp);
            options.runtime = runtime.into();
            options.config.witnesses = witnesses.into_iter().map(vr_core::ReplicaIndex).collect();
            options
                .config
                .validate()
                .map_err(|e| format!("--witnesses: {e}"))?;
            // A node may be restarting after a crash with nothing in memory:
            // it always recovers its state from the others (§4.3). Started
            // together, the nodes of a new cluster find each other
            // recovering and form it.
            let mut nonce = [0u8; 8];
            getrandom::getrandom(&mut nonce).map_err(|e| format!("no random source: {e}"))?;
            options.recovery_nonce = Some(u64::from_le_bytes(nonce));
            options.join = join;
            options.data_dir = data_dir;
            let node = start_node(options).map_err(|e| format!("cannot start: {e}"))?;
            println!(
                "replica {replica}: VR on {}, redis-cli -h {} -p {}",
                node.replica_addr(),
                node.resp_addr().ip(),
                node.resp_addr().port()
            );
            let signalled =
                wait_for_signal(|| node.replica_running()).map_err(|e| e.to_string())?;
            eprintln!("vr-kv: stopping");
            node.stop();
            eprintln!("vr-kv: stopped");
            if !signalled {
                // Exit non-zero so that a supervisor restarts the node: it
                // resumes from what its disk holds, or recovers.
                return Err("the replica stopped (see the log above); exiting".to_owned());
            }
            Ok(())
        }
        Mode::Reconfigure {
            cluster,
            to,
            cluster_id,
            timeout_secs,
        } => {
            let done = vr_kv::admin::reconfigure(
                cluster_id,
                &cluster,
                &to,
                std::time::Duration::from_secs(timeout_secs),
            )?;
            let registry: Vec<String> = done.registry.iter().map(|a| a.to_string()).collect();
            // Printed as numbers, the ids an operator types.
            let members: Vec<u8> = done.members.iter().map(|m| m.0).collect();
            println!(
                "epoch {}: members {:?}\nregistry: --cluster {}",
                done.epoch,
                members,
                registry.join(",")
            );
            Ok(())
        }
        Mode::Local {
            replicas,
            cluster_id,
            runtime,
            witnesses,
            data_dir,
        } => {
            let cluster = start_local_in(
                runtime.into(),
                cluster_id,
                replicas,
                witnesses,
                data_dir.as_deref(),
            )
            .map_err(|e| format!("cannot start: {e}"))?;
            for (i, address) in cluster.resp_addrs().iter().enumerate() {
                let witness = i >= usize::from(replicas.saturating_sub(witnesses));
                let note = if witness { "   (witness)" } else { "" };
                println!("replica {i}: redis-cli -p {}{note}", address.port());
            }
            let alive = || {
                (0..usize::from(replicas))
                    .all(|i| cluster.node(i).is_some_and(|n| n.replica_running()))
            };
            let signalled = wait_for_signal(alive).map_err(|e| e.to_string())?;
            eprintln!("vr-kv: stopping");
            cluster.stop();
            if !signalled {
                return Err("a replica stopped (see the log above); exiting".to_owned());
            }
            eprintln!("vr-kv: stopped");
            Ok(())
        }
    }
}

/// Logs to stderr: status changes, restarts and warnings by default
/// (`info`), more with `VR_LOG=debug|trace`, less with
/// `VR_LOG=warn|error|off`.
fn init_logging() {
    let level = match std::env::var("VR_LOG").ok().as_deref().map(str::trim) {
        Some("off") => return,
        Some("error") => tracing::Level::ERROR,
        Some("warn") => tracing::Level::WARN,
        Some("debug") => tracing::Level::DEBUG,
        Some("trace") => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    init_logging();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vr-kv: {message}");
            ExitCode::FAILURE
        }
    }
}
