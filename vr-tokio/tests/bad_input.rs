//! Connections that send garbage are closed and counted; the replica keeps
//! serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::{eventually, init_tracing, test_config, Cluster};
use vr_core::codec;
use vr_core::message::{Message, Request};
use vr_tokio::AdapterStats;

const CLUSTER: u64 = 21;

fn request_frame(cluster: u64) -> Vec<u8> {
    let request = Request {
        client_id: 77,
        request_number: 1,
        op: b"not from a real client".to_vec(),
    };
    let mut frame = Vec::new();
    codec::encode(&Message::Request(request), cluster, &mut frame);
    frame
}

/// Sends `bytes` on a fresh connection, half-closing it if `then_shutdown`.
fn send(address: SocketAddr, bytes: &[u8], then_shutdown: bool) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(bytes).unwrap();
    if then_shutdown {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    stream
}

/// Whether the replica closed `stream`: a read ends (0 bytes) or fails with
/// a reset, rather than timing out.
fn closed_by_replica(mut stream: TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buffer = [0u8; 256];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // Replies are not expected, but would not prove anything either.
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

async fn wait_for(cluster: &Cluster, what: &str, condition: impl Fn(&AdapterStats) -> bool) {
    let held = eventually(Duration::from_secs(2), || {
        condition(&cluster.replica(0).stats())
    })
    .await;
    assert!(held, "{what}: {:?}", cluster.replica(0).stats());
}

#[tokio::test]
async fn bad_frames_close_their_connection_and_are_counted() {
    init_tracing();
    let cluster = Cluster::start(test_config(CLUSTER, 3));
    let primary = cluster.addresses[0];

    // (a) random bytes: not our protocol.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut garbage: Vec<u8> = (0..256)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    garbage[0] = 0; // never the magic "VR"
    let stream = send(primary, &garbage, false);
    assert!(
        closed_by_replica(stream),
        "random bytes close the connection"
    );
    wait_for(&cluster, "foreign frame counted", |s| {
        s.node.rejected.foreign == 1
    })
    .await;

    // (b) a truncated frame, then the client closes.
    let frame = request_frame(CLUSTER);
    let stream = send(primary, &frame[..frame.len() - 5], true);
    assert!(closed_by_replica(stream), "the replica closes its side too");
    wait_for(&cluster, "mid-frame close counted", |s| {
        s.connections_closed_mid_frame == 1
    })
    .await;

    // (c) a header announcing a frame far over message_size_max.
    let mut header = request_frame(CLUSTER)[..codec::HEADER_SIZE].to_vec();
    header[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let stream = send(primary, &header, false);
    assert!(
        closed_by_replica(stream),
        "an oversized header closes the connection"
    );
    wait_for(&cluster, "oversized frame counted", |s| {
        s.node.rejected.oversized == 1
    })
    .await;

    // (d) a whole frame with a wrong checksum.
    let mut corrupt = request_frame(CLUSTER);
    corrupt[28] ^= 0xFF;
    let stream = send(primary, &corrupt, false);
    assert!(
        closed_by_replica(stream),
        "a bad checksum closes the connection"
    );
    wait_for(&cluster, "bad checksum counted", |s| {
        s.node.rejected.bad_checksum == 1
    })
    .await;

    // (e) a valid frame of another cluster.
    let stream = send(primary, &request_frame(CLUSTER + 1), false);
    assert!(
        closed_by_replica(stream),
        "another cluster's frame closes the connection"
    );
    wait_for(&cluster, "wrong cluster counted", |s| {
        s.node.rejected.wrong_cluster == 1
    })
    .await;

    let stats = cluster.replica(0).stats();
    assert_eq!(stats.connections_closed_bad_input, 4);
    assert_eq!(stats.node.op_number, 0, "no bad frame reached the log");

    // The cluster still commits.
    let mut client = cluster.client(5).await;
    let result = tokio::time::timeout(Duration::from_secs(5), client.submit(b"ok".to_vec()))
        .await
        .expect("the submit finishes")
        .expect("the submit succeeds");
    assert_eq!(result, b"ok");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    init_tracing();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let config = test_config(CLUSTER + 2, 1);
    let mut options =
        vr_tokio::ReplicaOptions::new(config.clone(), vec![address], vr_core::MemberId(0));
    options.client_connections_max = 1;
    let executed = common::Executed::default();
    let replica = vr_tokio::start_replica_with_listener(
        options,
        listener,
        common::Recorder(executed.clone()),
    )
    .unwrap();

    let mut first = vr_tokio::Client::connect(
        vec![address],
        vr_core::ClientConfig::new(&config, 1),
        config.cluster,
    )
    .await
    .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), first.submit(b"a".to_vec()))
        .await
        .expect("the submit finishes");
    assert_eq!(result.unwrap(), b"a");
    // The client keeps its connection: the only slot is taken.
    let second = TcpStream::connect(address).unwrap();
    assert!(
        closed_by_replica(second),
        "a connection over the limit is closed"
    );
    let stats = replica.stats();
    assert_eq!(
        (stats.connections_accepted, stats.connections_refused),
        (1, 1)
    );
    assert_eq!(stats.inbound.len(), 1);
    assert_eq!(stats.inbound[0].frames_in, 1, "one request came in");
    replica.stop();
    assert_eq!(executed.lock().unwrap().as_slice(), [b"a".to_vec()]);
}
