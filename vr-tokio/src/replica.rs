//! A replica: one thread, one current-thread runtime, one task owning the
//! [`ReplicaNode`], and one task per connection owning its socket.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use vr_core::codec;
use vr_core::node::{ConnectionId, Destination, NodeEvent, ReplicaNode, Transmit};
use vr_core::{Instant, MemberId, Service};
use vr_storage::data_dir::{Boot, DataDir, PersistJob};

use crate::link::{self, Backoff, Events, LinkCounters, LinkEvent, Outbox, PushError};
use crate::{AdapterStats, ConnectionStats, ReplicaOptions};

/// Connection events waiting for the node's task; a full channel makes
/// connection tasks wait, which stops them reading from their sockets.
const EVENTS_QUEUED_MAX: usize = 256;
/// Connection events handled in one turn of the node's loop before its
/// outputs are flushed: as many as the channel holds.
const EVENTS_PER_FLUSH_MAX: usize = EVENTS_QUEUED_MAX;
/// After a failed `accept` (out of file descriptors, typically), wait this
/// long before the next rather than spinning.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);
/// Peer slots at most: one per member id.
const PEER_SLOTS_MAX: usize = 1 << u8::BITS;

/// Starts replica `options.replica`, listening on its address.
pub fn start_replica<S: Service + Send + 'static>(
    options: ReplicaOptions,
    service: S,
) -> io::Result<ReplicaHandle> {
    let address = *options
        .addresses
        .get(usize::from(options.replica))
        .ok_or_else(|| invalid_input("replica index out of range of the addresses"))?;
    let listener = std::net::TcpListener::bind(address)?;
    start_replica_with_listener(options, listener, service)
}

/// Starts a durable replica ([`vr_core::Durability::Disk`] in
/// `options.config`) on a listener bound by the caller, with its data
/// directory opened by [`DataDir::open`] and started as `boot` says. Its
/// persists run on tokio's blocking threads (`spawn_blocking`), one at a
/// time; nothing is acknowledged before the persist it rests on returned.
/// A storage error stops the replica (logged).
pub fn start_durable_replica_with_listener<S: Service + Send + 'static>(
    options: ReplicaOptions,
    listener: std::net::TcpListener,
    service: S,
    data_dir: DataDir,
    boot: Boot,
) -> io::Result<ReplicaHandle> {
    start(options, listener, service, Some((data_dir, boot)))
}

/// Starts replica `options.replica` on a listener bound by the caller (tests
/// bind port 0 to learn free addresses first).
pub fn start_replica_with_listener<S: Service + Send + 'static>(
    options: ReplicaOptions,
    listener: std::net::TcpListener,
    service: S,
) -> io::Result<ReplicaHandle> {
    start(options, listener, service, None)
}

fn start<S: Service + Send + 'static>(
    mut options: ReplicaOptions,
    listener: std::net::TcpListener,
    service: S,
    disk: Option<(DataDir, Boot)>,
) -> io::Result<ReplicaHandle> {
    options.validate().map_err(invalid_input)?;
    let origin = std::time::Instant::now();
    let (replica, data_dir) = vr_storage::data_dir::build_node_replica(&mut options, service, disk)
        .map_err(|error| invalid_input(&error))?;
    let node = ReplicaNode::new(replica, options.client_routes_max);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    // Registering with the reactor needs the runtime's context.
    let listener = {
        let _context = runtime.enter();
        TcpListener::from_std(listener)?
    };
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let index = options.replica;
    let thread = std::thread::Builder::new()
        .name(format!("vr-replica-{index}"))
        .spawn(move || {
            let (events_tx, events_rx) = mpsc::channel(EVENTS_QUEUED_MAX);
            let (persisted_tx, persisted_rx) = mpsc::unbounded_channel();
            let state = Loop {
                node,
                peers: (0..options.addresses.len()).map(|_| None).collect(),
                peer_addresses: options.addresses.iter().copied().map(Some).collect(),
                options,
                origin,
                inbound: HashMap::new(),
                connection_next: 0,
                events_tx,
                accepted: watch::Sender::new(0),
                counters: Arc::default(),
                stats: AdapterStats::default(),
                disk: data_dir.map(|dir| Disk::Idle(Box::new(dir))),
                persisted_tx,
            };
            runtime.block_on(state.run(listener, commands_rx, events_rx, persisted_rx));
            // Dropping the runtime drops every connection task, and with
            // them every socket.
            drop(runtime);
            tracing::info!(replica = %index, "replica stopped");
        })?;
    Ok(ReplicaHandle {
        address,
        commands: commands_tx,
        thread: Some(thread),
        stats_last: Mutex::default(),
    })
}

