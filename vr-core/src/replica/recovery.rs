//! Recovery (§4.3), made safe with crash vectors (Michael, Ports, Sharma and
//! Szekeres, "Recovering Shared Objects Without Stable Storage", DISC 2017).
//!
//! A replica restarted without its state must not act on anything it said
//! before the crash: it may have acknowledged a Prepare or promised its log
//! to a view change, and forgotten it. The paper's recovery asks a quorum for
//! the current state, but a vote the replica sent before the crash can still
//! be in flight, or be sitting in some replica's tally, and be counted next
//! to votes sent after the recovery. Together they can make a quorum that
//! never existed at any one time, and lose a committed operation.
//!
//! So each replica has an *incarnation*, raised by every recovery, and every
//! vote (PrepareOk, StartViewChange, DoViewChange, RecoveryResponse) carries
//! the sender's *crash vector*: the latest incarnation it knows of every
//! replica. A receiver drops a vote from an incarnation older than one it
//! knows, and when a vector tells it of a newer incarnation it discards the
//! votes it holds from the older one. Recovery itself runs in two rounds:
//!
//! 1. `Recovery(incarnation = 0)`: learn the highest incarnation of this
//!    replica that f+1 others know; any earlier recovery completed only once
//!    f+1 others had recorded its incarnation, and two sets of f+1 of the 2f
//!    others intersect, so this is at least the latest one.
//! 2. `Recovery(incarnation = k)`, with `k` one higher: each responder
//!    records `k` (and from then on drops the older incarnation's votes)
//!    before it answers. With f+1 answers from normal replicas, including the
//!    primary of the latest view among them, the replica fetches that
//!    primary's state (state transfer, possibly by checkpoint) and only then
//!    becomes a normal backup.
//!
//! When every other replica answers that it is recovering too (or that it
//! holds no op at all: it formed the cluster a moment earlier), the whole
//! cluster lost its state at once, or is new: they form view 0 afresh.

use alloc::vec::Vec;

use super::{Replica, Status, Sync, SyncGoal};
use crate::message::{
    CrashVector, Message, Recovery, RecoveryResponse, RecoveryStatus, ReplicaIndex,
};
use crate::time::Instant;
use crate::Service;

/// Recovery messages are resent this many times per `resend_interval_ns`
/// (see `send_recovery`).
const RECOVERY_RESENDS_PER_INTERVAL: u64 = 4;

/// A recovery in progress.
#[derive(Clone, Debug)]
pub(crate) struct RecoveryState {
    /// Echoed by responses; a new one for each attempt.
    nonce: u64,
    /// `0` while learning the incarnation (round 1), else the new one.
    incarnation: u64,
    /// Per replica, its response to this attempt.
    responses: Vec<Option<RecoveryResponse>>,
}

impl<S: Service> Replica<S> {
    /// Starts (or restarts) recovery from round 1.
    pub(super) fn start_recovery(&mut self, now: Instant) {
        let n = usize::from(self.config.replica_count);
        self.reset_view_state(self.view);
        self.status = Status::Recovering;
        self.recovery = Some(RecoveryState {
            nonce: self.prng.next_u64(),
            incarnation: 0,
            responses: alloc::vec![None; n],
        });
        if n == 1 {
            // Alone, the replica is the whole cluster: it lost everything.
            // If that was durable data, serving an empty state would be a
            // loss it does not get to decide: it stays recovering (safe
            // formation); an operator who accepts the loss wipes its disk.
            if !self.lost_disk {
                self.form_new_cluster(now);
            }
            return;
        }
        self.send_recovery(now);
    }

