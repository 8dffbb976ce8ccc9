//! Each runtime's side of a benchmark: a 3-replica cluster on loopback,
//! and closed- or open-loop clients of that runtime's own kind.
//!
//! Clients run the way a user of that runtime would run them: on tokio, one
//! current-thread runtime with a task per client; on glommio, one executor
//! with a task per client; on mio, whose client is blocking, one thread per
//! client. The load generator therefore costs differently per runtime, and
//! it shares the machine's two cores with the replicas.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vr_core::{ClientConfig, Config};

use crate::load::{
    client_loop_async, client_loop_blocking, unique_client_id, AsyncOp, ClientPlan, Failed, Run,
};
use crate::service::BenchService;

/// A runtime adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// `vr-mio`: one thread and one `mio::Poll` per replica; blocking clients.
    Mio,
    /// `vr-tokio`: one current-thread runtime per replica; async clients.
    Tokio,
    /// `vr-glommio`: one io_uring executor per replica; async clients.
    Glommio,
}

impl Runtime {
    /// Every runtime, in the order the runner measures them.
    pub const ALL: [Runtime; 3] = [Runtime::Mio, Runtime::Tokio, Runtime::Glommio];

    /// Its name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Mio => "mio",
            Runtime::Tokio => "tokio",
            Runtime::Glommio => "glommio",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Attempts per request before a benchmark client gives up, at the default
/// 200 ms request timeout: a cluster that stops answering ends the run in
/// seconds instead of hanging it.
const REQUEST_ATTEMPTS_MAX: u32 = 25;

/// glommio's minimum locked io memory per executor; see `vr-glommio`'s
/// crate docs ("Locked memory"). The benchmark does no storage IO either.
pub(crate) const GLOMMIO_IO_MEMORY_BYTES: usize = 64 * 1024;

/// Every adapter returns the same handle.
type ReplicaHandle = vr_host::ReplicaHandle;

/// A 3-replica cluster of one runtime on loopback, replica 0 the primary of
/// view 0. Dropping it stops the replicas.
pub struct Cluster {
    runtime: Runtime,
    /// Replica `i` listens on `addresses[i]`.
    pub addresses: Vec<SocketAddr>,
    /// The cluster's configuration.
    pub config: Config,
    replicas: Vec<ReplicaHandle>,
}

impl Cluster {
    /// Starts three replicas of `runtime` on free loopback ports, each
    /// replicating a [`BenchService`], with the defaults of [`Config::new`].
    pub fn start(runtime: Runtime, cluster: u64) -> io::Result<Cluster> {
        Cluster::start_with(runtime, Config::new(cluster, 3))
    }

    /// Like [`Cluster::start`], with `config` (three replicas) for every
    /// replica and client: e.g. another `batch_ops_max`.
    pub fn start_with(runtime: Runtime, config: Config) -> io::Result<Cluster> {
        Cluster::start_on(runtime, config, None)
    }

    /// Like [`Cluster::start_with`], durable: replica `i` keeps its data in
    /// `data_root/replica-i` (`config.durability` is set to `Disk`), and
    /// acknowledges only what is fdatasynced there. The directories should
    /// be empty: the replicas then form a new cluster.
    pub fn start_durable(
        runtime: Runtime,
        mut config: Config,
        data_root: &std::path::Path,
    ) -> io::Result<Cluster> {
        config.durability = vr_core::Durability::Disk;
        Cluster::start_on(runtime, config, Some(data_root))
    }

    fn start_on(
        runtime: Runtime,
        config: Config,
        data_root: Option<&std::path::Path>,
    ) -> io::Result<Cluster> {
        assert_eq!(config.replica_count, 3, "a 3-replica cluster");
        let listeners = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<io::Result<Vec<_>>>()?;
        let addresses = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let mut replicas = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let mut options = vr_core::node::ReplicaOptions::new(
                config.clone(),
                addresses.clone(),
                vr_core::MemberId(i as u8),
            );
            let service = BenchService::new();
            if let Some(root) = data_root {
                let path = root.join(format!("replica-{i}"));
                let (dir, boot) = vr_storage::data_dir::DataDir::open(
                    &path,
                    &config,
                    vr_core::MemberId(i as u8),
                    config.cluster.into(),
                )
                .map_err(io::Error::other)?;
                options.recovery_nonce = Some(0x5eed + i as u64);
                replicas.push(match runtime {
                    Runtime::Mio => vr_mio::start_durable_replica_with_listener(
                        options, listener, service, dir, boot,
                    )?,
                    Runtime::Tokio => vr_tokio::start_durable_replica_with_listener(
                        options, listener, service, dir, boot,
                    )?,
                    Runtime::Glommio => vr_glommio::start_durable_replica_with_listener(
                        options, listener, service, dir, boot,
                    )?,
                });
                continue;
            }
            replicas.push(match runtime {
                Runtime::Mio => vr_mio::start_replica_with_listener(options, listener, service)?,
                Runtime::Tokio => {
                    vr_tokio::start_replica_with_listener(options, listener, service)?
                }
                Runtime::Glommio => {
                    vr_glommio::start_replica_with_listener(options, listener, service)?
                }
            });
        }
        Ok(Cluster {
            runtime,
            addresses,
            config,
            replicas,
        })
    }