fn invalid_input(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.to_string())
}

enum Command {
    Stats(std::sync::mpsc::SyncSender<AdapterStats>),
    Stop,
}

/// A running replica. Dropping it stops the replica, like [`ReplicaHandle::stop`].
pub struct ReplicaHandle {
    address: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Returned by `stats` if the loop can no longer answer.
    stats_last: Mutex<AdapterStats>,
}

impl ReplicaHandle {
    /// The address the replica listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Whether the replica still runs: `false` once its loop ended (a
    /// storage error stops a durable replica; see the log).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// A snapshot of the counters, taken by the replica's own loop between
    /// two inputs (so it is consistent). Callable from any thread, including
    /// a tokio runtime's: it blocks only until the loop answers.
    pub fn stats(&self) -> AdapterStats {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let last = || match self.stats_last.lock() {
            Ok(last) => last.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if self.commands.send(Command::Stats(reply)).is_err() {
            return last();
        }
        match answer.recv() {
            Ok(stats) => {
                if let Ok(mut last) = self.stats_last.lock() {
                    *last = stats.clone();
                }
                stats
            }
            Err(_) => last(),
        }
    }

    /// Stops the replica: closes the listener and every connection, joins
    /// the thread. A panic of the replica's thread (a bug) is re-raised here.
    pub fn stop(mut self) {
        if let Err(panic) = self.shutdown() {
            std::panic::resume_unwind(panic);
        }
    }

    fn shutdown(&mut self) -> std::thread::Result<()> {
        // Fails only if the loop has already ended.
        let _ = self.commands.send(Command::Stop);
        match self.thread.take() {
            Some(thread) => thread.join(),
            None => Ok(()),
        }
    }
}

impl Drop for ReplicaHandle {
    fn drop(&mut self) {
        if self.shutdown().is_err() {
            tracing::error!(address = %self.address, "replica thread panicked");
        }
    }
}

/// An accepted connection, as the node's task keeps it.
struct Inbound {
    outbox: Outbox,
    task: JoinHandle<()>,
    /// Bytes received but not yet consumed: the start of an incomplete
    /// frame. Bounded by the node, which rejects an oversized frame from its
    /// header, so this holds at most one frame plus one read.
    buffer: Vec<u8>,
    stats: ConnectionStats,
}

/// The node's task: everything the replica owns.
struct Loop<S: Service> {
    node: ReplicaNode<S>,
    options: ReplicaOptions,
    /// The clock's origin: `vr_core::Instant` counts nanoseconds from here.
    origin: std::time::Instant,
    /// Outbound links to peers by member id, opened when the first frame
    /// for them comes. At most [`PEER_SLOTS_MAX`] slots (member ids are u8).
    peers: Vec<Option<Outbox>>,
    /// Each member's address by member id: `options.addresses`, then what
    /// reconfigurations carried (`NodeEvent::EpochChanged`).
    peer_addresses: Vec<Option<SocketAddr>>,
    inbound: HashMap<ConnectionId, Inbound>,
    connection_next: ConnectionId,
    events_tx: mpsc::Sender<LinkEvent>,
    /// Counts accepted connections; every outbound link to a peer watches
    /// it, to try again at once when a restarted peer connects.
    accepted: watch::Sender<u64>,
    counters: Arc<LinkCounters>,
    /// The adapter's own counters (`node` and `inbound` filled on request).
    stats: AdapterStats,
    /// A durable replica's data directory: idle here, or away on a
    /// blocking thread carrying out one persist.
    disk: Option<Disk>,
    /// Where a blocking thread returns the directory with the outcome.
    persisted_tx: mpsc::UnboundedSender<Persisted>,
}

/// A durable replica's data directory, as the node's task holds it.
enum Disk {
    /// Boxed: the directory is large (the storage's buffers), and moves to
    /// a blocking thread and back at every persist.
    Idle(Box<DataDir>),
    /// On a blocking thread; `next` waits for it (the core emits one
    /// persist at a time, so at most one does).
    Busy { next: Option<Box<PersistJob>> },
}

/// A persist carried out: the directory back, and the outcome.
type Persisted = (Box<DataDir>, u64, Result<(), vr_storage::Error>);

impl<S: Service> Loop<S> {
    async fn run(
        mut self,
        listener: TcpListener,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::Receiver<LinkEvent>,
        mut persisted: mpsc::UnboundedReceiver<Persisted>,
    ) {
        let replica = self.options.replica;
        let address = listener.local_addr().ok();
        tracing::info!(%replica, ?address, "replica listening");
        let (accepted_tx, mut accepted) = mpsc::channel(16);
        // Accepting in a task of its own lets it pause after an error
        // without delaying the node.
        tokio::spawn(accept_loop(listener, accepted_tx));
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut timer_armed: Option<Instant> = None;
        loop {
            let deadline = self.node.poll_timeout();
            if let Some(at) = deadline.filter(|&at| Some(at) != timer_armed) {
                let at_std = self.origin + Duration::from_nanos(at.as_nanos());
                timer.as_mut().reset(tokio::time::Instant::from_std(at_std));
            }
            timer_armed = deadline;
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stats(reply)) => {
                        // The caller may have given up waiting; nothing to do then.
                        let _ = reply.send(self.snapshot());
                    }
                    Some(Command::Stop) | None => return,
                },
                Some((stream, peer)) = accepted.recv() => self.on_accept(stream, peer),
                Some(event) = events.recv() => {
                    self.on_event(event);
                    // Connection tasks that ran since this loop last did
                    // have queued their reads too: feed them all before the
                    // flush below, so that requests from different
                    // connections share a Prepare (§6). Bounded, so that a
                    // flood of events cannot hold back timers and commands.
                    for _ in 1..EVENTS_PER_FLUSH_MAX {
                        match events.try_recv() {
                            Ok(event) => self.on_event(event),
                            Err(_) => break,
                        }
                    }
                }
                Some((dir, sequence, outcome)) = persisted.recv() => {
                    if let Err(error) = outcome {
                        let replica = self.options.replica;
                        tracing::error!(%replica, %error, "storage failed: stopping the replica");
                        return;
                    }
                    self.node.handle_persisted(self.now(), sequence);
                    self.disk_done(dir);
                }
                () = &mut timer, if deadline.is_some() => {
                    self.node.handle_timeout(self.now());
                    // Re-arm even if the deadline is unchanged: it has fired.
                    timer_armed = None;
                }
            }
            self.drain();
        }
    }

    fn now(&self) -> Instant {
        // u64 nanoseconds last 584 years.
        Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    fn on_accept(&mut self, stream: TcpStream, peer: SocketAddr) {
        if self.inbound.len() >= self.options.client_connections_max {
            self.stats.connections_refused += 1;
            tracing::warn!(%peer, open = self.inbound.len(), "refusing connection: too many open");
            return;
        }
        self.stats.connections_accepted += 1;
        // A peer that restarted connects as soon as it has something to
        // say (recovery, its first view change vote): links backing off
        // from it try again now rather than after up to
        // `reconnect_backoff_max`, which it would otherwise wait out.
        self.accepted.send_modify(|n| *n = n.wrapping_add(1));
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "set_nodelay failed");
        }
        let connection = self.connection_next;
        self.connection_next += 1;
        let (outbox, inbox) = link::queue(self.options.peer_queue_bytes_max);
        let events: Events = Some((self.events_tx.clone(), connection));
        let task = tokio::spawn(link::run_inbound(stream, inbox, events));
        tracing::debug!(%peer, connection, "connection accepted");
        let stats = ConnectionStats {
            connection,
            peer,
            frames_in: 0,
            bytes_in: 0,
        };
        self.inbound.insert(
            connection,
            Inbound {
                outbox,
                task,
                buffer: Vec::new(),
                stats,
            },
        );
    }

    fn on_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Data { key, bytes } => self.on_data(key, bytes),
            LinkEvent::Closed { key, error } => {
                let Some(inbound) = self.inbound.remove(&key) else {
                    return;
                };
                let peer = inbound.stats.peer;
                if !inbound.buffer.is_empty() {
                    self.stats.connections_closed_mid_frame += 1;
                    let bytes = inbound.buffer.len();
                    tracing::warn!(%peer, connection = key, bytes, "connection ended mid-frame");
                } else if error.kind() == io::ErrorKind::UnexpectedEof {
                    // The peer closed between frames: how clients leave.
                    tracing::debug!(%peer, connection = key, "connection closed");
                } else {
                    tracing::info!(%peer, connection = key, %error, "connection failed");
                }
                self.node.connection_closed(key);
            }
        }
    }

    fn on_data(&mut self, connection: ConnectionId, bytes: Vec<u8>) {
        let now = self.now();
        // Events of a connection closed for bad input may still be queued.
        let Some(inbound) = self.inbound.get_mut(&connection) else {
            return;
        };
        if inbound.buffer.is_empty() {
            inbound.buffer = bytes;
        } else {
            inbound.buffer.extend_from_slice(&bytes);
        }
        // Fed, not flushed: `drain` flushes once per turn of the loop.
        match self.node.feed_bytes(now, connection, &inbound.buffer) {
            Ok(used) => {
                debug_assert!(
                    used <= inbound.buffer.len(),
                    "the node used bytes it was given"
                );
                inbound.stats.frames_in += count_frames(&inbound.buffer[..used]);
                inbound.stats.bytes_in += used as u64;
                inbound.buffer.drain(..used);
            }
            Err(error) => {
                self.stats.connections_closed_bad_input += 1;
                let peer = inbound.stats.peer;
                tracing::warn!(%peer, connection, %error, "closing connection: rejected frame");
                if let Some(inbound) = self.inbound.remove(&connection) {
                    // Dropping the task drops its socket: the peer sees the close.
                    inbound.task.abort();
                }
                self.node.connection_closed(connection);
            }
        }
    }

    /// Carries out everything the node produced since the last flush: the
    /// inputs of this turn leave together. Events first: a new epoch's
    /// members must be known before the frames addressed to them.
    fn drain(&mut self) {
        self.node.flush();
        while let Some(event) = self.node.poll_event() {
            match event {
                NodeEvent::StatusChanged {
                    view,
                    status,
                    primary,
                } => {
                    let replica = self.options.replica;
                    tracing::info!(%replica, view, ?status, primary, "status changed");
                }
                // Logged with the peer's address where the connection is closed.
                NodeEvent::FrameRejected { .. } => {}
                NodeEvent::EpochChanged { epoch, members } => self.on_epoch(epoch, members),
                NodeEvent::ClusterFormed { view } => {
                    let replica = self.options.replica;
                    tracing::warn!(%replica, view, "formed a new, empty cluster: every other replica answered that it holds no state; if this cluster held data, that data is lost (more than f replicas were down or recovering at once)");
                }
                NodeEvent::Persist(persist) => {
                    let job = PersistJob::new(self.node.replica(), persist);
                    self.persist(job);
                }
            }
        }
        while let Some(Transmit { destination, frame }) = self.node.poll_transmit() {
            let pushed = match destination {
                Destination::Replica(to) => match self.peer(to) {
                    Some(outbox) => outbox.push(frame),
                    None => Err(PushError::Closed),
                },
                Destination::Connection(id) => match self.inbound.get(&id) {
                    Some(inbound) => inbound.outbox.push(frame),
                    None => Err(PushError::Closed),
                },
            };
            match pushed {
                Ok(()) => {}
                Err(PushError::Full) => self.stats.frames_dropped_queue_full += 1,
                Err(PushError::Closed) => self.stats.frames_dropped_disconnected += 1,
            }
        }
    }

    /// Sends `job` to a blocking thread, or queues it behind the one there.
    fn persist(&mut self, job: PersistJob) {
        match self.disk.take() {
            Some(Disk::Idle(mut dir)) => {
                let done = self.persisted_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let outcome = dir.persist(&job);
                    // The loop is gone if this fails: nothing to answer.
                    let _ = done.send((dir, job.sequence(), outcome));
                });
                self.disk = Some(Disk::Busy { next: None });
            }
            Some(Disk::Busy { next }) => {
                debug_assert!(next.is_none(), "the core emits one persist at a time");
                self.disk = Some(Disk::Busy {
                    next: Some(Box::new(job)),
                });
            }
            None => tracing::error!("a persist from a replica without a data directory"),
        }
    }

    /// The directory came back from a persist: start the one queued, if any.
    fn disk_done(&mut self, dir: Box<DataDir>) {
        let next = match self.disk.take() {
            Some(Disk::Busy { next }) => next,
            _ => None,
        };
        self.disk = Some(Disk::Idle(dir));
        if let Some(job) = next {
            self.persist(*job);
        }
    }

    /// The replica entered `epoch` (§7): learns the addresses its
    /// reconfiguration carried. A member whose address changed gets a new
    /// link; links to the others stay.
    fn on_epoch(&mut self, epoch: u32, members: Vec<(MemberId, Vec<u8>)>) {
        let replica = self.options.replica;
        let ids: Vec<MemberId> = members.iter().map(|(m, _)| *m).collect();
        tracing::info!(%replica, epoch, members = ?ids, "epoch changed");
        for (member, address) in members {
            let Some(address) = parse_address(&address) else {
                continue;
            };
            let index = usize::from(member);
            if index >= PEER_SLOTS_MAX {
                continue;
            }
            if self.peer_addresses.len() <= index {
                self.peer_addresses.resize(index + 1, None);
            }
            if self.peers.len() <= index {
                self.peers.resize_with(index + 1, || None);
            }
            if self.peer_addresses[index] != Some(address) {
                tracing::info!(%replica, %member, %address, "member address learned");
                self.peer_addresses[index] = Some(address);
                // Dropping the outbox ends the old link's task.
                self.peers[index] = None;
            }
        }
    }

    /// The outbound link to replica `to`, opened on first use.
    /// `None` (the frame is dropped and counted) for a member whose address
    /// is unknown.
    fn peer(&mut self, to: MemberId) -> Option<&Outbox> {
        let index = usize::from(to);
        let address = (*self.peer_addresses.get(index)?)?;
        let slot = self.peers.get_mut(index)?;
        if slot.is_none() {
            let (outbox, inbox) = link::queue(self.options.peer_queue_bytes_max);
            let backoff = Backoff {
                min: self.options.reconnect_backoff_min,
                max: self.options.reconnect_backoff_max,
            };
            // Detached: it ends when its outbox is dropped, with the loop.
            tokio::spawn(link::run_outbound(
                address,
                inbox,
                None,
                backoff,
                self.counters.clone(),
                Some(self.accepted.subscribe()),
            ));
            *slot = Some(outbox);
        }
        slot.as_ref()
    }

    fn snapshot(&self) -> AdapterStats {
        use std::sync::atomic::Ordering::Relaxed;
        let mut stats = self.stats.clone();
        stats.node = self.node.stats();
        stats.inbound = self.inbound.values().map(|c| c.stats.clone()).collect();
        stats.inbound.sort_by_key(|c| c.connection);
        stats.reconnects = self.counters.reconnects.load(Relaxed);
        stats.connect_failures = self.counters.connect_failures.load(Relaxed);
        stats.frames_dropped_disconnected +=
            self.counters.frames_dropped_disconnected.load(Relaxed);
        stats
    }
}

/// Accepts connections and hands them to the node's task until it is gone.
async fn accept_loop(listener: TcpListener, accepted: mpsc::Sender<(TcpStream, SocketAddr)>) {
    loop {
        match listener.accept().await {
            Ok(connection) => {
                if accepted.send(connection).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// A member's address as a reconfiguration carries it: `ip:port` text.
pub(crate) fn parse_address(bytes: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Frames in `bytes`, a run of whole frames the node has just accepted.
fn count_frames(mut bytes: &[u8]) -> u64 {
    let mut frames = 0;
    while let Some(header) = codec::peek_header(bytes) {
        let size = usize::try_from(header.frame_size()).map_or(bytes.len(), |s| s.min(bytes.len()));
        bytes = &bytes[size..];
        frames += 1;
    }
    frames
}
