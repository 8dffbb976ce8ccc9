//! The binary wire format: one [`Message`] per frame.
//!
//! The format is fixed-width and little-endian so that a frame's size is
//! known from its header alone (an adapter reads exactly one frame from a
//! stream without parsing the body) and so that encoding is a straight copy
//! into the caller's buffer, with no intermediate allocation.
//!
//! # Header
//!
//! Every frame starts with a fixed [`HEADER_SIZE`]-byte header:
//!
//! | bytes    | field       | notes                                                        |
//! |----------|-------------|--------------------------------------------------------------|
//! | `0..2`   | magic       | [`MAGIC`], `b"VR"`                                           |
//! | `2`      | version     | [`VERSION`], `2`                                             |
//! | `3`      | command     | [`Command`] as `u8`                                          |
//! | `4..8`   | body size   | `u32`: bytes after the header                                |
//! | `8..16`  | cluster id  | `u64`: frames from another cluster are rejected              |
//! | `16..24` | view        | `u64`: [`Message::view`], `0` for a [`Request`]              |
//! | `24..28` | epoch       | `u32`: the sender's epoch (§7); `0` until a reconfiguration   |
//! | `28..32` | checksum    | `u32`: CRC-32 (`crc32fast`) of bytes `0..28`, then the body  |
//!
//! The view sits in the header so that a replica (or a proxy) can drop a
//! stale message without decoding its body. Because it is there, it is *not*
//! repeated in the body: the decoder takes each message's `view` field from
//! the header, which makes a header/body view mismatch impossible by
//! construction.
//!
//! # Body
//!
//! The body holds the message's fields in declaration order (see
//! [`crate::message`]), leaving out the message-level `view`:
//!
//! | type            | encoding                                                   |
//! |-----------------|------------------------------------------------------------|
//! | `u8`            | 1 byte                                                     |
//! | `u64`           | 8 bytes LE                                                 |
//! | `u128`          | 16 bytes LE                                                |
//! | `Vec<u8>`       | `u32` LE length, then the bytes                            |
//! | [`LogEntry`]    | `op_number` u64, `view` u64, `client_id` u128, `request_number` u64, `op` (`u32` length with bit 31 set for a reconfiguration entry, then the bytes) |
//! | `Vec<LogEntry>` | `u32` LE count, then the entries                           |
//! | `CrashVector`   | `u8` count, then `u64` LE each                             |
//! | `Vec<u64>`      | `u32` LE count, then `u64` LE each                         |
//! | `Digest`        | 32 bytes                                                   |
//! | `Vec<Digest>`   | `u32` LE count, then the digests                           |
//! | `CheckpointSummary` | `op_number` u64, `page_count` u64, `service_page_count` u64, `root` |
//! | `Option<T>`     | `u8` 0 (none) or 1 (some), then `T`                        |
//! | `PageChunk`     | `page` u64, `offset` u64, `size` u64, `data` (`Vec<u8>`)   |
//! | `Vec<PageChunk>`| `u32` LE count, then the chunks                            |
//!
//! A [`LogEntry`] therefore takes [`LOG_ENTRY_FIXED_SIZE`] bytes plus its
//! `op`. Per message, after the header:
//!
//! | command           | body                                                               |
//! |-------------------|--------------------------------------------------------------------|
//! | `Request`         | `client_id`, `request_number`, `op`                                |
//! | `Prepare`         | `commit_number`, `timestamp_ns`, `full_commit_min`, `entries` (`Vec<LogEntry>`) |
//! | `PrepareOk`       | `op_number`, `replica`, `timestamp_ns`, `commit_number`, `crash_vector` |
//! | `Commit`          | `commit_number`, `op_number`, `timestamp_ns`, `full_commit_min`    |
//! | `Reply`           | `client_id`, `request_number`, `op_number`, `result`               |
//! | `StartViewChange` | `promised_view`, `replica`, `crash_vector`                         |
//! | `DoViewChange`    | `last_normal_view`, `op_number`, `commit_number`, `log`, `replica`, `crash_vector` |
//! | `StartView`       | `op_number`, `commit_number`, `log`                                |
//! | `GetState`        | `op_number`, `replica`                                             |
//! | `NewState`        | `op_number`, `commit_number`, `log`, `replica`, `checkpoint` (`Option<CheckpointSummary>`), `full_commit_min` |
//! | `Recovery`        | `replica`, `nonce`, `incarnation` (view in the header is 0)        |
//! | `RecoveryResponse`| `nonce`, `status` u8, `op_number`, `commit_number`, `crash_vector`, `replica` |
//! | `GetCheckpointTree` | `root`, `level` u8, `parents` (`Vec<u64>`), `replica`            |
//! | `CheckpointTree`  | `summary`, `level` u8, `parents` (`Vec<u64>`), `digests`, `replica` |
//! | `GetCheckpointPages` | `root`, `pages` (`Vec<u64>`), `offset`, `replica`               |
//! | `CheckpointPages` | `summary`, `chunks`, `replica`                                     |
//! | `ReadRequest`     | `client_id`, `request_number`, `op_number_min`, `op` (view 0)     |
//! | `Reconfiguration` | `client_id`, `request_number`, `epoch` u32, `members` (`Vec<u8>`), `addresses` (`u32` count, then each a `Vec<u8>`) (view 0) |
//! | `StartEpoch`      | `epoch` u32, `op_number`, `entry_view`, `members` (`Vec<u8>`), `addresses`, `sender` u8 |
//! | `EpochStarted`    | `epoch` u32, `member` u8 (view 0)                                 |
//!
//! # Decoding
//!
//! [`decode`] checks the header before it waits for the body, so a stream
//! adapter learns from the first [`HEADER_SIZE`] bytes whether to keep
//! reading (and how much: [`DecodeError::Truncated`]) or to close the
//! connection (a foreign protocol, an oversized frame, another cluster).
//! Decoding never panics, and never allocates more than the input implies:
//! every length and count is checked against the bytes that remain before
//! anything is reserved.

