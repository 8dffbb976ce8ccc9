//! Reconfiguration (§7): epochs, StartEpoch, transitioning members and
//! retired replicas, on the in-memory harness.

mod common;

use common::{Cluster, Node, Recorder};
use vr_core::message::Message;
use vr_core::{Config, Status};

/// Runs until every replica of `members` is normal in `epoch` with equal
/// commit-numbers, or `ms_max` passes.
fn settle(cluster: &mut Cluster, members: &[u8], epoch: u32, ms_max: u64) {
    for _ in 0..ms_max / 10 {
        cluster.run_for_ms(10);
        let settled = members.iter().all(|&m| {
            let r = &cluster.replicas[usize::from(m)];
            r.epoch() == epoch && r.status() == Status::Normal
        }) && {
            let commits: Vec<u64> = members
                .iter()
                .map(|&m| cluster.replicas[usize::from(m)].commit_number())
                .collect();
            commits.windows(2).all(|w| w[0] == w[1])
        };
        if settled {
            return;
        }
    }
    let states: Vec<_> = members
        .iter()
        .map(|&m| {
            let r = &cluster.replicas[usize::from(m)];
            (m, r.epoch(), r.status(), r.view(), r.commit_number())
        })
        .collect();
    panic!("members did not settle in epoch {epoch}: {states:?}");
}

fn reconfigure(cluster: &mut Cluster, admin: usize, members: &[u8]) -> u32 {
    let number = cluster.reconfigure(admin, members);
    let done = cluster
        .await_completion(admin, number, 10_000)
        .expect("the reconfiguration completes");
    u32::from_le_bytes(done.result[..4].try_into().unwrap())
}

/// §7: a cluster of 3 grows to 5 while a client writes; the new members
/// fetch the state, and every write before and after is on all five.
#[test]
fn grow_three_to_five() {
    let mut cluster = Cluster::new(3, 2, 1);
    for i in 0..20u8 {
        cluster.execute(0, &[b'a', i]);
    }
    cluster.join(3, Recorder::default(), 3);
    cluster.join(4, Recorder::default(), 4);
    assert_eq!(cluster.replicas[3].status(), Status::Transitioning);
    assert_eq!(reconfigure(&mut cluster, 1, &[0, 1, 2, 3, 4]), 1);
    for i in 0..20u8 {
        cluster.execute(0, &[b'b', i]);
    }
    settle(&mut cluster, &[0, 1, 2, 3, 4], 1, 5_000);
    assert_eq!(cluster.clients[0].epoch(), 1, "the client followed");
    cluster.assert_agreement();
    for m in 0..5u8 {
        assert_eq!(
            cluster.executed(m).len(),
            40,
            "member {m} holds every write"
        );
        assert_eq!(cluster.replicas[usize::from(m)].config().replica_count, 5);
    }
    // The new epoch commits with its own quorums: two members down of five.
    cluster.crash(1);
    cluster.crash(2);
    cluster.execute(0, b"after two failures");
    cluster.run_for_ms(300);
    assert_eq!(cluster.executed(3).last().unwrap(), b"after two failures");
}

/// §7.2: a cluster of 5 shrinks to 3; the removed replicas retire, tell
/// clients of the old epoch about the new one, and may be shut down once
/// a quorum of the new epoch has started.
#[test]
fn shrink_five_to_three() {
    let mut cluster = Cluster::new(5, 2, 2);
    for i in 0..10u8 {
        cluster.execute(0, &[b'a', i]);
    }
    assert_eq!(reconfigure(&mut cluster, 1, &[0, 1, 2]), 1);
    settle(&mut cluster, &[0, 1, 2], 1, 5_000);
    cluster.run_for_ms(300);
    for m in [3u8, 4] {
        let r = &cluster.replicas[usize::from(m)];
        assert_eq!(r.status(), Status::Retired, "member {m}");
        assert!(r.may_shut_down(), "member {m} heard a quorum start");
    }
    cluster.crash(3);
    cluster.crash(4);
    for i in 0..10u8 {
        cluster.execute(0, &[b'b', i]);
    }
    // The new epoch tolerates one failure of three, not two.
    cluster.crash(2);
    cluster.execute(0, b"one down");
    cluster.run_for_ms(300);
    cluster.assert_agreement();
    assert_eq!(cluster.executed(0).len(), 21);
}

