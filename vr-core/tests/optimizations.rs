//! The optimizations of §6: batching, leased reads at the primary, and
//! reads at backups, on single replicas and the in-memory harness.

mod common;

use common::{Cluster, Node, Recorder};
use vr_core::message::{Message, Request};
use vr_core::{Config, Instant, Output, Replica};

fn request(client: u128, number: u64, op: &[u8]) -> Message {
    Message::Request(Request {
        client_id: client,
        request_number: number,
        op: op.to_vec(),
    })
}

/// Prepares sent by `replica` once the timers due at `now` fired, as
/// (destination, entry count).
fn prepares(replica: &mut Replica<Recorder>, now: Instant) -> Vec<(u8, usize)> {
    only_prepares(common::outputs(replica, now))
}

fn only_prepares(outputs: Vec<Output>) -> Vec<(u8, usize)> {
    outputs
        .into_iter()
        .filter_map(|output| match output {
            Output::Send {
                to,
                message: Message::Prepare(p),
                ..
            } => Some((to.0, p.entries.len())),
            _ => None,
        })
        .collect()
}

/// Reference: §6 ("batching"). Requests that reach the primary in one go
/// (fed before the embedding fires the batch timer) leave in one Prepare
/// per backup, cut at `batch_ops_max`; with `batch_ops_max = 1` each request has
/// its own Prepare, as in §4.1.
#[test]
fn requests_that_arrive_together_share_a_prepare() {
    for (batch_ops_max, per_backup) in [(64u32, vec![10]), (4, vec![4, 4, 2]), (1, vec![1; 10])] {
        let mut config = Config::new(7, 3);
        config.batch_ops_max = batch_ops_max;
        let now = Instant::ZERO;
        let mut primary =
            Replica::new(config, vr_core::ReplicaIndex(0), Recorder::default(), now).unwrap();
        for i in 0..10u64 {
            primary.handle_message(now, 0, request(100 + u128::from(i), 1, b"w"));
        }
        let sent = prepares(&mut primary, now);
        for backup in [1u8, 2] {
            let sizes: Vec<usize> = sent
                .iter()
                .filter(|(to, _)| *to == backup)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(sizes, per_backup, "batch_ops_max {batch_ops_max}");
        }
        assert_eq!(primary.stats().prepare_batch_entries, 10);
    }
}

/// With `batch_delay_ns`, a batch that is not full waits for the delay (or
/// for more requests); with the default of 0 a lone request leaves at once.
#[test]
fn a_batch_delay_holds_a_partial_batch_until_it_expires() {
    let mut config = Config::new(7, 3);
    config.batch_delay_ns = 1_000_000;
    let mut primary = Replica::new(
        config,
        vr_core::ReplicaIndex(0),
        Recorder::default(),
        Instant::ZERO,
    )
    .unwrap();
    primary.handle_message(Instant::ZERO, 0, request(1, 1, b"w"));
    assert!(
        prepares(&mut primary, Instant::ZERO).is_empty(),
        "held for the delay"
    );
    assert_eq!(primary.poll_timeout(), Some(Instant::from_nanos(1_000_000)));
    let later = Instant::from_nanos(1_000_000);
    assert_eq!(prepares(&mut primary, later), vec![(1, 1), (2, 1)]);
}

/// Reference: §6 ("batching"). Without a delay the batch is an explicit
/// timer due at the instant its first request arrived: draining the
/// outputs sends nothing and changes nothing (`poll_output` is a pure
/// drain), the timer then sends the batch; an embedding that fires timers
/// after every input sends one Prepare per request instead.
#[test]
fn the_batch_timer_is_due_at_once_and_draining_never_sends_the_batch() {
    let config = Config::new(7, 3);
    let at = Instant::from_nanos(5_000);
    let mut primary = Replica::new(
        config.clone(),
        vr_core::ReplicaIndex(0),
        Recorder::default(),
        Instant::ZERO,
    )
    .unwrap();
    primary.handle_message(at, 0, request(1, 1, b"w"));
    primary.handle_message(at, 0, request(2, 1, b"w"));
    let (drained, deadline) = common::drain(&mut primary);
    assert!(only_prepares(drained).is_empty(), "a drain sends no batch");
    assert_eq!(deadline, Some(at), "the batch timer is due at once");
    assert_eq!(
        common::drain(&mut primary),
        (vec![], Some(at)),
        "draining again changes nothing"
    );
    primary.handle_timeout(at);
    assert_eq!(prepares(&mut primary, at), vec![(1, 2), (2, 2)]);

    // Timers fired after each input: one Prepare per request.
    let mut primary = Replica::new(
        config,
        vr_core::ReplicaIndex(0),
        Recorder::default(),
        Instant::ZERO,
    )
    .unwrap();
    primary.handle_message(at, 0, request(1, 1, b"w"));
    let first = prepares(&mut primary, at);
    primary.handle_message(at, 0, request(2, 1, b"w"));
    let second = prepares(&mut primary, at);
    assert_eq!(
        (first, second),
        (vec![(1, 1), (2, 1)], vec![(1, 1), (2, 1)])
    );
}

