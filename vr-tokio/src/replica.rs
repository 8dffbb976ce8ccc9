//! A replica: one thread, one current-thread runtime, one task owning the
//! [`ReplicaNode`], and one task per connection owning its socket.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use vr_core::node::{NodeEvent, Output, ReplicaNode};
use vr_core::{Instant, MemberId, Service};
use vr_host::{Clock, Control, Persisted, Persister, Prepared, ReplicaHandle};
use vr_storage::data_dir::{Boot, DataDir};

use crate::link::{Conns, LinkEvent};
use crate::ReplicaOptions;

/// Connection events waiting for the node's task; a full channel makes
/// connection tasks wait, which stops them reading from their sockets.
const EVENTS_QUEUED_MAX: usize = 256;
/// Connection events fed in one turn of the node's loop before its outputs
/// are drained: as many as the channel holds.
const EVENTS_PER_TURN_MAX: usize = EVENTS_QUEUED_MAX;
/// After a failed `accept` (out of file descriptors, typically), wait this
/// long before the next rather than spinning.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// Starts replica `options.replica`, listening on its address.
pub fn start_replica<S: Service + Send + 'static>(
    options: ReplicaOptions,
    service: S,
) -> io::Result<ReplicaHandle> {
    let listener = vr_host::bind_own_address(&options)?;
    start_replica_with_listener(options, listener, service)
}

/// Starts a durable replica ([`vr_core::Durability::Disk`] in
/// `options.config`) on a listener bound by the caller, with its data
/// directory opened by [`DataDir::open`] and started as `boot` says. Its
/// persists run on a thread of their own ([`vr_host::Persister`]), one at
/// a time; nothing is acknowledged before the persist it rests on
/// returned. A storage error stops the replica (logged).
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
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (persisted_tx, persisted_rx) = mpsc::unbounded_channel();
    let disk = match data_dir {
        Some(dir) => Some(Persister::start(me, dir, move |p| {
            persisted_tx.send(p).is_ok()
        })?),
        None => None,
    };
    let thread = std::thread::Builder::new()
        .name(format!("vr-replica-{me}"))
        .spawn(move || {
            let (events_tx, events_rx) = mpsc::channel(EVENTS_QUEUED_MAX);
            let state = Loop {
                node,
                me,
                clock,
                conns: Conns::new(events_tx, format!("replica {me}")),
                frames: Vec::new(),
                deadline: None,
                disk,
            };
            runtime.block_on(state.run(listener, control_rx, events_rx, persisted_rx));
            // Dropping the runtime drops every connection task, and with
            // them every socket.
            drop(runtime);
            tracing::info!(replica = %me, "replica stopped");
        })?;
    Ok(ReplicaHandle::new(
        address,
        move |control| control_tx.send(control).is_ok(),
        thread,
    ))
}

/// The node's task: everything the replica owns.
struct Loop<S: Service> {
    node: ReplicaNode<S>,
    me: MemberId,
    clock: Clock,
    conns: Conns,
    /// The node writes frames here; each is copied to its connection.
    frames: Vec<u8>,
    /// When the node wants `handle_timeout` next.
    deadline: Option<Instant>,
    /// A durable replica's persist thread.
    disk: Option<Persister>,
}

impl<S: Service> Loop<S> {
    async fn run(
        mut self,
        listener: TcpListener,
        mut commands: mpsc::UnboundedReceiver<Control>,
        mut events: mpsc::Receiver<LinkEvent>,
        mut persisted: mpsc::UnboundedReceiver<Persisted>,
    ) {
        let address = listener.local_addr().ok();
        tracing::info!(replica = %self.me, ?address, "replica listening");
        let (accepted_tx, mut accepted) = mpsc::channel(16);
        // Accepting in a task of its own lets it pause after an error
        // without delaying the node.
        tokio::spawn(accept_loop(listener, accepted_tx));
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            self.drain();
            if self.deadline != armed {
                if let Some(at) = self.deadline {
                    timer.as_mut().reset(self.clock.instant(at).into());
                }
                armed = self.deadline;
            }
            tokio::select! {
                command = commands.recv() => match command {
                    // The caller may have given up waiting; nothing to do then.
                    Some(Control::Stats(reply)) => drop(reply.send(self.node.stats())),
                    Some(Control::Stop) | None => return,
                },
                Some((stream, remote)) = accepted.recv() => self.accept(stream, remote),
                Some(event) = events.recv() => {
                    let now = self.clock.now();
                    self.conns.handle(&mut self.node, now, event);
                    // Connection tasks that ran since this loop last did
                    // have queued their reads too: feed them all before the
                    // node's batch timer fires in `drain`, so that requests
                    // from different connections share a Prepare (§6).
                    // Bounded, so that a flood of events cannot hold back
                    // timers and commands.
                    for _ in 1..EVENTS_PER_TURN_MAX {
                        let Ok(event) = events.try_recv() else { break };
                        self.conns.handle(&mut self.node, now, event);
                    }
                }
                Some((sequence, outcome)) = persisted.recv() => {
                    if let Err(error) = outcome {
                        tracing::error!(replica = %self.me, %error, "storage failed: stopping the replica");
                        return;
                    }
                    self.node.handle_persisted(self.clock.now(), sequence);
                }
                // `drain` fires the node's timers; re-arm even if the
                // deadline is unchanged: this one has fired.
                () = &mut timer, if armed.is_some() => armed = None,
            }
        }
    }

    fn accept(&mut self, stream: TcpStream, remote: SocketAddr) {
        match self.node.handle_accepted(self.clock.now(), Some(remote)) {
            Some(id) => {
                tracing::debug!(replica = %self.me, %remote, connection = %id, "accepted");
                self.conns.accepted(id, stream);
            }
            // Dropping the stream closes it.
            None => tracing::warn!(replica = %self.me, %remote, "too many connections; refused"),
        }
    }

    /// Carries out the node's outputs until it waits, firing its timers
    /// that are due on the way (the batch timer included); frames go to
    /// their connection's queue, handed to its task after the turn.
    fn drain(&mut self) {
        // The queue accounting the outputs are admitted against.
        self.conns.report_writes(&mut self.node);
        loop {
            self.frames.clear();
            match self.node.poll_output(&mut self.frames) {
                Output::Transmit { connection, len } => {
                    let frame = &self.frames[self.frames.len() - len..];
                    self.conns.queue(connection, frame);
                }
                Output::Connect {
                    connection,
                    address,
                } => self.conns.connect(connection, address),
                Output::Close { connection } => self.conns.close(connection),
                Output::Event(NodeEvent::Persist(persist)) => {
                    vr_host::submit_persist(self.disk.as_ref(), &self.node, self.me, persist);
                }
                Output::Event(event) => vr_host::log_event(self.me, &event),
                Output::Timeout(Some(t)) if t <= self.clock.now() => {
                    self.node.handle_timeout(self.clock.now());
                }
                Output::Timeout(deadline) => {
                    self.deadline = deadline;
                    break;
                }
            }
        }
        self.conns.flush();
    }
}

/// Accepts connections and hands them to the node's task until it is gone.
async fn accept_loop(listener: TcpListener, accepted: mpsc::Sender<(TcpStream, SocketAddr)>) {
    loop {
        match listener.accept().await {
            Ok(connection) => {
                // The node's task is gone.
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
