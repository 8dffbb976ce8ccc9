//! Scenario tests of the replica protocol on the in-memory harness. Each
//! names the section of Liskov & Cowling (2012) it checks.

mod common;

use common::{Cluster, Node};
use vr_core::message::{Commit, DoViewChange, LogEntry, Prepare, Request, StartViewChange};
use vr_core::{Config, Instant, Message, Replica, Status};

fn op(i: u64) -> Vec<u8> {
    format!("op-{i}").into_bytes()
}

/// Reference: §4.1. Requests commit through the primary with 3 and 5
/// replicas; every replica executes the same ops in the same order; only the
/// primary replies.
#[test]
fn normal_operation_3_and_5_replicas() {
    for n in [3u8, 5] {
        let mut cluster = Cluster::new(n, 3, 1);
        for i in 0..20 {
            let client = (i % 3) as usize;
            let done = cluster.execute(client, &op(i));
            assert_eq!(
                &done.result[8..],
                &op(i)[..],
                "the reply carries the service's result"
            );
        }
        // Backups learn the last commits from the next heartbeat.
        cluster.run_for_ms(50);
        for r in 0..n {
            let replica = &cluster.replicas[usize::from(r)];
            assert_eq!(
                replica.commit_number(),
                20,
                "replica {r} executed everything"
            );
            assert_eq!(replica.status(), Status::Normal);
            assert_eq!(replica.view(), 0);
        }
        cluster.assert_agreement();
        assert_eq!(cluster.executed(0), (0..20).map(op).collect::<Vec<_>>());
        assert_eq!(cluster.replies_sent_by[0], 20);
        assert!(
            cluster.replies_sent_by[1..].iter().all(|&r| r == 0),
            "backups never reply"
        );
    }
}

/// Reference: §4.1, pipelining. With many clients the primary keeps several
/// prepares in flight; a PrepareOk for op n acknowledges all before it.
#[test]
fn pipelined_prepares_commit_in_order() {
    let mut cluster = Cluster::new(3, 8, 2);
    let numbers: Vec<u64> = (0..8).map(|c| cluster.submit(c, &op(c as u64))).collect();
    // Deliver the 8 requests before any PrepareOk: all are in flight at once.
    for _ in 0..8 {
        cluster.deliver_one();
    }
    assert_eq!(cluster.replicas[0].op_number(), 8);
    assert_eq!(cluster.replicas[0].commit_number(), 0);
    for (c, n) in numbers.into_iter().enumerate() {
        assert!(cluster.await_completion(c, n, 1000).is_some());
    }
    cluster.run_for_ms(50);
    cluster.assert_agreement();
    assert_eq!(cluster.replicas[2].commit_number(), 8);
}

/// Reference: §4.1 with one replica: the primary alone is a quorum.
#[test]
fn single_replica_commits_alone() {
    let mut cluster = Cluster::new(1, 1, 3);
    for i in 0..5 {
        cluster.execute(0, &op(i));
    }
    assert_eq!(cluster.replicas[0].commit_number(), 5);
}

/// Reference: §4.2. The primary crashes; a view change makes replica 1
/// primary of view 1; every committed op survives in its original order and
/// new requests commit.
#[test]
fn crashed_primary_is_replaced_and_committed_ops_survive() {
    for n in [3u8, 5] {
        let mut cluster = Cluster::new(n, 2, 4);
        for i in 0..10 {
            cluster.execute((i % 2) as usize, &op(i));
        }
        let committed_before = cluster.executed(0);
        cluster.crash(0);
        for i in 10..15 {
            cluster.execute((i % 2) as usize, &op(i));
        }
        let new_primary = &cluster.replicas[1];
        assert_eq!(new_primary.view(), 1, "n={n}: view 1, primary 1");
        assert!(new_primary.is_primary());
        let executed = cluster.executed(1);
        assert_eq!(
            &executed[..10],
            &committed_before[..],
            "committed ops kept in order"
        );
        assert_eq!(executed.len(), 15);
        cluster.run_for_ms(50);
        for r in 1..n {
            assert_eq!(cluster.replicas[usize::from(r)].commit_number(), 15);
        }
        cluster.assert_agreement();
    }
}

