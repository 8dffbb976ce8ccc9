//! Frames to and from replicas' nodes: decoding checks, delivery (one read
//! at a time), timers, and what the simulator checks after every step of a replica.

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
    /// is handed to the replica's node in turn (`handle_bytes`) and its
    /// outputs are drained once at the end, as an adapter feeds the frames
    /// of one read; the batch timer fires after them, as its own event.
    pub(super) fn deliver_to_replica(&mut self, i: u8, packets: Vec<Packet>) {
        let mut delivered = false;
        for packet in packets {
            let node = &mut self.replicas[usize::from(i)];
            if node.node.is_none() {
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
            let decoded = self.decode(&packet);
            let from = packet.from;
            if let Some((message, epoch)) = &decoded {
                let hash = Network::frame_hash(&packet.frame);
                self.trace.record(
                    self.now,
                    TraceKind::Deliver,
                    &[from.code(), u64::from(i), hash],
                    || {
                        let in_epoch = if *epoch > 0 {
                            format!(" (epoch {epoch})")
                        } else {
                            String::new()
                        };
                        format!("{from} -> r{i}: {}{in_epoch}", describe(message))
                    },
                );
            }
            self.replica_bytes(i, &packet, decoded.is_some());
            delivered = true;
        }
        if delivered {
            self.replica_step(i, |_, _| {});
        }
    }

    /// Hands one frame to replica `i`'s node on the connection it came
    /// on, or, if that closed at this end, on one accepted for it and
    /// closed at once (see `connections`). `valid`: the simulator's decode
    /// accepted it, so the node must too.
    fn replica_bytes(&mut self, i: u8, packet: &Packet, valid: bool) {
        let now = self.now;
        let local = self.replicas[usize::from(i)].clock.local(now);
        let to = Addr::Replica(i);
        let open = self.connections.receiver(packet.pair, to);
        let Some(node) = self.replicas[usize::from(i)].node.as_mut() else {
            return;
        };
        let (connection, stale) = match open {
            Some(connection) => (connection, false),
            None => match node.handle_accepted(local, None) {
                Some(connection) => (connection, true),
                None => return,
            },
        };
        let result = node.handle_bytes(local, connection, &packet.frame);
        if stale {
            self.connections.counters.stale_frames_read += 1;
            if result.is_ok() {
                node.handle_closed(local, connection, vr_core::node::Closed::Eof);
            }
        }
        self.check_node_read(to, connection, packet, valid, result, stale);
    }

    /// What a node's `handle_bytes` made of a frame, against the
    /// simulator's own decode: a frame the codec accepts must be used
    /// whole; a rejected one closed the connection at the node (its
    /// `FrameRejected` event closes the simulated pair); one used in part
    /// (a corrupted length) leaves the stream out of step, and the
    /// simulator closes the connection as an IO error.
    pub(super) fn check_node_read(
        &mut self,
        to: Addr,
        connection: vr_core::node::ConnectionId,
        packet: &Packet,
        valid: bool,
        result: Result<usize, DecodeError>,
        stale: bool,
    ) {
        let from = packet.from;
        match result {
            Ok(used) if used == packet.frame.len() => {
                if !valid && !packet.corrupted {
                    let detail = format!("{to}'s node took a frame from {from} the codec rejects");
                    self.violation(ViolationKind::Codec, detail);
                }
            }
            Ok(used) => {
                if valid {
                    let detail = format!(
                        "{to}'s node used {used} of {} bytes of a valid frame from {from}",
                        packet.frame.len()
                    );
                    self.violation(ViolationKind::Codec, detail);
                }
                self.connections.counters.streams_broken += 1;
                let how = vr_core::node::Closed::Failed;
                match to {
                    Addr::Replica(i) => {
                        let local = self.replicas[usize::from(i)].clock.local(self.now);
                        if let Some(node) = self.replicas[usize::from(i)].node.as_mut() {
                            node.handle_closed(local, connection, how);
                        }
                    }
                    Addr::Client(c) => {
                        let now = Instant::from_nanos(self.now);
                        self.client_node_mut(c).handle_closed(now, connection, how);
                    }
                }
                if !stale {
                    self.connections.close(self.now, to, connection, how);
                }
            }
            Err(error) => {
                if valid {
                    let detail = format!("{to}'s node rejected a valid frame from {from}: {error}");
                    self.violation(ViolationKind::Codec, detail);
                }
            }
        }
    }

    pub(super) fn deliver(&mut self, packet: Packet) {
        match packet.to {
            Addr::Replica(i) => self.deliver_to_replica(i, vec![packet]),
            Addr::Client(c) => {
                let decoded = self.decode(&packet);
                let from = packet.from;
                if let Some((message, _)) = &decoded {
                    let hash = Network::frame_hash(&packet.frame);
                    self.trace.record(
                        self.now,
                        TraceKind::Deliver,
                        &[from.code(), Addr::Client(c).code(), hash],
                        || format!("{from} -> c{c}: {}", describe(message)),
                    );
                    if !matches!(message, Message::Reply(_) | Message::StartEpoch(_)) {
                        let detail = format!("{from} sent a client {}", describe(message));
                        self.violation(ViolationKind::Codec, detail);
                        return;
                    }
                }
                let Some(connection) = self.connections.receiver(packet.pair, Addr::Client(c))
                else {
                    // The connection closed at the client: the frame is lost
                    // with it (the client retries).
                    self.connections.counters.stale_frames_dropped += 1;
                    return;
                };
                // Replies complete the request and epoch notices (§7.3) make
                // the client follow the new epoch and resend there: outputs,
                // carried out by the drain.
                let now = Instant::from_nanos(self.now);
                let result = (self.client_node_mut(c)).handle_bytes(now, connection, &packet.frame);
                let valid = decoded.is_some();
                self.check_node_read(Addr::Client(c), connection, &packet, valid, result, false);
                self.drain_client(c);
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
        self.replica_step(i, |node, now| node.handle_timeout(now));
        let local = self.replicas[usize::from(i)].clock.local(self.now);
        let still_due = self.replicas[usize::from(i)]
            .node
            .as_ref()
            .and_then(|r| r.poll_timeout())
            .is_some_and(|t| t <= local);
        if still_due && self.replica_deadline(usize::from(i)) == deadline {
            let detail = format!("r{i}: handle_timeout left its deadline in the past");
            self.abort(ViolationKind::Stuck, detail);
        }
    }

    /// Feeds one input to replica `i`'s node at its local time, carries out
    /// what it outputs (connects, frames, closes, persists, events), and
    /// checks what the replica executed.
    pub(super) fn replica_step(
        &mut self,
        i: u8,
        input: impl FnOnce(&mut vr_core::node::ReplicaNode<Kv>, Instant),
    ) {
        use vr_core::node::{NodeEvent, Output as NodeOutput};
        let now = self.now;
        let from = Addr::Replica(i);
        let slots = self.replicas.len();
        let slot = &mut self.replicas[usize::from(i)];
        let local = slot.clock.local(now);
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        input(node, local);
        let mut frames = Vec::new();
        let mut closes = Vec::new();
        let mut events = Vec::new();
        // Per persist, read as it is drained: the persist, the checkpoint's
        // pages (a later checkpoint replaces them) and whether the replica
        // had left `Recovering` (its recovery is then on disk once it is
        // durable).
        let mut persists = Vec::new();
        let mut buffer = Vec::new();
        // A pure drain up to the deadline. A timer due now (the batch
        // timer) is not fired here: it is an event of the simulator's
        // queue like any other, after the frames due at this instant.
        loop {
            buffer.clear();
            match node.poll_output(&mut buffer) {
                NodeOutput::Timeout(_) => break,
                NodeOutput::Connect {
                    connection,
                    address,
                } => self
                    .connections
                    .connect(now, from, connection, address, slots),
                NodeOutput::Transmit { connection, len } => {
                    let frame = &buffer[buffer.len() - len..];
                    if let Some((pair, to)) = self.connections.transmit(from, connection, frame) {
                        node.handle_written(connection, len);
                        frames.push((to, pair, frame.to_vec()));
                    }
                }
                NodeOutput::Close { connection } => closes.push(connection),
                NodeOutput::Event(NodeEvent::Persist(persist)) => {
                    let replica = node.replica();
                    let pages = persist
                        .checkpoint
                        .map(|_| replica.checkpoint_pages().to_vec())
                        .unwrap_or_default();
                    persists.push((persist, pages, replica.status() != Status::Recovering));
                }
                NodeOutput::Event(NodeEvent::FrameRejected { connection, .. }) => {
                    closes.push(connection);
                }
                NodeOutput::Event(event) => {
                    if matches!(event, NodeEvent::AddressLearned { .. }) {
                        self.stats.node.addresses_learned += 1;
                    }
                    events.push(event);
                }
            }
        }
        let before = slot.observed;
        for event in events {
            self.trace
                .record(now, TraceKind::Link, &[5, u64::from(i)], || {
                    format!("r{i}: {event}")
                });
        }
        self.observe_replica(i);
        self.observe_epoch(i);
        self.check_primary_crash(i, before);
        for connection in closes {
            self.connections
                .close(now, from, connection, vr_core::node::Closed::Eof);
        }
        for (to, pair, frame) in frames {
            self.send_frame(from, to, pair, frame);
        }
        for (persist, pages, clears_marker) in persists {
            self.disk_write(i, persist, pages, clears_marker);
        }
        self.primary_crash();
    }

    /// Checks what replica `i` newly executed against the agreed sequence,
    /// takes its service's faults, and traces view and status changes.
    pub(super) fn observe_replica(&mut self, i: u8) {
        let now = self.now;
        let node = &self.replicas[usize::from(i)];
        let Some(replica) = node.replica() else {
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
        if let Some((backup, first)) = self.cluster_crash_watch {
            if after.primary
                && i != backup
                && after.commit_number >= first
                && after.commit_number > before.commit_number
            {
                // The aimed crash strikes now (`disk_write`): before the
                // backup's persist completes.
                self.cluster_crash_watch = None;
                self.cluster_crash_next_at = Some(now);
            }
        }
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
                .filter_map(|node| node.replica())
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
}