/// §7: replace one replica (3 → 3 with a different member).
#[test]
fn replace_one_replica() {
    let mut cluster = Cluster::new(3, 2, 3);
    for i in 0..15u8 {
        cluster.execute(0, &[b'a', i]);
    }
    cluster.join(3, Recorder::default(), 9);
    assert_eq!(reconfigure(&mut cluster, 1, &[0, 1, 3]), 1);
    settle(&mut cluster, &[0, 1, 3], 1, 5_000);
    assert_eq!(cluster.replicas[2].status(), Status::Retired);
    cluster.crash(2);
    // The replaced member is gone; the new one counts in quorums.
    cluster.crash(0);
    for i in 0..5u8 {
        cluster.execute(0, &[b'b', i]);
    }
    cluster.run_for_ms(300);
    cluster.assert_agreement();
    assert_eq!(cluster.executed(3).len(), 20);
    assert_eq!(cluster.replicas[3].epoch_members(), members(&[0, 1, 3]));
}

/// §7.2: the primary crashes right after the reconfiguration commits, before
/// anyone else learns it. The next primary of the old epoch commits it
/// again and starts the new epoch; no write is lost.
#[test]
fn primary_crash_right_after_the_reconfiguration_commits() {
    let mut cluster = Cluster::new(3, 2, 4);
    for i in 0..10u8 {
        cluster.execute(0, &[b'a', i]);
    }
    cluster.join(3, Recorder::default(), 5);
    cluster.join(4, Recorder::default(), 6);
    cluster.reconfigure(1, &[0, 1, 2, 3, 4]);
    let mut steps = 0;
    while cluster.replicas[0].epoch() == 0 {
        assert!(
            cluster.deliver_one(),
            "the primary commits the reconfiguration"
        );
        steps += 1;
        assert!(steps < 1_000);
    }
    // Crash it now: its Commit and StartEpoch never leave.
    cluster.crash(0);
    cluster.in_flight.retain(|e| e.from != Node::Replica(0));
    assert_eq!(cluster.replicas[1].epoch(), 0, "no backup knows yet");
    settle(&mut cluster, &[1, 2, 3, 4], 1, 10_000);
    for i in 0..10u8 {
        cluster.execute(0, &[b'b', i]);
    }
    cluster.run_for_ms(300);
    cluster.assert_agreement();
    for m in 1..5u8 {
        assert_eq!(cluster.executed(m).len(), 20, "member {m}");
    }
}

/// §7.3: a backup partitioned during the reconfiguration learns of the new
/// epoch from a StartEpoch answer to its old-epoch messages, fetches the
/// ops it missed and joins.
#[test]
fn a_lagging_member_catches_up_into_the_new_epoch() {
    let mut cluster = Cluster::new(3, 2, 5);
    for i in 0..5u8 {
        cluster.execute(0, &[b'a', i]);
    }
    cluster.isolate(2);
    for i in 0..5u8 {
        cluster.execute(0, &[b'b', i]);
    }
    cluster.join(3, Recorder::default(), 7);
    assert_eq!(reconfigure(&mut cluster, 1, &[0, 1, 2, 3]), 1);
    settle(&mut cluster, &[0, 1, 3], 1, 5_000);
    assert_eq!(cluster.replicas[2].epoch(), 0);
    cluster.heal();
    settle(&mut cluster, &[0, 1, 2, 3], 1, 5_000);
    cluster.execute(0, b"all four");
    cluster.run_for_ms(300);
    cluster.assert_agreement();
    assert_eq!(cluster.executed(2).len(), 11);
}

/// §7.1: the primary refuses a reconfiguration for another epoch, one that
/// keeps no current member, and a second one while the first is pending;
/// it admits no request of the epoch behind a pending reconfiguration.
#[test]
fn invalid_reconfigurations_are_refused() {
    let mut cluster = Cluster::new(3, 2, 6);
    cluster.execute(0, b"x");
    // No current member kept.
    let number = cluster.reconfigure(1, &[7, 8, 9]);
    assert!(cluster.await_completion(1, number, 500).is_none());
    assert!(cluster.replicas[0].stats().reconfigurations_refused > 0);
    cluster.clients[1].abandon();
    // Duplicate members.
    let number = cluster.reconfigure(1, &[0, 0, 1]);
    assert!(cluster.await_completion(1, number, 500).is_none());
    cluster.clients[1].abandon();
    assert_eq!(cluster.replicas[0].epoch(), 0);
    // A valid one still works afterwards.
    assert_eq!(reconfigure(&mut cluster, 1, &[0, 1]), 1);
    settle(&mut cluster, &[0, 1], 1, 5_000);
    cluster.execute(0, b"y");
    cluster.assert_agreement();
}

