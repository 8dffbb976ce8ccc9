//! What every std host of a [`vr_core::node::ReplicaNode`] shares, whatever
//! its runtime: the adapters (`vr-mio`, `vr-tokio`, `vr-glommio`) keep
//! only their socket calls, timers and buffers, and this crate the rest.
//!
//! - [`Clock`]: the std clock, as the core's [`vr_core::Instant`]s.
//! - [`prepare`]: checks the options, builds the replica (diskless, or from
//!   its data directory as its [`Boot`] says) and wraps it in its node.
//! - [`ReplicaHandle`]: one handle type for a replica on any runtime: its
//!   address, whether it runs, its [`NodeStats`], and stopping it. The
//!   adapter's loop answers [`Control`]s.
//! - [`Persister`]: a durable replica's persists, one at a time, on a
//!   thread of their own; each outcome goes back through a callback that
//!   wakes the adapter's loop.
//! - [`log_event`]: what the node reported, at the level an operator needs.
#![warn(missing_docs)]

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use vr_core::node::{NodeEvent, NodeStats, ReplicaNode, ReplicaOptions};
use vr_core::{MemberId, Service};
use vr_storage::data_dir::{Boot, DataDir, PersistJob};

/// The core's clock: nanoseconds since the loop started, read from the
/// std monotonic clock (the core never reads one itself).
#[derive(Clone, Copy, Debug)]
pub struct Clock(std::time::Instant);

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock(std::time::Instant::now())
    }

    /// Now, as the core counts time.
    pub fn now(self) -> vr_core::Instant {
        let ns = self.0.elapsed().as_nanos();
        vr_core::Instant::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// How long until `deadline`: zero if it passed.
    pub fn until(self, deadline: vr_core::Instant) -> Duration {
        Duration::from_nanos(deadline.saturating_since(self.now()))
    }

    /// The std instant of the core's `at`. An instant past what the OS
    /// clock holds (centuries away) is a day from now instead: a loop
    /// that wakes then sleeps again.
    pub fn instant(self, at: vr_core::Instant) -> std::time::Instant {
        (self.0.checked_add(Duration::from_nanos(at.as_nanos())))
            .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(86_400))
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// Logs what the node reported, at the level an operator needs.
pub fn log_event(replica: MemberId, event: &NodeEvent) {
    if event.needs_attention() {
        tracing::warn!(replica = %replica, "{event}")
    } else {
        tracing::info!(replica = %replica, "{event}")
    }
}

/// A replica ready for its loop: the node, its clock, and a durable
/// replica's data directory.
pub struct Prepared<S: Service> {
    /// The replica inside its node.
    pub node: ReplicaNode<S>,
    /// The clock the node was started at.
    pub clock: Clock,
    /// This replica's member id.
    pub me: MemberId,
    /// A durable replica's data directory (for a [`Persister`]).
    pub data_dir: Option<DataDir>,
}

/// Checks `options`, builds the replica, diskless (`disk` is `None`) or
/// from its data directory as `boot` says, and wraps it in its node.
pub fn prepare<S: Service>(
    mut options: ReplicaOptions,
    service: S,
    disk: Option<(DataDir, Boot)>,
) -> io::Result<Prepared<S>> {
    options.validate().map_err(invalid_input)?;
    let clock = Clock::new();
    let (replica, data_dir) = vr_storage::data_dir::build_node_replica(&mut options, service, disk)
        .map_err(|error| invalid_input(&error))?;
    Ok(Prepared {
        node: ReplicaNode::new(replica, &options, clock.now()),
        clock,
        me: options.replica,
        data_dir,
    })
}

/// Binds the replica's own address: `options.addresses[options.replica]`.
pub fn bind_own_address(options: &ReplicaOptions) -> io::Result<TcpListener> {
    let address = options
        .addresses
        .get(usize::from(options.replica.0))
        .ok_or_else(|| invalid_input("no address for this replica's member id"))?;
    TcpListener::bind(address)
}

/// An [`io::ErrorKind::InvalidInput`] error saying `why`.
pub fn invalid_input(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.to_owned())
}

