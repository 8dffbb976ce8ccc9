//! Normal operation (§4.1): Request → Prepare → PrepareOk → commit → Reply,
//! with Commit heartbeats from an idle primary.

use super::{Replica, Status};
use crate::client_table::Lookup;
use crate::message::{Commit, LogEntry, Message, Prepare, PrepareOk, Reply, Request};
use crate::time::Instant;
use crate::Service;

impl<S: Service> Replica<S> {
    /// §4.1 steps 1–3: the primary orders a client's request.
    pub(super) fn on_request(&mut self, now: Instant, request: Request) {
        if !self.is_primary() || request.op.len() > self.config.op_size_max as usize {
            // Backups never answer clients; the client retries to all
            // replicas and so finds the primary.
            self.stats.requests_dropped += 1;
            return;
        }
        if request.request_number == 0 {
            // Client recovery: a query for the latest request-number, which
            // goes through the log so that it sees every earlier request.
            self.admit_request(now, request);
            return;
        }
        match self
            .client_table
            .lookup(request.client_id, request.request_number)
        {
            Lookup::Stale => {
                self.stats.requests_dropped += 1;
                return;
            }
            Lookup::Latest(entry) => {
                // §4.1 step 2: resend the cached reply; never execute twice.
                let reply = Reply {
                    view: self.view,
                    client_id: request.client_id,
                    request_number: request.request_number,
                    result: entry.result.clone(),
                };
                self.stats.requests_deduplicated += 1;
                self.outbox.push_back(super::Action::Reply(reply));
                return;
            }
            Lookup::New => {}
        }
        let in_progress = self.requests_in_progress.get(&request.client_id).copied();
        if in_progress.is_some_and(|r| r >= request.request_number) {
            // Already in the log or queued: the reply will come when it commits.
            self.stats.requests_dropped += 1;
            return;
        }
        self.admit_request(now, request);
    }

    /// Prepares the request now, or queues it while the window is full.
    fn admit_request(&mut self, now: Instant, request: Request) {
        if self.window_full() {
            if self.request_queue.len() >= self.config.request_queue_max as usize {
                self.stats.requests_dropped += 1;
            } else {
                self.mark_in_progress(request.client_id, request.request_number);
                self.request_queue.push_back(request);
            }
            return;
        }
        self.prepare_request(now, request);
    }

    /// Records that a request is queued or in the log. Only ever raises the
    /// number: a client's newer request may be queued behind an older one.
    pub(super) fn mark_in_progress(&mut self, client_id: crate::ClientId, request_number: u64) {
        let entry = self
            .requests_in_progress
            .entry(client_id)
            .or_insert(request_number);
        *entry = (*entry).max(request_number);
    }

    fn window_full(&self) -> bool {
        self.op_number - self.commit_number >= u64::from(self.config.prepare_window_max)
    }

    /// Appends a request to the log and sends Prepare to the backups.
    fn prepare_request(&mut self, now: Instant, request: Request) {
        debug_assert!(self.is_primary());
        self.op_number += 1;
        let entry = LogEntry {
            op_number: self.op_number,
            view: self.view,
            client_id: request.client_id,
            request_number: request.request_number,
            op: request.op,
        };
        self.mark_in_progress(entry.client_id, entry.request_number);
        self.log.push(entry.clone());
        self.prepare_ok_op[usize::from(self.replica)] = self.op_number;
        self.send_to_others(Message::Prepare(Prepare {
            view: self.view,
            commit_number: self.commit_number,
            entry,
        }));
        // A Prepare is a heartbeat too.
        self.timers.heartbeat = Some(now + self.config.heartbeat_interval_ns);
        if self.timers.prepare.is_none() {
            self.timers.prepare = Some(now + self.config.prepare_timeout_ns);
        }
        // With one replica the primary alone is a quorum.
        self.advance_commit_from_acks(now);
    }

    /// §4.1 step 4: a backup appends the op if it holds every earlier one.
    pub(super) fn on_prepare(&mut self, now: Instant, prepare: Prepare) {
        if !self.accept_from_primary(now, prepare.view) {
            return;
        }
        let op_number = prepare.entry.op_number;
        if op_number == self.op_number + 1 {
            self.log.push(prepare.entry);
            self.op_number = op_number;
            self.send_prepare_ok();
        } else if op_number <= self.op_number {
            // A retransmission: our PrepareOk may have been lost.
            self.send_prepare_ok();
        } else {
            // A gap: never acknowledge an op while an earlier one is missing.
            self.request_state(now);
        }
        self.commit_to(prepare.commit_number);
    }

    /// §4.1 step 7: a backup learns the commit-number from a heartbeat.
    pub(super) fn on_commit(&mut self, now: Instant, commit: Commit) {
        if !self.accept_from_primary(now, commit.view) {
            return;
        }
        if commit.op_number > self.op_number {
            self.request_state(now);
        }
        self.commit_to(commit.commit_number);
        // Answering the heartbeat lets the primary tell that a quorum still
        // hears it (see `on_heartbeat_timeout`).
        self.send_prepare_ok();
    }

    /// Common checks for a Prepare or Commit of `view`: returns whether a
    /// backup in normal status of that view should process it. A message of a
    /// newer view (or of the current one while this replica is changing view)
    /// means a view this replica missed: it fetches that view's log first.
    fn accept_from_primary(&mut self, now: Instant, view: u64) -> bool {
        if view < self.view && !self.may_rejoin(view) {
            self.stats.messages_stale_view += 1;
            return false;
        }
        if self.is_primary_of(view) {
            // Only the primary of a view sends Prepare and Commit in it.
            self.stats.messages_invalid += 1;
            return false;
        }
        if view != self.view || self.status != Status::Normal {
            self.start_sync(now, view);
            return false;
        }
        self.primary_heard_at = now;
        self.arm_view_change_timer(now);
        true
    }

