//! Witnesses (§6, "Witnesses"): replicas that keep the log and vote in view
//! changes and recovery, but never execute the service and never become
//! primary. With f + 1 full replicas and f witnesses the cluster tolerates
//! f failures.

mod common;

use common::{Cluster, Node, Recorder};
use vr_core::{Config, Status};

/// A cluster of `n` replicas with `witnesses`, small checkpoints (so that
/// logs would be dropped early if nothing held them) and `clients` clients.
fn witness_cluster(n: u8, witnesses: &[u8], clients: usize, seed: u64) -> Cluster {
    let mut config = Config::new(7, n);
    config.seed = seed;
    config.witnesses = witnesses
        .iter()
        .map(|&w| vr_core::ReplicaIndex(w))
        .collect();
    config.checkpoint_interval_ops = 16;
    config.log_tail_ops = 4;
    Cluster::with_config(config, clients)
}

fn ops(prefix: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!("{prefix}{i}").into_bytes())
        .collect()
}

/// Reference: §6. A witness holds the log and acknowledges Prepares, but its
/// service never executes anything; the full replicas execute everything.
#[test]
fn witness_keeps_the_log_but_never_executes() {
    let mut cluster = witness_cluster(3, &[2], 1, 1);
    let written = ops("w", 300);
    for op in &written {
        cluster.execute(0, op);
    }
    cluster.run_for_ms(50);
    assert_eq!(cluster.executed(0), written);
    assert_eq!(cluster.executed(1), written);
    assert!(cluster.executed(2).is_empty(), "a witness executes nothing");
    let witness = &cluster.replicas[2];
    assert!(witness.is_witness());
    assert_eq!(witness.op_number(), 300);
    assert_eq!(witness.commit_number(), 300, "it knows what is committed");
    assert_eq!(witness.stats().ops_executed, 0);
    assert_eq!(witness.stats().checkpoints_taken, 1, "only the empty one");
    // Both full replicas executed everything, so the witness dropped its log
    // up to what they executed, in runs of at least 64 entries (or half
    // the log): it holds no more than about twice that.
    assert!(witness.log_base() >= 150, "log_base {}", witness.log_base());
    assert!(
        witness.log().len() <= 140,
        "{} entries",
        witness.log().len()
    );
    cluster.assert_agreement();
}

/// Reference: §6. While a full replica lags, the witness (and every other
/// replica) keeps the log back to what that full replica executed: were the
/// primary to fail, the lagging replica and the witness together must still
/// hold every committed op. Once it catches up, the logs are dropped.
#[test]
fn witness_keeps_ops_a_lagging_full_replica_has_not_executed() {
    let mut cluster = witness_cluster(3, &[2], 1, 2);
    for op in ops("a", 10) {
        cluster.execute(0, &op);
    }
    cluster.run_for_ms(50);
    let lagging_commit = cluster.replicas[1].commit_number();
    cluster.isolate(1);
    for op in ops("b", 100) {
        cluster.execute(0, &op);
    }
    cluster.run_for_ms(50);
    let witness = &cluster.replicas[2];
    assert_eq!(witness.commit_number(), 110);
    assert!(
        witness.log_base() <= lagging_commit,
        "the witness dropped ops the lagging replica lacks: base {} > {lagging_commit}",
        witness.log_base()
    );
    let primary = &cluster.replicas[0];
    assert!(primary.stats().checkpoints_taken >= 6);
    assert!(
        primary.log_base() <= lagging_commit,
        "with witnesses the primary keeps the log back to the slowest full replica"
    );
    cluster.heal();
    cluster.run_for_ms(500);
    assert_eq!(cluster.replicas[1].commit_number(), 110);
    assert_eq!(
        cluster.replicas[1].stats().checkpoints_installed,
        0,
        "a lagging full replica catches up from the log"
    );
    cluster.execute(0, b"c");
    cluster.run_for_ms(100);
    assert!(
        cluster.replicas[2].log_base() >= 100,
        "dropped once executed"
    );
    cluster.assert_agreement();
}

/// Reference: §6 with §4.2. The primary fails while the other full replica
/// lags; the lagging replica becomes primary with the witness's DoViewChange
/// and completes its log from the witness, losing no committed op.
#[test]
fn lagging_full_replica_takes_over_from_the_witness_log() {
    let mut cluster = witness_cluster(3, &[2], 1, 3);
    for op in ops("a", 5) {
        cluster.execute(0, &op);
    }
    cluster.run_for_ms(50);
    cluster.isolate(1);
    let more = ops("b", 60);
    for op in &more {
        cluster.execute(0, op);
    }
    assert_eq!(cluster.replicas[1].commit_number(), 5);
    // The primary fails; the full backup and the witness are what is left.
    cluster.crash(0);
    cluster.heal();
    let after = cluster.execute(0, b"after");
    assert_eq!(cluster.replicas[1].status(), Status::Normal);
    assert!(cluster.replicas[1].is_primary(), "the only full replica up");
    assert_eq!(after.op_number, 66, "every committed op kept its place");
    let mut expected = ops("a", 5);
    expected.extend(more);
    expected.push(b"after".to_vec());
    assert_eq!(cluster.executed(1), expected);
    assert!(cluster.executed(2).is_empty());
    cluster.assert_agreement();
}