/// Reference: §4.2. Ops prepared but not known committed by the backups
/// when the primary crashes survive: the new primary adopts the longest log
/// of the latest normal view and commits it.
#[test]
fn uncommitted_but_prepared_ops_survive_a_view_change() {
    let mut cluster = Cluster::new(3, 3, 5);
    cluster.execute(0, &op(0));
    // Three requests reach the primary and its Prepares reach the backups,
    // but no PrepareOk gets back and no commit goes out: then it crashes.
    cluster.filter = Box::new(|e| !matches!(e.message, Message::PrepareOk(_)));
    let numbers: Vec<u64> = (0..3)
        .map(|c| cluster.submit(c, &op(10 + c as u64)))
        .collect();
    while cluster.deliver_one() {}
    assert_eq!(cluster.replicas[1].op_number(), 4);
    assert_eq!(cluster.replicas[0].commit_number(), 1);
    cluster.crash(0);
    cluster.heal();
    for (c, n) in numbers.into_iter().enumerate() {
        let done = cluster
            .await_completion(c, n, 5000)
            .expect("retried request completes");
        assert_eq!(&done.result[8..], &op(10 + c as u64)[..]);
    }
    cluster.run_for_ms(50);
    assert_eq!(
        cluster.replicas[1].commit_number(),
        4,
        "the three prepared ops were committed once each"
    );
    cluster.assert_agreement();
}

/// Reference: §4.2. A view change completes despite lost and reordered
/// messages, and committed ops survive it, across seeds.
#[test]
fn view_change_with_lost_and_reordered_messages() {
    for seed in 0..20u64 {
        let mut cluster = Cluster::new(5, 3, seed);
        for i in 0..6 {
            cluster.execute((i % 3) as usize, &op(i));
        }
        let committed = cluster.executed(0);
        cluster.crash(0);
        cluster.reorder = true;
        let mut loss = vr_core::prng::Prng::new(seed ^ 0xABCD);
        cluster.filter = Box::new(move |_| loss.below(100) >= 20);
        for i in 6..10 {
            cluster.execute((i % 3) as usize, &op(i));
        }
        cluster.heal();
        cluster.run_for_ms(500);
        let live: Vec<u8> = (1..5).collect();
        let view = cluster.replicas[1].view();
        assert!(view >= 1, "seed {seed}: a view change happened");
        for &r in &live {
            let replica = &cluster.replicas[usize::from(r)];
            let executed = cluster.executed(r);
            assert_eq!(
                &executed[..6],
                &committed[..],
                "seed {seed}: replica {r} kept the committed ops"
            );
            assert_eq!(replica.commit_number(), 10, "seed {seed}: replica {r}");
        }
        cluster.assert_agreement();
    }
}

/// Reference: §4.1 step 2 and the client table. A duplicate of the latest
/// request gets the cached reply and is not executed again; an older request
/// is dropped.
#[test]
fn duplicate_and_old_requests_are_not_reexecuted() {
    let mut cluster = Cluster::new(3, 1, 6);
    cluster.execute(0, b"a");
    cluster.execute(0, b"b");
    let client_id = cluster.clients[0].client_id();
    let request = |n: u64, body: &[u8]| {
        Message::Request(Request {
            client_id,
            request_number: n,
            op: body.to_vec(),
        })
    };
    let replies_before = cluster.replies_sent_by[0];
    // The latest request again: answered from the client table.
    cluster.inject(Node::Client(0), Node::Replica(0), request(2, b"b"));
    // An older one: dropped without a reply.
    cluster.inject(Node::Client(0), Node::Replica(0), request(1, b"a"));
    cluster.run_for_ms(100);
    assert_eq!(
        cluster.replicas[0].service().executed.len(),
        2,
        "nothing executed twice"
    );
    assert_eq!(cluster.replicas[0].stats().requests_deduplicated, 1);
    assert_eq!(
        cluster.replies_sent_by[0],
        replies_before + 1,
        "only the latest got a reply"
    );
    // A duplicate that reaches a new primary after a view change is not
    // executed again either: the backups' client tables came from the same log.
    cluster.crash(0);
    cluster.inject(Node::Client(0), Node::Replica(1), request(2, b"b"));
    cluster.run_for_ms(1000);
    assert!(cluster.replicas[1].is_primary());
    assert_eq!(cluster.replicas[1].service().executed.len(), 2);
    let done = cluster.execute(0, b"c");
    assert_eq!(done.request_number, 3);
    assert_eq!(cluster.replicas[1].service().executed.len(), 3);
}

