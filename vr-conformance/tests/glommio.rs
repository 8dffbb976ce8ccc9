//! The conformance suite on vr-glommio. The only glommio-specific code: the
//! suite's view of the adapter.

use std::io;
use std::net::{SocketAddr, TcpListener};

use vr_conformance::{conformance_tests, Runtime};
use vr_core::message::MemberId;
use vr_core::node::ReplicaOptions;
use vr_core::{ClientConfig, ClientError, Service};

/// vr-glommio under test.
struct Glommio;

impl Runtime for Glommio {
    const NAME: &'static str = "glommio";
    // Executors "vr-replica-N" and "vr-client-ID", and glommio's helper
    // threads, named after their executor.
    const THREAD_PREFIX: &'static str = "vr-";
    type Client = vr_glommio::BlockingClient;

    fn start_replica<S: Service + Send + 'static>(
        options: ReplicaOptions,
        listener: Option<TcpListener>,
        service: S,
    ) -> io::Result<vr_host::ReplicaHandle> {
        match listener {
            Some(listener) => vr_glommio::start_replica_with_listener(options, listener, service),
            None => vr_glommio::start_replica(options, service),
        }
    }

    fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<Self::Client> {
        vr_glommio::BlockingClient::connect(addresses, config, cluster)
    }
    fn submit(client: &mut Self::Client, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        client.submit(op)
    }
    fn reconfigure(
        client: &mut Self::Client,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError> {
        client.reconfigure(members, addresses)
    }
    fn epoch(client: &Self::Client) -> (u32, Vec<MemberId>) {
        client.epoch()
    }
}

conformance_tests!(Glommio);
