//! Byte plumbing shared by replicas and clients: bounded outgoing queues,
//! batched writes, and connection tasks that forward what they read.
//!
//! Every connection is served by one task that owns the socket. The owner of
//! the protocol node (the replica loop or the client) never touches a socket:
//! it pushes whole frames into an [`Outbox`] and receives [`LinkEvent`]s.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Bytes a connection task reads at once, and the most it hands over per event.
pub(crate) const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A batch stops growing past this many bytes, so that one slow peer's burst
/// does not pin a huge write buffer; the rest goes in the next syscall.
const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Slices per `writev`, well under Linux's `IOV_MAX` (1024).
const BATCH_SLICES_MAX: usize = 64;
/// A connect that takes longer than this counts as failed: an unreachable
/// peer must not hold its queue hostage until the kernel gives up (minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a connection task tells the node's owner. `key` names the
/// connection (a `ConnectionId` on a replica, a link number on a client).
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// Bytes read, in arrival order.
    Data { key: u64, bytes: Vec<u8> },
    /// The connection ended; bytes read later under the same key belong to a
    /// new connection, so a partial frame kept for this key must be dropped.
    Closed { key: u64, error: io::Error },
}

/// The sending side of one connection's queue, bounded in bytes.
///
/// The bound covers frames queued and frames being written: the task gives
/// bytes back only after the kernel took them (or the connection failed).
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    queued_bytes_max: usize,
}

/// The receiving side, owned by the connection task.
pub(crate) struct Inbox {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
}

/// A queue bounded to `queued_bytes_max` bytes.
pub(crate) fn queue(queued_bytes_max: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let outbox = Outbox {
        tx,
        queued_bytes: queued_bytes.clone(),
        queued_bytes_max,
    };
    (outbox, Inbox { rx, queued_bytes })
}

/// Why a frame was not queued (and was dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds its bound already.
    Full,
    /// The connection's task has ended.
    Closed,
}

impl Outbox {
    /// Queues `frame`, or drops it if the queue is full or its task has
    /// ended. An empty queue takes any frame, so a frame larger than the
    /// bound is still sent rather than starving forever.
    pub(crate) fn push(&self, frame: Vec<u8>) -> Result<(), PushError> {
        if self.tx.is_closed() {
            return Err(PushError::Closed);
        }
        let len = frame.len();
        let queued = self.queued_bytes.load(Ordering::Acquire);
        if queued != 0 && queued.saturating_add(len) > self.queued_bytes_max {
            return Err(PushError::Full);
        }
        // Only this side adds, so the check above cannot be raced past the
        // bound; the task only subtracts.
        self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if self.tx.send(frame).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(PushError::Closed);
        }
        Ok(())
    }
}

impl Inbox {
    /// Drops everything queued: after a connection failure those frames are
    /// stale (the protocol resends what still matters). Returns the count.
    fn discard(&mut self) -> u64 {
        let mut frames = 0;
        while let Ok(frame) = self.rx.try_recv() {
            self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
            frames += 1;
        }
        frames
    }
}

/// Writes every frame of `batch` with as few `writev` calls as the kernel
/// allows, emptying it. On error the unwritten rest stays in `batch`.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &mut VecDeque<Vec<u8>>,
) -> io::Result<()> {
    // Bytes of the front frame already written by an earlier partial write.
    let mut front_written = 0;
    while let Some(front) = batch.front() {
        let mut slices = Vec::with_capacity(batch.len().min(BATCH_SLICES_MAX));
        slices.push(IoSlice::new(&front[front_written..]));
        slices.extend(
            batch
                .iter()
                .skip(1)
                .take(BATCH_SLICES_MAX - 1)
                .map(|f| IoSlice::new(f)),
        );
        let mut written = writer.write_vectored(&slices).await?;
        debug_assert!(written <= slices.iter().map(|s| s.len()).sum::<usize>());
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while let Some(front) = batch.front() {
            let rest = front.len() - front_written;
            if written < rest {
                front_written += written;
                break;
            }
            written -= rest;
            front_written = 0;
            batch.pop_front();
        }
    }
    Ok(())
}

/// Where a connection task sends what it reads, if anywhere.
pub(crate) type Events = Option<(mpsc::Sender<LinkEvent>, u64)>;

/// Serves one connected socket until it fails or the outbox is dropped
/// (`Ok`): writes `first` and then queued frames in batches, and forwards
/// reads to `events` (or discards them: replicas never answer on a peer's
/// outbound link).
pub(crate) async fn pump(
    stream: &mut TcpStream,
    inbox: &mut Inbox,
    first: Option<Vec<u8>>,
    events: &Events,
) -> io::Result<()> {
    let (mut reader, mut writer) = stream.split();
    let mut chunk = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut batch = VecDeque::new();
    if let Some(first) = first {
        write_batch(&mut writer, inbox, first, &mut batch).await?;
    }
    loop {
        tokio::select! {
            frame = inbox.rx.recv() => {
                let Some(frame) = frame else { return Ok(()) };
                write_batch(&mut writer, inbox, frame, &mut batch).await?;
            }
            read = reader.read_buf(&mut chunk) => {
                if read? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                if let Some((tx, key)) = events {
                    let bytes = std::mem::replace(&mut chunk, Vec::with_capacity(READ_CHUNK_BYTES));
                    // The owner is gone only during shutdown.
                    if tx.send(LinkEvent::Data { key: *key, bytes }).await.is_err() {
                        return Ok(());
                    }
                } else {
                    chunk.clear();
                }
            }
        }
    }
}