/// Reference: §4 ("if the sender is behind, the receiver drops the
/// message"). After a view change, Prepares and Commits of the old view are
/// ignored.
#[test]
fn messages_from_old_views_are_ignored() {
    let mut cluster = Cluster::new(3, 1, 7);
    cluster.execute(0, b"x");
    cluster.crash(0);
    cluster.execute(0, b"y");
    assert_eq!(cluster.replicas[2].view(), 1);
    let log_before = cluster.replicas[2].log().to_vec();
    let stale_before = cluster.replicas[2].stats().messages_stale_view;
    let stale = LogEntry {
        op_number: 3,
        view: 0,
        client_id: 99,
        request_number: 1,
        op: b"stale".to_vec(),
        kind: Default::default(),
    };
    cluster.inject(
        Node::Replica(0),
        Node::Replica(2),
        Message::Prepare(Prepare {
            view: 0,
            commit_number: 3,
            timestamp_ns: 0,
            full_commit_min: 0,
            entries: vec![stale],
        }),
    );
    cluster.inject(
        Node::Replica(0),
        Node::Replica(2),
        Message::Commit(Commit {
            view: 0,
            commit_number: 3,
            op_number: 3,
            timestamp_ns: 0,
            full_commit_min: 0,
        }),
    );
    cluster.deliver_one();
    cluster.deliver_one();
    assert_eq!(cluster.replicas[2].log(), &log_before[..]);
    assert_eq!(
        cluster.replicas[2].stats().messages_stale_view,
        stale_before + 2
    );
}

/// Reference: §5.2 (missing ops in the current view). A backup cut off
/// while ops commit catches up with GetState/NewState once reconnected.
#[test]
fn lagging_backup_catches_up_inside_its_view() {
    let mut cluster = Cluster::new(3, 1, 8);
    cluster.execute(0, &op(0));
    // Backup 2 misses Prepares and Commits, but keeps hearing heartbeats late
    // enough not to start a view change: drop only Prepares to it.
    cluster.filter =
        Box::new(|e| !(e.to == Node::Replica(2) && matches!(e.message, Message::Prepare(_))));
    for i in 1..30 {
        cluster.execute(0, &op(i));
    }
    assert_eq!(cluster.replicas[2].op_number(), 1);
    cluster.heal();
    cluster.run_for_ms(100);
    let lagging = &cluster.replicas[2];
    assert_eq!(lagging.view(), 0, "no view change was needed");
    assert!(lagging.stats().state_requests_sent > 0, "it fetched state");
    assert_eq!(lagging.op_number(), 30);
    assert_eq!(lagging.commit_number(), 30);
    assert_eq!(lagging.log(), cluster.replicas[0].log());
    cluster.assert_agreement();
}

/// Reference: §4.1 step 4 ("a backup won't accept a prepare with op-number n
/// until it has entries for all earlier requests"). A Prepare after a gap is
/// not acknowledged; the backup asks for state instead.
#[test]
fn backup_does_not_acknowledge_across_a_gap() {
    let config = Config::new(7, 3);
    let now = Instant::ZERO;
    let mut backup = Replica::new(
        config,
        vr_core::ReplicaIndex(1),
        common::Recorder::default(),
        now,
    )
    .unwrap();
    let entry = |n: u64| LogEntry {
        op_number: n,
        view: 0,
        client_id: 5,
        request_number: n,
        op: op(n),
        kind: Default::default(),
    };
    backup.handle_message(
        now,
        0,
        Message::Prepare(Prepare {
            view: 0,
            commit_number: 0,
            timestamp_ns: 0,
            full_commit_min: 0,
            entries: vec![entry(2)],
        }),
    );
    let actions: Vec<_> = common::drain(&mut backup).0.into_iter().collect();
    assert_eq!(backup.op_number(), 0);
    assert!(
        actions.iter().all(|a| !matches!(
            a,
            vr_core::Output::Send {
                message: Message::PrepareOk(_),
                ..
            }
        )),
        "no PrepareOk across a gap: {actions:?}"
    );
    assert!(actions
        .iter()
        .any(|a| matches!(a, vr_core::Output::Send { to: vr_core::MemberId(0), message: Message::GetState(g), .. } if g.op_number == 0)));
    backup.handle_message(
        now,
        0,
        Message::Prepare(Prepare {
            view: 0,
            commit_number: 0,
            timestamp_ns: 0,
            full_commit_min: 0,
            entries: vec![entry(1)],
        }),
    );
    let actions: Vec<_> = common::drain(&mut backup).0.into_iter().collect();
    assert!(actions
        .iter()
        .any(|a| matches!(a, vr_core::Output::Send { to: vr_core::MemberId(0), message: Message::PrepareOk(p), .. } if p.op_number == 1)));
}

