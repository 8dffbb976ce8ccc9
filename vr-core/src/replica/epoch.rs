//! Reconfiguration (§7): epochs, `StartEpoch`, `EpochStarted`, and the
//! status `Transitioning`.
//!
//! An administrator's [`Reconfiguration`] request goes through the log like
//! any request; after appending it the primary admits no other request of
//! the epoch. Executing the committed entry at op `n` ends epoch `e` on
//! every replica that executes it:
//!
//! - a member of the new configuration ("carrier") enters epoch `e + 1` in
//!   view 0 with its log up to `n` and its state: normal at once;
//! - a replica not in it retires: it takes part in nothing any more, and
//!   tells replicas and clients still in `e` about the new epoch;
//! - both send [`StartEpoch`] to every member of the new epoch, resent until
//!   each answers [`EpochStarted`]. A retired replica may be shut down once
//!   a quorum of the new epoch has answered ([`Replica::may_shut_down`]).
//!
//! A member of the new epoch that lacks the ops up to `n` (a new member, or
//! an old one that had not executed `n` when it heard of the new epoch) is
//! *transitioning*: it takes part in nothing (no PrepareOk, no view-change
//! vote, no recovery answer) until it has fetched the committed ops up to
//! `n` (or a checkpoint past it) with the staged state transfer of §5.2,
//! from members of the new epoch. Only then does it join, in view 0 with
//! last-normal-view 0: its log is the committed prefix, a prefix of view
//! 0's log, so its votes are as safe as any backup's of view 0.
//!
//! Views restart at 0 in each epoch; messages carry the sender's epoch (the
//! frame header's), and a replica handles only its own epoch's messages. One
//! from an older epoch is answered with `StartEpoch` (to a replica, or to a
//! client, which then follows the new members); one from a newer epoch is
//! dropped: its sender, or another, will send the `StartEpoch` that moves
//! this replica on.

use alloc::vec::Vec;

use super::{Output, Replica, Status, Sync, SyncGoal};
use crate::client_table::Lookup;
use crate::config::Config;
use crate::message::{
    EntryKind, EpochStarted, MemberId, Message, Reconfiguration, Reply, StartEpoch,
};
use crate::time::Instant;
use crate::Service;

/// Epochs whose members a replica remembers, to name the senders of
/// messages from older epochs.
const EPOCHS_REMEMBERED: usize = 8;

/// How the current epoch began, and who has acknowledged it.
#[derive(Clone, Debug, Default)]
pub(crate) struct EpochState {
    /// The op-number of the reconfiguration entry that began this epoch
    /// (0 in epoch 0, or when unknown: a replica started in a later epoch).
    pub(crate) start_op: u64,
    /// The view in which that entry was prepared.
    pub(crate) entry_view: u64,
    /// Transitioning: the replicas it may fetch the ops up to the
    /// reconfiguration from — the `StartEpoch` sender, the new epoch's
    /// members, and the previous epoch's if it was one of them (those that
    /// left serve until the new epoch has started) — and the one asked.
    pub(crate) sources: Vec<MemberId>,
    pub(crate) source_at: usize,
    /// A replica that left, answering a member of the new epoch: where the
    /// answer goes (`send` names replicas by the old epoch's indexes).
    pub(crate) reply_to: Option<MemberId>,
    /// The members of this epoch, in index order.
    pub(crate) members: Vec<MemberId>,
    /// Their addresses, if the reconfiguration carried them.
    pub(crate) addresses: Vec<Vec<u8>>,
    /// Members of this epoch this replica still sends `StartEpoch` to: it
    /// executed the reconfiguration and they have not answered yet.
    pub(crate) pending: Vec<MemberId>,
    /// Members of this epoch that answered `EpochStarted`.
    pub(crate) started: Vec<MemberId>,
    /// The members of recent epochs: `(epoch, members)`, oldest first.
    pub(crate) history: Vec<(u32, Vec<MemberId>)>,
    /// Set while executing: the reconfiguration just committed, applied
    /// once the current input is handled (`apply_pending_epoch`).
    pub(crate) switch: Option<(u64, u64, Reconfigured)>,
    /// Primary: the op-number of a reconfiguration in the log above the
    /// commit-number (0: none). No request is admitted while it is set.
    pub(crate) reconfiguration_at: u64,
    /// Primary: clients whose requests were refused behind a pending
    /// reconfiguration; told of the new epoch as soon as it begins, so
    /// that they resend at once instead of after their timeout. Bounded by
    /// `request_queue_max`.
    pub(crate) waiting_clients: Vec<crate::ClientId>,
}

