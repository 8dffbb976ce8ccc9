//! Joining vr-core's persist step to a [`Storage`]: the glue every adapter
//! reuses (feature `vr-core`, on by default).
//!
//! - [`apply_persist`] carries out one [`Persist`] on the storage (or
//!   [`write_persist`] then [`complete_persist`], for an embedding that
//!   wants the sync apart); answer it with `Replica::handle_persisted` only
//!   after it returned.
//! - [`open_replica`] opens a data directory at startup and says how the
//!   replica starts: [`Start::Restart`] with an [`OnDisk`] image for
//!   `Replica::restart` when the disk is intact, or [`Start::Recover`] when
//!   it is not, with the directory reset for `Replica::recover`.
//! - [`on_disk`] is the pure part: a recovery scan ([`Recovered`]) to
//!   vr-core's restart input, or the reason it must not be used.
//!
//! # The mapping
//!
//! | vr-core ([`DurableState`]) | vr-storage ([`ReplicaState`], superblock) |
//! |---|---|
//! | `epoch` | `epoch` |
//! | `view` | `view_number`, never lowered within an epoch (see [`complete_persist`]) |
//! | `last_normal_view` | `last_normal_view` |
//! | `incarnation` | `incarnation` |
//! | `commit_number` | `commit_number`, capped at the log's synced head |
//! | `log_base` | not stored: the checkpoint's op plays its part (the log on disk starts after the checkpoint, or `log_retain_ops` before it) |
//!
//! A [`LogEntry`] is one log record: its `op_number` and `view` are the
//! record header's `op` and `aux`; the payload is [`encode_entry`]'s
//! encoding of the rest. A checkpoint is stored with one extra page after
//! vr-core's pages, the *trailer*: the service's page count (u64 LE), which
//! `Checkpoint::from_pages` needs and vr-storage's manifest does not hold.
//! The root stored is vr-core's Merkle root over vr-core's pages only, and
//! is checked again when the checkpoint is rebuilt.
//!
//! # Order of one persist, and why
//!
//! 1. **Truncation** (`truncate_after`), durable when it returns. What it
//!    removes is a suffix no quorum committed (a view change replaced it,
//!    or a checkpoint fetched from a peer replaces it), so removing it
//!    before the rest is durable loses nothing anyone relies on. It goes
//!    before the checkpoint, unlike the order `Persist` lists: a checkpoint
//!    installed from a peer replaces the entries up to it too, and
//!    vr-storage refuses to truncate behind its current checkpoint; cut
//!    first, the new checkpoint lies past the log's head and the log
//!    restarts after it.
//! 2. **Checkpoint** (pages named by `checkpoint`), durable when it
//!    returns, with the superblock naming it (the old promises).
//! 3. **Append** the entries (those at or behind the checkpoint are
//!    skipped: its pages hold their effect).
//! 4. **One sync.**
//! 5. **Superblock**, only if a promise (epoch, view, last normal view,
//!    incarnation) changed: after the sync, never before it. A superblock
//!    saying "normal in view v" must not reach the disk before the log of
//!    view v: a primary that restarted normal in its view with a shorter log
//!    than the one its StartView sent would give the same op-numbers to new
//!    requests (two different ops at one op-number in one view). `Persist`'s
//!    own documentation writes the state before the sync, which is safe only
//!    where one write makes both durable at once; here the superblock is a
//!    separate file with its own fdatasyncs. Entries durable under an older
//!    superblock only rank the log lower in a view change.
//!
//! # Damage, and the current repair strategy
//!
//! A replica whose scan reports faulty ops, damaged checkpoint pages or a
//! lost checkpoint may have acknowledged an op it can no longer read
//! (Alagappan et al., "Protocol-Aware Recovery for Consensus-Based
//! Storage", FAST '18). Restarting it from its disk as if intact could
//! make it vote with a log missing a committed op, and lose the op when
//! another replica of its commit quorum fails. So it does not restart from
//! its disk: [`open_replica`] resets the directory (a durable marker file,
//! then a fresh format) and the caller starts the replica with
//! `Replica::recover`, the memory-loss path with crash vectors, which
//! fetches the state from its peers (§4.3). The marker stays until the
//! caller, once a persist drained from the *recovered* replica (status no
//! longer `Recovering`) is durable, calls [`finish_recovery`]; a crash
//! before that leads to recovery again, never to a restart from the
//! partial disk. That is the current strategy: it is whole-replica repair
//! (a state transfer), and while it runs the replica counts as one of the
//! f that may be down. Protocol-aware per-op repair (fetch only the faulty
//! ops, keep the rest, answer "I don't have op n" to view changes) is
//! future work.

