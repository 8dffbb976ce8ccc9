//! The server: one VR replica running a [`Store`], and a RESP2 front end in
//! front of it, on the runtime of your choice ([`Runtime`]): tokio, mio or
//! glommio, with the same commands and replies on each.
//!
//! Every RESP connection has its own VR client proxy connected to all
//! replicas, so a connection to a backup forwards its writes (and its
//! linearizable reads) to the primary and survives a view change. The
//! commands one read from the socket brings are packed into one batch, one
//! VR operation, bounded by the cluster's `op_size_max`. What a connection
//! does with its bytes is [`crate::session::Session`], shared by the three
//! runtimes; each runtime only moves bytes, runs the client proxy and keeps
//! time:
//!
//! | runtime | replica | RESP front end (its own thread) |
//! |---|---|---|
//! | [`Runtime::Tokio`] | `vr-tokio` | a current-thread tokio runtime, a task per connection, a `vr_tokio::Client` each |
//! | [`Runtime::Mio`] | `vr-mio` | one `mio::Poll` loop for every connection and its client proxy ([`vr_core::node::ClientNode`] on non-blocking sockets) |
//! | [`Runtime::Glommio`] | `vr-glommio` | a glommio executor, a task per connection, a `vr_glommio::Client` each |
//!
//! Start one node with [`start_node`], or a whole cluster on loopback with
//! [`start_local`] (tokio) or [`start_local_on`].

mod async_conn;
mod on_glommio;
mod on_mio;
mod on_tokio;
pub mod sweeper;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use vr_core::node::{NodeStats, ReplicaOptions};
use vr_core::{ClientConfig, Config, MemberId};

use crate::service::SharedStore;
use crate::session::NodeView;
use crate::store::Store;

pub use crate::session::{
    ERR_LOADING, ERR_MAX_CLIENTS, ERR_REQUEST_TOO_LARGE, ERR_TOO_LARGE, UNCERTAIN,
};

/// The runtime a node's replica and RESP front end run on. Replicas on
/// different runtimes form one cluster: the wire protocol is the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// `vr-tokio`, and a tokio front end.
    #[default]
    Tokio,
    /// `vr-mio`, and a mio event loop for the front end.
    Mio,
    /// `vr-glommio` (io_uring, Linux 5.8 or later), and a glommio front end.
    Glommio,
}

impl Runtime {
    /// Every runtime, for tests and help texts.
    pub const ALL: [Runtime; 3] = [Runtime::Tokio, Runtime::Mio, Runtime::Glommio];