/// What a reconfiguration entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reconfigured {
    pub(crate) epoch: u32,
    pub(crate) members: Vec<MemberId>,
    pub(crate) addresses: Vec<Vec<u8>>,
}

impl EpochState {
    /// The state of a replica started with `config`.
    pub(crate) fn starting(config: &Config) -> EpochState {
        EpochState {
            members: config.member_ids(),
            history: alloc::vec![(config.epoch, config.member_ids())],
            ..EpochState::default()
        }
    }
}

/// The payload of a reconfiguration entry (see [`EntryKind::Reconfiguration`]).
pub(crate) fn encode_reconfiguration(r: &Reconfigured) -> Vec<u8> {
    let mut op = Vec::with_capacity(5 + r.members.len());
    op.extend_from_slice(&r.epoch.to_le_bytes());
    // Members and addresses were checked (`addresses_fit`, `with_members`):
    // at most 255 members, addresses of at most 255 bytes.
    op.push(r.members.len() as u8);
    op.extend(r.members.iter().map(|m| m.0));
    for address in &r.addresses {
        op.push(address.len() as u8);
        op.extend_from_slice(address);
    }
    op
}

/// Reads a reconfiguration entry's payload.
pub(crate) fn decode_reconfiguration(op: &[u8]) -> Option<Reconfigured> {
    let (epoch, rest) = op.split_first_chunk::<4>()?;
    let (&count, rest) = rest.split_first()?;
    let count = usize::from(count);
    let members = rest.get(..count)?.iter().map(|&m| MemberId(m)).collect();
    let mut rest = &rest[count..];
    let mut addresses = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let address = tail.get(..usize::from(len))?;
        addresses.push(address.to_vec());
        rest = &tail[usize::from(len)..];
    }
    Some(Reconfigured {
        epoch: u32::from_le_bytes(*epoch),
        members,
        addresses,
    })
}

/// Whether `addresses` may go with `members`: none, or one each, bounded.
fn addresses_fit(members: &[MemberId], addresses: &[Vec<u8>]) -> bool {
    (addresses.is_empty() || addresses.len() == members.len())
        && addresses
            .iter()
            .all(|a| a.len() <= crate::message::ADDRESS_SIZE_MAX)
}

impl<S: Service> Replica<S> {
    /// This replica's member id: its name across epochs.
    pub fn member_id(&self) -> MemberId {
        self.member
    }

    /// The current epoch-number (§7).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Whether this replica left the configuration and a quorum of the new
    /// epoch's members reported that they hold its state (`EpochStarted`):
    /// it may be shut down (§7.2). An administrator polls this (through
    /// the embedding's status report, e.g. `VR.STATUS` in vr-kv) before
    /// stopping a replica removed by a reconfiguration.
    pub fn may_shut_down(&self) -> bool {
        self.status == Status::Retired
            // A majority of the new epoch's members.
            && self.epoch_state.started.len() > self.epoch_state.members.len() / 2
    }

    /// The members of the current epoch, in index order.
    pub fn epoch_members(&self) -> Vec<MemberId> {
        if self.status == Status::Retired {
            return self.epoch_state.members.clone();
        }
        self.config.member_ids()
    }

    /// The addresses of the current epoch's members, in index order, as the
    /// reconfiguration that began it carried them (empty in epoch 0, or if
    /// it carried none). An embedding reads them when the epoch changes to
    /// reach new members.
    pub fn epoch_addresses(&self) -> &[Vec<u8>] {
        &self.epoch_state.addresses
    }

