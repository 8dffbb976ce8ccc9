//! Normal operation (§4.1): Request → Prepare → PrepareOk → commit → Reply,
//! with Commit heartbeats from an idle primary.

use super::{Replica, Status};
use crate::client_table::Lookup;
use crate::message::{
    Commit, EntryKind, LogEntry, Message, Prepare, PrepareOk, ReadRequest, Reply, Request,
};
use crate::time::Instant;
use crate::Service;

impl<S: Service> Replica<S> {
    /// §4.1 steps 1–3: the primary orders a client's request.
    pub(super) fn on_request(&mut self, now: Instant, request: Request) {
        if self.is_primary() && self.epoch_state.reconfiguration_at != 0 {
            // §7.1: after a reconfiguration the epoch takes no request; its
            // client is told of the next epoch as soon as it begins.
            self.stats.requests_dropped += 1;
            self.note_waiting_client(request.client_id);
            return;
        }
        if !self.is_primary()
            || request.op.len() > self.config.op_size_max as usize
            || self.forming_cluster()
        {
            // Backups never answer clients; the client retries to all
            // replicas and so finds the primary.
            self.stats.requests_dropped += 1;
            return;
        }
        if request.request_number == 0 {
            // Client recovery: a query that fences the client's earlier
            // incarnations, which goes through the log so that it sees every
            // earlier request. Before the leased read: a service that takes
            // the query's op for a read must not answer it from its state.
            self.admit_request(now, request);
            return;
        }
        if self.config.lease_duration_ns != 0
            && self.service.is_read_only(&request.op)
            && self.lease_valid(now)
        {
            // §6, leased reads: no backup can be in a newer view yet, so
            // this state is the latest; no round of prepares is needed.
            let result = self.service.query(&request.op);
            self.stats.leased_reads += 1;
            self.outbox.push_back(super::Output::Reply(Reply {
                view: self.view,
                client_id: request.client_id,
                request_number: request.request_number,
                op_number: self.commit_number,
                result,
            }));
            return;
        }
        if self.answered_from_client_table(request.client_id, request.request_number) {
            return;
        }
        let in_progress = self.requests_in_progress.get(&request.client_id).copied();
        if in_progress.is_some_and(|r| r >= request.request_number) {
            // Already in the log or queued: the reply will come when it commits.
            self.stats.requests_dropped += 1;
            return;
        }
        self.admit_request(now, request);
    }

