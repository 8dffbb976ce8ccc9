//! The client: a [`ClientNode`] with one connection task per replica, for
//! use inside a glommio executor, and [`BlockingClient`] for everyone else.

use std::cell::{Cell, RefCell};
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
use vr_core::{ClientConfig, ClientError, Completion, Instant, MemberId};

use crate::connection::{run_connection, Closed, Outbox};
use crate::sync::{CloseOnDrop, Mailbox, Notify};
use crate::{invalid_input, spawn_executor, CONNECT_TIMEOUT};

/// Bound on the bytes queued for one replica, in frames of the cluster's
/// `message_size_max`. The client has one request outstanding and sends it
/// at most once per replica per timeout, so this is never reached unless a
/// replica stops reading.
const CLIENT_QUEUE_FRAMES_MAX: usize = 4;

/// Connection slots at most: one per member id.
const SLOTS_MAX: usize = 1 << u8::BITS;

/// A client of a VR cluster, for use inside a glommio executor. It opens a
/// connection to a replica when it first has something to send there, and
/// opens it again when it has failed.
pub struct Client {
    shared: Rc<ClientShared>,
}

struct ClientShared {
    node: RefCell<ClientNode>,
    /// The configuration it started with.
    config: ClientConfig,
    /// The highest request-number used so far.
    request_number: Cell<u64>,
    /// The epoch whose members' addresses are in `addresses`.
    epoch: Cell<u32>,
    origin: std::time::Instant,
    /// Each member's queue, by member id (`None`: address unknown).
    outboxes: RefCell<Vec<Option<Rc<Outbox>>>>,
    /// Each member's address, by member id; read at every connect.
    addresses: RefCell<Vec<Option<SocketAddr>>>,
    /// The connection tasks, one per member with an address.
    tasks: RefCell<Vec<JoinHandle<()>>>,
    completion: RefCell<Option<Completion>>,
    completed: Notify,
}

