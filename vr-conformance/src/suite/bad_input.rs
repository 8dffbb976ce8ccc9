//! A connection that sends anything but valid frames of this cluster is
//! closed and counted by reason, and the cluster serves everyone else; the
//! number of inbound connections is bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use vr_core::codec;
use vr_core::message::{Message, Request};

use crate::harness::{lock, shared, test_config, wait_until, Cluster};
use crate::{Runtime, Stats};

const CLUSTER: u64 = 21;

/// A valid Request frame of cluster `cluster`, from no real client.
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
/// the magic's first ("VR").
fn random_bytes(count: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut bytes: Vec<u8> = (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect();
    bytes[0] = b'x';
    bytes
}

/// Sends `bytes` (then, if `close_write`, half-closes) and asserts that the
/// replica closes the connection without answering: a read ends with EOF
/// or a reset, rather than timing out.
fn send_and_expect_close(address: SocketAddr, bytes: &[u8], close_write: bool) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    // A reset can come before all is written: the replica may close on
    // seeing the header. The read below tells.
    let _ = stream.write_all(bytes);
    if close_write {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut buffer = [0u8; 256];
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Ok(n) => panic!("the replica answered {n} bytes instead of closing"),
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "the replica kept the connection open"
        ),
    }
}

/// Polls replica 0's counters until `condition` holds.
fn wait_for<R: Runtime>(cluster: &Cluster<R>, what: &str, condition: impl Fn(&Stats) -> bool) {
    wait_until(Duration::from_secs(5), what, || {
        condition(&cluster.stats(0))
    });
}

/// Five kinds of bad input, each on its own connection to the primary:
/// every one is closed and counted by its reason, none reaches the log
/// (§4.1: only Requests of this cluster's clients become ops), and the
/// cluster keeps serving the client it had and new ones, in the same view.
pub fn bad_frames_close_their_connection_and_are_counted<R: Runtime>() {
    let _shared = shared();
    let cluster = Cluster::<R>::start(test_config(CLUSTER, 3));
    let mut client = cluster.client(5);
    assert_eq!(client.submit(b"before"), Ok(b"before".to_vec()));
    let primary = cluster.addresses[0];
    let op_number_before = cluster.stats(0).node.op_number;
    assert_eq!(op_number_before, 1);

    // (a) Random bytes: not our protocol.
    send_and_expect_close(primary, &random_bytes(256), false);
    wait_for(&cluster, "a foreign frame is counted", |s| {
        s.node.rejected.foreign == 1
    });
    // (b) A truncated frame, then the sender closes.
    let frame = request_frame(CLUSTER);
    send_and_expect_close(primary, &frame[..frame.len() - 5], true);
    wait_for(&cluster, "a close mid-frame is counted", |s| {
        s.connections_closed_mid_frame == 1
    });
    // (c) A header announcing a frame far over message_size_max.
    let mut header = request_frame(CLUSTER)[..codec::HEADER_SIZE].to_vec();
    header[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    send_and_expect_close(primary, &header, false);
    wait_for(&cluster, "an oversized frame is counted", |s| {
        s.node.rejected.oversized == 1
    });
    // (d) A whole frame whose checksum does not match its body.
    let mut corrupt = request_frame(CLUSTER);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    send_and_expect_close(primary, &corrupt, false);
    wait_for(&cluster, "a bad checksum is counted", |s| {
        s.node.rejected.bad_checksum == 1
    });
    // (e) A valid frame of another cluster.
    send_and_expect_close(primary, &request_frame(CLUSTER + 1), false);
    wait_for(&cluster, "a frame of another cluster is counted", |s| {
        s.node.rejected.wrong_cluster == 1
    });

    let stats = cluster.stats(0);
    let rejected = &stats.node.rejected;
    assert_eq!(
        (
            rejected.foreign,
            rejected.oversized,
            rejected.bad_checksum,
            rejected.wrong_cluster
        ),
        (1, 1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.connections_closed_bad_input, 4, "{stats:?}");
    assert_eq!(stats.connections_closed_mid_frame, 1, "{stats:?}");
    assert_eq!(
        stats.node.op_number, op_number_before,
        "no bad frame became an op"
    );

    // The replica keeps serving the client it had, and new ones.
    assert_eq!(client.submit(b"after"), Ok(b"after".to_vec()));
    let mut late = cluster.client(6);
    assert_eq!(late.submit(b"late"), Ok(b"late".to_vec()));
    wait_until(
        Duration::from_secs(5),
        "every replica executed 3 ops",
        || (0..3).all(|i| cluster.executed(i).len() == 3),
    );
    let node = cluster.stats(0).node;
    assert!(node.commit_number > op_number_before);
    assert_eq!(node.view, 0, "no view change needed");
}

/// With `client_connections_max` = 2, a third inbound connection is closed
/// at once and counted; a slot frees when a connection closes, and a new
/// client then gets it.
pub fn inbound_connections_beyond_the_cap_are_refused<R: Runtime>() {
    let _shared = shared();
    let cluster = Cluster::<R>::start_with(test_config(CLUSTER + 2, 1), 1, |options| {
        options.client_connections_max = 2;
    });
    let address = cluster.addresses[0];
    // A client holds one slot, and has sent one request on it.
    let mut first = cluster.client(1);
    assert_eq!(first.submit(b"a"), Ok(b"a".to_vec()));
    // A bare connection holds the other.
    let held = TcpStream::connect(address).expect("connect");
    wait_until(
        Duration::from_secs(5),
        "two connections are accepted",
        || cluster.stats(0).connections_accepted == 2,
    );
    // A third is accepted by the kernel and closed by the replica at once.
    send_and_expect_close(address, &request_frame(CLUSTER + 2), false);
    let stats = cluster.stats(0);
    assert_eq!(
        (stats.connections_accepted, stats.connections_refused),
        (2, 1),
        "{stats:?}"
    );
    assert_eq!(stats.inbound.len(), 2, "{stats:?}");
    if stats.inbound.iter().all(|c| c.frames_in.is_some()) {
        assert!(
            stats.inbound.iter().any(|c| c.frames_in == Some(1)),
            "one request came in on the client's connection: {stats:?}"
        );
    }

    // A slot frees up when a connection closes.
    drop(held);
    wait_until(
        Duration::from_secs(5),
        "the replica notices the close",
        || cluster.stats(0).inbound.len() == 1,
    );
    let mut second = cluster.client(2);
    assert_eq!(second.submit(b"b"), Ok(b"b".to_vec()));
    let stats = cluster.stats(0);
    assert_eq!(
        (stats.connections_accepted, stats.connections_refused),
        (3, 1),
        "{stats:?}"
    );
    drop((first, second));
    let mut cluster = cluster;
    cluster.replicas[0].take().expect("runs").stop();
    assert_eq!(
        lock(&cluster.executed[0]).as_slice(),
        [b"a".to_vec(), b"b".to_vec()]
    );
}