/// Batched ops commit, execute once each in order, and are answered per
/// request, through a view change too.
#[test]
fn batched_ops_commit_and_survive_a_view_change() {
    let mut config = Config::new(7, 3);
    config.batch_ops_max = 8;
    let mut cluster = Cluster::with_config(config, 6);
    for round in 0..5 {
        let numbers: Vec<(usize, u64)> = (0..6)
            .map(|c| (c, cluster.submit(c, format!("op-{round}-{c}").as_bytes())))
            .collect();
        for (c, n) in numbers {
            cluster.await_completion(c, n, 2_000).expect("completes");
        }
    }
    cluster.crash(0);
    for c in 0..6 {
        cluster.execute(c, b"after");
    }
    cluster.run_for_ms(50);
    assert_eq!(cluster.executed(1).len(), 36);
    cluster.assert_agreement();
}

fn lease_config() -> Config {
    let mut config = Config::new(7, 3);
    config.lease_duration_ns = 50_000_000;
    config.clock_drift_max_ns = 5_000_000;
    config
}

/// Reference: §6 ("leases"). A primary holding a lease answers a read-only
/// operation from its state, without a Prepare; with leases off the read
/// goes through the log.
#[test]
fn a_primary_with_a_lease_answers_reads_without_the_log() {
    for leases in [true, false] {
        let mut config = lease_config();
        if !leases {
            config.lease_duration_ns = 0;
        }
        let mut cluster = Cluster::with_config(config, 1);
        cluster.execute(0, b"write");
        cluster.run_for_ms(30); // heartbeats: the backups echo a timestamp
        let op_number = cluster.replicas[0].op_number();
        let read = cluster.execute(0, b"read");
        if leases {
            assert_eq!(read.result, 1u64.to_le_bytes(), "sees the write");
            assert_eq!(cluster.replicas[0].stats().leased_reads, 1);
            assert_eq!(cluster.replicas[0].op_number(), op_number, "no log entry");
        } else {
            assert_eq!(cluster.replicas[0].stats().leased_reads, 0);
            assert_eq!(
                cluster.replicas[0].op_number(),
                op_number + 1,
                "a log entry"
            );
            assert_eq!(&read.result[..8], &2u64.to_le_bytes(), "executed as op 2");
        }
    }
}

/// Reference: §6 ("leases"). A primary cut off from its backups keeps
/// answering leased reads only until its lease ends; the backups, having
/// promised, do not start a view change before their promise ends, which is
/// later. So when the new view forms the old primary serves no more leased
/// reads: none of its answers can miss a write of the new view.
#[test]
fn a_deposed_primary_stops_leased_reads_before_a_new_view_forms() {
    // A lease longer than the view-change timeout, so that the backups'
    // promise is what holds the view change back.
    let mut config = lease_config();
    config.lease_duration_ns = 300_000_000;
    let mut cluster = Cluster::with_config(config, 1);
    cluster.execute(0, b"write");
    cluster.run_for_ms(30);
    cluster.filter = Box::new(|e| e.from != Node::Replica(0) && e.to != Node::Replica(0));
    let cut_at = cluster.now;
    let mut last_leased_read_at = cut_at;
    let mut new_view_at = None;
    for step in 0..800u64 {
        // A client read reaches the old primary every millisecond.
        let before = cluster.replicas[0].stats().leased_reads;
        cluster.replicas[0].handle_message(cluster.now, 0, request(9, 1000 + step, b"read"));
        common::drain(&mut cluster.replicas[0]);
        if cluster.replicas[0].stats().leased_reads > before {
            last_leased_read_at = cluster.now;
        }
        if new_view_at.is_none()
            && cluster.replicas[1].view() >= 1
            && cluster.replicas[1].is_primary()
        {
            new_view_at = Some(cluster.now);
        }
        cluster.run_for_ms(1);
    }
    let new_view_at = new_view_at.expect("a new view formed");
    assert!(
        last_leased_read_at > cut_at,
        "the old primary served leased reads for a while"
    );
    assert!(
        last_leased_read_at < new_view_at,
        "leased read at {last_leased_read_at:?} after the new view formed at {new_view_at:?}"
    );
    let deferred: u64 = cluster.replicas[1..]
        .iter()
        .map(|r| r.stats().view_changes_deferred_by_lease)
        .sum();
    assert!(deferred > 0, "the backups kept their promise");
}