    pub(super) fn send_prepare_ok(&mut self) {
        let primary = self.primary_index();
        self.send(
            primary,
            Message::PrepareOk(PrepareOk {
                view: self.view,
                op_number: self.op_number,
                replica: self.replica,
                crash_vector: self.crash_vector.clone(),
            }),
        );
    }

    /// §4.1 step 5: the primary commits once a quorum holds an op.
    pub(super) fn on_prepare_ok(&mut self, now: Instant, prepare_ok: PrepareOk) {
        if prepare_ok.view < self.view {
            self.stats.messages_stale_view += 1;
            return;
        }
        if prepare_ok.view > self.view
            || !self.is_primary()
            || prepare_ok.replica >= self.config.replica_count
            || prepare_ok.replica == self.replica
            || prepare_ok.op_number > self.op_number
        {
            self.stats.messages_invalid += 1;
            return;
        }
        if !self.admit_crash_vector(prepare_ok.replica, &prepare_ok.crash_vector) {
            return;
        }
        self.prepare_ok_heard_at[usize::from(prepare_ok.replica)] = now;
        if self
            .retained_fetcher
            .is_some_and(|(peer, _)| peer == prepare_ok.replica)
        {
            // The peer that fetched the retained checkpoint acknowledges in
            // this view: its fetch is over.
            self.release_retained();
        }
        let acked = &mut self.prepare_ok_op[usize::from(prepare_ok.replica)];
        *acked = (*acked).max(prepare_ok.op_number);
        self.advance_commit_from_acks(now);
    }

    /// Commits the highest op that a quorum (the primary included) holds. A
    /// PrepareOk for op n acknowledges every op up to n, because backups
    /// append in order.
    fn advance_commit_from_acks(&mut self, now: Instant) {
        let quorum = self.config.quorum();
        // The quorum-th largest acknowledgement: the highest op that at
        // least `quorum` replicas hold. O(n²) over a handful of replicas, and
        // no allocation on the commit path.
        let acks = &self.prepare_ok_op;
        let mut committable = acks
            .iter()
            .copied()
            .filter(|&op| acks.iter().filter(|&&other| other >= op).count() >= quorum)
            .max()
            .unwrap_or(0);
        if self
            .config
            .has_bug(crate::config::InjectedBug::CommitWithoutQuorum)
        {
            committable = self.op_number;
        }
        if committable <= self.commit_number {
            return;
        }
        self.commit_to(committable);
        if self.op_number == self.commit_number {
            self.timers.prepare = None;
        } else {
            self.timers.prepare = Some(now + self.config.prepare_timeout_ns);
        }
        // Room in the window: admit queued requests.
        while !self.window_full() {
            let Some(request) = self.request_queue.pop_front() else {
                break;
            };
            match self
                .client_table
                .lookup(request.client_id, request.request_number)
            {
                _ if request.request_number == 0 => self.prepare_request(now, request),
                Lookup::New => self.prepare_request(now, request),
                _ => self.stats.requests_dropped += 1,
            }
        }
    }

    /// The primary resends Prepares that some backup has not acknowledged.
    pub(super) fn on_prepare_timeout(&mut self, now: Instant) {
        self.timers.prepare = None;
        if !self.is_primary() || self.op_number == self.commit_number {
            return;
        }
        for replica in 0..self.config.replica_count {
            if replica == self.replica {
                continue;
            }
            let acked = self.prepare_ok_op[usize::from(replica)];
            // A backup behind the commit point fetches the committed part
            // itself (it sees the gap); resend only the uncommitted ops.
            let first = acked.max(self.commit_number) + 1;
            for op_number in first..=self.op_number {
                let entry = self.entry(op_number).clone();
                self.send(
                    replica,
                    Message::Prepare(Prepare {
                        view: self.view,
                        commit_number: self.commit_number,
                        entry,
                    }),
                );
            }
        }
        self.timers.prepare = Some(now + self.config.prepare_timeout_ns);
    }

    /// An idle primary tells backups it is alive and how far it committed.
    ///
    /// It first checks that a quorum still answers it. A primary whose
    /// messages reach the backups but who hears nothing back (an asymmetric
    /// partition) would otherwise keep every backup from timing out while
    /// committing nothing; instead it starts a view change itself, stops
    /// sending heartbeats, and the backups' own timers move them on.
    pub(super) fn on_heartbeat_timeout(&mut self, now: Instant) {
        self.timers.heartbeat = None;
        if !self.is_primary() {
            return;
        }
        let heard = (0..self.config.replica_count)
            .filter(|&r| {
                r == self.replica
                    || now.saturating_since(self.prepare_ok_heard_at[usize::from(r)])
                        < self.config.view_change_timeout_ns
            })
            .count();
        if heard < self.config.quorum() {
            self.stats.primary_abdications += 1;
            self.start_view_change(now, self.view + 1);
            return;
        }
        self.send_to_others(Message::Commit(Commit {
            view: self.view,
            commit_number: self.commit_number,
            op_number: self.op_number,
        }));
        self.timers.heartbeat = Some(now + self.config.heartbeat_interval_ns);
    }
}
