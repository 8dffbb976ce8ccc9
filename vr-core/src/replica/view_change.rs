//! View changes (§4.2): StartViewChange → DoViewChange → StartView.

use alloc::vec::Vec;

use super::{Replica, ReplicaSet, Status, Sync, SyncGoal};
use crate::message::{DoViewChange, GetState, LogEntry, Message, StartView, StartViewChange};
use crate::time::Instant;
use crate::Service;

/// Whether `entries` are numbered `first, first + 1, …` without a gap.
/// Numbers that would pass `u64::MAX` are not contiguous: a crafted
/// message may start anywhere (issue 17, item 5).
pub(super) fn is_contiguous_from(entries: &[LogEntry], first: u64) -> bool {
    entries
        .iter()
        .enumerate()
        .all(|(i, e)| first.checked_add(i as u64) == Some(e.op_number))
}

impl<S: Service> Replica<S> {
    /// A backup's primary was silent too long, or the view change to the
    /// current view took too long: try the next view (§4.2 step 1).
    pub(super) fn on_view_change_timeout(&mut self, now: Instant) {
        self.timers.view_change = None;
        if self.status == Status::Recovering {
            self.on_recovery_timeout(now);
            return;
        }
        if self.is_primary() {
            return;
        }
        if self.lease_forbids_view_change(now) {
            self.timers.view_change = Some(self.lease_promise_until);
            return;
        }
        self.start_view_change(now, self.view + 1);
    }

    /// Moves to `view` in view-change status and announces it.
    pub(super) fn start_view_change(&mut self, now: Instant, view: u64) {
        debug_assert!(view > self.view || self.status == Status::Normal);
        self.reset_view_state(view);
        self.status = Status::ViewChange;
        self.stats.view_changes_started += 1;
        self.arm_view_change_timer(now);
        self.timers.view_change_resend = Some(now + self.config.resend_interval_ns);
        self.send_to_others(Message::StartViewChange(StartViewChange {
            view,
            promised_view: self.do_view_change_view_max,
            replica: self.replica,
            crash_vector: self.crash_vector.clone(),
        }));
        self.check_start_view_change_quorum(now);
    }

    /// Forgets everything that belonged to the previous view: votes, staged
    /// logs, the primary's queues (clients retry) and all timers.
    pub(super) fn reset_view_state(&mut self, view: u64) {
        self.view = view;
        self.start_view_change_from = ReplicaSet::default();
        self.do_view_change_from.iter_mut().for_each(|d| *d = None);
        self.do_view_change_sent = None;
        self.sync = None;
        self.request_queue.clear();
        self.requests_in_progress.clear();
        self.prepare_ok_op.iter_mut().for_each(|a| *a = 0);
        self.prepare_ok_commit.iter_mut().for_each(|c| *c = 0);
        self.lease_acked_ns.iter_mut().for_each(|t| *t = 0);
        self.primary_timestamp_ns = 0;
        self.batch_bytes = 0;
        // StartEpoch goes on being resent across views (§7.2).
        self.timers = super::Timers {
            epoch: self.timers.epoch,
            ..super::Timers::default()
        };
    }

    /// Whether this replica promised the primary, by acknowledging it, not to
    /// start or join a view change yet (leased reads, §6). Counts a refusal.
    fn lease_forbids_view_change(&mut self, now: Instant) -> bool {
        if now < self.lease_promise_until {
            self.stats.view_changes_deferred_by_lease += 1;
            return true;
        }
        false
    }

    /// This backup's primary has left the view: it voted for `view`, a
    /// later one, or it restarted without its state (`primary_restarted`).
    /// Start the view change now, or, if this replica promised the primary
    /// a lease (§6), the moment the promise runs out (the view-change timer
    /// is set to it). The promise is kept even so: the message saying the
    /// primary left may be a stale one from an earlier life of that replica
    /// (a diskless replica forgets its views; crash vectors drop stale votes
    /// only where the new incarnation is known, and a StartView or Prepare
    /// does not carry it), while the primary leading this view holds a
    /// lease. Without a lease the same stale message costs one needless
    /// view change, never safety (§4.2: any replica may start one).
    pub(super) fn primary_left(&mut self, now: Instant, view: u64) {
        debug_assert!(self.status == Status::Normal && !self.is_primary());
        if self.lease_forbids_view_change(now) {
            let at = self.lease_promise_until;
            self.timers.view_change = Some(self.timers.view_change.map_or(at, |t| t.min(at)));
            return;
        }
        self.start_view_change(now, view);
    }

