//! What the two async front ends (tokio and glommio) share: the loop of one
//! RESP connection over a [`Session`], with the runtime's socket and VR
//! client behind two small traits, a bound on open connections, and a stop
//! signal that any thread can raise.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Mutex, PoisonError};
use std::task::{Poll, Waker};

use vr_core::{ClientConfig, ClientError};

use super::{Shared, ERR_MAX_CLIENTS};
use crate::resp::Reply;
use crate::session::{Session, Step, SubmitError};

/// Bytes asked of the socket per read: the most one batch can start from.
pub(crate) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A client's socket, as the connection loop uses it.
pub(crate) trait RespStream {
    /// Reads into `buffer`; 0 means the client closed its side.
    async fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `bytes`.
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Ends the write side, so that the client reads what was written
    /// before it sees the end.
    async fn shutdown(&mut self);
}

/// A runtime's VR client proxy: one request at a time.
pub(crate) trait VrClient: Sized {
    /// A client of the cluster `cluster` whose replica `i` is at
    /// `addresses[i]`.
    async fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<Self>;
    /// Replicates `op` and returns the service's result.
    async fn submit(&mut self, op: Vec<u8>) -> Result<Vec<u8>, ClientError>;
}

/// Implements [`RespStream`] for a runtime's TCP stream and [`VrClient`] for
/// its VR client: both runtimes name the methods alike, through their own
/// extension traits, so only the paths differ.
///
/// `close` is the runtime's method that shuts the write side.
macro_rules! impl_async_runtime {
    (
        stream: $stream:ty,
        read: $read:path,
        write: $write:path,
        close: $close:ident,
        client: $client:ty $(,)?
    ) => {
        impl $crate::server::async_conn::RespStream for $stream {
            async fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
                <Self as $read>::read(self, buffer).await
            }

            async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
                <Self as $write>::write_all(self, bytes).await
            }

            async fn shutdown(&mut self) {
                // The connection closes right after; a failure changes
                // nothing.
                let _ = <Self as $write>::$close(self).await;
            }
        }

        impl $crate::server::async_conn::VrClient for $client {
            async fn connect(
                addresses: Vec<std::net::SocketAddr>,
                config: vr_core::ClientConfig,
                cluster: u64,
            ) -> std::io::Result<Self> {
                <$client>::connect(addresses, config, cluster).await
            }

            async fn submit(&mut self, op: Vec<u8>) -> Result<Vec<u8>, vr_core::ClientError> {
                <$client>::submit(self, op).await
            }
        }
    };
}
pub(crate) use impl_async_runtime;

/// Serves one RESP connection until the client leaves or sends bad input.
/// The VR client `C` is connected when the first batch needs it.
pub(crate) async fn serve<C: VrClient>(
    stream: &mut impl RespStream,
    shared: &Shared,
) -> io::Result<()> {
    let mut session = Session::new();
    let mut client: Option<C> = None;
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match session.poll(&shared.view) {
            Step::Submit(op) => {
                let outcome = submit(&mut client, op, shared).await;
                session.complete(outcome);
            }
            Step::Idle => {
                if !session.output().is_empty() {
                    stream.write_all(session.output()).await?;
                    session.clear_output();
                }
                let want = session.read_room(&shared.view).min(chunk.len());
                let n = stream.read(&mut chunk[..want]).await?;
                if n == 0 {
                    return Ok(());
                }
                session.receive(&chunk[..n]);
            }
            Step::Close => {
                stream.write_all(session.output()).await?;
                stream.shutdown().await;
                return Ok(());
            }
        }
    }
}

async fn submit<C: VrClient>(
    client: &mut Option<C>,
    op: Vec<u8>,
    shared: &Shared,
) -> Result<Vec<u8>, SubmitError> {
    let client = match client {
        Some(client) => client,
        None => {
            let connected = C::connect(
                shared.replicas.clone(),
                shared.client_config(),
                shared.cluster(),
            )
            .await
            .map_err(|error| SubmitError::Unavailable(error.to_string()))?;
            client.insert(connected)
        }
    };
    client.submit(op).await.map_err(SubmitError::Client)
}

/// Tells a client that `resp_connections_max` connections are open, and
/// closes its connection.
pub(crate) async fn refuse(stream: &mut impl RespStream) {
    let reply = Reply::Error(ERR_MAX_CLIENTS.to_owned()).to_bytes();
    if stream.write_all(&reply).await.is_ok() {
        stream.shutdown().await;
    }
}

/// The count of open connections of one front end (whose tasks all run on
/// one thread), against its bound.
pub(crate) struct ConnectionSlots {
    open: Cell<usize>,
    max: usize,
}

/// One open connection; dropping it frees its slot.
pub(crate) struct ConnectionSlot(Rc<ConnectionSlots>);

impl ConnectionSlots {
    pub(crate) fn new(max: usize) -> Rc<ConnectionSlots> {
        Rc::new(ConnectionSlots {
            open: Cell::new(0),
            max,
        })
    }

    /// A slot for a new connection, or `None` when `max` are open.
    pub(crate) fn take(self: &Rc<Self>) -> Option<ConnectionSlot> {
        if self.open.get() >= self.max {
            return None;
        }
        self.open.set(self.open.get() + 1);
        Some(ConnectionSlot(self.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// Raised once, from any thread, to stop a front end whose loop waits in
/// [`StopSignal::stopped`]. A std `Waker` works across threads for both
/// tokio and glommio tasks.
#[derive(Default)]
pub(crate) struct StopSignal {
    state: Mutex<StopState>,
}

#[derive(Default)]
struct StopState {
    stopped: bool,
    waker: Option<Waker>,
}

impl StopSignal {
    /// Raises the signal and wakes the waiting task.
    pub(crate) fn stop(&self) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.stopped = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Returns once the signal is raised. One task waits at a time.
    pub(crate) async fn stopped(&self) {
        poll_fn(|cx| {
            // Each critical section is a flag test and a waker swap, so a
            // poisoned lock still holds a consistent state.
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.stopped {
                Poll::Ready(())
            } else {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}
