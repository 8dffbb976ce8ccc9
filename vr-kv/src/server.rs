//! The server: one VR replica (through `vr-tokio`) running a [`Store`], and a
//! RESP2 front end in front of it.
//!
//! Every RESP connection has its own [`vr_tokio::Client`] connected to all
//! replicas, so a connection to a backup forwards its writes (and its
//! linearizable reads) to the primary and survives a view change. The
//! commands one read from the socket brings are packed into one batch, one
//! VR operation, bounded by the cluster's `op_size_max`.
//!
//! Start one node with [`start_node`], or a whole cluster on loopback with
//! [`start_local`].

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};

use vr_core::{ClientConfig, ClientError, Config, Status};
use vr_tokio::{Client, ReplicaHandle, ReplicaOptions};

use crate::batch::{decode_results, encode_batch, encoded_batch_len, Args, BatchResult};
use crate::command::{is_read_only, Command};
use crate::resp::{parse_command, Limits, Reply};
use crate::service::{lock, SharedStore};
use crate::store::Store;

/// The reply to each command of a batch whose outcome is unknown: the VR
/// client gave up waiting, and the batch may still execute later.
pub const UNCERTAIN: &str =
    "UNCERTAIN the outcome of this command is unknown (the cluster did not answer in time)";
/// The reply when `resp_connections_max` connections are open (Redis's).
pub const ERR_MAX_CLIENTS: &str = "ERR max number of clients reached";
/// The reply to a command too large for one replicated operation.
pub const ERR_TOO_LARGE: &str =
    "ERR command too large to replicate (larger than the cluster's op_size_max)";
/// The reply when a connection's buffer fills without a whole command.
pub const ERR_REQUEST_TOO_LARGE: &str = "ERR Protocol error: request too large";

/// How to run one node: a replica of the cluster and its RESP listener.
#[derive(Debug)]
pub struct NodeOptions {
    /// The cluster's configuration, the same on every replica. Its
    /// `op_size_max` bounds one batch of commands.
    pub config: Config,
    /// Replica `i` of the cluster listens (VR protocol) on `replicas[i]`.
    pub replicas: Vec<SocketAddr>,
    /// This node's replica index.
    pub replica: u8,
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
}

impl NodeOptions {
    /// Options for replica `replica` of a cluster of `replicas.len()`
    /// replicas with id `cluster`, default configuration, RESP on
    /// `listen_resp`; a batch is abandoned (`UNCERTAIN`) after 15 attempts
    /// of 200 ms, 3 s in all.
    pub fn new(
        cluster: u64,
        replicas: Vec<SocketAddr>,
        replica: u8,
        listen_resp: SocketAddr,
    ) -> NodeOptions {
        let count = u8::try_from(replicas.len()).unwrap_or(u8::MAX);
        let config = Config::new(cluster, count);
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
        }
    }
}

/// A running node. Dropping it stops it too, without re-raising panics.
pub struct NodeHandle {
    replica: Option<Arc<ReplicaHandle>>,
    resp_address: SocketAddr,
    replica_address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
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

    /// The replica's counters.
    pub fn stats(&self) -> vr_tokio::AdapterStats {
        match &self.replica {
            Some(replica) => replica.stats(),
            None => vr_tokio::AdapterStats::default(),
        }
    }

