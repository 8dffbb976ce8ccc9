//! Frames to and from replicas: decoding, delivery (one read at a time),
//! timers, and what the simulator checks after every step of a replica.

use super::*;

impl Simulator {
    // ---- Delivery ----

    /// The message of a frame and the sender's epoch (the header's).
    pub(super) fn decode(&mut self, packet: &Packet) -> Option<(Message, u32)> {
        let (from, to) = (packet.from, packet.to);
        let max = self.config.message_size_max as usize;
        let result = codec::decode_in_epoch(&packet.frame, self.config.cluster, max);
        let oversized = matches!(result, Err(DecodeError::Oversized { .. }));
        let error = match result {
            Ok((message, epoch, used)) if used == packet.frame.len() => {
                if packet.corrupted {
                    let detail = format!(
                        "{from} -> {to}: a corrupted frame decoded as {}",
                        describe(&message)
                    );
                    self.violation(ViolationKind::Codec, detail);
                    return None;
                }
                return Some((message, epoch));
            }
            Ok((_, _, used)) => format!("{used} of {} bytes used", packet.frame.len()),
            Err(e) => e.to_string(),
        };
        self.stats.frames_rejected += 1;
        self.trace.record(
            self.now,
            TraceKind::Reject,
            &[from.code(), to.code()],
            || format!("{from} -> {to}: rejected: {error}"),
        );
        let command = codec::peek_header(&packet.frame).map(|h| h.command);
        if !packet.corrupted && oversized && command == Some(Command::DoViewChange as u8) {
            // By design (docs/protocol.md, departure 1): a DoViewChange
            // whose suffix does not fit is sent anyway and rejected; the
            // view change goes on without it. Counted, not a violation.
            self.stats.oversized_do_view_changes += 1;
        } else if !packet.corrupted {
            let what = if oversized {
                "sent a frame over message_size_max"
            } else {
                "sent a frame the decoder rejects"
            };
            let detail = format!(
                "{from} {what} ({} bytes to {to}): {error}",
                packet.frame.len()
            );
            self.violation(ViolationKind::Codec, detail);
        }
        None
    }

    /// Delivers `packets`, all due now at replica `i`, in one step: each
    /// is handed to the replica in turn and its outputs are drained once
    /// at the end, as `vr_core::node` does with the frames of one read.
    pub(super) fn deliver_to_replica(&mut self, i: u8, packets: Vec<Packet>) {
        let mut messages = Vec::with_capacity(packets.len());
        for packet in packets {
            let node = &mut self.replicas[usize::from(i)];
            if node.replica.is_none() {
                self.stats.crash_drops += 1;
                continue;
            }
            if node.paused_until.is_some() {
                if node.held.len() < HELD_MAX {
                    node.held.push_back(packet);
                } else {
                    self.stats.pause_drops += 1;
                }
                continue;
            }
            let Some((message, epoch)) = self.decode(&packet) else {
                continue;
            };
            let from = packet.from;
            let hash = Network::frame_hash(&packet.frame);
            self.trace.record(
                self.now,
                TraceKind::Deliver,
                &[from.code(), u64::from(i), hash],
                || {
                    let in_epoch = if epoch > 0 {
                        format!(" (epoch {epoch})")
                    } else {
                        String::new()
                    };
                    format!("{from} -> r{i}: {}{in_epoch}", describe(&message))
                },
            );
            messages.push((message, epoch));
        }
        if messages.is_empty() {
            return;
        }
        self.replica_step(i, |replica, now| {
            for (message, epoch) in messages {
                replica.handle_message(now, epoch, message);
            }
        });
    }

    pub(super) fn deliver(&mut self, packet: Packet) {
        match packet.to {
            Addr::Replica(i) => self.deliver_to_replica(i, vec![packet]),
            Addr::Client(c) => {
                let Some((message, _)) = self.decode(&packet) else {
                    return;
                };
                let from = packet.from;
                let hash = Network::frame_hash(&packet.frame);
                self.trace.record(
                    self.now,
                    TraceKind::Deliver,
                    &[from.code(), Addr::Client(c).code(), hash],
                    || format!("{from} -> c{c}: {}", describe(&message)),
                );
                let now = Instant::from_nanos(self.now);
                match message {
                    Message::Reply(reply) => {
                        // Completions are outputs, carried out by the drain.
                        self.client_mut(c).handle_reply(now, reply);
                        self.drain_client(c);
                    }
                    Message::StartEpoch(notice) => {
                        // §7.3: the client follows the new epoch's members
                        // and resends its outstanding request there.
                        self.client_mut(c).handle_start_epoch(now, notice);
                        self.drain_client(c);
                    }
                    other => {
                        let detail = format!("{from} sent a client {}", describe(&other));
                        self.violation(ViolationKind::Codec, detail);
                    }
                }
            }
        }
    }

    // ---- Replicas ----