/// A request from a [`ReplicaHandle`] to the replica's loop.
#[derive(Debug)]
pub enum Control {
    /// Answer with a snapshot of the node's counters (the asker may have
    /// given up; a failed answer is nothing to worry about).
    Stats(SyncSender<NodeStats>),
    /// End the loop: close the listener and every connection.
    Stop,
}

/// The thread a replica's loop runs on, as its handle sees it.
pub trait LoopThread: Send + Sync + 'static {
    /// Whether the loop has ended.
    fn is_finished(&self) -> bool;
    /// Waits for the loop to end; `Err` carries its panic.
    fn join(self: Box<Self>) -> std::thread::Result<()>;
}

impl LoopThread for std::thread::JoinHandle<()> {
    fn is_finished(&self) -> bool {
        std::thread::JoinHandle::is_finished(self)
    }

    fn join(self: Box<Self>) -> std::thread::Result<()> {
        std::thread::JoinHandle::join(*self)
    }
}

/// A running replica, on whatever runtime. Dropping it stops the replica,
/// like [`ReplicaHandle::stop`].
pub struct ReplicaHandle {
    address: SocketAddr,
    /// Hands a request to the loop (and wakes it); `false` once it ended.
    control: Box<dyn Fn(Control) -> bool + Send + Sync>,
    thread: Option<Box<dyn LoopThread>>,
    /// The last snapshot received, returned once the loop has ended.
    last_stats: Mutex<NodeStats>,
}

impl ReplicaHandle {
    /// The handle of a replica listening on `address` whose loop runs on
    /// `thread` and takes requests through `control`.
    pub fn new(
        address: SocketAddr,
        control: impl Fn(Control) -> bool + Send + Sync + 'static,
        thread: impl LoopThread,
    ) -> ReplicaHandle {
        ReplicaHandle {
            address,
            control: Box::new(control),
            thread: Some(Box::new(thread)),
            last_stats: Mutex::default(),
        }
    }

    /// The address the replica listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Whether the replica still runs: `false` once its loop ended (a
    /// storage error stops a durable replica; see the log).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// A snapshot of the node's counters, connections and numbers, taken by
    /// the replica's loop between two inputs (so it is consistent); once
    /// the loop has ended, the last snapshot taken. Callable from any
    /// thread, an async runtime's included: it blocks only until the loop
    /// answers.
    pub fn stats(&self) -> NodeStats {
        let (reply, answer) = mpsc::sync_channel(1);
        let mut last = (self.last_stats.lock()).unwrap_or_else(PoisonError::into_inner);
        // Fails only when the loop has ended, or ends without answering.
        if (self.control)(Control::Stats(reply)) {
            if let Ok(stats) = answer.recv() {
                *last = stats;
            }
        }
        last.clone()
    }

    /// Stops the replica: closes the listener and every connection, drops
    /// the service, and returns once its loop has ended.
    ///
    /// # Panics
    ///
    /// If the replica's loop panicked (a bug), the panic is passed on here.
    pub fn stop(mut self) {
        if let Err(panic) = self.shutdown() {
            std::panic::resume_unwind(panic);
        }
    }

    fn shutdown(&mut self) -> std::thread::Result<()> {
        // Fails only if the loop has ended already; the join is then at once.
        (self.control)(Control::Stop);
        match self.thread.take() {
            Some(thread) => thread.join(),
            None => Ok(()),
        }
    }
}

impl Drop for ReplicaHandle {
    fn drop(&mut self) {
        if self.shutdown().is_err() {
            tracing::error!(address = %self.address, "replica thread panicked");
        }
    }
}

/// The outcome of one persist: its sequence number, and whether the data
/// directory took it.
pub type Persisted = (u64, Result<(), vr_storage::Error>);

/// A durable replica's data directory on a thread of its own: persists go
/// in with [`Persister::submit`], one at a time as the core emits them,
/// and each outcome goes to the callback, which hands it to the loop (and
/// wakes it). The thread ends after a failure (the replica must stop) or
/// when the persister is dropped.
pub struct Persister {
    jobs: mpsc::Sender<PersistJob>,
}

