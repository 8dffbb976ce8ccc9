//! State transfer (§5.2): GetState / NewState, for a backup that missed
//! operations in its view, for a replica that missed a view's StartView, and
//! for a new primary that lacks part of the committed prefix.

use super::{Replica, Status, Sync, SyncGoal};
use crate::message::{GetState, Message, NewState, ReplicaIndex};
use crate::time::Instant;
use crate::Service;

impl<S: Service> Replica<S> {
    /// A backup in normal status saw a gap in its view: ask the primary for
    /// what follows its log. At most one request is outstanding.
    pub(super) fn request_state(&mut self, now: Instant) {
        debug_assert!(self.status == Status::Normal);
        if self.timers.repair.is_some() {
            return;
        }
        let primary = self.primary_index();
        self.send_get_state(now, primary, self.op_number);
    }

    /// This replica learned that `view` has formed (a StartView it could not
    /// install, or a Prepare or Commit of that view) and must adopt that
    /// view's log. It keeps its own log untouched, fetches the primary's log
    /// after its commit-number, and installs it all at once when complete.
    ///
    /// The paper truncates the log to the commit-number first; doing that in
    /// place is the step that can lose committed operations (Vanlightly's
    /// TLA+ analysis), since a replica could then join a view change with the
    /// truncated log.
    pub(super) fn start_sync(&mut self, now: Instant, view: u64) {
        let primary = self.config.primary_index(view);
        // Every caller got a message from that view's primary: while the
        // fetch lasts this replica hears its primary, and ignores a lone
        // StartViewChange as a normal backup would (departure 2).
        self.primary_heard_at = now;
        if self
            .sync
            .as_ref()
            .is_some_and(|s| s.view == view && s.goal == SyncGoal::PrimaryLog)
        {
            return; // Already fetching; the repair timer resends.
        }
        if view != self.view || self.status == Status::Normal {
            self.stats.view_changes_started += 1;
        }
        if view > self.view
            && self
                .config
                .has_bug(crate::config::InjectedBug::TruncateLogOnNewView)
        {
            // The unprotected §5.2 step: drop the uncommitted suffix in
            // place and take the new view as the last normal one before its
            // log has arrived. A view change before the fetch completes then
            // offers this short log with the newest last-normal-view.
            self.truncate_log(self.commit_number);
            self.op_number = self.commit_number;
            self.last_normal_view = view;
        }
        self.reset_view_state(view);
        self.status = Status::ViewChange;
        self.arm_view_change_timer(now);
        self.sync = Some(Sync {
            view,
            source: primary,
            base: self.commit_number,
            entries: alloc::vec::Vec::new(),
            goal: SyncGoal::PrimaryLog,
            fetch: None,
            staged_checkpoint: None,
        });
        self.send_get_state(now, primary, self.commit_number);
    }

    /// Resends the outstanding GetState.
    pub(super) fn on_repair_timeout(&mut self, now: Instant) {
        self.timers.repair = None;
        if self.status == Status::Recovering {
            self.on_recovery_resend_timeout(now);
        } else if self.sync.is_some() {
            self.resend_sync_request(now);
        } else if self.status == Status::Transitioning {
            self.ask_for_epoch(now);
        } else if self.status == Status::Normal
            && !self.is_primary()
            && self.commit_max > self.op_number
        {
            let primary = self.primary_index();
            self.send_get_state(now, primary, self.op_number);
        }
    }