    fn send_recovery(&mut self, now: Instant) {
        let Some(recovery) = &self.recovery else {
            return;
        };
        let message = Recovery {
            replica: self.replica,
            nonce: recovery.nonce,
            incarnation: recovery.incarnation,
        };
        // Both rounds ask everyone again each time: answers are replaced by
        // newer ones, so the recovering replica follows view changes while
        // it waits for a live primary, learns that a replica that answered
        // while recovering has recovered since (seed 120998), and hears of
        // a reconfiguration that happened after an answer (a replica of the
        // new epoch answers with StartEpoch; seed 2034580, where round 1
        // asked only a partitioned replica for ever).
        let missing: Vec<ReplicaIndex> = self
            .config
            .replica_indexes()
            .filter(|&r| r != self.replica)
            .collect();
        for replica in missing {
            self.send(replica, Message::Recovery(message));
        }
        // Faster than other resends: the answers often say only "wait" (a
        // view change is under way, or the primary of the latest view is
        // this replica), and the first round after the view forms ends the
        // wait. At the resend interval that cost up to 20 ms per restarted
        // primary (issue 18, item 8), for messages of a few dozen bytes.
        let interval = (self.config.resend_interval_ns / RECOVERY_RESENDS_PER_INTERVAL).max(1);
        self.timers.repair = Some(now + interval);
    }

    /// The repair timer while recovering: resend Recovery to the replicas
    /// that have not answered, or resend the state request.
    pub(super) fn on_recovery_resend_timeout(&mut self, now: Instant) {
        if self.sync.is_some() {
            self.resend_sync_request(now);
        } else {
            self.send_recovery(now);
        }
    }

    /// The view-change timer while recovering: the state fetch stalled (its
    /// source failed, or the view changed). Start over with a new nonce.
    pub(super) fn on_recovery_timeout(&mut self, now: Instant) {
        let incarnation = self.recovery.as_ref().map_or(0, |r| r.incarnation);
        self.sync = None;
        self.start_recovery(now);
        if let Some(recovery) = &mut self.recovery {
            // Responders recorded this incarnation already; asking again
            // with it is idempotent and skips round 1.
            recovery.incarnation = incarnation;
        }
    }

    /// §4.3 step 2, at any replica: answer a recovering replica. Unlike the
    /// paper, replicas that are not normal answer too, saying so: their
    /// answers carry incarnations (round 1) and let a cluster in which every
    /// replica is recovering start afresh.
    pub(super) fn on_recovery(&mut self, now: Instant, message: Recovery) {
        let from = message.replica;
        if !self.config.has_replica(from) || from == self.replica {
            self.stats.messages_invalid += 1;
            return;
        }
        if message.incarnation > self.crash_vector[usize::from(from)] && !self.crash_vectors_off() {
            self.crash_vector[usize::from(from)] = message.incarnation;
            self.fence(from);
            self.primary_restarted(now, from);
        }
        let status = match self.status {
            Status::Normal => RecoveryStatus::Normal,
            Status::ViewChange => RecoveryStatus::ViewChange,
            // Transitioning and retired replicas do not answer (they handle
            // no Recovery); for completeness they would count as holding
            // nothing.
            Status::Recovering if self.lost_disk => RecoveryStatus::RecoveringDataLost,
            Status::Recovering | Status::Transitioning | Status::Retired => {
                RecoveryStatus::Recovering
            }
        };
        self.send(
            from,
            Message::RecoveryResponse(RecoveryResponse {
                view: self.view,
                nonce: message.nonce,
                status,
                op_number: self.op_number,
                commit_number: self.commit_number,
                crash_vector: self.crash_vector.clone(),
                replica: self.replica,
            }),
        );
    }

    /// `from` has just proved a new incarnation (round 2 of its recovery):
    /// it restarted without its state. If it is this backup's primary, the
    /// view has no primary any more (a recovering replica leads nothing, and
    /// it comes back as a backup of a later view, see
    /// `check_recovery_quorum`), so this backup starts the view change now
    /// rather than after its primary-silence timeout (issue 18, item 8).
    /// The recovering replica waits for that view change anyway: it needs
    /// answers from the primary of the latest view. Only round 2 counts:
    /// round 1 (incarnation 0) of a recovery long finished, delayed, looks
    /// like a new one's, and could depose the same replica leading a later
    /// view. Starting a view change is always safe (§4.2); what this
    /// changes is only when (and not before a lease promised to the primary
    /// runs out: see `primary_left`).
    fn primary_restarted(&mut self, now: Instant, from: ReplicaIndex) {
        if self.status != Status::Normal || self.is_primary() || from != self.primary_index() {
            return;
        }
        self.stats.view_changes_primary_restarted += 1;
        self.primary_left(now, self.view + 1);
    }