/// Clusters with witnesses are not reconfigured (not supported yet).
#[test]
fn clusters_with_witnesses_refuse_reconfiguration() {
    let mut config = Config::new(7, 3);
    config.witnesses = vec![vr_core::ReplicaIndex(2)];
    let mut cluster = Cluster::with_config(config, 2);
    cluster.execute(0, b"x");
    let number = cluster.reconfigure(1, &[0, 1]);
    assert!(cluster.await_completion(1, number, 500).is_none());
    assert!(cluster.replicas[0].stats().reconfigurations_refused > 0);
}

/// §4.3 with §7.3: a member restarted with the configuration of an older
/// epoch (all a process may know after a crash) is told of the current
/// epoch by the replicas it asks, and recovers there.
#[test]
fn a_member_restarted_with_the_old_configuration_recovers_in_the_new_epoch() {
    let mut cluster = Cluster::new(3, 2, 7);
    for i in 0..5u8 {
        cluster.execute(0, &[b'a', i]);
    }
    cluster.join(3, Recorder::default(), 11);
    cluster.join(4, Recorder::default(), 12);
    assert_eq!(reconfigure(&mut cluster, 1, &[0, 1, 2, 3, 4]), 1);
    settle(&mut cluster, &[0, 1, 2, 3, 4], 1, 5_000);
    cluster.execute(0, b"before the crash");
    cluster.crash(1);
    // `restart` uses the cluster's original (epoch 0) configuration.
    cluster.restart(1, Recorder::default(), 99);
    assert_eq!(cluster.replicas[1].epoch(), 0);
    settle(&mut cluster, &[0, 1, 2, 3, 4], 1, 5_000);
    assert_eq!(cluster.replicas[1].stats().recoveries_completed, 1);
    assert_eq!(cluster.replicas[1].incarnation(), 1, "recovered in epoch 1");
    cluster.execute(0, b"after");
    cluster.run_for_ms(300);
    cluster.assert_agreement();
    assert_eq!(cluster.executed(1).len(), 7);
}

/// The addresses a reconfiguration carries reach every member and the
/// clients that follow it, so that an embedding can reach new members.
#[test]
fn addresses_travel_with_the_new_epoch() {
    let mut cluster = Cluster::new(3, 2, 8);
    cluster.execute(0, b"x");
    cluster.join(3, Recorder::default(), 13);
    let addresses: Vec<Vec<u8>> = ["a:1", "b:2", "d:4"]
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    let number = cluster.clients[1]
        .reconfigure_with_addresses(
            cluster.now,
            vec![
                vr_core::MemberId(0),
                vr_core::MemberId(1),
                vr_core::MemberId(3),
            ],
            addresses.clone(),
        )
        .unwrap();
    cluster.drain_client(1);
    cluster.await_completion(1, number, 10_000).unwrap();
    settle(&mut cluster, &[0, 1, 3], 1, 5_000);
    for m in [0u8, 1, 3] {
        assert_eq!(
            cluster.replicas[usize::from(m)].epoch_addresses(),
            &addresses[..]
        );
    }
    assert_eq!(
        cluster.replicas[2].epoch_addresses(),
        &addresses[..],
        "retired too"
    );
    cluster.execute(0, b"y");
    assert_eq!(cluster.clients[0].addresses(), &addresses[..]);
    assert_eq!(cluster.clients[0].members(), members(&[0, 1, 3]));
    // An address longer than the bound is refused.
    let number = cluster.clients[1]
        .reconfigure_with_addresses(cluster.now, members(&[0, 1]), vec![vec![b'x'; 256], vec![]])
        .unwrap();
    cluster.drain_client(1);
    assert!(cluster.await_completion(1, number, 500).is_none());
}

/// A member that joined, took part and crashed restarts with the registry
/// of every member as its epoch-0 configuration (index = its member id):
/// the members it asks tell it of the current epoch and it recovers there
/// (§4.3 with §7.3), fenced by its new incarnation.
#[test]
fn a_joined_member_restarted_with_the_registry_recovers_in_the_new_epoch() {
    let mut cluster = Cluster::new(3, 2, 9);
    cluster.execute(0, b"a");
    cluster.join(3, Recorder::default(), 21);
    cluster.join(4, Recorder::default(), 22);
    assert_eq!(reconfigure(&mut cluster, 1, &[0, 1, 2, 3, 4]), 1);
    settle(&mut cluster, &[0, 1, 2, 3, 4], 1, 5_000);
    cluster.execute(0, b"b");
    cluster.crash(3);
    let mut registry = cluster.config.clone();
    registry.replica_count = 5;
    cluster.restart_with(3, registry, 3, Recorder::default(), 77);
    settle(&mut cluster, &[0, 1, 2, 3, 4], 1, 5_000);
    assert_eq!(cluster.replicas[3].stats().recoveries_completed, 1);
    cluster.execute(0, b"c");
    cluster.run_for_ms(300);
    cluster.assert_agreement();
    assert_eq!(cluster.executed(3).len(), 3);
}