/// A new primary serves no leased read until it has committed the log it
/// started its view with (ops the old primary may have acknowledged).
#[test]
fn a_new_primary_leases_only_after_committing_its_view_start() {
    let mut cluster = Cluster::with_config(lease_config(), 1);
    cluster.execute(0, b"write");
    cluster.crash(0);
    cluster.run_for_ms(400);
    assert!(cluster.replicas[1].is_primary());
    let read = cluster.execute(0, b"read");
    assert_eq!(read.result, 1u64.to_le_bytes());
    cluster.run_for_ms(30);
    let read = cluster.execute(0, b"read");
    assert!(read.result >= 1u64.to_le_bytes().to_vec());
    assert!(cluster.replicas[1].stats().leased_reads >= 1);
}

/// Reference: §6 ("reads at backups"). A read at a backup reflects at least
/// every op the client has seen (its own writes): a lagging backup waits
/// until it has executed them; answers never go backwards for a client.
#[test]
fn a_read_at_a_lagging_backup_waits_for_the_clients_writes() {
    let mut cluster = Cluster::new(3, 1, 21);
    cluster.execute(0, b"w1");
    // Backup 2 stops hearing anything for a while.
    cluster.filter = Box::new(|e| e.to != Node::Replica(2) || matches!(e.from, Node::Client(_)));
    let write = cluster.execute(0, b"w2");
    assert_eq!(cluster.clients[0].op_number_seen(), write.op_number);
    let lagging_commit = cluster.replicas[2].commit_number();
    assert!(lagging_commit < write.op_number);
    let now = cluster.now;
    let number = cluster.clients[0]
        .read_at(now, vr_core::ReplicaIndex(2), b"read".to_vec())
        .unwrap();
    cluster.drain_client(0);
    assert!(
        cluster.await_completion(0, number, 20).is_none(),
        "the backup does not answer from a state older than the client's write"
    );
    cluster.heal();
    let read = cluster
        .await_completion(0, number, 2_000)
        .expect("answered after catching up");
    assert!(read.op_number >= write.op_number);
    assert_eq!(read.result, 2u64.to_le_bytes(), "sees both writes");
    assert!(cluster.replicas[2].stats().backup_reads >= 1);
    // Monotonic: a read at the other backup is no older.
    let now = cluster.now;
    let number = cluster.clients[0]
        .read_at(now, vr_core::ReplicaIndex(1), b"read".to_vec())
        .unwrap();
    cluster.drain_client(0);
    let again = cluster.await_completion(0, number, 2_000).unwrap();
    assert!(again.op_number >= read.op_number);
}

/// A replica restarted without its memory keeps the lease promise it may
/// have given before the crash: for a lease from its restart it joins no
/// view change, so a recovery cannot cut an old primary's lease short.
#[test]
fn a_recovered_replica_keeps_its_lease_promise() {
    let mut config = lease_config();
    config.lease_duration_ns = 300_000_000;
    let mut cluster = Cluster::with_config(config, 1);
    cluster.execute(0, b"write");
    cluster.crash(2);
    cluster.restart(2, Recorder::default(), 3);
    cluster.run_for_ms(20);
    assert_eq!(cluster.replicas[2].status(), vr_core::Status::Normal);
    let crash_vector = cluster.replicas[1].crash_vector().iter().copied().collect();
    cluster.inject(
        Node::Replica(1),
        Node::Replica(2),
        Message::StartViewChange(vr_core::message::StartViewChange {
            view: 5,
            promised_view: 0,
            replica: vr_core::ReplicaIndex(1),
            crash_vector,
        }),
    );
    cluster.run_for_ms(1);
    assert_eq!(cluster.replicas[2].view(), 0, "did not join");
    assert!(cluster.replicas[2].stats().view_changes_deferred_by_lease > 0);
}