    /// The runtime the replicas run on.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// The view each replica is in. A benchmark expects 0 throughout: a
    /// view change means the cluster was too starved to keep its heartbeats.
    pub fn views(&self) -> Vec<u64> {
        self.replicas.iter().map(|r| r.stats().view).collect()
    }

    /// The protocol counters of replica 0, the primary of view 0 (for
    /// the mean number of entries per Prepare over a row).
    pub fn primary_stats(&self) -> vr_core::replica::Stats {
        self.replica_stats(0)
    }

    /// The protocol counters of replica `i`.
    pub fn replica_stats(&self, i: usize) -> vr_core::replica::Stats {
        self.node_stats(i).replica
    }

    /// The node counters of replica `i` (view, status, op numbers, ...).
    pub fn node_stats(&self, i: usize) -> vr_core::node::NodeStats {
        self.replicas[i].stats()
    }

    /// What the clients of a run connect to.
    pub fn target(&self) -> Target {
        Target::Vr {
            addresses: self.addresses.clone(),
            config: self.config.clone(),
        }
    }

    /// Stops every replica and waits for their threads.
    pub fn stop(self) {
        for replica in self.replicas {
            replica.stop();
        }
    }
}

/// What clients talk to.
#[derive(Clone, Debug)]
pub enum Target {
    /// A VR cluster: each operation is a replicated write.
    Vr {
        /// The replicas' addresses.
        addresses: Vec<SocketAddr>,
        /// The cluster's configuration.
        config: Config,
    },
    /// An echo server: each operation is one round trip of `message_bytes`.
    Echo {
        /// The server's address.
        address: SocketAddr,
        /// Bytes sent and echoed per operation.
        message_bytes: usize,
    },
}

/// Runs `run` against `target` with clients of `runtime`, calling
/// `progress` about every 100 ms until every client has finished.
pub fn run_load(
    runtime: Runtime,
    target: &Target,
    run: &Arc<Run>,
    mut progress: impl FnMut(&Run),
) -> io::Result<()> {
    let plans: Vec<ClientPlan> = (0..run.spec().clients).map(|i| run.client(i)).collect();
    let workers = spawn_clients(runtime, target, run.spec().op_size, plans)?;
    while !workers.iter().all(JoinHandle::is_finished) {
        progress(run);
        std::thread::sleep(Duration::from_millis(100));
    }
    progress(run);
    for worker in workers {
        if let Err(panic) = worker.join() {
            std::panic::resume_unwind(panic);
        }
    }
    Ok(())
}

fn client_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new(config, unique_client_id());
    client.request_attempts_max = REQUEST_ATTEMPTS_MAX;
    client
}

/// Starts the clients on their threads; each plan ends with its client.
fn spawn_clients(
    runtime: Runtime,
    target: &Target,
    op_size: usize,
    plans: Vec<ClientPlan>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let target = target.clone();
    let name = format!("vr-bench-{runtime}-clients");
    let thread = std::thread::Builder::new().name(name);
    Ok(match runtime {
        Runtime::Mio => {
            // The mio client blocks: one thread per client.
            let mut threads = Vec::new();
            for plan in plans {
                let target = target.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name("vr-bench-mio-client".into())
                        .spawn(move || mio_client(plan, &target, op_size))?,
                );
            }
            threads
        }
        Runtime::Tokio => vec![thread.spawn(move || tokio_clients(plans, &target, op_size))?],
        Runtime::Glommio => vec![thread.spawn(move || glommio_clients(plans, &target, op_size))?],
    })
}

fn mio_client(plan: ClientPlan, target: &Target, op_size: usize) {
    match target {
        Target::Vr { addresses, config } => {
            let client =
                vr_mio::Client::connect(addresses.clone(), client_config(config), config.cluster);
            let Ok(mut client) = client else {
                return client_loop_blocking(plan, || false);
            };
            let op = vec![0x5a; op_size];
            client_loop_blocking(plan, || client.submit(op.clone()).is_ok());
        }
        Target::Echo {
            address,
            message_bytes,
        } => {
            let Ok(mut echo) = crate::pingpong::MioEchoClient::connect(*address) else {
                return client_loop_blocking(plan, || false);
            };
            let message = vec![0x5a; *message_bytes];
            let mut buffer = vec![0; *message_bytes];
            client_loop_blocking(plan, || echo.round_trip(&message, &mut buffer).is_ok());
        }
    }
}