/// §7.1/§7.3: a request that reaches the primary behind a pending
/// reconfiguration is refused, and its client is told of the new epoch as
/// soon as it begins: it resends at once, without waiting for its timeout.
#[test]
fn a_client_refused_behind_the_reconfiguration_is_told_when_the_epoch_begins() {
    let mut cluster = Cluster::new(3, 2, 10);
    cluster.execute(0, b"before");
    cluster.join(3, Recorder::default(), 31);
    let started = cluster.now;
    // FIFO delivery: the primary appends the reconfiguration, then gets
    // the request.
    let admin = cluster.reconfigure(1, &[0, 1, 2, 3]);
    let number = cluster.submit(0, b"during");
    let done = cluster
        .await_completion(0, number, 10_000)
        .expect("the request completes in the new epoch");
    assert!(cluster.await_completion(1, admin, 10_000).is_some());
    let timeout = cluster.config.view_change_timeout_ns * 2;
    assert!(
        cluster.now.saturating_since(started) < timeout,
        "the client resent on the notice, not after its timeout"
    );
    assert_eq!(cluster.clients[0].epoch(), 1);
    assert!(
        cluster.replicas[0].stats().requests_dropped >= 1,
        "it was refused"
    );
    assert!(done.op_number > 2, "executed after the reconfiguration");
}

/// §4.3 with §7 (issue 17, item 1): a replica restarted without its memory
/// and with an older epoch's configuration recovers in that epoch, then
/// executes the reconfiguration that begins the next one. Before its crash
/// it may already have taken part in that next epoch (here it acknowledged
/// W1 there), so it must not enter it as a normal member with a blank
/// crash vector: it recovers in the new epoch, which fences its old votes
/// and hands it W1.
///
/// Epoch 0 = {r0..r4}. The reconfiguration to {0, 1, 2} commits at op n
/// (r0 with acks of r1 and r3), only r1 hears the commit: r0 and r1 enter
/// epoch 1, r2–r4 stay in epoch 0. W1 commits at n + 1 in epoch 1 (r0 +
/// r1). r0 is cut off; r1 is wiped and restarted with the epoch-0
/// configuration; r2–r4 form a later view of epoch 0 (r3 holds n), r1
/// recovers into it, and n commits there, so r1 and r2 execute it and
/// enter epoch 1. Entering it normal, r1 and r2 would form view 1 of epoch
/// 1 without W1 and commit W2 at n + 1: W1, committed, would be lost.
#[test]
fn a_wiped_replica_restarted_in_an_older_epoch_recovers_in_the_next_one() {
    let mut config = Config::new(7, 5);
    config.seed = 40;
    let mut cluster = Cluster::with_config(config, 2);
    cluster.execute(0, b"a");
    // Phase 1: r0 and r1 carry the reconfiguration into epoch 1; r3 only
    // acknowledges its Prepare; r2 and r4 hear nothing from them.
    cluster.filter = Box::new(|e| match (e.from, e.to) {
        (Node::Replica(from), Node::Replica(to)) if from <= 1 && to >= 2 => {
            to == 3 && matches!(e.message, Message::Prepare(_))
        }
        _ => true,
    });
    assert_eq!(reconfigure(&mut cluster, 1, &[0, 1, 2]), 1);
    cluster.run_for_ms(20);
    let n = cluster.replicas[0].commit_number();
    assert_eq!(cluster.replicas[1].epoch(), 1);
    for r in 2..5 {
        assert_eq!(cluster.replicas[r].epoch(), 0, "r{r} stays in epoch 0");
    }
    let w1 = cluster.execute(0, b"W1");
    assert_eq!(w1.op_number, n + 1, "W1 committed in epoch 1 by r0 and r1");

    // Phase 2: r0 cut off; r1 wiped and restarted with epoch 0's
    // configuration (all a restarted process may know).
    // r3 and r4's acknowledgements to the new primary are held back
    // until r1 has recovered, so that n commits with r1's.
    let hold_acks = std::rc::Rc::new(std::cell::Cell::new(true));
    let holding = hold_acks.clone();
    cluster.filter = Box::new(move |e| {
        let acks_held = holding.get()
            && matches!(e.from, Node::Replica(3 | 4))
            && matches!(e.message, Message::PrepareOk(_));
        e.from != Node::Replica(0) && e.to != Node::Replica(0) && !acks_held
    });
    cluster.crash(1);
    let epoch_0 = cluster.config.clone();
    cluster.restart_with(1, epoch_0, 1, Recorder::default(), 91);
    for _ in 0..500 {
        cluster.run_for_ms(10);
        let r1 = &cluster.replicas[1];
        if r1.status() == Status::Normal || r1.epoch() == 1 {
            break;
        }
    }
    assert_eq!(
        (cluster.replicas[1].epoch(), cluster.replicas[1].status()),
        (0, Status::Normal),
        "r1 recovered into a later view of epoch 0"
    );
    assert!(cluster.replicas[1].op_number() > n - 1, "its log holds n");
    hold_acks.set(false);
    cluster.run_for_ms(3_000);
    assert_eq!(
        cluster.replicas[2].epoch(),
        1,
        "r2–r4 committed the reconfiguration in epoch 0"
    );
    let w2 = cluster.submit(0, b"W2");
    let early = cluster.await_completion(0, w2, 3_000);
    assert!(
        early.is_none(),
        "epoch 1 cannot commit without r0, the only live holder of W1 \
         (W2 completed at op {:?})",
        early.map(|c| c.op_number)
    );
    assert_ne!(cluster.replicas[1].status(), Status::Normal);

    // Phase 3: heal. W1 survives, W2 follows it, everyone agrees.
    cluster.heal();
    let done = cluster
        .await_completion(0, w2, 10_000)
        .expect("W2 completes once r0 is back");
    assert!(done.op_number > n + 1);
    settle(&mut cluster, &[0, 1, 2], 1, 10_000);
    cluster.run_for_ms(300);
    cluster.assert_agreement();
    for r in 0..3u8 {
        let executed = cluster.executed(r);
        assert!(executed.iter().any(|op| op == b"W1"), "r{r} lost W1");
        assert!(executed.iter().any(|op| op == b"W2"), "r{r} lacks W2");
    }
}