    /// The name `--runtime` takes: `tokio`, `mio` or `glommio`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::Mio => "mio",
            Runtime::Glommio => "glommio",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Runtime {
    type Err = String;

    fn from_str(name: &str) -> Result<Runtime, String> {
        Runtime::ALL
            .into_iter()
            .find(|runtime| runtime.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unknown runtime '{name}' (tokio, mio or glommio)"))
    }
}

/// The read lease (§6) of every `vr-kv` cluster: reads that only read
/// (`GET`, `MGET`, `EXISTS`) are answered by the primary without a round of
/// prepares while it holds one. As long as the view-change timeout, so
/// failover is not slower than without leases.
pub const LEASE_DURATION_NS: u64 = 100_000_000;

/// The bound on how far two replicas' clocks may disagree over one lease:
/// 10%, far beyond what the clocks of machines in one datacenter drift, but
/// leases rest on it (`docs/protocol.md`, "Leased reads").
pub const CLOCK_DRIFT_MAX_NS: u64 = 10_000_000;

/// How to run one node: a replica of the cluster and its RESP listener.
#[derive(Debug)]
pub struct NodeOptions {
    /// The cluster's configuration, the same on every replica. Its
    /// `op_size_max` bounds one batch of commands.
    pub config: Config,
    /// Replica `i` of the cluster listens (VR protocol) on `replicas[i]`.
    pub replicas: Vec<SocketAddr>,
    /// This node's member id: its index in `replicas` (for the cluster's
    /// first configuration, where member ids are replica indexes).
    pub replica: MemberId,
    /// Where to listen for RESP clients (ignored if `resp_listener` is set).
    pub listen_resp: SocketAddr,
    /// A listener already bound for the replica (used instead of binding
    /// `replicas[replica]`).
    pub replica_listener: Option<std::net::TcpListener>,
    /// A listener already bound for RESP clients.
    pub resp_listener: Option<std::net::TcpListener>,
    /// Attempts of the per-connection VR client before a batch's outcome is
    /// declared unknown (each waits `2 * view_change_timeout`).
    pub request_attempts_max: u32,
    /// RESP connections open at a time; more get `ERR max number of clients
    /// reached` and are closed.
    pub resp_connections_max: usize,
    /// Bytes a RESP connection may buffer without a complete command.
    pub read_buffer_max: usize,
    /// The runtime of the replica and of the front end.
    pub runtime: Runtime,
    /// `Some(nonce)` when the node may be restarting after a crash: its
    /// replica recovers its state from the others (§4.3) instead of
    /// starting a new cluster. The nonce must be fresh on every start.
    /// When every node of a cluster starts this way they form the cluster.
    pub recovery_nonce: Option<u64>,
    /// A new node that joins a running cluster when a reconfiguration adds
    /// it (§7): `replica` is then its member id, its position in
    /// `replicas` (the registry of every member's address).
    pub join: bool,
    /// `Some(dir)`: a durable replica (`Durability::Disk`) keeping its log,
    /// promises and checkpoints in `dir` (created if missing): no write is
    /// acknowledged before it is on the disks of a quorum, and a restart
    /// with the same `dir` resumes from it (`docs/kv.md`, "Durability").
    /// `None`: diskless, state in memory only.
    pub data_dir: Option<std::path::PathBuf>,
}

impl NodeOptions {
    /// Options for replica `replica` of a cluster of `replicas.len()`
    /// replicas with id `cluster`, default configuration plus read leases
    /// ([`LEASE_DURATION_NS`], [`CLOCK_DRIFT_MAX_NS`]), RESP on
    /// `listen_resp`, on tokio; a batch is abandoned (`UNCERTAIN`) after 15
    /// attempts of 200 ms, 3 s in all.
    pub fn new(
        cluster: u64,
        replicas: Vec<SocketAddr>,
        replica: MemberId,
        listen_resp: SocketAddr,
    ) -> NodeOptions {
        let count = u8::try_from(replicas.len()).unwrap_or(u8::MAX);
        let mut config = Config::new(cluster, count);
        config.lease_duration_ns = LEASE_DURATION_NS;
        config.clock_drift_max_ns = CLOCK_DRIFT_MAX_NS;
        let read_buffer_max = config.op_size_max as usize + 64 * 1024;
        NodeOptions {
            config,
            replicas,
            replica,
            listen_resp,
            replica_listener: None,
            resp_listener: None,
            request_attempts_max: 15,
            resp_connections_max: 1024,
            read_buffer_max,
            runtime: Runtime::Tokio,
            recovery_nonce: None,
            join: false,
            data_dir: None,
        }
    }
}

/// The options of a node's replica, whatever its runtime: every adapter
/// takes the same [`ReplicaOptions`], built here and nowhere else.
pub fn replica_options(options: &NodeOptions) -> ReplicaOptions {
    let mut replica_options = ReplicaOptions::new(
        options.config.clone(),
        options.replicas.clone(),
        options.replica,
    );
    replica_options.recovery_nonce = options.recovery_nonce;
    replica_options.join = options.join;
    replica_options
}

/// A replica on one of the adapters: every adapter returns the same
/// handle.
type RunningReplica = vr_host::ReplicaHandle;

/// Starts the replica on `runtime`, durable when `disk` is given.
fn start_replica(
    runtime: Runtime,
    options: ReplicaOptions,
    listener: std::net::TcpListener,
    service: SharedStore,
    disk: Option<(vr_storage::data_dir::DataDir, vr_storage::data_dir::Boot)>,
) -> io::Result<RunningReplica> {
    match (runtime, disk) {
        (Runtime::Tokio, Some((dir, boot))) => {
            vr_tokio::start_durable_replica_with_listener(options, listener, service, dir, boot)
        }
        (Runtime::Mio, Some((dir, boot))) => {
            vr_mio::start_durable_replica_with_listener(options, listener, service, dir, boot)
        }
        (Runtime::Glommio, Some((dir, boot))) => {
            vr_glommio::start_durable_replica_with_listener(options, listener, service, dir, boot)
        }
        (Runtime::Tokio, None) => vr_tokio::start_replica_with_listener(options, listener, service),
        (Runtime::Mio, None) => vr_mio::start_replica_with_listener(options, listener, service),
        (Runtime::Glommio, None) => {
            vr_glommio::start_replica_with_listener(options, listener, service)
        }
    }
}

/// What every connection of a front end shares, on any runtime.
pub(crate) struct Shared {
    pub(crate) view: NodeView,
    /// Every replica's VR address, for the connections' client proxies.
    pub(crate) replicas: Vec<SocketAddr>,
    pub(crate) request_attempts_max: u32,
    pub(crate) connections_max: usize,
}

impl Shared {
    /// The configuration of a new connection's VR client proxy, with an id
    /// of its own.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.view.config(), client_id());
        config.request_attempts_max = self.request_attempts_max;
        config
    }

    /// The cluster id the client proxies speak to.
    pub(crate) fn cluster(&self) -> u64 {
        self.view.config().cluster
    }
}

/// A fresh nonce for a replica's start (`Replica::recover` and
/// `Replica::restart` need one that differs on every start).
pub fn random_nonce() -> u64 {
    client_id() as u64
}

/// A random client id: two clients with the same id would see each other's
/// requests as duplicates.
fn client_id() -> u128 {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS randomness: fall back to the standard library's random hash
        // keys, mixed with the time.
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let low = hasher.finish();
        let high = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        return (u128::from(high) << 64) | u128::from(low);
    }
    u128::from_le_bytes(bytes)
}

