//! One TCP connection per task: the bytes the node queued for it go out,
//! the bytes that arrive go to the node. Shared by replicas and clients;
//! what the bytes mean is the node's business ([`Endpoint`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use tracing::debug;
use vr_core::codec::DecodeError;
use vr_core::node::{Closed, ConnectionId};

use crate::sync::Notify;

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The node behind the connections: what a connection task reports to.
pub(crate) trait Endpoint: Clone + 'static {
    /// An outbound connection is open.
    fn connected(&self, id: ConnectionId);
    /// Bytes arrived; how many whole frames' worth the node used.
    fn received(&self, id: ConnectionId, bytes: &[u8]) -> Result<usize, DecodeError>;
    /// `bytes` of the connection's queue were written.
    fn written(&self, id: ConnectionId, bytes: usize);
    /// The connection ended (not called when the node closed it).
    fn closed(&self, id: ConnectionId, how: Closed, error: Option<io::Error>);
}

/// Frames queued for one connection, back to back. The node bounds it: it
/// admits a frame only while the bytes it was not yet told were written
/// fit its queue bound.
#[derive(Default)]
struct Outbox {
    bytes: RefCell<Vec<u8>>,
    /// Wakes the connection's task when a frame is queued.
    queued: Notify,
}

struct Conn {
    outbox: Rc<Outbox>,
    task: JoinHandle<()>,
}

/// The open connections, each served by a task of its own.
#[derive(Default)]
pub(crate) struct Conns {
    conns: HashMap<ConnectionId, Conn>,
}

impl Conns {
    /// Starts the task of connection `id`: on `stream` if it was accepted,
    /// else connecting to `address` first. No task runs before the caller
    /// yields, so a `RefCell` the caller holds is free by then.
    pub(crate) fn open<E: Endpoint>(
        &mut self,
        endpoint: &E,
        id: ConnectionId,
        stream: Option<TcpStream>,
        address: Option<SocketAddr>,
    ) {
        let outbox = Rc::new(Outbox::default());
        let task =
            glommio::spawn_local(serve(endpoint.clone(), id, stream, address, outbox.clone()));
        let task = task.detach();
        self.conns.insert(id, Conn { outbox, task });
    }

    /// Queues `frame` on connection `id`.
    pub(crate) fn queue(&self, id: ConnectionId, frame: &[u8]) {
        if let Some(conn) = self.conns.get(&id) {
            conn.outbox.bytes.borrow_mut().extend_from_slice(frame);
            conn.outbox.queued.notify();
        }
    }

    /// Forgets connection `id`, whose task ended.
    pub(crate) fn remove(&mut self, id: ConnectionId) {
        self.conns.remove(&id);
    }

    /// Closes connection `id`: its task is cancelled, which drops the
    /// socket and what was queued.
    pub(crate) fn close(&mut self, id: ConnectionId) {
        if let Some(conn) = self.conns.remove(&id) {
            conn.task.cancel();
        }
    }

    /// Cancels every connection's task and returns them, to be awaited.
    pub(crate) fn cancel_all(&mut self) -> Vec<JoinHandle<()>> {
        let tasks: Vec<_> = self.conns.drain().map(|(_, conn)| conn.task).collect();
        tasks.iter().for_each(JoinHandle::cancel);
        tasks
    }
}

async fn serve<E: Endpoint>(
    endpoint: E,
    id: ConnectionId,
    stream: Option<TcpStream>,
    address: Option<SocketAddr>,
    outbox: Rc<Outbox>,
) {
    let mut stream = match (stream, address) {
        (Some(stream), _) => stream,
        // The node gives up on a connect that takes too long: it closes
        // the connection, which cancels this task.
        (None, Some(address)) => match TcpStream::connect(address).await {
            Ok(stream) => {
                endpoint.connected(id);
                stream
            }
            Err(error) => {
                return endpoint.closed(id, Closed::Failed, Some(error.into()));
            }
        },
        (None, None) => return endpoint.closed(id, Closed::Failed, None),
    };
    // Frames are small and latency matters; the queue does the batching.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(connection = %id, %error, "could not set TCP_NODELAY");
    }
    let (how, error) = run(&mut stream, &endpoint, id, &outbox).await;
    endpoint.closed(id, how, error);
}