use alloc::vec::Vec;
use core::fmt;

use crate::message::{
    CheckpointPages, CheckpointSummary, CheckpointTree, Command, Commit, CrashVector, Digest,
    DoViewChange, EntryKind, EpochStarted, GetCheckpointPages, GetCheckpointTree, GetState,
    LogEntry, MemberId, Message, NewState, PageChunk, Prepare, PrepareOk, ReadRequest,
    Reconfiguration, Recovery, RecoveryResponse, RecoveryStatus, ReplicaIndex, Reply, Request,
    StartEpoch, StartView, StartViewChange,
};

/// The first two bytes of every frame; a cheap guard against a peer that
/// speaks another protocol (or a stream that lost its framing).
pub const MAGIC: [u8; 2] = *b"VR";

/// The format version this codec writes and the only one it reads. Bumped on
/// any incompatible change, so that mixed-version clusters fail loudly.
pub const VERSION: u8 = 2;

/// Size of the fixed frame header, in bytes.
pub const HEADER_SIZE: usize = 32;

/// Bytes a [`LogEntry`] takes on the wire besides its `op` bytes:
/// `op_number` (8) + `view` (8) + `client_id` (16) + `request_number` (8) +
/// the `op` length (4), whose top bit marks a reconfiguration entry. Exported so that a replica can bound a log suffix to
/// a frame size without encoding it (see [`LogEntry::encoded_size`]).
pub const LOG_ENTRY_FIXED_SIZE: usize = 44;

// Header field offsets (see the module documentation).
const AT_VERSION: usize = 2;
const AT_COMMAND: usize = 3;
const AT_BODY_SIZE: usize = 4;
const AT_CLUSTER: usize = 8;
const AT_VIEW: usize = 16;
const AT_EPOCH: usize = 24;
const AT_CHECKSUM: usize = 28;

/// A frame header, as read from the wire and not validated.
///
/// [`decode`] validates it; [`peek_header`] exposes it to adapters that want
/// to route or drop a frame (by command, cluster or view) before its body
/// has arrived, or without decoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Should be [`MAGIC`].
    pub magic: [u8; 2],
    /// Should be [`VERSION`].
    pub version: u8,
    /// A [`Command`] byte, if the frame is valid.
    pub command: u8,
    /// Bytes after the header.
    pub body_size: u32,
    /// The sender's cluster id.
    pub cluster: u64,
    /// The message's view-number ([`Message::view`]).
    pub view: u64,
    /// The sender's epoch (§7).
    pub epoch: u32,
    /// CRC-32 of header bytes `0..28` followed by the body.
    pub checksum: u32,
}

impl Header {
    /// The whole frame's size (header and body), as the header announces it.
    ///
    /// A `u64` because a `u32` body plus the header may not fit a 32-bit
    /// `usize`.
    pub fn frame_size(&self) -> u64 {
        HEADER_SIZE as u64 + u64::from(self.body_size)
    }

    fn parse(bytes: &[u8; HEADER_SIZE]) -> Header {
        Header {
            magic: [bytes[0], bytes[1]],
            version: bytes[AT_VERSION],
            command: bytes[AT_COMMAND],
            body_size: u32::from_le_bytes(field(bytes, AT_BODY_SIZE)),
            cluster: u64::from_le_bytes(field(bytes, AT_CLUSTER)),
            view: u64::from_le_bytes(field(bytes, AT_VIEW)),
            epoch: u32::from_le_bytes(field(bytes, AT_EPOCH)),
            checksum: u32::from_le_bytes(field(bytes, AT_CHECKSUM)),
        }
    }
}

