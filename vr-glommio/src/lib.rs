//! Runtime adapter for glommio: not yet built (issue 4). This crate is an empty placeholder.