/// A running RESP front end: stopping it closes every client connection and
/// joins its thread.
pub(crate) struct FrontEnd {
    stop: Box<dyn FnOnce() + Send>,
}

impl FrontEnd {
    pub(crate) fn new(stop: impl FnOnce() + Send + 'static) -> FrontEnd {
        FrontEnd {
            stop: Box::new(stop),
        }
    }
}

/// A running node. Dropping it stops it too, without re-raising panics.
pub struct NodeHandle {
    sweeper: Option<sweeper::Sweeper>,
    replica: Option<Arc<RunningReplica>>,
    front_end: Option<FrontEnd>,
    resp_address: SocketAddr,
    replica_address: SocketAddr,
    runtime: Runtime,
}

impl NodeHandle {
    /// Where the RESP front end listens.
    pub fn resp_addr(&self) -> SocketAddr {
        self.resp_address
    }

    /// Where the replica listens for the VR protocol.
    pub fn replica_addr(&self) -> SocketAddr {
        self.replica_address
    }

    /// The runtime the node runs on.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// Whether the node's replica still runs. It stops on a storage error
    /// (a durable replica whose disk failed: what reached the disk is
    /// unknown, so it must not go on); the process should then exit, so
    /// that it is restarted and resumes from what its disk holds.
    pub fn replica_running(&self) -> bool {
        self.replica.as_ref().is_some_and(|r| r.is_running())
    }

    /// The replica's counters: view, status, op and commit numbers, traffic.
    pub fn stats(&self) -> NodeStats {
        match &self.replica {
            Some(replica) => replica.stats(),
            None => NodeStats::default(),
        }
    }

