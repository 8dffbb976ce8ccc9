//! The load generator's bookkeeping, the same for every runtime: when each
//! client sends, which operations count, and the latency histograms.
//!
//! # Closed loop, open loop and coordinated omission
//!
//! In the default closed loop each client sends its next operation as soon
//! as the previous one completes, and latency is measured from that send.
//! When the cluster stalls, clients stall with it and send nothing, so a
//! stall shows up as one long sample per client rather than as the many
//! requests a steady stream of users would have sent meanwhile: this is
//! coordinated omission. Closed-loop percentiles therefore describe "the
//! latency a client sees when it waits for each answer", and understate what
//! users arriving at a fixed rate would see. The throughput numbers are not
//! affected.
//!
//! With a rate ([`LoadSpec::rate_per_sec`]) the load is open loop: client `k`
//! of `n` is scheduled to send at `go + (i + k/n) · n/rate`, and latency is
//! measured from that *intended* send time, as wrk2 does. A client that is
//! still waiting for an earlier answer sends late, and the wait counts in
//! the latency of the late request. (The protocol allows one outstanding
//! request per client, so the offered rate must be spread over enough
//! clients to be reachable at all.)

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, up to this.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// A new latency histogram: 1 ns to 60 s at three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// When a run stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Warm up for the first duration after every client is connected, then
    /// measure for the second: the runner's mode.
    Window {
        /// Operations run but not counted.
        warmup: Duration,
        /// Operations completed in this window are counted and recorded.
        measure: Duration,
    },
    /// Run this many operations in all, every one counted: criterion's
    /// `iter_custom` mode.
    Ops(u64),
}

/// One load: how many clients, how big the operations, when to stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadSpec {
    /// Concurrent clients, each with one request outstanding at a time.
    pub clients: usize,
    /// Bytes per operation.
    pub op_size: usize,
    /// When to stop.
    pub stop: Stop,
    /// Open loop at this many operations per second over all clients;
    /// `None` is a closed loop.
    pub rate_per_sec: Option<f64>,
}

/// What one load run measured.
#[derive(Clone, Debug)]
pub struct LoadResult {
    /// Operations counted.
    pub ops: u64,
    /// The time they took: the measurement window, or in [`Stop::Ops`]
    /// mode from the start signal to the last completion.
    pub elapsed: Duration,
    /// Latency of every counted operation, in nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// Operations that failed (the client gave up or the connection broke).
    pub errors: u64,
}

impl LoadResult {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// State shared by the clients of one run. Clients first complete one
/// unrecorded operation each (which opens their connections), then wait
/// until all are ready, so that connection setup is never measured.
pub struct Run {
    spec: LoadSpec,
    ready: AtomicUsize,
    go: OnceLock<Instant>,
    /// [`Stop::Ops`]: operations not yet claimed by a client.
    budget: AtomicI64,
    /// Counted operations so far, for progress reports.
    counted: AtomicU64,
    errors: AtomicU64,
    /// Set when the run must end early (a client could not start).
    abort: AtomicBool,
    /// Nanoseconds after `go` of the last counted completion.
    last_done_ns: AtomicU64,
    histograms: Mutex<Histogram<u64>>,
}

impl Run {
    /// A run of `spec`.
    pub fn new(spec: LoadSpec) -> Arc<Run> {
        let budget = match spec.stop {
            Stop::Ops(ops) => ops.min(i64::MAX as u64) as i64,
            Stop::Window { .. } => 0,
        };
        Arc::new(Run {
            spec,
            ready: AtomicUsize::new(0),
            go: OnceLock::new(),
            budget: AtomicI64::new(budget),
            counted: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            abort: AtomicBool::new(false),
            last_done_ns: AtomicU64::new(0),
            histograms: Mutex::new(new_histogram()),
        })
    }

    /// The spec of this run.
    pub fn spec(&self) -> &LoadSpec {
        &self.spec
    }

    /// Operations counted so far.
    pub fn counted(&self) -> u64 {
        self.counted.load(Ordering::Relaxed)
    }

    /// When the clients started (all connected), if they have.
    pub fn started_at(&self) -> Option<Instant> {
        self.go.get().copied()
    }

    /// Ends the run early: clients stop at their next operation. For a
    /// client that cannot connect, which would otherwise keep the others
    /// waiting for it forever.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }

    /// Counts an operation that failed.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Client `index`'s plan. Call [`ClientPlan::ready`] after its first
    /// (unrecorded) operation.
    pub fn client(self: &Arc<Run>, index: usize) -> ClientPlan {
        let interval = self
            .spec
            .rate_per_sec
            .map(|rate| Duration::from_secs_f64(self.spec.clients as f64 / rate.max(1e-9)));
        ClientPlan {
            run: self.clone(),
            index,
            interval,
            next_intended: None,
            latency_ns: new_histogram(),
        }
    }