/// Reference: §6. A witness never becomes primary: with 3 full replicas
/// and 2 witnesses, two full replicas can fail one after the other and the
/// third serves with the witnesses as its quorum.
#[test]
fn witnesses_are_never_primary_and_complete_quorums() {
    let mut cluster = witness_cluster(5, &[1, 3], 1, 4);
    let mut expected = Vec::new();
    for round in 0..3 {
        for op in ops(&format!("r{round}-"), 10) {
            cluster.execute(0, &op);
            expected.push(op);
        }
        cluster.run_for_ms(50);
        let primary = (0..5u8)
            .find(|&r| {
                !cluster.crashed[usize::from(r)] && cluster.replicas[usize::from(r)].is_primary()
            })
            .expect("a primary");
        assert!(
            !cluster.replicas[usize::from(primary)].is_witness(),
            "round {round}: witness {primary} is primary"
        );
        if round < 2 {
            cluster.crash(primary);
        }
    }
    let survivor = (0..5u8)
        .find(|&r| {
            !cluster.crashed[usize::from(r)]
                && !cluster.config.witnesses.contains(&vr_core::ReplicaIndex(r))
        })
        .expect("one full replica left");
    assert_eq!(cluster.executed(survivor), expected);
    for witness in [1, 3] {
        assert!(cluster.executed(witness).is_empty());
        assert_eq!(cluster.replicas[usize::from(witness)].op_number(), 30);
    }
    cluster.assert_agreement();
}

/// Reference: §6 with §5.2. A witness that fell behind the full replicas'
/// logs cannot fetch a checkpoint (it has no state to install): it moves its
/// log's start forward to a point every full replica executed and fetches
/// the log from there.
#[test]
fn lagging_witness_skips_what_every_full_replica_executed() {
    let mut cluster = witness_cluster(5, &[3, 4], 1, 5);
    cluster.isolate(4);
    for op in ops("a", 100) {
        cluster.execute(0, &op);
    }
    cluster.run_for_ms(50);
    assert!(
        cluster.replicas[0].log_base() > 0,
        "the primary dropped its log start"
    );
    cluster.heal();
    cluster.execute(0, b"b");
    cluster.run_for_ms(500);
    let witness = &cluster.replicas[4];
    assert_eq!(witness.status(), Status::Normal);
    assert_eq!(witness.op_number(), 101);
    assert!(witness.stats().witness_log_skips >= 1);
    assert_eq!(witness.stats().checkpoints_installed, 0);
    cluster.assert_agreement();
}

/// Reference: §6 with §4.3. A witness restarted without its state recovers
/// like any replica: it learns the view and takes the primary's log from a
/// point every full replica executed.
#[test]
fn witness_recovers_without_state() {
    let mut cluster = witness_cluster(3, &[1], 1, 6);
    for op in ops("a", 50) {
        cluster.execute(0, &op);
    }
    cluster.crash(1);
    cluster.restart(1, Recorder::default(), 99);
    cluster.run_for_ms(500);
    let witness = &cluster.replicas[1];
    assert_eq!(witness.status(), Status::Normal);
    assert_eq!(witness.stats().recoveries_completed, 1);
    assert_eq!(witness.commit_number(), 50);
    assert!(
        witness.stats().witness_log_skips >= 1,
        "skipped to a checkpoint"
    );
    assert_eq!(witness.stats().checkpoints_installed, 0);
    // The recovered witness counts in quorums again: with the other full
    // replica down, the primary commits with the witness.
    cluster.crash(2);
    let c = cluster.execute(0, b"with-witness");
    assert_eq!(c.op_number, 51);
    assert!(cluster.executed(1).is_empty());
}

/// Reference: §6. The logs of a cluster with witnesses grow while a full
/// replica is down (the witness holds the only other copy of the ops it
/// missed). `witness_log_ops_max` bounds them: past it the primary admits
/// no request until the full replica is back.
#[test]
fn witness_log_bound_holds_requests_until_the_full_replica_returns() {
    let mut config = Config::new(7, 3);
    config.witnesses = vec![vr_core::ReplicaIndex(2)];
    config.witness_log_ops_max = 20;
    config.checkpoint_interval_ops = 8;
    config.log_tail_ops = 2;
    let mut cluster = Cluster::with_config(config, 1);
    cluster.execute(0, b"first");
    cluster.run_for_ms(50);
    cluster.crash(1);
    let mut committed = 1;
    let mut blocked = None;
    for i in 0..40 {
        let number = cluster.submit(0, format!("x{i}").as_bytes());
        if cluster.await_completion(0, number, 2_000).is_none() {
            blocked = Some(number);
            break;
        }
        committed += 1;
    }
    let blocked = blocked.expect("the bound held a request back");
    assert!(
        (20..=22).contains(&committed),
        "{committed} ops committed with a full replica down"
    );
    assert!(cluster.replicas[2].log().len() <= 21);
    cluster.restart(1, Recorder::default(), 7);
    let done = cluster.await_completion(0, blocked, 5_000);
    assert!(done.is_some(), "admitted once the full replica recovered");
    cluster.assert_agreement();
}