use std::io;
use std::sync::Arc;

use vr_core::checkpoint::Checkpoint;
use vr_core::{DurableState, EntryKind, LogEntry, OnDisk, Persist};

use crate::backend::Backend;
use crate::checkpoint::parse_checkpoint_file_name;
use crate::format::ReplicaState;
use crate::log::{parse_segment_file_name, EntryRef};
use crate::storage::{
    Config, Error, Recovered, RecoveredCheckpoint, Storage, FORMAT_FILE, SUPERBLOCK_FILE,
};

/// The marker file of a replica recovering from its peers: while it
/// exists, the directory is not an intact image of the replica.
pub const RECOVERING_FILE: &str = "recovering";

/// The marker's bytes for a replica whose disk held data it lost (less
/// than one sector, so that it is written whole).
const RECOVERING_TEXT: &[u8] =
    b"vr replica recovering from its peers: do not restart from this directory\n";

/// The marker's bytes for a replica whose directory never held data (its
/// first start): it recovers too, but may form a new cluster with other
/// replicas that never held data (`Replica::recover`, not
/// `recover_lost_disk`). Any marker other than this one means data lost.
const FIRST_START_TEXT: &[u8] =
    b"vr replica starting for the first time, never held data: recovering from its peers\n";

/// The marker file's length: either text padded with spaces.
const MARKER_BYTES: usize = 128;

fn marker_bytes(text: &[u8]) -> Vec<u8> {
    let mut bytes = text.to_vec();
    bytes.resize(MARKER_BYTES, b' ');
    bytes
}

/// Which marker [`reset_for_recovery`] leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// The directory held data that is now lost or untrusted: the replica
    /// recovers with `Replica::recover_lost_disk` and never forms a new
    /// cluster.
    DataLost,
    /// The directory never held data (the replica's first start): the
    /// replica recovers with `Replica::recover` and, if every replica is
    /// new, forms the cluster.
    FirstStart,
}

/// Bytes of [`encode_entry`]'s encoding besides the op.
pub const ENTRY_FIXED_BYTES: usize = 16 + 8 + 1 + 4;

/// Encodes the parts of `entry` a log record's header does not hold:
/// `client_id` (u128 LE), `request_number` (u64 LE), `kind` (u8: 0
/// operation, 1 reconfiguration), the op's length (u32 LE), the op. The
/// record's checksums cover it.
pub fn encode_entry(entry: &LogEntry, out: &mut Vec<u8>) {
    out.reserve(ENTRY_FIXED_BYTES + entry.op.len());
    out.extend_from_slice(&entry.client_id.to_le_bytes());
    out.extend_from_slice(&entry.request_number.to_le_bytes());
    out.push(entry.kind as u8);
    let len = u32::try_from(entry.op.len()).expect("an op over 4 GiB fits no log record");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&entry.op);
}

/// Decodes [`encode_entry`]'s bytes into the entry at `op_number` in
/// `view`; `None` if they are malformed (a record that passed its checksum
/// but was not written by [`encode_entry`]).
pub fn decode_entry(op_number: u64, view: u64, bytes: &[u8]) -> Option<LogEntry> {
    let (client_id, rest) = bytes.split_first_chunk::<16>()?;
    let (request_number, rest) = rest.split_first_chunk::<8>()?;
    let (kind, rest) = rest.split_first()?;
    let (len, op) = rest.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*len) as usize != op.len() {
        return None;
    }
    let kind = match kind {
        0 => EntryKind::Operation,
        1 => EntryKind::Reconfiguration,
        _ => return None,
    };
    Some(LogEntry {
        op_number,
        view,
        client_id: u128::from_le_bytes(*client_id),
        request_number: u64::from_le_bytes(*request_number),
        op: op.to_vec(),
        kind,
    })
}

