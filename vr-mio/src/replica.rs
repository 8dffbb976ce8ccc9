//! The replica's event loop: one thread, one `mio::Poll`, one
//! [`ReplicaNode`] that decides everything but the socket calls.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, error, info, warn};
use vr_core::node::{Closed, ConnectionId, NodeEvent, Output, ReplicaNode};
use vr_core::{MemberId, Service};
use vr_host::{Clock, Control, Persisted, Persister, Prepared, ReplicaHandle};
use vr_storage::data_dir::{Boot, DataDir};

use crate::conn::{Conn, ReadOutcome};
use crate::ReplicaOptions;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection `c` is token `c + FIRST_CONNECTION`. The node never reuses a
/// connection id, so a reply routed to a closed connection never reaches a
/// new one.
const FIRST_CONNECTION: usize = 2;

/// Size of the shared read buffer.
const READ_CHUNK_BYTES: usize = 64 * 1024;

fn token(id: ConnectionId) -> Token {
    Token(id.0 as usize + FIRST_CONNECTION)
}

/// Binds `options.addresses[options.replica]` and starts the replica on a
/// thread of its own.
pub fn start_replica<S: Service + Send + 'static>(
    options: ReplicaOptions,
    service: S,
) -> io::Result<ReplicaHandle> {
    let listener = vr_host::bind_own_address(&options)?;
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
    options: ReplicaOptions,
    listener: std::net::TcpListener,
    service: S,
    disk: Option<(DataDir, Boot)>,
) -> io::Result<ReplicaHandle> {
    let Prepared {
        node,
        clock,
        me,
        data_dir,
    } = vr_host::prepare(options, service, disk)?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (control_tx, commands) = mpsc::channel();
    let (persisted_tx, persisted) = mpsc::channel();
    let disk = match data_dir {
        Some(dir) => {
            let waker = waker.clone();
            // A failed wake means the loop is gone too.
            let done = move |p| persisted_tx.send(p).is_ok() && waker.wake().is_ok();
            Some(Persister::start(me, dir, done)?)
        }
        None => None,
    };
    let mut event_loop = Loop {
        node,
        me,
        poll,
        listener,
        commands,
        clock,
        conns: HashMap::new(),
        dirty: Vec::new(),
        read_again: Vec::new(),
        scratch: vec![0; READ_CHUNK_BYTES],
        frames: Vec::new(),
        deadline: None,
        disk,
        persisted,
    };
    let thread = std::thread::Builder::new()
        .name(format!("vr-mio-replica-{me}"))
        .spawn(move || {
            if let Err(e) = event_loop.run() {
                error!(replica = %me, %e, "event loop failed");
            }
        })?;
    let control = move |control| control_tx.send(control).is_ok() && waker.wake().is_ok();
    Ok(ReplicaHandle::new(address, control, thread))
}

struct Loop<S: Service> {
    node: ReplicaNode<S>,
    me: MemberId,
    poll: Poll,
    listener: TcpListener,
    commands: Receiver<Control>,
    clock: Clock,
    conns: HashMap<Token, Conn>,
    /// Connections with frames queued since the last write.
    dirty: Vec<Token>,
    /// Connections that hit the per-event read bound with data left.
    read_again: Vec<Token>,
    scratch: Vec<u8>,
    /// The node writes frames here; each is copied to its connection.
    frames: Vec<u8>,
    deadline: Option<vr_core::Instant>,
    /// A durable replica's persist thread, and its outcomes.
    disk: Option<Persister>,
    persisted: Receiver<Persisted>,
}

