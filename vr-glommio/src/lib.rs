//! Runs `vr-core` replicas and clients on glommio, a thread-per-core
//! executor over io_uring.
//!
//! Each replica runs on its own thread with its own
//! [`glommio::LocalExecutor`] (not pinned to a CPU), and moves bytes
//! between TCP sockets and a [`vr_core::node::ReplicaNode`]; it contains no
//! protocol logic. [`Client`] is the async client for code already inside a
//! glommio executor; [`BlockingClient`] runs one on its own thread for
//! everyone else.
//!
//! # Example
//!
//! A one-replica cluster and a client:
//!
//! ```
//! use std::net::TcpListener;
//! use vr_core::{ClientConfig, Config, Service};
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
//! let options = ReplicaOptions::new(config.clone(), addresses.clone(), vr_core::MemberId(0));
//! let replica = start_replica_with_listener(options, listener, Echo)?;
//!
//! let mut client = BlockingClient::connect(addresses, ClientConfig::new(&config, 1), 7)?;
//! assert_eq!(client.submit(b"hello".to_vec()), Ok(b"hello".to_vec()));
//! replica.stop();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Batching and bounds
//!
//! Each connection has one task and one queue of encoded frames, bounded in
//! bytes ([`ReplicaOptions::peer_queue_bytes_max`]; beyond it frames are
//! dropped and counted, and VR resends). Whenever the task gets to write,
//! it writes everything queued with one `write_all`, so frames produced
//! together leave in one send. Requests from different connections share
//! a Prepare: each connection task feeds the node what it read and wakes
//! one flusher task, which glommio runs after the connection tasks woken
//! with it, so the node's outputs are drained once for all of them
//! (`ReplicaNode::feed_bytes` and `flush`). Received bytes go to the node, which
//! consumes whole frames and rejects a header announcing more than
//! `message_size_max` before the body arrives, which bounds each receive
//! buffer.
//!
//! # Locked memory
//!
//! glommio registers `io_memory` bytes with each of an executor's three
//! io_uring rings, for storage IO. For a user without `CAP_IPC_LOCK` that
//! memory counts against `RLIMIT_MEMLOCK` (`ulimit -l`, 8 MiB here), summed
//! over all the user's processes; glommio refuses to start below 512 KiB.
//! glommio's default of 10 MiB per executor cannot be registered under such
//! a limit at all (glommio then logs a warning and falls back to ordinary
//! memory). The adapter does no storage IO, so it asks for glommio's
//! minimum, 64 KiB, which registers fine: measured on Linux 6.18 as an
//! unprivileged user with an 8 MiB limit, about 37 executors (at about
//! 220 KiB each, rings included) start at once; a test here runs at most
//! six. Root with `CAP_IPC_LOCK`, as on this project's machines, is not
//! limited. The rings keep glommio's default depth of 128 entries; a
//! smaller depth saves little (about 46 executors at a depth of 32). When
//! the limit is reached, starting a replica or a [`BlockingClient`] fails
//! with the `ENOMEM` error instead of panicking.
#![warn(missing_docs)]

mod client;
mod connection;
mod replica;
mod sync;

use std::future::Future;
use std::io;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

pub use client::{BlockingClient, Client};
pub use replica::{
    start_durable_replica_with_listener, start_replica, start_replica_with_listener, AdapterStats,
    ConnectionStats, ReplicaHandle, ReplicaOptions,
};
pub use vr_core::ClientError;
pub use vr_storage::data_dir::{Boot, DataDir};

/// glommio's `io_memory` for every executor of this crate: its minimum.
/// See "Locked memory" above.
const IO_MEMORY_BYTES: usize = 64 * 1024;

/// How long the executor runs tasks before it looks for IO completions and
/// expired timers again, when tasks stay ready. glommio's default of 100 ms
/// would let a busy replica miss its 10 ms heartbeats.
const PREEMPT_TIMER: Duration = Duration::from_millis(2);

/// How long opening a connection may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A member's address as a reconfiguration carries it: `ip:port` text.
fn parse_address(bytes: &[u8]) -> Option<std::net::SocketAddr> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn invalid_input(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.to_owned())
}

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