    /// Durable replicas: gives back, after [`Replica::restart`], the
    /// addresses the reconfiguration that began the current epoch carried
    /// (as [`Replica::epoch_addresses`] returned them before the crash; the
    /// embedding stores them with the epoch's membership). The replica
    /// passes them on in its `StartEpoch` notices, so that clients and
    /// replicas of older epochs can reach members they never knew. Refused
    /// (`false`) unless one per member of the epoch, each at most 255
    /// bytes.
    pub fn restore_epoch_addresses(&mut self, addresses: Vec<Vec<u8>>) -> bool {
        let members = self.config.member_ids();
        if addresses.is_empty() || !addresses_fit(&members, &addresses) {
            return false;
        }
        self.epoch_state.addresses = addresses;
        true
    }

    /// The members of `epoch`, if remembered.
    fn members_of_epoch(&self, epoch: u32) -> Option<&[MemberId]> {
        let history = &self.epoch_state.history;
        history
            .iter()
            .rev()
            .find(|(e, _)| *e == epoch)
            .map(|(_, m)| &m[..])
    }

    /// The notice of the current epoch that this replica sends.
    fn start_epoch_notice(&self) -> StartEpoch {
        StartEpoch {
            view: if self.status == Status::Retired {
                0
            } else {
                self.view
            },
            epoch: self.epoch,
            op_number: self.epoch_state.start_op,
            entry_view: self.epoch_state.entry_view,
            members: self.epoch_members(),
            addresses: self.epoch_state.addresses.clone(),
            sender: self.member,
        }
    }

    /// §7.1 at the primary: a reconfiguration request. It is checked,
    /// deduplicated like a request, and appended to the log; from then on
    /// the primary admits no other request of this epoch.
    pub(super) fn on_reconfiguration(&mut self, now: Instant, message: Reconfiguration) {
        if !self.is_primary() || self.forming_cluster() {
            self.stats.requests_dropped += 1;
            return;
        }
        // Already executed (it may be what began this epoch): the cached
        // reply, as for any request.
        if self.answered_from_client_table(message.client_id, message.request_number) {
            return;
        }
        let keeps_a_member = message
            .members
            .iter()
            .any(|&m| self.config.index_of_member(m).is_some());
        let valid = message.epoch == self.epoch
            && self.epoch < u32::MAX
            && !self.config.has_witnesses()
            && keeps_a_member
            && addresses_fit(&message.members, &message.addresses)
            && self.config.with_members(&message.members).is_some();
        let in_progress = self
            .requests_in_progress
            .get(&message.client_id)
            .is_some_and(|&r| r >= message.request_number);
        if !valid {
            self.stats.reconfigurations_refused += 1;
            return;
        }
        if in_progress || self.epoch_state.reconfiguration_at != 0 || self.window_is_full() {
            self.stats.requests_dropped += 1;
            return;
        }
        let op = encode_reconfiguration(&Reconfigured {
            epoch: self.epoch + 1,
            members: message.members,
            addresses: message.addresses,
        });
        // Requests queued behind it would belong to the next epoch: drop
        // them; their clients are told of the new epoch when it begins.
        self.stats.requests_dropped += self.request_queue.len() as u64;
        let queued: Vec<crate::ClientId> =
            self.request_queue.drain(..).map(|r| r.client_id).collect();
        for client_id in queued {
            self.note_waiting_client(client_id);
        }
        self.prepare_entry(
            now,
            message.client_id,
            message.request_number,
            op,
            EntryKind::Reconfiguration,
        );
        self.epoch_state.reconfiguration_at = self.op_number;
    }

    /// A request refused behind a pending reconfiguration: its client is
    /// told of the new epoch when it begins.
    pub(super) fn note_waiting_client(&mut self, client_id: crate::ClientId) {
        let waiting = &mut self.epoch_state.waiting_clients;
        if waiting.len() < self.config.request_queue_max as usize && !waiting.contains(&client_id) {
            waiting.push(client_id);
        }
    }

    /// Primary entering a view: notes a reconfiguration in its log that is
    /// not yet committed, so that it admits no request behind it.
    pub(super) fn note_reconfiguration_in_log(&mut self) {
        let pending = self
            .log_after(self.commit_number.max(self.log_base))
            .iter()
            .rev()
            .find(|e| e.kind == EntryKind::Reconfiguration)
            .map(|e| e.op_number);
        self.epoch_state.reconfiguration_at = pending.unwrap_or(0);
    }