impl<S: Service> Loop<S> {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        // The replica's timers are armed from its start (a primary's
        // heartbeat, a backup's view-change timeout): drain before the
        // first sleep, or the loop sleeps until some input arrives.
        self.drain();
        loop {
            let timeout = match self.read_again.is_empty() {
                true => self.deadline.map(|d| self.clock.until(d)),
                false => Some(std::time::Duration::ZERO),
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut woken = false;
            for token in std::mem::take(&mut self.read_again) {
                self.read(token);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => woken = true,
                    token => self.on_ready(token, event.is_writable()),
                }
            }
            if woken && self.handle_commands() {
                return Ok(());
            }
            if woken {
                self.handle_persisted()?;
            }
            // Every ready connection was read before the node's timers
            // fire: their requests share a Prepare (batching, §6).
            self.drain();
            for token in std::mem::take(&mut self.dirty) {
                self.flush(token);
            }
        }
    }

    /// Answers the persists the disk thread completed.
    fn handle_persisted(&mut self) -> io::Result<()> {
        while let Ok((sequence, outcome)) = self.persisted.try_recv() {
            if let Err(error) = outcome {
                error!(replica = %self.me, %error, "storage failed: stopping the replica");
                return Err(io::Error::other(error));
            }
            self.node.handle_persisted(self.clock.now(), sequence);
        }
        Ok(())
    }

    /// Answers requests from other threads; true when asked to stop.
    fn handle_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                // The asker may have given up; nothing to do then.
                Ok(Control::Stats(reply)) => drop(reply.send(self.node.stats())),
                Ok(Control::Stop) | Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => return false,
            }
        }
    }

    fn register(&mut self, id: ConnectionId, mut stream: TcpStream, connected: bool) {
        // Edge-triggered: register both once, never re-register.
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self
            .poll
            .registry()
            .register(&mut stream, token(id), interest)
        {
            Ok(()) => drop(
                self.conns
                    .insert(token(id), Conn::new(id, stream, connected)),
            ),
            Err(e) => {
                warn!(replica = %self.me, %e, "register failed");
                self.node
                    .handle_closed(self.clock.now(), id, Closed::Failed);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let (stream, remote) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. out of file descriptors: the next connection's
                    // arrival is a new edge, so accepting resumes then.
                    warn!(replica = %self.me, %e, "accept failed");
                    return;
                }
            };
            let Some(id) = self.node.handle_accepted(self.clock.now(), Some(remote)) else {
                warn!(replica = %self.me, %remote, "too many connections; refused");
                continue;
            };
            let _ = stream.set_nodelay(true);
            debug!(replica = %self.me, %remote, connection = %id, "accepted");
            self.register(id, stream, true);
        }
    }

    fn on_ready(&mut self, token: Token, writable: bool) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return; // Closed earlier in this round.
        };
        if !conn.connected {
            match conn.finish_connect() {
                Ok(false) => return,
                Ok(true) => {
                    debug!(replica = %self.me, connection = %conn.id, "connected");
                    self.node.handle_connected(self.clock.now(), conn.id);
                    self.flush(token);
                }
                Err(e) => return self.close(token, Closed::Failed, Some(e)),
            }
        } else if writable {
            self.flush(token);
        }
        self.read(token);
    }

    fn read(&mut self, token: Token) {
        let now = self.clock.now();
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let (node, id) = (&mut self.node, conn.id);
        match conn.read(&mut self.scratch, |bytes| node.handle_bytes(now, id, bytes)) {
            ReadOutcome::Drained => {}
            ReadOutcome::MoreLater => self.read_again.push(token),
            ReadOutcome::Closed(how, error) => self.close(token, how, error),
        }
    }

    /// Drops a connection that ended, and tells the node (which already
    /// knows of one it rejected).
    fn close(&mut self, token: Token, how: Closed, error: Option<io::Error>) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.node.handle_closed(self.clock.now(), conn.id, how);
        let (me, id) = (self.me, conn.id);
        match (how, error) {
            (_, Some(e)) => info!(replica = %me, connection = %id, %e, "connection failed"),
            (Closed::EofMidFrame, None) => {
                warn!(replica = %me, connection = %id, "closed in the middle of a frame")
            }
            _ => debug!(replica = %me, connection = %id, ?how, "connection closed"),
        }
    }

    /// Carries out the node's outputs until it waits, firing its timers
    /// that are due on the way; frames go to their connection's buffer, to
    /// be written together after the turn.
    fn drain(&mut self) {
        loop {
            self.frames.clear();
            match self.node.poll_output(&mut self.frames) {
                Output::Transmit { connection, len } => {
                    let token = token(connection);
                    if let Some(conn) = self.conns.get_mut(&token) {
                        if !conn.has_queued() {
                            self.dirty.push(token);
                        }
                        conn.queue(&self.frames[self.frames.len() - len..]);
                    }
                }
                Output::Connect {
                    connection,
                    address,
                } => match TcpStream::connect(address) {
                    Ok(stream) => self.register(connection, stream, false),
                    Err(e) => {
                        info!(replica = %self.me, %address, %e, "connect failed");
                        self.node
                            .handle_closed(self.clock.now(), connection, Closed::Failed);
                    }
                },
                Output::Close { connection } => {
                    if let Some(mut conn) = self.conns.remove(&token(connection)) {
                        let _ = self.poll.registry().deregister(&mut conn.stream);
                    }
                }
                Output::Event(NodeEvent::Persist(persist)) => {
                    vr_host::submit_persist(self.disk.as_ref(), &self.node, self.me, persist);
                }
                Output::Event(event) => vr_host::log_event(self.me, &event),
                Output::Timeout(Some(t)) if t <= self.clock.now() => {
                    self.node.handle_timeout(self.clock.now());
                }
                Output::Timeout(deadline) => return self.deadline = deadline,
            }
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let (node, id) = (&mut self.node, conn.id);
        if let Err(e) = conn.flush(|n| node.handle_written(id, n)) {
            self.close(token, Closed::Failed, Some(e));
        }
    }
}
