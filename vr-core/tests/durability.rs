//! Durable replicas (`Durability::Disk`): the persist step. The paper's
//! replicas keep their state in memory (§4.3); with disks, a backup
//! acknowledges only what its disk holds (§4.1 step 4, "writes it to
//! stable storage" in the original VR), a replica promises a view only once
//! it is on disk (§4.2), and a replica whose disk survived restarts from it.
//! The harness's disks take a persist when it is answered; a held persist
//! is an unsynced write, lost at a crash.

mod common;

use common::{Cluster, Recorder};
use vr_core::{Config, Durability, Status};

fn durable_cluster(n: u8, clients: usize, seed: u64) -> Cluster {
    let mut config = Config::new(7, n);
    config.seed = seed;
    config.durability = Durability::Disk;
    // Small checkpoints, so that restarts replay from a stored checkpoint.
    config.checkpoint_interval_ops = 8;
    config.log_tail_ops = 2;
    Cluster::with_config(config, clients)
}

fn op(prefix: &str, i: usize) -> Vec<u8> {
    format!("{prefix}{i}").into_bytes()
}

/// Memory-only replicas (the default) never ask for a disk.
#[test]
fn memory_replicas_never_persist() {
    let mut cluster = Cluster::new(3, 1, 1);
    for i in 0..10 {
        cluster.execute(0, &op("a", i));
    }
    assert!(cluster.disks.iter().all(|d| d.persists == 0));
    assert!(cluster
        .replicas
        .iter()
        .all(|r| r.stats().persists_completed == 0));
}

/// Reference: §4.1 step 4 with stable storage. A backup acknowledges only
/// ops its disk holds: with both backups' disks slow, the primary (whose
/// disk is quick) commits nothing; once one backup's disk catches up, the
/// op commits with it.
#[test]
fn a_backup_acknowledges_only_what_its_disk_holds() {
    let mut cluster = durable_cluster(3, 1, 2);
    cluster.execute(0, b"first");
    cluster.hold_persists[1] = true;
    cluster.hold_persists[2] = true;
    let number = cluster.submit(0, b"second");
    assert!(
        cluster.await_completion(0, number, 50).is_none(),
        "committed without a backup's disk"
    );
    assert_eq!(cluster.replicas[0].commit_number(), 1);
    assert!(
        cluster.replicas[1].op_number() == 2,
        "the backup has it in memory"
    );
    cluster.complete_persists(1);
    let done = cluster.await_completion(0, number, 1_000).expect("commits");
    assert_eq!(done.op_number, 2);
    cluster.hold_persists[2] = false;
    cluster.complete_persists(2);
    cluster.run_for_ms(50);
    cluster.assert_agreement();
}

/// Reference: §4.1 step 5 with stable storage. The primary counts itself in
/// the quorum only for ops its own disk holds: with five replicas, the two
/// backups whose disks are quick are not a quorum without it.
#[test]
fn the_primary_counts_itself_only_for_what_its_disk_holds() {
    let mut cluster = durable_cluster(5, 1, 3);
    cluster.execute(0, b"first");
    for r in 0..3 {
        cluster.hold_persists[r] = true;
    }
    let number = cluster.submit(0, b"second");
    assert!(cluster.await_completion(0, number, 50).is_none());
    assert_eq!(cluster.replicas[0].commit_number(), 1);
    cluster.complete_persists(0);
    cluster.hold_persists[0] = false;
    let done = cluster.await_completion(0, number, 1_000).expect("commits");
    assert_eq!(done.op_number, 2);
}

