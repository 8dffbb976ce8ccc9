//! A view change under a concurrent workload (§4.2): stopping the primary
//! loses no acknowledged operation and executes none twice.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{init_tracing, lock, start_cluster, wait_until};
use glommio::{LocalExecutorBuilder, Placement};
use vr_core::{ClientConfig, Config, Status};
use vr_glommio::Client;

const CLIENTS: usize = 4;
const OPS_PER_CLIENT: usize = 100;
const STOP_PRIMARY_AFTER_OPS: usize = 60;

/// Submits `OPS_PER_CLIENT` unique operations one after the other, retrying
/// forever, and records each acknowledged one.
async fn run_client(
    index: usize,
    addresses: Vec<SocketAddr>,
    config: Config,
    acknowledged: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut client_config = ClientConfig::new(&config, 1000 + index as u128);
    client_config.request_attempts_max = 0;
    let mut client = Client::connect(addresses, client_config, config.cluster)
        .await
        .expect("one address per replica");
    for op_index in 0..OPS_PER_CLIENT {
        let op = format!("client {index} op {op_index}").into_bytes();
        let result = client.submit(op.clone()).await;
        assert_eq!(result.as_ref(), Ok(&op), "the service echoes");
        lock(&acknowledged).push(op);
    }
    client.close().await;
}

/// Whether one sequence is a prefix of the other: replicas execute the same
/// operations in the same order.
fn agree(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    let common = a.len().min(b.len());
    a[..common] == b[..common]
}

#[test]
fn stopping_the_primary_mid_workload_loses_no_acknowledged_op() {
    init_tracing();
    let mut cluster = start_cluster(11, 3);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let (done, finished) = sync_channel(1);
    let workload = {
        let (addresses, config) = (cluster.addresses.clone(), cluster.config.clone());
        let acknowledged = acknowledged.clone();
        LocalExecutorBuilder::new(Placement::Unbound)
            .name("vr-test-clients")
            .io_memory(64 * 1024)
            .spawn(move || async move {
                let clients: Vec<_> = (0..CLIENTS)
                    .map(|index| {
                        let client = run_client(
                            index,
                            addresses.clone(),
                            config.clone(),
                            acknowledged.clone(),
                        );
                        glommio::spawn_local(client)
                    })
                    .collect();
                for client in clients {
                    client.await;
                }
                let _ = done.send(());
            })
            .expect("start the clients' executor")
    };

    wait_until(Duration::from_secs(10), "some ops are acknowledged", || {
        lock(&acknowledged).len() >= STOP_PRIMARY_AFTER_OPS
    });
    let primary = cluster.replicas[0].take().expect("replica 0 runs");
    primary.stop();
    let acknowledged_at_stop = lock(&acknowledged).len();
    assert!(
        acknowledged_at_stop < CLIENTS * OPS_PER_CLIENT,
        "the primary stopped while the workload ran"
    );

    match finished.recv_timeout(Duration::from_secs(20)) {
        Ok(()) => workload.join().expect("the clients' executor"),
        Err(RecvTimeoutError::Disconnected) => {
            // The executor ended without finishing: a client panicked.
            workload.join().expect("the clients finish");
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("the workload did not finish after the view change")
        }
    }
    let acknowledged = lock(&acknowledged).clone();
    assert_eq!(acknowledged.len(), CLIENTS * OPS_PER_CLIENT);

    // A new view formed without replica 0.
    for replica in [1, 2] {
        let stats = cluster.replicas[replica].as_ref().expect("runs").stats();
        assert!(
            stats.node.view >= 1,
            "replica {replica} is in view {}",
            stats.node.view
        );
    }
    // Backups execute an op once they learn that it committed, which
    // follows the reply; give them a heartbeat or two.
    for replica in [1, 2] {
        wait_until(
            Duration::from_secs(5),
            "survivors executed every acknowledged op",
            || {
                let executed: HashSet<_> =
                    lock(&cluster.executed[replica]).iter().cloned().collect();
                acknowledged.iter().all(|op| executed.contains(op))
            },
        );
        let stats = cluster.replicas[replica].as_ref().expect("runs").stats();
        assert_eq!(stats.node.status, Some(Status::Normal));
    }
    // Requests of concurrent clients leave together: in one Prepare when
    // they reached the new primary in one round of its executor (batching
    // across connections), or else in one write when their Prepares were
    // queued together. (That a write takes every queued frame is checked
    // on its own in `connection.rs`.)
    let stats = cluster.replicas[1].as_ref().expect("runs").stats();
    let to_backup = stats
        .connections
        .iter()
        .find(|connection| connection.peer == Some(vr_core::MemberId(2)))
        .expect("the new primary is connected to its backup");
    let (batches, entries) = (
        stats.node.replica.prepare_batches,
        stats.node.replica.prepare_batch_entries,
    );
    assert!(
        entries > batches || to_backup.frames_out > to_backup.writes,
        "no Prepare carried two requests ({entries} entries in {batches} Prepares) \
         and no write two frames: {to_backup:?}"
    );
    eprintln!(
        "new primary: {entries} entries in {batches} Prepares; to backup: {} frames in {} writes",
        to_backup.frames_out, to_backup.writes
    );

    let logs: Vec<_> = cluster
        .executed
        .iter()
        .map(|log| lock(log).clone())
        .collect();
    for (replica, log) in logs.iter().enumerate() {
        let unique: HashSet<_> = log.iter().collect();
        assert_eq!(
            unique.len(),
            log.len(),
            "replica {replica} executed an op twice"
        );
    }
    for a in 0..logs.len() {
        for b in a + 1..logs.len() {
            assert!(
                agree(&logs[a], &logs[b]),
                "replicas {a} and {b} executed different sequences"
            );
        }
    }
    eprintln!(
        "{acknowledged_at_stop} of {} ops acknowledged when the primary stopped",
        acknowledged.len()
    );
}
