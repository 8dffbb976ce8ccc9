//! What the tests share: a recording service, clusters on pre-bound
//! loopback listeners, clients whose every call has a deadline, polling
//! with deadlines, and a lock that lets one test run alone.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use vr_core::message::MemberId;
use vr_core::node::ReplicaOptions;
use vr_core::{ClientConfig, ClientError, Config, Service};

use crate::runtime::{Runtime, Stats};

/// How long one client call may take before the test fails: generous, for
/// a loaded machine; a call that retries through a view change or a
/// reconfiguration takes well under a second.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The operations a replica executed, in execution order.
pub type Executed = Arc<Mutex<Vec<Vec<u8>>>>;

/// Echoes every operation and records it: what a replica executed is then
/// the state the tests check.
pub struct Recorder(pub Executed);

impl Service for Recorder {
    fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
        lock(&self.0).push(op.to_vec());
        op.to_vec()
    }
    // The state is the list of operations: one page each.
    fn page_count(&self) -> u64 {
        lock(&self.0).len() as u64
    }
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        if let Some(op) = usize::try_from(index)
            .ok()
            .and_then(|i| lock(&self.0).get(i).cloned())
        {
            out.extend_from_slice(&op);
        }
    }
    fn install_pages(&mut self, pages: &[&[u8]]) {
        *lock(&self.0) = pages.iter().map(|p| p.to_vec()).collect();
    }
}

/// Locks `mutex`, also after a panicking test poisoned it (the panic is
/// the failure to report, not the poison).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Held by every test for its whole run: shared by all but the one that
/// counts the process's threads, which must run alone.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// How long one test may run before its binary is ended: far beyond what
/// any test takes on a loaded machine (about a second).
const TEST_DEADLINE: Duration = Duration::from_secs(90);

/// What a test holds while it runs: its place beside the others (or alone),
/// and a watchdog.
pub(crate) struct Running<G> {
    _lock: G,
    _watchdog: Watchdog,
}

/// Ends the process if dropped later than [`TEST_DEADLINE`] after it was
/// made. Some adapter calls block without a deadline (a stats snapshot, a
/// stop); a lost wake-up there would hang the run for ever rather than
/// fail the test.
struct Watchdog {
    _cancel: mpsc::SyncSender<()>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let test = std::thread::current()
            .name()
            .unwrap_or("a conformance test")
            .to_owned();
        let (cancel, cancelled) = mpsc::sync_channel::<()>(0);
        std::thread::spawn(move || {
            // Disconnected: the test ended and dropped its watchdog.
            if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(TEST_DEADLINE) {
                // Not `eprintln!`: the test harness captures that, and
                // `exit` would drop it unseen.
                let _ = writeln!(
                    std::io::stderr(),
                    "{test}: still running after {TEST_DEADLINE:?}: stuck; ending the run"
                );
                std::process::exit(101);
            }
        });
        Watchdog { _cancel: cancel }
    }
}

/// Lets other tests run beside this one.
pub(crate) fn shared() -> Running<RwLockReadGuard<'static, ()>> {
    init_tracing();
    let lock = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    Running {
        _lock: lock,
        _watchdog: Watchdog::start(),
    }
}

/// Waits until no other test of this binary runs, and keeps them out.
pub(crate) fn alone() -> Running<RwLockWriteGuard<'static, ()>> {
    init_tracing();
    let lock = EXCLUSIVE.write().unwrap_or_else(PoisonError::into_inner);
    Running {
        _lock: lock,
        _watchdog: Watchdog::start(),
    }
}

/// Logs to the test's output as `RUST_LOG` says (warnings by default).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// `Config::new`'s timers (10 ms heartbeats, a 100 ms view-change timeout
/// with up to 50 ms jitter), seeded with the cluster id.
pub(crate) fn test_config(cluster: u64, replica_count: u8) -> Config {
    let mut config = Config::new(cluster, replica_count);
    config.seed = cluster;
    config
}

/// Polls `condition` every few milliseconds until it holds; panics with
/// `what` after `timeout`.
pub(crate) fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `work` on a thread of its own and returns its result, or panics
/// with `what` if it takes longer than `timeout` (the thread is then left
/// behind: the test has failed). A panic in `work` is passed on.
pub(crate) fn within<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, result) = mpsc::sync_channel(1);
    let thread = std::thread::spawn(move || {
        let _ = done.send(work());
    });
    match result.recv_timeout(timeout) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done within {timeout:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends its result before it ends"),
        },
    }
}

/// A client of runtime `R` whose every call is bounded (10 s),
/// so that a stuck adapter fails its test instead of hanging the run.
pub struct TestClient<R: Runtime> {
    /// `None` only after a call timed out (and the test failed).
    client: Option<R::Client>,
}

