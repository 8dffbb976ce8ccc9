//! The phases of a run: the heal that starts the liveness phase, the
//! checks that end each phase, and convergence of state at the end.

use super::*;

impl Simulator {
    /// Ends the safety phase: stops the nemesis, cleans the network, heals it
    /// for a majority of the live replicas, and has every client finish its
    /// work. With `isolate_minority`, each live replica outside that majority
    /// is left isolated with probability 1/2; otherwise all are healed.
    pub fn start_liveness(&mut self, isolate_minority: bool) {
        let now = self.now;
        self.nemesis_next_at = None;
        self.disk_fault_next_at = None;
        self.cluster_crash_next_at = None;
        self.cluster_crash_armed = false;
        self.cluster_crash_watch = None;
        self.partition = None;
        self.network.heal_all();
        self.network
            .release_all(now + self.plan.faults.links.latency_min_ns);
        let links = &self.plan.faults.links;
        self.network.set_faults(LinkFaults::clean(
            links.latency_min_ns,
            links.latency_max_ns,
        ));
        self.network.set_long_delays(0, 0);
        // Crashed replicas due to restart restart now, and must recover.
        for i in 0..self.replicas.len() as u8 {
            if self.replicas[usize::from(i)].restart_at.is_some() {
                self.restart(i);
            }
        }
        if self.plan.strand_laggard {
            self.strand_laggard();
        }
        // A reconfiguration not sent yet goes now; while its epoch has not
        // begun, every replica is healed (the old members and the new
        // must all be able to take part).
        if let Some(admin) = self.admin.as_mut() {
            if admin.issue_at.is_some() {
                admin.issue_at = Some(now);
            }
        }
        // Until a quorum of the new epoch's members hold the state up to
        // the reconfiguration, the old epoch's fault bound still applies:
        // a removed replica that restarted empty retired without the state,
        // so the new members may have only one another member to fetch it
        // from (seed 4004 of tests/reconfiguration.rs). Heal everyone then.
        let established = self
            .current_members()
            .iter()
            .filter(|&&i| {
                self.replicas[usize::from(i)].replica().is_some_and(|r| {
                    r.epoch() == self.epoch
                        && matches!(r.status(), Status::Normal | Status::ViewChange)
                })
            })
            .count();
        let epoch_pending =
            self.admin.is_some() && (self.epoch == 0 || established < self.epoch_config.quorum());
        let isolate_minority = isolate_minority && !epoch_pending;
        let members = self.current_members();
        // The random majority is drawn among the replicas that are up and
        // not recovering: a recovering replica needs a quorum of normal
        // others to recover from. Recovering replicas are always healed.
        let mut alive: Vec<u8> = members
            .iter()
            .map(|m| m.0)
            .filter(|&i| !self.failed(usize::from(i)))
            .collect();
        // Fisher-Yates with the nemesis stream: a random majority.
        for i in (1..alive.len()).rev() {
            let j = self.nemesis_prng.below(i as u64 + 1) as usize;
            alive.swap(i, j);
        }
        let quorum = self.epoch_config.quorum();
        let up = members
            .iter()
            .filter(|&&i| self.replicas[usize::from(i)].node.is_some())
            .count();
        // A cluster that boots recovering may not have formed yet: then
        // every replica is up and recovering, and all are healed.
        assert!(
            up >= quorum,
            "the nemesis crashed more than f replicas for good ({} up of {})",
            up,
            members.len()
        );
        self.healed.clear();
        // Recovering replicas, and every replica that is not a member of
        // the latest epoch (removed or joining ones), are healed.
        for i in 0..self.replicas.len() as u8 {
            let up = self.replicas[usize::from(i)].node.is_some();
            if up && (self.recovering(usize::from(i)) || !members.contains(&MemberId(i))) {
                self.healed.insert(i);
            }
        }
        for (rank, &i) in alive.iter().enumerate() {
            if rank < quorum || !isolate_minority || self.nemesis_prng.below(2) == 0 {
                self.healed.insert(i);
            } else {
                self.isolate(i);
                self.stats.isolated_at_heal += 1;
            }
        }
        for &i in &self.healed {
            let node = &mut self.replicas[usize::from(i)];
            if node.paused_until.is_some() {
                node.paused_until = Some(now);
            }
        }
        for client in &mut self.clients {
            client.liveness_ops_left = self.plan.workload.liveness_ops_per_client;
            if client.pending.is_none() && client.next_invoke_at.is_none() {
                client.next_invoke_at = Some(now);
            }
        }
        self.phase = Phase::Liveness {
            healed_at: now,
            deadline: now.saturating_add(self.options.liveness_timeout_ns),
        };
        let healed: Vec<_> = self.healed.iter().map(|i| format!("r{i}")).collect();
        self.trace.record(
            now,
            TraceKind::Phase,
            &[1, self.healed.len() as u64],
            || format!("liveness phase: faults off, healed [{}]", healed.join(" ")),
        );
    }