/// Carries out `persist` on `storage`, durably, in the order the module
/// documentation gives: truncation, checkpoint (`pages` are
/// `Replica::checkpoint_pages()` read when the persist was drained; unused
/// when it names none), entries, one sync, the superblock if a promise
/// changed. When it returns `Ok`, answer with `Replica::handle_persisted`.
/// An error leaves the disk in an unknown state for an IO error (the
/// storage is poisoned: stop the replica), or reports a persist that does
/// not fit the disk (a bug: stop too).
pub fn apply_persist<B: Backend>(
    storage: &mut Storage<B>,
    persist: &Persist,
    pages: &[Arc<[u8]>],
) -> Result<(), Error> {
    write_persist(storage, persist, pages)?;
    complete_persist(storage, persist)
}

/// The first half of [`apply_persist`]: truncation and checkpoint (both
/// durable when they return) and the entries appended, not yet synced.
pub fn write_persist<B: Backend>(
    storage: &mut Storage<B>,
    persist: &Persist,
    pages: &[Arc<[u8]>],
) -> Result<(), Error> {
    if let Some(after) = persist.truncate_after {
        // Behind the disk's checkpoint there is nothing to cut: the
        // checkpoint replaced it.
        let after = after.max(storage.checkpoint().op);
        if after < storage.head_op() {
            storage.truncate_after(after)?;
        }
    }
    if let Some(summary) = persist.checkpoint {
        if pages.len() as u64 != summary.page_count
            || summary.service_page_count > summary.page_count
        {
            return Err(Error::InvalidPersist(
                "the pages given are not the checkpoint's",
            ));
        }
        let current = storage.checkpoint();
        if summary.op_number != current.op || summary.root != current.root {
            let trailer = summary.service_page_count.to_le_bytes();
            let all = pages
                .iter()
                .map(|p| &p[..])
                .chain(std::iter::once(&trailer[..]));
            storage.write_checkpoint(summary.op_number, summary.root, all)?;
        }
    }
    let behind = storage.checkpoint().op;
    let entries: Vec<&LogEntry> = persist
        .entries
        .iter()
        .filter(|e| e.op_number > behind)
        .collect();
    if !entries.is_empty() {
        let mut payloads = Vec::with_capacity(entries.len());
        for entry in &entries {
            let mut payload = Vec::new();
            encode_entry(entry, &mut payload);
            payloads.push(payload);
        }
        let refs: Vec<EntryRef<'_>> = entries
            .iter()
            .zip(&payloads)
            .map(|(entry, payload)| EntryRef {
                op: entry.op_number,
                view: entry.view,
                payload,
            })
            .collect();
        storage.append(&refs)?;
    }
    Ok(())
}

/// The second half of [`apply_persist`]: one sync, then the superblock if
/// a promise changed.
pub fn complete_persist<B: Backend>(
    storage: &mut Storage<B>,
    persist: &Persist,
) -> Result<(), Error> {
    storage.sync()?;
    let mut state = replica_state(&persist.state, storage.head_op());
    let old = storage.state();
    if state.epoch == old.epoch {
        // vr-core may go back from a view it only voted to start
        // (StartViewChange, no DoViewChange) to the older view whose
        // primary is running (`may_rejoin`). The superblock keeps the
        // highest view: restarted, the replica goes through a view change
        // rather than back into a view it voted to leave.
        state.view_number = state.view_number.max(old.view_number);
    }
    let promises = |s: &ReplicaState| (s.epoch, s.view_number, s.last_normal_view, s.incarnation);
    let refresh = storage.config().commit_refresh_ops;
    let commit_lags = refresh > 0
        && state.epoch == old.epoch
        && state.commit_number >= old.commit_number.saturating_add(refresh);
    if promises(&state) != promises(&old) || commit_lags {
        storage.write_superblock(&state)?;
    }
    Ok(())
}

