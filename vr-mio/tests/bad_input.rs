//! A connection that sends anything but valid frames of this cluster is
//! closed, counted by reason, and the cluster serves everyone else.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::{wait_until, Cluster};
use vr_core::codec;
use vr_core::message::{Message, Request};

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

/// Sends `bytes` (then, if `close_write`, half-closes) and asserts that the
/// replica closes the connection: a read ends with EOF or a reset.
fn send_and_expect_close(address: SocketAddr, bytes: &[u8], close_write: bool) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    if close_write {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    let mut buffer = [0u8; 64];
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Ok(n) => panic!("the replica answered {n} bytes instead of closing"),
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "the replica did not close the connection"
        ),
    }
}

#[test]
fn bad_connections_are_closed_counted_and_the_cluster_goes_on() {
    let cluster = Cluster::start(CLUSTER, 3);
    let mut client = cluster.client(5);
    assert_eq!(client.submit(b"before".to_vec()).unwrap(), b"before");
    let primary = cluster.addresses[0];

    // (a) Random bytes: not our protocol.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let garbage: Vec<u8> = (0..256)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    assert_ne!(&garbage[..2], b"VR");
    send_and_expect_close(primary, &garbage, false);

    // (b) A truncated frame, then the sender closes.
    let frame = request_frame(CLUSTER);
    send_and_expect_close(primary, &frame[..frame.len() / 2], true);

    // (c) A header announcing a frame over message_size_max.
    let mut header = request_frame(CLUSTER)[..codec::HEADER_SIZE].to_vec();
    header[4..8].copy_from_slice(&(64 * 1024 * 1024u32).to_le_bytes());
    send_and_expect_close(primary, &header, false);

    // (d) A frame whose checksum does not match.
    let mut corrupt = request_frame(CLUSTER);
    *corrupt.last_mut().unwrap() ^= 0xFF;
    send_and_expect_close(primary, &corrupt, false);

    // (e) A valid frame of another cluster.
    send_and_expect_close(primary, &request_frame(CLUSTER + 1), false);

    let stats = cluster.replica(0).stats();
    let rejected = &stats.node.rejected;
    assert_eq!(rejected.foreign, 1, "{stats:?}");
    assert_eq!(rejected.oversized, 1, "{stats:?}");
    assert_eq!(rejected.bad_checksum, 1, "{stats:?}");
    assert_eq!(rejected.wrong_cluster, 1, "{stats:?}");
    assert_eq!(stats.connections_closed_bad_input, 4);
    assert_eq!(stats.connections_closed_mid_frame, 1);
    assert_eq!(stats.node.op_number, 1, "no bad frame reached the replica");

    // The replica keeps serving the client it had, and new ones.
    assert_eq!(client.submit(b"after".to_vec()).unwrap(), b"after");
    let mut late = cluster.client(6);
    assert_eq!(late.submit(b"late".to_vec()).unwrap(), b"late");
    wait_until(Duration::from_secs(2), "backups to execute", || {
        (0..3).all(|i| cluster.executed(i).len() == 3)
    });
    assert_eq!(
        cluster.replica(0).stats().node.view,
        0,
        "no view change needed"
    );
}

#[test]
fn inbound_connections_are_bounded() {
    common::init_tracing();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = vr_core::Config::new(CLUSTER, 1);
    let addresses = vec![listener.local_addr().unwrap()];
    let mut options =
        vr_mio::ReplicaOptions::new(config.clone(), addresses.clone(), vr_core::MemberId(0));
    options.client_connections_max = 2;
    let executed = common::Executed::default();
    let replica =
        vr_mio::start_replica_with_listener(options, listener, common::Recorder(executed)).unwrap();
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(addresses[0]).unwrap())
        .collect();
    wait_until(Duration::from_secs(2), "two accepted", || {
        replica.stats().connections_accepted == 2
    });
    // A third is accepted by the kernel and closed by the replica at once.
    send_and_expect_close(addresses[0], &request_frame(CLUSTER), false);
    assert_eq!(replica.stats().connections_refused, 1);
    drop(held);
    wait_until(Duration::from_secs(2), "slots freed", || {
        replica.stats().connections.is_empty()
    });
    let mut client = vr_mio::Client::connect(
        addresses,
        vr_core::ClientConfig::new(&config, 9),
        config.cluster,
    )
    .unwrap();
    assert_eq!(client.submit(b"x".to_vec()).unwrap(), b"x");
    replica.stop();
}