/// Copies `N` header bytes starting at `at`; the offsets are constants well
/// inside the header, so the slice is always in bounds.
fn field<const N: usize>(bytes: &[u8; HEADER_SIZE], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Reads the header at the start of `bytes` without validating anything;
/// `None` if fewer than [`HEADER_SIZE`] bytes are available.
pub fn peek_header(bytes: &[u8]) -> Option<Header> {
    bytes.first_chunk::<HEADER_SIZE>().map(Header::parse)
}

/// Why [`decode`] rejected its input.
///
/// `Truncated` is the only recoverable error: the caller should read more
/// bytes and try again. Every other error means the bytes are not a frame
/// this replica may accept; on a stream, the framing can no longer be
/// trusted and the connection should be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ends before the frame does. `needed` is the total number of
    /// bytes (from the start of the frame) required to make progress: the
    /// header size while the header is incomplete, then the whole frame size.
    Truncated {
        /// Bytes needed from the start of the frame.
        needed: usize,
    },
    /// The frame does not start with [`MAGIC`].
    BadMagic,
    /// The frame's version is not [`VERSION`].
    UnsupportedVersion(u8),
    /// The header announces a frame larger than the caller accepts. Reported
    /// before the body arrives, so that a peer cannot make us buffer it.
    Oversized {
        /// The frame size the header announces (header included).
        size: u64,
        /// The caller's limit.
        max: usize,
    },
    /// The frame belongs to another cluster.
    WrongCluster {
        /// The caller's cluster id.
        expected: u64,
        /// The frame's cluster id.
        found: u64,
    },
    /// The checksum does not match the header and body: corruption.
    BadChecksum,
    /// The command byte names no [`Command`] (an intact frame from a newer
    /// or foreign peer, since the checksum passed).
    UnknownCommand(u8),
    /// The frame is intact but its contents are inconsistent: lengths past
    /// the end of the body, trailing bytes, a Request with a view.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed } => {
                write!(f, "truncated frame: {needed} bytes needed")
            }
            DecodeError::BadMagic => f.write_str("bad magic"),
            DecodeError::UnsupportedVersion(version) => {
                write!(f, "unsupported version {version}")
            }
            DecodeError::Oversized { size, max } => {
                write!(f, "frame of {size} bytes exceeds the limit of {max}")
            }
            DecodeError::WrongCluster { expected, found } => {
                write!(f, "frame for cluster {found}, expected {expected}")
            }
            DecodeError::BadChecksum => f.write_str("bad checksum"),
            DecodeError::UnknownCommand(command) => write!(f, "unknown command {command}"),
            DecodeError::Malformed(why) => write!(f, "malformed frame: {why}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// The size of the frame [`encode`] would write for `message`, header
/// included, computed from lengths alone.
///
/// Lets a replica keep a message under its frame size bound (e.g. cut a log
/// suffix short) before building it, and lets [`encode`] reserve once.
pub fn encoded_size(message: &Message) -> usize {
    HEADER_SIZE + body_size(message)
}

fn addresses_size(addresses: &[Vec<u8>]) -> usize {
    4 + addresses.iter().map(|a| 4 + a.len()).sum::<usize>()
}

fn body_size(message: &Message) -> usize {
    const U8: usize = 1;
    const U64: usize = 8;
    const U128: usize = 16;
    const LEN: usize = 4;
    const DIGEST: usize = 32;
    const SUMMARY: usize = 3 * U64 + DIGEST;
    fn log_size(log: &[LogEntry]) -> usize {
        LEN + log.iter().map(LogEntry::encoded_size).sum::<usize>()
    }
    fn cv_size(cv: &CrashVector) -> usize {
        U8 + U64 * cv.len()
    }
    match message {
        Message::Request(m) => U128 + U64 + LEN + m.op.len(),
        Message::Prepare(m) => 3 * U64 + log_size(&m.entries),
        Message::PrepareOk(m) => U64 + U8 + 2 * U64 + cv_size(&m.crash_vector),
        Message::Commit(_) => 4 * U64,
        Message::Reply(m) => U128 + 2 * U64 + LEN + m.result.len(),
        Message::ReadRequest(m) => U128 + 2 * U64 + LEN + m.op.len(),
        Message::StartViewChange(m) => U64 + U8 + cv_size(&m.crash_vector),
        Message::DoViewChange(m) => 3 * U64 + log_size(&m.log) + U8 + cv_size(&m.crash_vector),
        Message::StartView(m) => 2 * U64 + log_size(&m.log),
        Message::GetState(_) => U64 + U8,
        Message::NewState(m) => {
            3 * U64 + log_size(&m.log) + U8 + U8 + m.checkpoint.map_or(0, |_| SUMMARY)
        }
        Message::Recovery(_) => U8 + 2 * U64,
        Message::RecoveryResponse(m) => U64 + U8 + 2 * U64 + cv_size(&m.crash_vector) + U8,
        Message::GetCheckpointTree(m) => DIGEST + U8 + LEN + U64 * m.parents.len() + U8,
        Message::CheckpointTree(m) => {
            SUMMARY + U8 + LEN + U64 * m.parents.len() + LEN + DIGEST * m.digests.len() + U8
        }
        Message::GetCheckpointPages(m) => DIGEST + LEN + U64 * m.pages.len() + U64 + U8,
        Message::Reconfiguration(m) => {
            U128 + U64 + 4 + LEN + m.members.len() + addresses_size(&m.addresses)
        }
        Message::StartEpoch(m) => {
            4 + 2 * U64 + LEN + m.members.len() + addresses_size(&m.addresses) + U8
        }
        Message::EpochStarted(_) => 4 + U8,
        Message::CheckpointPages(m) => {
            SUMMARY + LEN + m.chunks.iter().map(PageChunk::encoded_size).sum::<usize>() + U8
        }
    }
}

/// Appends one frame holding `message`, stamped with `cluster`, to `out`.
///
/// The caller owns the buffer so that it can batch frames and reuse the
/// allocation; `out` grows by exactly [`encoded_size`]`(message)` bytes and
/// nothing else is allocated.
///
/// # Panics
///
/// If the body, or one `op`/`result`/`log` in it, exceeds `u32::MAX` bytes
/// (or entries): the format cannot express it. A replica bounds its messages
/// by its frame size limit long before that.
pub fn encode(message: &Message, cluster: u64, out: &mut Vec<u8>) {
    encode_in_epoch(message, cluster, 0, out);
}

/// [`encode`], stamping the header with the sender's `epoch` (§7).
pub fn encode_in_epoch(message: &Message, cluster: u64, epoch: u32, out: &mut Vec<u8>) {
    let body_size = body_size(message);
    let start = out.len();
    out.reserve(HEADER_SIZE + body_size);

    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(message.command() as u8);
    put_u32(out, length(body_size));
    put_u64(out, cluster);
    put_u64(out, message.view());
    put_u32(out, epoch);
    put_u32(out, 0); // checksum, filled in below
    put_body(message, out);
    debug_assert_eq!(out.len() - start, HEADER_SIZE + body_size);

    let frame = &out[start..];
    let sum = checksum(&frame[..AT_CHECKSUM], &frame[HEADER_SIZE..]);
    out[start + AT_CHECKSUM..start + HEADER_SIZE].copy_from_slice(&sum.to_le_bytes());
}

fn checksum(header: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(body);
    hasher.finalize()
}

fn length(len: usize) -> u32 {
    u32::try_from(len).expect("length exceeds the wire format's u32")
}

fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u128(out: &mut Vec<u8>, value: u128) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, length(bytes.len()));
    out.extend_from_slice(bytes);
}