/// vr-core's promises as the superblock stores them; the commit number is
/// capped at `synced_op`, so that the scan never takes ops that were not
/// synced for damaged ones.
pub fn replica_state(state: &DurableState, synced_op: u64) -> ReplicaState {
    ReplicaState {
        epoch: state.epoch,
        view_number: state.view,
        last_normal_view: state.last_normal_view,
        incarnation: state.incarnation,
        commit_number: state.commit_number.min(synced_op),
    }
}

/// Why a disk must not be restarted from: start the replica with
/// `Replica::recover` instead (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoverFromPeers {
    /// The scan found ops it cannot read (at most the first few listed;
    /// `count` in all).
    FaultyOps {
        /// How many.
        count: usize,
        /// The first of them.
        first: Vec<u64>,
    },
    /// Checkpoint pages are damaged.
    FaultyPages(Vec<u64>),
    /// The checkpoint's manifest or file is lost.
    CheckpointLost {
        /// Its op.
        op: u64,
    },
    /// The checkpoint read back does not rebuild into vr-core's (its
    /// trailer is missing or its root differs).
    CheckpointMismatch {
        /// Its op.
        op: u64,
    },
    /// A record passed its checksums but is no [`encode_entry`] encoding.
    MalformedEntry {
        /// Its op.
        op: u64,
    },
    /// Both superblock copies are damaged or the file is gone.
    SuperblockLost,
    /// An earlier recovery from peers did not finish (the
    /// [`RECOVERING_FILE`] marker is there).
    RecoveryUnfinished,
    /// The replica's first start did not finish recovering from its peers
    /// (the [`RECOVERING_FILE`] marker says the directory never held data).
    FirstStartUnfinished,
}

impl RecoverFromPeers {
    /// Whether the directory held data the replica has lost: then it must
    /// recover with `Replica::recover_lost_disk` (never forming a new
    /// cluster). Only an unfinished first start held none.
    pub fn held_data(&self) -> bool {
        !matches!(self, RecoverFromPeers::FirstStartUnfinished)
    }

    /// The marker a reset for this reason leaves.
    pub fn marker(&self) -> Marker {
        if self.held_data() {
            Marker::DataLost
        } else {
            Marker::FirstStart
        }
    }
}

impl std::fmt::Display for RecoverFromPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoverFromPeers::FaultyOps { count, first } => {
                write!(
                    f,
                    "{count} log records fail their checksums (ops {first:?}...)"
                )
            }
            RecoverFromPeers::FaultyPages(pages) => {
                write!(f, "checkpoint pages {pages:?} fail their checksums")
            }
            RecoverFromPeers::CheckpointLost { op } => {
                write!(f, "the checkpoint at op {op} is lost")
            }
            RecoverFromPeers::CheckpointMismatch { op } => {
                write!(
                    f,
                    "the checkpoint at op {op} does not rebuild into its root"
                )
            }
            RecoverFromPeers::MalformedEntry { op } => {
                write!(f, "the log record of op {op} is not an entry")
            }
            RecoverFromPeers::SuperblockLost => write!(f, "both superblock copies are lost"),
            RecoverFromPeers::RecoveryUnfinished => {
                write!(f, "an earlier recovery from the peers did not finish")
            }
            RecoverFromPeers::FirstStartUnfinished => {
                write!(
                    f,
                    "the first start did not finish recovering from the peers"
                )
            }
        }
    }
}