/// Reference: §6. Reads at backups need state: a witness drops them.
#[test]
fn witness_serves_no_backup_reads() {
    let mut cluster = witness_cluster(3, &[2], 1, 8);
    cluster.execute(0, b"w");
    cluster.run_for_ms(50);
    let read = vr_core::message::Message::ReadRequest(vr_core::message::ReadRequest {
        client_id: 1000,
        request_number: 2,
        op_number_min: 1,
        op: b"read x".to_vec(),
    });
    // The full backup answers it; the witness, with no state, drops it.
    for (replica, answered) in [(1u8, 1), (2, 0)] {
        let dropped = cluster.replicas[usize::from(replica)]
            .stats()
            .requests_dropped;
        cluster.inject(
            common::Node::Client(0),
            common::Node::Replica(replica),
            read.clone(),
        );
        while cluster.deliver_one() {}
        let stats = cluster.replicas[usize::from(replica)].stats();
        assert_eq!(stats.backup_reads, answered, "replica {replica}");
        assert_eq!(
            stats.requests_dropped,
            dropped + 1 - answered,
            "replica {replica}"
        );
    }
}

/// Reference: §6 with §4.3 and §5.2 (issue 17, item 2). With witnesses,
/// every replica keeps the log back to what every full replica executed, so
/// that a lagging full replica can always catch up from whoever is left.
/// Restarts must keep that: a full replica that recovers through a
/// checkpoint, and witnesses that recover from it, must still hold the ops
/// between the lagging replica's commit-number and the checkpoint.
///
/// 3 full (r0, r1, r2) + 2 witnesses (r3, r4): r2 is cut off and lags; r1
/// is wiped and recovers through a checkpoint; r1 becomes primary and takes
/// a later checkpoint; r3 then r4 are wiped and recover from r1; r2 comes
/// back and r0 and r1 crash (f = 2). r2 must lead with the two witnesses,
/// and only they can hand it the ops it missed.
#[test]
fn restarted_replicas_keep_the_log_a_lagging_full_replica_needs() {
    let mut cluster = witness_cluster(5, &[3, 4], 1, 41);
    let mut expected = ops("a", 20);
    for op in &expected {
        cluster.execute(0, op);
    }
    cluster.run_for_ms(50);
    // r2 cut off: it stays at op 20 while the others go on.
    let cut = |isolated: &'static [u8]| -> Box<dyn FnMut(&common::Envelope) -> bool> {
        Box::new(move |e| {
            !isolated
                .iter()
                .any(|&r| e.from == Node::Replica(r) || e.to == Node::Replica(r))
        })
    };
    cluster.filter = cut(&[2]);
    for op in ops("b", 20) {
        cluster.execute(0, &op);
        expected.push(op);
    }
    assert_eq!(cluster.replicas[2].commit_number(), 20);
    // r1 wiped: the primary's log no longer reaches back to op 0, so r1
    // recovers through a checkpoint.
    cluster.crash(1);
    cluster.restart(1, Recorder::default(), 71);
    cluster.run_for_ms(500);
    assert_eq!(cluster.replicas[1].status(), Status::Normal);
    assert_eq!(cluster.replicas[1].stats().checkpoints_installed, 1);
    // r1 becomes primary of view 1 (r0 cut off for a while), and the
    // cluster goes on past another checkpoint.
    cluster.filter = cut(&[0, 2]);
    let op = b"c-view-1".to_vec();
    cluster.execute(0, &op);
    expected.push(op);
    assert!(cluster.replicas[1].is_primary());
    cluster.filter = cut(&[2]);
    for op in ops("c", 20) {
        cluster.execute(0, &op);
        expected.push(op);
    }
    cluster.run_for_ms(50);
    // The witnesses are wiped one after the other and recover from r1.
    for witness in [3u8, 4] {
        cluster.crash(witness);
        cluster.restart(witness, Recorder::default(), 80 + u64::from(witness));
        cluster.run_for_ms(500);
        assert_eq!(
            cluster.replicas[usize::from(witness)].status(),
            Status::Normal,
            "witness r{witness} recovered"
        );
    }
    // r2 is back; r0 and r1 fail. r2 leads with the witnesses.
    cluster.crash(0);
    cluster.crash(1);
    cluster.heal();
    let number = cluster.submit(0, b"after");
    let after = cluster.await_completion(0, number, 10_000);
    let states: Vec<_> = (2..5)
        .map(|r| {
            let replica = &cluster.replicas[r];
            (
                r,
                replica.status(),
                replica.view(),
                replica.log_base(),
                replica.commit_number(),
            )
        })
        .collect();
    let after =
        after.unwrap_or_else(|| panic!("the cluster serves with r2 and the witnesses: {states:?}"));
    expected.push(b"after".to_vec());
    assert_eq!(after.op_number, expected.len() as u64);
    assert_eq!(
        cluster.executed(2),
        expected,
        "r2 executed every committed op"
    );
    cluster.assert_agreement();
}