/// Reference: §4.2 ("a replica in view-change status does not accept
/// prepares of the old view"). Once a backup has moved to view 1, Prepares
/// of view 0 are dropped.
#[test]
fn replica_changing_view_rejects_old_prepares() {
    let config = Config::new(7, 3);
    let now = Instant::ZERO;
    let mut backup = Replica::new(
        config.clone(),
        vr_core::ReplicaIndex(2),
        common::Recorder::default(),
        now,
    )
    .unwrap();
    // Two others want view 1; backup 2 has not heard from the primary for a
    // long time, so it joins.
    let later = now + 10 * config.view_change_timeout_ns;
    backup.handle_message(
        later,
        0,
        Message::StartViewChange(StartViewChange {
            view: 1,
            promised_view: 0,
            replica: vr_core::ReplicaIndex(1),
            crash_vector: common::cv(3),
        }),
    );
    assert_eq!(backup.status(), Status::ViewChange);
    assert_eq!(backup.view(), 1);
    backup.handle_message(
        later,
        0,
        Message::Prepare(Prepare {
            view: 0,
            commit_number: 0,
            timestamp_ns: 0,
            full_commit_min: 0,
            entries: vec![LogEntry {
                op_number: 1,
                view: 0,
                client_id: 1,
                request_number: 1,
                op: op(1),
                kind: Default::default(),
            }],
        }),
    );
    assert_eq!(backup.op_number(), 0);
    assert_eq!(backup.stats().messages_stale_view, 1);
}

/// Reference: §4.2 step 3. The new primary takes the log with the largest
/// last-normal-view, not the longest one: a longer log from an older view
/// holds ops that a later view replaced.
#[test]
fn new_primary_chooses_largest_last_normal_view_then_op_number() {
    let config = Config::new(7, 5);
    let now = Instant::ZERO;
    // Replica 1 is a backup in view 0 and the primary of view 6 (6 mod 5).
    let mut primary = Replica::new(
        config.clone(),
        vr_core::ReplicaIndex(1),
        common::Recorder::default(),
        now,
    )
    .unwrap();
    let later = now + 10 * config.view_change_timeout_ns;
    let entry = |n: u64, view: u64, tag: &str| LogEntry {
        op_number: n,
        view,
        client_id: 9,
        request_number: n,
        op: tag.as_bytes().to_vec(),
        kind: Default::default(),
    };
    for replica in [2, 3] {
        primary.handle_message(
            later,
            0,
            Message::StartViewChange(StartViewChange {
                view: 6,
                promised_view: 0,
                replica: vr_core::ReplicaIndex(replica),
                crash_vector: common::cv(5),
            }),
        );
    }
    // Its own DoViewChange (empty log, last normal view 0) is now recorded;
    // a quorum of 5 is 3, so two more complete the view change.
    let from_2 = DoViewChange {
        view: 6,
        last_normal_view: 3,
        op_number: 2,
        commit_number: 0,
        log: vec![entry(1, 3, "a"), entry(2, 3, "b")],
        replica: vr_core::ReplicaIndex(2),
        crash_vector: common::cv(5),
    };
    let from_3 = DoViewChange {
        view: 6,
        last_normal_view: 1,
        op_number: 4,
        commit_number: 0,
        log: vec![
            entry(1, 1, "w"),
            entry(2, 1, "x"),
            entry(3, 1, "y"),
            entry(4, 1, "z"),
        ],
        replica: vr_core::ReplicaIndex(3),
        crash_vector: common::cv(5),
    };
    primary.handle_message(later, 0, Message::DoViewChange(from_3));
    assert_eq!(
        primary.status(),
        Status::ViewChange,
        "two of three DoViewChanges"
    );
    primary.handle_message(later, 0, Message::DoViewChange(from_2.clone()));
    assert!(primary.is_primary());
    assert_eq!(primary.view(), 6);
    assert_eq!(primary.last_normal_view(), 6);
    assert_eq!(primary.op_number(), 2);
    assert_eq!(
        primary.log(),
        &from_2.log[..],
        "the log of the latest normal view wins"
    );
    let start_views = common::drain(&mut primary).0.into_iter()
        .filter(|a| matches!(a, vr_core::Output::Send { message: Message::StartView(sv), .. } if sv.view == 6 && sv.log == from_2.log))
        .count();
    assert_eq!(start_views, 4, "StartView to every other replica");
}