/// Turns a recovery scan into `Replica::restart`'s input, or says why the
/// replica must recover from its peers instead. Pure: [`open_replica`]
/// also checks the recovery marker.
pub fn on_disk(recovered: Recovered) -> Result<OnDisk, RecoverFromPeers> {
    if !recovered.log.faulty.is_empty() {
        return Err(RecoverFromPeers::FaultyOps {
            count: recovered.log.faulty.len(),
            first: recovered.log.faulty.iter().take(8).copied().collect(),
        });
    }
    let checkpoint = match recovered.checkpoint {
        RecoveredCheckpoint::Empty => None,
        RecoveredCheckpoint::Lost { op, .. } => {
            return Err(RecoverFromPeers::CheckpointLost { op })
        }
        RecoveredCheckpoint::Read { faulty_pages, .. } if !faulty_pages.is_empty() => {
            return Err(RecoverFromPeers::FaultyPages(faulty_pages))
        }
        RecoveredCheckpoint::Read {
            op,
            root,
            mut pages,
            ..
        } => {
            let mismatch = RecoverFromPeers::CheckpointMismatch { op };
            let trailer = pages.pop().ok_or(mismatch.clone())?;
            let service_page_count = <[u8; 8]>::try_from(&trailer[..])
                .map(u64::from_le_bytes)
                .map_err(|_| mismatch.clone())?;
            if service_page_count > pages.len() as u64 {
                return Err(mismatch);
            }
            let pages: Vec<Arc<[u8]>> = pages.into_iter().map(Arc::from).collect();
            let checkpoint = Checkpoint::from_pages(op, pages, service_page_count);
            if checkpoint.summary.root != root {
                return Err(mismatch);
            }
            Some(checkpoint)
        }
    };
    let checkpoint_op = checkpoint.as_ref().map_or(0, |c| c.summary.op_number);
    let mut log = Vec::with_capacity(recovered.log.entries.len());
    for entry in &recovered.log.entries {
        let decoded = decode_entry(entry.op, entry.view, &entry.payload)
            .ok_or(RecoverFromPeers::MalformedEntry { op: entry.op })?;
        log.push(decoded);
    }
    let s = recovered.state;
    Ok(OnDisk {
        state: DurableState {
            epoch: s.epoch,
            view: s.view_number,
            last_normal_view: s.last_normal_view,
            incarnation: s.incarnation,
            commit_number: s.commit_number,
            log_base: checkpoint_op,
        },
        checkpoint,
        log,
    })
}

/// How a replica starts from its data directory.
pub enum Start<B: Backend> {
    /// The disk is intact: `Replica::restart(config, index, service, now,
    /// nonce, disk)`, and carry out its persists on `storage`.
    Restart {
        /// The opened storage.
        storage: Storage<B>,
        /// What the disk held.
        disk: OnDisk,
    },
    /// The disk is not to be trusted: the directory was reset (marked as
    /// recovering, formatted afresh). Start with `Replica::recover`, carry
    /// out its persists on `storage`, and call [`finish_recovery`] once a
    /// persist drained after the replica left `Status::Recovering` is
    /// durable.
    Recover {
        /// The reset storage.
        storage: Storage<B>,
        /// Why.
        why: RecoverFromPeers,
    },
}

/// Opens a replica's formatted data directory and decides how it starts
/// (see [`Start`]). `reopen` gives a fresh backend on the same directory,
/// for the reset (a failed open consumes the first). A never-formatted
/// directory is `Err(Error::Unformatted)`, as from [`Storage::open`]:
/// format it only for a replica of a new cluster.
pub fn open_replica<B: Backend>(
    backend: B,
    mut reopen: impl FnMut() -> io::Result<B>,
    config: Config,
) -> Result<Start<B>, Error> {
    let why = match Storage::open(backend, config) {
        Ok((mut storage, recovered)) => {
            if let Some(marker) = read_marker(storage.backend_mut())? {
                unfinished(marker)
            } else {
                match on_disk(recovered) {
                    Ok(disk) => return Ok(Start::Restart { storage, disk }),
                    Err(why) => why,
                }
            }
        }
        Err(Error::SuperblockLost) => RecoverFromPeers::SuperblockLost,
        // A reset interrupted between removing the files and formatting
        // leaves only the marker.
        Err(Error::Unformatted) => match read_marker(&mut reopen()?)? {
            Some(marker) => unfinished(marker),
            None => return Err(Error::Unformatted),
        },
        Err(e) => return Err(e),
    };
    let storage = reset_for_recovery_marked(reopen()?, config, why.marker())?;
    Ok(Start::Recover { storage, why })
}

fn unfinished(marker: Marker) -> RecoverFromPeers {
    match marker {
        Marker::DataLost => RecoverFromPeers::RecoveryUnfinished,
        Marker::FirstStart => RecoverFromPeers::FirstStartUnfinished,
    }
}

fn has_marker<B: Backend>(backend: &mut B) -> Result<bool, Error> {
    Ok(backend.list()?.iter().any(|n| n == RECOVERING_FILE))
}