impl Persister {
    /// Starts the thread for replica `me`'s `dir`.
    pub fn start(
        me: MemberId,
        mut dir: DataDir,
        done: impl Fn(Persisted) -> bool + Send + 'static,
    ) -> io::Result<Persister> {
        let (jobs, job_rx) = mpsc::channel::<PersistJob>();
        std::thread::Builder::new()
            .name(format!("vr-disk-{me}"))
            .spawn(move || {
                while let Ok(job) = job_rx.recv() {
                    let outcome = dir.persist(&job);
                    let failed = outcome.is_err();
                    // A loop that is gone takes no more persists.
                    if !done((job.sequence(), outcome)) || failed {
                        return;
                    }
                }
            })?;
        Ok(Persister { jobs })
    }

    /// Hands `job` to the thread; `false` if it has ended (after a failure
    /// it reported).
    pub fn submit(&self, job: PersistJob) -> bool {
        self.jobs.send(job).is_ok()
    }
}

/// Hands the persist that `node` emitted to `disk`, reading what it needs
/// from the replica as it is drained ([`PersistJob::new`]). Logs if no
/// thread takes it: it ended after a failure it reported (the loop stops
/// on that report), or a diskless replica asked (a bug).
pub fn submit_persist<S: Service>(
    disk: Option<&Persister>,
    node: &ReplicaNode<S>,
    me: MemberId,
    persist: vr_core::Persist,
) {
    let job = PersistJob::new(node.replica(), persist);
    if !disk.is_some_and(|d| d.submit(job)) {
        tracing::error!(replica = %me, "persist not carried out: no disk thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop on a std thread that answers `answers` stats requests (each
    /// snapshot counting one more frame), then ends; or ends on `Stop`,
    /// panicking then if `panics`.
    fn fake_loop(answers: u64, panics: bool) -> ReplicaHandle {
        let (tx, rx) = mpsc::channel::<Control>();
        let thread = std::thread::spawn(move || {
            let mut stats = NodeStats::default();
            for _ in 0..answers {
                match rx.recv() {
                    Ok(Control::Stats(reply)) => {
                        stats.frames_to_replicas += 1;
                        let _ = reply.send(stats.clone());
                    }
                    Ok(Control::Stop) | Err(_) => break,
                }
            }
            assert!(!panics, "the loop's bug");
        });
        let address = SocketAddr::from(([127, 0, 0, 1], 7000));
        ReplicaHandle::new(address, move |c| tx.send(c).is_ok(), thread)
    }

    #[test]
    fn a_handle_keeps_the_last_snapshot_once_the_loop_has_ended() {
        let handle = fake_loop(2, false);
        assert_eq!(handle.stats().frames_to_replicas, 1);
        assert_eq!(handle.stats().frames_to_replicas, 2);
        // The loop has ended: its requests fail, the last snapshot stays.
        while handle.is_running() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(handle.stats().frames_to_replicas, 2);
        handle.stop();
    }

    #[test]
    fn stop_passes_on_the_loops_panic_and_drop_does_not() {
        let handle = fake_loop(u64::MAX, true);
        assert!(handle.is_running());
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle.stop()));
        assert!(stopped.is_err(), "the loop's panic reached the caller");
        // Dropped, the handle stops the loop and logs the panic instead.
        drop(fake_loop(u64::MAX, true));
    }

    #[test]
    fn the_clock_converts_both_ways() {
        let clock = Clock::new();
        let now = clock.now();
        assert_eq!(clock.until(now), Duration::ZERO, "a passed deadline is now");
        let later = vr_core::Instant::from_nanos(now.as_nanos() + 5_000_000_000);
        assert!(clock.until(later) > Duration::from_secs(4));
        let at = clock.instant(later);
        assert!(at > std::time::Instant::now() + Duration::from_secs(4));
        // Centuries away: no overflow, no panic.
        let never = clock.instant(vr_core::Instant::from_nanos(u64::MAX));
        assert!(never > std::time::Instant::now() + Duration::from_secs(3600));
    }
}
