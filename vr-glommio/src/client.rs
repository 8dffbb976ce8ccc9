//! The client: a [`ClientNode`] with one connection task per replica, for
//! use inside a glommio executor, and [`BlockingClient`] for everyone else.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use glommio::{spawn_local, ExecutorJoinHandle};
use tracing::{debug, info, warn};
use vr_core::codec::DecodeError;
use vr_core::node::ClientNode;
use vr_core::{ClientConfig, ClientError, Completion, Instant, ReplicaIndex};

use crate::connection::{run_connection, Closed, Outbox};
use crate::sync::{CloseOnDrop, Mailbox, Notify};
use crate::{invalid_input, spawn_executor, CONNECT_TIMEOUT};

/// Bound on the bytes queued for one replica, in frames of the cluster's
/// `message_size_max`. The client has one request outstanding and sends it
/// at most once per replica per timeout, so this is never reached unless a
/// replica stops reading.
const CLIENT_QUEUE_FRAMES_MAX: usize = 4;

/// A client of a VR cluster, for use inside a glommio executor. It opens a
/// connection to a replica when it first has something to send there, and
/// opens it again when it has failed.
pub struct Client {
    shared: Rc<ClientShared>,
    tasks: Vec<JoinHandle<()>>,
}

struct ClientShared {
    node: RefCell<ClientNode>,
    origin: std::time::Instant,
    outboxes: Vec<Rc<Outbox>>,
    completion: RefCell<Option<Completion>>,
    completed: Notify,
}

impl ClientShared {
    fn now(&self) -> Instant {
        // u64 nanoseconds last 584 years.
        Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    /// Queues the node's frames on their replicas' connections.
    fn flush(&self) {
        let mut node = self.node.borrow_mut();
        while let Some((replica, frame)) = node.poll_transmit() {
            // A dropped request is resent on the client's timer.
            let queued = self
                .outboxes
                .get(usize::from(replica))
                .is_some_and(|outbox| outbox.push(frame));
            if !queued {
                debug!(replica, "request frame dropped: queue full");
            }
        }
    }

    fn on_bytes(&self, bytes: &[u8]) -> Result<usize, DecodeError> {
        let now = self.now();
        let (used, completion) = self.node.borrow_mut().handle_bytes(now, bytes)?;
        if let Some(completion) = completion {
            *self.completion.borrow_mut() = Some(completion);
            self.completed.notify();
        }
        Ok(used)
    }
}

impl Client {
    /// A client of the cluster `cluster` whose replica `i` listens on
    /// `addresses[i]`. Opens no connection yet, so it succeeds while
    /// replicas are down; it fails only if `addresses` does not have one
    /// address per replica.
    ///
    /// # Panics
    ///
    /// Outside a glommio executor: it spawns its connection tasks there.
    pub async fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<Client> {
        check_addresses(&addresses, &config)?;
        let frame_size_max = config.message_size_max as usize;
        let outboxes: Vec<_> = addresses
            .iter()
            .map(|_| Rc::new(Outbox::new(CLIENT_QUEUE_FRAMES_MAX * frame_size_max)))
            .collect();
        let node = ClientNode::new(vr_core::Client::new(config, 0), cluster, frame_size_max);
        let shared = Rc::new(ClientShared {
            node: RefCell::new(node),
            origin: std::time::Instant::now(),
            outboxes,
            completion: RefCell::new(None),
            completed: Notify::default(),
        });
        let tasks = addresses
            .into_iter()
            .enumerate()
            .map(|(replica, address)| {
                // There are at most 255 replicas, as many as `replica_count: u8` allows.
                let replica = replica as ReplicaIndex;
                spawn_local(connect_replica(shared.clone(), replica, address)).detach()
            })
            .collect();
        Ok(Client { shared, tasks })
    }

