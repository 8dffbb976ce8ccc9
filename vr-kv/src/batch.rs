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
//! u8  format = 2
//! u64 time: the wall clock (ms since the Unix epoch) of the node that
//!     built the operation; the store's log time becomes
//!     max(log time, time) (docs/kv.md, "Key expiry")
//! u32 entry count
//! per entry:    u8 kind
//!   kind 0, a command:      u32 argument count (at least 1, the name)
//!                           per argument: u32 length, then the bytes
//!   kind 1, a transaction (MULTI ... EXEC):
//!                           u32 watched key count, per key: u64 the
//!                               store's write sequence when its WATCH
//!                               was taken, u32 length, then the bytes
//!                           u32 command count, per command as kind 0
//! ```
//!
//! Format 1 (the same without time and kinds: a u32 command count, then
//! commands) is still read, with time 0 (the log time stays).
//!
//! # Result
//!
//! ```text
//! u8  format = 3 (replies)
//! u64 the store's write sequence after the operation (for WATCH)
//! u32 reply count (one per entry, in order)
//! per reply:    u32 length, then that many bytes of one RESP2 reply
//! ```
//!
//! Format 1 (the same without the sequence) is still read. For an
//! operation that does not decode (our own server never sends one, but
//! the service must answer any bytes without panicking):
//!
//! ```text
//! u8  format = 2 (rejected)
//! the rest: a UTF-8 message saying why
//! ```
//!
//! Each reply is length-prefixed, not just concatenated, so a server can
//! split the result per command without a RESP reply parser. A retired
//! format number is never reused.

use core::fmt;

use crate::resp::Reply;

/// Format byte of an operation: a batch of commands (no time; still read).
pub const OP_FORMAT_BATCH: u8 = 1;
/// Format byte of an operation: a time and a batch of entries.
pub const OP_FORMAT_TIMED: u8 = 2;
/// Format byte of a result: one RESP reply per command (still read).
pub const RESULT_FORMAT_REPLIES: u8 = 1;
/// Format byte of a result: the write sequence and one reply per entry.
pub const RESULT_FORMAT_SEQ_REPLIES: u8 = 3;
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

/// One entry of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A command.
    Command(Args),
    /// `MULTI ... EXEC`: runs as a whole, or not at all if a watched key
    /// changed after it was watched.
    Transaction {
        /// The keys the connection watched, each with the store's write
        /// sequence when its `WATCH` was taken.
        watched: Vec<(u64, Vec<u8>)>,
        /// The queued commands.
        commands: Vec<Args>,
    },
}

/// An operation: the time it was stamped with and its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The submitting node's wall clock, ms since the Unix epoch; 0 for
    /// none.
    pub time_ms: u64,
    /// The entries, run in order.
    pub entries: Vec<Entry>,
}

impl Batch {
    /// The commands of a batch made of plain commands, as the format-1
    /// API returned them; a transaction's commands come flattened.
    pub fn commands(&self) -> Vec<Args> {
        let mut out = Vec::new();
        for entry in &self.entries {
            match entry {
                Entry::Command(args) => out.push(args.clone()),
                Entry::Transaction { commands, .. } => out.extend(commands.iter().cloned()),
            }
        }
        out
    }
}

/// The size [`encode_batch`] will produce for `commands`, so a server can
/// check a batch against `vr_core::Config::op_size_max` before building it.
pub fn encoded_batch_len(commands: &[Args]) -> usize {
    BATCH_HEADER_LEN
        + commands
            .iter()
            .map(|args| encoded_command_len(args))
            .sum::<usize>()
}

/// The bytes of a batch before its first entry: the format, the time and
/// the count.
pub const BATCH_HEADER_LEN: usize = 1 + 8 + 4;

/// The bytes one command adds to a batch, so that a server growing a batch
/// command by command can keep its size without encoding it again.
pub fn encoded_command_len(args: &[Vec<u8>]) -> usize {
    1 + args_len(args)
}

fn args_len(args: &[Vec<u8>]) -> usize {
    4 + args.iter().map(|arg| 4 + arg.len()).sum::<usize>()
}

/// The bytes one entry adds to a batch.
pub fn encoded_entry_len(entry: &Entry) -> usize {
    match entry {
        Entry::Command(args) => encoded_command_len(args),
        Entry::Transaction { watched, commands } => {
            1 + 4
                + watched.iter().map(|(_, k)| 8 + 4 + k.len()).sum::<usize>()
                + 4
                + commands.iter().map(|c| args_len(c)).sum::<usize>()
        }
    }
}

/// Encodes commands as one operation with no time (the log time stays).
///
/// # Panics
///
/// If a command is empty (skip those, as [`crate::resp::parse_command`]
/// says), or if a count or an argument length exceeds `u32::MAX`, which
/// [`crate::resp::Limits`] rules out for anything parsed from a client (and
/// which no VR operation could carry anyway).
pub fn encode_batch(commands: &[Args]) -> Vec<u8> {
    encode_op(&Batch {
        time_ms: 0,
        entries: commands.iter().cloned().map(Entry::Command).collect(),
    })
}

