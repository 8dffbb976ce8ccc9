//! Reconfiguration (§7) in the simulator: replica slots are member ids;
//! the administrator's client; the fault budget of the old and the new
//! configuration; restarts in the latest epoch; the scripted crash of the
//! primary around the reconfiguration; and the end-of-run checks of the
//! new epoch.

use super::*;

impl Simulator {
    /// The address of the administrator's client.
    pub(super) fn admin_index(&self) -> u8 {
        self.plan.workload.client_count
    }

    /// The members of the latest epoch a replica entered.
    pub(super) fn current_members(&self) -> Vec<MemberId> {
        self.epoch_config.member_ids()
    }

    /// The target members of the reconfiguration plan.
    pub(super) fn target_members(&self) -> Option<&[MemberId]> {
        self.plan.reconfiguration.as_ref().map(|r| &r.members[..])
    }

    /// Every replica slot that takes part in the run: the initial members
    /// and the reconfiguration's new members (a slot is its member id).
    pub(super) fn participants(&self) -> Vec<u8> {
        let mut all: Vec<u8> = self.initial_members.iter().map(|m| m.0).collect();
        if let Some(target) = self.target_members() {
            all.extend(target.iter().map(|m| m.0));
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The configurations whose fault budgets the nemesis keeps: the old
    /// one, and the new one of a reconfiguration plan (both, all along).
    pub(super) fn fault_groups(&self) -> Vec<Vec<MemberId>> {
        let mut groups = vec![self.initial_members.clone()];
        if let Some(target) = self.target_members() {
            groups.push(target.to_vec());
        }
        groups
    }

    fn failed_in(&self, group: &[MemberId]) -> usize {
        group
            .iter()
            .filter(|&&m| usize::from(m) < self.replicas.len() && self.failed(usize::from(m)))
            .count()
    }

    /// Whether replica `i` may fail now: every configuration it belongs to
    /// has fewer than f of its members failed.
    pub(super) fn may_fail(&self, i: u8) -> bool {
        self.fault_groups()
            .iter()
            .filter(|g| g.contains(&MemberId(i)))
            .all(|g| self.failed_in(g) < (g.len() - 1) / 2)
    }

    /// Whether some configuration has more than f members failed (a
    /// cluster booting recovering before it formed).
    pub(super) fn over_budget(&self) -> bool {
        self.fault_groups()
            .iter()
            .any(|g| self.failed_in(g) > (g.len() - 1) / 2)
    }

    /// Whether replica `i` left the configuration (as it says).
    pub(super) fn is_retired(&self, i: usize) -> bool {
        self.replicas[i]
            .replica()
            .is_some_and(|r| r.status() == Status::Retired)
    }

    /// How replica `i` restarts: `recover` in the latest epoch it is a
    /// member of (the latest the simulator knows, else epoch 0), or, for a
    /// new member whose epoch has not begun, `join` again. With
    /// [`ReconfigurationPlan::restart_in_first_epoch`](crate::plan::ReconfigurationPlan::restart_in_first_epoch),
    /// a member of the first epoch `recover`s with the first epoch's
    /// configuration whatever the latest.
    pub(super) fn rebuild(&mut self, i: u8, now: Instant, nonce: u64) -> (Replica<Kv>, bool) {
        let recovery = &self.plan.recovery;
        let kv = Kv::with_ballast(recovery.ballast_pages, recovery.ballast_page_size);
        let in_first_epoch = self
            .plan
            .reconfiguration
            .as_ref()
            .is_some_and(|r| r.restart_in_first_epoch)
            && self.initial_members.contains(&MemberId(i));
        let built = if let Some(index) = self
            .epoch_config
            .index_of_member(vr_core::MemberId(i))
            .filter(|_| self.epoch > 0 && !in_first_epoch)
        {
            Replica::recover(self.epoch_config.clone(), index, kv, now, nonce).map(|r| (r, true))
        } else if self.initial_members.contains(&MemberId(i)) {
            Replica::recover(
                self.config.clone(),
                vr_core::ReplicaIndex(i),
                kv,
                now,
                nonce,
            )
            .map(|r| (r, true))
        } else {
            Replica::join(self.config.clone(), vr_core::MemberId(i), kv, now, nonce)
                .map(|r| (r, false))
        };
        built.unwrap_or_else(|e| panic!("invalid replica configuration: {e}"))
    }

    /// Notes the epoch replica `i` is in: the simulator follows the latest
    /// one any replica entered.
    pub(super) fn observe_epoch(&mut self, i: u8) {
        let Some(replica) = self.replicas[usize::from(i)].replica() else {
            return;
        };
        let epoch = replica.epoch();
        if epoch <= self.epoch {
            return;
        }
        let members = replica.epoch_members();
        let Some(config) = self.config.with_members(&members) else {
            let numbers: Vec<u8> = members.iter().map(|m| m.0).collect();
            let detail = format!("r{i} entered epoch {epoch} of invalid members {numbers:?}");
            self.violation(ViolationKind::Convergence, detail);
            return;
        };
        self.epoch = epoch;
        self.epoch_config = config;
        self.stats.epoch_max = epoch;
        self.trace
            .record(self.now, TraceKind::Phase, &[4, u64::from(epoch)], || {
                let members: Vec<u8> = members.iter().map(|m| m.0).collect();
                format!("r{i} began epoch {epoch}: members {members:?}")
            });
    }

    /// Sends the administrator's reconfiguration request.
    pub(super) fn admin_issue(&mut self) {
        let now = self.now;
        let Some(members) = self.target_members().map(<[MemberId]>::to_vec) else {
            return;
        };
        let Some(admin) = self.admin.as_mut() else {
            return;
        };
        admin.issue_at = None;
        // The request carries where the members listen: the replicas and
        // clients of the new epoch learn the new members' addresses from it.
        let addresses: Vec<_> = members.iter().map(|m| replica_address(m.0)).collect();
        match admin
            .node
            .reconfigure(Instant::from_nanos(now), members.clone(), &addresses)
        {
            Ok(number) => admin.request = Some(number),
            Err(e) => panic!("the administrator's client refused a reconfiguration: {e}"),
        }
        let a = self.admin_index();
        self.trace
            .record(now, TraceKind::Invoke, &[u64::from(a), 0], || {
                let members: Vec<u8> = members.iter().map(|m| m.0).collect();
                format!("c{a} (admin): reconfigure to {members:?}")
            });
        self.drain_client(a);
    }

    pub(super) fn admin_timeout(&mut self) {
        let now = Instant::from_nanos(self.now);
        if let Some(admin) = self.admin.as_mut() {
            admin.node.handle_timeout(now);
        }
        let a = self.admin_index();
        self.trace.record(
            self.now,
            TraceKind::Timeout,
            &[Addr::Client(a).code()],
            || format!("c{a} (admin) resends its reconfiguration to every replica"),
        );
        self.drain_client(a);
    }

    /// The administrator's request completed
    /// (`ClientEvent::Reconfigured`): the cluster runs in `epoch`.
    pub(super) fn admin_complete(&mut self, request_number: u64, epoch: u32) {
        let now = self.now;
        let a = self.admin_index();
        let Some(admin) = self.admin.as_mut() else {
            return;
        };
        if admin.request != Some(request_number) || admin.completed.is_some() {
            let detail =
                format!("c{a} (admin) completed request {request_number} it was not waiting for");
            self.violation(ViolationKind::Service, detail);
            return;
        }
        if epoch == 0 {
            // The node reads the primary's answer as the new epoch-number
            // (§7.1): 0 means it was not one.
            let detail = format!("c{a} (admin): a reconfiguration returned no epoch");
            self.violation(ViolationKind::Service, detail);
            return;
        }
        admin.completed = Some((now, epoch));
        self.stats.reconfigurations_completed += 1;
        // Its only request: the highest op-number its replies carried is
        // the reconfiguration's.
        let op_number = admin.node.client().op_number_seen();
        self.stats.reconfiguration_op = op_number;
        self.trace.record(
            now,
            TraceKind::Complete,
            &[u64::from(a), u64::from(epoch), op_number],
            || format!("c{a} (admin): reconfigured: epoch {epoch} at op {op_number}"),
        );
    }

    /// After a step of replica `i`: whether the plan's primary crash is due
    /// (`PrimaryCrash`), judged on what the step did.
    pub(super) fn check_primary_crash(&mut self, i: u8, before: Observed) {
        let Some(plan) = self.plan.reconfiguration.as_ref() else {
            return;
        };
        if self.primary_crash_done || self.crash_due.is_some() {
            return;
        }
        let Some(replica) = self.replicas[usize::from(i)].replica() else {
            return;
        };
        let due = match plan.crash_primary {
            PrimaryCrash::Never => false,
            PrimaryCrash::AfterRequest => {
                replica.epoch() == 0
                    && replica.is_primary()
                    && replica.log().iter().any(|e| {
                        e.kind == EntryKind::Reconfiguration
                            && e.op_number > replica.commit_number()
                    })
            }
            PrimaryCrash::AfterCommit => before.epoch == 0 && before.primary && replica.epoch() > 0,
        };
        if due {
            self.crash_due = Some(i);
        }
    }

    /// Carries out a due scripted primary crash, within the fault budget.
    pub(super) fn primary_crash(&mut self) {
        let Some(i) = self.crash_due.take() else {
            return;
        };
        self.primary_crash_done = true;
        let delay = self
            .plan
            .reconfiguration
            .as_ref()
            .map_or(SECOND, |r| r.restart_delay_ns);
        let failed = self.failed(usize::from(i));
        if failed || !self.may_fail(i) {
            self.trace
                .record(self.now, TraceKind::Nemesis, &[16, u64::from(i)], || {
                    format!("r{i}: scripted primary crash skipped (fault budget)")
                });
            return;
        }
        self.stats.scripted_primary_crashes += 1;
        self.trace
            .record(self.now, TraceKind::Nemesis, &[17, u64::from(i)], || {
                format!("r{i}: scripted primary crash around the reconfiguration")
            });
        self.crash(i, Some(self.now + delay));
    }

    /// At the end of the run, with a reconfiguration plan: the admin's
    /// request completed, the latest epoch has the target members, and
    /// every running replica the reconfiguration removed is retired and
    /// may shut down (a quorum of the new epoch answered it).
    pub(super) fn check_reconfiguration(&mut self) {
        let Some(target) = self.target_members().map(<[MemberId]>::to_vec) else {
            return;
        };
        let mut problems = Vec::new();
        match self.admin.as_ref().and_then(|a| a.completed) {
            None => problems.push("the reconfiguration never completed".to_string()),
            Some((_, epoch)) if epoch != self.epoch => problems.push(format!(
                "the reconfiguration returned epoch {epoch}, the latest is {}",
                self.epoch
            )),
            Some(_) => {}
        }
        if self.current_members() != target {
            let numbers = |m: &[MemberId]| m.iter().map(|m| m.0).collect::<Vec<u8>>();
            problems.push(format!(
                "the latest epoch {} has members {:?}, not {:?}",
                self.epoch,
                numbers(&self.current_members()),
                numbers(&target)
            ));
        }
        for i in self.removed_members() {
            let Some(r) = self.replicas[usize::from(i)].replica() else {
                continue;
            };
            if !self.removed_done(r) {
                problems.push(format!(
                    "r{i}, removed, is {:?} in epoch {} (may shut down: {})",
                    r.status(),
                    r.epoch(),
                    r.may_shut_down()
                ));
            }
        }
        for detail in problems {
            let detail = format!("{detail}; {}", self.replica_states());
            self.violation(ViolationKind::Convergence, detail);
        }
    }

    /// The initial members that the reconfiguration plan removes.
    pub(super) fn removed_members(&self) -> Vec<u8> {
        let Some(target) = self.target_members() else {
            return Vec::new();
        };
        self.initial_members
            .iter()
            .filter(|m| !target.contains(m))
            .map(|m| m.0)
            .collect()
    }

    /// Whether every running removed replica is retired and may shut down.
    pub(super) fn removed_settled(&self) -> bool {
        self.removed_members().iter().all(|&i| {
            self.replicas[usize::from(i)]
                .replica()
                .is_none_or(|r| self.removed_done(r))
        })
    }

    /// A removed replica is retired; if it executed the reconfiguration
    /// itself, it told the new members and may shut down once a quorum of
    /// them answered (`may_shut_down`). One that retired on hearing a
    /// `StartEpoch` (it had not executed the reconfiguration: restarted,
    /// or behind) sends nothing and is never answered, so vr-core never
    /// clears it to shut down (reported; see docs/testing.md).
    fn removed_done(&self, r: &Replica<Kv>) -> bool {
        let executed = r.commit_number() >= self.stats.reconfiguration_op;
        r.status() == Status::Retired && (r.may_shut_down() || !executed)
    }
}
