//! Helpers shared by the integration tests: a recording service, clusters on
//! pre-bound loopback listeners, and polling with deadlines.
#![allow(dead_code)] // Each test binary uses its own subset.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vr_core::{Config, Service};
use vr_glommio::{start_replica_with_listener, ReplicaHandle, ReplicaOptions};

/// The operations a replica executed, in order.
pub type Executed = Arc<Mutex<Vec<Vec<u8>>>>;

/// Echoes every operation and records it.
pub struct Recorder(pub Executed);

impl Service for Recorder {
    fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
        lock(&self.0).push(op.to_vec());
        op.to_vec()
    } // The state is the list of operations: one page each.
    fn page_count(&self) -> u64 {
        lock(&self.0).len() as u64
    }
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&lock(&self.0)[index as usize]);
    }
    fn install_pages(&mut self, pages: &[&[u8]]) {
        *lock(&self.0) = pages.iter().map(|p| p.to_vec()).collect();
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Logs to the test's output with `RUST_LOG=vr_glommio=info` and the like.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub struct Cluster {
    pub config: Config,
    pub addresses: Vec<SocketAddr>,
    pub replicas: Vec<Option<ReplicaHandle>>,
    pub executed: Vec<Executed>,
}

/// Starts `replica_count` replicas of cluster `cluster` with `Config::new`'s
/// timers (10 ms heartbeats, 100 ms view-change timeout, 50 ms jitter).
pub fn start_cluster(cluster: u64, replica_count: u8) -> Cluster {
    start_cluster_with(Config::new(cluster, replica_count), |_| {})
}

pub fn start_cluster_with(config: Config, adjust: impl Fn(&mut ReplicaOptions)) -> Cluster {
    let listeners: Vec<_> = (0..config.replica_count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    let addresses: Vec<_> = listeners
        .iter()
        .map(|listener| listener.local_addr().expect("local address"))
        .collect();
    let mut replicas = Vec::new();
    let mut executed = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let mut options = ReplicaOptions::new(
            config.clone(),
            addresses.clone(),
            vr_core::MemberId(index as u8),
        );
        adjust(&mut options);
        let log = Executed::default();
        let handle = start_replica_with_listener(options, listener, Recorder(log.clone()))
            .expect("start a replica");
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

/// Polls `condition` every few milliseconds until it holds; panics with
/// `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
