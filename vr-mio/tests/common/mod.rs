//! Helpers shared by the integration tests: a recording service and a
//! cluster on pre-bound loopback listeners.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vr_core::{ClientConfig, Config, Service};
use vr_mio::{start_replica_with_listener, Client, ReplicaHandle, ReplicaOptions};

/// The operations a replica executed, in order.
pub type Executed = Arc<Mutex<Vec<Vec<u8>>>>;

/// Records every operation and echoes it back as the result.
pub struct Recorder(pub Executed);

impl Service for Recorder {
    fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
        self.0.lock().unwrap().push(op.to_vec());
        op.to_vec()
    } // The state is the list of operations: one page each.
    fn page_count(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.lock().unwrap()[index as usize]);
    }
    fn install_pages(&mut self, pages: &[&[u8]]) {
        *self.0.lock().unwrap() = pages.iter().map(|p| p.to_vec()).collect();
    }
}

pub struct Cluster {
    pub config: Config,
    pub addresses: Vec<SocketAddr>,
    /// `None` once stopped.
    pub replicas: Vec<Option<ReplicaHandle>>,
    pub executed: Vec<Executed>,
}

impl Cluster {
    /// `n` replicas on loopback with `Config::new` timers (10 ms
    /// heartbeats, 100 ms view-change timeout, 50 ms jitter).
    pub fn start(cluster: u64, n: u8) -> Cluster {
        init_tracing();
        let config = Config::new(cluster, n);
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addresses: Vec<SocketAddr> =
            listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let mut replicas = Vec::new();
        let mut executed = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let log = Executed::default();
            let options = ReplicaOptions::new(
                config.clone(),
                addresses.clone(),
                vr_core::MemberId(i as u8),
            );
            let handle =
                start_replica_with_listener(options, listener, Recorder(log.clone())).unwrap();
            replicas.push(Some(handle));
            executed.push(log);
        }
        Cluster {
            config,
            addresses,
            replicas,
            executed,
        }
    }

    pub fn client(&self, client_id: u128) -> Client {
        let config = ClientConfig::new(&self.config, client_id);
        Client::connect(self.addresses.clone(), config, self.config.cluster).unwrap()
    }

    pub fn replica(&self, i: usize) -> &ReplicaHandle {
        self.replicas[i].as_ref().expect("replica stopped")
    }

    pub fn executed(&self, i: usize) -> Vec<Vec<u8>> {
        self.executed[i].lock().unwrap().clone()
    }
}

/// Polls `condition` until it holds; panics after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Logs at WARN and above to the test's output (shown for failing tests).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_test_writer()
        .try_init();
}