/// Writes `first` and whatever else is queued, up to [`BATCH_BYTES_MAX`],
/// in as few syscalls as the kernel allows. `batch` is scratch space, empty
/// on entry and on return.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    inbox: &mut Inbox,
    first: Vec<u8>,
    batch: &mut VecDeque<Vec<u8>>,
) -> io::Result<()> {
    debug_assert!(batch.is_empty(), "the scratch batch starts empty");
    let mut bytes = first.len();
    batch.push_back(first);
    while bytes < BATCH_BYTES_MAX {
        let Ok(frame) = inbox.rx.try_recv() else {
            break;
        };
        bytes += frame.len();
        batch.push_back(frame);
    }
    let result = write_frames(writer, batch).await;
    // Written or lost with the connection: the bytes leave the bound.
    inbox.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    batch.clear();
    result
}

/// Serves an accepted connection until it fails, then reports the failure.
/// Ends quietly when its outbox is dropped (the node closed it).
pub(crate) async fn run_inbound(mut stream: TcpStream, mut inbox: Inbox, events: Events) {
    let Err(error) = pump(&mut stream, &mut inbox, None, &events).await else {
        return;
    };
    if let Some((tx, key)) = events {
        // The owner is gone only during shutdown.
        let _ = tx.send(LinkEvent::Closed { key, error }).await;
    }
}

/// Counters that outbound link tasks share with their owner.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    /// Connections opened after an earlier one to the same address failed.
    pub(crate) reconnects: AtomicU64,
    /// Connect attempts that failed or timed out.
    pub(crate) connect_failures: AtomicU64,
    /// Frames discarded because their connection failed.
    pub(crate) frames_dropped_disconnected: AtomicU64,
}

/// Exponential backoff between connection attempts to one address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

/// Bumped by a replica each time it accepts a connection: a peer that
/// restarted connects to the others as soon as it has something to say, so
/// a link waiting out its backoff to a peer may try again at once. Peers are
/// not told apart (an accepted connection does not say who opened it), so
/// every waiting link tries again; [`Backoff::min`] still spaces attempts.
pub(crate) type Accepted = watch::Receiver<u64>;

/// Waits until `at`, or, sooner, until `accepted` changes and `early` has
/// come. Returns whether it was woken early.
async fn wait_retry(at: Instant, early: Instant, accepted: &mut Option<Accepted>) -> bool {
    let Some(accepted) = accepted else {
        tokio::time::sleep_until(at).await;
        return false;
    };
    tokio::select! {
        () = tokio::time::sleep_until(at) => false,
        // An error means the replica is gone: then only the sleep ends it.
        Ok(()) = accepted.changed() => {
            tokio::time::sleep_until(early.min(at)).await;
            true
        }
    }
}