/// Member ids travel as a byte string, one byte each (the format predates
/// the [`MemberId`] type and must not change).
fn put_members(out: &mut Vec<u8>, members: &[MemberId]) {
    put_u32(out, length(members.len()));
    out.extend(members.iter().map(|m| m.0));
}

fn put_entry(out: &mut Vec<u8>, entry: &LogEntry) {
    put_u64(out, entry.op_number);
    put_u64(out, entry.view);
    put_u128(out, entry.client_id);
    put_u64(out, entry.request_number);
    // The kind rides in the top bit of the op's length, so that operation
    // entries encode as they did before reconfiguration existed.
    let len = length(entry.op.len());
    assert!(len <= OP_LENGTH_MASK, "op length exceeds 2^31 - 1");
    let kind = match entry.kind {
        EntryKind::Operation => 0,
        EntryKind::Reconfiguration => RECONFIGURATION_BIT,
    };
    put_u32(out, len | kind);
    out.extend_from_slice(&entry.op);
}

/// In a log entry's op length: set for a reconfiguration entry.
const RECONFIGURATION_BIT: u32 = 1 << 31;
/// In a log entry's op length: the length itself.
const OP_LENGTH_MASK: u32 = RECONFIGURATION_BIT - 1;

fn put_addresses(out: &mut Vec<u8>, addresses: &[Vec<u8>]) {
    put_u32(out, length(addresses.len()));
    for address in addresses {
        put_bytes(out, address);
    }
}

