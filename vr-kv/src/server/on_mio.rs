//! The RESP front end on mio: one thread and one `mio::Poll` for the
//! listener, every client connection, and every connection's VR client
//! proxy.
//!
//! `vr_mio::Client` blocks its caller until a reply comes, which would stop
//! every other connection of the loop; so each connection here drives a
//! [`ClientNode`] of its own, whose links to the replicas are non-blocking
//! sockets registered with the same poll. A batch in flight is then just a
//! connection waiting for a link event, and the proxies' resend deadlines
//! (kept in one ordered set) are the loop's timeout.
//!
//! Tokens: 0 is the listener, 1 the waker that stops the loop, and every
//! client connection and link gets the next number, never reused, so a late
//! event for a closed socket finds nothing.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use vr_core::node::{ClientEvent, ClientNode, ClientOptions, Closed, ConnectionId, Output};
use vr_core::Instant;

use super::{FrontEnd, Shared, ERR_MAX_CLIENTS};
use crate::resp::Reply;
use crate::session::{Session, Step, SubmitError};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_TOKEN: usize = 2;

/// Bytes asked of a socket per read (the front end's one scratch buffer).
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Reads one client connection may do per turn of the loop: a client that
/// pipelines only local commands (`PING`) never waits for the cluster, and
/// must not keep the loop from everyone else.
const READS_PER_TURN_MAX: usize = 16;

/// Bound on the bytes queued on one link, in frames of the cluster's
/// `message_size_max`. The proxy has one request outstanding and resends it
/// at most once per timeout, so this is reached only when a replica stops
/// reading; frames beyond it are dropped and resent on the proxy's timer.
const LINK_QUEUE_FRAMES_MAX: usize = 4;

/// How long accepting pauses after `accept` fails (out of file descriptors,
/// say), so that the loop does not spin on a full backlog.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// Events taken per `poll` call.
const EVENTS_CAPACITY: usize = 256;

/// Starts the front end on a thread of its own, accepting on `listener`.
pub(super) fn start(listener: std::net::TcpListener, shared: Arc<Shared>) -> io::Result<FrontEnd> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let stop = Arc::new(AtomicBool::new(false));
    let replica = shared.view.replica();
    let mut event_loop = Loop {
        sockets: Sockets {
            poll,
            next_token: FIRST_TOKEN,
            links: HashMap::new(),
        },
        listener,
        stop: stop.clone(),
        origin: StdInstant::now(),
        conns: HashMap::new(),
        timers: BTreeSet::new(),
        again: Vec::new(),
        accept_retry_at: None,
        chunk: vec![0; READ_CHUNK_BYTES],
        shared,
    };
    let thread = std::thread::Builder::new()
        .name(format!("vr-kv-resp-{replica}"))
        .spawn(move || {
            if let Err(error) = event_loop.run() {
                tracing::error!(replica = %replica, %error, "RESP event loop failed");
            }
        })?;
    Ok(FrontEnd::new(move || {
        stop.store(true, Ordering::Release);
        // If the loop has ended already, the wake fails and the join
        // returns at once.
        let _ = waker.wake();
        if thread.join().is_err() {
            tracing::error!(replica = %replica, "the RESP front end's thread panicked");
        }
    }))
}

/// The poll and the bookkeeping of the links' tokens: what opening and
/// closing a link needs, apart from the connection that owns it.
struct Sockets {
    poll: Poll,
    next_token: usize,
    /// For each link's token: the client connection whose proxy owns it,
    /// and the proxy's id for the link.
    links: HashMap<Token, (Token, ConnectionId)>,
}

impl Sockets {
    fn token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Starts a non-blocking connect for link `id` of the proxy of
    /// connection `owner`.
    fn open_link(
        &mut self,
        owner: Token,
        id: ConnectionId,
        address: SocketAddr,
    ) -> io::Result<Link> {
        let token = self.token();
        let mut stream = TcpStream::connect(address)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.registry().register(&mut stream, token, interest)?;
        self.links.insert(token, (owner, id));
        Ok(Link {
            stream,
            token,
            connected: false,
            outbox: Vec::new(),
            written: 0,
            inbox: Vec::new(),
        })
    }

    fn close_link(&mut self, mut link: Link) {
        self.links.remove(&link.token);
        let _ = self.registry().deregister(&mut link.stream);
    }
}

/// One connection from a proxy to a replica.
struct Link {
    stream: TcpStream,
    token: Token,
    /// Whether the non-blocking connect has completed.
    connected: bool,
    /// Frames to send; `outbox[..written]` are sent already. The proxy's
    /// node bounds what is queued (it is told of every write).
    outbox: Vec<u8>,
    written: usize,
    /// Received bytes not yet consumed as whole frames: less than one frame
    /// (the decoder rejects a header announcing more than
    /// `message_size_max`) plus one read.
    inbox: Vec<u8>,
}

