//! Connections for both nodes: one task per socket, and the table the
//! node's owner keeps of them.
//!
//! A connection's task owns its socket: it connects (outbound), reads and
//! forwards what it read, and writes what it is given, logging each
//! write. The owner of the node (the replica's loop or the client) never
//! touches a socket: it queues frames with [`Conns::queue`], hands them to
//! the tasks once per turn with [`Conns::flush`], feeds the tasks'
//! [`LinkEvent`]s to the node with [`Conns::handle`] and their writes with
//! [`Conns::report_writes`]. The node decides
//! everything else: which connections to open and close, queue bounds,
//! backoff (see [`vr_core::node`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vr_core::codec::DecodeError;
use vr_core::node::{ClientNode, Closed, ConnectionId, ReplicaNode};
use vr_core::{Instant, Service};

/// Bytes a connection task reads at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A write stops growing past this many bytes, so that a burst does not
/// pin a huge buffer; the rest goes in the next write.
const WRITE_BYTES_MAX: usize = 1024 * 1024;

/// What a connection's task reports to the node's owner.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// An outbound connect succeeded.
    Connected(ConnectionId),
    /// Bytes read, in arrival order.
    Data(ConnectionId, Vec<u8>),
    /// The connection ended (a failed connect included); its task is done.
    Closed(ConnectionId, Closed, Option<io::Error>),
}

/// Writes the connection tasks made and the node has not been told of: a
/// log rather than an event, so that a write does not wake the node's
/// task. The node is told at its next turn, before it queues anything
/// ([`Conns::report_writes`]), which is the only time its queue accounting
/// matters. Bounded: a connection's task writes only what a turn handed
/// it, so each turn adds at most one entry per connection.
type WriteLog = Arc<Mutex<Vec<(ConnectionId, usize)>>>;

/// The inputs a connection feeds to a node: the same for both nodes.
pub(crate) trait Node {
    fn handle_bytes(
        &mut self,
        now: Instant,
        id: ConnectionId,
        bytes: &[u8],
    ) -> Result<usize, DecodeError>;
    fn handle_connected(&mut self, now: Instant, id: ConnectionId);
    fn handle_written(&mut self, id: ConnectionId, bytes: usize);
    fn handle_closed(&mut self, now: Instant, id: ConnectionId, how: Closed);
}

/// Both nodes have these inputs as inherent methods of the same shape.
macro_rules! impl_node {
    ($node:ty) => {
        fn handle_bytes(
            &mut self,
            now: Instant,
            id: ConnectionId,
            bytes: &[u8],
        ) -> Result<usize, DecodeError> {
            <$node>::handle_bytes(self, now, id, bytes)
        }
        fn handle_connected(&mut self, now: Instant, id: ConnectionId) {
            <$node>::handle_connected(self, now, id)
        }
        fn handle_written(&mut self, id: ConnectionId, bytes: usize) {
            <$node>::handle_written(self, id, bytes)
        }
        fn handle_closed(&mut self, now: Instant, id: ConnectionId, how: Closed) {
            <$node>::handle_closed(self, now, id, how)
        }
    };
}

impl<S: Service> Node for ReplicaNode<S> {
    impl_node!(ReplicaNode<S>);
}

impl Node for ClientNode {
    impl_node!(ClientNode);
}

/// What a connection's task starts from.
enum Target {
    Accepted(TcpStream),
    Connect(SocketAddr),
}

/// One connection as the node's owner keeps it.
struct Conn {
    /// Batches of frames for the task to write.
    frames: mpsc::UnboundedSender<Vec<u8>>,
    task: JoinHandle<()>,
    /// Bytes received but not yet consumed: an incomplete frame. Bounded
    /// by the node, which rejects an oversized frame from its header: at
    /// most one frame plus one read.
    inbox: Vec<u8>,
    /// Frames queued this turn, handed to the task by [`Conns::flush`]:
    /// whatever the node sent on one connection in one turn leaves in one
    /// write. The node bounds it (it is told of every write).
    outbox: Vec<u8>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Ends the task even in the middle of a connect, and with it the
        // socket: the other end sees the close.
        self.task.abort();
    }
}

