//! The replica's event loop: one thread, one `mio::Poll`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, error, info, warn};
use vr_core::node::{Destination, NodeEvent, ReplicaNode, Transmit};
use vr_core::{MemberId, Service};
use vr_storage::data_dir::{Boot, DataDir, PersistJob};

use crate::conn::{CloseReason, Conn, ReadOutcome};
use crate::{AdapterStats, ConnectionStats, ReplicaOptions};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection tokens count up from here and are never reused, so that a
/// reply routed to a closed connection can never reach a new one.
const FIRST_CONNECTION: usize = 2;

/// An outbound connect that has not completed by then is abandoned: a peer
/// behind a black hole would otherwise hold the slot for the kernel's
/// minutes-long SYN retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Peer slots at most: one per member id.
const PEER_SLOTS_MAX: usize = 1 << u8::BITS;

/// Size of the shared read buffer.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Requests from other threads, delivered through the waker.
enum Command {
    Stats(Sender<AdapterStats>),
    Stop,
}

/// Binds `options.addresses[options.replica]` and starts the replica on a
/// thread of its own.
pub fn start_replica<S: Service + Send + 'static>(
    options: ReplicaOptions,
    service: S,
) -> io::Result<ReplicaHandle> {
    let address = *options
        .addresses
        .get(usize::from(options.replica))
        .ok_or_else(|| invalid("replica index out of range of addresses"))?;
    let listener = std::net::TcpListener::bind(address)?;
    start_replica_with_listener(options, listener, service)
}

/// Starts the replica on a thread of its own, accepting on `listener` (which
/// tests bind to port 0 beforehand to learn free addresses).
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
/// persists run on a thread of their own, one at a time, which wakes the
/// loop when each is durable; nothing is acknowledged before. A storage
/// error stops the replica (logged).
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
    options.validate().map_err(invalid)?;
    let origin = StdInstant::now();
    let (replica, data_dir) = vr_storage::data_dir::build_node_replica(&mut options, service, disk)
        .map_err(|error| invalid(&error))?;
    let node = ReplicaNode::new(replica, options.client_routes_max);

    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (commands_tx, commands) = mpsc::channel();
    let disk = match data_dir {
        Some(dir) => Some(DiskThread::start(dir, waker.clone(), options.replica)?),
        None => None,
    };

    let backoff = options.reconnect_backoff_min;
    let mut event_loop = Loop {
        node,
        poll,
        listener,
        commands,
        origin,
        conns: HashMap::new(),
        peers: (options.addresses.iter())
            .map(|&address| Peer {
                address: Some(address),
                token: None,
                connect_deadline: None,
                retry_at: origin,
                failed_at: origin,
                backoff,
                attempted: false,
            })
            .collect(),
        next_token: FIRST_CONNECTION,
        inbound: 0,
        dirty: Vec::new(),
        read_again: Vec::new(),
        scratch: vec![0; READ_CHUNK_BYTES],
        stats: AdapterStats::default(),
        disk,
        options,
    };
    let replica_index = event_loop.options.replica;
    let thread = std::thread::Builder::new()
        .name(format!("vr-mio-replica-{replica_index}"))
        .spawn(move || {
            if let Err(e) = event_loop.run() {
                error!(replica = %replica_index, %e, "event loop failed");
            }
        })?;
    Ok(ReplicaHandle {
        commands: commands_tx,
        waker,
        thread: Some(thread),
        address,
        last_stats: Mutex::new(AdapterStats::default()),
    })
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.to_string())
}

/// A running replica. Dropping it stops the replica, like [`ReplicaHandle::stop`].
pub struct ReplicaHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    address: SocketAddr,
    /// The last snapshot received, returned if the loop has died.
    last_stats: Mutex<AdapterStats>,
}

impl ReplicaHandle {
    /// The address the replica accepts connections on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Whether the replica still runs: `false` once its loop ended (a
    /// storage error stops a durable replica; see the log).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// A snapshot of the replica's counters, taken by its loop between two
    /// events. If the loop has ended (it failed or panicked), the last
    /// snapshot taken.
    pub fn stats(&self) -> AdapterStats {
        let (reply_tx, reply) = mpsc::channel();
        let mut last = self
            .last_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.commands.send(Command::Stats(reply_tx)).is_ok() && self.waker.wake().is_ok() {
            // Fails only when the loop ends without answering.
            if let Ok(stats) = reply.recv() {
                *last = stats;
            }
        }
        last.clone()
    }

