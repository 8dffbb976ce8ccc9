//! Durable replicas: the persist step ([`Config::durability`] =
//! [`Durability::Disk`]).
//!
//! With memory-only replicas, VR is safe while at most f replicas are down
//! or recovering at once (§4.3). Replicas that share a power source fail
//! together, so a replica may keep its promises on disk instead: the
//! embedding carries out [`Output::Persist`] (write, then `fdatasync`) and
//! answers with [`Replica::handle_persisted`]. The core stays sans-IO: it
//! says what must be durable, and holds back every message whose promise
//! rests on it until the embedding says it is.
//!
//! What waits for what:
//!
//! - a backup's `PrepareOk` acknowledges only ops its disk holds (§4.1
//!   step 4 with "stable storage"), and the primary counts itself in a
//!   quorum only for ops its own disk holds: a committed op is on a quorum
//!   of disks;
//! - `StartViewChange` and `DoViewChange` for view v leave only once view v
//!   is on disk: a replica that restarts never takes part in a view it
//!   promised to leave (§4.2);
//! - one persist is in flight at a time, and the next carries everything
//!   that changed meanwhile (group commit: under load, one `fdatasync`
//!   covers many Prepares).
//!
//! A replica whose disk survived restarts with [`Replica::restart`]: its
//! log, view and incarnation come back, so it rejoins without the recovery
//! protocol and fetches only what it missed. One whose disk is lost starts
//! with [`Replica::recover`], as a memory-only replica does.

use alloc::vec::Vec;

use super::{Output, Replica, Status};
use crate::checkpoint::{Checkpoint, CheckpointSummary};
use crate::config::{Config, ConfigError, Durability};
use crate::message::{LogEntry, Message};
use crate::time::Instant;
use crate::{ReplicaIndex, Service};

/// What a replica keeps on disk besides its log: the promises it made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DurableState {
    /// The epoch (§7).
    pub epoch: u32,
    /// The view-number: the replica takes part in no older view.
    pub view: u64,
    /// The latest view in which the replica was normal: ranks its log in a
    /// view change (§4.2).
    pub last_normal_view: u64,
    /// The replica's incarnation (§4.3): unchanged by a restart from disk.
    pub incarnation: u64,
    /// Ops up to here are known committed: a restarted replica executes
    /// them at once. Only a hint (commits are learned again).
    pub commit_number: u64,
    /// The log on disk holds the entries after this op; those at or below
    /// it may be dropped (the checkpoint holds their effect).
    pub log_base: u64,
}

/// An [`Output::Persist`]: make this durable, in this order, then call
/// [`Replica::handle_persisted`] with `sequence`.
///
/// 1. If `truncate_after` is set, drop the log entries after that op (a
///    checkpoint fetched from a peer replaces the entries up to it too).
/// 2. If `checkpoint` is set, store that checkpoint's pages
///    ([`Replica::checkpoint_pages`], read now: a later checkpoint replaces
///    them).
/// 3. Append `entries` (ascending, contiguous, starting right after the
///    log's end or, after a checkpoint, after `state.log_base`).
/// 4. Sync (`fdatasync`).
/// 5. Write `state` and sync it, and only then answer. After the log: a
///    state "normal in view v" on disk without v's log would let a
///    restarted replica claim a log it does not hold.
///
/// `vr_storage::replica::apply_persist` does exactly this on a
/// `vr-storage` directory.
///
/// An embedding may answer several persists with one sync, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persist {
    /// Answered by [`Replica::handle_persisted`]; increases by one per
    /// persist.
    pub sequence: u64,
    /// The promises to store.
    pub state: DurableState,
    /// Drop the entries after this op first: a view change replaced the
    /// log's uncommitted suffix, or a checkpoint replaced the whole log.
    pub truncate_after: Option<u64>,
    /// Entries to append.
    pub entries: Vec<LogEntry>,
    /// A checkpoint taken or installed since the last persist, whose pages
    /// must be stored: on restart the log is replayed from it.
    pub checkpoint: Option<CheckpointSummary>,
}

/// What a durable replica's disk held when it restarted: the input of
/// [`Replica::restart`], as its persists left it.
#[derive(Clone, Debug, Default)]
pub struct OnDisk {
    /// The promises.
    pub state: DurableState,
    /// The checkpoint the log starts from (none: the log starts at op 1).
    pub checkpoint: Option<Checkpoint>,
    /// The log after the checkpoint (entries at or below it are skipped).
    pub log: Vec<LogEntry>,
}

