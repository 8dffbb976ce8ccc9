//! A replica on its own glommio executor thread.
//!
//! Tasks, all on that one thread and sharing the node through a `RefCell`
//! (never borrowed across an await):
//!
//! - the acceptor, which spawns one task per inbound connection (peers and
//!   clients alike);
//! - one task per peer, which opens the outbound connection when the node
//!   first has a frame for that peer and re-opens it with backoff;
//! - the timer task, which sleeps until the node's next deadline;
//! - the flusher, which drains the node's outputs once after the
//!   connection tasks that were ready together have fed it their bytes;
//! - the root task, which answers [`ReplicaHandle::stats`] and stops
//!   everything when the handle closes its mailbox.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};
use glommio::task::JoinHandle;
use glommio::{spawn_local, ExecutorJoinHandle};
use tracing::{info, warn};
use vr_core::codec::DecodeError;
use vr_core::node::{ConnectionId, Destination, NodeEvent, NodeStats, ReplicaNode};
use vr_core::{Instant, MemberId, Service};
use vr_storage::data_dir::{Boot, DataDir, PersistJob};

use crate::connection::{run_connection, Closed, Outbox};
use crate::sync::{CloseOnDrop, Mailbox, Notify};
use crate::{invalid_input, spawn_executor, CONNECT_TIMEOUT};

/// How long the acceptor pauses after `accept` fails (e.g. out of file
/// descriptors) before trying again, so that it does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// Peer slots at most: one per member id.
const PEER_SLOTS_MAX: usize = 1 << u8::BITS;

/// A pause on stop that lets glommio's reactor hand the cancellations of
/// pending operations to the kernel before the sockets close.
const CANCEL_FLUSH_DELAY: Duration = Duration::from_millis(1);

pub use vr_core::node::ReplicaOptions;

/// One open connection, as [`AdapterStats`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionStats {
    /// The adapter's name for it, as the node sees it.
    pub id: ConnectionId,
    /// The other end's address, if the socket could tell.
    pub remote: Option<SocketAddr>,
    /// `Some(i)` for this replica's outbound connection to member `i`;
    /// `None` for an inbound connection (a peer's or a client's).
    pub peer: Option<MemberId>,
    /// Bytes of whole frames received and accepted on it.
    pub bytes_in: u64,
    /// Frames written to it.
    pub frames_out: u64,
    /// Bytes written to it.
    pub bytes_out: u64,
    /// Write calls that carried those frames: fewer than the frames when
    /// frames queued together went out together.
    pub writes: u64,
}

/// What a running replica has done; see [`ReplicaHandle::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterStats {
    /// The node's counters: view, status, op and commit numbers, frames and
    /// bytes out per replica, rejected frames by reason.
    pub node: NodeStats,
    /// The connections open now.
    pub connections: Vec<ConnectionStats>,
    /// Inbound connections accepted.
    pub connections_accepted: u64,
    /// Inbound connections closed at once because
    /// [`ReplicaOptions::client_connections_max`] were open.
    pub connections_refused: u64,
    /// Connections closed because they sent something that is not a valid
    /// frame for this cluster (the reason is in `node.rejected`).
    pub connections_closed_bad_input: u64,
    /// Connections the other end closed in the middle of a frame.
    pub connections_closed_mid_frame: u64,
    /// Frames dropped because their connection's queue was full.
    pub frames_dropped_queue_full: u64,
    /// Frames dropped because their connection was gone or could not be
    /// opened.
    pub frames_dropped_unconnected: u64,
    /// Failed attempts to open a connection to a peer.
    pub connect_failures: u64,
    /// Connections to peers opened again after a failure or a close.
    pub reconnects: u64,
}

/// A request from the handle to the replica's thread.
enum Control {
    Stats(SyncSender<AdapterStats>),
}

/// A running replica. Dropping it stops the replica, like
/// [`ReplicaHandle::stop`].
pub struct ReplicaHandle {
    control: Arc<Mailbox<Control>>,
    thread: Option<ExecutorJoinHandle<()>>,
    local_addr: SocketAddr,
}

