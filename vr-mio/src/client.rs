//! A blocking client: a [`ClientNode`] on a small mio loop of its own.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use tracing::{debug, info};
use vr_core::node::{ClientEvent, ClientNode, ClientOptions, Closed, ConnectionId, Output};
use vr_core::{ClientConfig, MemberId};

use crate::conn::{Conn, ReadOutcome};
use vr_host::Clock;

/// Why [`Client::submit`] failed.
#[derive(Debug)]
pub enum ClientError {
    /// The client proxy refused the request (`Busy`, `TooLarge`) or gave up
    /// after `request_attempts_max` attempts (`TimedOut`: the operation may
    /// still execute; its outcome is unknown).
    Request(vr_core::ClientError),
    /// The client's event loop failed.
    Io(io::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Request(e) => e.fmt(f),
            ClientError::Io(e) => write!(f, "client event loop: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Request(e) => Some(e),
            ClientError::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// How a request ended.
enum Done {
    Result(Vec<u8>),
    Epoch(u32),
}

/// A blocking client of a VR cluster: one operation at a time, resent on
/// the client proxy's timer until a reply comes (or the attempts run out).
///
/// Connections to replicas are opened when a request is first sent to them
/// and opened again after a failure.
pub struct Client {
    node: ClientNode,
    poll: Poll,
    events: Events,
    conns: HashMap<Token, Conn>,
    clock: Clock,
    scratch: Vec<u8>,
    frames: Vec<u8>,
}

impl Client {
    /// A client of the cluster `cluster` whose replica `i` listens on
    /// `addresses[i]`. No connection is opened until the first request.
    pub fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<Client> {
        if addresses.len() != usize::from(config.replica_count) {
            let why = "addresses.len() must equal replica_count";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let frame_size_max = config.message_size_max as usize;
        let mut options = ClientOptions::new(addresses);
        // One request is outstanding at a time: only its resends queue up
        // behind a slow connection.
        options.queue_bytes_max = 4 * frame_size_max;
        let client = vr_core::Client::new(config, 0);
        Ok(Client {
            node: ClientNode::new(client, cluster, frame_size_max, &options),
            poll: Poll::new()?,
            events: Events::with_capacity(16),
            conns: HashMap::new(),
            clock: Clock::new(),
            scratch: vec![0; 64 * 1024],
            frames: Vec::new(),
        })
    }

    /// Submits `op` and blocks until its result arrives, or until the
    /// client proxy gives up ([`vr_core::ClientError::TimedOut`]).
    pub fn submit(&mut self, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        (self.node.request(self.clock.now(), op)).map_err(ClientError::Request)?;
        match self.wait()? {
            Done::Result(result) => Ok(result),
            Done::Epoch(_) => unreachable!("only a reconfiguration ends with an epoch"),
        }
    }

    /// Asks the cluster to move to a new configuration (§7.1): `members`
    /// (member ids, in index order) at `addresses` (one per member, which
    /// every replica and client learns with the new epoch). Blocks until it
    /// committed and returns the new epoch-number. The primary refuses an
    /// invalid one, or one from a client whose epoch is not current, by not
    /// answering: it then fails like any request (after
    /// `request_attempts_max` attempts, or never when unlimited). A request
    /// sent for an epoch that has ended is answered with the new epoch's
    /// members, and sent again for it.
    pub fn reconfigure(
        &mut self,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError> {
        let now = self.clock.now();
        (self.node.reconfigure(now, members, &addresses)).map_err(ClientError::Request)?;
        match self.wait()? {
            Done::Epoch(epoch) => Ok(epoch),
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

    /// Runs the outstanding request to its end.
    fn wait(&mut self) -> Result<Done, ClientError> {
        loop {
            let deadline = match self.drain() {
                Some(Ok(done)) => return Ok(done),
                Some(Err(error)) => return Err(ClientError::Request(error)),
                None => self.node.poll_timeout(),
            };
            // With a request outstanding the proxy always has a deadline;
            // the fallback only bounds the sleep if that ever changes.
            let timeout = deadline.map_or(Duration::from_secs(1), |d| self.clock.until(d));
            if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            let ready: Vec<(Token, bool)> = (self.events.iter())
                .map(|e| (e.token(), e.is_writable()))
                .collect();
            // Every event is handled: an edge not acted on (an EOF, say)
            // would not be reported again.
            for (token, writable) in ready {
                self.on_ready(token, writable);
            }
        }
    }

    /// Carries out the node's outputs until it waits; the request's end,
    /// if it came.
    fn drain(&mut self) -> Option<Result<Done, vr_core::ClientError>> {
        let mut done = None;
        loop {
            self.frames.clear();
            match self.node.poll_output(&mut self.frames) {
                Output::Transmit { connection, len } => {
                    let frame = &self.frames[self.frames.len() - len..];
                    if let Some(conn) = self.conns.get_mut(&Token(connection.0 as usize)) {
                        conn.queue(frame);
                    }
                    self.flush(Token(connection.0 as usize));
                }
                Output::Connect {
                    connection,
                    address,
                } => self.open(connection, address),
                Output::Close { connection } => {
                    drop(self.conns.remove(&Token(connection.0 as usize)))
                }
                Output::Event(ClientEvent::Completed(completion)) => {
                    done = Some(Ok(Done::Result(completion.result)))
                }
                Output::Event(ClientEvent::Reconfigured { epoch, .. }) => {
                    done = Some(Ok(Done::Epoch(epoch)))
                }
                Output::Event(ClientEvent::Failed { error, .. }) => done = Some(Err(error)),
                Output::Event(event) => info!(?event, "client"),
                Output::Timeout(Some(t)) if t <= self.clock.now() => {
                    self.node.handle_timeout(self.clock.now())
                }
                Output::Timeout(_) => return done,
            }
        }
    }

    fn open(&mut self, id: ConnectionId, address: SocketAddr) {
        let token = Token(id.0 as usize);
        let opened = TcpStream::connect(address).and_then(|mut stream| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.poll
                .registry()
                .register(&mut stream, token, interest)?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => drop(self.conns.insert(token, Conn::new(id, stream, false))),
            Err(e) => {
                debug!(%address, %e, "connect failed");
                self.node
                    .handle_closed(self.clock.now(), id, Closed::Failed);
            }
        }
    }

    fn on_ready(&mut self, token: Token, writable: bool) {
        let now = self.clock.now();
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !conn.connected {
            match conn.finish_connect() {
                Ok(false) => return,
                Ok(true) => self.node.handle_connected(now, conn.id),
                Err(_) => return self.close(token, Closed::Failed),
            }
        }
        if writable || conn.has_queued() {
            self.flush(token);
        }
        // Edge-triggered: read until the socket would block.
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            let (node, id) = (&mut self.node, conn.id);
            match conn.read(&mut self.scratch, |bytes| node.handle_bytes(now, id, bytes)) {
                ReadOutcome::Drained => return,
                ReadOutcome::MoreLater => continue,
                ReadOutcome::Closed(how, _) => return self.close(token, how),
            }
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let (node, id) = (&mut self.node, conn.id);
        if conn.flush(|n| node.handle_written(id, n)).is_err() {
            self.close(token, Closed::Failed);
        }
    }

    fn close(&mut self, token: Token, how: Closed) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.node.handle_closed(self.clock.now(), conn.id, how);
        }
    }
}
