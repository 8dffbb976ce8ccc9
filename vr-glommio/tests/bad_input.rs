//! A connection that sends something other than valid frames of this
//! cluster is closed, counted by reason, and harms nobody else.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::{init_tracing, start_cluster, start_cluster_with, wait_until};
use vr_core::codec;
use vr_core::message::{Message, Request};
use vr_core::{ClientConfig, Config};
use vr_glommio::BlockingClient;

const CLUSTER: u64 = 21;

/// A valid Request frame of cluster `cluster`.
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

/// Bytes from a fixed xorshift sequence, starting with a byte that is not
/// the magic's first.
fn random_bytes(count: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut bytes: Vec<u8> = (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    bytes[0] = b'x';
    bytes
}

/// Sends `bytes` (then closes the sending half if `then_close`) and checks
/// that the replica closes the connection: a read sees the end or a reset.
fn send_and_expect_close(address: SocketAddr, bytes: &[u8], then_close: bool) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.write_all(bytes).expect("send");
    if then_close {
        stream
            .shutdown(Shutdown::Write)
            .expect("close the sending half");
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("set a read timeout");
    let mut buffer = [0; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the replica kept the connection open")
            }
            Err(_) => return, // reset: closed with our bytes unread
        }
    }
}

fn submit_succeeds(addresses: Vec<SocketAddr>, config: &Config, client_id: u128) {
    let mut client_config = ClientConfig::new(config, client_id);
    client_config.request_attempts_max = 20;
    let mut client =
        BlockingClient::connect(addresses, client_config, config.cluster).expect("client");
    let op = format!("op of {client_id}").into_bytes();
    assert_eq!(client.submit(op.clone()), Ok(op));
}

#[test]
fn bad_frames_close_their_connection_and_are_counted_by_reason() {
    init_tracing();
    let cluster = start_cluster(CLUSTER, 3);
    let primary = cluster.replicas[0].as_ref().expect("runs");
    let address = cluster.addresses[0];
    submit_succeeds(cluster.addresses.clone(), &cluster.config, 1);
    let commit_before = primary.stats().node.commit_number;

    // (a) Random bytes: not our protocol.
    send_and_expect_close(address, &random_bytes(512), false);
    // (b) A truncated frame, then the end of the stream.
    let frame = request_frame(CLUSTER);
    send_and_expect_close(address, &frame[..frame.len() - 5], true);
    // (c) A header announcing a frame far over message_size_max.
    let mut oversized = request_frame(CLUSTER);
    oversized[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    send_and_expect_close(address, &oversized[..codec::HEADER_SIZE], false);
    // (d) A checksum that does not match the body.
    let mut corrupt = request_frame(CLUSTER);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    send_and_expect_close(address, &corrupt, false);
    // (e) A valid frame of another cluster.
    send_and_expect_close(address, &request_frame(CLUSTER + 1), false);

    let stats = primary.stats();
    let rejected = &stats.node.rejected;
    assert_eq!(rejected.foreign, 1, "{stats:?}");
    assert_eq!(rejected.oversized, 1, "{stats:?}");
    assert_eq!(rejected.bad_checksum, 1, "{stats:?}");
    assert_eq!(rejected.wrong_cluster, 1, "{stats:?}");
    assert_eq!(stats.connections_closed_bad_input, 4, "{stats:?}");
    assert_eq!(stats.connections_closed_mid_frame, 1, "{stats:?}");
    assert_eq!(
        stats.node.op_number, commit_before,
        "no bad frame became an op"
    );

    // The cluster goes on committing.
    submit_succeeds(cluster.addresses.clone(), &cluster.config, 2);
    assert!(primary.stats().node.commit_number > commit_before);
}

#[test]
fn inbound_connections_beyond_the_bound_are_closed() {
    init_tracing();
    let cluster = start_cluster_with(Config::new(CLUSTER, 1), |options| {
        options.client_connections_max = 2;
    });
    let replica = cluster.replicas[0].as_ref().expect("runs");
    let address = cluster.addresses[0];
    let first = TcpStream::connect(address).expect("connect");
    let _second = TcpStream::connect(address).expect("connect");
    wait_until(
        Duration::from_secs(3),
        "two connections are accepted",
        || replica.stats().connections_accepted == 2,
    );
    send_and_expect_close(address, b"", false);
    assert_eq!(replica.stats().connections_refused, 1);

    // A slot frees up when a connection closes.
    drop(first);
    wait_until(
        Duration::from_secs(3),
        "the replica notices the close",
        || replica.stats().connections.len() == 1,
    );
    submit_succeeds(cluster.addresses.clone(), &cluster.config, 3);
}