    /// Executes the reconfiguration entry at `op_number` (§7.2): records
    /// its reply, and, if it begins an epoch this replica is not yet in,
    /// schedules the move to it for the end of the current input.
    pub(super) fn execute_reconfiguration(&mut self, op_number: u64) {
        let entry = self.entry(op_number);
        let (client_id, request_number) = (entry.client_id, entry.request_number);
        let entry_view = entry.view;
        let Some(reconfigured) = decode_reconfiguration(&entry.op) else {
            return; // Cannot happen: the primary built it.
        };
        let epoch = reconfigured.epoch;
        if matches!(
            self.client_table.lookup(client_id, request_number),
            Lookup::New
        ) {
            let result = epoch.to_le_bytes().to_vec();
            if self.is_primary() {
                self.outbox.push_back(Output::Reply(Reply {
                    view: self.view,
                    client_id,
                    request_number,
                    op_number,
                    result: result.clone(),
                }));
            }
            self.client_table
                .record(client_id, request_number, op_number, result);
        }
        self.requests_in_progress.remove(&client_id);
        if epoch > self.epoch {
            self.epoch_state.switch = Some((op_number, entry_view, reconfigured));
        }
    }

    /// Called after every input: moves to the epoch whose reconfiguration
    /// was executed during it.
    pub(super) fn apply_pending_epoch(&mut self, now: Instant) {
        let Some((op_number, entry_view, reconfigured)) = self.epoch_state.switch.take() else {
            return;
        };
        let Reconfigured {
            epoch,
            members,
            addresses,
        } = reconfigured;
        let Some(mut next) = self.config.with_members(&members) else {
            self.stats.messages_invalid += 1;
            return;
        };
        next.epoch = epoch;
        let old_members = self.config.member_ids();
        if self.is_primary() {
            // Tell the old epoch's backups that the reconfiguration
            // committed (§7.2), before this replica speaks only the new
            // epoch: the ones that stay start the new epoch at once, the
            // others retire, instead of waiting for a timeout to ask.
            self.send_to_others(Message::Commit(crate::message::Commit {
                view: self.view,
                commit_number: self.commit_number,
                op_number: self.op_number,
                timestamp_ns: self.now.as_nanos(),
                full_commit_min: self.full_commit_min,
            }));
        }
        self.remember_epoch(self.epoch, old_members);
        self.remember_epoch(epoch, members.clone());
        self.epoch = epoch;
        self.epoch_state.start_op = op_number;
        self.epoch_state.entry_view = entry_view;
        self.epoch_state.members = members.clone();
        self.epoch_state.addresses = addresses;
        self.epoch_state.started.clear();
        self.epoch_state.pending = members
            .iter()
            .copied()
            .filter(|&m| m != self.member)
            .collect();
        self.stats.epochs_started += 1;
        match next.index_of_member(self.member) {
            Some(index) if self.earlier_life_may_have_entered(op_number, entry_view) => {
                // Its earlier incarnation may have been a member of this
                // epoch already, and voted there: recover in it, so that
                // a new incarnation fences those votes and the epoch's
                // primary hands it what they helped commit.
                self.enter_epoch_config(now, next, index);
                self.start_recovery(now);
            }
            Some(index) => {
                self.enter_epoch_config(now, next, index);
                self.status = Status::Normal;
                self.enter_normal_timers(now);
            }
            None => self.retire(),
        }
        self.send_start_epochs(now);
        // Clients refused behind the reconfiguration resend to the new
        // members now (§7.3), not after their timeout.
        let notice = self.start_epoch_notice();
        for client_id in core::mem::take(&mut self.epoch_state.waiting_clients) {
            self.outbox.push_back(Output::NewEpoch {
                client_id,
                notice: notice.clone(),
            });
        }
    }

