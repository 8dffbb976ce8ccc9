//! Active expiry when no client writes: while this node is the primary and
//! its store holds keys whose deadline has passed, it sends `VR.SWEEP` to
//! its own RESP port, once per [`SWEEP_INTERVAL`]. `VR.SWEEP` is an
//! operation in the log like any other: every replica deletes the same
//! keys at the same op. Nothing is sent while no key is due, so an idle
//! cluster's log does not grow.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::service::lock;
use crate::session::wall_clock_micros;
use crate::store::Store;

/// How often the primary checks for due keys.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The running sweeper thread; stop it with [`Sweeper::stop`].
pub struct Sweeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// Starts the thread for the node whose store is `store`, whose RESP
    /// front end listens on `resp`, and which is the primary while
    /// `is_primary` says so.
    pub fn start(
        store: Arc<Mutex<Store>>,
        resp: SocketAddr,
        is_primary: Box<dyn Fn() -> bool + Send>,
    ) -> std::io::Result<Sweeper> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vr-kv-sweeper".to_owned())
            .spawn(move || run(&store, resp, &*is_primary, &stopped))?;
        Ok(Sweeper {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one check or one
    /// `VR.SWEEP` round trip, bounded by a timeout).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(store: &Mutex<Store>, resp: SocketAddr, is_primary: &dyn Fn() -> bool, stop: &AtomicBool) {
    let mut connection: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut next = Instant::now() + SWEEP_INTERVAL;
    while !stop.load(Ordering::Relaxed) {
        // Short naps, so that stopping is prompt.
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + SWEEP_INTERVAL;
        let now_ms = wall_clock_micros() / 1000;
        if !is_primary() || !lock(store).db().any_due_at(now_ms) {
            continue;
        }
        if connection.is_none() {
            connection = connect(resp);
        }
        let Some((writer, reader)) = connection.as_mut() else {
            continue;
        };
        let mut line = String::new();
        let ok = writer.write_all(b"*1\r\n$8\r\nVR.SWEEP\r\n").is_ok()
            && reader.read_line(&mut line).is_ok_and(|n| n > 0);
        if !ok {
            tracing::debug!("sweep connection lost; reconnecting at the next check");
            connection = None;
        }
    }
}

fn connect(resp: SocketAddr) -> Option<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect_timeout(&resp, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let reader = BufReader::new(stream.try_clone().ok()?);
    Some((stream, reader))
}
