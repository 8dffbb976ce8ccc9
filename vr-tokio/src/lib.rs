//! Runtime adapter for tokio: not yet built (issue 4). This crate is an empty placeholder.