/// Reference: §4.2 with stable storage. A replica sends StartViewChange and
/// DoViewChange for a view only once the view is on disk: while r1's disk
/// is stalled, r1 and r2 (a quorum with it) cannot form a new view after
/// the primary fails; once it writes, they do.
#[test]
fn a_view_change_vote_waits_for_its_view_on_disk() {
    let mut cluster = durable_cluster(3, 1, 4);
    for i in 0..3 {
        cluster.execute(0, &op("a", i));
    }
    cluster.hold_persists[1] = true;
    cluster.crash(0);
    cluster.run_for_ms(1_000);
    assert!(
        (1..3).all(|r| cluster.replicas[r].status() != Status::Normal),
        "no view formed without r1's promise on disk"
    );
    assert_eq!(cluster.disks[1].state.view, 0);
    cluster.hold_persists[1] = false;
    cluster.complete_persists(1);
    let done = cluster.execute(0, b"after");
    assert_eq!(done.op_number, 4);
    assert!(cluster.disks[1].state.view >= 1);
    cluster.assert_agreement();
}

/// The headline case (issue 18): every replica crashes at once, memory
/// lost, disks kept, and restarts from its disk. No acknowledged write is
/// lost, the restarted replicas need no recovery protocol, and the cluster
/// serves again.
#[test]
fn every_replica_crashes_at_once_and_restarts_from_disk() {
    for seed in 0..8 {
        let mut cluster = durable_cluster(3, 1, 10 + seed);
        let mut acknowledged = Vec::new();
        for i in 0..21 {
            let o = op("w", i);
            cluster.execute(0, &o);
            acknowledged.push(o);
        }
        for r in 0..3 {
            cluster.crash(r);
        }
        for r in 0..3 {
            cluster.restart_from_disk(r, Recorder::default(), 100 + u64::from(r));
        }
        for i in 0..5 {
            let o = op("after", i);
            let done = cluster.execute(0, &o);
            assert_eq!(done.op_number, 22 + i as u64, "seed {seed}");
            acknowledged.push(o);
        }
        cluster.run_for_ms(100);
        cluster.assert_agreement();
        for r in 0..3u8 {
            let replica = &cluster.replicas[usize::from(r)];
            assert_eq!(replica.stats().restarts_from_disk, 1);
            assert_eq!(
                replica.stats().recoveries_completed,
                0,
                "no recovery protocol"
            );
            assert_eq!(cluster.executed(r), acknowledged, "seed {seed}: r{r}");
        }
    }
}

/// A replica restarted from its disk fetches only what it missed while it
/// was down: the log after its own, not a checkpoint.
#[test]
fn a_replica_restarted_from_disk_fetches_only_what_it_missed() {
    let mut config = Config::new(7, 3);
    config.seed = 5;
    config.durability = Durability::Disk;
    config.checkpoint_interval_ops = 8;
    config.log_tail_ops = 64; // the log reaches back past the restart
    let mut cluster = Cluster::with_config(config, 1);
    for i in 0..5 {
        cluster.execute(0, &op("a", i));
    }
    cluster.crash(2);
    for i in 0..2 {
        cluster.execute(0, &op("b", i));
    }
    cluster.restart_from_disk(2, Recorder::default(), 55);
    cluster.execute(0, b"c");
    cluster.run_for_ms(100);
    let r2 = &cluster.replicas[2];
    assert_eq!(r2.status(), Status::Normal);
    assert_eq!(r2.commit_number(), 8);
    assert_eq!(r2.stats().checkpoints_installed, 0, "the log sufficed");
    assert_eq!(r2.stats().recoveries_completed, 0);
    cluster.assert_agreement();
}

/// The primary restarts from its disk in the middle of its view: it takes
/// up its log again and the cluster goes on without losing an op, whether
/// or not the backups moved to a new view meanwhile.
#[test]
fn a_primary_restarted_from_disk_loses_nothing() {
    let mut cluster = durable_cluster(3, 1, 6);
    let mut acknowledged = Vec::new();
    for i in 0..6 {
        let o = op("a", i);
        cluster.execute(0, &o);
        acknowledged.push(o);
    }
    cluster.crash(0);
    cluster.restart_from_disk(0, Recorder::default(), 66);
    for i in 0..6 {
        let o = op("b", i);
        cluster.execute(0, &o);
        acknowledged.push(o);
    }
    cluster.run_for_ms(300);
    cluster.assert_agreement();
    for r in 0..3u8 {
        assert_eq!(cluster.executed(r), acknowledged, "r{r}");
    }
}

