//! Viewstamped Replication over TCP on tokio.
//!
//! The protocol lives in `vr-core` ([`vr_core::node::ReplicaNode`] and
//! [`vr_core::node::ClientNode`]): they decode, route, decide which
//! connections to open and close, back off, bound queues and learn the
//! addresses a reconfiguration carries. This crate only moves bytes and
//! time between them and sockets:
//!
//! - [`start_replica`] runs one replica on its own thread with a
//!   current-thread tokio runtime and returns a [`ReplicaHandle`] to read
//!   its [`NodeStats`] and to stop it. One task owns the node; every
//!   connection has a task of its own that owns the socket, writes what the
//!   node queued on it and hands what it reads to the node's task.
//! - Every connection event that is ready is fed to the node before its
//!   timers fire, so the requests of many connections share a Prepare (§6,
//!   batching); what the node queued on one connection in one turn leaves
//!   in one write.
//! - A durable replica's persists run on tokio's blocking threads, one at
//!   a time, off the loop.
//! - [`Client`] submits operations from the caller's tokio runtime, one at a
//!   time, connecting to replicas on demand.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vr_core::{ClientConfig, Config, MemberId, Service};
//! use vr_tokio::{start_replica_with_listener, Client, ReplicaOptions};
//!
//! /// Appends every operation to a shared log and echoes it.
//! struct Log(Arc<Mutex<Vec<Vec<u8>>>>);
//! impl Service for Log {
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
//! let log = Arc::new(Mutex::new(Vec::new()));
//! let options = ReplicaOptions::new(config.clone(), addresses.clone(), MemberId(0));
//! let replica = start_replica_with_listener(options, listener, Log(log.clone()))?;
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let mut client = Client::connect(addresses, ClientConfig::new(&config, 42), 7).await?;
//!     assert_eq!(client.submit(b"hello".to_vec()).await?, b"hello");
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! replica.stop();
//! assert_eq!(*log.lock().unwrap(), vec![b"hello".to_vec()]);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
mod link;
mod replica;

pub use client::Client;
pub use replica::{
    start_durable_replica_with_listener, start_replica, start_replica_with_listener,
};
pub use vr_core::node::{NodeStats, ReplicaOptions};
pub use vr_core::ClientError;
pub use vr_host::ReplicaHandle;
pub use vr_storage::data_dir::{Boot, DataDir};
