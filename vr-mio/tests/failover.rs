//! A concurrent workload survives the loss of the primary (§4.2): every
//! acknowledged operation is executed by the survivors, none twice.

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{wait_until, Cluster};
use vr_core::Status;

const CLIENTS: u128 = 4;
const OPS_PER_CLIENT: usize = 60;
/// Acknowledged operations before the primary is stopped.
const ACKS_BEFORE_STOP: usize = 40;

#[test]
fn workload_survives_primary_stop() {
    let started = Instant::now();
    let mut cluster = Cluster::start(11, 3);
    let (acks, acked) = mpsc::channel::<Vec<u8>>();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = cluster.client(1000 + c);
            let acks = acks.clone();
            std::thread::spawn(move || {
                for i in 0..OPS_PER_CLIENT {
                    let op = format!("client-{c}-op-{i}").into_bytes();
                    // request_attempts_max = 0: retried until the test's deadline.
                    let result = client.submit(op.clone()).expect("submit");
                    assert_eq!(result, op, "the service echoes its operation");
                    if acks.send(op).is_err() {
                        return; // The test gave up.
                    }
                }
            })
        })
        .collect();
    drop(acks);

    let total = CLIENTS as usize * OPS_PER_CLIENT;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut acknowledged = Vec::new();
    while acknowledged.len() < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let op = acked
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("{} of {total} acknowledged: {e}", acknowledged.len()));
        acknowledged.push(op);
        if acknowledged.len() == ACKS_BEFORE_STOP {
            let primary = cluster.replicas[0].take().expect("replica 0 runs");
            assert!(
                primary.stats().node.view == 0,
                "replica 0 is the primary of view 0"
            );
            primary.stop();
        }
    }
    for worker in workers {
        worker.join().expect("client thread");
    }

    // A view change happened and the survivors serve in it.
    let stats = cluster.replica(1).stats();
    assert!(stats.node.view >= 1, "view is {}", stats.node.view);
    // Backups execute on the next Commit heartbeat: wait for them.
    wait_until(
        Duration::from_secs(3),
        "survivors to execute every ack",
        || {
            [1, 2].iter().all(|&i| {
                let executed: HashSet<Vec<u8>> = cluster.executed(i).into_iter().collect();
                acknowledged.iter().all(|op| executed.contains(op))
            })
        },
    );
    for i in 0..3 {
        let executed = cluster.executed(i);
        let unique: HashSet<&Vec<u8>> = executed.iter().collect();
        assert_eq!(
            unique.len(),
            executed.len(),
            "replica {i} executed an op twice"
        );
    }
    // Agreement: the survivors executed the same sequence (one may lag).
    let (a, b) = (cluster.executed(1), cluster.executed(2));
    let common = a.len().min(b.len());
    assert_eq!(a[..common], b[..common], "survivors disagree on the order");
    for i in [1, 2] {
        let stats = cluster.replica(i).stats();
        assert_eq!(stats.node.status, Some(Status::Normal));
        assert!(stats.connections.iter().any(|c| c.replica.is_some()));
        eprintln!(
            "replica {i}: view {} commit {} frames_out {:?} writes {} reconnects {} dropped {}/{}",
            stats.node.view,
            stats.node.commit_number,
            stats
                .node
                .to_replicas
                .iter()
                .map(|t| t.frames_out)
                .collect::<Vec<_>>(),
            stats.writes,
            stats.reconnects,
            stats.frames_dropped_disconnected,
            stats.frames_dropped_queue_full,
        );
    }
    eprintln!("failover test took {:?}", started.elapsed());
}

/// Operations of the largest size allowed: every frame spans more than one
/// 64 KiB read, so incomplete frames are buffered and resumed.
#[test]
fn largest_operations_arrive_intact() {
    let cluster = Cluster::start(12, 3);
    let op_size = cluster.config.op_size_max as usize;
    let workers: Vec<_> = (0..3u8)
        .map(|c| {
            let mut client = cluster.client(2000 + u128::from(c));
            std::thread::spawn(move || {
                for i in 0..8u8 {
                    let op: Vec<u8> = (0..op_size)
                        .map(|k| (k as u8) ^ c.wrapping_mul(31) ^ i)
                        .collect();
                    assert_eq!(client.submit(op.clone()).expect("submit"), op);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("client thread");
    }
    wait_until(
        Duration::from_secs(3),
        "every replica to execute 24 ops",
        || (0..3).all(|i| cluster.executed(i).len() == 24),
    );
    assert_eq!(cluster.executed(0), cluster.executed(1));
    assert_eq!(cluster.executed(0), cluster.executed(2));
}
