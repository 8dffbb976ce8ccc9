//! The protocol's messages (paper §4, Figures 2–3), as plain data.
//!
//! Every message that crosses the network is a variant of [`Message`]. Field
//! names follow the paper: `view` is the view-number, `op_number` the
//! op-number, `commit_number` the commit-number. Integers have fixed widths
//! so that the wire format ([`crate::codec`]) is exact.

use alloc::vec::Vec;

pub use crate::checkpoint::{CheckpointSummary, Digest};

/// Per replica, the latest incarnation the sender knows of (a *crash
/// vector*, Michael et al., DISC 2017). A replica's incarnation grows each
/// time it recovers; votes carry the vector so that a vote sent before a
/// crash is never counted with knowledge of the recovery (see
/// `docs/protocol.md`, "Recovery"). Inline up to 8 replicas.
pub type CrashVector = smallvec::SmallVec<[u64; 8]>;

/// Index of a replica in the (sorted) configuration of its epoch:
/// `0..replica_count`. It names a replica within one epoch only: the
/// primary of view `v` is the index `v mod n`, and the protocol's messages
/// carry the sender's index. Across epochs (§7) the same machine may have
/// another index, or none; its lasting name is its [`MemberId`], and
/// [`crate::Config::member_id`] / [`crate::Config::index_of_member`] convert
/// between the two. On the wire it is one byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReplicaIndex(pub u8);

impl ReplicaIndex {
    /// The index as a `usize`, for indexing per-replica arrays.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl From<ReplicaIndex> for usize {
    fn from(index: ReplicaIndex) -> usize {
        index.as_usize()
    }
}

impl core::fmt::Display for ReplicaIndex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

/// A replica's identity for the life of a cluster, across epochs (§7): the
/// name an embedding maps to an address, and the destination of every
/// [`crate::Output::Send`]. [`crate::Config::members`] lists the members of
/// an epoch in index order; without reconfiguration a replica's member id
/// equals its [`ReplicaIndex`], but the two are different things, and
/// converting one into the other goes through the configuration
/// ([`crate::Config::member_id`], [`crate::Config::index_of_member`]). On
/// the wire and on disk it is one byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MemberId(pub u8);

impl MemberId {
    /// The id as a `usize`, for tables indexed by member.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl From<MemberId> for usize {
    fn from(member: MemberId) -> usize {
        member.as_usize()
    }
}

impl core::fmt::Display for MemberId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a log entry holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum EntryKind {
    /// A client's operation for the service.
    #[default]
    Operation = 0,
    /// A reconfiguration (§7): `op` is the new epoch-number (`u32` LE), the
    /// member count (`u8`), the members' ids, then, when the request
    /// carried addresses, each address as a `u8` length and its bytes.
    /// Executed by the replicas, never by the service.
    Reconfiguration = 1,
}

/// A client's identifier. Clients pick it at random from a seeded PRNG; 128
/// bits make collisions between independently started clients negligible.
pub type ClientId = u128;

/// One operation in the log: the client request it carries and the view in
/// which a primary assigned it its op-number.
///
/// The op-number is stored with the entry so that every log suffix that
/// travels (DoViewChange, StartView, NewState) is self-describing and its
/// contiguity can be checked on receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LogEntry {
    /// The op-number this entry occupies.
    pub op_number: u64,
    /// The view in which the primary assigned `op_number` to this request.
    /// Two entries with the same `op_number` and `view` are the same entry.
    pub view: u64,
    /// The client that sent the request.
    pub client_id: ClientId,
    /// The client's request-number for this request.
    pub request_number: u64,
    /// The operation, opaque to the protocol; the service interprets it.
    pub op: Vec<u8>,
    /// An operation, or a reconfiguration (§7).
    pub kind: EntryKind,
}

/// `Request(op, c, s)`: a client asks the primary to execute `op` (§4.1 step 1).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Request {
    /// The client's identifier.
    pub client_id: ClientId,
    /// Monotonically increasing per client, starting at 1.
    pub request_number: u64,
    /// The operation for the service.
    pub op: Vec<u8>,
}

