//! The client: a [`ClientNode`] with a task per connection, for use inside
//! a glommio executor, and [`BlockingClient`] for everyone else.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc::sync_channel;

use futures_lite::future;
use glommio::ExecutorJoinHandle;
use tracing::{debug, info, warn};
use vr_core::codec::DecodeError;
use vr_core::node::{ClientEvent, ClientNode, ClientOptions, Closed, ConnectionId, Output};
use vr_core::{ClientConfig, ClientError, MemberId};

use crate::conn::{Conns, Endpoint};
use crate::spawn_executor;
use crate::sync::Notify;
use vr_host::{invalid_input, Clock};

/// How the outstanding request ended.
enum Done {
    Result(Vec<u8>),
    Epoch(u32),
}

/// A client of a VR cluster, for use inside a glommio executor. It opens a
/// connection to a replica when it first has something to send there, and
/// opens it again after a failure.
pub struct Client {
    shared: Rc<ClientShared>,
}

struct ClientShared {
    node: RefCell<ClientNode>,
    clock: Clock,
    conns: RefCell<Conns>,
    /// The node writes frames here; each is copied to its connection.
    frames: RefCell<Vec<u8>>,
    /// The request-number of the request being waited for.
    request_number: Cell<u64>,
    done: RefCell<Option<Result<Done, ClientError>>>,
    /// Wakes the waiting request when `done` is set.
    finished: Notify,
}

impl ClientShared {
    /// Carries out the node's outputs until it waits, firing its timer
    /// (a resend, or giving up) when due.
    fn drain(self: &Rc<Self>) {
        loop {
            let output = {
                let mut frames = self.frames.borrow_mut();
                frames.clear();
                self.node.borrow_mut().poll_output(&mut frames)
            };
            match output {
                Output::Transmit { connection, len } => {
                    let frames = self.frames.borrow();
                    let frame = &frames[frames.len() - len..];
                    self.conns.borrow().queue(connection, frame);
                }
                Output::Connect {
                    connection,
                    address,
                } => (self.conns.borrow_mut()).open(self, connection, None, Some(address)),
                Output::Close { connection } => self.conns.borrow_mut().close(connection),
                Output::Event(ClientEvent::Completed(completion)) => {
                    let result = Done::Result(completion.result);
                    self.finish(completion.request_number, Ok(result));
                }
                Output::Event(ClientEvent::Reconfigured {
                    request_number,
                    epoch,
                }) => self.finish(request_number, Ok(Done::Epoch(epoch))),
                Output::Event(ClientEvent::Failed {
                    request_number,
                    error,
                }) => self.finish(request_number, Err(error)),
                Output::Event(event) => info!(?event, "client"),
                Output::Timeout(Some(t)) if t <= self.clock.now() => {
                    self.node.borrow_mut().handle_timeout(self.clock.now());
                }
                Output::Timeout(_) => return,
            }
        }
    }

    fn finish(&self, request_number: u64, outcome: Result<Done, ClientError>) {
        // An abandoned request's end is of no interest any more.
        if request_number == self.request_number.get() {
            *self.done.borrow_mut() = Some(outcome);
            self.finished.notify();
        }
    }

    /// Runs the outstanding request to its end.
    async fn wait(self: &Rc<Self>) -> Result<Done, ClientError> {
        loop {
            self.drain();
            if let Some(done) = self.done.take() {
                return done;
            }
            // No deadline: the node has nothing outstanding, yet reported
            // no end; the outcome is unknown.
            let Some(deadline) = self.node.borrow().poll_timeout() else {
                return Err(ClientError::TimedOut);
            };
            let wait = self.clock.until(deadline);
            future::or(self.finished.notified(), glommio::timer::sleep(wait)).await;
        }
    }

    /// Starts a request with `start` after giving up on any earlier one.
    async fn run(
        self: &Rc<Self>,
        start: impl FnOnce(&mut ClientNode) -> Result<u64, ClientError>,
    ) -> Result<Done, ClientError> {
        self.done.take();
        let number = {
            let mut node = self.node.borrow_mut();
            node.abandon();
            start(&mut node)?
        };
        self.request_number.set(number);
        self.wait().await
    }
}

impl Endpoint for Rc<ClientShared> {
    fn connected(&self, id: ConnectionId) {
        (self.node.borrow_mut()).handle_connected(self.clock.now(), id);
    }

    fn received(&self, id: ConnectionId, bytes: &[u8]) -> Result<usize, DecodeError> {
        let result = (self.node.borrow_mut()).handle_bytes(self.clock.now(), id, bytes);
        // A reply ends the request; a StartEpoch notice (§7.3) resends it.
        self.drain();
        result
    }

    fn written(&self, id: ConnectionId, bytes: usize) {
        self.node.borrow_mut().handle_written(id, bytes);
    }

