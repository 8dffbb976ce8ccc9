//! Clean shutdown: stopped replicas end their threads and release their ports.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{init_tracing, test_config, Cluster, Recorder};
use vr_core::ClientConfig;
use vr_tokio::{start_replica, Client, ClientError, ReplicaOptions};

fn assert_released(address: SocketAddr) {
    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err(),
        "nothing listens on {address} any more"
    );
    TcpListener::bind(address).expect("the address can be bound again");
}

#[tokio::test]
async fn stopped_replicas_release_their_ports() {
    init_tracing();
    let mut cluster = Cluster::start(test_config(31, 3));
    let mut client = cluster.client(9).await;
    let result = tokio::time::timeout(Duration::from_secs(5), client.submit(b"x".to_vec()))
        .await
        .expect("the submit finishes");
    assert_eq!(result.unwrap(), b"x");
    for replica in cluster.replicas.iter_mut() {
        // Returns once the replica's thread has been joined.
        replica.take().unwrap().stop();
    }
    for &address in &cluster.addresses {
        assert_released(address);
    }
}

#[tokio::test]
async fn dropping_the_handle_stops_the_replica() {
    init_tracing();
    // Learn a free port, then let `start_replica` bind it.
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = test_config(32, 1);
    let options = ReplicaOptions::new(config.clone(), vec![address], vr_core::MemberId(0));
    let handle = start_replica(options, Recorder(Default::default())).unwrap();
    let mut client = Client::connect(vec![address], ClientConfig::new(&config, 3), 32)
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), client.submit(b"y".to_vec()))
        .await
        .expect("the submit finishes");
    assert_eq!(result.unwrap(), b"y");
    drop(handle);
    assert_released(address);
}

#[tokio::test]
async fn a_client_gives_up_after_request_attempts_max() {
    init_tracing();
    // Addresses where nothing listens.
    let addresses: Vec<SocketAddr> = (0..3)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        })
        .collect();
    let mut config = ClientConfig::new(&test_config(33, 3), 4);
    config.request_timeout_ns = 20_000_000;
    config.request_attempts_max = 3;
    let mut client = Client::connect(addresses, config, 33).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(2), client.submit(b"z".to_vec()))
        .await
        .expect("the client gives up on its own");
    assert_eq!(result, Err(ClientError::TimedOut));
}
