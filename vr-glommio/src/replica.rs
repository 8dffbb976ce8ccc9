//! A replica on its own glommio executor thread.
//!
//! Tasks, all on that one thread and sharing the node through a `RefCell`
//! (never borrowed across an await):
//!
//! - the acceptor, which hands each inbound connection to the node and
//!   starts its task;
//! - one task per connection ([`crate::conn`]), inbound or opened when the
//!   node says [`Output::Connect`];
//! - the driver, which drains the node's outputs once after the
//!   connection tasks that were ready together have fed it their bytes,
//!   and when the node's next deadline comes;
//! - for a durable replica, the persist task;
//! - the root task, which answers [`ReplicaHandle::stats`] and stops
//!   everything when the handle goes (or storage fails).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;
use glommio::{spawn_local, ExecutorJoinHandle};
use tracing::{debug, error, info, warn};
use vr_core::codec::DecodeError;
use vr_core::node::{Closed, ConnectionId, NodeEvent, Output, ReplicaNode};
use vr_core::{Instant, MemberId, Service};
use vr_host::{Clock, Control, LoopThread, Prepared, ReplicaHandle};
use vr_storage::data_dir::{Boot, DataDir, PersistJob};

use crate::conn::{Conns, Endpoint};
use crate::sync::Notify;
use crate::{spawn_executor, ReplicaOptions};

/// How long the acceptor pauses after `accept` fails (e.g. out of file
/// descriptors) before trying again, so that it does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// A pause on stop that lets glommio's reactor hand the cancellations of
/// pending operations to the kernel before the sockets close.
const CANCEL_FLUSH_DELAY: Duration = Duration::from_millis(1);

/// The replica's executor thread, as its handle sees it.
struct ExecutorThread {
    handle: ExecutorJoinHandle<()>,
    /// Disconnected once the root task has ended.
    control: flume::Sender<Control>,
}

impl LoopThread for ExecutorThread {
    fn is_finished(&self) -> bool {
        self.control.is_disconnected()
    }

    fn join(self: Box<Self>) -> std::thread::Result<()> {
        match self.handle.join() {
            Ok(()) => Ok(()),
            Err(glommio::GlommioError::BuilderError(glommio::BuilderErrorKind::ThreadPanic(
                panic,
            ))) => Err(panic),
            Err(error) => {
                warn!(%error, "replica thread failed");
                Ok(())
            }
        }
    }
}

/// Starts replica `options.replica` listening on its address in
/// `options.addresses`, on a new thread running a glommio executor.
pub fn start_replica<S: Service + Send + 'static>(
    options: ReplicaOptions,
    service: S,
) -> io::Result<ReplicaHandle> {
    let listener = vr_host::bind_own_address(&options)?;
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
    let local_addr = listener.local_addr()?;
    let (control, requests) = flume::unbounded();
    let handle = spawn_executor(&format!("vr-replica-{me}"), move || {
        run(me, node, clock, listener, requests, data_dir)
    })?;
    let thread = ExecutorThread {
        handle,
        control: control.clone(),
    };
    Ok(ReplicaHandle::new(
        local_addr,
        move |request| control.send(request).is_ok(),
        thread,
    ))
}

/// The state every task of one replica shares.
struct Shared<S: Service> {
    node: ReplicaNode<S>,
    me: MemberId,
    clock: Clock,
    conns: Conns,
    /// The node writes frames here; each is copied to its connection.
    frames: Vec<u8>,
    /// The node's next deadline, as the last drain left it.
    deadline: Option<Instant>,
    /// Wakes the driver after an input.
    flush: Rc<Notify>,
    /// A durable replica's persists waiting for the [`persist`] task (the
    /// core emits one at a time, so at most one waits).
    persists: VecDeque<PersistJob>,
    /// Wakes the [`persist`] task.
    persist_ready: Rc<Notify>,
}

/// What the connection tasks share: the replica's state.
type Replica<S> = Rc<RefCell<Shared<S>>>;

/// The root task: starts the others, answers the handle, and cancels
/// everything once the handle is gone or storage failed.
async fn run<S: Service + 'static>(
    me: MemberId,
    node: ReplicaNode<S>,
    clock: Clock,
    listener: std::net::TcpListener,
    requests: flume::Receiver<Control>,
    data_dir: Option<DataDir>,
) {
    // SAFETY: the descriptor comes from a bound, listening listener that we
    // own, and `into_raw_fd` hands its ownership over exactly once.
    let listener = Rc::new(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) });
    let shared: Replica<S> = Rc::new(RefCell::new(Shared {
        node,
        me,
        clock,
        conns: Conns::default(),
        frames: Vec::new(),
        deadline: None,
        flush: Rc::default(),
        persists: VecDeque::new(),
        persist_ready: Rc::default(),
    }));
    let failed = Rc::new(Notify::default());
    let mut tasks = vec![
        spawn_local(accept(shared.clone(), listener.clone())).detach(),
        spawn_local(drive(shared.clone())).detach(),
    ];
    if let Some(dir) = data_dir {
        tasks.push(spawn_local(persist(shared.clone(), dir, failed.clone())).detach());
    }
    info!(replica = %me, "replica started");
    // Ends when the handle says stop or is gone, or storage fails.
    loop {
        let stopped = async {
            failed.notified().await;
            Err(flume::RecvError::Disconnected)
        };
        let Ok(Control::Stats(reply)) = future::or(requests.recv_async(), stopped).await else {
            break;
        };
        // The handle may have given up waiting; nothing to do then.
        let _ = reply.send(shared.borrow().node.stats());
    }
    // The handle sees the replica stopped, and its requests fail from now.
    drop(requests);
    tasks.iter().for_each(|task| task.cancel());
    tasks.extend(shared.borrow_mut().conns.cancel_all());
    for task in tasks {
        task.await;
    }
    // The cancelled accept is still in the kernel's hands, holding the
    // listening socket open, until the reactor submits its cancellation.
    // One trip through the reactor does that; closing the socket after it
    // releases the port before `stop` returns.
    glommio::timer::sleep(CANCEL_FLUSH_DELAY).await;
    drop(listener);
    info!(replica = %me, "replica stopped");
}