    /// Serves a peer's GetState from this replica's log. In normal status the
    /// log is the view's log, so any suffix may be served. While changing view
    /// only committed entries are served: they are the same in every view.
    pub(super) fn on_get_state(&mut self, now: Instant, message: GetState) {
        // A replica that left is asked by the new epoch's indexes.
        let retired = self.status == Status::Retired;
        if !retired
            && (!self.config.has_replica(message.replica) || message.replica == self.replica)
        {
            self.stats.messages_invalid += 1;
            return;
        }
        let same_view = message.view == self.view;
        // (Asked for exactly its commit-number, it answers with nothing but
        // that number: a transitioning member that fetched a checkpoint up
        // to it learns it is done; vr-sim seed 501759.)
        if !same_view && message.op_number > self.commit_number {
            // An older view's log is of no use to the requester, and this
            // replica cannot serve a newer view's.
            self.stats.messages_stale_view += 1;
            return;
        }
        self.heard_fetching_peer(now, message.view, message.replica);
        // Committed entries are the same in every view: they are served to
        // a requester in another view too. Only a transitioning member of a
        // new epoch takes them (§7.2), whatever the views; an answer of
        // another view is dropped by anyone else.
        let until = match self.status {
            Status::Normal if same_view => self.op_number,
            _ => self.commit_number,
        };
        let after = message.op_number.min(until);
        let to_witness = self.config.is_witness(message.replica);
        let checkpoint = if after >= self.log_base {
            self.note_state_request(after, message.replica)
        } else if self.is_witness() {
            // A witness has no checkpoint to offer (§6, witnesses).
            self.stats.state_requests_unserved += 1;
            return;
        } else if to_witness {
            // A witness cannot install a checkpoint, having no state: it
            // skips ops instead (see `witness_may_skip_to`). Offer it this
            // log from its start, when every full replica executed the ops
            // before it (with witnesses, logs reach back that far), else
            // the checkpoint's op-number to skip to.
            if self.log_base <= self.full_commit_min && self.log_base < until {
                None
            } else {
                Some(self.checkpoint.summary)
            }
        } else {
            // The log no longer reaching back that far, offer the checkpoint.
            self.note_state_request(after, message.replica)
        };
        let log = if checkpoint.is_some() {
            alloc::vec::Vec::new()
        } else {
            self.log_slice_bounded(after, until, self.log_budget_bytes())
        };
        self.send(
            message.replica,
            Message::NewState(NewState {
                view: self.view,
                op_number: until,
                commit_number: self.commit_number,
                log,
                replica: self.replica,
                checkpoint,
                full_commit_min: self.full_commit_min,
            }),
        );
    }

    /// A peer in this replica's view asks for state (GetState, or a
    /// checkpoint's tree or pages): it is catching up, and alive.
    ///
    /// As primary, count it for the quorum check of `on_heartbeat_timeout`.
    /// Otherwise a primary abdicates while a backup it needs for a quorum
    /// is still catching up, and the fetch restarts in the next view,
    /// forever (vr-sim regression seed 1585; for checkpoint fetches, which
    /// take longer, seed 65).
    ///
    /// Changing view, from the view's new primary: it is fetching the
    /// committed prefix it lacks before it can start the view, and the view
    /// change advances. Without re-arming the timer, a fetch longer than a
    /// view-change timeout (a checkpoint, or a long log in small frames)
    /// makes the others move on to the next view before it completes, and
    /// again in every view that primary leads (vr-sim regression seeds 65
    /// and, with witnesses, 3239, where only a lagging full replica could
    /// lead). The new primary gives up by its own timer if the fetch stalls.
    pub(super) fn heard_fetching_peer(&mut self, now: Instant, view: u64, peer: ReplicaIndex) {
        if view != self.view {
            return;
        }
        if self.is_primary() {
            self.prepare_ok_heard_at[usize::from(peer)] = now;
        } else if self.status == Status::ViewChange
            && self.sync.is_none()
            && peer == self.primary_index()
        {
            self.arm_view_change_timer(now);
        }
    }