/// `Prepare(v, m, n, k)`: the primary asks backups to append operations
/// (§4.1 step 3). Carries a batch of consecutive entries (§6 "batching"):
/// the paper's one operation is a batch of one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Prepare {
    /// The primary's view-number.
    pub view: u64,
    /// The primary's commit-number when it sent this Prepare.
    pub commit_number: u64,
    /// The primary's clock when it sent this Prepare; backups echo it in
    /// PrepareOk so that the primary can time its read lease from it.
    pub timestamp_ns: u64,
    /// Every full replica has executed the ops up to here (witnesses, §6):
    /// the smallest commit-number among the full replicas that the primary
    /// heard of. Witnesses drop their log up to it; in a cluster with
    /// witnesses every replica keeps its log back to it.
    pub full_commit_min: u64,
    /// The entries to append, with consecutive op-numbers; the last one's is
    /// the paper's `n`.
    pub entries: Vec<LogEntry>,
}

/// `PrepareOk(v, n, i)`: backup `replica` holds every op up to `op_number` (§4.1 step 4).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PrepareOk {
    /// The backup's view-number.
    pub view: u64,
    /// The highest op the backup holds; acknowledges every op up to it.
    pub op_number: u64,
    /// The backup's index.
    pub replica: ReplicaIndex,
    /// The latest `timestamp_ns` the backup received from the primary (of a
    /// Prepare or a Commit): it promised not to join a view change for a
    /// lease period since then.
    pub timestamp_ns: u64,
    /// The backup's commit-number: it executed every op up to it. From
    /// these the primary learns how far every full replica executed (see
    /// [`Prepare::full_commit_min`]).
    pub commit_number: u64,
    /// The backup's crash vector.
    pub crash_vector: CrashVector,
}

/// `Commit(v, k)`: the primary's heartbeat carrying its commit-number (§4.1 step 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Commit {
    /// The primary's view-number.
    pub view: u64,
    /// The primary's commit-number.
    pub commit_number: u64,
    /// The primary's op-number. Not in the paper: it lets a backup that lost
    /// the last Prepares of an idle primary notice the gap and fetch them.
    pub op_number: u64,
    /// The primary's clock when it sent this Commit (see [`Prepare`]).
    pub timestamp_ns: u64,
    /// See [`Prepare::full_commit_min`].
    pub full_commit_min: u64,
}

/// `Reply(v, s, x)`: the result of a client's request (§4.1 step 5).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Reply {
    /// The view in which the primary replied; tells the client who the primary is.
    pub view: u64,
    /// The client the reply is for (so that an adapter can route it).
    pub client_id: ClientId,
    /// The request-number being answered.
    pub request_number: u64,
    /// The op-number the result reflects: a write's own op-number, or for a
    /// read the last op executed before it. A client passes the highest it
    /// has seen to a backup read, for read-your-writes.
    pub op_number: u64,
    /// The service's result.
    pub result: Vec<u8>,
}

/// A read-only operation sent to any replica, typically a backup (§6, "reads
/// at backups"): answered from the replica's own state once it has executed
/// up to `op_number_min`. Possibly stale, never older than what the client
/// has seen.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReadRequest {
    /// The client's identifier.
    pub client_id: ClientId,
    /// The client's request-number for this read.
    pub request_number: u64,
    /// The highest op-number the client has seen in a reply.
    pub op_number_min: u64,
    /// The read-only operation.
    pub op: Vec<u8>,
}

/// `StartViewChange(v, i)` (§4.2 step 1), plus the sender's promise.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StartViewChange {
    /// The proposed new view-number.
    pub view: u64,
    /// Not in the paper: the highest view for which the sender has sent a
    /// DoViewChange to another replica. It can take part in no view below
    /// this one any more, so a cluster running a lower view must move up to
    /// let it back in (see `docs/protocol.md`, departure 2).
    pub promised_view: u64,
    /// The sender's index.
    pub replica: ReplicaIndex,
    /// The sender's crash vector.
    pub crash_vector: CrashVector,
}

/// `DoViewChange(v, l, v', n, k, i)` (§4.2 step 2).
///
/// Departs from the paper's full log: `log` holds only the entries after the
/// sender's `commit_number` (§5.3 suggests this); the committed prefix is the
/// same in every log and the new primary fetches what it lacks of it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DoViewChange {
    /// The new view-number.
    pub view: u64,
    /// The latest view in which the sender's status was normal (`v'`).
    pub last_normal_view: u64,
    /// The sender's op-number.
    pub op_number: u64,
    /// The sender's commit-number.
    pub commit_number: u64,
    /// The sender's log entries `commit_number + 1 ..= op_number`.
    pub log: Vec<LogEntry>,
    /// The sender's index.
    pub replica: ReplicaIndex,
    /// The sender's crash vector when it made this vote.
    pub crash_vector: CrashVector,
}