    /// [`SeedPlan::strand_laggard`](crate::plan::SeedPlan::strand_laggard):
    /// crashes for good the most advanced full replicas, leaving the one
    /// with the lowest commit-number, as many as keep at most f failed.
    /// The witnesses must then hold every op it lacks (§6).
    fn strand_laggard(&mut self) {
        let n = self.replicas.len();
        let f = (n.max(1) - 1) / 2;
        let failed = (0..n).filter(|&i| self.failed(i)).count();
        let mut full: Vec<(u64, u8)> = (0..n as u8)
            .filter(|&i| {
                !self.failed(usize::from(i))
                    && !self.plan.config.is_witness(vr_core::ReplicaIndex(i))
            })
            .filter_map(|i| {
                let replica = self.replicas[usize::from(i)].replica()?;
                Some((replica.commit_number(), i))
            })
            .collect();
        full.sort_unstable();
        let Some(&(lowest, laggard)) = full.first() else {
            return;
        };
        let budget = f.saturating_sub(failed);
        let victims: Vec<u8> = full[1..]
            .iter()
            .rev()
            .take(budget)
            .map(|&(_, i)| i)
            .collect();
        if victims.is_empty() {
            return;
        }
        self.trace.record(
            self.now,
            TraceKind::Nemesis,
            &[16, u64::from(laggard)],
            || format!("strand r{laggard} (commit {lowest}): crash {victims:?} for good"),
        );
        for i in victims {
            self.crash(i, None);
        }
    }

    /// Cuts replica `i` off from every replica and client, both ways.
    pub(super) fn isolate(&mut self, i: u8) {
        let me = Addr::Replica(i);
        let others = (0..self.replicas.len() as u8)
            .filter(|&j| j != i)
            .map(Addr::Replica)
            .chain((0..self.plan.workload.client_count).map(Addr::Client))
            .collect::<Vec<_>>();
        for other in others {
            self.network.cut(me, other);
            self.network.cut(other, me);
        }
        self.trace
            .record(self.now, TraceKind::Nemesis, &[3, u64::from(i)], || {
                format!("r{i} stays isolated")
            });
    }

    // ---- Phases ----