    /// Takes in a NewState: into the staged log of a fetch in progress, or
    /// straight into the log of a backup repairing a gap in its view.
    pub(super) fn on_new_state(&mut self, now: Instant, message: NewState) {
        // A transitioning member may be answered by a replica that left,
        // which names itself by an index of the previous epoch.
        let transition = self
            .sync
            .as_ref()
            .is_some_and(|s| matches!(s.goal, SyncGoal::Transition(_)));
        let valid = (transition
            || (self.config.has_replica(message.replica) && message.replica != self.replica))
            && message.commit_number <= message.op_number
            && message
                .checkpoint
                .is_none_or(|c| c.op_number <= message.commit_number && message.log.is_empty())
            && message.log.first().is_none_or(|e| {
                super::view_change::is_contiguous_from(&message.log, e.op_number)
                    && e.op_number >= 1
                    && message
                        .log
                        .last()
                        .is_some_and(|l| l.op_number <= message.op_number)
            });
        if !valid {
            self.stats.messages_invalid += 1;
            return;
        }
        // True whenever it was sent: a fact about every full replica.
        self.note_full_commit_min(message.full_commit_min);
        // A transitioning member takes committed entries and checkpoint
        // offers from any replica of its epoch (or one that left), whatever
        // its view: it asks one source at a time (`transition_source`), by
        // member id, and the answer names its sender by an index that may
        // be of the previous epoch. The checkpoint is then fetched from
        // that source, and every page is checked against the root.
        let transition = self
            .sync
            .as_ref()
            .is_some_and(|s| matches!(s.goal, SyncGoal::Transition(_)));
        if transition
            || self.sync.as_ref().is_some_and(|s| {
                s.view == message.view
                    && s.view == self.view
                    && (s.source == message.replica
                    // Committed entries are the same at every replica: a
                    // new primary completing its committed prefix takes
                    // them from whoever answers, so an answer from a source
                    // it has just moved away from (`resend_sync_request`)
                    // still counts. Without it, with round trips longer
                    // than the resend interval, every answer arrived from
                    // the previous source and was dropped (vr-sim seed
                    // 201648). A checkpoint is fetched from the source only.
                    || (matches!(s.goal, SyncGoal::CommittedTo(_))
                        && message.checkpoint.is_none()))
            })
        {
            self.on_new_state_for_sync(now, message);
        } else if self.status == Status::Normal
            && message.view == self.view
            && message.replica == self.primary_index()
            && !self.is_primary()
        {
            self.on_new_state_in_view(now, message);
        } else {
            self.stats.messages_stale_view += 1;
        }
    }

    fn on_new_state_in_view(&mut self, now: Instant, message: NewState) {
        if message.checkpoint.is_some() {
            // Too far behind for the primary's log: fetch its state into a
            // staging area (leaving normal status meanwhile), checkpoint first.
            self.timers.repair = None;
            let view = self.view;
            self.start_sync(now, view);
            return;
        }
        let before = self.op_number;
        let first = message.log.first().map_or(0, |e| e.op_number);
        if self.is_witness() && first > self.op_number + 1 {
            // The primary's log starts past this witness's end.
            if !self.witness_may_skip_to(first - 1) {
                return;
            }
            self.witness_skip_to(first - 1);
        }
        for entry in message.log {
            if entry.op_number == self.op_number + 1 {
                self.log.push(entry);
                self.op_number += 1;
            }
        }
        let progressed = self.op_number > before;
        if progressed {
            self.send_prepare_ok();
        }
        self.commit_to(message.commit_number);
        // Only an answer that advanced the log (or shows it complete) ends
        // the outstanding request. A duplicated or stale NewState must not
        // trigger another GetState: with the network duplicating messages,
        // every answer would then beget more requests, and every request
        // more answers, growing geometrically while the replica lags
        // (vr-sim regression seed 1813: millions of messages in seconds).
        if progressed || message.op_number <= self.op_number {
            self.timers.repair = None;
        }
        if message.op_number > self.op_number {
            self.request_state(now); // A no-op while a request is outstanding.
        }
    }