impl ReplicaHandle {
    /// The address the replica listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether the replica still runs: `false` once its loop ended (a
    /// storage error stops a durable replica; see the log).
    pub fn is_running(&self) -> bool {
        !self.control.is_closed()
    }

    /// A snapshot of the replica's counters, taken on its thread. Empty if
    /// the replica's thread has died (a bug, reported when it is stopped).
    pub fn stats(&self) -> AdapterStats {
        let (reply, answer) = sync_channel(1);
        if self.control.send(Control::Stats(reply)).is_err() {
            return AdapterStats::default();
        }
        answer.recv().unwrap_or_default()
    }

    /// Stops the replica: closes the listener and every connection, drops
    /// the service, and returns once its thread has ended.
    ///
    /// # Panics
    ///
    /// If the replica's thread panicked, the panic is passed on here.
    pub fn stop(mut self) {
        if let Err(error) = self.shutdown() {
            match error {
                glommio::GlommioError::BuilderError(glommio::BuilderErrorKind::ThreadPanic(
                    panic,
                )) => std::panic::resume_unwind(panic),
                error => warn!(%error, "replica thread failed"),
            }
        }
    }

    fn shutdown(&mut self) -> glommio::Result<(), ()> {
        self.control.close();
        match self.thread.take() {
            Some(thread) => thread.join(),
            None => Ok(()),
        }
    }
}

impl Drop for ReplicaHandle {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            warn!(%error, "replica thread failed");
        }
    }
}

/// Starts replica `options.replica` listening on its address in
/// `options.addresses`, on a new thread running a glommio executor.
pub fn start_replica<S: Service + Send + 'static>(
    options: ReplicaOptions,
    service: S,
) -> io::Result<ReplicaHandle> {
    let address = *options
        .addresses
        .get(usize::from(options.replica))
        .ok_or_else(|| invalid_input("no address for this replica index"))?;
    let listener = std::net::TcpListener::bind(address)?;
    start_replica_with_listener(options, listener, service)
}

/// Like [`start_replica`] with a listener the caller bound already (tests
/// bind port 0 to learn free addresses first).
pub fn start_replica_with_listener<S: Service + Send + 'static>(
    options: ReplicaOptions,
    listener: std::net::TcpListener,
    service: S,
) -> io::Result<ReplicaHandle> {
    start(options, listener, service, None)
}

/// Starts a durable replica ([`vr_core::Durability::Disk`] in
/// `options.config`) on a listener bound by the caller, with its data
/// directory opened by [`DataDir::open`] and started as `boot` says. Its
/// persists run one at a time on the executor's blocking thread
/// (`spawn_blocking`), the same blocking file code as the other adapters;
/// nothing is acknowledged before the persist it rests on returned. A
/// storage error stops the replica (logged).
pub fn start_durable_replica_with_listener<S: Service + Send + 'static>(
    options: ReplicaOptions,
    listener: std::net::TcpListener,
    service: S,
    data_dir: DataDir,
    boot: Boot,
) -> io::Result<ReplicaHandle> {
    start(options, listener, service, Some((data_dir, boot)))
}

fn start<S: Service + Send + 'static>(
    mut options: ReplicaOptions,
    listener: std::net::TcpListener,
    service: S,
    disk: Option<(DataDir, Boot)>,
) -> io::Result<ReplicaHandle> {
    options.validate().map_err(invalid_input)?;
    if options.peer_queue_bytes_max < options.config.message_size_max as usize {
        return Err(invalid_input(
            "peer_queue_bytes_max must hold at least one frame of message_size_max",
        ));
    }
    // The node's clock: nanoseconds since the replica started.
    let origin = std::time::Instant::now();
    let (replica, data_dir) = vr_storage::data_dir::build_node_replica(&mut options, service, disk)
        .map_err(|error| invalid_input(&error))?;
    let node = ReplicaNode::new(replica, options.client_routes_max);
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let control = Arc::new(Mailbox::new());
    let thread = spawn_executor(&format!("vr-replica-{}", options.replica), {
        let control = control.clone();
        move || run(options, node, origin, listener, control, data_dir)
    })?;
    Ok(ReplicaHandle {
        control,
        thread: Some(thread),
        local_addr,
    })
}