    /// Stops the RESP front end (closing every client connection), then the
    /// replica.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(replica) = self.replica.take() {
            // The front end's runtime is gone, and with it every clone.
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

/// What every connection task shares.
struct Shared {
    store: Arc<Mutex<Store>>,
    replica: Arc<ReplicaHandle>,
    config: Config,
    replica_index: u8,
    replicas: Vec<SocketAddr>,
    request_attempts_max: u32,
    read_buffer_max: usize,
    limits: Limits,
}

/// Starts one node: its replica on its own thread (vr-tokio), and the RESP
/// front end on another thread with a current-thread tokio runtime.
pub fn start_node(options: NodeOptions) -> io::Result<NodeHandle> {
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
    } = options;
    if resp_connections_max == 0 || read_buffer_max == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "resp_connections_max and read_buffer_max must be positive",
        ));
    }
    let resp_listener = match resp_listener {
        Some(listener) => listener,
        None => std::net::TcpListener::bind(listen_resp)?,
    };
    let replica_listener = match replica_listener {
        Some(listener) => listener,
        None => {
            let address = replicas.get(usize::from(replica)).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "replica index out of range")
            })?;
            std::net::TcpListener::bind(address)?
        }
    };
    let store = Arc::new(Mutex::new(Store::new()));
    let replica_options = ReplicaOptions::new(config.clone(), replicas.clone(), replica);
    let handle = vr_tokio::start_replica_with_listener(
        replica_options,
        replica_listener,
        SharedStore(store.clone()),
    )?;
    let replica_address = handle.local_addr();
    let replica_handle = Arc::new(handle);

    let op_size_max = config.op_size_max as usize;
    let limits = Limits {
        args_max: op_size_max.max(1),
        bulk_bytes_max: op_size_max,
        inline_bytes_max: 64 * 1024,
    };
    let shared = Arc::new(Shared {
        store,
        replica: replica_handle.clone(),
        config,
        replica_index: replica,
        replicas,
        request_attempts_max,
        read_buffer_max,
        limits,
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    resp_listener.set_nonblocking(true)?;
    let resp_address = resp_listener.local_addr()?;
    let listener = {
        let _context = runtime.enter();
        TcpListener::from_std(resp_listener)?
    };
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("vr-kv-resp-{replica}"))
        .spawn(move || {
            runtime.block_on(accept_loop(
                listener,
                shared,
                resp_connections_max,
                shutdown_rx,
            ));
            // Dropping the runtime drops every connection task.
            drop(runtime);
        })?;
    Ok(NodeHandle {
        replica: Some(replica_handle),
        resp_address,
        replica_address,
        shutdown: Some(shutdown_tx),
        thread: Some(thread),
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections_max: usize,
    mut shutdown: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(connections_max));
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((mut socket, _peer)) => {
                    let _ = socket.set_nodelay(true);
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                if let Err(error) = serve(socket, &shared).await {
                                    tracing::debug!(%error, "RESP connection ended");
                                }
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            tokio::spawn(async move {
                                let reply = Reply::Error(ERR_MAX_CLIENTS.to_owned());
                                let _ = socket.write_all(&reply.to_bytes()).await;
                            });
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

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

/// One connection's pipeline: replies computed here and places for the
/// replies of the batch, in order.
enum Slot {
    /// A reply computed without the cluster.
    Local(Vec<u8>),
    /// The reply to the command at this index of the batch.
    Batched(usize),
}

/// The state of one RESP connection.
struct Connection<'a> {
    shared: &'a Shared,
    client: Option<Client>,
    read_only: bool,
    slots: Vec<Slot>,
    batch: Vec<Args>,
    out: Vec<u8>,
}

async fn serve(mut socket: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut connection = Connection {
        shared,
        client: None,
        read_only: false,
        slots: Vec::new(),
        batch: Vec::new(),
        out: Vec::new(),
    };
    let mut buffer: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let room = shared.read_buffer_max.saturating_sub(buffer.len());
        let want = room.min(chunk.len());
        let n = socket.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut used_total = 0;
        let mut close = false;
        loop {
            match parse_command(&buffer[used_total..], &shared.limits) {
                Ok(Some((args, used))) => {
                    used_total += used;
                    if !args.is_empty() {
                        connection.push(args).await;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    connection.flush().await;
                    error.reply().encode(&mut connection.out);
                    close = true;
                    break;
                }
            }
        }
        buffer.drain(..used_total);
        if !close && buffer.len() >= shared.read_buffer_max {
            connection.flush().await;
            Reply::Error(ERR_REQUEST_TOO_LARGE.to_owned()).encode(&mut connection.out);
            close = true;
        }
        connection.flush().await;
        if !connection.out.is_empty() {
            socket.write_all(&connection.out).await?;
            connection.out.clear();
        }
        if close {
            let _ = socket.shutdown().await;
            return Ok(());
        }
    }
}

impl Connection<'_> {
    fn local(&mut self, reply: Reply) {
        self.slots.push(Slot::Local(reply.to_bytes()));
    }

    /// Takes one command in pipeline order.
    async fn push(&mut self, args: Args) {
        let name = &args[0];
        if name.eq_ignore_ascii_case(b"READONLY") || name.eq_ignore_ascii_case(b"READWRITE") {
            if args.len() != 1 {
                let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
                self.local(Reply::Error(format!(
                    "ERR wrong number of arguments for '{lower}' command"
                )));
            } else {
                self.read_only = name.eq_ignore_ascii_case(b"READONLY");
                self.local(Reply::ok());
            }
            return;
        }
        if name.eq_ignore_ascii_case(b"VR.STATUS") {
            let reply = self.status_reply(false);
            self.local(reply);
            return;
        }
        if name.eq_ignore_ascii_case(b"INFO") {
            let wanted = match args.get(1) {
                None => true,
                Some(section) => ["replication", "all", "default", "everything"]
                    .iter()
                    .any(|s| section.eq_ignore_ascii_case(s.as_bytes())),
            };
            let reply = if args.len() > 2 {
                Reply::Error("ERR syntax error".to_owned())
            } else if wanted {
                self.status_reply(true)
            } else {
                Reply::Bulk(Some(Vec::new()))
            };
            self.local(reply);
            return;
        }
        let command = match Command::parse(&args) {
            Ok(command) => command,
            Err(reply) => {
                self.local(reply);
                return;
            }
        };
        if matches!(command, Command::Ping | Command::Echo) {
            let reply = Store::new().read(&args);
            self.local(reply);
            return;
        }
        if self.read_only && is_read_only(&args) {
            // Possibly stale, but not older than this connection's own
            // earlier commands as this replica has applied them.
            if !self.batch.is_empty() {
                self.flush().await;
            }
            let reply = lock(&self.shared.store).read(&args);
            self.local(reply);
            return;
        }
        let op_size_max = self.shared.config.op_size_max as usize;
        if !self.batch.is_empty() {
            self.batch.push(args);
            let fits = encoded_batch_len(&self.batch) <= op_size_max;
            let args = self.batch.pop().expect("just pushed");
            if !fits {
                self.flush().await;
            }
            self.slots.push(Slot::Batched(self.batch.len()));
            self.batch.push(args);
        } else {
            self.slots.push(Slot::Batched(0));
            self.batch.push(args);
        }
    }

    /// Runs the pending batch and writes every pending reply, in order, to
    /// `out`.
    async fn flush(&mut self) {
        let replies: Vec<Vec<u8>> = if self.batch.is_empty() {
            Vec::new()
        } else {
            let batch = std::mem::take(&mut self.batch);
            self.run(&batch).await
        };
        for slot in self.slots.drain(..) {
            match slot {
                Slot::Local(bytes) => self.out.extend_from_slice(&bytes),
                Slot::Batched(i) => match replies.get(i) {
                    Some(bytes) => self.out.extend_from_slice(bytes),
                    None => Reply::Error("ERR internal error: missing reply".to_owned())
                        .encode(&mut self.out),
                },
            }
        }
    }

    /// Replicates `batch` and returns one encoded reply per command.
    async fn run(&mut self, batch: &[Args]) -> Vec<Vec<u8>> {
        let every = |reply: Reply| vec![reply.to_bytes(); batch.len()];
        let op_size_max = self.shared.config.op_size_max as usize;
        if encoded_batch_len(batch) > op_size_max {
            return every(Reply::Error(ERR_TOO_LARGE.to_owned()));
        }
        if self.client.is_none() {
            let mut config = ClientConfig::new(&self.shared.config, client_id());
            config.request_attempts_max = self.shared.request_attempts_max;
            match Client::connect(
                self.shared.replicas.clone(),
                config,
                self.shared.config.cluster,
            )
            .await
            {
                Ok(client) => self.client = Some(client),
                Err(error) => return every(Reply::Error(format!("ERR {error}"))),
            }
        }
        let client = self.client.as_mut().expect("connected above");
        match client.submit(encode_batch(batch)).await {
            Ok(result) => match decode_results(&result) {
                Ok(BatchResult::Replies(replies)) if replies.len() == batch.len() => {
                    replies.into_iter().map(<[u8]>::to_vec).collect()
                }
                Ok(BatchResult::Rejected(why)) => every(Reply::Error(format!("ERR {why}"))),
                // Executed, but the result is not what our batch gets: the
                // effect is unknown to us.
                _ => every(Reply::Error(UNCERTAIN.to_owned())),
            },
            Err(ClientError::TimedOut) => every(Reply::Error(UNCERTAIN.to_owned())),
            Err(ClientError::TooLarge) => every(Reply::Error(ERR_TOO_LARGE.to_owned())),
            Err(ClientError::Busy) => every(Reply::Error(
                "ERR internal error: a request is already outstanding".to_owned(),
            )),
        }
    }

    /// `VR.STATUS`, or `INFO replication` with its `# Replication` header.
    fn status_reply(&self, info: bool) -> Reply {
        let stats = self.shared.replica.stats().node;
        let status = match stats.status {
            Some(Status::Normal) => "normal",
            Some(Status::ViewChange) => "view-change",
            None => "unknown",
        };
        let primary = stats.status == Some(Status::Normal)
            && self.shared.config.primary_index(stats.view) == self.shared.replica_index;
        let mut text = String::new();
        if info {
            text.push_str("# Replication\r\n");
        }
        text.push_str(&format!(
            "role:{}\r\nreplica:{}\r\nreplicas:{}\r\nview:{}\r\nstatus:{}\r\nop_number:{}\r\ncommit_number:{}\r\nepoch:0\r\n",
            if primary { "primary" } else { "backup" },
            self.shared.replica_index,
            self.shared.config.replica_count,
            stats.view,
            status,
            stats.op_number,
            stats.commit_number,
        ));
        Reply::Bulk(Some(text.into_bytes()))
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
/// ports chosen by the OS, each with a RESP port.
pub fn start_local(replicas: u8) -> io::Result<LocalCluster> {
    start_local_with(1, replicas)
}

/// [`start_local`] with cluster id `cluster`.
pub fn start_local_with(cluster: u64, replicas: u8) -> io::Result<LocalCluster> {
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
    for (i, (replica_listener, resp_listener)) in replica_listeners
        .into_iter()
        .zip(resp_listeners)
        .enumerate()
    {
        let index = u8::try_from(i).expect("fewer than 256 replicas");
        let mut options = NodeOptions::new(cluster, replica_addrs.clone(), index, resp[i]);
        options.replica_listener = Some(replica_listener);
        options.resp_listener = Some(resp_listener);
        nodes.push(Some(start_node(options)?));
    }
    Ok(LocalCluster {
        nodes,
        resp,
        replicas: replica_addrs,
    })
}