/// A persist handed to the embedding and not yet answered.
#[derive(Clone, Debug)]
struct InFlight {
    sequence: u64,
    /// The log's end it covers.
    op_number: u64,
    state: DurableState,
}

/// The replica's side of the persist step.
#[derive(Clone, Debug, Default)]
pub(crate) struct PersistState {
    /// The last sequence number handed out.
    sequence: u64,
    in_flight: Option<InFlight>,
    /// The log on disk equals the log in memory up to here.
    pub(crate) persisted_op: u64,
    /// The promises on disk.
    pub(crate) persisted: DurableState,
    /// The log was cut after this op since the last persist was issued.
    truncate_after: Option<u64>,
    /// The checkpoint on disk (op-number), to tell when a new one must go.
    checkpoint_op: u64,
}

impl<S: Service> Replica<S> {
    /// Whether promises go to disk before they are made.
    pub(super) fn durable(&self) -> bool {
        self.config.durability == Durability::Disk
    }

    /// The promises as they stand in memory.
    fn durable_state(&self) -> DurableState {
        DurableState {
            epoch: self.epoch,
            view: self.view,
            last_normal_view: self.last_normal_view,
            incarnation: self.incarnation(),
            commit_number: self.commit_number,
            log_base: self.log_base,
        }
    }

    /// The highest op this replica may acknowledge, or count itself for as
    /// primary: its log's end, or with durability the end of what its disk
    /// holds.
    pub(super) fn ack_op(&self) -> u64 {
        if !self.durable()
            || self
                .config
                .has_bug(crate::config::InjectedBug::AckBeforePersist)
        {
            return self.op_number;
        }
        self.persist.persisted_op.min(self.op_number)
    }

    /// Whether `message` must wait until its view is on disk: a vote for a
    /// view (§4.2) binds the replica to leave the older ones.
    pub(super) fn holds_for_disk(&self, message: &Message) -> bool {
        if !self.durable() {
            return false;
        }
        let view = match message {
            Message::StartViewChange(m) => m.view,
            Message::DoViewChange(m) => m.view,
            _ => return false,
        };
        view > self.persist.persisted.view
    }

    /// The log was cut after `keep` (a view change replaced the suffix, or
    /// a checkpoint the whole log): what the disk holds after it is no
    /// longer this log.
    pub(super) fn note_log_cut(&mut self, keep: u64) {
        if !self.durable() {
            return;
        }
        let persist = &mut self.persist;
        persist.truncate_after = Some(persist.truncate_after.map_or(keep, |t| t.min(keep)));
        persist.persisted_op = persist.persisted_op.min(keep);
    }

    /// After every input: hands the embedding what changed since the last
    /// persist, unless one is in flight (it will follow its answer).
    pub(super) fn issue_persist(&mut self) {
        if !self.durable() || self.persist.in_flight.is_some() {
            return;
        }
        let state = self.durable_state();
        let checkpoint = (self.checkpoint.summary.op_number != self.persist.checkpoint_op)
            .then_some(self.checkpoint.summary);
        let from = self.persist.persisted_op.max(self.log_base);
        // The commit number alone is no reason for a persist: nothing rests
        // on it (a restarted replica learns commits from the primary again),
        // and the disk takes it with the next entries or promise. Persisting
        // it by itself would put a disk round trip between two batches.
        let without_commit = |s: DurableState| DurableState {
            commit_number: 0,
            ..s
        };
        let changed = without_commit(state) != without_commit(self.persist.persisted)
            || self.op_number > from
            || self.persist.truncate_after.is_some()
            || checkpoint.is_some();
        if !changed {
            return;
        }
        let entries = self.log_after(from).to_vec();
        self.persist.sequence += 1;
        let sequence = self.persist.sequence;
        self.persist.in_flight = Some(InFlight {
            sequence,
            op_number: self.op_number,
            state,
        });
        if let Some(summary) = checkpoint {
            self.persist.checkpoint_op = summary.op_number;
        }
        let truncate_after = self.persist.truncate_after.take();
        self.outbox.push_back(Output::Persist(Persist {
            sequence,
            state,
            truncate_after,
            entries,
            checkpoint,
        }));
    }