/// The root task: starts the others, answers the handle, and cancels
/// everything once the handle closes the mailbox.
async fn run<S: Service + 'static>(
    options: ReplicaOptions,
    node: ReplicaNode<S>,
    origin: std::time::Instant,
    listener: std::net::TcpListener,
    control: Arc<Mailbox<Control>>,
    data_dir: Option<DataDir>,
) {
    let _release_waiters = CloseOnDrop(&control);
    // SAFETY: the descriptor comes from a bound, listening listener that we
    // own, and `into_raw_fd` hands its ownership over exactly once.
    let listener = Rc::new(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) });
    let replica = options.replica;
    let shared = Rc::new(RefCell::new(Shared::new(options, node, origin)));
    let mut tasks = vec![
        spawn_local(accept(shared.clone(), listener.clone())).detach(),
        spawn_local(fire_timers(shared.clone())).detach(),
        spawn_local(flush_outputs(shared.clone())).detach(),
        spawn_local(start_peers(shared.clone())).detach(),
    ];
    if let Some(dir) = data_dir {
        tasks.push(spawn_local(persist(shared.clone(), dir, control.clone())).detach());
    }
    info!(%replica, "replica started");
    while let Some(Control::Stats(reply)) = control.recv().await {
        // The handle may have given up waiting; nothing to do then.
        let _ = reply.send(shared.borrow().stats());
    }
    let connections: Vec<_> = shared
        .borrow_mut()
        .connections
        .drain()
        .filter_map(|(_, connection)| connection.task)
        .collect();
    tasks.extend(connections);
    tasks.append(&mut shared.borrow_mut().peer_tasks);
    for task in &tasks {
        task.cancel();
    }
    for task in tasks {
        task.await;
    }
    // The cancelled accept is still in the kernel's hands, holding the
    // listening socket open, until the reactor submits its cancellation.
    // One trip through the reactor does that; closing the socket after it
    // releases the port before `stop` returns.
    glommio::timer::sleep(CANCEL_FLUSH_DELAY).await;
    drop(listener);
    info!(%replica, "replica stopped");
}

/// A durable replica's persists: each carried out on the executor's
/// blocking thread, then answered to the node. A storage error closes the
/// control mailbox, which stops the replica.
async fn persist<S: Service + 'static>(
    shared: Rc<RefCell<Shared<S>>>,
    dir: DataDir,
    control: Arc<Mailbox<Control>>,
) {
    let ready = shared.borrow().persist_ready.clone();
    let mut dir = Some(dir);
    loop {
        let job = shared.borrow_mut().persists.pop_front();
        let Some(job) = job else {
            ready.notified().await;
            continue;
        };
        let Some(mut owned) = dir.take() else {
            return;
        };
        let (back, sequence, outcome) = glommio::executor()
            .spawn_blocking(move || {
                let outcome = owned.persist(&job);
                (owned, job.sequence(), outcome)
            })
            .await;
        if let Err(error) = outcome {
            let replica = shared.borrow().options.replica;
            tracing::error!(%replica, %error, "storage failed: stopping the replica");
            control.close();
            return;
        }
        dir = Some(back);
        let mut shared = shared.borrow_mut();
        let now = shared.now();
        shared.node.handle_persisted(now, sequence);
        shared.dispatch();
    }
}