/// The recovery marker, if there is one. Anything but the exact first-start
/// text (a torn or damaged marker too) counts as data lost: the safe side.
fn read_marker<B: Backend>(backend: &mut B) -> Result<Option<Marker>, Error> {
    if !has_marker(backend)? {
        return Ok(None);
    }
    let expected = marker_bytes(FIRST_START_TEXT);
    let mut bytes = vec![0; MARKER_BYTES];
    let first_start = backend.len(RECOVERING_FILE)? == MARKER_BYTES as u64
        && backend
            .read_at(RECOVERING_FILE, 0, &mut bytes)
            .is_ok_and(|n| n == MARKER_BYTES)
        && bytes == expected;
    Ok(Some(if first_start {
        Marker::FirstStart
    } else {
        Marker::DataLost
    }))
}

/// Resets a data directory for a replica that recovers from its peers:
/// writes the [`RECOVERING_FILE`] marker durably, then removes every file
/// of ours and formats the directory afresh. A crash at any point leaves
/// the marker, so the next start recovers again.
pub fn reset_for_recovery<B: Backend>(backend: B, config: Config) -> Result<Storage<B>, Error> {
    reset_for_recovery_marked(backend, config, Marker::DataLost)
}

/// [`reset_for_recovery`] with the marker given: [`Marker::FirstStart`]
/// prepares a never-formatted directory for a replica's first start.
pub fn reset_for_recovery_marked<B: Backend>(
    mut backend: B,
    config: Config,
    marker: Marker,
) -> Result<Storage<B>, Error> {
    config.validate()?;
    let text = match marker {
        Marker::DataLost => RECOVERING_TEXT,
        Marker::FirstStart => FIRST_START_TEXT,
    };
    // Both kinds are padded to one length, so that one overwrites the
    // other whole: the marker is never removed while the disk is untrusted.
    backend.write_at(RECOVERING_FILE, 0, &marker_bytes(text))?;
    backend.sync(RECOVERING_FILE)?;
    backend.sync_dir()?;
    for name in backend.list()? {
        if name == SUPERBLOCK_FILE
            || name == FORMAT_FILE
            || parse_segment_file_name(&name).is_some()
            || parse_checkpoint_file_name(&name).is_some()
        {
            backend.remove(&name)?;
        }
    }
    backend.sync_dir()?;
    Storage::format(&mut backend, &config)?;
    let (storage, _) = Storage::open(backend, config)?;
    Ok(storage)
}

/// The replica recovered from its peers and its disk now holds what it
/// installed (a persist drained after it left `Status::Recovering` is
/// durable): removes the [`RECOVERING_FILE`] marker, durably. From then on
/// the directory is an intact image again. Nothing to do without a marker.
pub fn finish_recovery<B: Backend>(storage: &mut Storage<B>) -> Result<(), Error> {
    let backend = storage.backend_mut();
    if has_marker(backend)? {
        backend.remove(RECOVERING_FILE)?;
        backend.sync_dir()?;
    }
    Ok(())
}