/// `StartView(v, l, n, k)` (§4.2 step 4).
///
/// `log` is a suffix of the new primary's log ending at `op_number`; a
/// replica whose commit-number is below the suffix's start fetches the rest
/// with [`GetState`] before it installs the view.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StartView {
    /// The new view-number.
    pub view: u64,
    /// The new primary's op-number.
    pub op_number: u64,
    /// The new primary's commit-number.
    pub commit_number: u64,
    /// A suffix of the new primary's log, ending at `op_number`.
    pub log: Vec<LogEntry>,
}

/// `GetState(v, n, i)`: ask a peer for its log after `op_number` (§5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GetState {
    /// The requester's view-number (the view whose log it wants).
    pub view: u64,
    /// The requester holds (or trusts) every op up to this one.
    pub op_number: u64,
    /// The requester's index.
    pub replica: ReplicaIndex,
}

/// `NewState(v, l, n, k)`: the answer to [`GetState`] (§5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NewState {
    /// The sender's view-number.
    pub view: u64,
    /// The sender's op-number: how far its log goes, even when `log` stops
    /// short of it because of the message size bound.
    pub op_number: u64,
    /// The sender's commit-number.
    pub commit_number: u64,
    /// Entries following the requested op-number, contiguous, possibly
    /// truncated to fit a message.
    pub log: Vec<LogEntry>,
    /// The sender's index.
    pub replica: ReplicaIndex,
    /// Set when the sender's log no longer reaches back to the requested
    /// op-number: its latest checkpoint, to fetch instead (§5.2). Offered
    /// to a witness only once every full replica executed the ops up to
    /// it: the witness, which has no state, skips to its op-number.
    pub checkpoint: Option<CheckpointSummary>,
    /// The sender's [`Prepare::full_commit_min`]: how a replica that was
    /// away (recovering, or changing view) learns it, and how a witness
    /// offered a checkpoint tells whether it may skip to it.
    pub full_commit_min: u64,
}

/// `Recovery(i, x)`: a replica restarted without its state asks for it (§4.3).
///
/// Sent twice per recovery: first with `incarnation == 0` to learn the
/// highest incarnation of the sender anyone knows, then with the new
/// incarnation, one higher, which every responder records before it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Recovery {
    /// The recovering replica.
    pub replica: ReplicaIndex,
    /// Fresh for every recovery attempt; responses echo it.
    pub nonce: u64,
    /// `0` to ask, else the sender's new incarnation.
    pub incarnation: u64,
}

/// What a replica answering a [`Recovery`] is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum RecoveryStatus {
    /// Normal in `view`: its answer counts toward the recovery quorum.
    Normal = 0,
    /// Changing view: its answer only reports incarnations.
    ViewChange = 1,
    /// Recovering itself: its answer counts toward forming a new cluster
    /// when every replica is recovering.
    Recovering = 2,
    /// Recovering itself after its durable data was lost or found damaged
    /// ([`crate::Replica::recover_lost_disk`]): otherwise like
    /// `Recovering`, but it held data, so while it answers so no replica
    /// forms a new, empty cluster (issue 18, safe formation).
    RecoveringDataLost = 3,
}

impl RecoveryStatus {
    /// Whether the responder is recovering itself (with or without lost
    /// durable data): it holds no state to count toward a recovery quorum.
    pub fn is_recovering(self) -> bool {
        matches!(
            self,
            RecoveryStatus::Recovering | RecoveryStatus::RecoveringDataLost
        )
    }
}

/// `RecoveryResponse(v, x, n, k, j)` (§4.3). Unlike the paper's, no log
/// travels here: the recovering replica fetches the primary's state with
/// state transfer afterwards, since a whole state does not fit one message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RecoveryResponse {
    /// The responder's view-number.
    pub view: u64,
    /// The nonce of the Recovery answered.
    pub nonce: u64,
    /// The responder's status.
    pub status: RecoveryStatus,
    /// The responder's op-number.
    pub op_number: u64,
    /// The responder's commit-number.
    pub commit_number: u64,
    /// The responder's crash vector, after it recorded the Recovery.
    pub crash_vector: CrashVector,
    /// The responder's index.
    pub replica: ReplicaIndex,
}

