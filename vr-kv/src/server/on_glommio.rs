//! The RESP front end on glommio: a thread with a glommio executor, a task
//! per connection, and a `vr_glommio::Client` per connection (its replica
//! connections are tasks of the same executor).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};
use glommio::task::JoinHandle;
use glommio::{spawn_local, LocalExecutorBuilder, Placement};

use super::async_conn::{impl_async_runtime, refuse, serve, ConnectionSlots, StopSignal};
use super::{FrontEnd, Shared};

/// glommio's `io_memory` for the front end's executor: its minimum, as
/// `vr-glommio` asks for, since nothing here does storage IO and the
/// memory counts against `ulimit -l` (see `vr-glommio`'s crate docs).
const IO_MEMORY_BYTES: usize = 64 * 1024;

/// How long the executor runs ready tasks before it looks for IO
/// completions and timers again; glommio's 100 ms default would delay the
/// client proxies' timers behind a busy connection.
const PREEMPT_TIMER: Duration = Duration::from_millis(2);

/// How long the acceptor pauses after `accept` fails (out of file
/// descriptors, say) so that it does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// A pause on stop that lets glommio's reactor hand the cancellations of
/// pending operations to the kernel before the sockets close.
const CANCEL_FLUSH_DELAY: Duration = Duration::from_millis(1);

impl_async_runtime!(
    stream: TcpStream,
    read: futures_lite::io::AsyncReadExt,
    write: futures_lite::io::AsyncWriteExt,
    close: close,
    client: vr_glommio::Client,
);

/// The tasks serving connections, by a number of the acceptor's, so that
/// stopping can cancel them.
type Tasks = Rc<RefCell<HashMap<u64, JoinHandle<()>>>>;

/// Starts the front end on a thread of its own, accepting on `listener`;
/// returns once its executor runs, or with the error that kept it from
/// starting.
pub(super) fn start(listener: std::net::TcpListener, shared: Arc<Shared>) -> io::Result<FrontEnd> {
    listener.set_nonblocking(true)?;
    let stop = Arc::new(StopSignal::default());
    let (ready, started) = sync_channel(1);
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("vr-kv-resp-{}", shared.view.replica()))
        .io_memory(IO_MEMORY_BYTES)
        .preempt_timer(PREEMPT_TIMER)
        .spawn({
            let stop = stop.clone();
            move || {
                // Called on the new thread once its executor exists.
                let _ = ready.send(());
                run(listener, shared, stop)
            }
        })?;
    if started.recv().is_err() {
        return Err(match executor.join() {
            Err(error) => error.into(),
            Ok(()) => io::Error::other("the executor ended before it started"),
        });
    }
    Ok(FrontEnd::new(move || {
        stop.stop();
        if let Err(error) = executor.join() {
            tracing::error!(%error, "the RESP front end's executor failed");
        }
    }))
}

/// The root task: accepts until stopped, then cancels every connection.
async fn run(listener: std::net::TcpListener, shared: Arc<Shared>, stop: Arc<StopSignal>) {
    // SAFETY: the descriptor comes from a bound, listening listener that we
    // own, and `into_raw_fd` hands its ownership over exactly once.
    let listener = Rc::new(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) });
    let tasks = Tasks::default();
    let acceptor = spawn_local(accept(listener.clone(), shared, tasks.clone())).detach();
    stop.stopped().await;
    acceptor.cancel();
    acceptor.await;
    let connections: Vec<_> = tasks.borrow_mut().drain().map(|(_, task)| task).collect();
    for task in &connections {
        task.cancel();
    }
    for task in connections {
        task.await;
    }
    // The cancelled accept holds the listening socket in the kernel until
    // the reactor submits its cancellation; one trip through the reactor
    // does that, so the port is free when `stop` returns.
    glommio::timer::sleep(CANCEL_FLUSH_DELAY).await;
    drop(listener);
}

async fn accept(listener: Rc<TcpListener>, shared: Arc<Shared>, tasks: Tasks) {
    let slots = ConnectionSlots::new(shared.connections_max);
    let mut next_id = 0u64;
    loop {
        let mut stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let slot = slots.take();
        let shared = shared.clone();
        let done = tasks.clone();
        let task = spawn_local(async move {
            match slot {
                Some(_slot) => {
                    if let Err(error) = serve::<vr_glommio::Client>(&mut stream, &shared).await {
                        tracing::debug!(%error, "RESP connection ended");
                    }
                }
                None => refuse(&mut stream).await,
            }
            done.borrow_mut().remove(&id);
        })
        .detach();
        // The task cannot have run yet: this task has not yielded since.
        tasks.borrow_mut().insert(id, task);
    }
}
