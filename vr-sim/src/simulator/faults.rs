//! Faults: the scripted ones that tests call, and the nemesis of the
//! random runs (partitions, pauses, crashes and restarts).

use super::*;

impl Simulator {
    // ---- Scripted faults ----

    /// Cuts the directed link `from → to` until [`Simulator::heal`].
    pub fn cut(&mut self, from: Addr, to: Addr) {
        self.network.cut(from, to);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[1, from.code(), to.code()],
            || format!("cut {from} -> {to}"),
        );
    }

    /// Restores the directed link `from → to` (cut by [`Simulator::cut`]).
    pub fn heal_link(&mut self, from: Addr, to: Addr) {
        self.network.heal(from, to);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[13, from.code(), to.code()],
            || format!("heal {from} -> {to}"),
        );
    }

    /// Cuts replica `i` off from every other replica, both ways (clients
    /// still reach it), until [`Simulator::heal`].
    pub fn isolate_replica(&mut self, i: u8) {
        for j in (0..self.replicas.len() as u8).filter(|&j| j != i) {
            self.cut(Addr::Replica(i), Addr::Replica(j));
            self.cut(Addr::Replica(j), Addr::Replica(i));
        }
    }

    /// Holds back the frames on `from → to` carrying one of `commands`
    /// (every frame if empty) until [`Simulator::release`] or
    /// [`Simulator::discard_held`].
    pub fn hold(&mut self, from: Addr, to: Addr, commands: &[Command]) {
        let bytes: Vec<u8> = commands.iter().map(|&c| c as u8).collect();
        self.network.hold(from, to, &bytes);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[8, from.code(), to.code(), Fnv64::of(&bytes)],
            || format!("hold {from} -> {to}: {commands:?}"),
        );
    }

    /// Stops holding `from → to`; the frames held are lost.
    pub fn discard_held(&mut self, from: Addr, to: Addr) {
        let count = self.network.discard_held(from, to);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[12, from.code(), to.code(), count as u64],
            || format!("discard {count} frames held on {from} -> {to}"),
        );
    }

    /// Pauses replica `i` (it processes nothing; frames for it are kept)
    /// until [`Simulator::resume_replica`] or global time `until`.
    pub fn pause(&mut self, i: u8, until: u64) {
        let node = &mut self.replicas[usize::from(i)];
        if node.node.is_none() {
            return;
        }
        node.paused_until = Some(until);
        self.stats.pauses += 1;
        let seconds = crate::trace::Seconds(until);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[4, u64::from(i), until],
            || format!("pause r{i} until {seconds}"),
        );
    }

    /// Resumes a paused replica now: the frames it holds arrive, overdue
    /// timers fire.
    pub fn resume_replica(&mut self, i: u8) {
        if self.replicas[usize::from(i)].paused_until.is_some() {
            self.resume(i);
        }
    }

    /// Stops holding `from → to`; the frames held arrive after the minimum
    /// latency, in the order they were sent.
    pub fn release(&mut self, from: Addr, to: Addr) {
        let at = self.now + self.plan.faults.links.latency_min_ns;
        let count = self.network.release(from, to, at);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[9, from.code(), to.code(), count as u64],
            || format!("release {from} -> {to} ({count} frames held)"),
        );
    }

    /// Crashes replica `i` (its memory is lost); `restart_at` schedules its
    /// restart, `None` is for good. Scripted schedules call it directly; the
    /// nemesis keeps at most f replicas failed, a script must itself.
    pub fn crash(&mut self, i: u8, restart_at: Option<u64>) {
        let node = &mut self.replicas[usize::from(i)];
        let Some(replica) = node.node.take() else {
            return;
        };
        self.retired.add(replica.replica().stats());
        self.retired_links.add(&replica.stats());
        node.paused_until = None;
        node.held.clear();
        node.restart_at = restart_at;
        node.recovering_since = None;
        // Its connections close: the peers hear EOF a delay later.
        self.close_all(Addr::Replica(i));
        self.stats.crashes += 1;
        let when = match restart_at {
            Some(t) => format!("restart at {}", crate::trace::Seconds(t)),
            None => "for good".to_string(),
        };
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[5, u64::from(i), restart_at.unwrap_or(0)],
            || format!("crash r{i} ({when})"),
        );
        // A durable replica's disk loses what was not synced. Its unsynced
        // writes reach the disk in any subset only where that leaves at
        // most f replicas recovering from their peers
        // (`Options::reordered_power_loss`).
        let reorder = self.options.reordered_power_loss
            || (!self.cluster_crashing && self.config.replica_count >= 3);
        self.disk_crash(i, reorder);
    }

    /// Restarts the crashed replica `i` now, with wiped memory: a fresh
    /// `Replica::recover` and an empty service, and a nonce drawn from the
    /// nemesis stream. A durable replica restarts from its disk
    /// (`Replica::restart`), or recovers from its peers if the disk is not
    /// intact.
    pub fn restart(&mut self, i: u8) {
        let now = self.now;
        let nonce = self.nemesis_prng.next_u64();
        if self.replicas[usize::from(i)].node.is_some() {
            return;
        }
        let local = self.replicas[usize::from(i)].clock.local(now);
        // In the latest epoch it is a member of (§7), or joining again.
        let durable = self.durable();
        let (replica, recovering) = if durable {
            self.restart_from_disk(i, local, nonce)
        } else {
            self.rebuild(i, local, nonce)
        };
        // A restarted process is configured with every slot's address.
        let slots = self.replicas.len() as u8;
        let node = &mut self.replicas[usize::from(i)];
        node.node = Some(replica_node(&self.config, i, slots, replica, local));
        node.restart_at = None;
        node.recovering_since = recovering.then_some(now);
        let first = !std::mem::replace(&mut node.started, true);
        // A new incarnation: its commit-number starts from 0 again.
        node.observed = Observed {
            recovering,
            ..Observed::default()
        };
        if first {
            self.trace
                .record(now, TraceKind::Nemesis, &[15, u64::from(i)], || {
                    format!("start r{i} recovering (nonce {nonce:x})")
                });
        } else {
            self.stats.restarts += 1;
            if !durable {
                self.trace
                    .record(now, TraceKind::Nemesis, &[10, u64::from(i)], || {
                        format!("restart r{i} with wiped memory (recovering, nonce {nonce:x})")
                    });
            }
        }
        // Drain what `recover` queued (its Recovery messages).
        self.replica_step(i, |_, _| {});
    }

    /// Scripted: client `c` invokes only reads from now on (its draws from
    /// the workload stream are unchanged, the operation becomes a read of
    /// the same key), or the usual mix again.
    pub fn set_reads_only(&mut self, c: u8, reads_only: bool) {
        self.clients[usize::from(c)].reads_only = reads_only;
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.network.heal_all();
        let shape = self.partition.take().map_or("scripted", |p| p.shape.name());
        self.trace.record(self.now, TraceKind::Nemesis, &[2], || {
            format!("heal all links (partition: {shape})")
        });
    }

    // ---- The nemesis ----

    pub(super) fn nemesis_act(&mut self) {
        let mean = self.plan.faults.nemesis_interval_mean_ns;
        self.nemesis_next_at = Some(self.now + between(&mut self.nemesis_prng, 1, 2 * mean));
        #[derive(Clone, Copy)]
        enum Act {
            Partition,
            Pause,
            Crash,
        }
        let mut acts = Vec::new();
        if !self.plan.faults.partition_shapes.is_empty() && self.partition.is_none() {
            acts.extend([Act::Partition; 3]);
        }
        if self.plan.faults.pauses {
            acts.extend([Act::Pause; 2]);
        }
        if self.crashes_left > 0 || self.plan.recovery.restarts {
            acts.push(Act::Crash);
        }
        if self.plan.recovery.restarts {
            acts.push(Act::Crash);
        }
        if acts.is_empty() {
            return;
        }
        match pick(&mut self.nemesis_prng, &acts) {
            Act::Partition => self.start_partition(),
            Act::Pause => {
                if let Some(i) = self.victim(|_, node| node.paused_until.is_none()) {
                    let max = self.plan.faults.pause_duration_max_ns;
                    let until = self.now + between(&mut self.nemesis_prng, MS, max.max(MS));
                    self.replicas[usize::from(i)].paused_until = Some(until);
                    self.stats.pauses += 1;
                    let seconds = crate::trace::Seconds(until);
                    self.trace.record(
                        self.now,
                        TraceKind::Nemesis,
                        &[4, u64::from(i), until],
                        || format!("pause r{i} until {seconds}"),
                    );
                }
            }
            Act::Crash => {
                // At most f replicas down or recovering at a time: a victim
                // that is not failed yet must leave room for itself.
                // With a reconfiguration plan, both the old and the new
                // configuration keep their budget (`may_fail`).
                let room: Vec<bool> = (0..self.replicas.len() as u8)
                    .map(|i| self.may_fail(i))
                    .collect();
                // While more than f are failed (a cluster booting
                // recovering that has not formed yet), a crash is always
                // followed by a restart: more than f crashed for good is
                // beyond the failure model.
                let restart = self.over_budget()
                    || (self.plan.recovery.restarts
                        && (self.crashes_left == 0 || self.nemesis_prng.below(4) != 0));
                let victim =
                    self.victim(|i, node| room[usize::from(i)] || node.recovering_since.is_some());
                if let Some(i) = victim {
                    let restart_at = if restart {
                        let max = self.plan.recovery.restart_delay_max_ns;
                        Some(self.now + between(&mut self.nemesis_prng, MS, max.max(MS)))
                    } else {
                        self.crashes_left -= 1;
                        None
                    };
                    self.crash(i, restart_at);
                    if restart && self.plan.recovery.linger {
                        let max = self.plan.recovery.long_delay_max_ns;
                        let count = self.network.linger_from(Addr::Replica(i), max);
                        self.trace.record(
                            self.now,
                            TraceKind::Nemesis,
                            &[14, u64::from(i), count as u64],
                            || format!("{count} frames from r{i} linger in the network"),
                        );
                    }
                }
            }
        }
    }

    /// A live replica that `eligible` accepts: the current primary half of
    /// the time (faults at the primary exercise view changes), else any.
    /// Retired replicas (§7) are left alone.
    pub(super) fn victim(&mut self, eligible: impl Fn(u8, &ReplicaSlot) -> bool) -> Option<u8> {
        let candidates: Vec<u8> = (0..self.replicas.len() as u8)
            .filter(|&i| {
                let node = &self.replicas[usize::from(i)];
                node.node.is_some() && !self.is_retired(usize::from(i)) && eligible(i, node)
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let primary = candidates
            .iter()
            .copied()
            .filter(|&i| {
                self.replicas[usize::from(i)]
                    .replica()
                    .is_some_and(|r| r.is_primary())
            })
            .max_by_key(|&i| {
                self.replicas[usize::from(i)]
                    .replica()
                    .map_or(0, |r| r.view())
            });
        match primary {
            Some(p) if self.nemesis_prng.below(2) == 0 => Some(p),
            _ => Some(pick(&mut self.nemesis_prng, &candidates)),
        }
    }

    pub(super) fn start_partition(&mut self) {
        let nodes = self.participants();
        if nodes.len() < 2 {
            return;
        }
        let shape = pick(
            &mut self.nemesis_prng,
            &self.plan.faults.partition_shapes.clone(),
        );
        let Some(victim) = self.victim(|_, _| true) else {
            return;
        };
        let others: Vec<u8> = nodes.iter().copied().filter(|&j| j != victim).collect();
        let mut cuts: Vec<(u8, u8)> = Vec::new();
        match shape {
            PartitionShape::IsolateOne => {
                for &j in &others {
                    cuts.extend([(victim, j), (j, victim)]);
                }
            }
            PartitionShape::Deaf => cuts.extend(others.iter().map(|&j| (j, victim))),
            PartitionShape::Mute => cuts.extend(others.iter().map(|&j| (victim, j))),
            PartitionShape::Split => {
                let side: Vec<bool> = nodes
                    .iter()
                    .map(|_| self.nemesis_prng.below(2) == 0)
                    .collect();
                for (x, &a) in nodes.iter().enumerate() {
                    for (y, &b) in nodes.iter().enumerate() {
                        if side[x] != side[y] {
                            cuts.push((a, b));
                        }
                    }
                }
            }
            PartitionShape::RandomLinks => {
                for &a in &nodes {
                    for &b in &nodes {
                        if a != b && self.nemesis_prng.below(2) == 0 {
                            cuts.push((a, b));
                        }
                    }
                }
            }
        }
        let (min, max) = (
            self.plan.faults.partition_duration_min_ns,
            self.plan.faults.partition_duration_max_ns,
        );
        let mut heal_at = self.now + between(&mut self.nemesis_prng, min, max.max(min));
        if self.plan.recovery.long_partitions && self.nemesis_prng.below(3) == 0 {
            // Long enough for the others to commit past the cut-off replicas'
            // log tail: they catch up by checkpoint transfer.
            let max = self.plan.recovery.long_partition_max_ns;
            heal_at = self.now + between(&mut self.nemesis_prng, SECOND, max.max(SECOND));
        }
        for &(a, b) in &cuts {
            self.network.cut(Addr::Replica(a), Addr::Replica(b));
        }
        self.partition = Some(ActivePartition { shape, heal_at });
        *self.stats.partitions.entry(shape).or_default() += 1;
        let description: Vec<String> = cuts.iter().map(|(a, b)| format!("r{a}->r{b}")).collect();
        let seconds = crate::trace::Seconds(heal_at);
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[6, shape as u64, cuts.len() as u64, heal_at],
            || {
                format!(
                    "partition {} until {seconds}: cut [{}]",
                    shape.name(),
                    description.join(" ")
                )
            },
        );
    }

    pub(super) fn resume(&mut self, i: u8) {
        let now = self.now;
        let node = &mut self.replicas[usize::from(i)];
        node.paused_until = None;
        let held = std::mem::take(&mut node.held);
        let count = held.len();
        for packet in held {
            self.network.redeliver(now, packet);
        }
        self.trace
            .record(now, TraceKind::Nemesis, &[7, u64::from(i)], || {
                format!("resume r{i} ({count} frames held)")
            });
    }
}