    /// §4.1 step 2: a request the client table has seen is not executed
    /// again. The latest one is answered with the cached reply, an older
    /// one dropped. Returns whether the request was one of those.
    pub(super) fn answered_from_client_table(
        &mut self,
        client_id: crate::ClientId,
        request_number: u64,
    ) -> bool {
        match self.client_table.lookup(client_id, request_number) {
            Lookup::Stale => {
                self.stats.requests_dropped += 1;
                true
            }
            Lookup::Latest(entry) => {
                let reply = Reply {
                    view: self.view,
                    client_id,
                    request_number,
                    op_number: entry.op_number,
                    result: entry.result.clone(),
                };
                self.stats.requests_deduplicated += 1;
                self.outbox.push_back(super::Output::Reply(reply));
                true
            }
            Lookup::New => false,
        }
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

    pub(super) fn window_is_full(&self) -> bool {
        self.window_full()
    }

    fn window_full(&self) -> bool {
        self.op_number - self.commit_number >= u64::from(self.config.prepare_window_max)
            || (self.config.has_witnesses()
                && self.op_number.saturating_sub(self.full_commit_min)
                    >= self.config.witness_log_ops_max)
    }

    /// Appends a request to the log and adds it to the batch for the backups
    /// (§6, batching): the batch leaves when it is full or when the batch
    /// timer fires (see [`Replica`]'s contract).
    fn prepare_request(&mut self, now: Instant, request: Request) {
        self.prepare_entry(
            now,
            request.client_id,
            request.request_number,
            request.op,
            EntryKind::Operation,
        );
    }

    /// Appends an entry of `kind` to the log (see `prepare_request`).
    pub(super) fn prepare_entry(
        &mut self,
        now: Instant,
        client_id: crate::ClientId,
        request_number: u64,
        op: alloc::vec::Vec<u8>,
        kind: EntryKind,
    ) {
        debug_assert!(self.is_primary());
        let entry = LogEntry {
            op_number: self.op_number + 1,
            view: self.view,
            client_id,
            request_number,
            op,
            kind,
        };
        let size = entry.encoded_size();
        let bytes_max = (self.config.batch_bytes_max as usize).min(self.log_budget_bytes());
        if self.unsent_from < self.op_number && self.batch_bytes + size > bytes_max {
            self.flush_batch();
        }
        self.op_number += 1;
        self.mark_in_progress(entry.client_id, entry.request_number);
        self.log.push(entry);
        self.batch_bytes += size;
        self.prepare_ok_op[usize::from(self.replica)] = self.ack_op();
        if self.op_number - self.unsent_from >= u64::from(self.config.batch_ops_max) {
            self.flush_batch();
        } else if self.timers.batch.is_none() {
            // The first entry of a batch arms the timer; with no delay it
            // is due at once, and fires once the embedding has fed the
            // inputs ready now (see [`Replica`]).
            self.timers.batch = Some(now + self.config.batch_delay_ns);
        }
        if self.timers.prepare.is_none() {
            self.timers.prepare = Some(now + self.config.prepare_timeout_ns);
        }
        // With one replica the primary alone is a quorum.
        self.advance_commit_from_acks(now);
    }

    /// Sends the batch built since the last one: one Prepare per backup.
    pub(super) fn flush_batch(&mut self) {
        self.timers.batch = None;
        self.batch_bytes = 0;
        if self.unsent_from >= self.op_number || !self.is_primary() {
            self.unsent_from = self.unsent_from.max(self.op_number);
            return;
        }
        // With one replica the ops commit as they are appended, and a
        // checkpoint may drop them from the log before a delayed batch
        // leaves (`batch_delay_ns`): there is no backup to send those to,
        // and the log no longer starts below `log_base` (vr-sim seed 11).
        let entries = self.log_after(self.unsent_from.max(self.log_base)).to_vec();
        self.unsent_from = self.op_number;
        self.stats.prepare_batches += 1;
        self.stats.prepare_batch_entries += entries.len() as u64;
        if self.config.replica_count > 1 {
            self.send_to_others(Message::Prepare(Prepare {
                view: self.view,
                commit_number: self.commit_number,
                timestamp_ns: self.now.as_nanos(),
                full_commit_min: self.full_commit_min,
                entries,
            }));
        }
        // A Prepare is a heartbeat too.
        self.timers.heartbeat = Some(self.now + self.config.heartbeat_interval_ns);
    }

    /// §4.1 step 4: a backup appends the ops if it holds every earlier one.
    pub(super) fn on_prepare(&mut self, now: Instant, prepare: Prepare) {
        let first = prepare.entries.first().map(|e| e.op_number);
        let Some(first) = first.filter(|&first| {
            first >= 1 && super::view_change::is_contiguous_from(&prepare.entries, first)
        }) else {
            self.stats.messages_invalid += 1;
            return;
        };
        if !self.accept_from_primary(now, prepare.view) {
            return;
        }
        self.note_primary_timestamp(now, prepare.timestamp_ns);
        self.note_full_commit_min(prepare.full_commit_min);
        if first > self.op_number + 1 {
            // A gap: never acknowledge an op while an earlier one is missing.
            self.request_state(now);
        } else {
            for entry in prepare.entries {
                if entry.op_number == self.op_number + 1 {
                    self.op_number = entry.op_number;
                    self.log.push(entry);
                }
            }
            // New entries, or a retransmission whose PrepareOk was lost.
            self.send_prepare_ok();
        }
        self.commit_to(prepare.commit_number);
    }

    /// A backup heard its primary: it echoes the primary's timestamp and
    /// promises not to start or join a view change for a lease (§6).
    fn note_primary_timestamp(&mut self, now: Instant, timestamp_ns: u64) {
        self.primary_timestamp_ns = self.primary_timestamp_ns.max(timestamp_ns);
        if self.config.lease_duration_ns != 0 {
            let until = now + self.config.lease_duration_ns;
            self.lease_promise_until = self.lease_promise_until.max(until);
        }
    }

    /// Whether the primary holds a read lease at `now`: a quorum (itself
    /// included) echoed a timestamp of this view no older than a lease,
    /// shortened by the clock-drift bound, and every op it began the view
    /// with is committed.
    pub(super) fn lease_valid(&self, now: Instant) -> bool {
        let lease = self.config.lease_duration_ns;
        if lease == 0 || !self.is_primary() || self.commit_number < self.view_start_op {
            return false;
        }
        let me = usize::from(self.replica);
        let acked = |r: usize| {
            if r == me {
                now.as_nanos()
            } else {
                self.lease_acked_ns[r]
            }
        };
        let n = self.lease_acked_ns.len();
        // The quorum-th largest timestamp: a quorum promised since then.
        let since = (0..n)
            .map(acked)
            .filter(|&t| (0..n).filter(|&r| acked(r) >= t).count() >= self.config.quorum())
            .max()
            .unwrap_or(0);
        since != 0
            && now.as_nanos()
                < since.saturating_add(lease - self.config.clock_drift_max_ns.min(lease))
    }

    /// §6, reads at backups: answer a read-only operation from this
    /// replica's state once it has executed up to the client's op-number.
    pub(super) fn on_read_request(&mut self, read: ReadRequest) {
        if self.config.backup_reads_max == 0
            || self.is_witness()
            || self.status != Status::Normal
            || read.op.len() > self.config.op_size_max as usize
            || !self.service.is_read_only(&read.op)
        {
            self.stats.requests_dropped += 1;
            return;
        }
        if read.op_number_min <= self.commit_number
            || self
                .config
                .has_bug(crate::config::InjectedBug::BackupReadBeforeExecuting)
        {
            self.answer_read(read);
        } else if self.parked_reads.len() < self.config.backup_reads_max as usize {
            self.parked_reads.push_back(read);
        } else {
            self.stats.requests_dropped += 1;
        }
    }

    fn answer_read(&mut self, read: ReadRequest) {
        let result = self.service.query(&read.op);
        self.stats.backup_reads += 1;
        self.outbox.push_back(super::Output::Reply(Reply {
            view: self.view,
            client_id: read.client_id,
            request_number: read.request_number,
            op_number: self.commit_number,
            result,
        }));
    }

    /// Answers the parked reads that the commit-number has caught up with.
    pub(super) fn answer_parked_reads(&mut self) {
        let commit = self.commit_number;
        for read in core::mem::take(&mut self.parked_reads) {
            if read.op_number_min <= commit {
                self.answer_read(read);
            } else {
                self.parked_reads.push_back(read);
            }
        }
    }

    /// §4.1 step 7: a backup learns the commit-number from a heartbeat.
    pub(super) fn on_commit(&mut self, now: Instant, commit: Commit) {
        if !self.accept_from_primary(now, commit.view) {
            return;
        }
        self.note_primary_timestamp(now, commit.timestamp_ns);
        self.note_full_commit_min(commit.full_commit_min);
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
                op_number: self.ack_op(),
                replica: self.replica,
                timestamp_ns: self.primary_timestamp_ns,
                commit_number: self.commit_number,
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
            || !self.config.has_replica(prepare_ok.replica)
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
        // An echo of this primary's own clock, never ahead of it.
        let echoed = prepare_ok.timestamp_ns.min(self.now.as_nanos());
        let lease = &mut self.lease_acked_ns[usize::from(prepare_ok.replica)];
        *lease = (*lease).max(echoed);
        let acked = &mut self.prepare_ok_op[usize::from(prepare_ok.replica)];
        *acked = (*acked).max(prepare_ok.op_number);
        let reported = &mut self.prepare_ok_commit[usize::from(prepare_ok.replica)];
        *reported = (*reported).max(prepare_ok.commit_number.min(prepare_ok.op_number));
        self.advance_commit_from_acks(now);
        if self.config.has_witnesses() {
            let before = self.full_commit_min;
            self.update_full_commit_min();
            if self.full_commit_min > before {
                // The log may run further ahead of the slowest full replica.
                self.admit_queued_requests(now);
            }
        }
    }

    /// The primary of a cluster with witnesses: the smallest commit-number
    /// among the full replicas, itself included, reported in this view. A
    /// full replica not heard from in this view counts as zero, so a new
    /// primary keeps the point it knew until all have reported.
    fn update_full_commit_min(&mut self) {
        let mut min = self.commit_number;
        for replica in self.config.replica_indexes() {
            if replica != self.replica && !self.config.is_witness(replica) {
                min = min.min(self.prepare_ok_commit[usize::from(replica)]);
            }
        }
        self.note_full_commit_min(min);
    }

    /// Commits the highest op that a quorum (the primary included) holds. A
    /// PrepareOk for op n acknowledges every op up to n, because backups
    /// append in order.
    pub(super) fn advance_commit_from_acks(&mut self, now: Instant) {
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
        self.admit_queued_requests(now);
    }

    /// Room in the window: admit queued requests.
    fn admit_queued_requests(&mut self, now: Instant) {
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
        for replica in self.config.replica_indexes() {
            if replica == self.replica {
                continue;
            }
            let acked = self.prepare_ok_op[usize::from(replica)];
            // A backup behind the commit point fetches the committed part
            // itself (it sees the gap); resend only the uncommitted ops, in
            // batches.
            let mut first = acked.max(self.commit_number) + 1;
            while first <= self.op_number {
                let mut entries = alloc::vec::Vec::new();
                let mut bytes = 0usize;
                let bytes_max = (self.config.batch_bytes_max as usize).min(self.log_budget_bytes());
                while first <= self.op_number
                    && entries.len() < self.config.batch_ops_max as usize
                    && (entries.is_empty() || bytes + self.entry(first).encoded_size() <= bytes_max)
                {
                    bytes += self.entry(first).encoded_size();
                    entries.push(self.entry(first).clone());
                    first += 1;
                }
                self.send(
                    replica,
                    Message::Prepare(Prepare {
                        view: self.view,
                        commit_number: self.commit_number,
                        timestamp_ns: now.as_nanos(),
                        full_commit_min: self.full_commit_min,
                        entries,
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
        let heard = self
            .config
            .replica_indexes()
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
            timestamp_ns: now.as_nanos(),
            full_commit_min: self.full_commit_min,
        }));
        self.timers.heartbeat = Some(now + self.config.heartbeat_interval_ns);
    }
}
