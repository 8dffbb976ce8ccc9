//! The async client: a [`ClientNode`] driven from the caller's runtime.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use vr_core::node::{ClientEvent, ClientNode, ClientOptions, Output};
use vr_core::{ClientConfig, ClientError, MemberId};

use crate::link::{Conns, LinkEvent};
use vr_host::Clock;

/// Connection events waiting for the client; a full channel makes the
/// connection tasks wait.
const EVENTS_QUEUED_MAX: usize = 64;
/// Reconnects are rare for a client: it resends only on its request timer.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How the outstanding request ended.
enum Done {
    Result(Vec<u8>),
    Epoch(u32),
}

/// A client of a VR cluster, submitting one operation at a time.
///
/// It runs in the caller's tokio runtime: connection tasks are spawned on it
/// and must not outlive it (dropping the client ends them).
pub struct Client {
    node: ClientNode,
    conns: Conns,
    events: mpsc::Receiver<LinkEvent>,
    clock: Clock,
    /// The node writes frames here; each is copied to its connection.
    frames: Vec<u8>,
}

impl Client {
    /// A client of the cluster `cluster` whose replica `i` is at
    /// `addresses[i]`. Connections are opened when there is something to
    /// send, so this succeeds even while replicas are down; it fails only
    /// if the addresses do not match `config.replica_count`. Replies up to
    /// `config.message_size_max` are accepted.
    pub async fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<Client> {
        if addresses.len() != usize::from(config.replica_count) {
            let why = "one address per replica is needed";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let frame_size_max = config.message_size_max as usize;
        let mut options = ClientOptions::new(addresses);
        // A few resends of one request; more is a backlog not worth keeping.
        options.queue_bytes_max = 2 * frame_size_max;
        options.reconnect_backoff_min = BACKOFF_MIN;
        options.reconnect_backoff_max = BACKOFF_MAX;
        let (events_tx, events) = mpsc::channel(EVENTS_QUEUED_MAX);
        let client = vr_core::Client::new(config, 0);
        Ok(Client {
            node: ClientNode::new(client, cluster, frame_size_max, &options),
            conns: Conns::new(events_tx, "client".to_string()),
            events,
            clock: Clock::new(),
            frames: Vec::new(),
        })
    }

    /// Submits `op` and waits for its result. Resends on the client's timer
    /// until a reply comes, or fails with [`ClientError::TimedOut`] after
    /// `request_attempts_max` attempts (the outcome is then unknown).
    ///
    /// If an earlier `submit` was cancelled (its future dropped), its request
    /// is still outstanding: this waits for it to finish first and discards
    /// its result, since the protocol allows one request at a time.
    pub async fn submit(&mut self, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        self.finish_cancelled().await;
        self.node.request(self.clock.now(), op)?;
        match self.wait().await? {
            Done::Result(result) => Ok(result),
            // `finish_cancelled` waited out any earlier request.
            Done::Epoch(_) => unreachable!("only a reconfiguration ends with an epoch"),
        }
    }

    /// Asks the cluster to move to a new configuration (§7.1): `members`
    /// (member ids, in index order) at `addresses` (one per member, which
    /// every replica and client learns with the new epoch). Returns the new
    /// epoch-number once the reconfiguration committed. The primary refuses
    /// an invalid one, or one from a client whose epoch is not current, by
    /// not answering: it then fails like any request (after
    /// `request_attempts_max` attempts, or never when unlimited). A request
    /// sent for an epoch that has ended is answered with the new epoch's
    /// members, and sent again for it.
    pub async fn reconfigure(
        &mut self,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError> {
        self.finish_cancelled().await;
        let now = self.clock.now();
        self.node.reconfigure(now, members, &addresses)?;
        match self.wait().await? {
            Done::Epoch(epoch) => Ok(epoch),
            // As in `submit`: only this request was outstanding.
            Done::Result(_) => unreachable!("a reconfiguration ends with its epoch"),
        }
    }

    /// The epoch the client believes current (§7).
    pub fn epoch(&self) -> u32 {
        self.node.client().epoch()
    }

    /// The member ids of that epoch, in index order.
    pub fn members(&self) -> Vec<MemberId> {
        self.node.client().members()
    }

    /// Runs a request whose caller went away to its end; its outcome
    /// belonged to that caller.
    async fn finish_cancelled(&mut self) {
        if self.node.client().outstanding().is_some() {
            let _ = self.wait().await;
        }
    }

    /// Runs the outstanding request to its end.
    async fn wait(&mut self) -> Result<Done, ClientError> {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            let (done, deadline) = self.drain();
            if let Some(done) = done {
                return done;
            }
            // With a request outstanding the proxy always has a deadline;
            // the fallback only bounds the sleep if that ever changes.
            let at = match deadline {
                Some(at) => self.clock.instant(at).into(),
                None => tokio::time::Instant::now() + Duration::from_secs(1),
            };
            timer.as_mut().reset(at);
            tokio::select! {
                // Never `None`: `conns` holds a sender.
                Some(event) = self.events.recv() => {
                    let now = self.clock.now();
                    self.conns.handle(&mut self.node, now, event);
                    while let Ok(event) = self.events.try_recv() {
                        self.conns.handle(&mut self.node, now, event);
                    }
                }
                // `drain` fires the timer.
                () = &mut timer => {}
            }
        }
    }

    /// Carries out the node's outputs until it waits: the request's end if
    /// it came, and the node's deadline.
    fn drain(&mut self) -> (Option<Result<Done, ClientError>>, Option<vr_core::Instant>) {
        let mut done = None;
        // The queue accounting the outputs are admitted against.
        self.conns.report_writes(&mut self.node);
        let deadline = loop {
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
                Output::Event(ClientEvent::Completed(completion)) => {
                    done = Some(Ok(Done::Result(completion.result)))
                }
                Output::Event(ClientEvent::Reconfigured { epoch, .. }) => {
                    done = Some(Ok(Done::Epoch(epoch)))
                }
                Output::Event(ClientEvent::Failed { error, .. }) => done = Some(Err(error)),
                Output::Event(event) => tracing::info!(?event, "client"),
                Output::Timeout(Some(t)) if t <= self.clock.now() => {
                    self.node.handle_timeout(self.clock.now())
                }
                Output::Timeout(deadline) => break deadline,
            }
        };
        self.conns.flush();
        (done, deadline)
    }
}
