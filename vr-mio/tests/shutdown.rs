//! Stopping replicas ends their threads and releases their ports; the
//! client gives up after `request_attempts_max` attempts.

mod common;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::Cluster;
use vr_core::{ClientConfig, Config};
use vr_mio::{Client, ClientError};

#[test]
fn stop_joins_threads_and_releases_ports() {
    let mut cluster = Cluster::start(31, 3);
    let mut client = cluster.client(1);
    assert_eq!(client.submit(b"one".to_vec()).unwrap(), b"one");
    for (i, replica) in cluster.replicas.iter_mut().enumerate() {
        let started = Instant::now();
        // `stop` returns once the replica's thread has ended.
        replica.take().unwrap().stop();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "replica {i} slow to stop"
        );
    }
    for address in &cluster.addresses {
        assert!(
            TcpStream::connect(address).is_err(),
            "{address} still accepts"
        );
        // Re-binding works: the listener is closed.
        TcpListener::bind(address).unwrap();
    }
}

#[test]
fn dropping_the_handle_stops_the_replica() {
    let cluster = Cluster::start(32, 1);
    let address = cluster.addresses[0];
    drop(cluster);
    TcpListener::bind(address).unwrap();
}

#[test]
fn client_gives_up_after_its_attempts() {
    // A free port with nothing behind it: every connect is refused.
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = Config::new(33, 1);
    let mut client_config = ClientConfig::new(&config, 1);
    client_config.request_timeout_ns = 20_000_000;
    client_config.request_attempts_max = 3;
    let mut client = Client::connect(vec![address], client_config, config.cluster).unwrap();
    let started = Instant::now();
    match client.submit(b"lost".to_vec()) {
        Err(ClientError::Request(vr_core::ClientError::TimedOut)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    let elapsed = started.elapsed();
    // Three attempts, 20 ms apart: the timer drove the resends.
    assert!(elapsed >= Duration::from_millis(60), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}