/// Reference: §4.2, and `docs/protocol.md` (restarting from disk). A
/// primary restarted from its disk moves on to the next view and votes for
/// it (StartViewChange). Its backups heard it a moment before its crash,
/// yet join at once: the vote comes from their primary, which has left the
/// view. The next view forms well within a primary-silence timeout (100 ms
/// and jitter), which the backups waited out before (issue 18, item 8).
#[test]
fn backups_follow_their_restarted_primary_into_the_next_view_at_once() {
    for seed in 0..4 {
        let mut cluster = durable_cluster(3, 1, 30 + seed);
        for i in 0..6 {
            cluster.execute(0, &op("a", i));
        }
        cluster.crash(0);
        cluster.restart_from_disk(0, Recorder::default(), 77);
        let mut formed_after_ms = None;
        for ms in 1..=400 {
            cluster.run_for_ms(1);
            if (0..3).all(|r| cluster.replicas[r].status() == Status::Normal)
                && cluster.replicas[1].view() >= 1
            {
                formed_after_ms = Some(ms);
                break;
            }
        }
        let ms = formed_after_ms.expect("the next view forms");
        assert!(ms <= 5, "seed {seed}: the next view formed after {ms} ms");
        let done = cluster.execute(0, b"after");
        assert_eq!(done.op_number, 7, "seed {seed}");
        cluster.assert_agreement();
    }
}

/// Reference: §6 (leased reads) and §4.2. With leases, the backups of a
/// primary restarted from its disk keep the promise they made it, and join
/// its view change the moment the promise runs out: not at their timeout
/// (400 ms here), nor at its next StartViewChange (resent every 150 ms
/// here).
#[test]
fn with_leases_backups_follow_their_restarted_primary_when_their_promise_ends() {
    let mut config = Config::new(7, 3);
    config.seed = 34;
    config.durability = Durability::Disk;
    config.lease_duration_ns = 100_000_000;
    config.clock_drift_max_ns = 10_000_000;
    config.view_change_timeout_ns = 400_000_000;
    config.resend_interval_ns = 150_000_000;
    let mut cluster = Cluster::with_config(config, 1);
    for i in 0..5 {
        cluster.execute(0, &op("a", i));
    }
    cluster.crash(0);
    cluster.restart_from_disk(0, Recorder::default(), 99);
    let mut joined_after_ms = None;
    for ms in 1..=600 {
        cluster.run_for_ms(1);
        if (1..3).all(|r| cluster.replicas[r].view() >= 1) {
            joined_after_ms = Some(ms);
            break;
        }
    }
    let ms = joined_after_ms.expect("the backups join the next view");
    // The last promise was made at the last heartbeat, at most 10 ms
    // before the crash.
    assert!((89..=101).contains(&ms), "joined after {ms} ms");
    let done = cluster.execute(0, b"after");
    assert_eq!(done.op_number, 6);
    cluster.assert_agreement();
}

/// A backup restarted from its disk asks its primary for what it missed at
/// once (§5.2, GetState), not at the primary's next Prepare or heartbeat:
/// over TCP its request also opens its connection to the primary, which
/// tells the primary's runtime that it is back (issue 18, item 8).
#[test]
fn a_backup_restarted_from_disk_asks_for_what_it_missed_at_once() {
    let mut config = Config::new(7, 3);
    config.seed = 8;
    config.durability = Durability::Disk;
    config.log_tail_ops = 64;
    let mut cluster = Cluster::with_config(config, 1);
    for i in 0..3 {
        cluster.execute(0, &op("a", i));
    }
    cluster.crash(2);
    for i in 0..4 {
        cluster.execute(0, &op("b", i));
    }
    cluster.restart_from_disk(2, Recorder::default(), 88);
    // The messages in flight only: no time passes, no heartbeat is due.
    cluster.run_for_ms(0);
    let (primary, restarted) = (&cluster.replicas[0], &cluster.replicas[2]);
    assert_eq!(restarted.status(), Status::Normal);
    assert_eq!(restarted.op_number(), primary.op_number());
    assert_eq!(restarted.commit_number(), primary.commit_number());
    assert_eq!(cluster.executed(2), cluster.executed(0));
}

