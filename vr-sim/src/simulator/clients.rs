//! Clients: invocations, completions, the history for the checker, and
//! the checks of backup reads (§6).

use super::*;

impl Simulator {
    // ---- Clients ----

    pub(super) fn client_timeout(&mut self, c: u8) {
        let now = Instant::from_nanos(self.now);
        let node = &mut self.clients[usize::from(c)];
        // With unlimited attempts the client never gives up (no Failed).
        node.node.handle_timeout(now);
        self.trace.record(
            self.now,
            TraceKind::Timeout,
            &[Addr::Client(c).code()],
            || format!("c{c} timer (a resend to every replica, or a connect given up)"),
        );
        self.drain_client(c);
    }

    /// Client `c`'s node: a workload client's, or the administrator's.
    pub(super) fn client_node_mut(&mut self, c: u8) -> &mut vr_core::node::ClientNode {
        if c == self.admin_index() {
            if let Some(admin) = self.admin.as_mut() {
                return &mut admin.node;
            }
        }
        &mut self.clients[usize::from(c)].node
    }

    /// Carries out client `c`'s outputs: its connects, frames and closes,
    /// and its completion (checked and recorded in the history).
    pub(super) fn drain_client(&mut self, c: u8) {
        use vr_core::node::{ClientEvent, Output as NodeOutput};
        let now = self.now;
        let from = Addr::Client(c);
        let slots = self.replicas.len();
        let mut frames = Vec::new();
        let mut closes = Vec::new();
        let mut events = Vec::new();
        let mut buffer = Vec::new();
        let admin_index = self.admin_index();
        let node = match self.admin.as_mut().filter(|_| c == admin_index) {
            Some(admin) => &mut admin.node,
            None => &mut self.clients[usize::from(c)].node,
        };
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
                NodeOutput::Event(ClientEvent::FrameRejected { connection, .. }) => {
                    closes.push(connection);
                }
                NodeOutput::Event(event) => {
                    if matches!(event, ClientEvent::AddressLearned { .. }) {
                        self.stats.node.addresses_learned += 1;
                    }
                    events.push(event);
                }
            }
        }
        for connection in closes {
            self.connections
                .close(now, from, connection, vr_core::node::Closed::Eof);
        }
        for (to, pair, frame) in frames {
            self.send_frame(from, to, pair, frame);
        }
        let admin = c == self.admin_index() && self.admin.is_some();
        for event in events {
            match event {
                ClientEvent::Reconfigured {
                    request_number,
                    epoch,
                } if admin => self.admin_complete(request_number, epoch),
                ClientEvent::Completed(completion) if admin => {
                    let detail = format!(
                        "c{c} (admin) completed request {} as an ordinary request",
                        completion.request_number
                    );
                    self.violation(ViolationKind::Service, detail);
                }
                ClientEvent::Completed(completion) => self.complete(c, &completion),
                ClientEvent::Failed {
                    request_number,
                    error,
                } => {
                    // Clients here retry for ever: giving up is a bug.
                    let detail = format!("c{c} abandoned request {request_number}: {error}");
                    self.violation(ViolationKind::Service, detail);
                }
                ClientEvent::Reconfigured { request_number, .. } => {
                    let detail =
                        format!("c{c} completed request {request_number} as a reconfiguration");
                    self.violation(ViolationKind::Service, detail);
                }
                event @ (ClientEvent::EpochChanged { .. }
                | ClientEvent::AddressLearned { .. }
                | ClientEvent::FrameRejected { .. }) => {
                    self.trace
                        .record(now, TraceKind::Link, &[6, from.code()], || {
                            format!("{from}: {event:?}")
                        });
                }
            }
        }
    }

    pub(super) fn invoke(&mut self, c: u8) {
        let now = self.now;
        let key_count = self.plan.workload.key_count;
        let in_liveness = matches!(self.phase, Phase::Liveness { .. });
        let node = &mut self.clients[usize::from(c)];
        node.next_invoke_at = None;
        if in_liveness {
            if node.liveness_ops_left == 0 {
                return;
            }
            node.liveness_ops_left -= 1;
        }
        // The client numbers its requests 1, 2, 3, …; the op carries the
        // number so that the service can recognise a second execution.
        let next_number = node.requests_made + 1;
        let mut op = workload::next_op(
            &mut self.workload_prng,
            u32::from(c),
            next_number,
            key_count,
        );
        if node.reads_only {
            op.op = KvOp::Read;
        }
        let input = workload::history_input(&op.op);
        // §6: some reads go to a random replica as backup reads.
        let backup_read_ppm = self.plan.optimizations.backup_read_ppm;
        let backup_read_at = (op.op == KvOp::Read
            && backup_read_ppm > 0
            && chance(&mut self.workload_prng, backup_read_ppm))
        .then(|| {
            let count = node.node.client().members().len().max(1);
            self.workload_prng.below(count as u64) as u8
        });
        let seen_mismatch = (backup_read_at.is_some()
            && node.node.client().op_number_seen() != node.op_number_seen)
            .then(|| (node.node.client().op_number_seen(), node.op_number_seen));
        let sent = match backup_read_at {
            Some(r) => node.node.read_at(
                Instant::from_nanos(now),
                vr_core::ReplicaIndex(r),
                op.encode(),
            ),
            None => node.node.request(Instant::from_nanos(now), op.encode()),
        };
        match sent {
            Ok(number) => {
                assert_eq!(
                    number, next_number,
                    "the client numbers requests 1, 2, 3, …"
                );
                node.requests_made = number;
            }
            Err(e) => {
                // The client is idle (no pending op) and the op is small, so
                // this is a broken invariant of the simulator or the client.
                panic!("c{c} refused a request: {e}");
            }
        }
        node.pending = Some(PendingOp {
            tag: op.tag,
            key: op.key,
            input: input.clone(),
            backup_read_min: backup_read_at.map(|_| node.op_number_seen),
        });
        if let Some((believed, replied)) = seen_mismatch {
            let detail =
                format!("c{c} sends a backup read with op {believed}, its replies said {replied}");
            self.violation(ViolationKind::BackupRead, detail);
        }
        self.stats.ops_invoked += 1;
        if !in_liveness {
            self.safety_ops_invoked += 1;
        }
        let key = key_name(op.key);
        let at = match backup_read_at {
            Some(r) => format!(" (backup read at r{r})"),
            None => String::new(),
        };
        self.trace
            .record(now, TraceKind::Invoke, &[u64::from(c), next_number], || {
                format!("c{c} req {next_number}: {input} on {key}{at}")
            });
        if backup_read_at.is_none() {
            // Backup reads promise less than linearizability: they are
            // checked on their own (`complete_backup_read`,
            // `check_backup_reads`).
            self.history
                .push(Event::invoke(u64::from(c), now, key, &input));
        }
        self.drain_client(c);
    }

    pub(super) fn complete(&mut self, c: u8, completion: &Completion) {
        let now = self.now;
        let request_number = completion.request_number;
        let node = &mut self.clients[usize::from(c)];
        node.op_number_seen = node.op_number_seen.max(completion.op_number);
        let Some(pending) = self.clients[usize::from(c)].pending.take() else {
            let detail = format!("c{c} completed request {request_number} it was not waiting for");
            self.violation(ViolationKind::Service, detail);
            return;
        };
        debug_assert_eq!(pending.tag.request_number, request_number);
        let result = KvResult::decode(&completion.result);
        if let Some(min) = pending.backup_read_min {
            self.complete_backup_read(c, &pending, completion.op_number, min, &result);
        } else {
            self.complete_in_history(c, &pending, &result);
        }
        let think = between(
            &mut self.workload_prng,
            0,
            self.plan.workload.think_time_max_ns,
        );
        let more = match self.phase {
            Phase::Safety { .. } => {
                self.safety_ops_invoked < u64::from(self.plan.workload.safety_ops)
            }
            Phase::Liveness { .. } => self.clients[usize::from(c)].liveness_ops_left > 0,
            Phase::Settle { .. } | Phase::Done => false,
        };
        if more {
            self.clients[usize::from(c)].next_invoke_at = Some(now + think);
        }
    }

    /// A backup read completed (§6): its op-number is at least what the
    /// client had seen (read-your-writes, monotonic reads); its value is
    /// compared with the committed sequence at the end of the run.
    pub(super) fn complete_backup_read(
        &mut self,
        c: u8,
        pending: &PendingOp,
        op_number: u64,
        min: u64,
        result: &KvResult,
    ) {
        let now = self.now;
        let request_number = pending.tag.request_number;
        let key = key_name(pending.key);
        self.stats.ops_completed += 1;
        self.stats.backup_reads_completed += 1;
        self.trace.record(
            now,
            TraceKind::Complete,
            &[u64::from(c), request_number, op_number],
            || {
                format!(
                    "c{c} req {request_number}: backup read on {key} at op {op_number} -> {result:?}"
                )
            },
        );
        if op_number < min {
            let detail = format!(
                "c{c} req {request_number}: a backup read of {key} reflects op {op_number}, \
                 older than op {min} the client had seen"
            );
            self.violation(ViolationKind::BackupRead, detail);
        }
        match result {
            KvResult::Value(value) => self.backup_reads.push(BackupRead {
                client: c,
                request_number,
                key: pending.key,
                op_number,
                value: value.clone(),
                completed_at: now,
            }),
            other => {
                let detail = format!("c{c} req {request_number}: a backup read returned {other:?}");
                self.violation(ViolationKind::Service, detail);
            }
        }
    }

    /// Compares every backup read's value with the key's value after the
    /// committed ops up to the op-number it reflects, replayed on a fresh
    /// service (which, like a replica's, skips a request executed before).
    pub(super) fn check_backup_reads(&mut self) {
        let mut reads = std::mem::take(&mut self.backup_reads);
        reads.sort_by_key(|r| (r.op_number, r.client, r.request_number));
        let mut kv = Kv::new();
        let mut executed = 0u64;
        let committed = self.agreement.committed();
        let mut problems = Vec::new();
        let mut checked = 0;
        'reads: for read in &reads {
            while executed < read.op_number {
                let Some(op) = committed.get(&(executed + 1)) else {
                    break 'reads; // A hole: the rest cannot be replayed.
                };
                executed += 1;
                kv.execute(executed, &op.op);
            }
            let _ = kv.take_journal();
            checked += 1;
            let expected = kv.values().get(&read.key).cloned();
            if expected != read.value {
                problems.push(format!(
                    "c{} req {} (completed at {}): a backup read of {} at op {} returned {:?}, \
                     the committed ops up to there give {:?}",
                    read.client,
                    read.request_number,
                    crate::trace::Seconds(read.completed_at),
                    key_name(read.key),
                    read.op_number,
                    read.value,
                    expected
                ));
            }
        }
        self.stats.backup_reads_value_checked += checked;
        for detail in problems {
            self.violation(ViolationKind::BackupRead, detail);
        }
    }

    /// A completed operation that goes to the linearizability checker.
    pub(super) fn complete_in_history(&mut self, c: u8, pending: &PendingOp, result: &KvResult) {
        let now = self.now;
        let request_number = pending.tag.request_number;
        let key = key_name(pending.key);
        match workload::history_output(&pending.input, result) {
            Ok(output) => {
                self.trace.record(
                    now,
                    TraceKind::Complete,
                    &[u64::from(c), request_number],
                    || {
                        format!(
                            "c{c} req {request_number}: {} on {key} -> {output}",
                            pending.input
                        )
                    },
                );
                self.history
                    .push(Event::ok(u64::from(c), now, key, &pending.input, &output));
                self.stats.ops_completed += 1;
            }
            Err(why) => {
                // The outcome is unknown to the checker; the violation says why.
                self.history
                    .push(Event::info(u64::from(c), now, key, &pending.input));
                self.violation(
                    ViolationKind::Service,
                    format!("c{c} req {request_number}: {why}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quiet three-replica cluster of one client on one key, run for a
    /// while: the backup-read checks (§6, reads at backups) are then fed
    /// hand-made completions, to show that each fires.
    fn cluster_after_writes() -> (Simulator, u64, Option<String>) {
        let plan = SeedPlan::quiet(5, 3, 1, 1);
        let mut sim = Simulator::new(plan, &Options::default());
        sim.run_until(SECOND);
        let committed = sim.agreement.len();
        assert!(committed > 10, "{committed} ops committed");
        // The key's value after every committed op, replayed.
        let mut kv = Kv::new();
        for (&op_number, op) in sim.agreement.committed() {
            kv.execute(op_number, &op.op);
        }
        let value = kv.values().get(&0).cloned();
        (sim, committed, value)
    }

    /// Client 0 completes a backup read of key 0 at `op_number` returning
    /// `value`, as if a replica had answered it.
    fn backup_read_completes(sim: &mut Simulator, op_number: u64, value: Option<String>) {
        let node = &mut sim.clients[0];
        let request_number = node.requests_made + 1000;
        node.pending = Some(PendingOp {
            tag: Tag {
                client: 0,
                request_number,
            },
            key: 0,
            input: workload::history_input(&KvOp::Read),
            backup_read_min: Some(node.op_number_seen),
        });
        let completion = Completion {
            request_number,
            op_number,
            result: KvResult::Value(value).encode(),
        };
        sim.complete(0, &completion);
    }

    fn backup_read_violations(sim: &Simulator) -> Vec<String> {
        sim.violations
            .iter()
            .filter(|v| v.kind == ViolationKind::BackupRead)
            .map(|v| v.detail.clone())
            .collect()
    }

    #[test]
    fn backup_read_check_accepts_a_good_read() {
        let (mut sim, committed, value) = cluster_after_writes();
        backup_read_completes(&mut sim, committed, value);
        assert!(backup_read_violations(&sim).is_empty());
        let report = sim.finish();
        assert_eq!(report.stats.backup_reads_value_checked, 1);
        assert!(
            !report
                .violations
                .iter()
                .any(|v| v.kind == ViolationKind::BackupRead),
            "{:#?}",
            report.violations
        );
    }

    #[test]
    fn backup_read_check_catches_a_read_older_than_the_clients_last_op() {
        let (mut sim, _, value) = cluster_after_writes();
        // The client completed its own writes up to some op-number; a read
        // reflecting an op before the first one it saw is stale.
        let seen = sim.clients[0].op_number_seen;
        assert!(seen > 1, "the client saw op {seen}");
        backup_read_completes(&mut sim, seen - 1, value);
        let found = backup_read_violations(&sim);
        assert!(
            found.iter().any(|d| d.contains("older than op")),
            "{found:?}"
        );
    }

    #[test]
    fn backup_read_check_catches_reads_that_go_back() {
        // Monotonic reads: after a backup read at op n, a read at n - 1 is
        // stale even though the client wrote nothing in between.
        let (mut sim, committed, value) = cluster_after_writes();
        backup_read_completes(&mut sim, committed, value.clone());
        assert!(backup_read_violations(&sim).is_empty());
        backup_read_completes(&mut sim, committed - 1, value);
        let found = backup_read_violations(&sim);
        assert!(
            found
                .iter()
                .any(|d| d.contains(&format!("older than op {committed}"))),
            "{found:?}"
        );
    }

    #[test]
    fn backup_read_check_catches_a_value_the_committed_ops_do_not_give() {
        let (mut sim, committed, _) = cluster_after_writes();
        backup_read_completes(&mut sim, committed, Some("never written".to_string()));
        let report = sim.finish();
        let found: Vec<&Violation> = report
            .violations
            .iter()
            .filter(|v| v.kind == ViolationKind::BackupRead)
            .collect();
        assert!(
            found
                .iter()
                .any(|v| v.detail.contains("the committed ops up to there give")),
            "{found:#?}"
        );
    }
}