/// Writes what the outbox holds and hands what arrives to the endpoint
/// until the connection ends or the node rejects its input.
///
/// One task does both directions: the read is raced against new frames in
/// the queue, and a read that loses the race is simply dropped (glommio
/// reads from the socket only inside a poll, so no data is lost). Writes
/// take priority, so that replies flow even under a flood of requests.
async fn run<E: Endpoint>(
    stream: &mut TcpStream,
    endpoint: &E,
    id: ConnectionId,
    outbox: &Outbox,
) -> (Closed, Option<io::Error>) {
    let mut read_buffer = vec![0; READ_CHUNK_BYTES];
    let mut filled = 0;
    let mut write_buffer = Vec::new();
    loop {
        std::mem::swap(&mut *outbox.bytes.borrow_mut(), &mut write_buffer);
        if !write_buffer.is_empty() {
            if let Err(error) = stream.write_all(&write_buffer).await {
                return (Closed::Failed, Some(error));
            }
            endpoint.written(id, write_buffer.len());
            write_buffer.clear();
            continue;
        }
        // The decoder rejects a header announcing more than the frame limit
        // before its body arrives, so `filled` stays below that limit and
        // the buffer below it plus one chunk.
        if read_buffer.len() - filled < READ_CHUNK_BYTES {
            read_buffer.resize(filled + READ_CHUNK_BYTES, 0);
        }
        let read = future::or(
            async {
                outbox.queued.notified().await;
                None
            },
            async { Some(stream.read(&mut read_buffer[filled..]).await) },
        )
        .await;
        match read {
            None => continue,
            Some(Ok(0)) if filled == 0 => return (Closed::Eof, None),
            Some(Ok(0)) => return (Closed::EofMidFrame, None),
            Some(Ok(n)) => filled += n,
            Some(Err(error)) => return (Closed::Failed, Some(error)),
        }
        match endpoint.received(id, &read_buffer[..filled]) {
            Ok(used) => {
                // The node uses at most what it was given.
                let used = used.min(filled);
                read_buffer.copy_within(used..filled, 0);
                filled -= used;
            }
            Err(_) => return (Closed::Rejected, None),
        }
        if filled == 0 && read_buffer.len() > 4 * READ_CHUNK_BYTES {
            // A large frame passed; give its memory back.
            read_buffer.truncate(READ_CHUNK_BYTES);
            read_buffer.shrink_to_fit();
        }
        // A read returns at once while the socket has data, so a peer that
        // sends without pause would keep this task running and starve the
        // others (glommio is cooperative): go to the back of the queue.
        future::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What a connection task reported, in order.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Report {
        Connected,
        Received(usize),
        Written(usize),
        Closed(Closed),
    }

    #[derive(Clone, Default)]
    struct Recorder(Rc<RefCell<Vec<Report>>>);

    impl Endpoint for Recorder {
        fn connected(&self, _id: ConnectionId) {
            self.0.borrow_mut().push(Report::Connected);
        }
        fn received(&self, _id: ConnectionId, bytes: &[u8]) -> Result<usize, DecodeError> {
            self.0.borrow_mut().push(Report::Received(bytes.len()));
            Ok(bytes.len())
        }
        fn written(&self, _id: ConnectionId, bytes: usize) {
            self.0.borrow_mut().push(Report::Written(bytes));
        }
        fn closed(&self, _id: ConnectionId, how: Closed, _error: Option<io::Error>) {
            self.0.borrow_mut().push(Report::Closed(how));
        }
    }

    fn run_in_executor(test: impl std::future::Future<Output = ()> + 'static) {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 * 1024)
            .make()
            .expect("a glommio executor");
        executor.run(test);
    }

    /// Frames the node queued before the task got to write leave in one
    /// write, and that write is reported with its size: the node's queue
    /// accounting (and the Prepares and replies of one drain sharing a
    /// send) rest on it.
    #[test]
    fn frames_queued_together_leave_in_one_reported_write() {
        run_in_executor(async {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            let recorder = Recorder::default();
            let mut conns = Conns::default();
            let id = ConnectionId(1);
            conns.open(&recorder, id, None, Some(address));
            for frame in 0..3u8 {
                conns.queue(id, &[frame; 100]);
            }
            let mut peer = listener.accept().await.unwrap();
            let mut received = vec![0; 300];
            peer.read_exact(&mut received).await.unwrap();
            assert_eq!(&received[200..], &[2; 100][..]);
            peer.write_all(&[7; 10]).await.unwrap();
            drop(peer);
            while !matches!(recorder.0.borrow().last(), Some(Report::Closed(_))) {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(
                *recorder.0.borrow(),
                [
                    Report::Connected,
                    Report::Written(300),
                    Report::Received(10),
                    Report::Closed(Closed::Eof)
                ]
            );
        });
    }

    /// A connection the node closed is dropped at once, and the node is
    /// not told of it again.
    #[test]
    fn a_connection_the_node_closes_is_dropped_silently() {
        run_in_executor(async {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            let recorder = Recorder::default();
            let mut conns = Conns::default();
            let id = ConnectionId(1);
            conns.open(&recorder, id, None, Some(address));
            let mut peer = listener.accept().await.unwrap();
            conns.close(id);
            let mut byte = [0];
            let read = future::or(async { Some(peer.read(&mut byte).await.unwrap()) }, async {
                glommio::timer::sleep(Duration::from_secs(5)).await;
                None
            });
            assert_eq!(read.await, Some(0), "the peer sees EOF");
            // Whether the task saw its connect finish before the cancel is
            // a race; that it never reports the close is not.
            let reports = recorder.0.borrow();
            assert!(
                !reports.iter().any(|r| matches!(r, Report::Closed(_))),
                "{reports:?}"
            );
        });
    }
}