/// Member ids from their numbers.
fn members(ids: &[u8]) -> Vec<vr_core::MemberId> {
    ids.iter().map(|&m| vr_core::MemberId(m)).collect()
}

/// §7.2: a replica its embedder booted straight into a later epoch (its
/// configuration, recovering, without the addresses the reconfiguration
/// carried) takes them from a notice of the same epoch that has them, so
/// that it can pass them on to clients and replicas of older epochs.
#[test]
fn a_replica_booted_into_an_epoch_takes_its_addresses_from_a_later_notice() {
    let mut config = Config::new(3, 3)
        .with_members(&members(&[0, 1, 3]))
        .unwrap();
    config.epoch = 1;
    let now = vr_core::Instant::ZERO;
    let mut replica = vr_core::Replica::recover(
        config,
        vr_core::ReplicaIndex(1),
        Recorder::default(),
        now,
        7,
    )
    .unwrap();
    assert!(replica.epoch_addresses().is_empty());
    let notice = |addresses: Vec<Vec<u8>>| {
        Message::StartEpoch(vr_core::message::StartEpoch {
            view: 0,
            epoch: 1,
            op_number: 5,
            entry_view: 0,
            members: members(&[0, 1, 3]),
            addresses,
            sender: vr_core::MemberId(0),
        })
    };
    // A notice without addresses (from another replica booted so) changes
    // nothing.
    replica.handle_message(now, 1, notice(Vec::new()));
    assert!(replica.epoch_addresses().is_empty());
    let addresses: Vec<Vec<u8>> = ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.4:7000"]
        .map(|a| a.as_bytes().to_vec())
        .to_vec();
    replica.handle_message(now, 1, notice(addresses.clone()));
    assert_eq!(replica.epoch_addresses(), &addresses[..]);
    // Known addresses are never replaced by another notice's.
    let other: Vec<Vec<u8>> = ["10.9.0.1:7000", "10.9.0.2:7000", "10.9.0.4:7000"]
        .map(|a| a.as_bytes().to_vec())
        .to_vec();
    replica.handle_message(now, 1, notice(other));
    assert_eq!(replica.epoch_addresses(), &addresses[..]);
}