/// Acknowledged writes survive losing the primary's disk while the backups
/// restart from theirs, when backups acknowledge only what their disks hold:
/// an op acknowledged by a quorum of disks is on the backups. With
/// `ack_before_persist` (the injected bug), the backups acknowledge ops
/// their slow disks never wrote, and an acknowledged write is lost.
fn acknowledged_writes_survive_losing_the_primarys_disk(
    ack_before_persist: bool,
) -> Result<(), String> {
    let mut config = Config::new(7, 3);
    config.seed = 7;
    config.durability = Durability::Disk;
    #[cfg(feature = "bug-injection")]
    if ack_before_persist {
        config.injected_bug = Some(vr_core::InjectedBug::AckBeforePersist);
    }
    #[cfg(not(feature = "bug-injection"))]
    assert!(!ack_before_persist, "needs the bug-injection feature");
    let mut cluster = Cluster::with_config(config, 1);
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let o = op("a", i);
        cluster.execute(0, &o);
        acknowledged.push(o);
    }
    cluster.run_for_ms(50);
    // The backups' disks stall; a write is sent.
    cluster.hold_persists[1] = true;
    cluster.hold_persists[2] = true;
    let number = cluster.submit(0, b"w");
    if cluster.await_completion(0, number, 100).is_some() {
        acknowledged.push(b"w".to_vec());
    }
    // Power fails everywhere; the primary's machine is replaced (its disk
    // is lost), the backups restart from their disks.
    for r in 0..3 {
        cluster.crash(r);
    }
    cluster.hold_persists = vec![false; 3];
    cluster.restart(0, Recorder::default(), 70);
    cluster.restart_from_disk(1, Recorder::default(), 71);
    cluster.restart_from_disk(2, Recorder::default(), 72);
    cluster.clients[0] =
        vr_core::Client::new(vr_core::ClientConfig::new(&cluster.config, 1000), 10);
    cluster.execute(0, b"after");
    cluster.run_for_ms(300);
    acknowledged.push(b"after".to_vec());
    let executed = cluster.executed(1);
    let kept = acknowledged.iter().all(|o| executed.contains(o));
    if kept {
        Ok(())
    } else {
        Err(format!(
            "acknowledged {:?}, r1 executed {:?}",
            acknowledged
                .iter()
                .map(|o| String::from_utf8_lossy(o))
                .collect::<Vec<_>>(),
            executed
                .iter()
                .map(|o| String::from_utf8_lossy(o))
                .collect::<Vec<_>>()
        ))
    }
}

#[test]
fn acknowledged_writes_are_on_a_quorum_of_disks() {
    acknowledged_writes_survive_losing_the_primarys_disk(false).unwrap();
}

/// The schedule above catches the injected bug `AckBeforePersist`: a test
/// that could not fail would prove nothing.
#[cfg(feature = "bug-injection")]
#[test]
fn ack_before_persist_is_caught() {
    assert!(acknowledged_writes_survive_losing_the_primarys_disk(true).is_err());
}