    /// Stops the replica: closes the listener and every connection, ends the
    /// thread, and returns once it has ended.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // If the loop has already ended, both fail and the join returns at once.
        let _ = self.commands.send(Command::Stop);
        let _ = self.waker.wake();
        if thread.join().is_err() {
            error!(address = %self.address, "replica thread panicked");
        }
    }
}

impl Drop for ReplicaHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A connection and what the loop knows about it.
struct Entry {
    conn: Conn,
    /// Set for a connection this replica opened to that peer (member id).
    replica: Option<MemberId>,
    /// Queued frames since the last flush (it is in `Loop::dirty`).
    dirty: bool,
}

/// The outbound side of one peer.
struct Peer {
    /// Where it listens: `options.addresses`, or learned from a
    /// reconfiguration (`None`: unknown, frames to it are dropped).
    address: Option<SocketAddr>,
    token: Option<Token>,
    /// While a connect is in progress: when to give up on it.
    connect_deadline: Option<StdInstant>,
    /// No connect before this, after a failure.
    retry_at: StdInstant,
    /// When the last connection failed or was lost.
    failed_at: StdInstant,
    backoff: Duration,
    attempted: bool,
}

impl Peer {
    /// Records a failed or lost connection: no new attempt for `backoff`,
    /// which doubles up to `max`.
    fn back_off(&mut self, now: StdInstant, max: Duration) {
        self.failed_at = now;
        self.retry_at = later(now, self.backoff);
        self.backoff = self.backoff.saturating_mul(2).min(max);
    }

    /// A connection was accepted, perhaps from this peer, restarted: if it
    /// is waiting out a backoff, it may try again `min` after the failure
    /// (at once, usually), and backs off afresh from there.
    fn may_be_back(&mut self, min: Duration) {
        let early = later(self.failed_at, min);
        if self.token.is_none() && early < self.retry_at {
            self.retry_at = early;
            self.backoff = min;
        }
    }
}

/// `now + delay`, or `now` plus a year if that overflows (absurd options).
fn later(now: StdInstant, delay: Duration) -> StdInstant {
    now.checked_add(delay)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

struct Loop<S: Service> {
    node: ReplicaNode<S>,
    poll: Poll,
    listener: TcpListener,
    commands: Receiver<Command>,
    options: ReplicaOptions,
    /// `vr_core::Instant::ZERO`.
    origin: StdInstant,
    conns: HashMap<Token, Entry>,
    /// By member id; at most [`PEER_SLOTS_MAX`].
    peers: Vec<Peer>,
    next_token: usize,
    /// Accepted connections open now.
    inbound: usize,
    /// Connections with frames queued since the last flush.
    dirty: Vec<Token>,
    /// Connections that hit the per-event read bound with data left.
    read_again: Vec<Token>,
    scratch: Vec<u8>,
    stats: AdapterStats,
    /// A durable replica's persist thread.
    disk: Option<DiskThread>,
}

/// A durable replica's data directory, on a thread of its own: persists go
/// in through `jobs`, outcomes come back through `done`, and the thread
/// wakes the loop after each.
struct DiskThread {
    jobs: Sender<PersistJob>,
    done: Receiver<(u64, Result<(), vr_storage::Error>)>,
}

impl DiskThread {
    fn start(mut dir: DataDir, waker: Arc<Waker>, replica: MemberId) -> io::Result<DiskThread> {
        let (jobs, job_rx) = mpsc::channel::<PersistJob>();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("vr-mio-disk-{replica}"))
            .spawn(move || {
                // Ends when the loop drops `jobs`, or after a failure.
                while let Ok(job) = job_rx.recv() {
                    let outcome = dir.persist(&job);
                    let failed = outcome.is_err();
                    if done_tx.send((job.sequence(), outcome)).is_err() {
                        return;
                    }
                    // A failed wake means the loop is gone too.
                    let _ = waker.wake();
                    if failed {
                        return;
                    }
                }
            })?;
        Ok(DiskThread { jobs, done })
    }
}

