//! Recovery (§4.3), with crash vectors (Michael et al., DISC 2017), and
//! client recovery, on the in-memory harness.

mod common;

use common::{Cluster, Node, Recorder};
use vr_core::client_table::REQUEST_NUMBERS_PER_INCARNATION;
use vr_core::message::{Message, PrepareOk};
use vr_core::{Client, ClientConfig, Config, Status};

fn op(i: u64) -> Vec<u8> {
    format!("op-{i}").into_bytes()
}

/// Reference: §4.3. A backup restarted with nothing recovers the primary's
/// state, becomes a normal backup again, and executes exactly what the
/// others executed.
#[test]
fn restarted_backup_recovers_its_state_and_serves() {
    for n in [3u8, 5] {
        let mut cluster = Cluster::new(n, 2, 11);
        for i in 0..20 {
            cluster.execute((i % 2) as usize, &op(i));
        }
        cluster.crash(2);
        cluster.execute(0, &op(20));
        cluster.restart(2, Recorder::default(), 0xfeed);
        assert_eq!(cluster.replicas[2].status(), Status::Recovering);
        cluster.run_for_ms(200);
        let recovered = &cluster.replicas[2];
        assert_eq!(recovered.status(), Status::Normal, "n={n}");
        assert_eq!(recovered.incarnation(), 1, "one recovery, one incarnation");
        assert_eq!(recovered.stats().recoveries_completed, 1);
        // Everyone learned the new incarnation.
        for r in &cluster.replicas {
            assert_eq!(r.crash_vector()[2], 1);
        }
        for i in 21..30 {
            cluster.execute((i % 2) as usize, &op(i));
        }
        cluster.run_for_ms(100);
        assert_eq!(cluster.replicas[2].commit_number(), 30);
        assert_eq!(cluster.executed(2), cluster.executed(0));
        cluster.assert_agreement();
    }
}

/// Reference: §4.3. A restarted primary cannot recover in its own view (it
/// would need its own answer); the backups change view and it recovers as a
/// backup of the new view, losing nothing that was committed.
#[test]
fn restarted_primary_recovers_as_a_backup_of_a_later_view() {
    let mut cluster = Cluster::new(3, 1, 12);
    for i in 0..10 {
        cluster.execute(0, &op(i));
    }
    let committed = cluster.executed(0);
    cluster.crash(0);
    cluster.restart(0, Recorder::default(), 7);
    for i in 10..15 {
        cluster.execute(0, &op(i));
    }
    cluster.run_for_ms(300);
    let recovered = &cluster.replicas[0];
    assert_eq!(recovered.status(), Status::Normal);
    assert!(recovered.view() >= 1);
    assert!(!recovered.is_primary());
    assert_eq!(&cluster.executed(0)[..10], &committed[..]);
    assert_eq!(cluster.executed(0).len(), 15);
    cluster.assert_agreement();
}

/// Reference: §4.3 and §4.2. A restarted primary's recovery proves, by the
/// new incarnation of its round 2, that it lost its state: its backups
/// start the view change at once rather than after their primary-silence
/// timeout (100 ms and up to 50 ms of jitter here), and it is a normal
/// backup of the next view well within one timeout (issue 18, item 8:
/// recovery speed).
#[test]
fn backups_change_view_as_soon_as_their_primary_recovers() {
    for seed in 0..4 {
        let mut cluster = Cluster::new(3, 1, 40 + seed);
        for i in 0..10 {
            cluster.execute(0, &op(i));
        }
        let committed = cluster.executed(0);
        cluster.crash(0);
        cluster.restart(0, Recorder::default(), 7 + seed);
        let mut normal_after_ms = None;
        for ms in 1..=400 {
            cluster.run_for_ms(1);
            if cluster.replicas[0].status() == Status::Normal {
                normal_after_ms = Some(ms);
                break;
            }
        }
        let ms = normal_after_ms.expect("the restarted primary recovers");
        // The view change is immediate on this network; what remains is one
        // resend of the recovery (a quarter of the 20 ms resend interval),
        // after its round 2 was answered by replicas changing view.
        assert!(ms <= 6, "seed {seed}: normal after {ms} ms");
        assert!(cluster.replicas[0].view() >= 1 && !cluster.replicas[0].is_primary());
        assert!(
            (1..3).any(|r| cluster.replicas[r].stats().view_changes_primary_restarted > 0),
            "seed {seed}: a backup changed view because its primary restarted"
        );
        assert_eq!(cluster.executed(0), committed, "seed {seed}: nothing lost");
        cluster.assert_agreement();
    }
}