fn put_crash_vector(out: &mut Vec<u8>, cv: &CrashVector) {
    put_u8(out, u8::try_from(cv.len()).expect("at most 255 replicas"));
    for &incarnation in cv {
        put_u64(out, incarnation);
    }
}

fn put_u64s(out: &mut Vec<u8>, values: &[u64]) {
    put_u32(out, length(values.len()));
    for &value in values {
        put_u64(out, value);
    }
}

fn put_summary(out: &mut Vec<u8>, summary: &CheckpointSummary) {
    put_u64(out, summary.op_number);
    put_u64(out, summary.page_count);
    put_u64(out, summary.service_page_count);
    out.extend_from_slice(&summary.root);
}

fn put_log(out: &mut Vec<u8>, log: &[LogEntry]) {
    put_u32(out, length(log.len()));
    for entry in log {
        put_entry(out, entry);
    }
}

/// Writes the body: every field in declaration order except the
/// message-level `view`, which the header carries.
fn put_body(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::Request(m) => {
            put_u128(out, m.client_id);
            put_u64(out, m.request_number);
            put_bytes(out, &m.op);
        }
        Message::Prepare(m) => {
            put_u64(out, m.commit_number);
            put_u64(out, m.timestamp_ns);
            put_u64(out, m.full_commit_min);
            put_log(out, &m.entries);
        }
        Message::PrepareOk(m) => {
            put_u64(out, m.op_number);
            put_u8(out, m.replica.0);
            put_u64(out, m.timestamp_ns);
            put_u64(out, m.commit_number);
            put_crash_vector(out, &m.crash_vector);
        }
        Message::Commit(m) => {
            put_u64(out, m.commit_number);
            put_u64(out, m.op_number);
            put_u64(out, m.timestamp_ns);
            put_u64(out, m.full_commit_min);
        }
        Message::Reply(m) => {
            put_u128(out, m.client_id);
            put_u64(out, m.request_number);
            put_u64(out, m.op_number);
            put_bytes(out, &m.result);
        }
        Message::ReadRequest(m) => {
            put_u128(out, m.client_id);
            put_u64(out, m.request_number);
            put_u64(out, m.op_number_min);
            put_bytes(out, &m.op);
        }
        Message::StartViewChange(m) => {
            put_u64(out, m.promised_view);
            put_u8(out, m.replica.0);
            put_crash_vector(out, &m.crash_vector);
        }
        Message::DoViewChange(m) => {
            put_u64(out, m.last_normal_view);
            put_u64(out, m.op_number);
            put_u64(out, m.commit_number);
            put_log(out, &m.log);
            put_u8(out, m.replica.0);
            put_crash_vector(out, &m.crash_vector);
        }
        Message::StartView(m) => {
            put_u64(out, m.op_number);
            put_u64(out, m.commit_number);
            put_log(out, &m.log);
        }
        Message::GetState(m) => {
            put_u64(out, m.op_number);
            put_u8(out, m.replica.0);
        }
        Message::NewState(m) => {
            put_u64(out, m.op_number);
            put_u64(out, m.commit_number);
            put_log(out, &m.log);
            put_u8(out, m.replica.0);
            match &m.checkpoint {
                None => put_u8(out, 0),
                Some(summary) => {
                    put_u8(out, 1);
                    put_summary(out, summary);
                }
            }
            put_u64(out, m.full_commit_min);
        }
        Message::Recovery(m) => {
            put_u8(out, m.replica.0);
            put_u64(out, m.nonce);
            put_u64(out, m.incarnation);
        }
        Message::RecoveryResponse(m) => {
            put_u64(out, m.nonce);
            put_u8(out, m.status as u8);
            put_u64(out, m.op_number);
            put_u64(out, m.commit_number);
            put_crash_vector(out, &m.crash_vector);
            put_u8(out, m.replica.0);
        }
        Message::GetCheckpointTree(m) => {
            out.extend_from_slice(&m.root);
            put_u8(out, m.level);
            put_u64s(out, &m.parents);
            put_u8(out, m.replica.0);
        }
        Message::CheckpointTree(m) => {
            put_summary(out, &m.summary);
            put_u8(out, m.level);
            put_u64s(out, &m.parents);
            put_u32(out, length(m.digests.len()));
            for digest in &m.digests {
                out.extend_from_slice(digest);
            }
            put_u8(out, m.replica.0);
        }
        Message::GetCheckpointPages(m) => {
            out.extend_from_slice(&m.root);
            put_u64s(out, &m.pages);
            put_u64(out, m.offset);
            put_u8(out, m.replica.0);
        }
        Message::Reconfiguration(m) => {
            put_u128(out, m.client_id);
            put_u64(out, m.request_number);
            put_u32(out, m.epoch);
            put_members(out, &m.members);
            put_addresses(out, &m.addresses);
        }
        Message::StartEpoch(m) => {
            put_u32(out, m.epoch);
            put_u64(out, m.op_number);
            put_u64(out, m.entry_view);
            put_members(out, &m.members);
            put_addresses(out, &m.addresses);
            put_u8(out, m.sender.0);
        }
        Message::EpochStarted(m) => {
            put_u32(out, m.epoch);
            put_u8(out, m.member.0);
        }
        Message::CheckpointPages(m) => {
            put_summary(out, &m.summary);
            put_u32(out, length(m.chunks.len()));
            for chunk in &m.chunks {
                put_u64(out, chunk.page);
                put_u64(out, chunk.offset);
                put_u64(out, chunk.size);
                put_bytes(out, &chunk.data);
            }
            put_u8(out, m.replica.0);
        }
    }
}

