//! Clean shutdown: stopping a replica ends its threads and releases its
//! port; a client gives up after `request_attempts_max` attempts.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use vr_core::node::ReplicaOptions;
use vr_core::{ClientConfig, ClientError};

use crate::harness::{
    alone, shared, test_config, wait_until, Cluster, Executed, Recorder, TestClient,
};
use crate::Runtime;

/// This process's threads whose names start with `prefix`, by thread id.
fn threads_named(prefix: &str) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        panic!("this process's threads are listed in /proc/self/task");
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            Some(format!(
                "{} {}",
                task.file_name().to_string_lossy(),
                name.trim()
            ))
        })
        .filter(|line| {
            line.split_once(' ')
                .is_some_and(|(_, name)| name.starts_with(prefix))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Nothing listens at `address` any more, and it can be bound again.
fn assert_released(address: SocketAddr) {
    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err(),
        "nothing listens on {address} any more"
    );
    // A replica closes its listener before `stop` returns, so binding works
    // at once; the retries only guard against a kernel that releases the
    // port lazily.
    wait_until(
        Duration::from_secs(2),
        &format!("{address} can be bound again"),
        || TcpListener::bind(address).is_ok(),
    );
}

/// After traffic (so that peer and client connections are open), `stop`
/// returns promptly, once each replica's threads have ended; the ports are
/// free, and no thread of the adapter is left. Runs alone in its test
/// binary, so that no other test's threads are counted.
pub fn stop_ends_threads_and_releases_ports<R: Runtime>() {
    let _alone = alone();
    let mut cluster = Cluster::<R>::start(test_config(31, 3));
    let mut client = cluster.client(5);
    assert_eq!(client.submit(b"one"), Ok(b"one".to_vec()));
    // At least one thread per replica: the prefix names the adapter's
    // threads, so the check that none is left below is not vacuous. Polled:
    // a thread names itself once it first runs, and a replica that was not
    // needed for the commit above may not have run yet on a loaded machine.
    wait_until(
        Duration::from_secs(5),
        &format!("{}: a named thread per replica", R::NAME),
        || threads_named(R::THREAD_PREFIX).len() >= 3,
    );
    for (i, replica) in cluster.replicas.iter_mut().enumerate() {
        let replica = replica.take().expect("runs");
        assert!(replica.is_running(), "replica {i} runs before the stop");
        let started = Instant::now();
        replica.stop();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "replica {i} slow to stop: {:?}",
            started.elapsed()
        );
    }
    drop(client);
    assert_eq!(cluster.executed(0), [b"one".to_vec()]);
    for &address in &cluster.addresses {
        assert_released(address);
    }
    // glommio's helper thread (its blocking-call pool) notices that its
    // executor is gone on its own, a moment later: poll.
    wait_until(
        Duration::from_secs(5),
        "every adapter thread has ended",
        || threads_named(R::THREAD_PREFIX).is_empty(),
    );
}

/// A replica that bound its own address (no listener given) stops when its
/// handle is dropped, and releases the port.
pub fn dropping_the_handle_stops_the_replica<R: Runtime>() {
    let _shared = shared();
    // Learn a free port, then let the replica bind it.
    let address = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port");
    let config = test_config(32, 1);
    let options = ReplicaOptions::new(config.clone(), vec![address], vr_core::MemberId(0));
    let replica = R::start_replica(options, None, Recorder(Executed::default()))
        .expect("the replica binds its address");
    assert_eq!(replica.local_addr(), address);
    let mut client =
        TestClient::<R>::connect(vec![address], ClientConfig::new(&config, 3), config.cluster);
    assert_eq!(client.submit(b"y"), Ok(b"y".to_vec()));
    drop(replica);
    assert_released(address);
}

/// With nothing listening, a client resends on its timer and gives up after
/// `request_attempts_max` attempts (§4.1: the client's timeout): three
/// attempts 20 ms apart take at least 60 ms, and far less than a second.
pub fn a_client_gives_up_after_request_attempts_max<R: Runtime>() {
    let _shared = shared();
    // Addresses where nothing listens: every connect is refused.
    let addresses: Vec<SocketAddr> = (0..3)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
        })
        .collect();
    let mut config = ClientConfig::new(&test_config(33, 3), 4);
    config.request_timeout_ns = 20_000_000;
    config.request_attempts_max = 3;
    let mut client = TestClient::<R>::connect(addresses, config, 33);
    let started = Instant::now();
    assert_eq!(client.submit(b"lost"), Err(ClientError::TimedOut));
    let elapsed = started.elapsed();
    // The timer drove the resends.
    assert!(elapsed >= Duration::from_millis(60), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}