/// The connections of one node.
pub(crate) struct Conns {
    conns: HashMap<ConnectionId, Conn>,
    /// Connections with frames queued this turn.
    dirty: Vec<ConnectionId>,
    events: mpsc::Sender<LinkEvent>,
    writes: WriteLog,
    /// The log's entries being reported; kept for its allocation.
    reporting: Vec<(ConnectionId, usize)>,
    /// Who owns them, for the logs.
    owner: String,
}

impl Conns {
    /// An empty table whose tasks report to `events`.
    pub(crate) fn new(events: mpsc::Sender<LinkEvent>, owner: String) -> Conns {
        Conns {
            conns: HashMap::new(),
            dirty: Vec::new(),
            events,
            writes: WriteLog::default(),
            reporting: Vec::new(),
            owner,
        }
    }

    /// Serves `stream`, accepted, as `id`.
    pub(crate) fn accepted(&mut self, id: ConnectionId, stream: TcpStream) {
        self.spawn(id, Target::Accepted(stream));
    }

    /// Opens connection `id` to `address`; the node hears how it went.
    pub(crate) fn connect(&mut self, id: ConnectionId, address: SocketAddr) {
        self.spawn(id, Target::Connect(address));
    }

    fn spawn(&mut self, id: ConnectionId, target: Target) {
        let (frames, frames_rx) = mpsc::unbounded_channel();
        let (events, writes) = (self.events.clone(), self.writes.clone());
        let task = tokio::spawn(run(id, target, frames_rx, events, writes));
        let conn = Conn {
            frames,
            task,
            inbox: Vec::new(),
            outbox: Vec::new(),
        };
        // The node never reuses an id.
        debug_assert!(!self.conns.contains_key(&id), "connection {id} reused");
        self.conns.insert(id, conn);
    }

    /// Queues a frame on `id` (gone: the node hears of it, or has).
    pub(crate) fn queue(&mut self, id: ConnectionId, frame: &[u8]) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if conn.outbox.is_empty() {
                self.dirty.push(id);
            }
            conn.outbox.extend_from_slice(frame);
        }
    }

    /// Hands the frames queued this turn to their connections' tasks.
    pub(crate) fn flush(&mut self) {
        for id in self.dirty.drain(..) {
            if let Some(conn) = self.conns.get_mut(&id) {
                // A task that ended has reported it, or is about to: the
                // node then forgets these bytes with the connection.
                let _ = conn.frames.send(std::mem::take(&mut conn.outbox));
            }
        }
    }

    /// Closes `id`: the node gave up on it, or rejected what it sent.
    pub(crate) fn close(&mut self, id: ConnectionId) {
        self.conns.remove(&id);
    }

    /// Tells `node` of the writes made since the last call: call it before
    /// draining the node's outputs.
    pub(crate) fn report_writes(&mut self, node: &mut impl Node) {
        std::mem::swap(
            &mut *self.writes.lock().unwrap_or_else(PoisonError::into_inner),
            &mut self.reporting,
        );
        for (id, bytes) in self.reporting.drain(..) {
            if self.conns.contains_key(&id) {
                node.handle_written(id, bytes);
            }
        }
    }

    /// Feeds `event` to `node`. Events of a connection closed since are
    /// stale and ignored.
    pub(crate) fn handle(&mut self, node: &mut impl Node, now: Instant, event: LinkEvent) {
        let owner = &self.owner;
        match event {
            LinkEvent::Connected(id) if self.conns.contains_key(&id) => {
                tracing::debug!(%owner, connection = %id, "connected");
                node.handle_connected(now, id);
            }
            LinkEvent::Data(id, bytes) => {
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                // Straight from the read when nothing is pending (the
                // common case); only an incomplete tail is kept.
                let fed = if conn.inbox.is_empty() {
                    (node.handle_bytes(now, id, &bytes))
                        .map(|used| conn.inbox.extend_from_slice(&bytes[used..]))
                } else {
                    conn.inbox.extend_from_slice(&bytes);
                    (node.handle_bytes(now, id, &conn.inbox))
                        .map(|used| drop(conn.inbox.drain(..used)))
                };
                // Rejected: the node counted it, reports it and forgot the
                // connection.
                if fed.is_err() {
                    self.close(id);
                }
            }
            LinkEvent::Closed(id, how, error) => {
                let Some(conn) = self.conns.remove(&id) else {
                    return;
                };
                let how = match how {
                    Closed::Eof if !conn.inbox.is_empty() => Closed::EofMidFrame,
                    how => how,
                };
                // The node counts the ends that matter (mid-frame, failed
                // connects); the rest is everyday (clients leave).
                tracing::debug!(%owner, connection = %id, ?how, ?error, "connection closed");
                node.handle_closed(now, id, how);
            }
            LinkEvent::Connected(_) => {}
        }
    }
}