impl PageChunk {
    /// Bytes this chunk takes in an encoded [`CheckpointPages`].
    pub fn encoded_size(&self) -> usize {
        PAGE_CHUNK_FIXED_SIZE + self.data.len()
    }
}

/// Bytes a [`PageChunk`] takes besides its data: page, offset, size, length.
pub const PAGE_CHUNK_FIXED_SIZE: usize = 28;

/// Decodes the frame at the start of `bytes`, which must come from a peer of
/// `cluster` and be at most `frame_size_max` bytes long (header included).
///
/// Returns the message and the number of bytes the frame took, so that the
/// caller can advance past it; bytes after the frame are left alone (the
/// next frame, typically). The checks run in this order, so that the
/// cheapest, least ambiguous diagnosis wins and the header alone decides
/// whether a stream is worth reading further:
///
/// 1. fewer than [`HEADER_SIZE`] bytes: [`DecodeError::Truncated`];
/// 2. magic, then version: [`DecodeError::BadMagic`],
///    [`DecodeError::UnsupportedVersion`];
/// 3. announced frame size over `frame_size_max`: [`DecodeError::Oversized`];
/// 4. cluster id: [`DecodeError::WrongCluster`];
/// 5. body incomplete: [`DecodeError::Truncated`], with the whole frame size;
/// 6. checksum: [`DecodeError::BadChecksum`];
/// 7. command: [`DecodeError::UnknownCommand`];
/// 8. body: [`DecodeError::Malformed`].
///
/// The header's epoch is not returned; [`decode_in_epoch`] returns it.
pub fn decode(
    bytes: &[u8],
    cluster: u64,
    frame_size_max: usize,
) -> Result<(Message, usize), DecodeError> {
    decode_in_epoch(bytes, cluster, frame_size_max).map(|(message, _, size)| (message, size))
}

/// [`decode`], returning also the sender's epoch from the header (§7), for
/// [`crate::Replica::handle_message`].
pub fn decode_in_epoch(
    bytes: &[u8],
    cluster: u64,
    frame_size_max: usize,
) -> Result<(Message, u32, usize), DecodeError> {
    let header = peek_header(bytes).ok_or(DecodeError::Truncated {
        needed: HEADER_SIZE,
    })?;
    if header.magic != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if header.version != VERSION {
        return Err(DecodeError::UnsupportedVersion(header.version));
    }
    let oversized = DecodeError::Oversized {
        size: header.frame_size(),
        max: frame_size_max,
    };
    let frame_size = match usize::try_from(header.frame_size()) {
        Ok(size) if size <= frame_size_max => size,
        _ => return Err(oversized),
    };
    if header.cluster != cluster {
        return Err(DecodeError::WrongCluster {
            expected: cluster,
            found: header.cluster,
        });
    }
    let frame = bytes
        .get(..frame_size)
        .ok_or(DecodeError::Truncated { needed: frame_size })?;
    let body = &frame[HEADER_SIZE..];
    if checksum(&frame[..AT_CHECKSUM], body) != header.checksum {
        return Err(DecodeError::BadChecksum);
    }
    let command =
        Command::from_u8(header.command).ok_or(DecodeError::UnknownCommand(header.command))?;
    let message = decode_body(command, header.view, body)?;
    Ok((message, header.epoch, frame_size))
}