    /// Whether this replica, changing view to a view that has not formed, may
    /// go back to `view`, an older view whose primary is running. That is safe
    /// only if it never promised its log to a view after `view` (it sent no
    /// DoViewChange for one) and its log is not from a later view. Without it,
    /// a replica whose messages reach others but who hears nothing back keeps
    /// raising its view, and once healed never rejoins (the asymmetric
    /// partition livelock in `docs/protocol.md`).
    pub(super) fn may_rejoin(&self, view: u64) -> bool {
        self.status == Status::ViewChange
            && view < self.view
            && view >= self.last_normal_view
            && view >= self.do_view_change_view_max
            && !self.is_primary_of(view)
    }

    fn primary_heard_recently(&self, now: Instant) -> bool {
        // A replica fetching its view's log from that view's primary hears
        // it too; joining another view would throw the fetch away, and a
        // lone replica's StartViewChange every resend interval would then
        // keep it from ever completing (vr-sim regression seed 25238).
        let listening = self.status == Status::Normal
            || self
                .sync
                .as_ref()
                .is_some_and(|s| s.goal == SyncGoal::PrimaryLog && s.view == self.view);
        self.is_primary()
            || (listening
                && now.saturating_since(self.primary_heard_at) < self.config.view_change_timeout_ns)
    }

    /// §4.2 step 1–2.
    pub(super) fn on_start_view_change(&mut self, now: Instant, message: StartViewChange) {
        if !self.config.has_replica(message.replica) || message.replica == self.replica {
            self.stats.messages_invalid += 1;
            return;
        }
        if !self.admit_crash_vector(message.replica, &message.crash_vector) {
            return;
        }
        if message.view < self.view {
            self.stats.messages_stale_view += 1;
            return;
        }
        if message.view > self.view {
            // This view's primary itself votes for a later view: it has left
            // this one (a primary restarted from disk moves on to the next,
            // see `Replica::restart`; a primary that lost its quorum
            // abdicates) and never leads it again (`may_rejoin` bars a
            // view's primary from going back). Waiting for the
            // primary-silence timeout would only delay the view change
            // (issue 18, item 8).
            let primary_left = message.replica == self.primary_index();
            if primary_left && self.status == Status::Normal {
                self.primary_left(now, message.view);
                if self.view < message.view {
                    return; // Deferred by a lease promised to it.
                }
            } else if self.lease_forbids_view_change(now) {
                return;
            } else if self.primary_heard_recently(now)
                && message.promised_view <= self.view
                && !primary_left
            {
                // Departure: a replica that still hears its primary does not
                // join, so one replica cut off from the primary alone cannot
                // depose it. f+1 replicas that lost the primary still do.
                // But a sender that promised a view above this one (its
                // DoViewChange went to a view that never formed) can never
                // come back to this view: moving up is the only way to let
                // it back in (vr-sim seed 80). Nor does the rule hold back
                // the vote of this view's primary (above).
                self.stats.start_view_changes_ignored += 1;
                return;
            } else {
                self.start_view_change(now, message.view);
            }
        }
        if self.status == Status::Normal {
            // The sender missed the StartView of this view.
            if self.is_primary() {
                self.send_start_view(message.replica);
            }
            return;
        }
        if message.replica == self.primary_index() && self.do_view_change_sent.is_some() {
            // The new primary is alive and still assembling this view (it
            // may be fetching a long committed prefix): keep waiting for its
            // StartView. Timing out would restart the view change, and a
            // fetch longer than one timeout would never finish (vr-sim seed
            // 2104, witnesses: only a lagging full replica could lead). A
            // new primary whose fetch stalls gives up by its own timer.
            self.arm_view_change_timer(now);
        }
        if self.sync.is_some() {
            // This view has already formed; this replica is fetching its log.
            return;
        }
        self.start_view_change_from.insert(message.replica);
        self.check_start_view_change_quorum(now);
    }

    /// §4.2 step 2: with StartViewChange from f others, send DoViewChange to
    /// the new primary, once.
    fn check_start_view_change_quorum(&mut self, now: Instant) {
        if self.do_view_change_sent.is_some()
            || self.start_view_change_from.count() + 1 < self.config.quorum()
        {
            return;
        }
        let log = self.log_after(self.commit_number).to_vec();
        let message = DoViewChange {
            view: self.view,
            last_normal_view: self.last_normal_view,
            op_number: self.op_number,
            commit_number: self.commit_number,
            log,
            replica: self.replica,
            crash_vector: self.crash_vector.clone(),
        };
        self.do_view_change_sent = Some(message.clone());
        let primary = self.primary_index();
        if primary == self.replica {
            // A promise to itself binds nothing: only this replica can form
            // this view, and once it leaves the view unformed its recorded
            // DoViewChanges are dropped, so the view never forms. Counting
            // it would bar the replica from rejoining the running view for
            // good (vr-sim regression seed 2416).
            self.record_do_view_change(now, message);
        } else {
            self.do_view_change_view_max = self.view;
            self.send(primary, Message::DoViewChange(message));
        }
    }