    fn closed(&self, id: ConnectionId, how: Closed, error: Option<io::Error>) {
        self.conns.borrow_mut().remove(id);
        (self.node.borrow_mut()).handle_closed(self.clock.now(), id, how);
        debug!(connection = %id, ?how, ?error, "client connection closed");
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
    /// Its requests, outside a glommio executor: they spawn its connection
    /// tasks there.
    pub async fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<Client> {
        check_addresses(&addresses, &config)?;
        let frame_size_max = config.message_size_max as usize;
        let mut options = ClientOptions::new(addresses);
        // One request is outstanding at a time: only its resends queue up
        // behind a slow connection.
        options.queue_bytes_max = 4 * frame_size_max;
        let client = vr_core::Client::new(config, 0);
        let shared = Rc::new(ClientShared {
            node: RefCell::new(ClientNode::new(client, cluster, frame_size_max, &options)),
            clock: Clock::new(),
            conns: RefCell::default(),
            frames: RefCell::default(),
            request_number: Cell::new(0),
            done: RefCell::new(None),
            finished: Notify::default(),
        });
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
        let now = self.shared.clock.now();
        match self.shared.run(|node| node.request(now, op)).await? {
            Done::Result(result) => Ok(result),
            // Only a reconfiguration ends with an epoch.
            Done::Epoch(_) => Err(ClientError::TimedOut),
        }
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
        let now = self.shared.clock.now();
        let start = |node: &mut ClientNode| node.reconfigure(now, members, &addresses);
        match self.shared.run(start).await? {
            Done::Epoch(epoch) => Ok(epoch),
            // A reconfiguration ends with its epoch.
            Done::Result(_) => Err(ClientError::TimedOut),
        }
    }

    /// The epoch the client believes current (§7).
    pub fn epoch(&self) -> u32 {
        self.shared.node.borrow().client().epoch()
    }

    /// The member ids of that epoch, in index order.
    pub fn members(&self) -> Vec<MemberId> {
        self.shared.node.borrow().client().members()
    }

    /// Closes the client's connections and waits until they are closed.
    /// Dropping the client closes them too, but only once the executor gets
    /// to it.
    pub async fn close(self) {
        let tasks = self.shared.conns.borrow_mut().cancel_all();
        for task in tasks {
            task.await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The tasks hold the sockets and references to the shared state;
        // cancelling them closes and drops both.
        self.shared.conns.borrow_mut().cancel_all();
    }
}

fn check_addresses(addresses: &[SocketAddr], config: &ClientConfig) -> io::Result<()> {
    if addresses.len() != usize::from(config.replica_count) {
        return Err(invalid_input("one address per replica is needed"));
    }
    Ok(())
}

/// A call from a [`BlockingClient`], run on its executor thread.
type Job = Box<dyn for<'a> FnOnce(&'a mut Client) -> Pin<Box<dyn Future<Output = ()> + 'a>> + Send>;

/// A [`Client`] on its own thread and glommio executor, for callers that
/// are not inside one (tests, other runtimes).
pub struct BlockingClient {
    /// Dropped to stop the client.
    jobs: Option<flume::Sender<Job>>,
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
        let (jobs, calls) = flume::unbounded::<Job>();
        let name = format!("vr-client-{:x}", config.client_id);
        let thread = spawn_executor(&name, move || async move {
            // The addresses were checked above, the only reason to fail.
            let Ok(mut client) = Client::connect(addresses, config, cluster).await else {
                return;
            };
            while let Ok(job) = calls.recv_async().await {
                job(&mut client).await;
            }
            client.close().await;
        })?;
        Ok(BlockingClient {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `call` on the client's thread and returns its outcome; `None`
    /// if that thread has ended (a bug).
    fn call<T: Send + 'static>(
        &self,
        call: impl for<'a> FnOnce(&'a mut Client) -> Pin<Box<dyn Future<Output = T> + 'a>>
            + Send
            + 'static,
    ) -> Option<T> {
        let (reply, answer) = sync_channel(1);
        let job: Job = Box::new(move |client| {
            Box::pin(async move {
                // The caller waits for the answer; if it is gone, so be it.
                let _ = reply.send(call(client).await);
            })
        });
        self.jobs.as_ref()?.send(job).ok()?;
        answer.recv().ok()
    }

    /// Submits `op` and blocks until its result; see [`Client::submit`]. If
    /// the client's thread has died (a bug) the outcome is unknown:
    /// [`ClientError::TimedOut`].
    pub fn submit(&mut self, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let outcome = self.call(move |client| Box::pin(client.submit(op)));
        outcome.unwrap_or(Err(ClientError::TimedOut))
    }

    /// Moves the cluster to a new configuration and blocks until it
    /// committed; see [`Client::reconfigure`].
    pub fn reconfigure(
        &mut self,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError> {
        let outcome = self.call(move |client| Box::pin(client.reconfigure(members, addresses)));
        outcome.unwrap_or(Err(ClientError::TimedOut))
    }

    /// The epoch the client believes current and its members, in index
    /// order; `(0, [])` if the client's thread has died.
    pub fn epoch(&self) -> (u32, Vec<MemberId>) {
        let call = |client: &mut Client| (client.epoch(), client.members());
        let outcome = self.call(move |client| Box::pin(std::future::ready(call(client))));
        outcome.unwrap_or_default()
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if let Err(error) = thread.join() {
                warn!(%error, "client thread failed");
            }
        }
    }
}