    fn remember_epoch(&mut self, epoch: u32, members: Vec<MemberId>) {
        let history = &mut self.epoch_state.history;
        if history.iter().any(|(e, _)| *e == epoch) {
            return;
        }
        history.push((epoch, members));
        if history.len() > EPOCHS_REMEMBERED {
            history.remove(0);
        }
    }

    /// Takes `next` as the configuration, with index `index`, in view 0 of
    /// the current epoch: everything that belonged to the previous epoch's
    /// views and indexes is reset.
    fn enter_epoch_config(&mut self, now: Instant, next: Config, index: crate::ReplicaIndex) {
        let n = usize::from(next.replica_count);
        self.config = next;
        self.replica = index;
        self.view = 0;
        self.last_normal_view = 0;
        self.do_view_change_view_max = 0;
        self.crash_vector = core::iter::repeat_n(0, n).collect();
        self.prepare_ok_op = alloc::vec![0; n];
        self.prepare_ok_commit = alloc::vec![0; n];
        self.prepare_ok_heard_at = alloc::vec![now; n];
        self.lease_acked_ns = alloc::vec![0; n];
        self.do_view_change_from = alloc::vec![None; n];
        self.reset_view_state(0);
        self.recovery = None;
        self.checkpoint_fetcher = None;
        self.retained_fetcher = None;
        self.view_start_op = self.op_number;
        self.full_commit_min = self.commit_number;
        self.primary_heard_at = now;
        self.epoch_state.reconfiguration_at = 0;
    }

    /// Leaves the configuration: takes part in nothing any more.
    fn retire(&mut self) {
        self.reset_view_state(self.view);
        self.recovery = None;
        self.status = Status::Retired;
        self.epoch_state.reconfiguration_at = 0;
    }

    /// Sends `StartEpoch` to the members that have not answered, and arms
    /// the resend.
    fn send_start_epochs(&mut self, now: Instant) {
        self.timers.epoch = None;
        if self.epoch_state.pending.is_empty() {
            return;
        }
        let notice = self.start_epoch_notice();
        for member in self.epoch_state.pending.clone() {
            self.send_member(member, Message::StartEpoch(notice.clone()));
        }
        self.timers.epoch = Some(now + self.config.resend_interval_ns);
    }

    /// The epoch timer: resend `StartEpoch`.
    pub(super) fn on_epoch_timeout(&mut self, now: Instant) {
        self.send_start_epochs(now);
    }

    /// §7.2: a member of the new epoch holds the state up to its start.
    pub(super) fn on_epoch_started(&mut self, message: EpochStarted) {
        if message.epoch != self.epoch || message.member == self.member {
            self.stats.messages_stale_view += 1;
            return;
        }
        if !self.epoch_state.members.contains(&message.member) {
            self.stats.messages_invalid += 1;
            return;
        }
        self.epoch_state.pending.retain(|&m| m != message.member);
        if !self.epoch_state.started.contains(&message.member) {
            self.epoch_state.started.push(message.member);
        }
        if self.epoch_state.pending.is_empty() {
            self.timers.epoch = None;
        }
    }

