//! Runs `vr-core` replicas and clients on glommio, a thread-per-core
//! executor over io_uring.
//!
//! The protocol lives in [`vr_core`]; this crate only moves bytes and time.
//! Each replica runs on its own thread with its own
//! [`glommio::LocalExecutor`] (not pinned to a CPU): a task per connection
//! feeds what it reads to a [`vr_core::node::ReplicaNode`] and writes what
//! the node queued for it; the node decides everything else (which
//! connections to open and close, reconnect backoff, connect timeouts,
//! queue bounds, addresses learned in a reconfiguration, reply routing; see
//! [`vr_core::node`]). [`Client`] is the async client for code already
//! inside a glommio executor; [`BlockingClient`] runs one on its own thread
//! for everyone else.
//!
//! # Example
//!
//! A one-replica cluster and a client:
//!
//! ```
//! use std::net::TcpListener;
//! use vr_core::{ClientConfig, Config, MemberId, Service};
//! use vr_glommio::{start_replica_with_listener, BlockingClient, ReplicaOptions};
//!
//! /// Answers every operation with the operation itself.
//! struct Echo;
//! impl Service for Echo {
//!     fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
//!         op.to_vec()
//!     }
//!     // Stateless: no pages to checkpoint.
//!     fn page_count(&self) -> u64 {
//!         0
//!     }
//!     fn read_page(&self, _index: u64, _out: &mut Vec<u8>) {}
//!     fn install_pages(&mut self, _pages: &[&[u8]]) {}
//! }
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let config = Config::new(7, 1);
//! let addresses = vec![listener.local_addr()?];
//! let options = ReplicaOptions::new(config.clone(), addresses.clone(), MemberId(0));
//! let replica = start_replica_with_listener(options, listener, Echo)?;
//!
//! let mut client = BlockingClient::connect(addresses, ClientConfig::new(&config, 1), 7)?;
//! assert_eq!(client.submit(b"hello".to_vec()), Ok(b"hello".to_vec()));
//! assert_eq!(replica.stats().frames_to_clients, 1);
//! replica.stop();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Batching
//!
//! Requests from different connections share a Prepare (§6): a connection
//! task feeds the node what it read and wakes one driver task, which
//! glommio runs after every connection task woken in the same round of its
//! reactor (its run queue is first in, first out), so the node's outputs,
//! and its batch timer, are drained once for all of them. Whatever the
//! node queued for a connection by the time its task gets to write leaves
//! in one `write_all`.
//!
//! # Locked memory
//!
//! glommio registers `io_memory` bytes with each of an executor's three
//! io_uring rings, for storage IO. For a user without `CAP_IPC_LOCK` that
//! memory counts against `RLIMIT_MEMLOCK` (`ulimit -l`, 8 MiB here), summed
//! over all the user's processes; glommio refuses to start below 512 KiB.
//! glommio's default of 10 MiB per executor cannot be registered under such
//! a limit at all (glommio then logs a warning and falls back to ordinary
//! memory). The adapter does no storage IO on the rings, so it asks for
//! glommio's minimum, 64 KiB, which registers fine: measured on Linux 6.18
//! as an unprivileged user with an 8 MiB limit, about 37 executors (at
//! about 220 KiB each, rings included) start at once. Root with
//! `CAP_IPC_LOCK`, as on this project's machines, is not limited. When the
//! limit is reached, starting a replica or a [`BlockingClient`] fails with
//! the `ENOMEM` error instead of panicking.
#![warn(missing_docs)]

mod client;
mod conn;
mod replica;
mod sync;

use std::future::Future;
use std::io;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

pub use client::{BlockingClient, Client};
pub use replica::{
    start_durable_replica_with_listener, start_replica, start_replica_with_listener,
};
pub use vr_core::node::{NodeStats, ReplicaOptions};
pub use vr_core::ClientError;
pub use vr_host::ReplicaHandle;
pub use vr_storage::data_dir::{Boot, DataDir};

/// glommio's `io_memory` for every executor of this crate: its minimum.
/// See "Locked memory" above.
const IO_MEMORY_BYTES: usize = 64 * 1024;

/// How long the executor runs tasks before it looks for IO completions and
/// expired timers again, when tasks stay ready. glommio's default of 100 ms
/// would let a busy replica miss its 10 ms heartbeats.
const PREEMPT_TIMER: Duration = Duration::from_millis(2);

/// Starts a thread running a glommio executor with the root task that
/// `make_root` makes there, and returns once the executor is up, or with
/// the error that kept it from starting.
fn spawn_executor<G, F>(name: &str, make_root: G) -> io::Result<ExecutorJoinHandle<()>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let (ready, started) = sync_channel(1);
    let thread = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(IO_MEMORY_BYTES)
        .preempt_timer(PREEMPT_TIMER)
        .spawn(move || {
            // Called on the new thread once its executor exists.
            let _ = ready.send(());
            make_root()
        })?;
    match started.recv() {
        Ok(()) => Ok(thread),
        Err(_) => Err(match thread.join() {
            Err(error) => error.into(),
            Ok(()) => io::Error::other("the executor ended before it started"),
        }),
    }
}
