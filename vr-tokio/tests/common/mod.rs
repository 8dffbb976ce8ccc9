//! Shared test helpers: a recording service and a loopback cluster.
#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vr_core::{ClientConfig, Config, Service};
use vr_tokio::{start_replica_with_listener, Client, ReplicaHandle, ReplicaOptions};

/// Every executed operation, in execution order.
pub type Executed = Arc<Mutex<Vec<Vec<u8>>>>;

/// Records each operation and echoes it back as the result.
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

/// A cluster on loopback; `replicas[i]` is `None` once stopped.
pub struct Cluster {
    pub config: Config,
    pub addresses: Vec<SocketAddr>,
    pub replicas: Vec<Option<ReplicaHandle>>,
    pub executed: Vec<Executed>,
}

/// The timings the brief asks for: 10 ms heartbeats, a 100 ms view-change
/// timeout with up to 50 ms jitter (`Config::new`'s defaults).
pub fn test_config(cluster: u64, replica_count: u8) -> Config {
    let mut config = Config::new(cluster, replica_count);
    config.seed = cluster;
    config
}

impl Cluster {
    /// Starts `config.replica_count` replicas on pre-bound 127.0.0.1:0
    /// listeners.
    pub fn start(config: Config) -> Cluster {
        let n = usize::from(config.replica_count);
        let listeners: Vec<_> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
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

    pub async fn client(&self, client_id: u128) -> Client {
        let config = ClientConfig::new(&self.config, client_id);
        Client::connect(self.addresses.clone(), config, self.config.cluster)
            .await
            .unwrap()
    }

    pub fn replica(&self, i: usize) -> &ReplicaHandle {
        self.replicas[i].as_ref().expect("replica is running")
    }

    pub fn executed(&self, i: usize) -> Vec<Vec<u8>> {
        self.executed[i].lock().unwrap().clone()
    }
}

/// Polls `condition` every few milliseconds until it holds or `timeout`
/// passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::DEBUG)
            .try_init();
    }
}