/// A connection's task: connects if `target` is an address, then reads and
/// writes until the connection ends, and reports the end.
async fn run(
    id: ConnectionId,
    target: Target,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::Sender<LinkEvent>,
    writes: WriteLog,
) {
    let mut stream = match target {
        Target::Accepted(stream) => stream,
        // No timeout here: the node gives up on a slow connect and drops
        // this task.
        Target::Connect(address) => match TcpStream::connect(address).await {
            Ok(stream) => {
                if events.send(LinkEvent::Connected(id)).await.is_err() {
                    return;
                }
                stream
            }
            Err(error) => {
                let _ = (events.send(LinkEvent::Closed(id, Closed::Failed, Some(error)))).await;
                return;
            }
        },
    };
    // Frames are small and latency-bound; batching is done above.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(connection = %id, %error, "set_nodelay failed");
    }
    let (mut reader, mut writer) = stream.split();
    // Reads go on while a write waits for the other end, and the other way
    // round: two peers writing to each other never wait on each other.
    let (how, error) = tokio::select! {
        ended = read_loop(id, &mut reader, &events) => ended,
        ended = write_loop(id, &mut writer, &mut frames, &writes) => ended,
    };
    // The owner is gone only during shutdown.
    let _ = events.send(LinkEvent::Closed(id, how, error)).await;
}

/// Forwards what `reader` reads until it ends. A full event channel makes
/// this wait, which stops the reads: the node's owner sets the pace.
async fn read_loop(
    id: ConnectionId,
    reader: &mut ReadHalf<'_>,
    events: &mpsc::Sender<LinkEvent>,
) -> (Closed, Option<io::Error>) {
    let mut chunk = vec![0; READ_CHUNK_BYTES];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) => return (Closed::Eof, None),
            // Only what was read travels: a queued event holds no slack.
            Ok(n) => {
                let data = LinkEvent::Data(id, chunk[..n].to_vec());
                if events.send(data).await.is_err() {
                    return (Closed::Eof, None);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Closed::Failed, Some(e)),
        }
    }
}