/// An outbound connection to `address`, opened when the first frame is
/// queued and re-opened after a failure, no sooner than the backoff allows,
/// or than [`Backoff::min`] after the failure once `accepted` changes.
/// Ends when the outbox is dropped.
pub(crate) async fn run_outbound(
    address: SocketAddr,
    mut inbox: Inbox,
    events: Events,
    backoff: Backoff,
    counters: Arc<LinkCounters>,
    mut accepted: Option<Accepted>,
) {
    let mut delay = backoff.min;
    // When to try again, and when to at the earliest if woken.
    let mut retry_at: Option<(Instant, Instant)> = None;
    loop {
        // On demand: wait for something to send before connecting.
        let Some(first) = inbox.rx.recv().await else {
            return;
        };
        if let Some((at, early)) = retry_at {
            if wait_retry(at, early, &mut accepted).await {
                // The peer may be back: start the backoff over.
                delay = backoff.min;
            }
        }
        let error = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(mut stream)) => {
                if retry_at.is_some() {
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                let connected_at = Instant::now();
                // Frames are small and latency-bound; batching is ours to do.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%address, %error, "set_nodelay failed");
                }
                match pump(&mut stream, &mut inbox, Some(first), &events).await {
                    Ok(()) => return,
                    Err(error) => {
                        // A connection that lived a while was healthy: start
                        // the backoff over. One that dies at once (a peer
                        // refusing connections) keeps backing off.
                        if connected_at.elapsed() >= backoff.max {
                            delay = backoff.min;
                        }
                        tracing::info!(%address, %error, "connection lost");
                        error
                    }
                }
            }
            failed => {
                // The frame that asked for the connection goes down with it.
                inbox.queued_bytes.fetch_sub(first.len(), Ordering::AcqRel);
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                counters
                    .frames_dropped_disconnected
                    .fetch_add(1, Ordering::Relaxed);
                let error = match failed {
                    Ok(Err(error)) => error,
                    _ => io::ErrorKind::TimedOut.into(),
                };
                tracing::info!(%address, %error, "connect failed");
                error
            }
        };
        let dropped = inbox.discard();
        counters
            .frames_dropped_disconnected
            .fetch_add(dropped, Ordering::Relaxed);
        if let Some((tx, key)) = &events {
            if tx
                .send(LinkEvent::Closed { key: *key, error })
                .await
                .is_err()
            {
                return;
            }
        }
        // Connections accepted before this failure say nothing of the peer.
        if let Some(accepted) = &mut accepted {
            accepted.borrow_and_update();
        }
        let now = Instant::now();
        retry_at = Some((now + delay, now + backoff.min));
        delay = (delay * 2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_drops_frames_beyond_the_bound() {
        let (outbox, mut inbox) = queue(100);
        assert_eq!(outbox.push(vec![0; 60]), Ok(()));
        assert_eq!(
            outbox.push(vec![0; 60]),
            Err(PushError::Full),
            "60 + 60 > 100"
        );
        assert_eq!(outbox.push(vec![0; 40]), Ok(()));
        assert_eq!(inbox.discard(), 2);
        assert_eq!(inbox.queued_bytes.load(Ordering::Acquire), 0);
        assert_eq!(
            outbox.push(vec![0; 500]),
            Ok(()),
            "an empty queue takes any frame"
        );
        drop(inbox);
        assert_eq!(outbox.push(vec![0; 1]), Err(PushError::Closed));
    }

    /// Opened on demand, re-opened after a failure once the backoff allows.
    #[tokio::test]
    async fn outbound_link_reconnects_after_a_failure() {
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let (outbox, inbox) = queue(1 << 20);
        let counters = Arc::new(LinkCounters::default());
        let backoff = Backoff {
            min: Duration::from_millis(5),
            max: Duration::from_millis(20),
        };
        tokio::spawn(run_outbound(
            address,
            inbox,
            None,
            backoff,
            counters.clone(),
            None,
        ));
        // Nothing listens yet: the connect fails and the frame is dropped.
        outbox.push(b"lost".to_vec()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while counters.connect_failures.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the connect was attempted");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        outbox.push(b"found".to_vec()).unwrap();
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(2), listener.accept())
            .await
            .expect("the link reconnects")
            .unwrap();
        let mut got = [0u8; 5];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"found");
        assert_eq!(counters.reconnects.load(Ordering::Relaxed), 1);
        assert_eq!(
            counters.frames_dropped_disconnected.load(Ordering::Relaxed),
            1
        );
    }

    /// A link backing off from a peer that is down tries again as soon as
    /// the replica accepts a connection (the restarted peer connecting to
    /// it), instead of waiting out a backoff grown to a second (issue 18,
    /// item 8).
    #[tokio::test]
    async fn an_accepted_connection_cuts_the_backoff_short() {
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let (outbox, inbox) = queue(1 << 20);
        let counters = Arc::new(LinkCounters::default());
        let backoff = Backoff {
            min: Duration::from_millis(2),
            max: Duration::from_secs(60),
        };
        let (accepted_tx, accepted_rx) = watch::channel(0u64);
        tokio::spawn(run_outbound(
            address,
            inbox,
            None,
            backoff,
            counters.clone(),
            Some(accepted_rx),
        ));
        // Ten failed connects: 2 + 4 + ... + 512 ms of waiting between
        // them, and the next attempt is due 1024 ms after the last.
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.connect_failures.load(Ordering::Relaxed) < 10 {
            assert!(Instant::now() < deadline, "the connects were attempted");
            let _ = outbox.push(b"lost".to_vec());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        outbox.push(b"found".to_vec()).unwrap();
        accepted_tx.send_modify(|n| *n += 1);
        let (mut stream, _) = tokio::time::timeout(Duration::from_millis(400), listener.accept())
            .await
            .expect("the link reconnects without waiting out its backoff")
            .unwrap();
        let mut got = [0u8; 5];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"found");
    }

    #[tokio::test]
    async fn write_frames_survives_partial_writes() {
        // A 7-byte pipe forces many partial writes that split frames.
        let (mut a, mut b) = tokio::io::duplex(7);
        let frames: Vec<Vec<u8>> = (0u8..20).map(|i| vec![i; usize::from(i) + 1]).collect();
        let expected: Vec<u8> = frames.concat();
        let mut batch: VecDeque<_> = frames.into_iter().collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0; expected.len()];
            b.read_exact(&mut got).await.map(|_| got == expected)
        });
        write_frames(&mut a, &mut batch).await.unwrap();
        assert!(batch.is_empty());
        assert!(
            reader.await.unwrap().unwrap(),
            "bytes arrive whole and in order"
        );
    }
}