    /// Resends this replica's StartViewChange and DoViewChange until the view
    /// change completes, since either may have been lost.
    pub(super) fn on_view_change_resend_timeout(&mut self, now: Instant) {
        self.timers.view_change_resend = None;
        if self.status != Status::ViewChange {
            return;
        }
        if self.sync.is_some() && !self.is_primary_of(self.view) {
            return;
        }
        // The new primary keeps announcing the view while it fetches the
        // committed prefix it lacks: the replicas waiting for its StartView
        // take it as a sign of life (see `on_start_view_change`).
        self.send_to_others(Message::StartViewChange(StartViewChange {
            view: self.view,
            promised_view: self.do_view_change_view_max,
            replica: self.replica,
            crash_vector: self.crash_vector.clone(),
        }));
        if let Some(message) = self.do_view_change_sent.clone() {
            let primary = self.primary_index();
            if primary != self.replica {
                self.send(primary, Message::DoViewChange(message));
            }
        }
        self.timers.view_change_resend = Some(now + self.config.resend_interval_ns);
    }

    /// §4.2 step 3.
    pub(super) fn on_do_view_change(&mut self, now: Instant, message: DoViewChange) {
        if !self.config.has_replica(message.replica)
            || message.replica == self.replica
            || !self.is_primary_of(message.view)
            || message.commit_number > message.op_number
            || message.last_normal_view >= message.view
            || message.log.len() as u64 != message.op_number - message.commit_number
            || !message
                .commit_number
                .checked_add(1)
                .is_some_and(|first| is_contiguous_from(&message.log, first))
        {
            self.stats.messages_invalid += 1;
            return;
        }
        if !self.admit_crash_vector(message.replica, &message.crash_vector) {
            return;
        }
        if message.view < self.view {
            self.stats.messages_stale_view += 1;
            return;
        }
        if message.view > self.view {
            if self.lease_forbids_view_change(now) {
                return;
            }
            // A DoViewChange is sent only after f StartViewChanges: the view
            // change has a quorum behind it, so join without stickiness.
            self.start_view_change(now, message.view);
        }
        if self.status == Status::Normal {
            if self.is_primary() {
                self.send_start_view(message.replica);
            }
            return;
        }
        if self.sync.is_some() {
            return;
        }
        self.record_do_view_change(now, message);
    }

    fn record_do_view_change(&mut self, now: Instant, message: DoViewChange) {
        let from = usize::from(message.replica);
        self.do_view_change_from[from] = Some(message);
        let count = self.do_view_change_from.iter().flatten().count();
        let own = self.do_view_change_from[usize::from(self.replica)].is_some();
        if own && count >= self.config.quorum() {
            self.choose_log(now);
        }
    }

    /// The DoViewChange whose log the new view adopts: the largest
    /// last-normal-view, ties broken by the largest op-number (§4.2 step 3).
    /// Not the largest view: that is a classic bug.
    pub(super) fn best_do_view_change(&self) -> &DoViewChange {
        if self
            .config
            .has_bug(crate::config::InjectedBug::ChooseLogByOpNumberOnly)
        {
            return self
                .do_view_change_from
                .iter()
                .flatten()
                .max_by_key(|d| d.op_number)
                .expect("a quorum of DoViewChange is recorded");
        }
        self.do_view_change_from
            .iter()
            .flatten()
            .max_by_key(|d| (d.last_normal_view, d.op_number))
            // choose_log runs only with a quorum recorded, so one exists.
            .expect("a quorum of DoViewChange is recorded")
    }