/// Reference: §6 (leased reads) and §4.3. A backup that promised its
/// primary a lease keeps the promise even when the primary restarts
/// without its state (a delayed message from an earlier life of that
/// replica could pass for the restart), but leaves the view the moment the
/// promise runs out, not at its primary-silence timeout (400 ms here).
#[test]
fn with_leases_backups_leave_a_restarted_primarys_view_when_their_promise_ends() {
    let mut config = Config::new(7, 3);
    config.seed = 44;
    config.lease_duration_ns = 100_000_000;
    config.clock_drift_max_ns = 10_000_000;
    config.view_change_timeout_ns = 400_000_000;
    let mut cluster = Cluster::with_config(config, 1);
    for i in 0..5 {
        cluster.execute(0, &op(i));
    }
    cluster.crash(0);
    cluster.restart(0, Recorder::default(), 9);
    let mut left_after_ms = None;
    for ms in 1..=600 {
        cluster.run_for_ms(1);
        if (1..3).all(|r| cluster.replicas[r].view() >= 1) {
            left_after_ms = Some(ms);
            break;
        }
    }
    let ms = left_after_ms.expect("the backups leave view 0");
    // The last promise was made at the last heartbeat, at most 10 ms
    // before the crash.
    assert!((89..=101).contains(&ms), "left view 0 after {ms} ms");
    cluster.run_for_ms(100);
    assert_eq!(cluster.replicas[0].status(), Status::Normal);
    cluster.assert_agreement();
}

/// Reference: §4.3 ("waits to receive at least f + 1 RecoveryResponse
/// messages"). With another replica down, a recovering replica of three
/// hears one normal replica: not enough, so it stays recovering, takes no
/// part in the protocol, and the survivor does not commit with it.
#[test]
fn recovery_waits_for_f_plus_one_normal_answers() {
    let mut cluster = Cluster::new(3, 1, 13);
    cluster.execute(0, &op(0));
    cluster.crash(1);
    cluster.crash(2);
    cluster.restart(2, Recorder::default(), 9);
    let number = cluster.submit(0, &op(1));
    assert!(cluster.await_completion(0, number, 2_000).is_none());
    assert_eq!(cluster.replicas[2].status(), Status::Recovering);
    assert_eq!(cluster.replicas[0].commit_number(), 1);
    assert!(cluster.replicas[2].stats().messages_ignored_recovering > 0);
}

/// When every replica starts with `recover` (a new cluster, or one that lost
/// all its state at once) they find each other recovering and form view 0.
#[test]
fn a_cluster_that_starts_recovering_forms_itself() {
    let config = Config::new(7, 3);
    let mut cluster = Cluster::with_config(config, 1);
    for i in 0..3 {
        cluster.restart(i, Recorder::default(), 100 + u64::from(i));
    }
    cluster.run_for_ms(100);
    for r in &cluster.replicas {
        assert_eq!(r.status(), Status::Normal);
        assert_eq!(r.view(), 0);
    }
    cluster.execute(0, &op(1));
    cluster.run_for_ms(50);
    cluster.assert_agreement();
    assert_eq!(cluster.executed(2), vec![op(1)]);
}

