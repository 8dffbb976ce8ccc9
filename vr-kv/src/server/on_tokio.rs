//! The RESP front end on tokio: a thread with a current-thread runtime, a
//! local task per connection, and a `vr_tokio::Client` per connection.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::LocalSet;

use super::async_conn::{impl_async_runtime, refuse, serve, ConnectionSlots, StopSignal};
use super::{FrontEnd, Shared};

/// How long the acceptor pauses after `accept` fails (out of file
/// descriptors, say) so that it does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

impl_async_runtime!(
    stream: TcpStream,
    read: tokio::io::AsyncReadExt,
    write: tokio::io::AsyncWriteExt,
    close: shutdown,
    client: vr_tokio::Client,
);

/// Starts the front end on a thread of its own, accepting on `listener`.
pub(super) fn start(listener: std::net::TcpListener, shared: Arc<Shared>) -> io::Result<FrontEnd> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    listener.set_nonblocking(true)?;
    let listener = {
        let _context = runtime.enter();
        TcpListener::from_std(listener)?
    };
    let stop = Arc::new(StopSignal::default());
    let thread = std::thread::Builder::new()
        .name(format!("vr-kv-resp-{}", shared.view.replica()))
        .spawn({
            let stop = stop.clone();
            move || {
                // Local tasks: the connections share one thread and need
                // not be `Send`.
                let tasks = LocalSet::new();
                tasks.block_on(&runtime, accept_loop(listener, shared, &stop));
                // Dropping them closes every connection.
                drop(tasks);
                drop(runtime);
            }
        })?;
    Ok(FrontEnd::new(move || {
        stop.stop();
        if thread.join().is_err() {
            tracing::error!("the RESP front end's thread panicked");
        }
    }))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: &StopSignal) {
    let slots = ConnectionSlots::new(shared.connections_max);
    loop {
        tokio::select! {
            _ = stop.stopped() => return,
            accepted = listener.accept() => match accepted {
                Ok((mut socket, _peer)) => {
                    let _ = socket.set_nodelay(true);
                    match slots.take() {
                        Some(slot) => {
                            let shared = shared.clone();
                            tokio::task::spawn_local(async move {
                                if let Err(error) = serve::<vr_tokio::Client>(&mut socket, &shared).await {
                                    tracing::debug!(%error, "RESP connection ended");
                                }
                                drop(slot);
                            });
                        }
                        None => {
                            tokio::task::spawn_local(async move { refuse(&mut socket).await });
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            }
        }
    }
}