/// Reference: §4.2 step 3, tie-break. Equal last-normal-views: the largest
/// op-number wins.
#[test]
fn equal_last_normal_views_break_ties_by_op_number() {
    let config = Config::new(7, 3);
    let now = Instant::ZERO;
    let mut primary = Replica::new(
        config.clone(),
        vr_core::ReplicaIndex(1),
        common::Recorder::default(),
        now,
    )
    .unwrap();
    let later = now + 10 * config.view_change_timeout_ns;
    primary.handle_message(
        later,
        0,
        Message::StartViewChange(StartViewChange {
            view: 1,
            promised_view: 0,
            replica: vr_core::ReplicaIndex(2),
            crash_vector: common::cv(3),
        }),
    );
    let longer = DoViewChange {
        view: 1,
        last_normal_view: 0,
        op_number: 1,
        commit_number: 0,
        log: vec![LogEntry {
            op_number: 1,
            view: 0,
            client_id: 3,
            request_number: 1,
            op: b"k".to_vec(),
            kind: Default::default(),
        }],
        replica: vr_core::ReplicaIndex(2),
        crash_vector: common::cv(3),
    };
    primary.handle_message(later, 0, Message::DoViewChange(longer.clone()));
    assert!(primary.is_primary());
    assert_eq!(primary.log(), &longer.log[..]);
}

/// Reference: §4.2 and VR-NOTES "liveness under asymmetric partitions". A
/// backup that can send but not receive keeps timing out; the others, who
/// still hear the primary, ignore its StartViewChange, so the cluster keeps
/// committing; once healed, the backup rejoins the running view.
#[test]
fn one_deaf_backup_cannot_depose_a_healthy_primary() {
    let mut cluster = Cluster::new(3, 1, 9);
    cluster.execute(0, &op(0));
    // Replica 2 hears nothing; what it sends still arrives.
    cluster.filter = Box::new(|e| e.to != Node::Replica(2));
    for i in 1..20 {
        cluster.execute(0, &op(i));
        cluster.run_for_ms(50);
    }
    assert!(
        cluster.replicas[2].view() > 3,
        "the deaf backup kept starting view changes"
    );
    assert_eq!(cluster.replicas[0].view(), 0, "the primary was not deposed");
    assert!(cluster.replicas[1].stats().start_view_changes_ignored > 0);
    cluster.heal();
    cluster.run_for_ms(500);
    let rejoined = &cluster.replicas[2];
    assert_eq!(rejoined.status(), Status::Normal);
    assert_eq!(
        rejoined.view(),
        0,
        "it went back to the view that is running"
    );
    assert_eq!(rejoined.commit_number(), 20);
    cluster.assert_agreement();
}

/// Reference: §4.2, §5.2. A backup that misses the StartView of a new view
/// learns of the view from its primary's heartbeat and fetches the log.
#[test]
fn replica_that_missed_start_view_syncs_from_the_new_primary() {
    let mut cluster = Cluster::new(3, 1, 10);
    for i in 0..5 {
        cluster.execute(0, &op(i));
    }
    cluster.crash(0);
    // Replica 2 never receives the StartView.
    cluster.filter = Box::new(|e| !matches!(e.message, Message::StartView(_)));
    cluster.execute(0, &op(5));
    assert!(cluster.replicas[1].is_primary());
    cluster.run_for_ms(300);
    let synced = &cluster.replicas[2];
    assert_eq!(synced.status(), Status::Normal);
    assert_eq!(synced.view(), 1);
    assert!(synced.stats().state_requests_sent > 0);
    assert_eq!(synced.log(), cluster.replicas[1].log());
    cluster.assert_agreement();
}

