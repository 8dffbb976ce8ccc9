//! The replicated operation (a batch of commands) and its result (a batch of
//! RESP replies), as bytes.
//!
//! A batch lets the commands one connection pipelines travel as one VR
//! operation: one log entry, one prepare round, one reply.
//!
//! # Operation
//!
//! All integers are little-endian and fixed width.
//!
//! ```text
//! u8  format = 1
//! u32 command count
//! per command:  u32 argument count (at least 1, the name)
//!               per argument: u32 length, then that many bytes
//! ```
//!
//! # Result
//!
//! ```text
//! u8  format = 1 (replies)
//! u32 reply count (one per command, in order)
//! per reply:    u32 length, then that many bytes of one RESP2 reply
//! ```
//!
//! or, for an operation that does not decode (our own server never sends
//! one, but the service must answer any bytes without panicking):
//!
//! ```text
//! u8  format = 2 (rejected)
//! the rest: a UTF-8 message saying why
//! ```
//!
//! Each reply is length-prefixed, not just concatenated, so a server can
//! split the result per command without a RESP reply parser (for example
//! if it ever batches several connections into one operation).
//!
//! The leading format byte leaves room for a later format (say, one where
//! the primary stamps a time for key expiry). A retired format number is
//! never reused.

use core::fmt;

use crate::resp::Reply;

/// Format byte of an operation: a batch of commands.
pub const OP_FORMAT_BATCH: u8 = 1;
/// Format byte of a result: one RESP reply per command.
pub const RESULT_FORMAT_REPLIES: u8 = 1;
/// Format byte of a result: the operation did not decode.
pub const RESULT_FORMAT_REJECTED: u8 = 2;

/// A command: its arguments, the name first.
pub type Args = Vec<Vec<u8>>;

/// Why bytes are not a well-formed operation or result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// The bytes end inside a field.
    Truncated,
    /// The format byte is not one this version knows.
    UnknownFormat(u8),
    /// A command has no arguments, not even a name.
    EmptyCommand,
    /// Bytes follow the last command or reply.
    TrailingBytes,
    /// A rejected result whose message is not UTF-8.
    InvalidMessage,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated => f.write_str("truncated"),
            BatchError::UnknownFormat(format) => write!(f, "unknown format {format}"),
            BatchError::EmptyCommand => f.write_str("empty command"),
            BatchError::TrailingBytes => f.write_str("trailing bytes"),
            BatchError::InvalidMessage => f.write_str("message is not UTF-8"),
        }
    }
}

impl std::error::Error for BatchError {}

/// The size [`encode_batch`] will produce for `commands`, so a server can
/// check a batch against `vr_core::Config::op_size_max` before building it.
pub fn encoded_batch_len(commands: &[Args]) -> usize {
    BATCH_HEADER_LEN
        + commands
            .iter()
            .map(|args| encoded_command_len(args))
            .sum::<usize>()
}

/// The bytes of a batch before its first command: the format and the count.
pub const BATCH_HEADER_LEN: usize = 1 + 4;

/// The bytes one command adds to a batch, so that a server growing a batch
/// command by command can keep its size without encoding it again.
pub fn encoded_command_len(args: &[Vec<u8>]) -> usize {
    4 + args.iter().map(|arg| 4 + arg.len()).sum::<usize>()
}

/// Encodes commands as one operation.
///
/// # Panics
///
/// If a command is empty (skip those, as [`crate::resp::parse_command`]
/// says), or if a count or an argument length exceeds `u32::MAX`, which
/// [`crate::resp::Limits`] rules out for anything parsed from a client (and
/// which no VR operation could carry anyway).
pub fn encode_batch(commands: &[Args]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_batch_len(commands));
    out.push(OP_FORMAT_BATCH);
    put_len(&mut out, commands.len());
    for args in commands {
        assert!(!args.is_empty(), "a command has at least its name");
        put_len(&mut out, args.len());
        for arg in args {
            put_len(&mut out, arg.len());
            out.extend_from_slice(arg);
        }
    }
    debug_assert_eq!(out.len(), encoded_batch_len(commands));
    out
}

