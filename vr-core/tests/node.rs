//! The node layer's contract under arbitrary input from outside: whatever
//! bytes arrive on whatever connections, in whatever order connections
//! open, fail and close, a `ReplicaNode` never panics, never names a
//! connection the adapter does not hold, keeps its queues within their
//! bound, and keeps accepted connections within the cap.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use proptest::prelude::*;
use vr_core::codec;
use vr_core::message::{Message, Request};
use vr_core::node::{Closed, ConnectionId, Output, ReplicaNode, ReplicaOptions};
use vr_core::{Config, Instant, MemberId, Service};

struct Echo;
impl Service for Echo {
    fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
        op.to_vec()
    }
    fn page_count(&self) -> u64 {
        0
    }
    fn read_page(&self, _index: u64, _out: &mut Vec<u8>) {}
    fn install_pages(&mut self, _pages: &[&[u8]]) {}
}

#[derive(Clone, Debug)]
enum Step {
    Accept,
    /// Bytes on the `n`th connection the adapter holds.
    Bytes(usize, Vec<u8>),
    /// A valid request from client `c` on the `n`th connection.
    Request(usize, u8),
    Close(usize),
    /// The `n`th connection writes everything queued on it.
    Written(usize),
    /// Outbound connects complete.
    Connected,
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Accept),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 0..80)
        )
            .prop_map(|(n, b)| Step::Bytes(n, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(n, c)| Step::Request(n, c)),
        any::<usize>().prop_map(Step::Close),
        any::<usize>().prop_map(Step::Written),
        Just(Step::Connected),
        (0u64..3_000_000_000).prop_map(Step::Advance),
    ]
}

/// What the adapter holds: each connection and the bytes queued on it.
#[derive(Default)]
struct Adapter {
    open: BTreeMap<ConnectionId, usize>,
    connecting: BTreeSet<ConnectionId>,
}

impl Adapter {
    fn nth(&self, n: usize) -> Option<ConnectionId> {
        let len = self.open.len();
        (len > 0).then(|| *self.open.keys().nth(n % len).unwrap())
    }
}

const QUEUE_BYTES_MAX: usize = 300;
const INBOUND_MAX: usize = 3;

fn drain(node: &mut ReplicaNode<Echo>, adapter: &mut Adapter, now: Instant) {
    let mut buffer = Vec::new();
    for _ in 0..10_000 {
        match node.poll_output(&mut buffer) {
            Output::Connect { connection, .. } => {
                assert!(
                    !adapter.open.contains_key(&connection),
                    "ids are never reused"
                );
                adapter.open.insert(connection, 0);
                adapter.connecting.insert(connection);
            }
            Output::Transmit { connection, len } => {
                let queued = adapter
                    .open
                    .get_mut(&connection)
                    .expect("a transmit names a held connection");
                assert!(
                    *queued == 0 || *queued + len <= QUEUE_BYTES_MAX,
                    "the queue bound holds"
                );
                *queued += len;
            }
            Output::Close { connection } => {
                assert!(
                    adapter.open.remove(&connection).is_some(),
                    "a close names a held connection"
                );
                adapter.connecting.remove(&connection);
            }
            Output::Event(_) => {}
            Output::Timeout(Some(t)) if t <= now => node.handle_timeout(now),
            Output::Timeout(_) => return,
        }
    }
    panic!("the node never stopped producing outputs");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_node_keeps_its_contract_whatever_arrives(steps in proptest::collection::vec(step(), 1..60)) {
        let addresses: Vec<SocketAddr> = (0..3u16).map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i))).collect();
        let mut options = ReplicaOptions::new(Config::new(5, 3), addresses, MemberId(0));
        options.peer_queue_bytes_max = QUEUE_BYTES_MAX;
        options.client_connections_max = INBOUND_MAX;
        let mut now = Instant::ZERO;
        let replica = options.build_replica(Echo, now).unwrap();
        let mut node = ReplicaNode::new(replica, &options, now);
        let mut adapter = Adapter::default();
        let mut accepted = BTreeSet::new();
        for step in steps {
            match step {
                Step::Accept => {
                    if let Some(id) = node.handle_accepted(now, None) {
                        prop_assert!(accepted.len() < INBOUND_MAX, "the cap holds");
                        prop_assert!(adapter.open.insert(id, 0).is_none());
                        accepted.insert(id);
                    } else {
                        prop_assert_eq!(accepted.len(), INBOUND_MAX);
                    }
                }
                Step::Bytes(n, bytes) => {
                    if let Some(id) = adapter.nth(n) {
                        if node.handle_bytes(now, id, &bytes).is_err() {
                            // The node forgot it; the adapter closes it.
                            adapter.open.remove(&id);
                            adapter.connecting.remove(&id);
                            accepted.remove(&id);
                        }
                    }
                }
                Step::Request(n, client) => {
                    if let Some(id) = adapter.nth(n) {
                        let request = Request { client_id: u128::from(client), request_number: 1, op: vec![client] };
                        let mut frame = Vec::new();
                        codec::encode(&Message::Request(request), 5, &mut frame);
                        prop_assert_eq!(node.handle_bytes(now, id, &frame), Ok(frame.len()));
                    }
                }
                Step::Close(n) => {
                    if let Some(id) = adapter.nth(n) {
                        adapter.open.remove(&id);
                        adapter.connecting.remove(&id);
                        accepted.remove(&id);
                        node.handle_closed(now, id, Closed::Eof);
                    }
                }
                Step::Written(n) => {
                    if let Some(id) = adapter.nth(n) {
                        let queued = std::mem::take(adapter.open.get_mut(&id).unwrap());
                        if queued > 0 && !adapter.connecting.contains(&id) {
                            node.handle_written(id, queued);
                        } else {
                            *adapter.open.get_mut(&id).unwrap() = queued;
                        }
                    }
                }
                Step::Connected => {
                    for id in std::mem::take(&mut adapter.connecting) {
                        node.handle_connected(now, id);
                    }
                }
                Step::Advance(ns) => now = now + ns,
            }
            drain(&mut node, &mut adapter, now);
            let stats = node.stats();
            prop_assert!(stats.links.connections.len() <= adapter.open.len());
            for c in &stats.links.connections {
                prop_assert!(adapter.open.contains_key(&c.connection), "the node holds no connection the adapter dropped");
                prop_assert_eq!(c.queued_bytes, adapter.open[&c.connection], "the node's accounting is the adapter's");
            }
        }
    }
}
