//! One TCP connection: a receive buffer, a send buffer, and the
//! non-blocking read and write loops the replica and client loops share.
//! The node bounds what is queued (it is told of every write); this only
//! moves bytes.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use vr_core::node::{Closed, ConnectionId};

/// Reads per readiness event before yielding to other connections: under a
/// peer that sends without pause, draining until `WouldBlock` could starve
/// everyone else.
const READS_MAX: usize = 16;

/// What happened when a connection was read.
pub(crate) enum ReadOutcome {
    /// Drained until the socket would block; the connection is fine.
    Drained,
    /// Read `READS_MAX` times and there may be more: come back soon.
    MoreLater,
    /// The connection ended, or sent what the node rejected.
    Closed(Closed, Option<io::Error>),
}

/// A connection and its buffers.
pub(crate) struct Conn {
    pub(crate) id: ConnectionId,
    pub(crate) stream: TcpStream,
    /// Outbound connections start unconnected; inbound ones are connected.
    pub(crate) connected: bool,
    /// Received bytes not yet consumed as whole frames: at most one frame
    /// (bounded by the decoder's frame size limit) plus one read.
    inbox: Vec<u8>,
    /// Frames queued, back to back; `sent` bytes of it are written.
    outbox: Vec<u8>,
    sent: usize,
}

impl Conn {
    pub(crate) fn new(id: ConnectionId, stream: TcpStream, connected: bool) -> Conn {
        Conn {
            id,
            stream,
            connected,
            inbox: Vec::new(),
            outbox: Vec::new(),
            sent: 0,
        }
    }

    /// Queues a frame.
    pub(crate) fn queue(&mut self, frame: &[u8]) {
        self.outbox.extend_from_slice(frame);
    }

    pub(crate) fn has_queued(&self) -> bool {
        self.sent < self.outbox.len()
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
    /// buffered bytes to `consume` (the node's `handle_bytes`), which
    /// returns how many it used (whole frames) or rejects them. `scratch`
    /// is the loop's shared read buffer.
    pub(crate) fn read<E>(
        &mut self,
        scratch: &mut [u8],
        mut consume: impl FnMut(&[u8]) -> Result<usize, E>,
    ) -> ReadOutcome {
        for _ in 0..READS_MAX {
            let n = match self.stream.read(scratch) {
                Ok(0) if self.inbox.is_empty() => return ReadOutcome::Closed(Closed::Eof, None),
                Ok(0) => return ReadOutcome::Closed(Closed::EofMidFrame, None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return ReadOutcome::Closed(Closed::Failed, Some(e)),
            };
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
            if result.is_err() {
                return ReadOutcome::Closed(Closed::Rejected, None);
            }
        }
        ReadOutcome::MoreLater
    }

    /// Writes what is queued until it is all out or the socket would block
    /// (the next writable event resumes), reporting each write to
    /// `written`: one `write` carries every frame queued since the last.
    pub(crate) fn flush(&mut self, mut written: impl FnMut(usize)) -> io::Result<()> {
        while self.connected && self.has_queued() {
            match self.stream.write(&self.outbox[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    written(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.outbox.len() {
            self.outbox.clear();
            self.sent = 0;
        } else if self.sent > self.outbox.len() / 2 {
            // Keep the buffer from growing under a slow reader.
            self.outbox.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}