    /// Stops the RESP front end (closing every client connection), then the
    /// replica.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut sweeper) = self.sweeper.take() {
            sweeper.stop();
        }
        if let Some(front_end) = self.front_end.take() {
            (front_end.stop)();
        }
        if let Some(replica) = self.replica.take() {
            // The front end's thread is gone, and with it every clone.
            match Arc::try_unwrap(replica) {
                Ok(replica) => replica.stop(),
                Err(replica) => drop(replica),
            }
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts one node: its replica on its own thread (through the adapter of
/// `options.runtime`), and the RESP front end on another thread of the same
/// runtime.
pub fn start_node(mut options: NodeOptions) -> io::Result<NodeHandle> {
    if options.resp_connections_max == 0 || options.read_buffer_max == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "resp_connections_max and read_buffer_max must be positive",
        ));
    }
    if options.data_dir.is_some() && !options.config.witnesses.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--data-dir with witnesses is not supported yet (a witness's log may skip ahead, which the disk's log cannot store)",
        ));
    }
    let disk = match &options.data_dir {
        Some(path) => {
            options.config.durability = vr_core::Durability::Disk;
            let (dir, boot) = vr_storage::data_dir::DataDir::open(
                path,
                &options.config,
                options.replica,
                u128::from(options.config.cluster),
            )
            .map_err(|e| io::Error::other(format!("data directory {}: {e}", path.display())))?;
            tracing::info!(replica = %options.replica, dir = %path.display(), "{}", boot.describe());
            Some((dir, boot))
        }
        None => {
            tracing::info!(
                replica = %options.replica,
                "diskless: state in memory only; it survives while at most f replicas are down or recovering at once"
            );
            None
        }
    };
    let replica_options = replica_options(&options);
    let NodeOptions {
        config,
        replicas,
        replica,
        listen_resp,
        replica_listener,
        resp_listener,
        request_attempts_max,
        resp_connections_max,
        read_buffer_max,
        runtime,
        recovery_nonce: _,
        join: _,
        data_dir: _,
    } = options;
    let resp_listener = match resp_listener {
        Some(listener) => listener,
        None => bind_retrying(listen_resp)?,
    };
    let replica_listener = match replica_listener {
        Some(listener) => listener,
        None => {
            let address = replicas.get(usize::from(replica.0)).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "replica index out of range")
            })?;
            bind_retrying(*address)?
        }
    };
    let store = Arc::new(Mutex::new(Store::new()));
    let running = start_replica(
        runtime,
        replica_options,
        replica_listener,
        SharedStore(store.clone()),
        disk,
    )?;
    let replica_address = running.local_addr();
    let running = Arc::new(running);
    let status = {
        let running = running.clone();
        Box::new(move || running.stats())
    };
    let is_primary = {
        let running = running.clone();
        Box::new(move || running.stats().primary)
    };
    let sweeper_store = store.clone();
    let shared = Arc::new(Shared {
        view: NodeView::new(store, config, replica, read_buffer_max, status),
        replicas,
        request_attempts_max,
        connections_max: resp_connections_max,
    });
    let resp_address = resp_listener.local_addr()?;
    let front_end = match runtime {
        Runtime::Tokio => on_tokio::start(resp_listener, shared)?,
        Runtime::Mio => on_mio::start(resp_listener, shared)?,
        Runtime::Glommio => on_glommio::start(resp_listener, shared)?,
    };
    let sweeper = sweeper::Sweeper::start(sweeper_store, resp_address, is_primary)?;
    Ok(NodeHandle {
        sweeper: Some(sweeper),
        replica: Some(running),
        front_end: Some(front_end),
        resp_address,
        replica_address,
        runtime,
    })
}

/// How long a node restarted on its addresses waits for them to be free.
const BIND_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Between two attempts to bind a held address. Short: the address is
/// usually free a few milliseconds after the kill, and every millisecond
/// waited past that is one the restarted node is late (issue 18, item 8;
/// at 20 ms a glommio node restarted at once took 27 ms to listen).
const BIND_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

/// Binds `address`, retrying for [`BIND_RETRY_FOR`] while it is in use: a
/// node restarted right after it was killed finds its ports held a moment
/// longer by the kernel (an io_uring instance of the dead process, as
/// glommio's, is torn down asynchronously, closing its sockets late).
fn bind_retrying(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let start = std::time::Instant::now();
    loop {
        match std::net::TcpListener::bind(address) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && start.elapsed() < BIND_RETRY_FOR => {
                std::thread::sleep(BIND_RETRY_DELAY);
            }
            result => return result,
        }
    }
}

/// A whole cluster in this process, on loopback.
pub struct LocalCluster {
    nodes: Vec<Option<NodeHandle>>,
    resp: Vec<SocketAddr>,
    replicas: Vec<SocketAddr>,
}