impl ClientShared {
    fn now(&self) -> Instant {
        // u64 nanoseconds last 584 years.
        Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    /// Queues the node's frames on their members' connections.
    fn flush(&self) {
        let mut node = self.node.borrow_mut();
        let outboxes = self.outboxes.borrow();
        while let Some((replica, frame)) = node.poll_transmit() {
            // A dropped request is resent on the client's timer.
            let queued = outboxes
                .get(usize::from(replica))
                .and_then(Option::as_ref)
                .is_some_and(|outbox| outbox.push(frame));
            if !queued {
                debug!(%replica, "request frame dropped: queue full or no address");
            }
        }
    }

    fn on_bytes(self: &Rc<Self>, bytes: &[u8]) -> Result<usize, DecodeError> {
        let now = self.now();
        let (used, completion) = self.node.borrow_mut().handle_bytes(now, bytes)?;
        if let Some(completion) = completion {
            *self.completion.borrow_mut() = Some(completion);
            self.completed.notify();
        }
        // A StartEpoch notice (§7.3) resent the request to the new epoch's
        // members, which may be new to this client.
        self.follow_epoch();
        self.flush();
        Ok(used)
    }

    /// Gives member `member` at `address` a queue and a connection task,
    /// or, if it has one, the new address for its next connect.
    fn add_member(self: &Rc<Self>, member: MemberId, address: SocketAddr) {
        let index = usize::from(member);
        if index >= SLOTS_MAX {
            return;
        }
        {
            let mut addresses = self.addresses.borrow_mut();
            if addresses.len() <= index {
                addresses.resize(index + 1, None);
            }
            addresses[index] = Some(address);
        }
        let mut outboxes = self.outboxes.borrow_mut();
        if outboxes.len() <= index {
            outboxes.resize_with(index + 1, || None);
        }
        if outboxes[index].is_some() {
            return;
        }
        let frame_size_max = self.config.message_size_max as usize;
        outboxes[index] = Some(Rc::new(Outbox::new(
            CLIENT_QUEUE_FRAMES_MAX * frame_size_max,
        )));
        drop(outboxes);
        let task = spawn_local(connect_replica(self.clone(), member)).detach();
        self.tasks.borrow_mut().push(task);
    }

    /// After a `StartEpoch` notice: learns the new members' addresses,
    /// keeping the connections to the members that stay.
    fn follow_epoch(self: &Rc<Self>) {
        let (epoch, learned) = {
            let node = self.node.borrow();
            let client = node.client();
            if client.epoch() == self.epoch.get() {
                return;
            }
            let learned: Vec<(MemberId, SocketAddr)> = client
                .members()
                .into_iter()
                .zip(client.addresses())
                .filter_map(|(m, a)| Some((m, crate::parse_address(a)?)))
                .collect();
            (client.epoch(), learned)
        };
        self.epoch.set(epoch);
        let members: Vec<MemberId> = learned.iter().map(|(m, _)| *m).collect();
        info!(epoch, ?members, "following a new epoch");
        for (member, address) in learned {
            self.add_member(member, address);
        }
    }

    /// Runs the outstanding request to its completion.
    async fn wait(&self) -> Result<Completion, ClientError> {
        self.flush();
        loop {
            if let Some(completion) = self.completion.take() {
                return Ok(completion);
            }
            let now = self.now();
            let deadline = self.node.borrow().poll_timeout();
            match deadline {
                Some(deadline) if deadline <= now => {
                    let error = self.node.borrow_mut().handle_timeout(now);
                    self.flush();
                    if let Some(error) = error {
                        return Err(error);
                    }
                }
                Some(deadline) => {
                    let wait = Duration::from_nanos(deadline.saturating_since(now));
                    future::or(self.completed.notified(), glommio::timer::sleep(wait)).await;
                }
                // No deadline means no request outstanding, and no
                // completion came: the client gave the request up.
                None => return Err(ClientError::TimedOut),
            }
        }
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
        let node = ClientNode::new(
            vr_core::Client::new(config.clone(), 0),
            cluster,
            frame_size_max,
        );
        // Member ids: the configuration's (epoch 0: replica `i` is member `i`).
        let members = node.client().members();
        let shared = Rc::new(ClientShared {
            node: RefCell::new(node),
            epoch: Cell::new(config.epoch),
            config,
            request_number: Cell::new(0),
            origin: std::time::Instant::now(),
            outboxes: RefCell::default(),
            addresses: RefCell::default(),
            tasks: RefCell::default(),
            completion: RefCell::new(None),
            completed: Notify::default(),
        });
        for (member, address) in members.into_iter().zip(addresses) {
            shared.add_member(member, address);
        }
        Ok(Client { shared })
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
        let number = shared.node.borrow_mut().request(now, op)?;
        shared.request_number.set(number);
        shared.wait().await.map(|completion| completion.result)
    }

    /// Asks the cluster to move to a new configuration (§7.1): `members`
    /// (member ids, in index order) at `addresses` (one per member, which
    /// every replica and client learns with the new epoch). Returns the new
    /// epoch-number once it committed. The primary refuses an invalid one,
    /// or one from a client whose epoch is not current, by not answering:
    /// it then fails like any request (after `request_attempts_max`
    /// attempts, or never when unlimited). A request sent for an epoch that
    /// has ended is answered with the new epoch's members, and sent again
    /// for it.
    pub async fn reconfigure(
        &mut self,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError> {
        let shared = &self.shared;
        shared.completion.take();
        shared.node.borrow_mut().abandon();
        let addresses = addresses
            .iter()
            .map(|a| a.to_string().into_bytes())
            .collect();
        let now = shared.now();
        let number = shared
            .node
            .borrow_mut()
            .reconfigure(now, members, addresses)?;
        shared.request_number.set(number);
        let completion = shared.wait().await?;
        Ok(completion
            .result
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes))
    }

    /// The epoch the client believes current (§7).
    pub fn epoch(&self) -> u32 {
        self.shared.node.borrow().client().epoch()
    }

    /// The member ids of that epoch, in index order.
    pub fn members(&self) -> Vec<MemberId> {
        self.shared.node.borrow().client().members()
    }
}

impl Client {
    /// Closes the client's connections and waits until they are closed.
    /// Dropping the client closes them too, but only once the executor gets
    /// to it.
    pub async fn close(self) {
        let tasks = std::mem::take(&mut *self.shared.tasks.borrow_mut());
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
        // The tasks hold the sockets; cancelling them closes the sockets
        // (and drops their references to the shared state).
        for task in self.shared.tasks.borrow().iter() {
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
async fn connect_replica(shared: Rc<ClientShared>, replica: MemberId) {
    let Some(Some(outbox)) = shared.outboxes.borrow().get(usize::from(replica)).cloned() else {
        return;
    };
    loop {
        while outbox.is_empty() {
            outbox.queued.notified().await;
        }
        // Read at every connect: a reconfiguration may have moved it.
        let address = shared.addresses.borrow()[usize::from(replica)];
        let Some(address) = address else {
            return;
        };
        let mut stream = match TcpStream::connect_timeout(address, CONNECT_TIMEOUT).await {
            Ok(stream) => stream,
            Err(error) => {
                debug!(%replica, %address, %error, "client could not connect");
                outbox.clear();
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%replica, %error, "could not set TCP_NODELAY");
        }
        let closed = run_connection(&mut stream, &outbox, |bytes| shared.on_bytes(bytes)).await;
        match closed {
            Closed::Eof { .. } => debug!(%replica, %address, "replica closed the connection"),
            Closed::Io(error) => info!(%replica, %address, %error, "connection to replica failed"),
            Closed::BadInput(error) => {
                warn!(%replica, %address, %error, "replica sent a bad frame; connection closed");
            }
        }
    }
}

/// A request from a [`BlockingClient`] to its executor thread.
enum Job {
    Submit {
        op: Vec<u8>,
        reply: SyncSender<Result<Vec<u8>, ClientError>>,
    },
    Reconfigure {
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
        reply: SyncSender<Result<u32, ClientError>>,
    },
    Epoch {
        reply: SyncSender<(u32, Vec<MemberId>)>,
    },
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
                // The caller waits for each answer; if it is gone, so be it.
                while let Some(job) = jobs.recv().await {
                    match job {
                        Job::Submit { op, reply } => {
                            let _ = reply.send(client.submit(op).await);
                        }
                        Job::Reconfigure {
                            members,
                            addresses,
                            reply,
                        } => {
                            let _ = reply.send(client.reconfigure(members, addresses).await);
                        }
                        Job::Epoch { reply } => {
                            let _ = reply.send((client.epoch(), client.members()));
                        }
                    }
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
        if self.jobs.send(Job::Submit { op, reply }).is_err() {
            return Err(ClientError::TimedOut);
        }
        answer.recv().unwrap_or(Err(ClientError::TimedOut))
    }

    /// Moves the cluster to a new configuration and blocks until it
    /// committed; see [`Client::reconfigure`].
    pub fn reconfigure(
        &mut self,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError> {
        let (reply, answer) = sync_channel(1);
        let job = Job::Reconfigure {
            members,
            addresses,
            reply,
        };
        if self.jobs.send(job).is_err() {
            return Err(ClientError::TimedOut);
        }
        answer.recv().unwrap_or(Err(ClientError::TimedOut))
    }

    /// The epoch the client believes current and its members, in index
    /// order; `(0, [])` if the client's thread has died.
    pub fn epoch(&self) -> (u32, Vec<MemberId>) {
        let (reply, answer) = sync_channel(1);
        if self.jobs.send(Job::Epoch { reply }).is_err() {
            return (0, Vec::new());
        }
        answer.recv().unwrap_or_default()
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