/// Reference: §4.1 (the primary assigns op-numbers in order; an op-number
/// names one request per view) with stable storage. A primary sends its
/// Prepares before its own disk holds them; if it then crashes and
/// restarts from its disk, its log is shorter than the one its backups
/// hold for the same view. Resuming as primary of that view would assign
/// the same op-numbers to new requests: two different ops at one op-number
/// in one view, and the replicas diverge. It must take part only through a
/// new view, whose view change merges its log with its backups' (§4.2).
#[test]
fn a_primary_restarted_with_a_shorter_log_does_not_reuse_op_numbers() {
    for seed in 0..4 {
        let mut cluster = durable_cluster(3, 2, 40 + seed);
        for i in 0..3 {
            cluster.execute(0, &op("a", i));
        }
        cluster.run_for_ms(20);
        // The primary's disk stalls: its Prepare reaches the backups, whose
        // disks take it, but not its own disk.
        cluster.hold_persists[0] = true;
        let number = cluster.submit(0, b"prepared");
        cluster.run_for_ms(5);
        assert_eq!(cluster.replicas[1].op_number(), 4, "seed {seed}");
        assert_eq!(cluster.disks[0].log.len(), 3, "seed {seed}");
        // Killed and restarted at once: its disk lacks op 4.
        cluster.crash(0);
        cluster.hold_persists[0] = false;
        cluster.restart_from_disk(0, Recorder::default(), 400 + seed);
        let done = cluster.execute(1, b"new");
        assert!(done.op_number >= 5, "seed {seed}: op 4 was given again");
        cluster
            .await_completion(0, number, 2_000)
            .expect("the first completes");
        cluster.run_for_ms(300);
        cluster.assert_agreement();
        for r in 0..3u8 {
            let executed = cluster.executed(r);
            assert_eq!(executed.len(), 5, "seed {seed}: r{r} {executed:?}");
        }
    }
}

/// Safe formation (issue 18; §4.3's whole-cluster restart): replicas that
/// find every other one recovering form a new, empty view 0 only if none
/// of them held data. One that lost the disk it held data on
/// (`recover_lost_disk`) never forms, and holds the others back: the
/// cluster stays unavailable rather than serve without its acknowledged
/// writes.
#[test]
fn a_replica_that_lost_its_disk_never_forms_a_new_cluster() {
    for lost in [vec![0u8], vec![1], vec![0, 1, 2]] {
        let mut cluster = durable_cluster(3, 1, 31);
        for i in 0..5 {
            cluster.execute(0, &op("w", i));
        }
        for r in 0..3 {
            cluster.crash(r);
        }
        // Every disk is gone (more than f: beyond what VR promises); the
        // replicas in `lost` know theirs held data, the others start as if
        // new (their directories were deleted).
        for r in 0..3u8 {
            if lost.contains(&r) {
                cluster.restart_lost_disk(r, Recorder::default(), 50 + u64::from(r));
            } else {
                cluster.restart(r, Recorder::default(), 50 + u64::from(r));
            }
        }
        cluster.run_for_ms(3_000);
        for r in 0..3usize {
            let replica = &cluster.replicas[r];
            assert_eq!(
                replica.status(),
                Status::Recovering,
                "lost {lost:?}: r{r} left recovery with every disk gone"
            );
            assert_eq!(replica.stats().clusters_formed, 0, "lost {lost:?}: r{r}");
        }
    }
}

/// The other side of the rule: replicas that never held data (a new
/// cluster's first start, each with an empty directory) form the cluster.
#[test]
fn replicas_that_never_held_data_form_the_cluster() {
    let mut config = Config::new(7, 3);
    config.durability = Durability::Disk;
    let mut cluster = Cluster::with_config(config, 1);
    for r in 0..3u8 {
        cluster.crash(r);
    }
    for r in 0..3u8 {
        cluster.restart(r, Recorder::default(), 70 + u64::from(r));
    }
    cluster.run_for_ms(1_000);
    let formed: u64 = cluster
        .replicas
        .iter()
        .map(|r| r.stats().clusters_formed)
        .sum();
    assert!(formed >= 1, "no replica formed the new cluster");
    let done = cluster.execute(0, b"first");
    assert_eq!(done.op_number, 1);
    cluster.assert_agreement();
}