    /// The new primary has its quorum. If its own committed prefix is shorter
    /// than the chosen log's, it first fetches the missing committed entries
    /// from the chosen replica (the DoViewChange carried only the uncommitted
    /// suffix).
    fn choose_log(&mut self, now: Instant) {
        let best = self.best_do_view_change();
        let (best_replica, best_commit) = (best.replica, best.commit_number);
        if self.commit_number >= best_commit {
            self.complete_view_change(now, Vec::new());
            return;
        }
        self.sync = Some(Sync {
            view: self.view,
            source: best_replica,
            base: self.commit_number,
            entries: Vec::new(),
            goal: SyncGoal::CommittedTo(best_commit),
            fetch: None,
            staged_checkpoint: None,
        });
        // The fetch is a phase of its own: give it a full timeout. A view
        // change that gathered its DoViewChanges just before its timer
        // expired otherwise gives up before the first answer, and a
        // lagging full replica that alone can lead (with witnesses) never
        // completes a view (vr-sim seed 201648). Progress re-arms it.
        self.arm_view_change_timer(now);
        self.send_get_state(now, best_replica, self.commit_number);
    }

    /// Installs the new view's log and becomes its primary (§4.2 step 3).
    /// `staged` holds the committed entries after this replica's own
    /// commit-number fetched from the chosen replica.
    pub(super) fn complete_view_change(&mut self, now: Instant, staged: Vec<LogEntry>) {
        let best = self.best_do_view_change().clone();
        let commit_max = self
            .do_view_change_from
            .iter()
            .flatten()
            .map(|d| d.commit_number)
            .max()
            .unwrap_or(0);
        let commit_min = self
            .do_view_change_from
            .iter()
            .flatten()
            .map(|d| d.commit_number)
            .min()
            .unwrap_or(0);
        // A checkpoint may have dropped committed entries below `log_base`,
        // even below the chosen log's commit-number: keep from there, and
        // skip the chosen log's entries up to it (committed, so the same).
        // Truncating below `log_base` would leave the log misnumbered
        // (vr-sim regression seed 252).
        let keep = self
            .commit_number
            .min(best.commit_number)
            .max(self.log_base);
        let old = self.take_log_after(keep);
        self.extend_log(
            staged
                .into_iter()
                .take_while(|e| e.op_number <= best.commit_number),
        );
        debug_assert!(
            self.log_base + self.log.len() as u64 >= best.commit_number,
            "committed prefix complete"
        );
        self.extend_log(best.log);
        self.note_log_replaced(keep, &old);
        debug_assert!(is_contiguous_from(&self.log, self.log_base + 1));
        self.op_number = best.op_number;
        self.last_normal_view = self.view;
        self.status = Status::Normal;
        self.sync = None;
        self.start_view_change_from = ReplicaSet::default();
        self.do_view_change_from.iter_mut().for_each(|d| *d = None);
        self.do_view_change_sent = None;
        self.prepare_ok_op.iter_mut().for_each(|a| *a = 0);
        self.prepare_ok_op[usize::from(self.replica)] = self.ack_op();
        self.prepare_ok_commit.iter_mut().for_each(|c| *c = 0);
        // No leased read until this view has committed everything it began
        // with: ops the old primary acknowledged may be among them.
        self.view_start_op = self.op_number;
        self.requests_in_progress.clear();
        for op_number in self.commit_number + 1..=self.op_number {
            let entry = self.entry(op_number);
            let (client_id, request_number) = (entry.client_id, entry.request_number);
            self.mark_in_progress(client_id, request_number);
        }
        self.stats.view_changes_completed += 1;
        self.enter_normal_timers(now);
        // Executes the ops that are now known to be committed and replies to
        // their clients, as the paper's step 3 says.
        self.commit_to(commit_max);
        // Backups that sent a DoViewChange hold everything up to their commit
        // number; the suffix from the smallest of those covers them all.
        self.start_view_suffix_from = commit_min;
        for replica in self.config.replica_indexes() {
            if replica != self.replica {
                self.send_start_view(replica);
            }
        }
    }

    /// Sends the StartView of the current view to one replica: the log suffix
    /// after `start_view_suffix_from`, cut to fit a message. A replica that
    /// needs more fetches it with GetState.
    pub(super) fn send_start_view(&mut self, replica: crate::ReplicaIndex) {
        debug_assert!(self.is_primary());
        let budget = self.log_budget_bytes();
        let mut first = self.op_number + 1;
        let mut size = 0usize;
        while first > self.start_view_suffix_from.max(self.log_base) + 1 {
            size += self.entry(first - 1).encoded_size();
            if size > budget {
                break;
            }
            first -= 1;
        }
        let log = self.log_after(first - 1).to_vec();
        self.send(
            replica,
            Message::StartView(StartView {
                view: self.view,
                op_number: self.op_number,
                commit_number: self.commit_number,
                log,
            }),
        );
    }