/// Writes what the owner hands over, batches queued meanwhile together,
/// and logs each write for the node.
async fn write_loop(
    id: ConnectionId,
    writer: &mut WriteHalf<'_>,
    frames: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    writes: &WriteLog,
) -> (Closed, Option<io::Error>) {
    while let Some(mut bytes) = frames.recv().await {
        while bytes.len() < WRITE_BYTES_MAX {
            let Ok(more) = frames.try_recv() else { break };
            bytes.extend_from_slice(&more);
        }
        if let Err(e) = writer.write_all(&bytes).await {
            return (Closed::Failed, Some(e));
        }
        let mut log = writes.lock().unwrap_or_else(PoisonError::into_inner);
        log.push((id, bytes.len()));
    }
    // The owner dropped the connection (it aborts the task too).
    (Closed::Eof, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node whose frames are 4 bytes; a frame starting with 0xFF is
    /// rejected. Records what it was told.
    #[derive(Default)]
    struct Fake {
        fed: Vec<Vec<u8>>,
        connected: Vec<ConnectionId>,
        written: Vec<(ConnectionId, usize)>,
        closed: Vec<(ConnectionId, Closed)>,
    }

    impl Node for Fake {
        fn handle_bytes(
            &mut self,
            _now: Instant,
            _id: ConnectionId,
            bytes: &[u8],
        ) -> Result<usize, DecodeError> {
            if bytes.first() == Some(&0xFF) {
                return Err(DecodeError::BadMagic);
            }
            self.fed.push(bytes.to_vec());
            Ok(bytes.len() / 4 * 4)
        }
        fn handle_connected(&mut self, _now: Instant, id: ConnectionId) {
            self.connected.push(id);
        }
        fn handle_written(&mut self, id: ConnectionId, bytes: usize) {
            self.written.push((id, bytes));
        }
        fn handle_closed(&mut self, _now: Instant, id: ConnectionId, how: Closed) {
            self.closed.push((id, how));
        }
    }

    /// A table with one accepted connection `C`, and the other end of it.
    async fn one_accepted() -> (Conns, mpsc::Receiver<LinkEvent>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other = TcpStream::connect(listener.local_addr().unwrap());
        let (other, accepted) = tokio::join!(other, listener.accept());
        let (events_tx, events) = mpsc::channel(16);
        let mut conns = Conns::new(events_tx, "test".to_string());
        conns.accepted(C, accepted.unwrap().0);
        (conns, events, other.unwrap())
    }

    const C: ConnectionId = ConnectionId(7);

    /// `future`, or a failure after a second instead of a hang.
    async fn soon<T>(future: impl std::future::Future<Output = T>) -> T {
        let limit = std::time::Duration::from_secs(1);
        tokio::time::timeout(limit, future).await.expect("in time")
    }
    const NOW: Instant = Instant::ZERO;

    #[tokio::test]
    async fn a_frame_split_across_reads_is_fed_whole_and_an_eof_inside_one_is_told() {
        let (mut conns, _events, _other) = one_accepted().await;
        let mut node = Fake::default();
        conns.handle(&mut node, NOW, LinkEvent::Data(C, vec![1, 2, 3, 4, 5, 6]));
        conns.handle(&mut node, NOW, LinkEvent::Data(C, vec![7, 8, 9]));
        assert_eq!(node.fed, vec![vec![1, 2, 3, 4, 5, 6], vec![5, 6, 7, 8, 9]]);
        conns.handle(&mut node, NOW, LinkEvent::Closed(C, Closed::Eof, None));
        assert_eq!(
            node.closed,
            vec![(C, Closed::EofMidFrame)],
            "byte 9 is pending"
        );
    }

    #[tokio::test]
    async fn a_rejected_connection_is_closed_and_its_late_events_ignored() {
        let (mut conns, _events, mut other) = one_accepted().await;
        let mut node = Fake::default();
        conns.handle(&mut node, NOW, LinkEvent::Data(C, vec![0xFF; 4]));
        let mut byte = [0u8; 1];
        assert_eq!(
            soon(other.read(&mut byte)).await.unwrap(),
            0,
            "the other end sees the close"
        );
        conns.handle(&mut node, NOW, LinkEvent::Data(C, vec![1; 4]));
        conns.writes.lock().unwrap().push((C, 4));
        conns.report_writes(&mut node);
        conns.handle(&mut node, NOW, LinkEvent::Closed(C, Closed::Eof, None));
        assert!(node.fed.is_empty() && node.written.is_empty() && node.closed.is_empty());
    }

    /// The node is told of every write (its queue bound depends on it),
    /// and what it queued on a connection in one turn leaves in one write.
    #[tokio::test]
    async fn frames_queued_in_one_turn_leave_in_one_reported_write() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (events_tx, mut events) = mpsc::channel(16);
        let mut conns = Conns::new(events_tx, "test".to_string());
        let mut node = Fake::default();
        conns.connect(C, listener.local_addr().unwrap());
        let (mut other, _) = listener.accept().await.unwrap();
        let event = events.recv().await.unwrap();
        conns.handle(&mut node, NOW, event);
        assert_eq!(node.connected, vec![C]);
        for frame in [b"abc".as_slice(), b"de", b"fghij"] {
            conns.queue(C, frame);
        }
        conns.flush();
        let mut got = [0u8; 10];
        soon(other.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"abcdefghij");
        // The task logs the write once `write` returned: soon after.
        soon(async {
            while node.written.is_empty() {
                tokio::task::yield_now().await;
                conns.report_writes(&mut node);
            }
        })
        .await;
        assert_eq!(node.written, vec![(C, 10)]);
    }
}
