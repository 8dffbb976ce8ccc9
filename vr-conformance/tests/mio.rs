//! The conformance suite on vr-mio. The only mio-specific code: the suite's
//! view of the adapter.

use std::io;
use std::net::{SocketAddr, TcpListener};

use vr_conformance::{conformance_tests, Inbound, Outbound, Runtime, Stats};
use vr_core::message::MemberId;
use vr_core::node::ReplicaOptions;
use vr_core::{ClientConfig, ClientError, Service};

/// vr-mio under test.
struct Mio;

/// The suite's client errors are the core's; an I/O failure of the client's
/// own event loop fails the test.
fn core_error(error: vr_mio::ClientError) -> ClientError {
    match error {
        vr_mio::ClientError::Request(error) => error,
        vr_mio::ClientError::Io(error) => panic!("the mio client's event loop failed: {error}"),
    }
}

impl Runtime for Mio {
    const NAME: &'static str = "mio";
    // "vr-mio-replica-N" and "vr-mio-disk-N", cut to 15 bytes.
    const THREAD_PREFIX: &'static str = "vr-mio-";
    type Replica = vr_mio::ReplicaHandle;
    type Client = vr_mio::Client;

    fn start_replica<S: Service + Send + 'static>(
        options: ReplicaOptions,
        listener: Option<TcpListener>,
        service: S,
    ) -> io::Result<Self::Replica> {
        match listener {
            Some(listener) => vr_mio::start_replica_with_listener(options, listener, service),
            None => vr_mio::start_replica(options, service),
        }
    }
    fn local_addr(replica: &Self::Replica) -> SocketAddr {
        replica.local_addr()
    }
    fn is_running(replica: &Self::Replica) -> bool {
        replica.is_running()
    }
    fn stats(replica: &Self::Replica) -> Stats {
        let s = replica.stats();
        let (outbound, inbound): (Vec<_>, Vec<_>) =
            s.connections.iter().partition(|c| c.replica.is_some());
        Stats {
            connections_accepted: s.connections_accepted,
            connections_refused: s.connections_refused,
            connections_closed_bad_input: s.connections_closed_bad_input,
            connections_closed_mid_frame: s.connections_closed_mid_frame,
            connect_failures: s.connect_failures,
            inbound: (inbound.iter())
                .map(|c| Inbound {
                    bytes_in: c.bytes_in,
                    frames_in: None,
                })
                .collect(),
            outbound: Some(
                (outbound.iter())
                    .filter_map(|c| {
                        Some(Outbound {
                            member: c.replica?,
                            frames_out: None,
                            writes: None,
                        })
                    })
                    .collect(),
            ),
            node: s.node,
        }
    }
    fn stop(replica: Self::Replica) {
        replica.stop()
    }

    fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<Self::Client> {
        vr_mio::Client::connect(addresses, config, cluster)
    }
    fn submit(client: &mut Self::Client, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        client.submit(op).map_err(core_error)
    }
    fn reconfigure(
        client: &mut Self::Client,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError> {
        client.reconfigure(members, addresses).map_err(core_error)
    }
    fn epoch(client: &Self::Client) -> (u32, Vec<MemberId>) {
        (client.epoch(), client.members())
    }
}

conformance_tests!(Mio);