/// Crash vectors: a PrepareOk that a replica sent before it crashed is not
/// counted once the primary knows of its recovery. Without this a vote from
/// before the crash could complete a quorum with votes from after it, for an
/// op the recovered replica does not hold (Michael et al., DISC 2017).
#[test]
fn a_vote_from_before_a_crash_is_not_counted_after_recovery() {
    let mut cluster = Cluster::new(3, 1, 14);
    cluster.execute(0, &op(0));
    // A PrepareOk of replica 2's first incarnation, held up in the network
    // while replica 2 crashes and recovers.
    let stale = PrepareOk {
        view: 0,
        op_number: 1,
        replica: vr_core::ReplicaIndex(2),
        timestamp_ns: 0,
        commit_number: 0,
        crash_vector: common::cv(3),
    };
    cluster.crash(2);
    cluster.restart(2, Recorder::default(), 5);
    cluster.run_for_ms(100);
    assert_eq!(cluster.replicas[2].status(), Status::Normal);
    assert_eq!(cluster.replicas[0].crash_vector()[2], 1);
    let stale_before = cluster.replicas[0].stats().messages_stale_incarnation;
    cluster.inject(
        Node::Replica(2),
        Node::Replica(0),
        Message::PrepareOk(stale),
    );
    cluster.run_for_ms(10);
    assert_eq!(
        cluster.replicas[0].stats().messages_stale_incarnation,
        stale_before + 1,
        "the old incarnation's vote was recognised and dropped"
    );
    cluster.assert_agreement();
}

/// Reference: §4.3, client recovery. A client that restarts with its old
/// identifier is told a fence above every number it used and continues
/// above it; its next request is executed, not mistaken for a duplicate.
#[test]
fn restarted_client_continues_above_its_old_request_numbers() {
    let mut cluster = Cluster::new(3, 1, 15);
    for i in 0..5 {
        cluster.execute(0, &op(i));
    }
    let config = ClientConfig::new(&cluster.config, 1000);
    cluster.clients[0] = Client::recover(config, cluster.now, 77);
    assert!(cluster.clients[0].is_recovering());
    cluster.drain_client(0);
    let answer = cluster
        .await_completion(0, 0, 1_000)
        .expect("the cluster answers the recovery query");
    let fence = REQUEST_NUMBERS_PER_INCARNATION;
    assert_eq!(answer.result[..8], fence.to_le_bytes());
    assert!(!cluster.clients[0].is_recovering());
    let number = cluster.submit(0, b"after restart");
    assert_eq!(number, fence + 1, "the first number above the fence");
    let completion = cluster.await_completion(0, number, 1_000).unwrap();
    assert!(completion.result.ends_with(b"after restart"));
    assert_eq!(cluster.executed(0).len(), 6);

    // A second recovery moves to the next block; a retried query of it
    // (the log holds it twice) is told the same fence, not fenced off.
    let config = ClientConfig::new(&cluster.config, 1000);
    cluster.completions.clear();
    cluster.clients[0] = Client::recover(config, cluster.now, 78);
    cluster.drain_client(0);
    let query = cluster.in_flight.last().unwrap().message.clone();
    cluster.inject(Node::Client(0), Node::Replica(0), query);
    let answer = cluster.await_completion(0, 0, 1_000).unwrap();
    assert_eq!(answer.result[..8], (2 * fence).to_le_bytes());
    cluster.run_for_ms(50);
    let number = cluster.submit(0, b"after second restart");
    assert_eq!(number, 2 * fence + 1);
    let completion = cluster.await_completion(0, number, 1_000).unwrap();
    assert!(completion.result.ends_with(b"after second restart"));
    cluster.assert_agreement();
}