/// Parses a checksummed body. Struct fields are evaluated in the order they
/// are written, which is the wire order.
fn decode_body(command: Command, view: u64, body: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { rest: body };
    let message = match command {
        Command::Request => {
            if view != 0 {
                return Err(DecodeError::Malformed("request with a non-zero view"));
            }
            Message::Request(Request {
                client_id: r.u128()?,
                request_number: r.u64()?,
                op: r.bytes()?,
            })
        }
        Command::Prepare => Message::Prepare(Prepare {
            view,
            commit_number: r.u64()?,
            timestamp_ns: r.u64()?,
            full_commit_min: r.u64()?,
            entries: r.log()?,
        }),
        Command::PrepareOk => Message::PrepareOk(PrepareOk {
            view,
            op_number: r.u64()?,
            replica: ReplicaIndex(r.u8()?),
            timestamp_ns: r.u64()?,
            commit_number: r.u64()?,
            crash_vector: r.crash_vector()?,
        }),
        Command::Commit => Message::Commit(Commit {
            view,
            commit_number: r.u64()?,
            op_number: r.u64()?,
            timestamp_ns: r.u64()?,
            full_commit_min: r.u64()?,
        }),
        Command::Reply => Message::Reply(Reply {
            view,
            client_id: r.u128()?,
            request_number: r.u64()?,
            op_number: r.u64()?,
            result: r.bytes()?,
        }),
        Command::ReadRequest => {
            if view != 0 {
                return Err(DecodeError::Malformed("read request with a non-zero view"));
            }
            Message::ReadRequest(ReadRequest {
                client_id: r.u128()?,
                request_number: r.u64()?,
                op_number_min: r.u64()?,
                op: r.bytes()?,
            })
        }
        Command::StartViewChange => Message::StartViewChange(StartViewChange {
            view,
            promised_view: r.u64()?,
            replica: ReplicaIndex(r.u8()?),
            crash_vector: r.crash_vector()?,
        }),
        Command::DoViewChange => Message::DoViewChange(DoViewChange {
            view,
            last_normal_view: r.u64()?,
            op_number: r.u64()?,
            commit_number: r.u64()?,
            log: r.log()?,
            replica: ReplicaIndex(r.u8()?),
            crash_vector: r.crash_vector()?,
        }),
        Command::StartView => Message::StartView(StartView {
            view,
            op_number: r.u64()?,
            commit_number: r.u64()?,
            log: r.log()?,
        }),
        Command::GetState => Message::GetState(GetState {
            view,
            op_number: r.u64()?,
            replica: ReplicaIndex(r.u8()?),
        }),
        Command::NewState => Message::NewState(NewState {
            view,
            op_number: r.u64()?,
            commit_number: r.u64()?,
            log: r.log()?,
            replica: ReplicaIndex(r.u8()?),
            checkpoint: match r.u8()? {
                0 => None,
                1 => Some(r.summary()?),
                _ => return Err(DecodeError::Malformed("option tag neither 0 nor 1")),
            },
            full_commit_min: r.u64()?,
        }),
        Command::Recovery => {
            if view != 0 {
                return Err(DecodeError::Malformed("recovery with a non-zero view"));
            }
            Message::Recovery(Recovery {
                replica: ReplicaIndex(r.u8()?),
                nonce: r.u64()?,
                incarnation: r.u64()?,
            })
        }
        Command::RecoveryResponse => Message::RecoveryResponse(RecoveryResponse {
            view,
            nonce: r.u64()?,
            status: match r.u8()? {
                0 => RecoveryStatus::Normal,
                1 => RecoveryStatus::ViewChange,
                2 => RecoveryStatus::Recovering,
                3 => RecoveryStatus::RecoveringDataLost,
                _ => return Err(DecodeError::Malformed("unknown recovery status")),
            },
            op_number: r.u64()?,
            commit_number: r.u64()?,
            crash_vector: r.crash_vector()?,
            replica: ReplicaIndex(r.u8()?),
        }),
        Command::GetCheckpointTree => Message::GetCheckpointTree(GetCheckpointTree {
            view,
            root: r.digest()?,
            level: r.u8()?,
            parents: r.u64s()?,
            replica: ReplicaIndex(r.u8()?),
        }),
        Command::CheckpointTree => Message::CheckpointTree(CheckpointTree {
            view,
            summary: r.summary()?,
            level: r.u8()?,
            parents: r.u64s()?,
            digests: {
                let count = r.len(32, "digest count exceeds the body")?;
                let mut digests = Vec::with_capacity(count);
                for _ in 0..count {
                    digests.push(r.digest()?);
                }
                digests
            },
            replica: ReplicaIndex(r.u8()?),
        }),
        Command::GetCheckpointPages => Message::GetCheckpointPages(GetCheckpointPages {
            view,
            root: r.digest()?,
            pages: r.u64s()?,
            offset: r.u64()?,
            replica: ReplicaIndex(r.u8()?),
        }),
        Command::Reconfiguration => {
            if view != 0 {
                return Err(DecodeError::Malformed(
                    "reconfiguration with a non-zero view",
                ));
            }
            Message::Reconfiguration(Reconfiguration {
                client_id: r.u128()?,
                request_number: r.u64()?,
                epoch: r.u32()?,
                members: r.members()?,
                addresses: r.addresses()?,
            })
        }
        Command::StartEpoch => Message::StartEpoch(StartEpoch {
            view,
            epoch: r.u32()?,
            op_number: r.u64()?,
            entry_view: r.u64()?,
            members: r.members()?,
            addresses: r.addresses()?,
            sender: MemberId(r.u8()?),
        }),
        Command::EpochStarted => Message::EpochStarted(EpochStarted {
            epoch: r.u32()?,
            member: MemberId(r.u8()?),
        }),
        Command::CheckpointPages => Message::CheckpointPages(CheckpointPages {
            view,
            summary: r.summary()?,
            chunks: {
                let count = r.len(PAGE_CHUNK_FIXED_SIZE, "chunk count exceeds the body")?;
                let mut chunks = Vec::with_capacity(count);
                for _ in 0..count {
                    chunks.push(PageChunk {
                        page: r.u64()?,
                        offset: r.u64()?,
                        size: r.u64()?,
                        data: r.bytes()?,
                    });
                }
                chunks
            },
            replica: ReplicaIndex(r.u8()?),
        }),
    };
    if !r.rest.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after the body"));
    }
    Ok(message)
}