    /// The result, once every client's plan has been dropped or finished.
    pub fn result(&self) -> LoadResult {
        let ops = self.counted.load(Ordering::Relaxed);
        let elapsed = match self.spec.stop {
            Stop::Window { measure, .. } => measure,
            Stop::Ops(_) => Duration::from_nanos(self.last_done_ns.load(Ordering::Relaxed)),
        };
        LoadResult {
            ops,
            elapsed,
            latency_ns: self
                .histograms
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// The measurement window, as offsets from `go`.
    fn window(&self) -> (Duration, Duration) {
        match self.spec.stop {
            Stop::Window { warmup, measure } => (warmup, warmup + measure),
            Stop::Ops(_) => (Duration::ZERO, Duration::MAX),
        }
    }
}

/// What a client is to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send now; the latency counts from `intended`.
    Send {
        /// When the operation was meant to be sent.
        intended: Instant,
    },
    /// Sleep this long (open loop, ahead of schedule), then ask again.
    Sleep(Duration),
    /// The others are not connected yet: sleep a little and ask again.
    Wait,
    /// The run is over.
    Stop,
}

/// One client's view of a [`Run`]: asks when to send, records what it took.
pub struct ClientPlan {
    run: Arc<Run>,
    index: usize,
    interval: Option<Duration>,
    next_intended: Option<Instant>,
    latency_ns: Histogram<u64>,
}

/// How long a client waits between looks at the start signal.
pub const WAIT_POLL: Duration = Duration::from_micros(200);

impl ClientPlan {
    /// Marks this client ready (connected, first operation done).
    pub fn ready(&self) {
        let ready = self.run.ready.fetch_add(1, Ordering::AcqRel) + 1;
        if ready == self.run.spec.clients {
            let _ = self.run.go.set(Instant::now());
        }
    }

    /// What to do next.
    pub fn next_step(&mut self) -> Next {
        let run = &*self.run;
        if run.abort.load(Ordering::Relaxed) {
            return Next::Stop;
        }
        let Some(&go) = run.go.get() else {
            return Next::Wait;
        };
        let now = Instant::now();
        match run.spec.stop {
            Stop::Window { .. } => {
                if now.saturating_duration_since(go) >= run.window().1 {
                    return Next::Stop;
                }
            }
            Stop::Ops(_) => {
                if run.budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
                    return Next::Stop;
                }
            }
        }
        let Some(interval) = self.interval else {
            return Next::Send { intended: now };
        };
        let intended = *self.next_intended.get_or_insert_with(|| {
            // Stagger the clients over one interval.
            let clients = run.spec.clients.max(1) as u32;
            go + interval * self.index as u32 / clients
        });
        if intended > now {
            if let Stop::Ops(_) = run.spec.stop {
                // The claimed operation is not sent yet: give it back.
                run.budget.fetch_add(1, Ordering::Relaxed);
            }
            return Next::Sleep(intended - now);
        }
        self.next_intended = Some(intended + interval);
        Next::Send { intended }
    }

    /// Records an operation meant to be sent at `intended` that has just
    /// completed, if it falls in the measurement window.
    pub fn done(&mut self, intended: Instant) {
        let now = Instant::now();
        let Some(&go) = self.run.go.get() else {
            return;
        };
        let (start, end) = self.run.window();
        let at = now.saturating_duration_since(go);
        if at < start || at > end {
            return;
        }
        let latency = now.saturating_duration_since(intended).as_nanos() as u64;
        self.latency_ns.saturating_record(latency.max(1));
        self.run.counted.fetch_add(1, Ordering::Relaxed);
        self.run
            .last_done_ns
            .fetch_max(at.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Drop for ClientPlan {
    fn drop(&mut self) {
        let mut all = self
            .run
            .histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Same bounds on both sides, so adding cannot fail.
        let _ = all.add(&self.latency_ns);
    }
}

/// One operation of an async client: a replicated write or a round trip.
pub(crate) trait AsyncOp {
    /// Performs the operation; returns whether it succeeded.
    async fn run(&mut self) -> bool;
}

/// Runs one client's closed- or open-loop schedule in async code: `client`
/// performs the operations, `sleep` waits. The first operation (which
/// connects) is not recorded.
pub(crate) async fn client_loop_async<C, Z, ZF>(mut plan: ClientPlan, client: &mut C, sleep: Z)
where
    C: AsyncOp,
    Z: Fn(Duration) -> ZF,
    ZF: std::future::Future<Output = ()>,
{
    if !client.run().await {
        plan.run.error();
        plan.run.abort();
    }
    plan.ready();
    loop {
        match plan.next_step() {
            Next::Send { intended } => {
                if client.run().await {
                    plan.done(intended);
                } else {
                    plan.run.error();
                }
            }
            Next::Sleep(duration) => sleep(duration).await,
            Next::Wait => sleep(WAIT_POLL).await,
            Next::Stop => return,
        }
    }
}

/// A client that could not be created: its every operation fails, which
/// aborts the run instead of leaving the other clients waiting for it.
pub(crate) struct Failed;

impl AsyncOp for Failed {
    async fn run(&mut self) -> bool {
        false
    }
}

/// `client_loop_async` for a blocking client on its own thread.
pub fn client_loop_blocking(mut plan: ClientPlan, mut submit: impl FnMut() -> bool) {
    if !submit() {
        plan.run.error();
        plan.run.abort();
    }
    plan.ready();
    loop {
        match plan.next_step() {
            Next::Send { intended } => {
                if submit() {
                    plan.done(intended);
                } else {
                    plan.run.error();
                }
            }
            Next::Sleep(duration) => std::thread::sleep(duration),
            Next::Wait => std::thread::sleep(WAIT_POLL),
            Next::Stop => return,
        }
    }
}

/// A client id no other client of this process, nor (very likely) of
/// another run against the same cluster, uses: a client table entry of an
/// earlier client with the same id would make the new client's requests
/// look stale.
pub fn unique_client_id() -> u128 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static NONCE: OnceLock<u64> = OnceLock::new();
    let nonce = *NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
    });
    (u128::from(nonce) << 64) | u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}