/// Reference: §4.3, client recovery (issue 17, item 3). The paper's client
/// continues two above the latest executed request, assuming at most one
/// old request in flight. Here the old incarnation had two: r5 timed out
/// (abandoned) and r6 was still in the network when the client crashed.
/// Recovery reports 4; with "two above", the new client numbers its next
/// request 6, the old r6 executes after the recovery, and the new request
/// is answered with the old one's cached reply without running. The fence
/// makes the old r6 stale instead.
#[test]
fn old_requests_in_flight_do_not_take_the_recovered_clients_numbers() {
    let mut cluster = Cluster::new(3, 1, 16);
    for i in 0..4 {
        cluster.execute(0, &op(i));
    }
    // r5: lost, and the client gives up on it.
    let r5 = cluster.submit(0, b"old r5");
    assert_eq!(r5, 5);
    cluster.in_flight.retain(|e| e.from != Node::Client(0));
    assert_eq!(cluster.clients[0].abandon(), Some(5));
    // r6: in the network when the client crashes.
    let r6 = cluster.submit(0, b"old r6");
    assert_eq!(r6, 6);
    let held: Vec<_> = cluster
        .in_flight
        .iter()
        .filter(|e| e.from == Node::Client(0))
        .cloned()
        .collect();
    cluster.in_flight.retain(|e| e.from != Node::Client(0));
    assert_eq!(held.len(), 1);

    let config = ClientConfig::new(&cluster.config, 1000);
    cluster.clients[0] = Client::recover(config, cluster.now, 99);
    cluster.drain_client(0);
    cluster
        .await_completion(0, 0, 1_000)
        .expect("the cluster answers the recovery query");
    // The old r6 arrives now, after the recovery executed.
    for e in held {
        cluster.inject(e.from, e.to, e.message);
    }
    cluster.run_for_ms(50);
    let number = cluster.submit(0, b"new request");
    let completion = cluster.await_completion(0, number, 1_000).unwrap();
    assert!(
        completion.result.ends_with(b"new request"),
        "the new request ran (got the reply of {:?})",
        String::from_utf8_lossy(&completion.result)
    );
    let executed = cluster.executed(0);
    assert!(executed.iter().any(|e| e.ends_with(b"new request")));
    assert!(
        !executed.iter().any(|e| e.ends_with(b"old r6")),
        "the old incarnation's request was fenced"
    );
    cluster.assert_agreement();
}

/// Reference: §4.3 with crash vectors, seven replicas (f = 3). Round 1 of a
/// recovery must learn the replica's latest incarnation from f + 1 others
/// that remember it: a replica that is itself recovering has lost its crash
/// vector, and its answer says nothing. Here r6's first recovery is known
/// to r0..r3 only; r1 and r2 then restart (and stay recovering); r6
/// restarts again and first hears r1, r2, r4 and r5 — f + 1 answers, none
/// of which knows incarnation 1. Counting them would pick incarnation 1
/// again, and votes r6 sent before this crash would count as current. It
/// must wait for f + 1 answers from replicas that are not recovering.
#[test]
fn round_one_does_not_count_answers_from_recovering_replicas() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut cluster = Cluster::new(7, 1, 17);
    for i in 0..5 {
        cluster.execute(0, &op(i));
    }
    // r6's first recovery, heard by r0..r3 only.
    let cut: Rc<RefCell<Vec<(u8, u8)>>> = Rc::new(RefCell::new(Vec::new()));
    let links = cut.clone();
    cluster.filter = Box::new(move |e| match (e.from, e.to) {
        (Node::Replica(a), Node::Replica(b)) => !links
            .borrow()
            .iter()
            .any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a)),
        _ => true,
    });
    cut.borrow_mut().extend([(6, 4), (6, 5)]);
    cluster.crash(6);
    cluster.restart(6, Recorder::default(), 1);
    cluster.run_for_ms(300);
    assert_eq!(cluster.replicas[6].status(), Status::Normal);
    assert_eq!(cluster.replicas[6].incarnation(), 1);
    for r in [4, 5] {
        assert_eq!(cluster.replicas[r].crash_vector()[6], 0, "r{r} never heard");
    }
    // r1 and r2 restart and stay recovering: they hear nobody yet (an
    // answer from the running r6 would tell them its incarnation).
    for r in [1u8, 2] {
        for other in [0u8, 3, 4, 5, 6] {
            cut.borrow_mut().push((r, other));
        }
        cluster.crash(r);
        cluster.restart(r, Recorder::default(), 10 + u64::from(r));
    }
    cluster.run_for_ms(50);
    // r6 restarts and hears only r1, r2 (recovering), r4 and r5 (unaware).
    cut.borrow_mut().extend([(6, 0), (6, 3)]);
    cut.borrow_mut()
        .retain(|&(a, b)| !matches!((a, b), (1, 6) | (2, 6) | (6, 4) | (6, 5)));
    cluster.crash(6);
    cluster.restart(6, Recorder::default(), 2);
    cluster.run_for_ms(200);
    assert_eq!(cluster.replicas[6].status(), Status::Recovering);
    assert_ne!(
        cluster.replicas[6].incarnation(),
        1,
        "round 1 chose the incarnation of the previous recovery again"
    );
    // With r0 and r3 heard, it learns incarnation 1 and goes above it.
    cut.borrow_mut().retain(|&(a, b)| a != 6 && b != 6);
    cluster.run_for_ms(500);
    assert_eq!(cluster.replicas[6].status(), Status::Normal);
    assert_eq!(cluster.replicas[6].incarnation(), 2);
}