/// The state every task of one replica shares.
struct Shared<S: Service> {
    node: ReplicaNode<S>,
    origin: std::time::Instant,
    options: ReplicaOptions,
    /// The queue of the outbound connection to each peer, by member id;
    /// `None` for itself and for members whose address is unknown. At most
    /// [`PEER_SLOTS_MAX`] slots.
    peers: Vec<Option<Rc<Outbox>>>,
    /// Each member's address by member id: `options.addresses`, then what
    /// reconfigurations carried (`NodeEvent::EpochChanged`). A peer's task
    /// reads it at every connect.
    peer_addresses: Vec<Option<SocketAddr>>,
    /// Peers whose task [`start_peers`] has yet to spawn.
    peers_to_start: Vec<MemberId>,
    /// Wakes [`start_peers`].
    peers_added: Rc<Notify>,
    /// The peers' tasks, cancelled on stop.
    peer_tasks: Vec<JoinHandle<()>>,
    /// Each peer task's wake-up on an accepted connection (see
    /// [`back_off`]), by member id.
    peer_wakes: Vec<Option<Rc<Notify>>>,
    connections: HashMap<ConnectionId, Connection>,
    inbound_open: usize,
    next_connection: ConnectionId,
    /// The counters of [`AdapterStats`] (its `node` and `connections` are
    /// filled in by [`Shared::stats`]).
    counters: AdapterStats,
    /// Wakes the timer task when the node's deadline moves earlier.
    timer: Rc<Notify>,
    /// The deadline the timer task sleeps until.
    timer_armed: Option<Instant>,
    /// Wakes the flusher after bytes were fed to the node.
    flush: Rc<Notify>,
    /// Bytes were fed since the last [`Shared::dispatch`].
    flush_pending: bool,
    /// A durable replica's persists waiting for the [`persist`] task (the
    /// core emits one at a time, so at most one waits).
    persists: std::collections::VecDeque<PersistJob>,
    /// Wakes the [`persist`] task.
    persist_ready: Rc<Notify>,
}

struct Connection {
    outbox: Rc<Outbox>,
    remote: Option<SocketAddr>,
    peer: Option<MemberId>,
    bytes_in: u64,
    /// The task serving an inbound connection, cancelled on stop.
    task: Option<JoinHandle<()>>,
}

impl<S: Service> Shared<S> {
    fn new(options: ReplicaOptions, node: ReplicaNode<S>, origin: std::time::Instant) -> Self {
        let me = usize::from(options.replica);
        let peers = (0..options.addresses.len())
            .map(|peer| (peer != me).then(|| Rc::new(Outbox::new(options.peer_queue_bytes_max))))
            .collect();
        let peers_to_start = (0..options.addresses.len())
            .filter(|&peer| peer != me)
            .map(|peer| MemberId(peer as u8))
            .collect();
        let peers_added = Rc::new(Notify::default());
        peers_added.notify();
        Shared {
            node,
            origin,
            peer_addresses: options.addresses.iter().copied().map(Some).collect(),
            peers_to_start,
            peers_added,
            peer_tasks: Vec::new(),
            peer_wakes: Vec::new(),
            options,
            peers,
            connections: HashMap::new(),
            inbound_open: 0,
            next_connection: 0,
            counters: AdapterStats::default(),
            timer: Rc::new(Notify::default()),
            persists: std::collections::VecDeque::new(),
            persist_ready: Rc::new(Notify::default()),
            timer_armed: None,
            flush: Rc::new(Notify::default()),
            flush_pending: false,
        }
    }