impl LocalCluster {
    /// Each replica's RESP address, by index.
    pub fn resp_addrs(&self) -> &[SocketAddr] {
        &self.resp
    }

    /// Each replica's VR address, by index.
    pub fn replica_addrs(&self) -> &[SocketAddr] {
        &self.replicas
    }

    /// Node `i`, unless stopped.
    pub fn node(&self, i: usize) -> Option<&NodeHandle> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// Stops node `i` (its RESP front end and its replica), as a crash.
    pub fn stop_node(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i).and_then(Option::take) {
            node.stop();
        }
    }

    /// Stops every node.
    pub fn stop(mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }
}

/// Starts a cluster of `replicas` replicas (cluster id 1) on 127.0.0.1 with
/// ports chosen by the OS, each with a RESP port, on tokio.
pub fn start_local(replicas: u8) -> io::Result<LocalCluster> {
    start_local_on(Runtime::Tokio, 1, replicas)
}

/// [`start_local`] with cluster id `cluster`.
pub fn start_local_with(cluster: u64, replicas: u8) -> io::Result<LocalCluster> {
    start_local_on(Runtime::Tokio, cluster, replicas)
}

/// [`start_local`] with cluster id `cluster`, every node on `runtime`.
pub fn start_local_on(runtime: Runtime, cluster: u64, replicas: u8) -> io::Result<LocalCluster> {
    start_local_with_witnesses(runtime, cluster, replicas, 0)
}

/// [`start_local_on`] with the last `witnesses` replicas as witnesses (§6:
/// they keep the log and vote but hold no data; at most `replicas - (f + 1)`).
pub fn start_local_with_witnesses(
    runtime: Runtime,
    cluster: u64,
    replicas: u8,
    witnesses: u8,
) -> io::Result<LocalCluster> {
    start_local_in(runtime, cluster, replicas, witnesses, None)
}

/// [`start_local_with_witnesses`], durable when `data_dir` is given:
/// replica `i` keeps its data in `data_dir/replica-i` (created if
/// missing), and a cluster started again on the same directory resumes
/// from it. Durable replicas start recovering (`Replica::recover`), so a
/// new cluster forms when all of them find their directories empty.
pub fn start_local_in(
    runtime: Runtime,
    cluster: u64,
    replicas: u8,
    witnesses: u8,
    data_dir: Option<&std::path::Path>,
) -> io::Result<LocalCluster> {
    if replicas == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "at least one replica is needed",
        ));
    }
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut replica_listeners = Vec::new();
    let mut resp_listeners = Vec::new();
    for _ in 0..replicas {
        replica_listeners.push(std::net::TcpListener::bind(loopback)?);
        resp_listeners.push(std::net::TcpListener::bind(loopback)?);
    }
    let replica_addrs = replica_listeners
        .iter()
        .map(std::net::TcpListener::local_addr)
        .collect::<io::Result<Vec<_>>>()?;
    let resp = resp_listeners
        .iter()
        .map(std::net::TcpListener::local_addr)
        .collect::<io::Result<Vec<_>>>()?;
    let mut nodes = Vec::new();
    for (index, (replica_listener, resp_listener)) in
        (0..replicas).zip(replica_listeners.into_iter().zip(resp_listeners))
    {
        let i = usize::from(index);
        let mut options =
            NodeOptions::new(cluster, replica_addrs.clone(), MemberId(index), resp[i]);
        options.config.witnesses = (replicas.saturating_sub(witnesses)..replicas)
            .map(vr_core::ReplicaIndex)
            .collect();
        options
            .config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        options.replica_listener = Some(replica_listener);
        options.resp_listener = Some(resp_listener);
        options.runtime = runtime;
        if let Some(dir) = data_dir {
            options.data_dir = Some(dir.join(format!("replica-{index}")));
            options.recovery_nonce = Some(random_nonce());
        }
        nodes.push(Some(start_node(options)?));
    }
    Ok(LocalCluster {
        nodes,
        resp,
        replicas: replica_addrs,
    })
}