impl<S: Service + 'static> Endpoint for Replica<S> {
    fn connected(&self, id: ConnectionId) {
        let mut state = self.borrow_mut();
        let now = state.clock.now();
        debug!(replica = %state.me, connection = %id, "connected");
        state.node.handle_connected(now, id);
    }

    /// Feeds what a connection read to the node and leaves the outputs to
    /// the driver: every connection task woken in the same round of the
    /// reactor runs before it, so their requests share one Prepare (§6).
    /// A lone request waits for one task switch, no timer.
    fn received(&self, id: ConnectionId, bytes: &[u8]) -> Result<usize, DecodeError> {
        let mut state = self.borrow_mut();
        let now = state.clock.now();
        let result = state.node.handle_bytes(now, id, bytes);
        state.flush.notify();
        result
    }

    fn written(&self, id: ConnectionId, bytes: usize) {
        self.borrow_mut().node.handle_written(id, bytes);
    }

    fn closed(&self, id: ConnectionId, how: Closed, error: Option<io::Error>) {
        let mut state = self.borrow_mut();
        let (now, me) = (state.clock.now(), state.me);
        state.conns.remove(id);
        state.node.handle_closed(now, id, how);
        state.flush.notify();
        match (how, error) {
            (_, Some(e)) => info!(replica = %me, connection = %id, %e, "connection failed"),
            (Closed::EofMidFrame, None) => {
                warn!(replica = %me, connection = %id, "closed in the middle of a frame")
            }
            _ => debug!(replica = %me, connection = %id, ?how, "connection closed"),
        }
    }
}

/// Carries out the node's outputs until it waits, firing its timers that
/// are due on the way (the batch timer among them).
fn drain<S: Service + 'static>(shared: &Replica<S>) {
    let mut guard = shared.borrow_mut();
    let state = &mut *guard;
    loop {
        state.frames.clear();
        match state.node.poll_output(&mut state.frames) {
            Output::Transmit { connection, len } => {
                let frame = &state.frames[state.frames.len() - len..];
                state.conns.queue(connection, frame);
            }
            Output::Connect {
                connection,
                address,
            } => state.conns.open(shared, connection, None, Some(address)),
            Output::Close { connection } => state.conns.close(connection),
            Output::Event(NodeEvent::Persist(persist)) => {
                let job = PersistJob::new(state.node.replica(), persist);
                state.persists.push_back(job);
                state.persist_ready.notify();
            }
            Output::Event(event) => vr_host::log_event(state.me, &event),
            Output::Timeout(Some(t)) if t <= state.clock.now() => {
                state.node.handle_timeout(state.clock.now());
            }
            Output::Timeout(deadline) => return state.deadline = deadline,
        }
    }
}

/// Accepts inbound connections and starts a task for each the node takes.
async fn accept<S: Service + 'static>(shared: Replica<S>, listener: Rc<TcpListener>) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                warn!(replica = %shared.borrow().me, %error, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let remote = stream.peer_addr().ok();
        let mut state = shared.borrow_mut();
        let now = state.clock.now();
        match state.node.handle_accepted(now, remote) {
            Some(id) => state.conns.open(&shared, id, Some(stream), None),
            None => info!(replica = %state.me, ?remote, "too many connections; refused"),
        }
    }
}

/// Drains the node after inputs and when its deadline comes. Woken by an
/// input, it runs after every connection task woken in the same round of
/// the reactor, so their requests share one Prepare (§6).
async fn drive<S: Service + 'static>(shared: Replica<S>) {
    let input = shared.borrow().flush.clone();
    loop {
        drain(&shared);
        let wait = {
            let state = shared.borrow();
            state.deadline.map(|deadline| state.clock.until(deadline))
        };
        match wait {
            Some(wait) => future::or(input.notified(), glommio::timer::sleep(wait)).await,
            None => input.notified().await,
        }
    }
}

/// A durable replica's persists: each carried out on the executor's
/// blocking thread, then answered to the node. A storage error notifies
/// `failed`, which stops the replica.
async fn persist<S: Service + 'static>(shared: Replica<S>, dir: DataDir, failed: Rc<Notify>) {
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
            error!(replica = %shared.borrow().me, %error, "storage failed: stopping the replica");
            failed.notify();
            return;
        }
        dir = Some(back);
        let mut state = shared.borrow_mut();
        let now = state.clock.now();
        state.node.handle_persisted(now, sequence);
        state.flush.notify();
    }
}