    pub(super) fn replica_timeout(&mut self, i: u8) {
        let deadline = self.replica_deadline(usize::from(i));
        self.trace
            .record(self.now, TraceKind::Timeout, &[u64::from(i)], || {
                format!("r{i} timer")
            });
        self.replica_step(i, |replica, now| replica.handle_timeout(now));
        let local = self.replicas[usize::from(i)].clock.local(self.now);
        let still_due = self.replicas[usize::from(i)]
            .replica
            .as_ref()
            .and_then(|r| r.poll_timeout())
            .is_some_and(|t| t <= local);
        if still_due && self.replica_deadline(usize::from(i)) == deadline {
            let detail = format!("r{i}: handle_timeout left its deadline in the past");
            self.abort(ViolationKind::Stuck, detail);
        }
    }

    /// Feeds one input to replica `i` at its local time, sends what it
    /// outputs, and checks what it executed.
    pub(super) fn replica_step(&mut self, i: u8, input: impl FnOnce(&mut Replica<Kv>, Instant)) {
        let now = self.now;
        let node = &mut self.replicas[usize::from(i)];
        let local = node.clock.local(now);
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        input(replica, local);
        let mut outputs = Vec::new();
        // Per persist, read as it is drained: the checkpoint's pages (a
        // later checkpoint replaces them) and whether the replica had left
        // `Recovering` (its recovery is then on disk once it is durable).
        let mut persists = VecDeque::new();
        // A pure drain up to the deadline. A timer due now (the batch
        // timer) is not fired here: it is an event of the simulator's
        // queue like any other, after the frames due at this instant.
        loop {
            let action = match replica.poll_output() {
                Output::Timeout(_) => break,
                output => output,
            };
            if let Output::Persist(persist) = &action {
                let pages = persist
                    .checkpoint
                    .map(|_| replica.checkpoint_pages().to_vec())
                    .unwrap_or_default();
                persists.push_back((pages, replica.status() != Status::Recovering));
            }
            outputs.push(action);
        }
        let own_epoch = replica.epoch();
        let before = node.observed;
        self.observe_replica(i);
        self.observe_epoch(i);
        self.check_primary_crash(i, before);
        for action in outputs {
            match action {
                Output::Send { to, epoch, message } => {
                    if usize::from(to) < self.replicas.len() {
                        self.send_in_epoch(Addr::Replica(i), Addr::Replica(to.0), epoch, &message);
                    } else {
                        let detail = format!("r{i} sent to the unknown member {to}");
                        self.violation(ViolationKind::Codec, detail);
                    }
                }
                Output::Persist(persist) => {
                    let (pages, clears_marker) = persists.pop_front().unwrap_or_default();
                    self.disk_write(i, persist, pages, clears_marker);
                }
                Output::NewEpoch { client_id, notice } => {
                    if let Some(&c) = self.client_by_id.get(&client_id) {
                        let message = Message::StartEpoch(notice);
                        self.send_in_epoch(Addr::Replica(i), Addr::Client(c), own_epoch, &message);
                    }
                }
                Output::Reply(reply) => match self.client_by_id.get(&reply.client_id) {
                    Some(&c) => self.send_in_epoch(
                        Addr::Replica(i),
                        Addr::Client(c),
                        own_epoch,
                        &Message::Reply(reply),
                    ),
                    None => {
                        let detail =
                            format!("r{i} replied to the unknown client {:x}", reply.client_id);
                        self.violation(ViolationKind::Service, detail);
                    }
                },
                Output::Timeout(_) => unreachable!("the drain stops at the timeout"),
            }
        }
        self.primary_crash();
    }