    pub(super) fn advance_phase(&mut self) {
        match self.phase {
            Phase::Safety { until } => {
                let ops_done = self.safety_ops_invoked >= u64::from(self.plan.workload.safety_ops);
                if self.now >= until || ops_done {
                    self.start_liveness(true);
                }
            }
            Phase::Liveness {
                healed_at,
                deadline,
            } => {
                let finished = self.clients.iter().all(|c| {
                    c.pending.is_none() && c.next_invoke_at.is_none() && c.liveness_ops_left == 0
                }) && self.admin.as_ref().is_none_or(|a| a.completed.is_some());
                if finished {
                    self.stats.liveness_ns = self.now - healed_at;
                    self.phase = Phase::Settle {
                        since: self.now,
                        until: self.now.saturating_add(self.options.settle_max_ns),
                    };
                    self.trace.record(self.now, TraceKind::Phase, &[2], || {
                        "settle phase: every client operation completed".to_string()
                    });
                } else if self.now >= deadline {
                    let open: Vec<String> = self
                        .clients
                        .iter()
                        .enumerate()
                        .filter_map(|(c, node)| {
                            node.pending.as_ref().map(|p| {
                                format!(
                                    "c{c} req {} {} on {}",
                                    p.tag.request_number,
                                    p.input,
                                    key_name(p.key)
                                )
                            })
                        })
                        .chain(
                            self.admin
                                .as_ref()
                                .filter(|a| a.completed.is_none())
                                .map(|_| "the admin's reconfiguration".to_string()),
                        )
                        .collect();
                    let detail = format!(
                        "{} s after the heal, operations are still open: {}; {}",
                        self.options.liveness_timeout_ns / SECOND,
                        open.join(", "),
                        self.replica_states()
                    );
                    self.violation(ViolationKind::Liveness, detail);
                    self.phase = Phase::Done;
                }
            }
            Phase::Settle { since, until } => {
                let settled = self.settled();
                if settled || self.now >= until {
                    if settled {
                        self.stats.settle_ns = self.now - since;
                    } else {
                        let detail = format!(
                            "{:.1} s after the last completion the healed replicas have not settled: {}",
                            self.options.settle_max_ns as f64 / SECOND as f64,
                            self.replica_states()
                        );
                        self.violation(ViolationKind::Convergence, detail);
                    }
                    self.check_state_agreement();
                    self.check_reconfiguration();
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// A one-line description of every replica's state, for reports.
    pub(super) fn replica_states(&self) -> String {
        let states: Vec<String> = self
            .replicas
            .iter()
            .enumerate()
            .map(|(i, node)| match node.replica() {
                None if node.restart_at.is_some() => format!("r{i} crashed (restart pending)"),
                None => format!("r{i} crashed"),
                Some(r) => format!(
                    "r{i} {}v{} lnv{} {:?}{} op {} commit {}{}",
                    if r.epoch() > 0 {
                        format!("e{} ", r.epoch())
                    } else {
                        String::new()
                    },
                    r.view(),
                    r.last_normal_view(),
                    r.status(),
                    if r.is_primary() { " primary" } else { "" },
                    r.op_number(),
                    r.commit_number(),
                    if self.healed.contains(&(i as u8)) {
                        ""
                    } else {
                        " (isolated)"
                    }
                ),
            })
            .collect();
        states.join("; ")
    }

    /// Whether the healed replicas settled: one view, normal status, one
    /// primary, the same commit-number.
    ///
    /// Only the members of the latest epoch are judged, and all of them
    /// must be in it (§7); the replicas a reconfiguration removed must be
    /// retired and free to shut down.
    pub(super) fn settled(&self) -> bool {
        let members = self.current_members();
        let healed: Vec<&Replica<Kv>> = self
            .healed
            .iter()
            .filter(|&&i| members.contains(&MemberId(i)))
            .filter_map(|&i| self.replicas[usize::from(i)].replica())
            .collect();
        let view = healed.iter().map(|r| r.view()).max().unwrap_or(0);
        let commit = healed.iter().map(|r| r.commit_number()).max().unwrap_or(0);
        healed.iter().all(|r| {
            r.epoch() == self.epoch
                && r.view() == view
                && r.status() == Status::Normal
                && r.commit_number() == commit
        }) && healed.iter().filter(|r| r.is_primary()).count() == 1
            && self.removed_settled()
    }

    /// Live replicas at equal commit-numbers hold equal service state:
    /// every page (values, executed requests, ballast) and the client table.
    pub(super) fn check_state_agreement(&mut self) {
        let mut by_commit: BTreeMap<u64, (u8, u64, &Replica<Kv>)> = BTreeMap::new();
        let mut diverged = Vec::new();
        for (i, node) in self.replicas.iter().enumerate() {
            let Some(r) = node.replica() else { continue };
            if r.status() == Status::Recovering || r.is_witness() {
                continue; // It holds no state (yet, or ever).
            }
            let digest = r.service().state_digest();
            match by_commit.get(&r.commit_number()) {
                Some((j, other_digest, other))
                    if *other_digest != digest || other.client_table() != r.client_table() =>
                {
                    diverged.push(format!(
                        "r{i} and r{j} executed {} ops but hold different states: values {:?} vs {:?}",
                        r.commit_number(),
                        r.service().values(),
                        other.service().values()
                    ))
                }
                Some(_) => {}
                None => {
                    by_commit.insert(r.commit_number(), (i as u8, digest, r));
                }
            }
        }
        for detail in diverged {
            self.violation(ViolationKind::Agreement, detail);
        }
    }
}
