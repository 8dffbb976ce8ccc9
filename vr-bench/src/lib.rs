//! Benchmarks of the prepare/commit path across runtimes: not built yet
//! (issue 9). For now this crate holds the cross-runtime interoperability
//! test (`tests/interop.rs`), since it is the one crate that depends on every
//! adapter.