impl Link {
    fn queue(&mut self, frame: &[u8]) {
        self.outbox.drain(..self.written);
        self.written = 0;
        self.outbox.extend_from_slice(frame);
    }

    /// Whether the connect has finished (`Ok(true)`), is still going
    /// (`Ok(false)`), or failed.
    fn finish_connect(&mut self) -> io::Result<bool> {
        if let Some(error) = self.stream.take_error()? {
            return Err(error);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                // Requests are small and wait for their reply: no Nagle.
                self.stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Writes what is queued until done or the socket would block (the
    /// next writable event resumes); the bytes written.
    fn flush(&mut self) -> io::Result<usize> {
        let start = self.written;
        while self.connected && self.written < self.outbox.len() {
            match self.stream.write(&self.outbox[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        let sent = self.written - start;
        if self.written == self.outbox.len() {
            self.outbox.clear();
            self.written = 0;
        }
        Ok(sent)
    }
}

/// A client connection's VR client proxy: its node decides connects,
/// backoff, queue bounds and the addresses of new epochs (§7.3); this
/// holds its links' sockets.
struct Proxy {
    node: ClientNode,
    links: HashMap<ConnectionId, Link>,
    /// The deadline this proxy has in `Loop::timers`.
    armed: Option<Instant>,
    frames: Vec<u8>,
}

/// One RESP client connection.
struct Conn {
    stream: TcpStream,
    session: Session,
    /// A readable event came and no read has hit `WouldBlock` since: mio
    /// reports an edge once, so the loop must remember it while the
    /// session is busy.
    readable: bool,
    /// The session said [`Step::Close`]: the connection ends once its
    /// output is written.
    closing: bool,
    /// Made for the first batch.
    proxy: Option<Proxy>,
}

struct Loop {
    sockets: Sockets,
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    /// The zero of the core's clock.
    origin: StdInstant,
    conns: HashMap<Token, Conn>,
    /// Every proxy's next deadline, earliest first: one entry per proxy
    /// with a request outstanding.
    timers: BTreeSet<(Instant, Token)>,
    /// Connections that used up their reads for a turn with more to read.
    again: Vec<Token>,
    /// Set after `accept` failed: when to try again.
    accept_retry_at: Option<StdInstant>,
    chunk: Vec<u8>,
}

impl Loop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self.poll_timeout();
            if let Err(error) = self.sockets.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            if self.stop.load(Ordering::Acquire) {
                // Dropping the loop closes every socket.
                return Ok(());
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    token => self.on_event(token, event),
                }
            }
            if self
                .accept_retry_at
                .is_some_and(|at| at <= StdInstant::now())
            {
                self.accept_retry_at = None;
                self.accept();
            }
            self.fire_timers();
            for token in std::mem::take(&mut self.again) {
                self.drive(token);
            }
        }
    }

    fn now(&self) -> Instant {
        let ns = self.origin.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// How long `poll` may sleep: not at all when connections wait for
    /// their next turn, else until the earliest deadline.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = StdInstant::now();
        let timer = self.timers.first().map(|&(deadline, _)| {
            let at = self
                .origin
                .checked_add(Duration::from_nanos(deadline.as_nanos()));
            at.map_or(Duration::MAX, |at| at.saturating_duration_since(now))
        });
        let accept = self
            .accept_retry_at
            .map(|at| at.saturating_duration_since(now));
        match (timer, accept) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _peer)) => self.admit(stream),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // The backlog still holds the connection, but mio will
                    // not report it again: come back after a pause.
                    tracing::warn!(%error, "accept failed");
                    self.accept_retry_at = Some(StdInstant::now() + ACCEPT_RETRY_DELAY);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        if self.conns.len() >= self.shared.connections_max {
            // A new socket's send buffer is empty: the short reply fits.
            let reply = Reply::Error(ERR_MAX_CLIENTS.to_owned()).to_bytes();
            if stream.write(&reply).is_ok() {
                let _ = stream.shutdown(Shutdown::Write);
            }
            return;
        }
        let token = self.sockets.token();
        if let Err(error) = self.sockets.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%error, "cannot register a RESP connection");
            return;
        }
        let conn = Conn {
            stream,
            session: Session::new(),
            // Bytes may have come before the registration: try a read.
            readable: true,
            closing: false,
            proxy: None,
        };
        self.conns.insert(token, conn);
        self.drive(token);
    }

    fn on_event(&mut self, token: Token, event: &Event) {
        if let Some(conn) = self.conns.get_mut(&token) {
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                conn.readable = true;
            }
            // Writable or readable: `drive` writes and reads what it can.
            self.drive(token);
        } else if let Some(&(owner, id)) = self.sockets.links.get(&token) {
            self.on_link_event(owner, id);
        }
    }

    /// Moves connection `token` on as far as it can go without waiting:
    /// writes its output, reads, and hands batches to its proxy.
    fn drive(&mut self, token: Token) {
        let mut reads = 0;
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            if let Err(error) = write_output(conn) {
                tracing::debug!(%error, "RESP connection failed");
                self.close(token);
                return;
            }
            if !conn.session.output().is_empty() {
                // Not reading until the client takes its replies bounds
                // what it can make us buffer.
                return;
            }
            if conn.closing {
                // Commands before the bad input are answered; the client
                // reads the error, then the end.
                let _ = conn.stream.shutdown(Shutdown::Write);
                self.close(token);
                return;
            }
            if conn.session.is_submitting() {
                return;
            }
            match conn.session.poll(&self.shared.view) {
                Step::Submit(op) => self.submit(token, op),
                Step::Close => conn.closing = true,
                Step::Idle if !conn.session.output().is_empty() => {}
                Step::Idle => {
                    if !conn.readable {
                        return;
                    }
                    if reads == READS_PER_TURN_MAX {
                        self.again.push(token);
                        return;
                    }
                    reads += 1;
                    let want = conn
                        .session
                        .read_room(&self.shared.view)
                        .min(READ_CHUNK_BYTES);
                    if want == 0 {
                        debug_assert!(false, "an idle session has room to read");
                        return;
                    }
                    match conn.stream.read(&mut self.chunk[..want]) {
                        Ok(0) => {
                            // The client is gone, and every command it
                            // sent is answered.
                            self.close(token);
                            return;
                        }
                        Ok(n) => conn.session.receive(&self.chunk[..n]),
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                            conn.readable = false;
                            return;
                        }
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => {
                            tracing::debug!(%error, "RESP connection failed");
                            self.close(token);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Starts replicating `op` for connection `token` through its proxy.
    fn submit(&mut self, token: Token, op: Vec<u8>) {
        let now = self.now();
        let shared = &self.shared;
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let proxy = conn.proxy.get_or_insert_with(|| {
            let config = shared.client_config();
            let frame_size_max = config.message_size_max as usize;
            let mut options = ClientOptions::new(shared.replicas.clone());
            options.queue_bytes_max = LINK_QUEUE_FRAMES_MAX * frame_size_max;
            let client = vr_core::Client::new(config, 0);
            Proxy {
                node: ClientNode::new(client, shared.cluster(), frame_size_max, &options),
                links: HashMap::new(),
                armed: None,
                frames: Vec::new(),
            }
        });
        if let Err(error) = proxy.node.request(now, op) {
            conn.session.complete(Err(SubmitError::Client(error)));
            return;
        }
        self.drain(token);
    }

    /// Carries out connection `token`'s proxy's outputs until it waits,
    /// firing its timer if due; hands a finished batch to the session.
    fn drain(&mut self, token: Token) {
        let now = self.now();
        let Some(proxy) = self.conns.get_mut(&token).and_then(|c| c.proxy.as_mut()) else {
            return;
        };
        let mut outcome = None;
        loop {
            proxy.frames.clear();
            match proxy.node.poll_output(&mut proxy.frames) {
                Output::Connect {
                    connection,
                    address,
                } => match self.sockets.open_link(token, connection, address) {
                    Ok(link) => drop(proxy.links.insert(connection, link)),
                    Err(error) => {
                        tracing::debug!(%address, %error, "cannot connect to replica");
                        proxy.node.handle_closed(now, connection, Closed::Failed);
                    }
                },
                Output::Transmit { connection, len } => {
                    let Some(link) = proxy.links.get_mut(&connection) else {
                        continue;
                    };
                    link.queue(&proxy.frames[proxy.frames.len() - len..]);
                    match link.flush() {
                        Ok(0) => {}
                        Ok(n) => proxy.node.handle_written(connection, n),
                        Err(error) => {
                            tracing::debug!(%error, "link to replica failed");
                            if let Some(link) = proxy.links.remove(&connection) {
                                self.sockets.close_link(link);
                            }
                            proxy.node.handle_closed(now, connection, Closed::Failed);
                        }
                    }
                }
                Output::Close { connection } => {
                    if let Some(link) = proxy.links.remove(&connection) {
                        self.sockets.close_link(link);
                    }
                }
                Output::Event(ClientEvent::Completed(done)) => outcome = Some(Ok(done.result)),
                Output::Event(ClientEvent::Failed { error, .. }) => {
                    outcome = Some(Err(SubmitError::Client(error)))
                }
                Output::Event(ClientEvent::EpochChanged { epoch, .. }) => {
                    tracing::info!(epoch, "client proxy follows a new epoch")
                }
                Output::Event(ClientEvent::FrameRejected { error, .. }) => {
                    tracing::warn!(?error, "bad frame from replica; closing")
                }
                Output::Event(_) => {}
                Output::Timeout(Some(t)) if t <= now => proxy.node.handle_timeout(now),
                Output::Timeout(_) => break,
            }
        }
        self.arm(token);
        if let Some(outcome) = outcome {
            self.finish(token, outcome);
        }
    }

    /// Puts connection `token`'s proxy deadline in `timers`.
    fn arm(&mut self, token: Token) {
        let Some(proxy) = self.conns.get_mut(&token).and_then(|c| c.proxy.as_mut()) else {
            return;
        };
        let deadline = proxy.node.poll_timeout();
        if deadline == proxy.armed {
            return;
        }
        if let Some(old) = proxy.armed {
            self.timers.remove(&(old, token));
        }
        if let Some(new) = deadline {
            self.timers.insert((new, token));
        }
        proxy.armed = deadline;
    }

    /// Runs the proxies whose deadline has passed: they resend, give up,
    /// or drop a connect that takes too long.
    fn fire_timers(&mut self) {
        let now = self.now();
        while let Some(&(deadline, token)) = self.timers.first() {
            if deadline > now {
                return;
            }
            self.timers.pop_first();
            if let Some(proxy) = self.conns.get_mut(&token).and_then(|c| c.proxy.as_mut()) {
                proxy.armed = None;
                self.drain(token);
            }
        }
    }

    /// Hands the outcome of connection `token`'s batch to its session and
    /// moves the connection on.
    fn finish(&mut self, token: Token, outcome: Result<Vec<u8>, SubmitError>) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.session.complete(outcome);
        self.arm(token);
        self.drive(token);
    }

    /// Link `id` of connection `owner`'s proxy is ready: finish its
    /// connect, write what it has queued, and read replies.
    fn on_link_event(&mut self, owner: Token, id: ConnectionId) {
        let now = self.now();
        let Some(proxy) = self.conns.get_mut(&owner).and_then(|c| c.proxy.as_mut()) else {
            return;
        };
        let Some(link) = proxy.links.get_mut(&id) else {
            return;
        };
        let mut closed = None;
        if !link.connected {
            match link.finish_connect() {
                Ok(true) => proxy.node.handle_connected(now, id),
                Ok(false) => return,
                Err(error) => {
                    tracing::debug!(%error, "cannot connect to replica");
                    closed = Some(Closed::Failed);
                }
            }
        }
        if closed.is_none() {
            match link.flush() {
                Ok(0) => {}
                Ok(n) => proxy.node.handle_written(id, n),
                Err(error) => {
                    tracing::debug!(%error, "link to replica failed");
                    closed = Some(Closed::Failed);
                }
            }
        }
        // Read until the socket would block: the edge is reported once.
        while closed.is_none() {
            match link.stream.read(&mut self.chunk) {
                Ok(0) if link.inbox.is_empty() => closed = Some(Closed::Eof),
                Ok(0) => closed = Some(Closed::EofMidFrame),
                Ok(n) => {
                    link.inbox.extend_from_slice(&self.chunk[..n]);
                    match proxy.node.handle_bytes(now, id, &link.inbox) {
                        Ok(used) => drop(link.inbox.drain(..used)),
                        Err(_) => closed = Some(Closed::Rejected),
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::debug!(%error, "link to replica failed");
                    closed = Some(Closed::Failed);
                }
            }
        }
        if let Some(how) = closed {
            // The node backs off; its next frame for the replica opens a
            // new link.
            if let Some(link) = proxy.links.remove(&id) {
                self.sockets.close_link(link);
            }
            proxy.node.handle_closed(now, id, how);
        }
        self.drain(owner);
    }

    /// Closes client connection `token` and its proxy's links.
    fn close(&mut self, token: Token) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.sockets.registry().deregister(&mut conn.stream);
        if let Some(proxy) = conn.proxy {
            if let Some(deadline) = proxy.armed {
                self.timers.remove(&(deadline, token));
            }
            for link in proxy.links.into_values() {
                self.sockets.close_link(link);
            }
        }
    }
}

/// Writes as much of the connection's output as the socket takes now.
fn write_output(conn: &mut Conn) -> io::Result<()> {
    while !conn.session.output().is_empty() {
        match conn.stream.write(conn.session.output()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.session.consume_output(n),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