    /// §7.2–7.3: a replica tells this one that epoch `message.epoch` began.
    pub(super) fn on_start_epoch(&mut self, now: Instant, message: StartEpoch) {
        let Some(mut next) = self.config.with_members(&message.members) else {
            self.stats.messages_invalid += 1;
            return;
        };
        next.epoch = message.epoch;
        if message.op_number == 0
            || message.epoch == 0
            || message.sender == self.member
            || !addresses_fit(&message.members, &message.addresses)
        {
            self.stats.messages_invalid += 1;
            return;
        }
        if message.epoch < self.epoch {
            self.stats.messages_stale_view += 1;
            return;
        }
        if message.epoch == self.epoch {
            // A replica booted into this epoch by its embedder, without the
            // addresses the reconfiguration carried, takes them from a
            // notice that has them, and so passes them on to the clients
            // and replicas of older epochs it tells of this one (§7.2).
            if self.epoch_state.addresses.is_empty()
                && !message.addresses.is_empty()
                && message.members == self.epoch_members()
            {
                self.epoch_state.addresses = message.addresses.clone();
            }
            if matches!(self.status, Status::Normal | Status::ViewChange) {
                // Answer, so that the sender stops resending.
                let started = EpochStarted {
                    epoch: self.epoch,
                    member: self.member,
                };
                self.send_member(message.sender, Message::EpochStarted(started));
            }
            return;
        }
        // The epoch after this one began: if this replica holds the
        // reconfiguration entry as it was committed (same op-number and
        // view), its log up to it is the committed log (a log holding an
        // entry of view v holds view v's primary's log up to it), so the
        // notice is as good as a Commit from that primary.
        if self.holds_committed_reconfiguration(&message) {
            self.commit_to(message.op_number);
            return; // `apply_pending_epoch` moves it on.
        }
        let Some(index) = next.index_of_member(self.member) else {
            // Not a member of the new epoch: leave. It did not execute the
            // reconfiguration, so it serves nothing; it asks the members
            // until a quorum says it started (`may_shut_down`).
            self.enter_epoch_without_config(&message);
            self.retire();
            self.epoch_state.pending = message.members.clone();
            self.send_start_epochs(now);
            return;
        };
        if self.status == Status::Recovering {
            // Restarted without its state: it may have taken part in the
            // new epoch before it crashed, so it recovers there (§4.3).
            self.enter_epoch_without_config(&message);
            self.enter_epoch_config(now, next, index);
            self.start_recovery(now);
            return;
        }
        self.begin_transition(now, message, next, index);
    }

    /// Whether this replica's log holds the reconfiguration entry that
    /// `notice` says was committed, as it was committed.
    fn holds_committed_reconfiguration(&self, notice: &StartEpoch) -> bool {
        let n = notice.op_number;
        notice.epoch == self.epoch + 1
            && matches!(self.status, Status::Normal | Status::ViewChange)
            && n > self.log_base
            && n <= self.op_number
            && n > self.commit_number
            && {
                let entry = self.entry(n);
                entry.kind == EntryKind::Reconfiguration && entry.view == notice.entry_view
            }
    }

    /// Notes the new epoch's number and members before entering it.
    fn enter_epoch_without_config(&mut self, message: &StartEpoch) {
        self.remember_epoch(self.epoch, self.epoch_members());
        self.remember_epoch(message.epoch, message.members.clone());
        self.epoch = message.epoch;
        self.epoch_state.start_op = message.op_number;
        self.epoch_state.entry_view = message.entry_view;
        self.epoch_state.members = message.members.clone();
        self.epoch_state.addresses = message.addresses.clone();
        self.epoch_state.started.clear();
        self.epoch_state.pending.clear();
        self.timers.epoch = None;
        self.stats.epochs_started += 1;
    }

    /// Enters the new epoch as a member lacking the ops up to the
    /// reconfiguration, and fetches them from members of the new epoch:
    /// the sender if it is one.
    fn begin_transition(
        &mut self,
        now: Instant,
        message: StartEpoch,
        next: Config,
        index: crate::ReplicaIndex,
    ) {
        // A replica of the previous epoch knows who else held its state; a
        // new one knows the sender and the new members.
        let previous = if self.status == Status::Transitioning {
            Vec::new()
        } else {
            self.epoch_members()
        };
        let me = self.member;
        let mut sources = alloc::vec![message.sender];
        for member in next.member_ids().into_iter().chain(previous) {
            if member != me && !sources.contains(&member) {
                sources.push(member);
            }
        }
        self.enter_epoch_without_config(&message);
        self.enter_epoch_config(now, next, index);
        self.epoch_state.sources = sources;
        self.epoch_state.source_at = 0;
        let source = self
            .config
            .index_of_member(message.sender)
            .unwrap_or(crate::ReplicaIndex(0));
        self.status = Status::Transitioning;
        self.view = message.view;
        self.sync = Some(Sync {
            view: self.view,
            source,
            base: self.commit_number,
            entries: Vec::new(),
            goal: SyncGoal::Transition(message.op_number),
            fetch: None,
            staged_checkpoint: None,
        });
        self.arm_view_change_timer(now);
        self.send_get_state(now, source, self.commit_number);
    }

