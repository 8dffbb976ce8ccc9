//! Clean shutdown: stopping every replica ends its thread and releases its
//! port. In its own test binary so that no other test's threads are around
//! when it counts them.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{init_tracing, lock, start_cluster, wait_until};
use vr_core::ClientConfig;
use vr_glommio::BlockingClient;

/// The distinct names of this process's threads that start with `prefix`.
fn threads_named(prefix: &str) -> Vec<String> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("list this process's threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn stopped_replicas_end_their_threads_and_release_their_ports() {
    init_tracing();
    let mut cluster = start_cluster(31, 3);
    // Traffic first, so that peer and client connections are open.
    let config = ClientConfig::new(&cluster.config, 5);
    let mut client =
        BlockingClient::connect(cluster.addresses.clone(), config, cluster.config.cluster)
            .expect("client");
    assert_eq!(client.submit(b"op".to_vec()), Ok(b"op".to_vec()));
    // glommio names an executor's helper thread after the executor.
    let replica_threads = threads_named("vr-replica");
    assert_eq!(replica_threads.len(), 3, "{replica_threads:?}");

    // `stop` returns once the executor's thread has been joined.
    for replica in cluster.replicas.iter_mut() {
        replica.take().expect("runs").stop();
    }
    drop(client);
    assert_eq!(lock(&cluster.executed[0]).len(), 1);
    // glommio's helper thread (its blocking-call pool) notices that its
    // executor is gone on its own, a moment later.
    wait_until(
        Duration::from_secs(2),
        "every adapter thread has ended",
        || threads_named("vr-").is_empty(),
    );

    // A replica closes its listener before `stop` returns, so binding works
    // at once; the retries only guard against a kernel that releases the
    // port lazily.
    let deadline = Instant::now() + Duration::from_secs(2);
    for address in &cluster.addresses {
        loop {
            match TcpListener::bind(address) {
                Ok(_) => break,
                Err(error) => {
                    assert!(Instant::now() < deadline, "{address} still taken: {error}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}
