//! Benchmarks of the prepare/commit path: not yet built (issue 9). This crate is an empty placeholder.