    fn now(&self) -> Instant {
        // u64 nanoseconds last 584 years.
        Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    fn stats(&self) -> AdapterStats {
        let mut stats = self.counters.clone();
        stats.node = self.node.stats();
        stats.connections = self
            .connections
            .iter()
            .map(|(&id, connection)| ConnectionStats {
                id,
                remote: connection.remote,
                peer: connection.peer,
                bytes_in: connection.bytes_in,
                frames_out: connection.outbox.written.get().frames,
                bytes_out: connection.outbox.written.get().bytes,
                writes: connection.outbox.written.get().writes,
            })
            .collect();
        stats.connections.sort_by_key(|connection| connection.id);
        stats
    }

    fn open_connection(
        &mut self,
        remote: Option<SocketAddr>,
        peer: Option<MemberId>,
        outbox: Rc<Outbox>,
    ) -> ConnectionId {
        let id = self.next_connection;
        self.next_connection += 1;
        if peer.is_none() {
            self.inbound_open += 1;
        }
        let connection = Connection {
            outbox,
            remote,
            peer,
            bytes_in: 0,
            task: None,
        };
        self.connections.insert(id, connection);
        id
    }

    fn close_connection(&mut self, id: ConnectionId, closed: &Closed) {
        let replica = self.options.replica;
        let Some(connection) = self.connections.remove(&id) else {
            return;
        };
        if connection.peer.is_none() {
            self.inbound_open -= 1;
        }
        self.node.connection_closed(id);
        let remote = connection.remote;
        match closed {
            Closed::Eof { partial_bytes: 0 } => {
                info!(%replica, connection = id, ?remote, "connection closed");
            }
            Closed::Eof { partial_bytes } => {
                self.counters.connections_closed_mid_frame += 1;
                info!(
                    %replica,
                    connection = id,
                    ?remote,
                    partial_bytes,
                    "connection closed in the middle of a frame"
                );
            }
            Closed::Io(error) => {
                info!(%replica, connection = id, ?remote, %error, "connection failed");
            }
            Closed::BadInput(error) => {
                self.counters.connections_closed_bad_input += 1;
                // The frame itself was logged as a warning when rejected.
                info!(%replica, connection = id, ?remote, %error, "closed a connection that sent a bad frame");
            }
        }
    }

    /// Feeds what a connection read to the node and leaves the outputs to
    /// the flusher: every connection task woken in the same round of the
    /// reactor runs before it (glommio's run queue is first in, first out,
    /// and a woken task goes to its back), so their requests share one
    /// Prepare (§6). A lone request waits for one task switch, no timer.
    fn on_bytes(&mut self, id: ConnectionId, bytes: &[u8]) -> Result<usize, DecodeError> {
        let now = self.now();
        let result = self.node.feed_bytes(now, id, bytes);
        if let (Ok(used), Some(connection)) = (&result, self.connections.get_mut(&id)) {
            connection.bytes_in += *used as u64;
        }
        if !self.flush_pending {
            self.flush_pending = true;
            self.flush.notify();
        }
        result
    }

    /// Carries out what the node has to say after inputs: queues its
    /// frames, logs its events, and re-arms the timer if needed.
    fn dispatch(&mut self) {
        let replica = self.options.replica;
        // Whoever dispatches flushes what was fed, so nothing waits for the
        // flusher once the timer task (or the flusher) has been here.
        self.node.flush();
        self.flush_pending = false;
        // Events first: a new epoch's members get their queues before the
        // frames addressed to them.
        while let Some(event) = self.node.poll_event() {
            match event {
                NodeEvent::StatusChanged {
                    view,
                    status,
                    primary,
                } => info!(%replica, view, ?status, primary, "status changed"),
                NodeEvent::FrameRejected { connection, error } => {
                    warn!(%replica, connection, %error, "rejected a frame; closing its connection");
                }
                NodeEvent::EpochChanged { epoch, members } => self.on_epoch(epoch, members),
                NodeEvent::ClusterFormed { view } => {
                    tracing::warn!(%replica, view, "formed a new, empty cluster: every other replica answered that it holds no state; if this cluster held data, that data is lost (more than f replicas were down or recovering at once)");
                }
                NodeEvent::Persist(persist) => {
                    let job = PersistJob::new(self.node.replica(), persist);
                    self.persists.push_back(job);
                    self.persist_ready.notify();
                }
            }
        }
        while let Some(transmit) = self.node.poll_transmit() {
            let outbox = match transmit.destination {
                Destination::Replica(peer) => {
                    self.peers.get(usize::from(peer)).and_then(Option::as_ref)
                }
                Destination::Connection(id) => self.connections.get(&id).map(|c| &c.outbox),
            };
            match outbox {
                Some(outbox) => {
                    if !outbox.push(transmit.frame) {
                        self.counters.frames_dropped_queue_full += 1;
                    }
                }
                None => self.counters.frames_dropped_unconnected += 1,
            }
        }
        let deadline = self.node.poll_timeout();
        if deadline.is_some() && (self.timer_armed.is_none() || deadline < self.timer_armed) {
            self.timer.notify();
        }
    }
}

impl<S: Service> Shared<S> {
    /// The replica entered `epoch` (§7): learns the addresses its
    /// reconfiguration carried, giving new members a queue and a task. A
    /// member whose address changed is connected to at its new address
    /// from its next connect on.
    fn on_epoch(&mut self, epoch: u32, members: Vec<(MemberId, Vec<u8>)>) {
        let replica = self.options.replica;
        let ids: Vec<MemberId> = members.iter().map(|(m, _)| *m).collect();
        info!(%replica, epoch, members = ?ids, "epoch changed");
        for (member, address) in members {
            let Some(address) = crate::parse_address(&address) else {
                continue;
            };
            let index = usize::from(member);
            if index >= PEER_SLOTS_MAX || member == replica {
                continue;
            }
            if self.peer_addresses.len() <= index {
                self.peer_addresses.resize(index + 1, None);
            }
            if self.peers.len() <= index {
                self.peers.resize_with(index + 1, || None);
            }
            if self.peer_addresses[index] == Some(address) {
                continue;
            }
            info!(%replica, %member, %address, "member address learned");
            self.peer_addresses[index] = Some(address);
            if self.peers[index].is_none() {
                let outbox = Rc::new(Outbox::new(self.options.peer_queue_bytes_max));
                self.peers[index] = Some(outbox);
                self.peers_to_start.push(member);
                self.peers_added.notify();
            }
        }
    }
}

/// Spawns the task of each peer, the first ones at the start and the others
/// as reconfigurations add them.
async fn start_peers<S: Service + 'static>(shared: Rc<RefCell<Shared<S>>>) {
    let added = shared.borrow().peers_added.clone();
    loop {
        added.notified().await;
        let peers = std::mem::take(&mut shared.borrow_mut().peers_to_start);
        for peer in peers {
            let wake = Rc::new(Notify::default());
            let task = spawn_local(connect_peer(shared.clone(), peer, wake.clone())).detach();
            let mut state = shared.borrow_mut();
            state.peer_tasks.push(task);
            let index = usize::from(peer);
            if state.peer_wakes.len() <= index {
                state.peer_wakes.resize(index + 1, None);
            }
            state.peer_wakes[index] = Some(wake);
        }
    }
}