/// Carries out, on `replica`'s disk, only the truncations of its held
/// persists (the glue makes a truncation durable at once, before the
/// entries that follow it are synced) and loses the rest: a power loss
/// right after the persist was written.
fn lose_all_but_truncations(cluster: &mut Cluster, replica: u8) {
    let disk = &mut cluster.disks[usize::from(replica)];
    for (_, persist, _) in cluster
        .held_persists
        .iter()
        .filter(|(r, _, _)| *r == replica)
    {
        if let Some(after) = persist.truncate_after {
            disk.log.retain(|&op, _| op <= after);
        }
    }
    cluster.crash(replica);
}

/// Reference: §4.2 with stable storage. A view change replaces the log
/// after the replica's commit-number, and after a restart from disk that
/// is the disk's commit-number, which the glue stores only with a promise
/// and so lags: the entries after it are committed ops this replica
/// acknowledged, and the new view's log holds them again. The persist
/// must not cut them from the disk: a one-replica cluster (its own
/// quorum) restarted from a disk whose commit-number lags takes the next
/// view with the same log, loses power right after the persist was
/// written, and must still hold every op it committed (vr-sim seed 772).
#[test]
fn a_view_change_does_not_cut_from_the_disk_the_committed_ops_it_keeps() {
    let mut cluster = durable_cluster(1, 1, 9);
    let written: Vec<Vec<u8>> = (0..6).map(|i| op("a", i)).collect();
    for o in &written {
        cluster.execute(0, o);
    }
    cluster.crash(0);
    cluster.disks[0].state.commit_number = 0;
    cluster.hold_persists[0] = true;
    cluster.restart_from_disk(0, Recorder::default(), 77);
    assert_eq!(cluster.replicas[0].status(), Status::Normal);
    assert!(cluster.replicas[0].view() > 0, "it moved to the next view");
    for (_, persist, _) in &cluster.held_persists {
        assert!(
            persist.truncate_after.is_none_or(|after| after >= 6),
            "the disk's committed ops are cut: {:?}",
            persist.truncate_after
        );
    }
    lose_all_but_truncations(&mut cluster, 0);
    cluster.hold_persists[0] = false;
    cluster.restart_from_disk(0, Recorder::default(), 78);
    cluster.run_for_ms(10);
    assert_eq!(cluster.executed(0), written, "a committed op was lost");
}

/// Reference: §4.2 with stable storage, as above on three replicas: every
/// replica restarts from a disk whose commit-number lags (a whole-cluster
/// power loss); the view change that follows installs the same log
/// everywhere, and no replica's persist cuts an op its disk held.
#[test]
fn a_view_change_after_a_power_loss_cuts_nothing_from_the_disks() {
    for seed in 0..4 {
        let mut cluster = durable_cluster(3, 1, 30 + seed);
        for i in 0..6 {
            cluster.execute(0, &op("w", i));
        }
        cluster.run_for_ms(50);
        let held: Vec<u64> = cluster.disks.iter().map(|d| d.log.len() as u64).collect();
        for r in 0..3 {
            cluster.crash(r);
            cluster.disks[usize::from(r)].state.commit_number = 0;
            cluster.hold_persists[usize::from(r)] = true;
        }
        for r in 0..3 {
            cluster.restart_from_disk(r, Recorder::default(), 200 + u64::from(r));
        }
        let mut truncations = Vec::new();
        for step in 0..200 {
            cluster.run_for_ms(5);
            for (r, persist, _) in &cluster.held_persists {
                if let Some(after) = persist.truncate_after {
                    truncations.push((*r, after, step));
                }
            }
            for r in 0..3 {
                cluster.complete_persists(r);
            }
            if cluster
                .replicas
                .iter()
                .all(|r| r.status() == Status::Normal)
            {
                break;
            }
        }
        assert!(
            cluster
                .replicas
                .iter()
                .all(|r| r.status() == Status::Normal && r.view() > 0),
            "seed {seed}: a new view formed"
        );
        for (r, after, step) in truncations {
            assert!(
                after >= held[usize::from(r)],
                "seed {seed}: r{r} cut its disk's log after op {after} (it held {} ops) at step {step}",
                held[usize::from(r)]
            );
        }
    }
}
