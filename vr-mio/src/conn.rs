//! One TCP connection: a receive buffer, a bounded queue of outgoing frames,
//! and the non-blocking read and write loops that the replica and the client
//! event loops share.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

/// Frames handed to one `write_vectored` call at most. Enough to batch a
/// burst of Prepares or replies into one syscall; the rest goes in the next.
const WRITE_SLICES_MAX: usize = 64;

/// Frames waiting to be written, bounded in bytes.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    frames: VecDeque<Vec<u8>>,
    /// Bytes of the front frame already written.
    front_written: usize,
    /// Bytes queued, not counting `front_written`.
    bytes: usize,
}

impl Outbox {
    /// Queues `frame` unless that would take the queue past `bytes_max`;
    /// returns whether it was queued. An empty queue takes any one frame,
    /// so that a frame larger than the bound still goes out.
    pub(crate) fn push(&mut self, frame: Vec<u8>, bytes_max: usize) -> bool {
        if !self.frames.is_empty() && self.bytes + frame.len() > bytes_max {
            return false;
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes - self.front_written
    }

    /// Marks `written` bytes from the front as sent.
    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.frames.front() else {
                debug_assert!(false, "wrote more than was queued");
                return;
            };
            let left = front.len() - self.front_written;
            if written < left {
                self.front_written += written;
                return;
            }
            written -= left;
            self.bytes -= front.len();
            self.front_written = 0;
            self.frames.pop_front();
        }
    }
}

/// What happened when a connection was read.
pub(crate) enum ReadOutcome {
    /// Drained until the socket would block; the connection is fine.
    Drained,
    /// Read `READS_MAX` times and there may be more: come back soon.
    MoreLater,
    /// The connection must be closed, for this reason.
    Closed(CloseReason),
}

/// Why a connection ends.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// The peer closed; `mid_frame` when it left part of a frame behind.
    Eof { mid_frame: bool },
    /// A socket error.
    Io(io::Error),
    /// The bytes are not frames of this cluster.
    BadInput(vr_core::codec::DecodeError),
}

/// Reads per readiness event before yielding to other connections: under a
/// peer that sends without pause, draining until `WouldBlock` could starve
/// everyone else.
const READS_MAX: usize = 16;

/// A connection and its buffers.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// The peer's address, for logs and stats.
    pub(crate) peer: SocketAddr,
    /// Outbound connections start unconnected; inbound ones are connected.
    pub(crate) connected: bool,
    /// Received bytes not yet consumed as whole frames: at most one frame
    /// (bounded by the decoder's frame size limit) plus one read.
    pub(crate) inbox: Vec<u8>,
    pub(crate) outbox: Outbox,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, connected: bool) -> Conn {
        Conn {
            stream,
            peer,
            connected,
            inbox: Vec::new(),
            outbox: Outbox::default(),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// For an outbound connection: whether the non-blocking connect has
    /// finished (`Ok(true)`), is still going (`Ok(false)`), or failed.
    pub(crate) fn finish_connect(&mut self) -> io::Result<bool> {
        if let Some(error) = self.stream.take_error()? {
            return Err(error);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                // Frames are small and latency matters more than packet count.
                self.stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads what is available (at most `READS_MAX` reads) and hands the
    /// buffered bytes to `consume`, which returns how many it used (whole
    /// frames) or why the connection must close. `scratch` is the loop's
    /// shared read buffer.
    pub(crate) fn read<E>(
        &mut self,
        scratch: &mut [u8],
        mut consume: impl FnMut(&[u8]) -> Result<usize, E>,
        reject: impl Fn(E) -> CloseReason,
    ) -> ReadOutcome {
        for _ in 0..READS_MAX {
            let n = match self.stream.read(scratch) {
                Ok(0) => {
                    let mid_frame = !self.inbox.is_empty();
                    return ReadOutcome::Closed(CloseReason::Eof { mid_frame });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return ReadOutcome::Closed(CloseReason::Io(e)),
            };
            self.bytes_in += n as u64;
            // Decode straight from the scratch buffer when nothing is
            // pending (the common case), and keep only the incomplete tail.
            let result = if self.inbox.is_empty() {
                consume(&scratch[..n]).map(|used| self.inbox.extend_from_slice(&scratch[used..n]))
            } else {
                self.inbox.extend_from_slice(&scratch[..n]);
                consume(&self.inbox).map(|used| {
                    self.inbox.drain(..used);
                })
            };
            if let Err(error) = result {
                return ReadOutcome::Closed(reject(error));
            }
        }
        ReadOutcome::MoreLater
    }

    /// Writes queued frames, several per `write_vectored` call, until the
    /// queue is empty or the socket would block (the next writable event
    /// resumes). Returns the number of write calls made.
    pub(crate) fn flush(&mut self) -> io::Result<u64> {
        let mut writes = 0;
        while self.connected && !self.outbox.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); WRITE_SLICES_MAX];
                let mut count = 0;
                for (i, frame) in self.outbox.frames.iter().take(WRITE_SLICES_MAX).enumerate() {
                    let start = if i == 0 { self.outbox.front_written } else { 0 };
                    slices[i] = IoSlice::new(&frame[start..]);
                    count += 1;
                }
                self.stream.write_vectored(&slices[..count])
            };
            writes += 1;
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.bytes_out += n as u64;
                    self.outbox.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_is_bounded_but_takes_one_oversized_frame() {
        let mut outbox = Outbox::default();
        assert!(
            outbox.push(vec![0; 100], 10),
            "an empty queue takes any frame"
        );
        assert!(!outbox.push(vec![0; 1], 10), "over the bound: dropped");
        assert_eq!(outbox.bytes(), 100);
    }

    #[test]
    fn outbox_consumes_across_frames() {
        let mut outbox = Outbox::default();
        for len in [4, 4, 4] {
            assert!(outbox.push(vec![0; len], 100));
        }
        outbox.consume(6);
        assert_eq!(outbox.bytes(), 6);
        assert_eq!(outbox.frames.len(), 2);
        assert_eq!(outbox.front_written, 2);
        outbox.consume(6);
        assert!(outbox.is_empty());
    }
}