    /// §4.3 step 3, at the recovering replica.
    pub(super) fn on_recovery_response(&mut self, now: Instant, message: RecoveryResponse) {
        let n = usize::from(self.config.replica_count);
        let from = message.replica;
        if !self.config.has_replica(from)
            || from == self.replica
            || message.crash_vector.len() != n
            || message.commit_number > message.op_number
        {
            self.stats.messages_invalid += 1;
            return;
        }
        let Some(recovery) = &self.recovery else {
            self.stats.messages_stale_view += 1;
            return;
        };
        if message.nonce != recovery.nonce || self.sync.is_some() {
            self.stats.messages_stale_view += 1;
            return;
        }
        let adjusted;
        let mut crash_vector = &message.crash_vector;
        if message.status.is_recovering() {
            // A recovering replica lost its crash vector with its memory:
            // its own entry is 0 until its round 1 picks a new incarnation.
            // Its answer is no vote (it says only that it holds nothing),
            // so an own entry below the one known here is not a sign of an
            // older incarnation; dropping it kept a cluster booting with
            // restarts from ever forming (docs/testing.md, bug 15).
            let k = usize::from(from);
            let mut raised = message.crash_vector.clone();
            raised[k] = raised[k].max(self.crash_vector[k]);
            adjusted = raised;
            crash_vector = &adjusted;
        }
        if !self.admit_crash_vector(from, crash_vector) {
            return;
        }
        let me = usize::from(self.replica);
        let known = message.crash_vector[me];
        let unchecked = self.crash_vectors_off();
        let Some(recovery) = &mut self.recovery else {
            return;
        };
        if recovery.incarnation == 0 {
            recovery.responses[usize::from(from)] = Some(message);
            self.check_incarnation_quorum(now);
        } else if known > recovery.incarnation {
            // Someone knows a later incarnation of this replica than the
            // one chosen (an earlier attempt's round 2 reached it): go above.
            recovery.incarnation = known + 1;
            recovery.responses.iter_mut().for_each(|r| *r = None);
            self.crash_vector[me] = known + 1;
            self.send_recovery(now);
        } else if known == recovery.incarnation || unchecked {
            recovery.responses[usize::from(from)] = Some(message);
            self.check_recovery_quorum(now);
        }
    }

    /// Round 1 done with f+1 answers: choose the new incarnation.
    fn check_incarnation_quorum(&mut self, now: Instant) {
        let f_plus_1 = self.config.quorum();
        let me = usize::from(self.replica);
        let Some(recovery) = &mut self.recovery else {
            return;
        };
        let answered: Vec<&RecoveryResponse> = recovery.responses.iter().flatten().collect();
        // With n = 2f + 1, f + 1 others; with an even n, a majority of
        // everyone but this replica, so that the sets still intersect.
        let others = usize::from(self.config.replica_count) - 1;
        let needed = f_plus_1.min(others);
        // A replica that is itself recovering lost its crash vector: its
        // answer cannot stand for the f + 1 that recorded this replica's
        // last incarnation. Count only the others, unless every other
        // replica answered (then at most f - 1 of them are wiped, so two
        // of those f + 1 remember). Counting them let seven replicas with
        // three recovering at once pick an incarnation again
        // (`round_one_does_not_count_answers_from_recovering_replicas`).
        let remembering = answered
            .iter()
            .filter(|r| !r.status.is_recovering())
            .count();
        if remembering < needed && answered.len() < others {
            return;
        }
        let highest = answered
            .iter()
            .map(|r| r.crash_vector[me])
            .max()
            .unwrap_or(0)
            .max(self.crash_vector[me]);
        recovery.incarnation = highest + 1;
        recovery.responses.iter_mut().for_each(|r| *r = None);
        self.crash_vector[me] = highest + 1;
        self.send_recovery(now);
    }