/// Asks for the children of some nodes of a checkpoint's Merkle tree (§5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GetCheckpointTree {
    /// The requester's view-number.
    pub view: u64,
    /// The checkpoint's root.
    pub root: Digest,
    /// The level of the parents; the tree's height names the root.
    pub level: u8,
    /// The parents whose children are wanted.
    pub parents: Vec<u64>,
    /// The requester's index.
    pub replica: ReplicaIndex,
}

/// The answer to [`GetCheckpointTree`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CheckpointTree {
    /// The sender's view-number.
    pub view: u64,
    /// The sender's latest checkpoint. When its root is not the one asked
    /// for, the sender no longer has that checkpoint and nothing else is
    /// sent.
    pub summary: CheckpointSummary,
    /// The level of the parents.
    pub level: u8,
    /// The parents answered (a prefix of those asked, to fit a message).
    pub parents: Vec<u64>,
    /// The children of each parent in turn.
    pub digests: Vec<Digest>,
    /// The sender's index.
    pub replica: ReplicaIndex,
}

/// Asks for pages of a checkpoint (§5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GetCheckpointPages {
    /// The requester's view-number.
    pub view: u64,
    /// The checkpoint's root.
    pub root: Digest,
    /// The pages wanted, in order.
    pub pages: Vec<u64>,
    /// Where to start in the first page (the requester holds its beginning).
    pub offset: u64,
    /// The requester's index.
    pub replica: ReplicaIndex,
}

/// A piece of one page.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PageChunk {
    /// The page.
    pub page: u64,
    /// Where `data` starts in the page.
    pub offset: u64,
    /// The page's whole size.
    pub size: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The answer to [`GetCheckpointPages`]: pages in the order asked, the last
/// possibly cut short to fit a message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CheckpointPages {
    /// The sender's view-number.
    pub view: u64,
    /// The sender's latest checkpoint (see [`CheckpointTree::summary`]).
    pub summary: CheckpointSummary,
    /// The pieces.
    pub chunks: Vec<PageChunk>,
    /// The sender's index.
    pub replica: ReplicaIndex,
}

/// `Reconfiguration(e, c, s, new-config)` (§7.1): an administrator's client
/// asks the primary of epoch `e` (the frame header's epoch) to move the
/// cluster to `members`. It goes through the log like a request; the reply's
/// result is the new epoch-number (`u32` LE).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Reconfiguration {
    /// The administrator's client.
    pub client_id: ClientId,
    /// Its request-number.
    pub request_number: u64,
    /// The epoch the administrator saw; the primary refuses any other.
    pub epoch: u32,
    /// The new configuration: member ids in index order, distinct, at least
    /// one of them a member of the current epoch.
    pub members: Vec<MemberId>,
    /// Optional: one address per member, opaque to the protocol (at most
    /// [`ADDRESS_SIZE_MAX`] bytes each; the adapters use `ip:port` text), so
    /// that every replica and client learns how to reach new members.
    /// Empty: the embedding knows the addresses by other means.
    pub addresses: Vec<Vec<u8>>,
}

/// The largest address a [`Reconfiguration`] may carry per member, in bytes.
pub const ADDRESS_SIZE_MAX: usize = 255;

/// The largest view-number, op-number, commit-number, incarnation or
/// request-number a message may carry: 2^62.
///
/// No cluster gets near it (2^62 ops at a billion a second take 146
/// years), and below it the sum of any two such numbers, plus any `u32`,
/// fits a `u64`: the replica's `+ 1`s and sums cannot overflow. A replica
/// drops a message with a larger one unread, as invalid
/// ([`Message::numbers_in_range`]), so a crafted frame cannot lead it to
/// overflow (issue 17, item 5; `docs/protocol.md`, "Bounds on a frame's
/// cost"). Timestamps and nonces, which are opaque, are not bounded.
pub const NUMBER_MAX: u64 = 1 << 62;

/// `StartEpoch(e, n, old-config, new-config)` (§7.2): epoch `epoch` began
/// after op `op_number` (the committed reconfiguration entry) with
/// `members`. Sent by replicas that executed that op to the new epoch's
/// members until each answers [`EpochStarted`], to replicas and clients
/// still in an older epoch, and by those to nobody else.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StartEpoch {
    /// The sender's view-number in `epoch` (0 from a replica that left).
    pub view: u64,
    /// The new epoch-number.
    pub epoch: u32,
    /// The op-number of the reconfiguration entry: every op up to it is
    /// committed, and the new epoch's log continues after it.
    pub op_number: u64,
    /// The view in which that entry was prepared: a replica of the old
    /// epoch whose log holds the entry with this view holds the committed
    /// log up to it, and commits it without fetching anything.
    pub entry_view: u64,
    /// The new epoch's members, in index order.
    pub members: Vec<MemberId>,
    /// Their addresses, as the reconfiguration carried them (empty if it
    /// carried none).
    pub addresses: Vec<Vec<u8>>,
    /// The sender's member id.
    pub sender: MemberId,
}