    /// Submits `op` and waits for its result. Resends on the client's timer;
    /// fails with [`ClientError::TimedOut`] after `request_attempts_max`
    /// attempts (the outcome is then unknown).
    ///
    /// Dropping the returned future before it finishes abandons the request:
    /// it may still execute, and the next `submit` starts a new one (the
    /// protocol allows one request at a time).
    pub async fn submit(&mut self, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let shared = &self.shared;
        shared.completion.take();
        shared.node.borrow_mut().abandon();
        let now = shared.now();
        shared.node.borrow_mut().request(now, op)?;
        shared.flush();
        loop {
            if let Some(completion) = shared.completion.take() {
                return Ok(completion.result);
            }
            let now = shared.now();
            let deadline = shared.node.borrow().poll_timeout();
            match deadline {
                Some(deadline) if deadline <= now => {
                    let error = shared.node.borrow_mut().handle_timeout(now);
                    shared.flush();
                    if let Some(error) = error {
                        return Err(error);
                    }
                }
                Some(deadline) => {
                    let wait = Duration::from_nanos(deadline.saturating_since(now));
                    future::or(shared.completed.notified(), glommio::timer::sleep(wait)).await;
                }
                // No deadline means no request outstanding, and no
                // completion came: the client gave the request up.
                None => return Err(ClientError::TimedOut),
            }
        }
    }
}

impl Client {
    /// Closes the client's connections and waits until they are closed.
    /// Dropping the client closes them too, but only once the executor gets
    /// to it.
    pub async fn close(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.cancel();
        }
        for task in tasks {
            task.await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The tasks hold the sockets; cancelling them closes the sockets.
        for task in &self.tasks {
            task.cancel();
        }
    }
}

fn check_addresses(addresses: &[SocketAddr], config: &ClientConfig) -> io::Result<()> {
    if addresses.len() != usize::from(config.replica_count) {
        return Err(invalid_input("one address per replica is needed"));
    }
    Ok(())
}

/// Keeps the connection to one replica: opens it when a frame is queued and
/// hands replies to the node. When the replica cannot be reached the queue
/// is dropped; the client resends on its own timer, so no backoff is needed.
async fn connect_replica(shared: Rc<ClientShared>, replica: ReplicaIndex, address: SocketAddr) {
    let outbox = shared.outboxes[usize::from(replica)].clone();
    loop {
        while outbox.is_empty() {
            outbox.queued.notified().await;
        }
        let mut stream = match TcpStream::connect_timeout(address, CONNECT_TIMEOUT).await {
            Ok(stream) => stream,
            Err(error) => {
                debug!(replica, %address, %error, "client could not connect");
                outbox.clear();
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(replica, %error, "could not set TCP_NODELAY");
        }
        let closed = run_connection(&mut stream, &outbox, |bytes| shared.on_bytes(bytes)).await;
        match closed {
            Closed::Eof { .. } => debug!(replica, %address, "replica closed the connection"),
            Closed::Io(error) => info!(replica, %address, %error, "connection to replica failed"),
            Closed::BadInput(error) => {
                warn!(replica, %address, %error, "replica sent a bad frame; connection closed");
            }
        }
    }
}

/// A request from a [`BlockingClient`] to its executor thread.
struct Job {
    op: Vec<u8>,
    reply: SyncSender<Result<Vec<u8>, ClientError>>,
}

/// A [`Client`] on its own thread and glommio executor, for callers that
/// are not inside one (tests, other runtimes).
pub struct BlockingClient {
    jobs: Arc<Mailbox<Job>>,
    thread: Option<ExecutorJoinHandle<()>>,
}

impl BlockingClient {
    /// Starts the client's thread; see [`Client::connect`].
    pub fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<BlockingClient> {
        check_addresses(&addresses, &config)?;
        let jobs = Arc::new(Mailbox::<Job>::new());
        let name = format!("vr-client-{:x}", config.client_id);
        let thread = spawn_executor(&name, {
            let jobs = jobs.clone();
            move || async move {
                let _release_waiters = CloseOnDrop(&jobs);
                // The addresses were checked above, the only reason to fail.
                let Ok(mut client) = Client::connect(addresses, config, cluster).await else {
                    return;
                };
                while let Some(job) = jobs.recv().await {
                    // The caller waits for this answer; if it is gone, so be it.
                    let _ = job.reply.send(client.submit(job.op).await);
                }
                client.close().await;
            }
        })?;
        Ok(BlockingClient {
            jobs,
            thread: Some(thread),
        })
    }

    /// Submits `op` and blocks until its result; see [`Client::submit`]. If
    /// the client's thread has died (a bug) the outcome is unknown:
    /// [`ClientError::TimedOut`].
    pub fn submit(&mut self, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let (reply, answer) = sync_channel(1);
        if self.jobs.send(Job { op, reply }).is_err() {
            return Err(ClientError::TimedOut);
        }
        answer.recv().unwrap_or(Err(ClientError::TimedOut))
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        self.jobs.close();
        if let Some(thread) = self.thread.take() {
            if let Err(error) = thread.join() {
                warn!(%error, "client thread failed");
            }
        }
    }
}