/// Whether the directory is marked as recovering from peers.
pub fn recovery_unfinished<B: Backend>(storage: &mut Storage<B>) -> Result<bool, Error> {
    has_marker(storage.backend_mut())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Identity;
    use crate::MemDisk;

    fn config() -> Config {
        Config::new(Identity {
            cluster_id: 9,
            member_id: 1,
        })
    }

    fn entry(op_number: u64, view: u64) -> LogEntry {
        LogEntry {
            op_number,
            view,
            client_id: 0xabc0_0000_0000_0000_0000_0000_0000_0001,
            request_number: op_number * 3,
            op: format!("op{op_number}").into_bytes(),
            kind: if op_number == 2 {
                EntryKind::Reconfiguration
            } else {
                EntryKind::Operation
            },
        }
    }

    fn persist(sequence: u64, state: DurableState, entries: Vec<LogEntry>) -> Persist {
        Persist {
            sequence,
            state,
            truncate_after: None,
            entries,
            checkpoint: None,
        }
    }

    #[test]
    fn entries_round_trip_and_malformed_ones_are_refused() {
        for e in [entry(1, 0), entry(2, 5)] {
            let mut bytes = Vec::new();
            encode_entry(&e, &mut bytes);
            assert_eq!(decode_entry(e.op_number, e.view, &bytes), Some(e.clone()));
            assert_eq!(decode_entry(1, 0, &bytes[..bytes.len() - 1]), None);
            let mut bad_kind = bytes.clone();
            bad_kind[24] = 7;
            assert_eq!(decode_entry(1, 0, &bad_kind), None);
        }
    }

    /// A persist applied, then the directory reopened: the same log, the
    /// same promises, a checkpoint rebuilt with its root.
    #[test]
    fn a_persisted_replica_reads_back_as_it_was() {
        let mut disk = MemDisk::new();
        Storage::format(&mut disk, &config()).unwrap();
        let (mut storage, _) = Storage::open(disk.clone(), config()).unwrap();
        let state = DurableState {
            view: 3,
            last_normal_view: 3,
            incarnation: 2,
            commit_number: 40,
            ..DurableState::default()
        };
        let entries: Vec<LogEntry> = (1..=4).map(|op| entry(op, 3)).collect();
        apply_persist(&mut storage, &persist(1, state, entries.clone()), &[]).unwrap();
        assert_eq!(storage.state().view_number, 3);
        assert_eq!(
            storage.state().commit_number,
            4,
            "capped at the synced head"
        );
        let pages: Vec<Arc<[u8]>> = vec![Arc::from(&b"service"[..]), Arc::from(&b"table"[..])];
        let checkpoint = Checkpoint::from_pages(3, pages.clone(), 1);
        let mut with_checkpoint = persist(2, state, vec![entry(5, 3)]);
        with_checkpoint.checkpoint = Some(checkpoint.summary);
        apply_persist(&mut storage, &with_checkpoint, &pages).unwrap();
        drop(storage);
        let (_, recovered) = Storage::open(disk, config()).unwrap();
        let on = on_disk(recovered).unwrap();
        assert_eq!(on.state.view, 3);
        assert_eq!(on.state.incarnation, 2);
        assert_eq!(on.state.log_base, 3);
        let rebuilt = on.checkpoint.expect("a checkpoint");
        assert_eq!(rebuilt.summary, checkpoint.summary);
        let ops: Vec<u64> = on.log.iter().map(|e| e.op_number).collect();
        assert_eq!(ops, [4, 5]);
        assert_eq!(on.log[0], entries[3]);
    }

    /// A damaged op is never restarted from: the replica recovers from its
    /// peers, and a crash before that finished recovers again.
    #[test]
    fn damage_leads_to_recovery_until_it_finished() {
        let mut disk = MemDisk::new();
        Storage::format(&mut disk, &config()).unwrap();
        let (mut storage, _) = Storage::open(disk.clone(), config()).unwrap();
        let state = DurableState {
            view: 1,
            last_normal_view: 1,
            commit_number: 3,
            ..DurableState::default()
        };
        let entries: Vec<LogEntry> = (1..=3).map(|op| entry(op, 1)).collect();
        apply_persist(&mut storage, &persist(1, state, entries), &[]).unwrap();
        drop(storage);
        disk.corrupt_sector("log-00000000000000000001", 0, 5);
        let reopen = disk.clone();
        let start = open_replica(disk.clone(), || Ok(reopen.clone()), config()).unwrap();
        let Start::Recover { mut storage, why } = start else {
            panic!("restarted from a damaged disk");
        };
        assert!(matches!(why, RecoverFromPeers::FaultyOps { .. }), "{why:?}");
        assert!(recovery_unfinished(&mut storage).unwrap());
        assert_eq!(storage.head_op(), 0, "formatted afresh");
        drop(storage);
        // Crashed before the recovery finished: it recovers again.
        let start = open_replica(disk.clone(), || Ok(reopen.clone()), config()).unwrap();
        let Start::Recover { mut storage, why } = start else {
            panic!("restarted from a partial disk");
        };
        assert_eq!(why, RecoverFromPeers::RecoveryUnfinished);
        finish_recovery(&mut storage).unwrap();
        drop(storage);
        let start = open_replica(disk, || Ok(reopen.clone()), config()).unwrap();
        assert!(matches!(start, Start::Restart { .. }));
    }
}