    /// The embedding made persist `sequence` durable (§4.1 with stable
    /// storage): acknowledge the ops it covers, count them as primary, and
    /// send the view-change votes that waited for their view.
    pub fn handle_persisted(&mut self, now: Instant, sequence: u64) {
        self.now = now;
        let Some(in_flight) = self.persist.in_flight.take_if(|f| f.sequence == sequence) else {
            self.stats.messages_invalid += 1;
            return;
        };
        // A cut while it was in flight leaves the disk's log valid only up
        // to the cut (the next persist truncates it).
        let cut = self.persist.truncate_after.unwrap_or(u64::MAX);
        self.persist.persisted_op = in_flight.op_number.min(cut);
        let view_was_on_disk = self.persist.persisted.view >= self.view;
        self.persist.persisted = in_flight.state;
        self.stats.persists_completed += 1;
        match self.status {
            Status::Normal if self.is_primary() => {
                let me = usize::from(self.replica);
                self.prepare_ok_op[me] = self.prepare_ok_op[me].max(self.ack_op());
                self.advance_commit_from_acks(now);
            }
            Status::Normal if in_flight.state.view == self.view => self.send_prepare_ok(),
            // The view's votes were held back (`holds_for_disk`) until
            // this persist put the view on disk: send them now.
            Status::ViewChange if !view_was_on_disk && self.persist.persisted.view >= self.view => {
                self.on_view_change_resend_timeout(now);
            }
            _ => {}
        }
        self.apply_pending_epoch(now);
        self.issue_persist();
    }

    /// The pages of the latest checkpoint (§5.1): what an embedding stores
    /// when a [`Persist`] names it. The service's pages come first, then
    /// the client table's.
    pub fn checkpoint_pages(&self) -> &[alloc::sync::Arc<[u8]>] {
        &self.checkpoint.pages
    }

    /// A replica restarted from its disk ([`Config::durability`] =
    /// [`Durability::Disk`]), with what its persists left there. `service`
    /// must be empty.
    ///
    /// It forgot nothing it promised, so it takes part at once, fenced by
    /// nothing: a backup normal in its view if it was one there (ops are
    /// re-executed up to the commit-number it knew; the rest is learned
    /// from the primary), else (it was that view's primary, or not normal)
    /// it moves on to the next view. Its
    /// configuration must be that of `state.epoch`.
    pub fn restart(
        config: Config,
        replica: ReplicaIndex,
        service: S,
        now: Instant,
        nonce: u64,
        disk: OnDisk,
    ) -> Result<Self, ConfigError> {
        let OnDisk {
            state,
            checkpoint,
            log,
        } = disk;
        if config.durability != Durability::Disk || config.epoch != state.epoch {
            return Err(ConfigError::BadDurableState);
        }
        let mut this = Replica::blank(config, replica, service, now, nonce)?;
        match checkpoint {
            Some(checkpoint) => {
                if !this.install_checkpoint(checkpoint) {
                    return Err(ConfigError::BadDurableState);
                }
                this.persist.truncate_after = None;
            }
            None => this.take_checkpoint(0),
        }
        let base = this.log_base;
        let log: Vec<LogEntry> = log.into_iter().filter(|e| e.op_number > base).collect();
        if !super::view_change::is_contiguous_from(&log, base + 1)
            || state.last_normal_view > state.view
        {
            return Err(ConfigError::BadDurableState);
        }
        this.op_number = base + log.len() as u64;
        this.log = log;
        this.view = state.view;
        this.last_normal_view = state.last_normal_view;
        this.do_view_change_view_max = state.view;
        let me = usize::from(this.replica);
        this.crash_vector[me] = state.incarnation;
        this.persist.persisted = state;
        this.persist.persisted_op = this.op_number;
        this.persist.checkpoint_op = this.checkpoint.summary.op_number;
        // Promises to a primary's lease (§6) are kept, as after `recover`.
        this.lease_promise_until = now + this.config.lease_duration_ns;
        this.commit_to(state.commit_number.min(this.op_number));
        // A primary sends its Prepares before its own disk holds them, so
        // its backups may hold ops of this view that its disk lacks:
        // resumed as primary, it would give those op-numbers to new
        // requests, two ops at one op-number in one view (§4.1), and the
        // replicas diverge. It moves on to the next view instead, whose
        // view change takes the longest log of the view (§4.2).
        if state.last_normal_view == state.view && !this.is_primary() {
            this.status = Status::Normal;
            this.view_start_op = this.op_number;
            this.enter_normal_timers(now);
            // It likely missed ops while down: ask the primary now rather
            // than at its next Prepare or heartbeat. Over TCP that also
            // opens this replica's connection to the primary, which tells
            // the primary's runtime that it is back (issue 18, item 8: the
            // primary's link to it may be waiting out a long backoff).
            this.request_state(now);
        } else {
            this.start_view_change(now, state.view + 1);
        }
        this.stats.restarts_from_disk += 1;
        this.issue_persist();
        Ok(this)
    }
}