    /// §4.2 step 5: a backup adopts the new view's log.
    pub(super) fn on_start_view(&mut self, now: Instant, message: StartView) {
        let first = (message.op_number.checked_add(1))
            .and_then(|end| end.checked_sub(message.log.len() as u64));
        let valid = first
            .is_some_and(|first| first >= 1 && is_contiguous_from(&message.log, first))
            && message.commit_number <= message.op_number
            && !self.is_primary_of(message.view);
        let Some(first) = first.filter(|_| valid) else {
            self.stats.messages_invalid += 1;
            return;
        };
        if message.view < self.view && !self.may_rejoin(message.view) {
            self.stats.messages_stale_view += 1;
            return;
        }
        if message.view == self.view && self.status == Status::Normal {
            return; // A duplicate.
        }
        if message.view == self.last_normal_view {
            // This replica was already normal in that view (it is going back
            // to it, or fetching its log): a StartView is the log as the view
            // began, older than what this replica acknowledged and committed
            // in it since. Installing it would drop acknowledged, even
            // committed, entries (vr-sim regression seed 572: a StartView delayed
            // by reordering). Fetch the primary's current log instead.
            self.start_sync(now, message.view);
            return;
        }
        if self.commit_number + 1 >= first {
            if !self.agrees_with_committed(&message.log, message.op_number) {
                // No primary sends this (its log holds every committed op,
                // as committed): a crafted or corrupt frame.
                self.stats.messages_invalid += 1;
                return;
            }
            // Everything before the suffix is committed here, so identical in
            // the new view's log.
            self.install_view(
                now,
                message.view,
                first - 1,
                message.log,
                message.op_number,
                message.commit_number,
            );
        } else {
            self.start_sync(now, message.view);
        }
    }

    /// Whether a view's log ending at `op_number`, of which `entries` is a
    /// suffix, can hold this replica's committed ops: it reaches its
    /// commit-number, and every entry of it that this replica holds
    /// committed is the same entry (same view). An installed log that did
    /// not would lose committed ops; only a crafted frame carries one.
    fn agrees_with_committed(&self, entries: &[LogEntry], op_number: u64) -> bool {
        op_number >= self.commit_number
            && entries
                .iter()
                .filter(|e| e.op_number > self.log_base && e.op_number <= self.commit_number)
                .all(|theirs| self.entry(theirs.op_number).view == theirs.view)
    }

    /// Replaces the log after op `keep` with `entries`, ending at `op_number`,
    /// and enters `view` in normal status as a backup. `keep` must not exceed
    /// the commit-number: only committed entries are known to be the same in
    /// every view's log.
    pub(super) fn install_view(
        &mut self,
        now: Instant,
        view: u64,
        keep: u64,
        entries: Vec<LogEntry>,
        op_number: u64,
        commit_number: u64,
    ) {
        debug_assert!(
            keep <= self.commit_number,
            "only the committed prefix is kept"
        );
        debug_assert!(
            entries
                .iter()
                .filter(|e| e.op_number > self.log_base && e.op_number <= self.commit_number)
                .all(|theirs| self.entry(theirs.op_number).view == theirs.view),
            "committed entries agree across views"
        );
        // Entries below `log_base` were dropped by a checkpoint; they are
        // committed, so the same in the installed log: keep from there and
        // skip those (vr-sim regression seed 252).
        let keep = keep.max(self.log_base);
        let was_changing = self.status == Status::ViewChange;
        let was_recovering = self.status == Status::Recovering;
        self.reset_view_state(view);
        let old = self.take_log_after(keep);
        self.extend_log(entries);
        self.note_log_replaced(keep, &old);
        debug_assert!(
            self.log_base + self.log.len() as u64 == op_number && op_number >= self.commit_number,
            "an installed log is contiguous and holds every committed op"
        );
        if was_recovering {
            self.finish_recovery(view, op_number, commit_number);
        }
        self.op_number = op_number;
        self.last_normal_view = view;
        self.status = Status::Normal;
        if was_changing {
            self.stats.view_changes_completed += 1;
        }
        self.enter_normal_timers(now);
        self.commit_to(commit_number);
        self.send_prepare_ok();
    }

    pub(super) fn send_get_state(&mut self, now: Instant, to: crate::ReplicaIndex, op_number: u64) {
        self.stats.state_requests_sent += 1;
        let message = Message::GetState(GetState {
            view: self.view,
            op_number,
            replica: self.replica,
        });
        match self.transition_source() {
            // Transitioning (§7.2): the source is named by member id, as
            // it may be a replica that left.
            Some(member) => self.send_member(member, message),
            None => self.send(to, message),
        }
        self.timers.repair = Some(now + self.config.resend_interval_ns);
    }
}