/// A cursor over a body. Every read checks the remaining length first, so a
/// lying length or count fails before anything is allocated for it.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (field, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Malformed("field past the end of the body"))?;
        self.rest = rest;
        Ok(*field)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.take()?))
    }

    /// A `u32` length or count, as a `usize` no larger than `rest.len() /
    /// unit`: what the remaining bytes can hold at `unit` bytes per item.
    fn len(&mut self, unit: usize, why: &'static str) -> Result<usize, DecodeError> {
        let len = self.u32()?;
        match usize::try_from(len) {
            Ok(len) if len <= self.rest.len() / unit => Ok(len),
            _ => Err(DecodeError::Malformed(why)),
        }
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.len(1, "byte string past the end of the body")?;
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(bytes.to_vec())
    }

    /// Member ids, one byte each (see `put_members`).
    fn members(&mut self) -> Result<Vec<MemberId>, DecodeError> {
        let len = self.len(1, "member list past the end of the body")?;
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(bytes.iter().map(|&m| MemberId(m)).collect())
    }

    fn entry(&mut self) -> Result<LogEntry, DecodeError> {
        let op_number = self.u64()?;
        let view = self.u64()?;
        let client_id = self.u128()?;
        let request_number = self.u64()?;
        // The op's length carries the kind in its top bit (see `put_entry`).
        let raw = self.u32()?;
        let kind = if raw & RECONFIGURATION_BIT == 0 {
            EntryKind::Operation
        } else {
            EntryKind::Reconfiguration
        };
        let len = usize::try_from(raw & OP_LENGTH_MASK)
            .ok()
            .filter(|&len| len <= self.rest.len())
            .ok_or(DecodeError::Malformed(
                "byte string past the end of the body",
            ))?;
        let (op, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(LogEntry {
            op_number,
            view,
            client_id,
            request_number,
            op: op.to_vec(),
            kind,
        })
    }

    fn addresses(&mut self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let count = self.len(4, "address count exceeds the body")?;
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            addresses.push(self.bytes()?);
        }
        Ok(addresses)
    }

    fn digest(&mut self) -> Result<Digest, DecodeError> {
        self.take()
    }

    fn summary(&mut self) -> Result<CheckpointSummary, DecodeError> {
        Ok(CheckpointSummary {
            op_number: self.u64()?,
            page_count: self.u64()?,
            service_page_count: self.u64()?,
            root: self.digest()?,
        })
    }

    fn crash_vector(&mut self) -> Result<CrashVector, DecodeError> {
        let count = usize::from(self.u8()?);
        if count > self.rest.len() / 8 {
            return Err(DecodeError::Malformed("crash vector exceeds the body"));
        }
        let mut cv = CrashVector::with_capacity(count);
        for _ in 0..count {
            cv.push(self.u64()?);
        }
        Ok(cv)
    }

    fn u64s(&mut self) -> Result<Vec<u64>, DecodeError> {
        let count = self.len(8, "count exceeds the body")?;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            values.push(self.u64()?);
        }
        Ok(values)
    }

    fn log(&mut self) -> Result<Vec<LogEntry>, DecodeError> {
        let count = self.len(LOG_ENTRY_FIXED_SIZE, "log count exceeds the body")?;
        let mut log = Vec::with_capacity(count);
        for _ in 0..count {
            log.push(self.entry()?);
        }
        Ok(log)
    }
}