/// Encodes a batch as one operation. Panics as [`encode_batch`].
pub fn encode_op(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(OP_FORMAT_TIMED);
    out.extend_from_slice(&batch.time_ms.to_le_bytes());
    put_len(&mut out, batch.entries.len());
    for entry in &batch.entries {
        match entry {
            Entry::Command(args) => {
                out.push(0);
                put_args(&mut out, args);
            }
            Entry::Transaction { watched, commands } => {
                out.push(1);
                put_len(&mut out, watched.len());
                for (seq, key) in watched {
                    out.extend_from_slice(&seq.to_le_bytes());
                    put_len(&mut out, key.len());
                    out.extend_from_slice(key);
                }
                put_len(&mut out, commands.len());
                for args in commands {
                    put_args(&mut out, args);
                }
            }
        }
    }
    debug_assert_eq!(
        out.len(),
        BATCH_HEADER_LEN + batch.entries.iter().map(encoded_entry_len).sum::<usize>()
    );
    out
}

fn put_args(out: &mut Vec<u8>, args: &[Vec<u8>]) {
    assert!(!args.is_empty(), "a command has at least its name");
    put_len(out, args.len());
    for arg in args {
        put_len(out, arg.len());
        out.extend_from_slice(arg);
    }
}

/// Decodes an operation made by [`encode_batch`] or [`encode_op`] (or
/// format 1).
///
/// Total and bounded: any bytes give a batch or an error, and no count read
/// from the input reserves more than the remaining input could fill.
pub fn decode_op(op: &[u8]) -> Result<Batch, BatchError> {
    let mut r = Reader { buf: op, pos: 0 };
    let format = r.u8()?;
    let time_ms = match format {
        OP_FORMAT_BATCH => 0,
        OP_FORMAT_TIMED => r.u64()?,
        other => return Err(BatchError::UnknownFormat(other)),
    };
    let count = r.u32()?;
    // An entry takes at least 9 bytes (kind, argument count, one length).
    let mut entries = Vec::with_capacity(count.min(r.remaining() / 9));
    for _ in 0..count {
        let kind = if format == OP_FORMAT_BATCH {
            0
        } else {
            r.u8()?
        };
        match kind {
            0 => entries.push(Entry::Command(read_args(&mut r)?)),
            1 => {
                let n = r.u32()?;
                let mut watched = Vec::with_capacity(n.min(r.remaining() / 12));
                for _ in 0..n {
                    let seq = r.u64()?;
                    let len = r.u32()?;
                    watched.push((seq, r.bytes(len)?.to_vec()));
                }
                let n = r.u32()?;
                let mut commands = Vec::with_capacity(n.min(r.remaining() / 8));
                for _ in 0..n {
                    commands.push(read_args(&mut r)?);
                }
                entries.push(Entry::Transaction { watched, commands });
            }
            other => return Err(BatchError::UnknownFormat(other)),
        }
    }
    if r.remaining() != 0 {
        return Err(BatchError::TrailingBytes);
    }
    Ok(Batch { time_ms, entries })
}

fn read_args(r: &mut Reader<'_>) -> Result<Args, BatchError> {
    let argc = r.u32()?;
    if argc == 0 {
        return Err(BatchError::EmptyCommand);
    }
    let mut args = Vec::with_capacity(argc.min(r.remaining() / 4));
    for _ in 0..argc {
        let len = r.u32()?;
        args.push(r.bytes(len)?.to_vec());
    }
    Ok(args)
}

/// Decodes an operation into its commands (a transaction's flattened):
/// see [`decode_op`].
pub fn decode_batch(op: &[u8]) -> Result<Vec<Args>, BatchError> {
    decode_op(op).map(|batch| batch.commands())
}

/// Encodes the replies to a batch, one per command, in order.
///
/// A reply whose encoding exceeds `u32::MAX` bytes (an `MGET` of several
/// huge values) is replaced by an error reply; this depends only on the
/// state, so every replica makes the same choice.
pub fn encode_results(replies: &[Reply]) -> Vec<u8> {
    encode_results_at(0, replies)
}

/// Encodes the replies to a batch and the store's write sequence after it.
pub fn encode_results_at(seq: u64, replies: &[Reply]) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(RESULT_FORMAT_SEQ_REPLIES);
    out.extend_from_slice(&seq.to_le_bytes());
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
        format @ (RESULT_FORMAT_REPLIES | RESULT_FORMAT_SEQ_REPLIES) => {
            if format == RESULT_FORMAT_SEQ_REPLIES {
                r.u64()?;
            }
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

/// The write sequence a result carries (format 3), if any.
pub fn result_seq(result: &[u8]) -> Option<u64> {
    if result.first() != Some(&RESULT_FORMAT_SEQ_REPLIES) {
        return None;
    }
    Some(u64::from_le_bytes(result.get(1..9)?.try_into().ok()?))
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

    fn u64(&mut self) -> Result<u64, BatchError> {
        let bytes: [u8; 8] = self.bytes(8)?.try_into().expect("bytes(8) is 8 bytes");
        Ok(u64::from_le_bytes(bytes))
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
