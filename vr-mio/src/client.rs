//! A blocking client: a [`ClientNode`] on a small mio loop of its own.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant as StdInstant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use tracing::{debug, info, warn};
use vr_core::node::ClientNode;
use vr_core::{ClientConfig, Completion, MemberId};

use crate::conn::{CloseReason, Conn, ReadOutcome};

/// Bound on the frames queued per replica, in frames of the cluster's
/// `message_size_max`. One request is outstanding at a time, so only resends
/// of it queue up behind a slow connection.
const QUEUE_FRAMES_MAX: usize = 4;

/// A connect still pending after this is abandoned and tried again on the
/// next send to that replica.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection slots at most: one per member id.
const SLOTS_MAX: usize = 1 << u8::BITS;

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

struct Connection {
    conn: Conn,
    started: StdInstant,
}

/// A blocking client of a VR cluster: one operation at a time, resent on
/// the client proxy's timer until a reply comes (or the attempts run out).
///
/// Connections to replicas are opened when a request is first sent to them
/// and opened again after a failure.
pub struct Client {
    node: ClientNode,
    /// The highest request-number used so far.
    request_number: u64,
    /// The epoch whose members' addresses are in `addresses`.
    epoch: u32,
    /// Each member's address, by member id.
    addresses: Vec<Option<SocketAddr>>,
    poll: Poll,
    events: Events,
    /// Indexed by member id; the token of member `i` is `Token(i)`.
    connections: Vec<Option<Connection>>,
    origin: StdInstant,
    scratch: Vec<u8>,
    /// Bound on the bytes queued per replica.
    queue_bytes_max: usize,
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
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "addresses.len() must equal replica_count",
            ));
        }
        let frame_size_max = config.message_size_max as usize;
        // Member ids: the configuration's (epoch 0: replica `i` is member `i`).
        let ids: Vec<usize> = (0..config.replica_count)
            .map(|i| {
                usize::from(
                    config
                        .members
                        .get(usize::from(i))
                        .copied()
                        .unwrap_or(vr_core::MemberId(i)),
                )
            })
            .collect();
        let mut by_member = vec![None; ids.iter().max().map_or(0, |m| m + 1)];
        for (&id, &address) in ids.iter().zip(&addresses) {
            by_member[id] = Some(address);
        }
        let epoch = config.epoch;
        let client = vr_core::Client::new(config, 0);
        Ok(Client {
            queue_bytes_max: QUEUE_FRAMES_MAX * frame_size_max,
            node: ClientNode::new(client, cluster, frame_size_max),
            epoch,
            request_number: 0,
            connections: by_member.iter().map(|_| None).collect(),
            addresses: by_member,
            poll: Poll::new()?,
            events: Events::with_capacity(16),
            origin: StdInstant::now(),
            scratch: vec![0; 64 * 1024],
        })
    }

    /// Submits `op` and blocks until its result arrives, or until the
    /// client proxy gives up ([`vr_core::ClientError::TimedOut`]).
    pub fn submit(&mut self, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let now = StdInstant::now();
        self.request_number = self
            .node
            .request(self.core_time(now), op)
            .map_err(ClientError::Request)?;
        self.wait().map(|done| done.result)
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
        let addresses = addresses
            .iter()
            .map(|a| a.to_string().into_bytes())
            .collect();
        let now = self.core_time(StdInstant::now());
        self.request_number = self
            .node
            .reconfigure(now, members, addresses)
            .map_err(ClientError::Request)?;
        let done = self.wait()?;
        Ok(done
            .result
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes))
    }

    /// The epoch the client believes current (§7).
    pub fn epoch(&self) -> u32 {
        self.node.client().epoch()
    }

    /// The member ids of that epoch, in index order.
    pub fn members(&self) -> Vec<MemberId> {
        self.node.client().members()
    }

    /// Runs the outstanding request to its completion.
    fn wait(&mut self) -> Result<Completion, ClientError> {
        loop {
            let now = StdInstant::now();
            self.dispatch(now);
            // With a request outstanding the proxy always has a deadline;
            // the fallback only bounds the sleep if that ever changes.
            let timeout = self
                .node
                .poll_timeout()
                .map_or(Duration::from_secs(1), |t| {
                    crate::std_time(self.origin, t).saturating_duration_since(now)
                });
            if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            let ready: Vec<(usize, bool)> = self
                .events
                .iter()
                .map(|e| (e.token().0, e.is_writable()))
                .collect();
            let now = StdInstant::now();
            // Every event is handled before returning: an edge not acted on
            // (an EOF, say) would not be reported again.
            let mut result = None;
            for (i, writable) in ready {
                if let Some(done) = self.on_ready(i, writable, now) {
                    result = Some(done);
                }
            }
            // Before the next dispatch: a StartEpoch notice may have
            // named members this client has no address for yet.
            self.follow_epoch();
            if let Some(result) = result {
                return Ok(result);
            }
            let core_now = self.core_time(now);
            if self.node.poll_timeout().is_some_and(|t| t <= core_now) {
                if let Some(error) = self.node.handle_timeout(core_now) {
                    return Err(ClientError::Request(error));
                }
            }
        }
    }

    fn core_time(&self, now: StdInstant) -> vr_core::Instant {
        crate::core_time(self.origin, now)
    }

    /// After a `StartEpoch` notice (§7.3): learns the new members'
    /// addresses, keeping the connections to members whose address is
    /// unchanged.
    fn follow_epoch(&mut self) {
        let client = self.node.client();
        if client.epoch() == self.epoch {
            return;
        }
        self.epoch = client.epoch();
        let members = client.members();
        info!(epoch = self.epoch, ?members, "following a new epoch");
        let learned: Vec<(usize, SocketAddr)> = members
            .iter()
            .zip(client.addresses())
            .filter_map(|(&m, a)| Some((usize::from(m), crate::parse_address(a)?)))
            .filter(|&(i, _)| i < SLOTS_MAX)
            .collect();
        for (i, address) in learned {
            if self.addresses.len() <= i {
                self.addresses.resize(i + 1, None);
                self.connections.resize_with(i + 1, || None);
            }
            if self.addresses[i] != Some(address) {
                self.addresses[i] = Some(address);
                let moved = io::Error::other("the member's address changed");
                self.close(i, CloseReason::Io(moved));
            }
        }
    }

    /// Queues the proxy's frames on their connections (opening them as
    /// needed) and writes them.
    fn dispatch(&mut self, now: StdInstant) {
        while let Some((replica, frame)) = self.node.poll_transmit() {
            let i = usize::from(replica);
            let stale = self
                .connections
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|c| {
                    !c.conn.connected && now.duration_since(c.started) > CONNECT_TIMEOUT
                });
            if stale {
                self.close(i, CloseReason::Io(io::ErrorKind::TimedOut.into()));
            }
            if self.connections.get(i).is_some_and(Option::is_none) {
                self.open(replica, now);
            }
            if let Some(Some(c)) = self.connections.get_mut(i) {
                // A full queue means the replica is not reading; the proxy
                // resends to everyone, so dropping here loses nothing.
                let _ = c.conn.outbox.push(frame, self.queue_bytes_max);
            }
        }
        for i in 0..self.connections.len() {
            self.flush(i);
        }
    }

    fn open(&mut self, replica: MemberId, now: StdInstant) {
        let i = usize::from(replica);
        let Some(Some(address)) = self.addresses.get(i).copied() else {
            debug!(member = %replica, "no address for member: frame dropped");
            return;
        };
        let opened = TcpStream::connect(address).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => {
                self.connections[i] = Some(Connection {
                    conn: Conn::new(stream, address, false),
                    started: now,
                });
            }
            Err(e) => info!(%replica, %address, %e, "client connect failed"),
        }
    }

    /// Handles readiness of replica `i`'s connection; returns the result
    /// when a reply completes the outstanding request.
    fn on_ready(&mut self, i: usize, writable: bool, now: StdInstant) -> Option<Completion> {
        let c = self.connections.get_mut(i)?.as_mut()?;
        if !c.conn.connected {
            match c.conn.finish_connect() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.close(i, CloseReason::Io(e));
                    return None;
                }
            }
        }
        if writable {
            self.flush(i);
        }
        let core_now = self.core_time(now);
        let mut result = None;
        loop {
            let c = self.connections.get_mut(i)?.as_mut()?;
            let node = &mut self.node;
            let outcome = c.conn.read(
                &mut self.scratch,
                |bytes| {
                    let (used, completion) = node.handle_bytes(core_now, bytes)?;
                    if let Some(done) = completion {
                        result = Some(done);
                    }
                    Ok(used)
                },
                CloseReason::BadInput,
            );
            match outcome {
                ReadOutcome::Drained => break,
                // The client has nothing else to be fair to: read on, since
                // an edge-triggered socket would not report the rest again.
                ReadOutcome::MoreLater => {}
                ReadOutcome::Closed(reason) => {
                    self.close(i, reason);
                    break;
                }
            }
        }
        result
    }

    fn flush(&mut self, i: usize) {
        let Some(Some(c)) = self.connections.get_mut(i) else {
            return;
        };
        if let Err(e) = c.conn.flush() {
            self.close(i, CloseReason::Io(e));
        }
    }

    fn close(&mut self, i: usize, reason: CloseReason) {
        let Some(mut c) = self.connections.get_mut(i).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.conn.stream);
        match reason {
            CloseReason::BadInput(e) => {
                warn!(replica = i, peer = %c.conn.peer, reason = %e, "bad frame from replica; closing")
            }
            CloseReason::Io(e) => info!(replica = i, peer = %c.conn.peer, %e, "connection failed"),
            CloseReason::Eof { .. } => debug!(replica = i, peer = %c.conn.peer, "replica closed"),
        }
    }
}
