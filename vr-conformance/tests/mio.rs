//! The conformance suite on vr-mio. The only mio-specific code: the suite's
//! view of the adapter.

use std::io;
use std::net::{SocketAddr, TcpListener};

use vr_conformance::{conformance_tests, Runtime};
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
    type Client = vr_mio::Client;

    fn start_replica<S: Service + Send + 'static>(
        options: ReplicaOptions,
        listener: Option<TcpListener>,
        service: S,
    ) -> io::Result<vr_host::ReplicaHandle> {
        match listener {
            Some(listener) => vr_mio::start_replica_with_listener(options, listener, service),
            None => vr_mio::start_replica(options, service),
        }
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