impl<S: Service> Loop<S> {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.poll_timeout(StdInstant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = StdInstant::now();
            let mut woken = false;
            for token in std::mem::take(&mut self.read_again) {
                self.read(token, now);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => woken = true,
                    token => self.on_ready(token, event, now),
                }
            }
            // Every connection that was ready has been read and fed: the
            // requests of all of them leave in one Prepare (batching across
            // connections, §6). Nothing fed stays undrained past this turn.
            self.node.flush();
            if woken && self.handle_commands() {
                return Ok(());
            }
            if woken {
                self.handle_persisted(now)?;
            }
            self.expire_connects(now);
            let deadline = self.node.poll_timeout();
            if deadline.is_some_and(|d| d <= self.core_time(now)) {
                self.node.handle_timeout(self.core_time(now));
            }
            self.dispatch(now);
            self.flush_dirty(now);
        }
    }

    fn core_time(&self, now: StdInstant) -> vr_core::Instant {
        crate::core_time(self.origin, now)
    }

    /// Sleep until the core's next deadline or a connect timeout, whichever
    /// comes first; not at all if a connection has unread data.
    fn poll_timeout(&self, now: StdInstant) -> Option<Duration> {
        if !self.read_again.is_empty() {
            return Some(Duration::ZERO);
        }
        let core = self
            .node
            .poll_timeout()
            .map(|t| crate::std_time(self.origin, t));
        let connects = self.peers.iter().filter_map(|p| p.connect_deadline);
        core.into_iter()
            .chain(connects)
            .min()
            .map(|deadline| deadline.saturating_duration_since(now))
    }

    /// Answers the persists the disk thread completed.
    fn handle_persisted(&mut self, now: StdInstant) -> io::Result<()> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        while let Ok((sequence, outcome)) = disk.done.try_recv() {
            if let Err(error) = outcome {
                let replica = self.options.replica;
                error!(%replica, %error, "storage failed: stopping the replica");
                return Err(io::Error::other(error));
            }
            self.node.handle_persisted(self.core_time(now), sequence);
        }
        Ok(())
    }

    /// Answers requests from other threads; true when asked to stop.
    fn handle_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Stats(reply)) => {
                    // The asker may have given up; nothing to do then.
                    let _ = reply.send(self.snapshot());
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => return false,
            }
        }
    }

    fn snapshot(&self) -> AdapterStats {
        let mut stats = self.stats.clone();
        stats.node = self.node.stats();
        stats.connections = self
            .conns
            .iter()
            .map(|(token, e)| ConnectionStats {
                id: token.0 as u64,
                peer: e.conn.peer,
                replica: e.replica,
                connected: e.conn.connected,
                bytes_in: e.conn.bytes_in,
                bytes_out: e.conn.bytes_out,
                queued_bytes: e.conn.outbox.bytes(),
            })
            .collect();
        stats
    }

    fn add(&mut self, stream: TcpStream, entry_of: impl FnOnce(TcpStream) -> Entry) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        let mut entry = entry_of(stream);
        // Edge-triggered: register both once, never re-register.
        let registered = self.poll.registry().register(
            &mut entry.conn.stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        self.conns.insert(token, entry);
        if let Err(e) = registered {
            self.close(token, CloseReason::Io(e), StdInstant::now());
        }
        token
    }

    fn accept(&mut self) {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. out of file descriptors: the next connection's
                    // arrival is a new edge, so accepting resumes then.
                    warn!(replica = %self.options.replica, %e, "accept failed");
                    return;
                }
            };
            if self.inbound >= self.options.client_connections_max {
                self.stats.connections_refused += 1;
                warn!(replica = %self.options.replica, %peer, "too many connections; refused");
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.inbound += 1;
            self.stats.connections_accepted += 1;
            // A peer that restarted connects as soon as it has something to
            // say (recovery, its first view change vote), from an address
            // that does not say who it is: every peer waiting out a backoff
            // tries again at its next frame rather than after up to
            // `reconnect_backoff_max`, which a restarted peer would wait out.
            let min = self.options.reconnect_backoff_min;
            self.peers.iter_mut().for_each(|p| p.may_be_back(min));
            debug!(replica = %self.options.replica, %peer, "accepted");
            self.add(stream, |stream| Entry {
                conn: Conn::new(stream, peer, true),
                replica: None,
                dirty: false,
            });
        }
    }

    fn on_ready(&mut self, token: Token, event: &Event, now: StdInstant) {
        let Some(entry) = self.conns.get_mut(&token) else {
            return; // Closed earlier in this round.
        };
        if !entry.conn.connected {
            match entry.conn.finish_connect() {
                Ok(false) => return,
                Ok(true) => {
                    if let Some(i) = entry.replica {
                        debug!(replica = %self.options.replica, to = %i, "connected");
                        let peer = &mut self.peers[usize::from(i)];
                        peer.connect_deadline = None;
                        peer.backoff = self.options.reconnect_backoff_min;
                    }
                    self.flush(token, now);
                }
                Err(e) => {
                    self.close(token, CloseReason::Io(e), now);
                    return;
                }
            }
        } else if event.is_writable() {
            self.flush(token, now);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(token, now);
        }
    }

    fn read(&mut self, token: Token, now: StdInstant) {
        let core_now = self.core_time(now);
        let Some(entry) = self.conns.get_mut(&token) else {
            return;
        };
        let node = &mut self.node;
        let id = token.0 as u64;
        let outcome = entry.conn.read(
            &mut self.scratch,
            // Fed, not flushed: `run` flushes once after the whole round.
            |bytes| node.feed_bytes(core_now, id, bytes),
            CloseReason::BadInput,
        );
        match outcome {
            ReadOutcome::Drained => {}
            ReadOutcome::MoreLater => self.read_again.push(token),
            ReadOutcome::Closed(reason) => self.close(token, reason, now),
        }
    }

    fn close(&mut self, token: Token, reason: CloseReason, now: StdInstant) {
        let Some(mut entry) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut entry.conn.stream);
        self.node.connection_closed(token.0 as u64);
        let (me, peer) = (self.options.replica, entry.conn.peer);
        match &reason {
            CloseReason::BadInput(e) => {
                self.stats.connections_closed_bad_input += 1;
                warn!(replica = %me, %peer, reason = %e, "rejected frame; closing connection");
            }
            CloseReason::Eof { mid_frame: true } => {
                self.stats.connections_closed_mid_frame += 1;
                warn!(replica = %me, %peer, "peer closed in the middle of a frame");
            }
            CloseReason::Eof { mid_frame: false } => debug!(replica = %me, %peer, "peer closed"),
            CloseReason::Io(e) => info!(replica = %me, %peer, %e, "connection failed"),
        }
        match entry.replica {
            Some(i) => {
                if !entry.conn.connected {
                    self.stats.connect_failures += 1;
                }
                let p = &mut self.peers[usize::from(i)];
                p.token = None;
                p.connect_deadline = None;
                p.back_off(now, self.options.reconnect_backoff_max);
            }
            None => self.inbound -= 1,
        }
    }

    /// The connection to peer `i`, opened now if there is none and its
    /// backoff has passed.
    /// `None` for a member whose address is unknown.
    fn peer_connection(&mut self, i: MemberId, now: StdInstant) -> Option<Token> {
        let peer = self.peers.get_mut(usize::from(i))?;
        let address = peer.address?;
        if peer.token.is_some() || now < peer.retry_at {
            return peer.token;
        }
        self.stats.connects += 1;
        if peer.attempted {
            self.stats.reconnects += 1;
        }
        peer.attempted = true;
        match TcpStream::connect(address) {
            Ok(stream) => {
                let token = self.add(stream, |stream| Entry {
                    conn: Conn::new(stream, address, false),
                    replica: Some(i),
                    dirty: false,
                });
                // `add` closes it again if registration failed.
                let open = self.conns.contains_key(&token);
                let peer = &mut self.peers[usize::from(i)];
                peer.token = open.then_some(token);
                peer.connect_deadline = open.then(|| later(now, CONNECT_TIMEOUT));
                peer.token
            }
            Err(e) => {
                info!(replica = %self.options.replica, to = %i, %e, "connect failed");
                self.stats.connect_failures += 1;
                let max = self.options.reconnect_backoff_max;
                self.peers[usize::from(i)].back_off(now, max);
                None
            }
        }
    }

    fn expire_connects(&mut self, now: StdInstant) {
        let expired: Vec<Token> = self
            .peers
            .iter()
            .filter(|p| p.connect_deadline.is_some_and(|d| d <= now))
            .filter_map(|p| p.token)
            .collect();
        for token in expired {
            let timed_out = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            self.close(token, CloseReason::Io(timed_out), now);
        }
    }

    /// Drains the node's events and frames; frames go to their connection's
    /// queue, to be written together by `flush_dirty`.
    fn dispatch(&mut self, now: StdInstant) {
        while let Some(event) = self.node.poll_event() {
            match event {
                NodeEvent::StatusChanged {
                    view,
                    status,
                    primary,
                } => info!(
                    replica = %self.options.replica,
                    view,
                    ?status,
                    primary,
                    "status changed"
                ),
                // Logged with the peer's address when the connection is closed.
                NodeEvent::FrameRejected { .. } => {}
                NodeEvent::EpochChanged { epoch, members } => self.on_epoch(epoch, members, now),
                NodeEvent::ClusterFormed { view } => {
                    let replica = self.options.replica;
                    tracing::warn!(%replica, view, "formed a new, empty cluster: every other replica answered that it holds no state; if this cluster held data, that data is lost (more than f replicas were down or recovering at once)");
                }
                NodeEvent::Persist(persist) => {
                    let job = PersistJob::new(self.node.replica(), persist);
                    // The job comes back in the error: only whether it went matters.
                    let sent = self.disk.as_ref().is_some_and(|d| d.jobs.send(job).is_ok());
                    if !sent {
                        // The thread ended after a failure it reported.
                        error!(
                            replica = %self.options.replica,
                            "persist not carried out: no disk thread"
                        );
                    }
                }
            }
        }
        while let Some(Transmit { destination, frame }) = self.node.poll_transmit() {
            let token = match destination {
                // A member whose address is unknown (or this replica
                // itself, which the node never sends to): dropped, counted.
                Destination::Replica(i) if i == self.options.replica => None,
                Destination::Replica(i) => self.peer_connection(i, now),
                Destination::Connection(id) => usize::try_from(id).ok().map(Token),
            };
            let Some(entry) = token.and_then(|t| self.conns.get_mut(&t)) else {
                self.stats.frames_dropped_disconnected += 1;
                continue;
            };
            if !entry
                .conn
                .outbox
                .push(frame, self.options.peer_queue_bytes_max)
            {
                self.stats.frames_dropped_queue_full += 1;
                debug!(replica = %self.options.replica, peer = %entry.conn.peer, "queue full; frame dropped");
            } else if !entry.dirty {
                entry.dirty = true;
                self.dirty.extend(token);
            }
        }
    }

    /// The replica entered `epoch` (§7): learns the addresses its
    /// reconfiguration carried, growing the peer table. A member whose
    /// address changed is reconnected; connections to the others stay.
    fn on_epoch(&mut self, epoch: u32, members: Vec<(MemberId, Vec<u8>)>, now: StdInstant) {
        let me = self.options.replica;
        let ids: Vec<MemberId> = members.iter().map(|(m, _)| *m).collect();
        info!(replica = %me, epoch, members = ?ids, "epoch changed");
        for (member, address) in members {
            let Some(address) = crate::parse_address(&address) else {
                continue;
            };
            let index = usize::from(member);
            if index >= PEER_SLOTS_MAX {
                continue;
            }
            while self.peers.len() <= index {
                self.peers.push(Peer {
                    address: None,
                    token: None,
                    connect_deadline: None,
                    retry_at: now,
                    failed_at: now,
                    backoff: self.options.reconnect_backoff_min,
                    attempted: false,
                });
            }
            let peer = &mut self.peers[index];
            if peer.address == Some(address) {
                continue;
            }
            info!(replica = %me, %member, %address, "member address learned");
            peer.address = Some(address);
            if let Some(token) = peer.token {
                let moved = io::Error::other("the member's address changed");
                self.close(token, CloseReason::Io(moved), now);
            }
            let peer = &mut self.peers[index];
            peer.retry_at = now;
            peer.backoff = self.options.reconnect_backoff_min;
        }
    }

    fn flush_dirty(&mut self, now: StdInstant) {
        for token in std::mem::take(&mut self.dirty) {
            if let Some(entry) = self.conns.get_mut(&token) {
                entry.dirty = false;
                self.flush(token, now);
            }
        }
    }

    fn flush(&mut self, token: Token, now: StdInstant) {
        let Some(entry) = self.conns.get_mut(&token) else {
            return;
        };
        match entry.conn.flush() {
            Ok(writes) => self.stats.writes += writes,
            Err(e) => self.close(token, CloseReason::Io(e), now),
        }
    }
}