    /// Round 2: with f+1 normal answers including the latest view's primary,
    /// fetch that primary's state; with every other replica recovering, form
    /// a new cluster.
    fn check_recovery_quorum(&mut self, now: Instant) {
        let Some(recovery) = &self.recovery else {
            return;
        };
        let others = usize::from(self.config.replica_count) - 1;
        let answered: Vec<&RecoveryResponse> = recovery.responses.iter().flatten().collect();
        // Every other replica is recovering, or holds nothing at all (it
        // formed the cluster a moment before this replica asked): no op was
        // ever committed, so starting empty loses nothing. But not when one
        // is normal in a view led by another replica, even holding nothing:
        // that view can commit without this one, right after answering, and
        // forming view 0 would go back to a view the others left; ops this
        // replica then committed in view 0 (with one that recovered into
        // it) were dropped by the next view change, where the later, empty
        // view's log ranked higher (vr-sim seed 825657). Such a cluster is
        // recovered from the usual way, below.
        let view_led_by_another = answered.iter().any(|r| {
            r.status == RecoveryStatus::Normal && self.config.primary_index(r.view) != self.replica
        });
        // A durable replica that lost data it held (its own disk, or
        // another's answering so) never forms a new cluster: an empty view
        // 0 would serve as if the acknowledged writes on those disks had
        // never been (issue 18, safe formation). The cluster waits instead
        // for a replica with its state: beyond f failures, unavailable
        // rather than wrong.
        let data_lost = self.lost_disk
            || answered
                .iter()
                .any(|r| r.status == RecoveryStatus::RecoveringDataLost);
        if answered.len() == others
            && !view_led_by_another
            && !data_lost
            && answered
                .iter()
                .all(|r| r.status.is_recovering() || r.op_number == 0)
        {
            self.form_new_cluster(now);
            return;
        }
        let normal: Vec<&RecoveryResponse> = answered
            .iter()
            .copied()
            .filter(|r| r.status == RecoveryStatus::Normal)
            .collect();
        let needed = self.config.quorum().min(others);
        if normal.len() < needed {
            return;
        }
        let view = normal.iter().map(|r| r.view).max().unwrap_or(0);
        let primary = self.config.primary_index(view);
        let primary_answered = normal
            .iter()
            .any(|r| r.replica == primary && r.view == view);
        if !primary_answered {
            // The primary of the latest view has not answered, or is this
            // replica (its backups will time out and change view): wait,
            // resending, for answers in a view with a live primary.
            return;
        }
        // Fetch the primary's state into a staging area; install it, and
        // become normal in `view`, only once it is all here.
        self.view = view;
        self.primary_heard_at = now;
        self.arm_view_change_timer(now);
        self.sync = Some(Sync {
            view,
            source: primary,
            base: self.commit_number,
            entries: Vec::new(),
            goal: SyncGoal::PrimaryLog,
            fetch: None,
            staged_checkpoint: None,
        });
        self.send_get_state(now, primary, self.commit_number);
    }

    /// Whether this replica is the primary of a cluster it formed itself
    /// (`form_new_cluster`) and fewer than f backups have answered it in
    /// this view. Such a primary takes no request yet: the replicas still
    /// recovering form the cluster only with replicas that hold no op, so
    /// one op in its log, which it could not commit without them anyway,
    /// would keep them recovering for ever (docs/testing.md, bug 15).
    pub(super) fn forming_cluster(&self) -> bool {
        let me = usize::from(self.replica);
        let f = usize::from(self.config.replica_count - 1) / 2;
        self.view == 0
            && self.op_number == 0
            && self.incarnation() > 0
            && self.is_primary()
            && (self.lease_acked_ns.iter().enumerate())
                .filter(|&(r, &t)| r != me && t > 0)
                .count()
                < f
    }

    /// Every replica lost its state: start view 0 with an empty log.
    fn form_new_cluster(&mut self, now: Instant) {
        self.recovery = None;
        self.recovered = Some(super::Recovered {
            log_op: self.op_number,
            view: 0,
            commit_number: self.commit_number,
        });
        self.view = 0;
        self.last_normal_view = 0;
        self.status = Status::Normal;
        self.stats.recoveries_completed += 1;
        self.stats.clusters_formed += 1;
        self.enter_normal_timers(now);
    }

    /// Called when the recovering replica installed the state of `view`'s
    /// primary: a log up to `op_number`, committed up to `commit_number`.
    pub(super) fn finish_recovery(&mut self, view: u64, op_number: u64, commit_number: u64) {
        if self.recovery.take().is_some() {
            self.stats.recoveries_completed += 1;
            self.recovered = Some(super::Recovered {
                log_op: op_number,
                view,
                commit_number,
            });
        }
    }

