//! One conformance suite for the runtime adapters, written once and run on
//! every runtime (issue 19, item 5).
//!
//! An adapter (vr-tokio, vr-mio, vr-glommio) implements [`Runtime`]: start a
//! replica, read its handle (address, running, a common view of its
//! counters, stop), and drive a blocking client. The tests are generic
//! functions over that trait; [`conformance_tests!`] expands to one `#[test]`
//! per suite function. The per-runtime code is the trait impl in
//! `tests/<runtime>.rs` and nothing else, so a change to an adapter's API
//! touches only its impl.
//!
//! ```ignore
//! struct Mio;
//! impl vr_conformance::Runtime for Mio { /* a few dozen lines */ }
//! vr_conformance::conformance_tests!(Mio);
//! ```
//!
//! What the suite covers, per runtime: a cluster under load whose primary
//! stops (§4.1, §4.2), frames larger than one read, bad input and the
//! inbound connection cap, reconnecting at once to a peer that connects,
//! reconfiguration with addresses (§7), and clean shutdown.
#![warn(missing_docs)]

mod harness;
mod runtime;
mod suite;

pub use harness::{Cluster, Executed, Recorder, TestClient};
pub use runtime::{Inbound, Outbound, Runtime, Stats};
pub use suite::*;

/// Expands to one `#[test]` per suite function, each running it on
/// `$runtime` (a type implementing [`Runtime`]).
///
/// A suite function that is not listed here runs nowhere: add new ones to
/// this list.
#[macro_export]
macro_rules! conformance_tests {
    ($runtime:ty) => {
        $crate::conformance_tests!(@each $runtime;
            cluster_survives_primary_stop_under_load,
            an_idle_cluster_keeps_its_view,
            largest_operations_arrive_intact,
            bad_frames_close_their_connection_and_are_counted,
            inbound_connections_beyond_the_cap_are_refused,
            a_peer_that_connects_is_connected_to_at_once,
            grow_to_five_then_shrink_while_a_client_writes,
            a_client_reaches_a_new_primary_at_the_address_the_notice_carried,
            stop_ends_threads_and_releases_ports,
            dropping_the_handle_stops_the_replica,
            a_client_gives_up_after_request_attempts_max,
        );
    };
    (@each $runtime:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::$name::<$runtime>();
            }
        )*
    };
}