/// Same inputs, same outputs: two runs of one seed deliver the same messages
/// in the same order.
#[test]
fn runs_are_deterministic() {
    let run = |seed| {
        let mut cluster = Cluster::new(5, 3, seed);
        cluster.reorder = true;
        for i in 0..10 {
            cluster.execute((i % 3) as usize, &op(i));
        }
        cluster.crash(0);
        cluster.execute(0, b"after");
        cluster.delivered
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

/// The client proxy (§4.1): retries to all replicas after a timeout and
/// learns the new primary from the reply.
#[test]
fn client_retries_to_all_and_learns_the_view() {
    let mut cluster = Cluster::new(3, 1, 13);
    cluster.execute(0, b"first");
    assert_eq!(cluster.clients[0].view(), 0);
    cluster.crash(0);
    cluster.execute(0, b"second");
    assert_eq!(cluster.clients[0].view(), 1, "learned from the reply");
    // The next request goes straight to the new primary: one message.
    cluster.submit(0, b"third");
    assert_eq!(cluster.in_flight.len(), 1);
    assert_eq!(cluster.in_flight[0].to, Node::Replica(1));
}

/// Reference: §4.2 step 3 with §5.3's suffix-only DoViewChange. A new primary
/// whose own commit-number is behind the chosen log's fetches the missing
/// committed entries first, and leaves its own log alone until it has them.
#[test]
fn new_primary_fetches_committed_prefix_it_lacks() {
    use vr_core::message::NewState;
    let config = Config::new(7, 3);
    let now = Instant::ZERO;
    let mut primary = Replica::new(
        config.clone(),
        vr_core::ReplicaIndex(1),
        common::Recorder::default(),
        now,
    )
    .unwrap();
    let later = now + 10 * config.view_change_timeout_ns;
    let entry = |n: u64| LogEntry {
        op_number: n,
        view: 0,
        client_id: 4,
        request_number: n,
        op: op(n),
        kind: Default::default(),
    };
    primary.handle_message(
        later,
        0,
        Message::StartViewChange(StartViewChange {
            view: 1,
            promised_view: 0,
            replica: vr_core::ReplicaIndex(2),
            crash_vector: common::cv(3),
        }),
    );
    primary.handle_message(
        later,
        0,
        Message::DoViewChange(DoViewChange {
            view: 1,
            last_normal_view: 0,
            op_number: 4,
            commit_number: 3,
            log: vec![entry(4)],
            replica: vr_core::ReplicaIndex(2),
            crash_vector: common::cv(3),
        }),
    );
    assert_eq!(
        primary.status(),
        Status::ViewChange,
        "waiting for the committed prefix"
    );
    assert_eq!(primary.op_number(), 0, "its own log is untouched meanwhile");
    let asked = common::drain(&mut primary).0.into_iter().any(|a| {
        matches!(a, vr_core::Output::Send { to: vr_core::MemberId(2), message: Message::GetState(g), .. } if g.view == 1 && g.op_number == 0)
    });
    assert!(
        asked,
        "asked the chosen replica for ops after its own commit"
    );
    primary.handle_message(
        later,
        0,
        Message::NewState(NewState {
            view: 1,
            op_number: 3,
            commit_number: 3,
            log: vec![entry(1), entry(2), entry(3)],
            replica: vr_core::ReplicaIndex(2),
            checkpoint: None,
            full_commit_min: 0,
        }),
    );
    assert!(primary.is_primary());
    assert_eq!(primary.op_number(), 4);
    assert_eq!(
        primary.commit_number(),
        3,
        "executed what the quorum knew committed"
    );
    assert_eq!(primary.log(), &[entry(1), entry(2), entry(3), entry(4)][..]);
    assert_eq!(primary.service().executed.len(), 3);
}

/// Liveness under an asymmetric partition (VR-NOTES, "where implementations
/// go wrong"): the primary's messages reach the backups but nothing reaches
/// the primary. The backups keep hearing heartbeats, so only the primary can
/// notice; it gives up its view and the cluster moves on without it.
#[test]
fn primary_that_hears_nobody_steps_down() {
    let mut cluster = Cluster::new(3, 1, 14);
    cluster.execute(0, &op(0));
    cluster.filter = Box::new(|e| e.to != Node::Replica(0));
    let done = cluster.execute(0, &op(1));
    assert_eq!(&done.result[8..], &op(1)[..]);
    assert!(cluster.replicas[0].stats().primary_abdications >= 1);
    assert!(cluster.replicas[1].is_primary() || cluster.replicas[2].is_primary());
    cluster.heal();
    cluster.run_for_ms(500);
    assert_eq!(
        cluster.replicas[0].status(),
        Status::Normal,
        "the old primary rejoined"
    );
    assert_eq!(cluster.replicas[0].commit_number(), 2);
    cluster.assert_agreement();
}
