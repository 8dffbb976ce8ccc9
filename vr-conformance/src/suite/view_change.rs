//! A primary stopped mid-workload: the survivors change view and keep every
//! acknowledged operation, executed once and in the same order (§4.1,
//! §4.2). And frames larger than one read arrive whole.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vr_core::{ClientConfig, Status};

use crate::harness::{shared, test_config, wait_until, within, Cluster, TestClient};
use crate::Runtime;

const CLIENTS: u128 = 4;
const OPS_PER_CLIENT: usize = 60;
/// Acknowledged operations before the primary is stopped.
const ACKS_BEFORE_STOP: usize = 40;

/// Four clients write concurrently; the primary of view 0 stops after 40
/// acknowledgements. A new view forms (§4.2), the workload finishes in it,
/// and every acknowledged operation is in the survivors' state, none
/// executed twice, all replicas' sequences agreeing (§4.1: the primary
/// replies only once f backups hold the op).
pub fn cluster_survives_primary_stop_under_load<R: Runtime>() {
    let _shared = shared();
    let started = Instant::now();
    let mut cluster = Cluster::<R>::start(test_config(11, 3));
    let (acks, acked) = mpsc::channel::<Vec<u8>>();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            // request_attempts_max = 0: retried until the test's deadline.
            let config = ClientConfig::new(&cluster.config, 1000 + c);
            let mut client = R::connect(cluster.addresses.clone(), config, cluster.config.cluster)
                .expect("a client connects");
            let acks = acks.clone();
            std::thread::spawn(move || {
                for i in 0..OPS_PER_CLIENT {
                    let op = format!("client {c} op {i}").into_bytes();
                    let result = R::submit(&mut client, op.clone()).expect("retries forever");
                    assert_eq!(result, op, "the service echoes the operation");
                    if acks.send(op).is_err() {
                        return; // The test gave up.
                    }
                }
            })
        })
        .collect();
    drop(acks);

    let total = CLIENTS as usize * OPS_PER_CLIENT;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acknowledged = Vec::new();
    let mut acknowledged_at_stop = 0;
    while acknowledged.len() < total {
        let left = deadline.saturating_duration_since(Instant::now());
        match acked.recv_timeout(left) {
            Ok(op) => acknowledged.push(op),
            Err(error) => {
                // Where each replica that runs stands, for the diagnosis.
                let standing: Vec<_> = (0..3)
                    .filter(|&i| cluster.replicas[i].is_some())
                    .map(|i| {
                        let node = cluster.stats(i).node;
                        let at = (node.view, node.status, node.op_number, node.commit_number);
                        (i, at, cluster.executed(i).len())
                    })
                    .collect();
                panic!(
                    "{}: {} of {total} acknowledged: {error}; replica, \
                     (view, status, op, commit), executed: {standing:?}",
                    R::NAME,
                    acknowledged.len()
                )
            }
        }
        if acknowledged.len() == ACKS_BEFORE_STOP {
            let before = cluster.stats(0);
            assert_eq!(
                (before.node.view, before.node.status),
                (0, Some(Status::Normal)),
                "replica 0 is the primary of view 0"
            );
            assert!(before.node.commit_number > 0, "it committed ops");
            let primary = cluster.replicas[0].take().expect("replica 0 runs");
            primary.stop();
            acknowledged_at_stop = acknowledged.len();
        }
    }
    for worker in workers {
        if let Err(panic) = worker.join() {
            std::panic::resume_unwind(panic);
        }
    }
    assert!(
        acknowledged_at_stop > 0 && acknowledged_at_stop < total,
        "the primary stopped while the workload ran"
    );

    // A new view formed without replica 0, and the survivors serve in it.
    for i in [1, 2] {
        wait_until(
            Duration::from_secs(5),
            &format!("replica {i} is in normal status in a later view"),
            || {
                let node = cluster.stats(i).node;
                node.view >= 1 && node.status == Some(Status::Normal)
            },
        );
    }
    // Backups execute an op once they learn that it committed, which
    // follows the reply: give them a heartbeat or two.
    for i in [1, 2] {
        wait_until(
            Duration::from_secs(5),
            &format!("replica {i} executed every acknowledged op"),
            || {
                let executed: HashSet<Vec<u8>> = cluster.executed(i).into_iter().collect();
                acknowledged.iter().all(|op| executed.contains(op))
            },
        );
    }
    let logs: Vec<_> = (0..3).map(|i| cluster.executed(i)).collect();
    for (i, log) in logs.iter().enumerate() {
        let unique: HashSet<&Vec<u8>> = log.iter().collect();
        assert_eq!(unique.len(), log.len(), "replica {i} executed an op twice");
    }
    // Agreement: every replica executed a prefix of one sequence (a
    // survivor may lag, and replica 0 stopped early).
    for a in 0..logs.len() {
        for b in a + 1..logs.len() {
            let common = logs[a].len().min(logs[b].len());
            assert!(
                logs[a][..common] == logs[b][..common],
                "replicas {a} and {b} executed different sequences"
            );
        }
    }

    // The new primary: replica 1 in view 1, or replica 2 if a contended
    // view change went on to view 2. The other survivor is its backup.
    let (primary, backup) = if cluster.stats(1).node.primary {
        (1, vr_core::MemberId(2))
    } else {
        (2, vr_core::MemberId(1))
    };
    let stats = cluster.stats(primary);
    assert!(stats.node.primary, "a survivor is the primary: {stats:?}");
    assert!(stats.node.frames_in > 0 && stats.connections_accepted > 0);
    assert!(
        stats
            .inbound
            .iter()
            .any(|c| c.bytes_in > 0 && c.frames_in != Some(0)),
        "traffic is counted per connection: {stats:?}"
    );
    assert_eq!(stats.connections_closed_bad_input, 0);
    if let Some(outbound) = &stats.outbound {
        assert!(
            outbound.iter().any(|c| c.member == backup),
            "the new primary holds a connection to its backup: {outbound:?}"
        );
    }
    // Requests of concurrent clients leave together: in one Prepare when
    // they reached the new primary in one round of its loop (batching
    // across connections), or else in one write when their Prepares were
    // queued together.
    let (batches, entries) = (
        stats.node.replica.prepare_batches,
        stats.node.replica.prepare_batch_entries,
    );
    let coalesced_write = stats.outbound.iter().flatten().any(|c| {
        c.member == backup && matches!((c.frames_out, c.writes), (Some(f), Some(w)) if f > w)
    });
    assert!(
        entries > batches || coalesced_write,
        "no Prepare carried two requests ({entries} entries in {batches} Prepares) \
         and no write two frames: {:?}",
        stats.outbound
    );
    eprintln!(
        "{}: {acknowledged_at_stop} of {total} acknowledged at the stop; new primary \
         {primary}: {entries} entries in {batches} Prepares; took {:?}",
        R::NAME,
        started.elapsed()
    );
}

