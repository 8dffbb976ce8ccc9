//! One TCP connection: a bounded outgoing queue and the loop that moves
//! bytes both ways. Shared by replicas and clients; what the bytes mean is
//! the caller's `on_bytes`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;

use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use vr_core::codec::DecodeError;

use crate::sync::Notify;

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Frames waiting to be written to one connection, bounded in bytes.
pub(crate) struct Outbox {
    frames: RefCell<VecDeque<Vec<u8>>>,
    bytes: Cell<usize>,
    bytes_max: usize,
    /// Wakes the connection's task when a frame is queued.
    pub(crate) queued: Notify,
    /// What has gone out on the socket so far.
    pub(crate) written: Cell<Written>,
}

/// Traffic written to one socket.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Written {
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    /// Write calls, each with every frame queued at the time.
    pub(crate) writes: u64,
}

impl Outbox {
    pub(crate) fn new(bytes_max: usize) -> Outbox {
        Outbox {
            frames: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            bytes_max,
            queued: Notify::default(),
            written: Cell::new(Written::default()),
        }
    }

    /// Queues `frame`; returns false, dropping it, when the queue is full.
    /// VR resends whatever matters, so a dropped frame costs a timeout, not
    /// correctness, while an unbounded queue to a slow peer costs memory.
    pub(crate) fn push(&self, frame: Vec<u8>) -> bool {
        let bytes = self.bytes.get() + frame.len();
        if bytes > self.bytes_max {
            return false;
        }
        self.bytes.set(bytes);
        self.frames.borrow_mut().push_back(frame);
        self.queued.notify();
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.get() == 0
    }

    /// Drops everything queued and returns how many frames that was.
    pub(crate) fn clear(&self) -> usize {
        self.bytes.set(0);
        std::mem::take(&mut *self.frames.borrow_mut()).len()
    }

    /// Moves every queued frame to the end of `buffer`, so that they go out
    /// in one write.
    /// Returns how many frames that was.
    fn take_into(&self, buffer: &mut Vec<u8>) -> u64 {
        let mut frames = self.frames.borrow_mut();
        let count = frames.len() as u64;
        for frame in frames.drain(..) {
            buffer.extend_from_slice(&frame);
        }
        self.bytes.set(0);
        count
    }
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum Closed {
    /// The other end closed it, leaving `partial_bytes` of an incomplete
    /// frame unread.
    Eof { partial_bytes: usize },
    /// Reading or writing failed.
    Io(io::Error),
    /// `on_bytes` rejected what arrived.
    BadInput(DecodeError),
}

/// Writes what `outbox` holds and hands what arrives to `on_bytes`, which
/// consumes whole frames and returns how many bytes it used, until the
/// connection fails or `on_bytes` rejects its input.
///
/// One task does both directions: the read is raced against new frames in
/// the queue, and a read that loses the race is simply dropped (glommio reads
/// from the socket only inside a poll, so no data is lost). Writes take
/// priority, so that replies flow even under a flood of requests.
pub(crate) async fn run_connection(
    stream: &mut TcpStream,
    outbox: &Outbox,
    mut on_bytes: impl FnMut(&[u8]) -> Result<usize, DecodeError>,
) -> Closed {
    let mut read_buffer = vec![0; READ_CHUNK_BYTES];
    let mut filled = 0;
    let mut write_buffer = Vec::new();
    loop {
        let frames = outbox.take_into(&mut write_buffer);
        if frames > 0 {
            if let Err(error) = stream.write_all(&write_buffer).await {
                return Closed::Io(error);
            }
            let written = outbox.written.get();
            outbox.written.set(Written {
                frames: written.frames + frames,
                bytes: written.bytes + write_buffer.len() as u64,
                writes: written.writes + 1,
            });
            write_buffer.clear();
            continue;
        }
        // The decoder rejects a header announcing more than the frame limit
        // before its body arrives, so `filled` stays below that limit and the
        // buffer below it plus one chunk.
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
            Some(Ok(0)) => {
                return Closed::Eof {
                    partial_bytes: filled,
                }
            }
            Some(Ok(n)) => filled += n,
            Some(Err(error)) => return Closed::Io(error),
        }
        match on_bytes(&read_buffer[..filled]) {
            Ok(used) => {
                debug_assert!(used <= filled, "on_bytes used more than it was given");
                read_buffer.copy_within(used..filled, 0);
                filled -= used;
            }
            Err(error) => return Closed::BadInput(error),
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
    use super::*;

    /// Frames queued before the task gets to write leave in one write: the
    /// coalescing that the replica's Prepares and replies rely on when they
    /// come out of one flush of the node.
    #[test]
    fn frames_queued_together_leave_in_one_write() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 * 1024)
            .make()
            .expect("a glommio executor");
        executor.run(async {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            let outbox = std::rc::Rc::new(Outbox::new(1 << 20));
            for frame in 0..3u8 {
                assert!(outbox.push(vec![frame; 100]));
            }
            let writer = glommio::spawn_local({
                let outbox = outbox.clone();
                async move {
                    let mut stream = TcpStream::connect(address).await.unwrap();
                    run_connection(&mut stream, &outbox, |bytes| Ok(bytes.len())).await
                }
            });
            let mut peer = listener.accept().await.unwrap();
            let mut received = vec![0; 300];
            peer.read_exact(&mut received).await.unwrap();
            assert_eq!(&received[200..], &[2; 100][..]);
            drop(peer);
            let closed = writer.await;
            assert!(matches!(closed, Closed::Eof { .. } | Closed::Io(_)));
            let written = outbox.written.get();
            assert_eq!((written.frames, written.writes), (3, 1));
        });
    }
}