/// `EpochStarted(e, i)` (§7.2): member `member` of epoch `epoch` holds every
/// op up to the reconfiguration and takes part in the new epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EpochStarted {
    /// The epoch.
    pub epoch: u32,
    /// The sender's member id.
    pub member: MemberId,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[allow(missing_docs)]
pub enum Message {
    Request(Request),
    Prepare(Prepare),
    PrepareOk(PrepareOk),
    Commit(Commit),
    Reply(Reply),
    StartViewChange(StartViewChange),
    DoViewChange(DoViewChange),
    StartView(StartView),
    GetState(GetState),
    NewState(NewState),
    Recovery(Recovery),
    RecoveryResponse(RecoveryResponse),
    GetCheckpointTree(GetCheckpointTree),
    CheckpointTree(CheckpointTree),
    GetCheckpointPages(GetCheckpointPages),
    CheckpointPages(CheckpointPages),
    ReadRequest(ReadRequest),
    Reconfiguration(Reconfiguration),
    StartEpoch(StartEpoch),
    EpochStarted(EpochStarted),
}

/// The command byte of a frame. Numbers are never reused once retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Command {
    Request = 1,
    Prepare = 2,
    PrepareOk = 3,
    Commit = 4,
    Reply = 5,
    StartViewChange = 6,
    DoViewChange = 7,
    StartView = 8,
    GetState = 9,
    NewState = 10,
    Recovery = 11,
    RecoveryResponse = 12,
    GetCheckpointTree = 13,
    CheckpointTree = 14,
    GetCheckpointPages = 15,
    CheckpointPages = 16,
    ReadRequest = 17,
    Reconfiguration = 18,
    StartEpoch = 19,
    EpochStarted = 20,
}

impl Command {
    /// The command for a wire byte, if it names one.
    pub fn from_u8(byte: u8) -> Option<Command> {
        Some(match byte {
            1 => Command::Request,
            2 => Command::Prepare,
            3 => Command::PrepareOk,
            4 => Command::Commit,
            5 => Command::Reply,
            6 => Command::StartViewChange,
            7 => Command::DoViewChange,
            8 => Command::StartView,
            9 => Command::GetState,
            10 => Command::NewState,
            11 => Command::Recovery,
            12 => Command::RecoveryResponse,
            13 => Command::GetCheckpointTree,
            14 => Command::CheckpointTree,
            15 => Command::GetCheckpointPages,
            16 => Command::CheckpointPages,
            17 => Command::ReadRequest,
            18 => Command::Reconfiguration,
            19 => Command::StartEpoch,
            20 => Command::EpochStarted,
            _ => return None,
        })
    }
}

impl Message {
    /// The message's command.
    pub fn command(&self) -> Command {
        match self {
            Message::Request(_) => Command::Request,
            Message::Prepare(_) => Command::Prepare,
            Message::PrepareOk(_) => Command::PrepareOk,
            Message::Commit(_) => Command::Commit,
            Message::Reply(_) => Command::Reply,
            Message::StartViewChange(_) => Command::StartViewChange,
            Message::DoViewChange(_) => Command::DoViewChange,
            Message::StartView(_) => Command::StartView,
            Message::GetState(_) => Command::GetState,
            Message::NewState(_) => Command::NewState,
            Message::Recovery(_) => Command::Recovery,
            Message::RecoveryResponse(_) => Command::RecoveryResponse,
            Message::GetCheckpointTree(_) => Command::GetCheckpointTree,
            Message::CheckpointTree(_) => Command::CheckpointTree,
            Message::GetCheckpointPages(_) => Command::GetCheckpointPages,
            Message::CheckpointPages(_) => Command::CheckpointPages,
            Message::ReadRequest(_) => Command::ReadRequest,
            Message::Reconfiguration(_) => Command::Reconfiguration,
            Message::StartEpoch(_) => Command::StartEpoch,
            Message::EpochStarted(_) => Command::EpochStarted,
        }
    }