/// Decodes an operation made by [`encode_batch`].
///
/// Total and bounded: any bytes give a batch or an error, and no count read
/// from the input reserves more than the remaining input could fill.
pub fn decode_batch(op: &[u8]) -> Result<Vec<Args>, BatchError> {
    let mut r = Reader { buf: op, pos: 0 };
    let format = r.u8()?;
    if format != OP_FORMAT_BATCH {
        return Err(BatchError::UnknownFormat(format));
    }
    let count = r.u32()?;
    // A command takes at least 8 bytes (argument count, one length).
    let mut commands = Vec::with_capacity(count.min(r.remaining() / 8));
    for _ in 0..count {
        let argc = r.u32()?;
        if argc == 0 {
            return Err(BatchError::EmptyCommand);
        }
        let mut args = Vec::with_capacity(argc.min(r.remaining() / 4));
        for _ in 0..argc {
            let len = r.u32()?;
            args.push(r.bytes(len)?.to_vec());
        }
        commands.push(args);
    }
    if r.remaining() != 0 {
        return Err(BatchError::TrailingBytes);
    }
    Ok(commands)
}

/// Encodes the replies to a batch, one per command, in order.
///
/// A reply whose encoding exceeds `u32::MAX` bytes (an `MGET` of several
/// huge values) is replaced by an error reply; this depends only on the
/// state, so every replica makes the same choice.
pub fn encode_results(replies: &[Reply]) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(RESULT_FORMAT_REPLIES);
    put_len(&mut out, replies.len());
    for reply in replies {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        reply.encode(&mut out);
        let len = match u32::try_from(out.len() - at - 4) {
            Ok(len) => len,
            Err(_) => {
                out.truncate(at + 4);
                Reply::Error("ERR reply too large".to_owned()).encode(&mut out);
                u32::try_from(out.len() - at - 4).expect("a short error fits in u32")
            }
        };
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    out
}

/// Encodes the result for an operation that did not decode.
pub fn encode_rejected(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + message.len());
    out.push(RESULT_FORMAT_REJECTED);
    out.extend_from_slice(message.as_bytes());
    out
}

/// A decoded result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchResult<'a> {
    /// One RESP2-encoded reply per command, in order, ready to write to the
    /// client. Their RESP is not re-checked here: the store made them.
    Replies(Vec<&'a [u8]>),
    /// The operation was rejected: why.
    Rejected(&'a str),
}

/// Decodes a result made by [`encode_results`] or [`encode_rejected`].
/// Total and bounded, like [`decode_batch`]: results cross the network.
pub fn decode_results(result: &[u8]) -> Result<BatchResult<'_>, BatchError> {
    let mut r = Reader {
        buf: result,
        pos: 0,
    };
    match r.u8()? {
        RESULT_FORMAT_REPLIES => {
            let count = r.u32()?;
            let mut replies = Vec::with_capacity(count.min(r.remaining() / 4));
            for _ in 0..count {
                let len = r.u32()?;
                replies.push(r.bytes(len)?);
            }
            if r.remaining() != 0 {
                return Err(BatchError::TrailingBytes);
            }
            Ok(BatchResult::Replies(replies))
        }
        RESULT_FORMAT_REJECTED => core::str::from_utf8(&result[1..])
            .map(BatchResult::Rejected)
            .map_err(|_| BatchError::InvalidMessage),
        other => Err(BatchError::UnknownFormat(other)),
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("counts and lengths in a batch fit in u32");
    out.extend_from_slice(&len.to_le_bytes());
}

/// A cursor over input that may be anything.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], BatchError> {
        if len > self.remaining() {
            return Err(BatchError::Truncated);
        }
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, BatchError> {
        Ok(self.bytes(1)?[0])
    }

    /// A `u32` length or count, as `usize` (which holds any `u32` on the
    /// targets we build for).
    fn u32(&mut self) -> Result<usize, BatchError> {
        let bytes: [u8; 4] = self.bytes(4)?.try_into().expect("bytes(4) is 4 bytes");
        usize::try_from(u32::from_le_bytes(bytes)).map_err(|_| BatchError::Truncated)
    }
}