    /// A new member still waiting for the `StartEpoch` of its epoch asks
    /// the members it was configured with, as a replica of their first
    /// epoch would: members of a later epoch answer an older epoch's
    /// message with the notice (§7.3), others drop it. The members that
    /// executed the reconfiguration send the notice until each member
    /// answers, but that list dies with them: with every one of them
    /// restarted since, a new member waited for ever (vr-sim seed
    /// 8040562).
    pub(super) fn ask_for_epoch(&mut self, now: Instant) {
        let me = self.member;
        let probe = crate::message::GetState {
            view: 0,
            op_number: 0,
            // In the first epoch a member's index is its id.
            replica: crate::ReplicaIndex(me.0),
        };
        for member in self.config.member_ids() {
            if member != me {
                self.send_member(member, Message::GetState(probe));
            }
        }
        // Not every resend interval: a new member may wait long for its
        // epoch, and its probes are dropped until the epoch begins.
        self.timers.repair = Some(now + self.config.view_change_timeout_ns);
    }

    /// Transitioning: the replica to fetch from.
    pub(super) fn transition_source(&self) -> Option<MemberId> {
        let transition = self
            .sync
            .as_ref()
            .is_some_and(|s| matches!(s.goal, SyncGoal::Transition(_)));
        if !transition {
            return None;
        }
        let sources = &self.epoch_state.sources;
        sources
            .get(self.epoch_state.source_at % sources.len().max(1))
            .copied()
    }

    /// A replica that left after executing the reconfiguration answers a
    /// transitioning member of the new epoch (§7.2: it serves state until
    /// the new epoch has started), whose index is the new epoch's.
    pub(super) fn serve_as_retired(&mut self, now: Instant, message: Message) {
        let requester = match &message {
            Message::GetState(m) => m.replica,
            Message::GetCheckpointTree(m) => m.replica,
            Message::GetCheckpointPages(m) => m.replica,
            _ => return,
        };
        let Some(&member) = self.epoch_state.members.get(usize::from(requester)) else {
            self.stats.messages_invalid += 1;
            return;
        };
        self.epoch_state.reply_to = Some(member);
        match message {
            Message::GetState(m) => self.on_get_state(now, m),
            Message::GetCheckpointTree(m) => self.on_get_checkpoint_tree(now, m),
            Message::GetCheckpointPages(m) => self.on_get_checkpoint_pages(now, m),
            _ => {}
        }
        self.epoch_state.reply_to = None;
    }

    /// While transitioning: only state transfer goes on (committed entries
    /// are served to any view, so the views of the epoch do not matter).
    pub(super) fn handle_message_transitioning(&mut self, now: Instant, message: Message) {
        match message {
            Message::NewState(m) => self.on_new_state(now, m),
            Message::CheckpointTree(m) => self.on_checkpoint_tree(now, m),
            Message::CheckpointPages(m) => self.on_checkpoint_pages(now, m),
            _ => self.stats.messages_ignored_recovering += 1,
        }
    }

    /// The transition's view-change timer: the fetch stalled; ask another
    /// member.
    pub(super) fn on_transition_timeout(&mut self, now: Instant) {
        // The next source (`transition_source`, by member id): the sync's
        // index is not used while transitioning.
        self.epoch_state.source_at = self.epoch_state.source_at.wrapping_add(1);
        let base = self.commit_number;
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        sync.fetch = None;
        sync.staged_checkpoint = None;
        sync.entries.clear();
        sync.base = base;
        let source = sync.source;
        self.arm_view_change_timer(now);
        self.send_get_state(now, source, base);
    }

