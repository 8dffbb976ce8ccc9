//! The conformance suite on vr-tokio. The only tokio-specific code: the
//! suite's view of the adapter.

use std::io;
use std::net::{SocketAddr, TcpListener};

use vr_conformance::{conformance_tests, Runtime};
use vr_core::message::MemberId;
use vr_core::node::ReplicaOptions;
use vr_core::{ClientConfig, ClientError, Service};

/// vr-tokio under test.
struct Tokio;

/// vr-tokio's async client, driven by a current-thread runtime of its own.
struct BlockingClient {
    // Dropped before the runtime: its link tasks belong to it.
    client: vr_tokio::Client,
    runtime: tokio::runtime::Runtime,
}

impl Runtime for Tokio {
    const NAME: &'static str = "tokio";
    const THREAD_PREFIX: &'static str = "vr-replica-";
    type Client = BlockingClient;

    fn start_replica<S: Service + Send + 'static>(
        options: ReplicaOptions,
        listener: Option<TcpListener>,
        service: S,
    ) -> io::Result<vr_host::ReplicaHandle> {
        match listener {
            Some(listener) => vr_tokio::start_replica_with_listener(options, listener, service),
            None => vr_tokio::start_replica(options, service),
        }
    }

    fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<Self::Client> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = runtime.block_on(vr_tokio::Client::connect(addresses, config, cluster))?;
        Ok(BlockingClient { client, runtime })
    }
    fn submit(client: &mut Self::Client, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        client.runtime.block_on(client.client.submit(op))
    }
    fn reconfigure(
        client: &mut Self::Client,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError> {
        (client.runtime).block_on(client.client.reconfigure(members, addresses))
    }
    fn epoch(client: &Self::Client) -> (u32, Vec<MemberId>) {
        (client.client.epoch(), client.client.members())
    }
}

conformance_tests!(Tokio);