    fn on_new_state_for_sync(&mut self, now: Instant, message: NewState) {
        // A replica that was normal in the view it fetches holds a prefix of
        // that view's log, which only grows: a NewState ending before this
        // replica's op-number was sent earlier in the view and is stale.
        // Installing it would drop entries this replica acknowledged, which
        // may be committed (vr-sim regression seed 28293).
        let stale = self.sync.as_ref().is_some_and(|s| {
            s.goal == SyncGoal::PrimaryLog
                && s.view == self.last_normal_view
                && message.op_number < self.op_number
        });
        if stale {
            self.stats.messages_stale_view += 1;
            return;
        }
        let witness = self.is_witness();
        if let Some(summary) = message.checkpoint {
            if !witness {
                self.start_checkpoint_fetch(now, summary);
                return;
            }
        }
        // The caller checked that a sync is in progress.
        let Some(sync) = self.sync.as_ref() else {
            return;
        };
        if sync.fetch.is_some() {
            // A late answer from before the checkpoint fetch began.
            return;
        }
        let have = sync.base + sync.entries.len() as u64;
        // A witness offered a checkpoint skips the ops up to it, and one
        // sent a log that starts further on skips to its start, if allowed
        // (see `witness_may_skip_to`). It jumps there when the sync installs.
        let skip_to = match (&message.checkpoint, message.log.first()) {
            (Some(summary), _) => summary.op_number,
            (None, Some(first)) => first.op_number - 1,
            (None, None) => 0,
        };
        let skipped = witness && skip_to > have;
        if skipped && !self.witness_may_skip_to(skip_to) {
            return; // Asked again on the repair timer.
        }
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        if skipped {
            sync.base = skip_to;
            sync.entries.clear();
        }
        let limit = match sync.goal {
            SyncGoal::PrimaryLog => message.op_number,
            // Only committed entries may be taken from a replica that is
            // itself changing view.
            SyncGoal::CommittedTo(target) | SyncGoal::Transition(target) => {
                target.min(message.commit_number)
            }
        };
        let had = sync.entries.len();
        for entry in message.log {
            let next = sync.base + sync.entries.len() as u64 + 1;
            if entry.op_number == next && entry.op_number <= limit {
                sync.entries.push(entry);
            }
        }
        let progressed = sync.entries.len() > had || skipped;
        let have = sync.base + sync.entries.len() as u64;
        let complete = match sync.goal {
            SyncGoal::PrimaryLog => have == message.op_number,
            SyncGoal::CommittedTo(target) | SyncGoal::Transition(target) => have >= target,
        } && sync
            .staged_checkpoint
            .as_ref()
            // With the log fetched from below a staged checkpoint (with
            // witnesses), the entries must reach it: an older answer that
            // ends before it is not the source's log (vr-sim seed 7027720).
            .is_none_or(|c| have >= c.summary.op_number);
        if !complete {
            let source = sync.source;
            if progressed {
                // The source answers and the fetch advances: give it another
                // view-change timeout. Otherwise a log that takes longer to
                // fetch than one timeout (small frames, a long way behind)
                // is abandoned and refetched from scratch forever (vr-sim
                // regression seed 613).
                self.arm_view_change_timer(now);
                // Ask for the next part. An answer that brought nothing (a
                // duplicate, or stale) leaves the outstanding request to the
                // repair timer: answering it with a new request would let
                // duplicated messages multiply (as in `on_new_state_in_view`).
                self.send_get_state(now, source, have);
            }
            return;
        }
        let Some(mut sync) = self.sync.take() else {
            return;
        };
        if let Some(checkpoint) = sync.staged_checkpoint.take() {
            if !self.install_checkpoint(checkpoint) {
                self.stats.messages_invalid += 1;
                return;
            }
            if sync.base < self.log_base {
                // The entries below the checkpoint (fetched with witnesses,
                // see `on_checkpoint_pages`) are kept in the log, already
                // executed: the log reaches back to what every full replica
                // executed, as any full replica's does.
                let below = ((self.log_base - sync.base) as usize).min(sync.entries.len());
                let above = sync.entries.split_off(below);
                debug_assert!(
                    self.log.is_empty(),
                    "an installed checkpoint empties the log"
                );
                self.log = core::mem::replace(&mut sync.entries, above);
                self.log_base = sync.base;
                sync.base = self.log_base + self.log.len() as u64;
            }
        }
        if sync.base > self.commit_number && self.is_witness() {
            self.witness_skip_to(sync.base);
        }
        match sync.goal {
            SyncGoal::PrimaryLog => {
                let view = sync.view;
                self.install_view(
                    now,
                    view,
                    sync.base,
                    sync.entries,
                    message.op_number,
                    message.commit_number,
                );
            }
            SyncGoal::CommittedTo(_) => self.complete_view_change(now, sync.entries),
            SyncGoal::Transition(target) => {
                // Everything fetched is committed: it replaces whatever this
                // replica held above its commit-number (an older epoch's
                // uncommitted suffix), and is executed at once.
                self.truncate_log(self.commit_number);
                self.op_number = self.commit_number;
                self.extend_log(sync.entries);
                self.op_number = self.log_base + self.log.len() as u64;
                self.commit_to(target);
                self.finish_transition(now);
            }
        }
    }
}