    /// Checks what replica `i` newly executed against the agreed sequence,
    /// takes its service's faults, and traces view and status changes.
    pub(super) fn observe_replica(&mut self, i: u8) {
        let now = self.now;
        let node = &self.replicas[usize::from(i)];
        let Some(replica) = node.replica.as_ref() else {
            return;
        };
        let before = node.observed;
        let checkpoint = replica.checkpoint();
        let after = Observed {
            view: replica.view(),
            normal: replica.status() == Status::Normal,
            recovering: replica.status() == Status::Recovering,
            commit_number: replica.commit_number(),
            service_faults: replica.service().faults().len(),
            checkpoint: Some((checkpoint.op_number, checkpoint.root)),
            epoch: replica.epoch(),
            primary: replica.is_primary(),
        };
        let mut problems = Vec::new();
        if after.commit_number < before.commit_number {
            problems.push((
                ViolationKind::Agreement,
                format!(
                    "r{i}'s commit-number went back from {} to {}",
                    before.commit_number, after.commit_number
                ),
            ));
        }
        // What the service executed, by the operations' bytes: this covers
        // entries that a checkpoint dropped within the same step.
        for (op_number, op) in replica.service().take_journal() {
            if let Err(detail) = self.agreement.observe_executed(i, op_number, &op) {
                problems.push((ViolationKind::Agreement, detail));
            }
        }
        // The newly committed entries the log still holds (it holds
        // `log_base() + 1 ..= op_number()`), in full: view and request too.
        let base = replica.log_base();
        for op_number in before.commit_number.max(base) + 1..=after.commit_number {
            let Some(entry) = replica.log().get((op_number - base - 1) as usize) else {
                problems.push((
                    ViolationKind::Agreement,
                    format!(
                        "r{i} committed op {op_number} but its log ends at op {}",
                        base + replica.log().len() as u64
                    ),
                ));
                break;
            };
            if let Err(detail) = self.agreement.observe(i, op_number, entry) {
                problems.push((ViolationKind::Agreement, detail));
            }
        }
        // A checkpoint (taken or installed) covers the whole state after its
        // op, client table included: every replica's must be the same.
        if let Some((op_number, root)) = after
            .checkpoint
            .filter(|_| after.checkpoint != before.checkpoint)
        {
            if let Err(detail) = self.agreement.observe_checkpoint(i, op_number, root) {
                problems.push((ViolationKind::Agreement, detail));
            }
        }
        for fault in &replica.service().faults()[before.service_faults..] {
            let kind = match fault {
                ServiceFault::Duplicate { .. } => ViolationKind::ExactlyOnce,
                _ => ViolationKind::Service,
            };
            problems.push((kind, format!("r{i}'s service: {fault:?}")));
        }
        let is_primary = replica.is_primary();
        let status = replica.status();
        if after.commit_number > before.commit_number {
            self.trace.record(
                now,
                TraceKind::Commit,
                &[u64::from(i), after.commit_number],
                || {
                    format!(
                        "r{i} executed ops {}..={}",
                        before.commit_number + 1,
                        after.commit_number
                    )
                },
            );
        }
        if (after.view, after.normal, after.recovering)
            != (before.view, before.normal, before.recovering)
        {
            self.trace.record(
                now,
                TraceKind::View,
                &[
                    u64::from(i),
                    after.view,
                    u64::from(after.normal) + 2 * u64::from(after.recovering),
                ],
                || {
                    format!(
                        "r{i} view {} {:?}{} (was view {} {})",
                        after.view,
                        status,
                        if is_primary { " primary" } else { "" },
                        before.view,
                        status_name(before.normal, before.recovering)
                    )
                },
            );
        }
        // A restarted replica that learns it was removed retires: it is
        // no longer failed either.
        let retired = replica.status() == Status::Retired && node.recovering_since.is_some();
        let recovered_after = node
            .recovering_since
            .filter(|_| after.normal)
            .map(|since| now - since);
        if let Some(took) = recovered_after {
            let (op, base) = (replica.op_number(), replica.log_base());
            self.trace.record(
                now,
                TraceKind::Nemesis,
                &[11, u64::from(i), after.view, after.commit_number],
                || {
                    format!(
                        "r{i} recovered in {}: view {}, op {op}, commit {}, log from op {}, incarnation {}",
                        crate::trace::Seconds(took),
                        after.view,
                        after.commit_number,
                        base + 1,
                        replica.incarnation()
                    )
                },
            );
        }
        if is_primary && after.view > 0 && self.views_formed.insert(after.view) {
            self.stats.views_formed += 1;
        }
        self.stats.view_max = self.stats.view_max.max(after.view);
        if self.plan.boot.recovering && self.stats.formed_ns.is_none() && after.normal {
            let normal_in_view = self
                .replicas
                .iter()
                .filter_map(|node| node.replica.as_ref())
                .filter(|r| r.status() == Status::Normal && r.view() == after.view)
                .count();
            if normal_in_view >= self.config.quorum() {
                self.stats.formed_ns = Some(now);
                self.trace
                    .record(now, TraceKind::Phase, &[3, after.view], || {
                        format!(
                            "the cluster formed: a quorum is normal in view {}",
                            after.view
                        )
                    });
            }
        }
        if let Some(took) = recovered_after {
            self.stats.recovered += 1;
            self.stats.recovery_ns_max = self.stats.recovery_ns_max.max(took);
            self.replicas[usize::from(i)].recovering_since = None;
        }
        if retired {
            self.stats.retired_while_recovering += 1;
            self.replicas[usize::from(i)].recovering_since = None;
            self.trace
                .record(now, TraceKind::Nemesis, &[18, u64::from(i)], || {
                    format!("r{i} learned while recovering that it was removed: retired")
                });
        }
        self.replicas[usize::from(i)].observed = after;
        for (kind, detail) in problems {
            self.violation(kind, detail);
        }
    }

    /// Sends `message` from `from` to `to`, in the sender's `epoch` (the
    /// frame header's; the encoding of epoch 0 is the plain one).
    pub(super) fn send_in_epoch(&mut self, from: Addr, to: Addr, epoch: u32, message: &Message) {
        if let Message::Prepare(prepare) = message {
            let entries = prepare.entries.len() as u64;
            self.stats.prepare_entries_max = self.stats.prepare_entries_max.max(entries);
        }
        let mut frame = Vec::with_capacity(codec::encoded_size(message));
        codec::encode_in_epoch(message, self.config.cluster, epoch, &mut frame);
        let now = self.now;
        self.trace
            .record(now, TraceKind::Send, &[from.code(), to.code()], || {
                format!("{from} -> {to}: {}", describe(message))
            });
        self.network
            .send(self.now, from, to, frame, &mut self.trace);
    }
}
