//! Viewstamped Replication over TCP with a hand-written [`mio`] event loop.
//!
//! The protocol lives in [`vr_core`]; this crate only moves bytes and time.
//! Each replica runs on its own thread: one [`mio::Poll`] loop that sleeps
//! until the next socket event or the node's deadline, feeds what it read
//! to a [`vr_core::node::ReplicaNode`], and carries out the node's outputs:
//! open a connection, queue a frame, close a connection. The node decides
//! everything else (reconnect backoff, queue bounds, addresses learned in a
//! reconfiguration, reply routing; see [`vr_core::node`]). Other threads
//! talk to the loop through a [`mio::Waker`] ([`ReplicaHandle::stats`],
//! [`ReplicaHandle::stop`]).
//!
//! - Every connection that was ready is read before the node's timers
//!   fire, so the requests of all of them share a Prepare (§6, batching).
//! - Everything queued for a connection in one turn goes out in one
//!   `write` when the socket allows.
//! - A connection that sends anything but valid frames of this cluster is
//!   logged, counted and closed; everyone else is served on.
//!
//! [`Client`] is a blocking client on its own small mio loop.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vr_core::{ClientConfig, Config, Service};
//! use vr_mio::{start_replica_with_listener, Client, ReplicaOptions};
//!
//! /// Appends every operation to a shared list and echoes it.
//! struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);
//! impl Service for Recorder {
//!     fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
//!         self.0.lock().unwrap().push(op.to_vec());
//!         op.to_vec()
//!     }
//!     // For checkpoints and state transfer: one page per operation.
//!     fn page_count(&self) -> u64 {
//!         self.0.lock().unwrap().len() as u64
//!     }
//!     fn read_page(&self, index: u64, out: &mut Vec<u8>) {
//!         out.extend_from_slice(&self.0.lock().unwrap()[index as usize]);
//!     }
//!     fn install_pages(&mut self, pages: &[&[u8]]) {
//!         *self.0.lock().unwrap() = pages.iter().map(|p| p.to_vec()).collect();
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::new(7, 1);
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let addresses = vec![listener.local_addr()?];
//! let executed = Arc::new(Mutex::new(Vec::new()));
//! let options = ReplicaOptions::new(config.clone(), addresses.clone(), vr_core::MemberId(0));
//! let replica = start_replica_with_listener(options, listener, Recorder(executed.clone()))?;
//!
//! let mut client = Client::connect(addresses, ClientConfig::new(&config, 1), config.cluster)?;
//! assert_eq!(client.submit(b"hello".to_vec())?, b"hello");
//! replica.stop();
//! assert_eq!(*executed.lock().unwrap(), vec![b"hello".to_vec()]);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
mod conn;
mod replica;

pub use client::{Client, ClientError};
pub use replica::{
    start_durable_replica_with_listener, start_replica, start_replica_with_listener,
};
pub use vr_core::node::{NodeStats, ReplicaOptions};
pub use vr_host::ReplicaHandle;
pub use vr_storage::data_dir::{Boot, DataDir};
