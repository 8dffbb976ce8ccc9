//! A replica whose links to its peers have backed off (the peers are down)
//! connects again as soon as a peer that restarted connects to it, rather
//! than after the backoff it grew while they were down (issue 18, item 8:
//! recovery speed). A restarted peer always connects first: it sends its
//! recovery (§4.3), or its view-change vote (§4.2), or asks its primary for
//! state (§5.2).

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use vr_core::node::ReplicaOptions;
use vr_core::Service;

use crate::harness::{shared, test_config, wait_until};
use crate::Runtime;

/// No state: the test is about connections.
struct Nothing;

impl Service for Nothing {
    fn execute(&mut self, _op_number: u64, _op: &[u8]) -> Vec<u8> {
        Vec::new()
    }
    fn page_count(&self) -> u64 {
        0
    }
    fn read_page(&self, _index: u64, _out: &mut Vec<u8>) {}
    fn install_pages(&mut self, _pages: &[&[u8]]) {}
}

/// See the module's doc.
pub fn a_peer_that_connects_is_connected_to_at_once<R: Runtime>() {
    let _shared = shared();
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    let addresses: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound listener's address"))
        .collect();
    let mut listeners = listeners.into_iter();
    let own = listeners.next();
    // Peers 1 and 2 are down: nothing listens at their addresses.
    drop(listeners);
    let mut options =
        ReplicaOptions::new(test_config(7, 3), addresses.clone(), vr_core::MemberId(0));
    // Backoff from 2 ms, doubling without a practical bound: 2 + 4 + ...
    // + 512 ms of waiting makes ten failed connects to a peer, and its
    // next attempt is due a second after the last.
    options.reconnect_backoff_min = Duration::from_millis(2);
    options.reconnect_backoff_max = Duration::from_secs(60);
    // The primary of view 0 heartbeats to both peers (and, when it gives
    // up on them, votes for a view change): frames to send, and connects
    // that fail.
    let replica = R::start_replica(options, own, Nothing).expect("the replica starts");
    wait_until(
        Duration::from_secs(10),
        "connects to the peers were attempted 20 times",
        || replica.stats().links.connect_failures >= 20,
    );
    // Peer 1 restarts and connects to the replica.
    let restarted = TcpListener::bind(addresses[1]).expect("peer 1's port is free");
    restarted
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let _hello = TcpStream::connect(addresses[0]).expect("the replica accepts");
    let connected = Instant::now();
    loop {
        match restarted.accept() {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Well under the second of backoff the replica grew.
                assert!(
                    connected.elapsed() < Duration::from_millis(400),
                    "the replica connected to its restarted peer without waiting out its backoff"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    replica.stop();
}
