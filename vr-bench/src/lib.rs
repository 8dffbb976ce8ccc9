//! Benchmarks of the prepare/commit path, and the cross-runtime
//! interoperability test (`tests/interop.rs`), since this is the one crate
//! that depends on every adapter.
//!
//! Three things are measured, side by side (see `docs/benchmarks.md`):
//!
//! - [`mem`]: the core alone, a 3-replica cluster of `vr_core::Replica`s
//!   and `vr_core::Client`s wired in memory, no IO, no encoding;
//! - [`runtime`]: each runtime adapter's 3-replica cluster on loopback, with
//!   closed- or open-loop clients of the same runtime;
//! - [`pingpong`]: the floor, a plain TCP echo on loopback with each runtime.
//!
//! [`restart`] times a killed `vr-kv node` process back to normal
//! (`vr-bench restart`).
//!
//! `benches/` holds the criterion benchmarks (`cargo bench -p vr-bench`);
//! [`runner`] is the comparison that `cargo run --release -p vr-bench`
//! prints, charts and saves as JSON ([`report`]). Latency comes from HDR
//! histograms recorded at the client ([`load`], which also says what a
//! closed loop means for the percentiles).
//!
//! "Batch" in these benchmarks is the core's Prepare batching,
//! `Config::batch_ops_max` (1 switches it off): the runner and the
//! criterion benchmarks measure the core and the runtimes with several
//! values side by side.
#![warn(missing_docs)]

pub mod load;
pub mod mem;
pub mod pingpong;
pub mod report;
pub mod restart;
pub mod runner;
pub mod runtime;
pub mod service;