    /// The committed ops up to the reconfiguration are installed: join the
    /// epoch in view 0 (its log is a prefix of view 0's), or, if a newer
    /// view was heard of, adopt that view's log as any replica does.
    pub(super) fn finish_transition(&mut self, now: Instant) {
        self.sync = None;
        // View 0, whatever views it heard of: its log is a prefix of view
        // 0's, and of no later view's that it knows formed. A view it heard
        // of may never have formed (a StartViewChange, a DoViewChange): a
        // sync of that view's "log" from its would-be primary, still
        // changing view, got only the committed prefix, and claiming that
        // view as its last normal one let a view change drop an op
        // committed in view 0 (vr-sim seed 516365). Later views reach it
        // the usual way: their primary's messages, or a view change.
        self.view = 0;
        self.last_normal_view = 0;
        if self
            .earlier_life_may_have_entered(self.epoch_state.start_op, self.epoch_state.entry_view)
        {
            // As in `apply_pending_epoch`: an earlier incarnation may have
            // voted in this epoch; recover in it.
            self.start_recovery(now);
            return;
        }
        self.status = Status::Normal;
        self.enter_normal_timers(now);
        let notice = self.start_epoch_notice();
        let started = EpochStarted {
            epoch: self.epoch,
            member: self.member,
        };
        // Tell the members at once; replicas that left learn it when they
        // resend StartEpoch.
        let me = self.member;
        for member in notice.members.into_iter().filter(|&m| m != me) {
            self.send_member(member, Message::EpochStarted(started));
        }
        // Every member that holds the state tells the others, so that a
        // member that missed every StartEpoch (its senders failed) learns.
        self.epoch_state.pending = self
            .config
            .member_ids()
            .into_iter()
            .filter(|&m| m != me)
            .collect();
        self.send_start_epochs(now);
    }

    /// A message from an older epoch: its sender missed the reconfiguration.
    /// Tell it (§7.3); clients follow the new members.
    pub(super) fn on_older_epoch_message(&mut self, epoch: u32, message: Message) {
        self.stats.messages_older_epoch += 1;
        let mut notice = self.start_epoch_notice();
        if notice.op_number == 0 {
            // Started in this epoch (`Replica::recover` with its
            // configuration): it does not know which op began it, but
            // every op it executed is committed, and the reconfiguration is
            // among them: a notice "after op commit-number" is as good for
            // whoever fetches up to it, and for whoever retires (vr-sim
            // seed 628634: a removed replica restarted with the first
            // configuration was never told it was removed).
            if self.commit_number == 0 {
                return;
            }
            notice.op_number = self.commit_number;
        }
        let client = match &message {
            Message::Request(m) => Some(m.client_id),
            Message::ReadRequest(m) => Some(m.client_id),
            Message::Reconfiguration(m) => Some(m.client_id),
            _ => None,
        };
        if let Some(client_id) = client {
            self.outbox
                .push_back(Output::NewEpoch { client_id, notice });
            return;
        }
        // In epoch 0 without recorded members, indexes are member ids.
        let members = self.members_of_epoch(epoch).unwrap_or(&[]);
        let index = match &message {
            Message::PrepareOk(m) => Some(m.replica),
            Message::StartViewChange(m) => Some(m.replica),
            Message::DoViewChange(m) => Some(m.replica),
            Message::GetState(m) => Some(m.replica),
            Message::NewState(m) => Some(m.replica),
            Message::Recovery(m) => Some(m.replica),
            Message::RecoveryResponse(m) => Some(m.replica),
            Message::GetCheckpointTree(m) => Some(m.replica),
            Message::CheckpointTree(m) => Some(m.replica),
            Message::GetCheckpointPages(m) => Some(m.replica),
            Message::CheckpointPages(m) => Some(m.replica),
            // From the primary of its view; which one depends on the
            // witnesses of that epoch, which no longer matter: reconfigured
            // clusters have none.
            Message::Prepare(_) | Message::Commit(_) | Message::StartView(_) => {
                let count = members.len() as u64;
                // Below the member count, at most 255: the cast cannot truncate.
                (count > 0).then(|| crate::ReplicaIndex((message.view() % count) as u8))
            }
            _ => None,
        };
        let member = index.and_then(|i| match members.get(usize::from(i)) {
            Some(&member) => Some(member),
            // In epoch 0 indexes are member ids: a node restarted with a
            // longer list than the first members (the registry of every
            // member so far, as vr-kv passes it) names itself by its
            // position in it, which is its member id.
            None if epoch == 0 => Some(MemberId(i.0)),
            None => None,
        });
        if let Some(member) = member.filter(|&m| m != self.member) {
            self.send_member(member, Message::StartEpoch(notice));
        }
    }
}