/// Operations of the largest size allowed: every frame spans more than one
/// 64 KiB read, so incomplete frames are buffered and resumed; every
/// replica executes them whole and in one order (§4.1).
pub fn largest_operations_arrive_intact<R: Runtime>() {
    let _shared = shared();
    let cluster = Cluster::<R>::start(test_config(12, 3));
    let op_size = cluster.config.op_size_max as usize;
    // The adapters read at most 64 KiB at a time.
    assert!(
        op_size + vr_core::codec::HEADER_SIZE > 64 * 1024,
        "a frame of one op spans more than one read"
    );
    let workers: Vec<_> = (0..3u8)
        .map(|c| {
            let mut client: TestClient<R> = cluster.client(2000 + u128::from(c));
            std::thread::spawn(move || {
                for i in 0..8u8 {
                    let op: Vec<u8> = (0..op_size)
                        .map(|k| (k as u8) ^ c.wrapping_mul(31) ^ i)
                        .collect();
                    assert_eq!(client.submit(&op).expect("retries forever"), op);
                }
            })
        })
        .collect();
    within(Duration::from_secs(30), "the clients finish", move || {
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    wait_until(
        Duration::from_secs(5),
        "every replica executed 24 ops",
        || (0..3).all(|i| cluster.executed(i).len() == 24),
    );
    assert_eq!(cluster.executed(0), cluster.executed(1));
    assert_eq!(cluster.executed(0), cluster.executed(2));
}

/// §4.1–4.2: while the primary is up, it keeps its backups from starting a
/// view change, by Prepares under load and by Commit messages when idle —
/// from its start, before any client has spoken. A cluster that sat idle
/// for several view-change timeouts, served a request, and sat idle again
/// is still in view 0 with the same primary.
pub fn an_idle_cluster_keeps_its_view<R: Runtime>() {
    let _shared = shared();
    let cluster = Cluster::<R>::start(test_config(12, 3));
    // Five view-change timeouts of idleness.
    let idle = Duration::from_nanos(cluster.config.view_change_timeout_ns * 5);
    let assert_view_0 = |when: &str| {
        for i in 0..3 {
            let stats = cluster.stats(i);
            assert_eq!(
                (stats.node.view, stats.node.status),
                (0, Some(Status::Normal)),
                "{}: {when}, replica {i} left view 0 though the primary never stopped: {:?}",
                R::NAME,
                stats.node.replica
            );
        }
    };
    std::thread::sleep(idle);
    assert_view_0("idle from the start");
    let mut client = cluster.client(1);
    assert_eq!(client.submit(b"one"), Ok(b"one".to_vec()));
    std::thread::sleep(idle);
    assert_eq!(client.submit(b"two"), Ok(b"two".to_vec()));
    assert_view_0("idle after a request");
}