    /// Whether this replica's earlier incarnation, which it forgot in a
    /// crash, may have executed the reconfiguration at `op_number`,
    /// prepared in view `entry_view`, and so voted in the epoch it began
    /// (issue 17, item 1). It can have only if the entry was committed
    /// before the crash. Then the entry is in the log the recovery
    /// installed (the primary of the latest view holds every committed
    /// op). And if the entry was prepared in the very view the recovery
    /// joined, its primary, which decides commits in that view and was
    /// alive throughout, already knew it committed when it answered. An
    /// entry from an older view may have committed there with the
    /// knowledge lost since: assumed entered.
    pub(super) fn earlier_life_may_have_entered(&self, op_number: u64, entry_view: u64) -> bool {
        self.recovered.is_some_and(|r| {
            op_number <= r.log_op && (entry_view < r.view || op_number <= r.commit_number)
        })
    }

    /// Whether crash vectors are switched off by the test-only bug.
    pub(super) fn crash_vectors_off(&self) -> bool {
        self.config
            .has_bug(crate::config::InjectedBug::RecoveryWithoutCrashVectors)
    }

    /// Checks the crash vector of a vote from `from` and learns from it.
    /// Returns `false` (and counts it) when the vote must be dropped: it
    /// comes from an incarnation of `from` older than one this replica
    /// knows, or the vector is malformed.
    pub(super) fn admit_crash_vector(&mut self, from: ReplicaIndex, cv: &CrashVector) -> bool {
        if self.crash_vectors_off() {
            return true;
        }
        if cv.len() != self.crash_vector.len() {
            self.stats.messages_invalid += 1;
            return false;
        }
        if cv[usize::from(from)] < self.crash_vector[usize::from(from)] {
            self.stats.messages_stale_incarnation += 1;
            return false;
        }
        let me = usize::from(self.replica);
        if cv[me] > self.crash_vector[me]
            && matches!(self.status, Status::Normal | Status::ViewChange)
        {
            // `from` knows a later incarnation of this replica than its
            // own: a round 2 of an earlier life that never finished reached
            // it after this life's round 1 chose its number. Round 1 cannot
            // miss an incarnation that finished (it voted) while at most f
            // replicas are down or recovering; one that did not finish
            // never voted, so its number is no fence to cross for safety.
            // But every vote of this life is dropped as stale by replicas
            // that know the higher number: with a cluster booting (every
            // replica recovering at once) that kept a view from forming for
            // ever (vr-sim seed 2016416). Move above it. This replica
            // forgot nothing, so its own earlier votes need no fence; the
            // replicas that learn the new number drop the ones they hold,
            // and it sends them again.
            self.crash_vector[me] = cv[me].saturating_add(1);
            self.stats.incarnations_raised += 1;
        }
        for replica in self.config.replica_indexes() {
            let k = usize::from(replica);
            if replica != self.replica && cv[k] > self.crash_vector[k] {
                self.crash_vector[k] = cv[k];
                self.fence(replica);
            }
        }
        true
    }

    /// `replica` has a newer incarnation than the one whose votes this
    /// replica may hold: forget those votes, so that no quorum mixes votes
    /// from before and after its crash.
    fn fence(&mut self, replica: ReplicaIndex) {
        let k = usize::from(replica);
        let incarnation = self.crash_vector[k];
        self.start_view_change_from.remove(replica);
        if self.do_view_change_from[k]
            .as_ref()
            .is_some_and(|d| d.crash_vector.get(k).is_some_and(|&i| i < incarnation))
        {
            self.do_view_change_from[k] = None;
            if self
                .sync
                .as_ref()
                .is_some_and(|s| matches!(s.goal, SyncGoal::CommittedTo(_)))
            {
                // The log being completed was chosen with that vote.
                self.sync = None;
                self.timers.repair = None;
            }
        }
        self.prepare_ok_op[k] = 0;
        self.prepare_ok_commit[k] = 0;
        if let Some(recovery) = &mut self.recovery {
            if recovery.responses[k]
                .as_ref()
                .is_some_and(|r| r.crash_vector[k] < incarnation)
            {
                recovery.responses[k] = None;
            }
        }
    }
}