fn tokio_clients(plans: Vec<ClientPlan>, target: &Target, op_size: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let tasks: Vec<_> = plans
            .into_iter()
            .map(|plan| tokio::task::spawn_local(tokio_client(plan, target.clone(), op_size)))
            .collect();
        for task in tasks {
            if let Err(error) = task.await {
                if error.is_panic() {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
        }
    });
}

struct TokioWrite {
    client: vr_tokio::Client,
    op: Vec<u8>,
}

impl AsyncOp for TokioWrite {
    async fn run(&mut self) -> bool {
        self.client.submit(self.op.clone()).await.is_ok()
    }
}

struct TokioRoundTrip {
    stream: tokio::net::TcpStream,
    message: Vec<u8>,
    buffer: Vec<u8>,
}

impl AsyncOp for TokioRoundTrip {
    async fn run(&mut self) -> bool {
        crate::pingpong::tokio_round_trip(&mut self.stream, &self.message, &mut self.buffer)
            .await
            .is_ok()
    }
}

async fn tokio_client(plan: ClientPlan, target: Target, op_size: usize) {
    let sleep = tokio::time::sleep;
    match target {
        Target::Vr { addresses, config } => {
            let client =
                vr_tokio::Client::connect(addresses, client_config(&config), config.cluster).await;
            let Ok(client) = client else {
                return client_loop_async(plan, &mut Failed, sleep).await;
            };
            let op = vec![0x5a; op_size];
            client_loop_async(plan, &mut TokioWrite { client, op }, sleep).await;
        }
        Target::Echo {
            address,
            message_bytes,
        } => {
            let Ok(stream) = crate::pingpong::tokio_connect(address).await else {
                return client_loop_async(plan, &mut Failed, sleep).await;
            };
            let mut round_trip = TokioRoundTrip {
                stream,
                message: vec![0x5a; message_bytes],
                buffer: vec![0; message_bytes],
            };
            client_loop_async(plan, &mut round_trip, sleep).await;
        }
    }
}

fn glommio_clients(plans: Vec<ClientPlan>, target: &Target, op_size: usize) {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(GLOMMIO_IO_MEMORY_BYTES)
        .make()
        .expect("a glommio executor");
    executor.run(async {
        let tasks: Vec<_> = plans
            .into_iter()
            .map(|plan| glommio::spawn_local(glommio_client(plan, target.clone(), op_size)))
            .collect();
        for task in tasks {
            task.await;
        }
    });
}

struct GlommioWrite {
    client: vr_glommio::Client,
    op: Vec<u8>,
}

impl AsyncOp for GlommioWrite {
    async fn run(&mut self) -> bool {
        self.client.submit(self.op.clone()).await.is_ok()
    }
}

struct GlommioRoundTrip {
    stream: glommio::net::TcpStream,
    message: Vec<u8>,
    buffer: Vec<u8>,
}

impl AsyncOp for GlommioRoundTrip {
    async fn run(&mut self) -> bool {
        crate::pingpong::glommio_round_trip(&mut self.stream, &self.message, &mut self.buffer)
            .await
            .is_ok()
    }
}

async fn glommio_client(plan: ClientPlan, target: Target, op_size: usize) {
    let sleep = |d: Duration| async move {
        glommio::timer::sleep(d).await;
    };
    match target {
        Target::Vr { addresses, config } => {
            let client =
                vr_glommio::Client::connect(addresses, client_config(&config), config.cluster)
                    .await;
            let Ok(client) = client else {
                return client_loop_async(plan, &mut Failed, sleep).await;
            };
            let mut write = GlommioWrite {
                client,
                op: vec![0x5a; op_size],
            };
            client_loop_async(plan, &mut write, sleep).await;
            write.client.close().await;
        }
        Target::Echo {
            address,
            message_bytes,
        } => {
            let Ok(stream) = crate::pingpong::glommio_connect(address).await else {
                return client_loop_async(plan, &mut Failed, sleep).await;
            };
            let mut round_trip = GlommioRoundTrip {
                stream,
                message: vec![0x5a; message_bytes],
                buffer: vec![0; message_bytes],
            };
            client_loop_async(plan, &mut round_trip, sleep).await;
        }
    }
}