impl<R: Runtime> TestClient<R> {
    /// Connects a client of `cluster` to `addresses`.
    pub fn connect(addresses: Vec<SocketAddr>, config: ClientConfig, cluster: u64) -> Self {
        let client = R::connect(addresses, config, cluster)
            .unwrap_or_else(|e| panic!("{}: a client connects: {e}", R::NAME));
        TestClient {
            client: Some(client),
        }
    }

    /// Submits `op` and waits for its result.
    pub fn submit(&mut self, op: &[u8]) -> Result<Vec<u8>, ClientError> {
        let op = op.to_vec();
        self.call("submit", move |client| R::submit(client, op))
    }

    /// Reconfigures the cluster; the new epoch.
    pub fn reconfigure(
        &mut self,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError> {
        self.call("reconfigure", move |client| {
            R::reconfigure(client, members, addresses)
        })
    }

    /// The client's epoch and its members.
    pub fn epoch(&self) -> (u32, Vec<MemberId>) {
        R::epoch(
            self.client
                .as_ref()
                .expect("no call of this client timed out"),
        )
    }

    fn call<T: Send + 'static>(
        &mut self,
        what: &str,
        call: impl FnOnce(&mut R::Client) -> T + Send + 'static,
    ) -> T {
        let mut client = self
            .client
            .take()
            .expect("no earlier call of this client timed out");
        let what = format!("{}: client {what}", R::NAME);
        let (client, result) = within(CALL_TIMEOUT, &what, move || {
            let result = call(&mut client);
            (client, result)
        });
        self.client = Some(client);
        result
    }
}

/// Replicas of runtime `R` on loopback; `replicas[i]` is `None` once the
/// test stopped it.
pub struct Cluster<R: Runtime> {
    /// The configuration of epoch 0.
    pub config: Config,
    /// Every replica's address, joiners included.
    pub addresses: Vec<SocketAddr>,
    /// The running replicas.
    pub replicas: Vec<Option<vr_host::ReplicaHandle>>,
    /// What each replica executed.
    pub executed: Vec<Executed>,
    /// The runtime its clients use.
    runtime: std::marker::PhantomData<R>,
}

impl<R: Runtime> Cluster<R> {
    /// The replicas of `config` on pre-bound `127.0.0.1:0` listeners.
    pub fn start(config: Config) -> Self {
        let total = usize::from(config.replica_count);
        Self::start_with(config, total, |_| {})
    }

    /// `total` replicas: the first `config.replica_count` know one another;
    /// the others join (`ReplicaOptions::join`) and know everyone. `adjust`
    /// changes each one's options before it starts.
    pub fn start_with(config: Config, total: usize, adjust: impl Fn(&mut ReplicaOptions)) -> Self {
        let members = usize::from(config.replica_count);
        let listeners: Vec<TcpListener> = (0..total)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
            .collect();
        let addresses: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("a bound listener's address"))
            .collect();
        let mut replicas = Vec::new();
        let mut executed = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let known = if i < members {
                &addresses[..members]
            } else {
                &addresses[..]
            };
            let index = u8::try_from(i).expect("at most 255 replicas");
            let mut options = ReplicaOptions::new(config.clone(), known.to_vec(), MemberId(index));
            options.join = i >= members;
            adjust(&mut options);
            let log = Executed::default();
            let replica = R::start_replica(options, Some(listener), Recorder(log.clone()))
                .unwrap_or_else(|e| panic!("{}: replica {i} starts: {e}", R::NAME));
            assert_eq!(replica.local_addr(), addresses[i], "it listens where told");
            replicas.push(Some(replica));
            executed.push(log);
        }
        Cluster {
            config,
            addresses,
            replicas,
            executed,
            runtime: std::marker::PhantomData,
        }
    }

    /// A client that knows the members of epoch 0.
    pub fn client(&self, client_id: u128) -> TestClient<R> {
        self.client_with(client_id, |_| {})
    }

    /// A client of epoch 0's members with `adjust`ed configuration.
    pub fn client_with(
        &self,
        client_id: u128,
        adjust: impl Fn(&mut ClientConfig),
    ) -> TestClient<R> {
        let mut config = ClientConfig::new(&self.config, client_id);
        adjust(&mut config);
        let members = usize::from(self.config.replica_count);
        TestClient::connect(
            self.addresses[..members].to_vec(),
            config,
            self.config.cluster,
        )
    }

    /// Replica `i`, which must still run.
    pub fn replica(&self, i: usize) -> &vr_host::ReplicaHandle {
        self.replicas[i].as_ref().expect("the replica runs")
    }

    /// Replica `i`'s counters.
    pub fn stats(&self, i: usize) -> Stats {
        Stats::from(self.replica(i).stats())
    }

    /// What replica `i` executed so far.
    pub fn executed(&self, i: usize) -> Vec<Vec<u8>> {
        lock(&self.executed[i]).clone()
    }
}
