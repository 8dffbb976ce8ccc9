//! `vr-sim`: the deterministic simulator of the Viewstamped Replication
//! project, and the tools to judge what it observes.
//!
//! * [`history`] — histories of a key-value service (invocations and
//!   completions by concurrent clients) and the text formats they are read
//!   from and written to (the simulator's `jsonl`, Jepsen's etcd logs,
//!   Porcupine's key-value logs);
//! * [`linearizability`] — a linearizability checker for those histories,
//!   independent of the protocol code it checks.
pub mod checks;
pub mod history;
pub mod kv;
pub mod linearizability;
pub mod network;
pub mod plan;
pub mod simulator;
pub mod trace;
pub mod workload;
pub use simulator::{plan_for, run_plan, run_seed, FinalReplica, Options, SeedReport, Simulator};
pub mod batch;