/// Accepts inbound connections and spawns a task for each.
async fn accept<S: Service + 'static>(shared: Rc<RefCell<Shared<S>>>, listener: Rc<TcpListener>) {
    loop {
        match listener.accept().await {
            Ok(stream) => serve_inbound(&shared, stream),
            Err(error) => {
                warn!(replica = %shared.borrow().options.replica, %error, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

fn serve_inbound<S: Service + 'static>(shared: &Rc<RefCell<Shared<S>>>, mut stream: TcpStream) {
    let remote = stream.peer_addr().ok();
    let mut state = shared.borrow_mut();
    let replica = state.options.replica;
    if state.inbound_open >= state.options.client_connections_max {
        state.counters.connections_refused += 1;
        info!(%replica, ?remote, "refused a connection: too many open");
        return;
    }
    state.counters.connections_accepted += 1;
    // A peer that restarted connects as soon as it has something to say
    // (recovery, its first view change vote), from an address that does not
    // say who it is: every peer task waiting out a backoff tries again now
    // rather than after up to `reconnect_backoff_max`.
    for wake in state.peer_wakes.iter().flatten() {
        wake.notify();
    }
    // Frames are small and latency matters; batching is done by the queue.
    if let Err(error) = stream.set_nodelay(true) {
        info!(%replica, ?remote, %error, "could not set TCP_NODELAY");
    }
    let outbox = Rc::new(Outbox::new(state.options.peer_queue_bytes_max));
    let id = state.open_connection(remote, None, outbox.clone());
    drop(state);
    let task = spawn_local({
        let shared = shared.clone();
        async move {
            let closed = run_connection(&mut stream, &outbox, |bytes| {
                shared.borrow_mut().on_bytes(id, bytes)
            })
            .await;
            shared.borrow_mut().close_connection(id, &closed);
        }
    })
    .detach();
    if let Some(connection) = shared.borrow_mut().connections.get_mut(&id) {
        connection.task = Some(task);
    }
}

/// After a failure: waits `backoff`, or, once `wake` says a connection was
/// accepted since, until `min` after the failure. Returns whether it was
/// woken early.
async fn back_off(backoff: Duration, min: Duration, wake: &Notify) -> bool {
    let failed_at = std::time::Instant::now();
    // Connections accepted before the failure say nothing of the peer.
    wake.clear();
    let woken = future::or(
        async {
            glommio::timer::sleep(backoff).await;
            false
        },
        async {
            wake.notified().await;
            true
        },
    )
    .await;
    if woken {
        glommio::timer::sleep(min.saturating_sub(failed_at.elapsed())).await;
    }
    woken
}

/// Keeps the outbound connection to `peer`: opens it when a frame is queued,
/// serves it, and after a failure drops the queue (VR resends what still
/// matters) and waits a growing backoff before trying again, cut short when
/// `wake` says a connection was accepted (the peer may have restarted).
async fn connect_peer<S: Service + 'static>(
    shared: Rc<RefCell<Shared<S>>>,
    peer: MemberId,
    wake: Rc<Notify>,
) {
    let (replica, outbox, backoff_min, backoff_max) = {
        let state = shared.borrow();
        let options = &state.options;
        let Some(Some(outbox)) = state.peers.get(usize::from(peer)).cloned() else {
            return;
        };
        let backoff = (options.reconnect_backoff_min, options.reconnect_backoff_max);
        (options.replica, outbox, backoff.0, backoff.1)
    };
    let mut backoff = backoff_min;
    let mut failed_before = false;
    loop {
        while outbox.is_empty() {
            outbox.queued.notified().await;
        }
        // Read at every connect: a reconfiguration may have moved it.
        let address = shared.borrow().peer_addresses[usize::from(peer)];
        let Some(address) = address else {
            return;
        };
        let mut stream = match TcpStream::connect_timeout(address, CONNECT_TIMEOUT).await {
            Ok(stream) => stream,
            Err(error) => {
                info!(%replica, %peer, %address, %error, ?backoff, "connecting to peer failed");
                {
                    let counters = &mut shared.borrow_mut().counters;
                    counters.connect_failures += 1;
                    counters.frames_dropped_unconnected += outbox.clear() as u64;
                }
                backoff = if back_off(backoff, backoff_min, &wake).await {
                    backoff_min
                } else {
                    backoff.saturating_mul(2).min(backoff_max)
                };
                failed_before = true;
                continue;
            }
        };
        backoff = backoff_min;
        if let Err(error) = stream.set_nodelay(true) {
            info!(%replica, %peer, %error, "could not set TCP_NODELAY");
        }
        let id = {
            let mut state = shared.borrow_mut();
            if failed_before {
                state.counters.reconnects += 1;
            }
            state.open_connection(Some(address), Some(peer), outbox.clone())
        };
        info!(%replica, %peer, %address, connection = id, "connected to peer");
        // Peers send nothing back on this connection, but reading it is how
        // a close is noticed before the next write fails.
        let closed = run_connection(&mut stream, &outbox, |bytes| {
            shared.borrow_mut().on_bytes(id, bytes)
        })
        .await;
        drop(stream);
        shared.borrow_mut().close_connection(id, &closed);
        failed_before = true;
        back_off(backoff, backoff_min, &wake).await;
    }
}

/// Drains the node once per wake-up by [`Shared::on_bytes`]: after the
/// connection tasks that were ready before it have all fed their reads.
async fn flush_outputs<S: Service + 'static>(shared: Rc<RefCell<Shared<S>>>) {
    let flush = shared.borrow().flush.clone();
    loop {
        flush.notified().await;
        shared.borrow_mut().dispatch();
    }
}

/// Sleeps until the node's next deadline, or until an input moves it
/// earlier, and fires the node's timers when due.
async fn fire_timers<S: Service + 'static>(shared: Rc<RefCell<Shared<S>>>) {
    let moved = shared.borrow().timer.clone();
    loop {
        let wait = {
            let mut state = shared.borrow_mut();
            let now = state.now();
            let deadline = state.node.poll_timeout();
            if deadline.is_some_and(|deadline| deadline <= now) {
                state.node.handle_timeout(now);
                state.dispatch();
                None
            } else {
                state.timer_armed = deadline;
                Some(deadline.map(|deadline| Duration::from_nanos(deadline.saturating_since(now))))
            }
        };
        match wait {
            // Fired: let the other tasks run before looking again, so that
            // even a deadline that failed to move cannot starve them.
            None => future::yield_now().await,
            Some(Some(wait)) => future::or(moved.notified(), glommio::timer::sleep(wait)).await,
            Some(None) => moved.notified().await,
        }
    }
}