    /// The view-number the message carries; 0 for a client Request,
    /// ReadRequest or Reconfiguration, a Recovery and an EpochStarted,
    /// which carry none.
    pub fn view(&self) -> u64 {
        match self {
            Message::Request(_) => 0,
            Message::Prepare(m) => m.view,
            Message::PrepareOk(m) => m.view,
            Message::Commit(m) => m.view,
            Message::Reply(m) => m.view,
            Message::StartViewChange(m) => m.view,
            Message::DoViewChange(m) => m.view,
            Message::StartView(m) => m.view,
            Message::GetState(m) => m.view,
            Message::NewState(m) => m.view,
            Message::Recovery(_) => 0,
            Message::RecoveryResponse(m) => m.view,
            Message::GetCheckpointTree(m) => m.view,
            Message::CheckpointTree(m) => m.view,
            Message::GetCheckpointPages(m) => m.view,
            Message::CheckpointPages(m) => m.view,
            Message::ReadRequest(_) => 0,
            Message::Reconfiguration(_) => 0,
            Message::StartEpoch(m) => m.view,
            Message::EpochStarted(_) => 0,
        }
    }
}

impl Message {
    /// Whether every view-number, op-number, commit-number, incarnation,
    /// request-number and checkpoint op-number the message carries is at
    /// most [`NUMBER_MAX`]. Page indexes, offsets and counts are checked
    /// where they are used, against the checkpoint they name.
    pub fn numbers_in_range(&self) -> bool {
        fn ok(numbers: &[u64]) -> bool {
            numbers.iter().all(|&x| x <= NUMBER_MAX)
        }
        fn log_ok(log: &[LogEntry]) -> bool {
            log.iter()
                .all(|e| ok(&[e.op_number, e.view, e.request_number]))
        }
        fn summary_ok(summary: &CheckpointSummary) -> bool {
            ok(&[summary.op_number])
        }
        match self {
            Message::Request(m) => ok(&[m.request_number]),
            Message::Prepare(m) => {
                ok(&[m.view, m.commit_number, m.full_commit_min]) && log_ok(&m.entries)
            }
            Message::PrepareOk(m) => {
                ok(&[m.view, m.op_number, m.commit_number]) && ok(&m.crash_vector)
            }
            Message::Commit(m) => ok(&[m.view, m.commit_number, m.op_number, m.full_commit_min]),
            Message::Reply(m) => ok(&[m.view, m.request_number, m.op_number]),
            Message::StartViewChange(m) => ok(&[m.view, m.promised_view]) && ok(&m.crash_vector),
            Message::DoViewChange(m) => {
                ok(&[m.view, m.last_normal_view, m.op_number, m.commit_number])
                    && log_ok(&m.log)
                    && ok(&m.crash_vector)
            }
            Message::StartView(m) => ok(&[m.view, m.op_number, m.commit_number]) && log_ok(&m.log),
            Message::GetState(m) => ok(&[m.view, m.op_number]),
            Message::NewState(m) => {
                ok(&[m.view, m.op_number, m.commit_number, m.full_commit_min])
                    && log_ok(&m.log)
                    && m.checkpoint.as_ref().is_none_or(summary_ok)
            }
            Message::Recovery(m) => ok(&[m.incarnation]),
            Message::RecoveryResponse(m) => {
                ok(&[m.view, m.op_number, m.commit_number]) && ok(&m.crash_vector)
            }
            Message::GetCheckpointTree(m) => ok(&[m.view]),
            Message::CheckpointTree(m) => ok(&[m.view]) && summary_ok(&m.summary),
            Message::GetCheckpointPages(m) => ok(&[m.view]),
            Message::CheckpointPages(m) => ok(&[m.view]) && summary_ok(&m.summary),
            Message::ReadRequest(m) => ok(&[m.request_number, m.op_number_min]),
            Message::Reconfiguration(m) => ok(&[m.request_number]),
            Message::StartEpoch(m) => ok(&[m.view, m.op_number, m.entry_view]),
            Message::EpochStarted(_) => true,
        }
    }
}

impl LogEntry {
    /// Bytes this entry takes in an encoded message (see [`crate::codec`]).
    pub fn encoded_size(&self) -> usize {
        crate::codec::LOG_ENTRY_FIXED_SIZE + self.op.len()
    }
}