/// Reference: §4.3 client recovery with §6 leased reads (issue 17, item
/// 4). A recovery query must go through the log even when the service
/// takes its op for a read and the primary holds a lease: answered from
/// the state under the lease, it would tell the client nothing of its
/// numbers (and fence nothing). The Recorder reads ops that begin with
/// "read"; this nonce does.
#[test]
fn a_recovery_query_is_never_a_leased_read() {
    let mut config = Config::new(7, 3);
    config.seed = 18;
    config.lease_duration_ns = 50_000_000;
    config.clock_drift_max_ns = 5_000_000;
    let mut cluster = Cluster::with_config(config, 1);
    for i in 0..5 {
        cluster.execute(0, &op(i));
    }
    cluster.run_for_ms(30); // heartbeats: the backups echo a timestamp
    cluster.execute(0, b"read");
    let leased_before = cluster.replicas[0].stats().leased_reads;
    assert_eq!(leased_before, 1, "the primary holds a lease");
    let client_config = ClientConfig::new(&cluster.config, 1000);
    let nonce = u64::from_le_bytes(*b"readread");
    cluster.clients[0] = Client::recover(client_config, cluster.now, nonce);
    cluster.drain_client(0);
    let answer = cluster.await_completion(0, 0, 1_000).unwrap();
    assert_eq!(cluster.replicas[0].stats().leased_reads, leased_before);
    assert_eq!(
        answer.result[..8],
        REQUEST_NUMBERS_PER_INCARNATION.to_le_bytes()
    );
    let number = cluster.submit(0, b"after restart");
    assert_eq!(number, REQUEST_NUMBERS_PER_INCARNATION + 1);
    cluster.await_completion(0, number, 1_000).unwrap();
}

/// Reference: §4.3 with crash vectors (issue 17, item 6). A replica that
/// another knows by a later incarnation than its own (an earlier life's
/// unfinished round 2 reached that replica after this life chose its
/// number) moves above it: otherwise every vote it sends is dropped as
/// stale there for ever (vr-sim seed 2016416). It forgot nothing, so the
/// cluster goes on serving.
#[test]
fn a_replica_known_by_a_later_incarnation_moves_above_it() {
    let mut cluster = Cluster::new(3, 1, 19);
    cluster.execute(0, &op(0));
    assert_eq!(cluster.replicas[0].incarnation(), 0);
    // r1 recorded incarnation 2 of r0 from a lingering Recovery.
    let mut crash_vector = common::cv(3);
    crash_vector[0] = 2;
    let vote = PrepareOk {
        view: 0,
        op_number: 1,
        replica: vr_core::ReplicaIndex(1),
        timestamp_ns: 0,
        commit_number: 1,
        crash_vector,
    };
    cluster.inject(Node::Replica(1), Node::Replica(0), Message::PrepareOk(vote));
    cluster.run_for_ms(10);
    assert_eq!(cluster.replicas[0].incarnation(), 3, "above the one known");
    assert_eq!(cluster.replicas[0].stats().incarnations_raised, 1);
    for i in 1..4 {
        cluster.execute(0, &op(i));
    }
    cluster.assert_agreement();
}
