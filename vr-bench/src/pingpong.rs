//! The floor: a plain TCP ping-pong on loopback with each runtime. An echo
//! server of that runtime sends back whatever it reads; a client writes one
//! message and waits for all of it to come back. Nothing is decoded, nothing
//! replicated: the cost of a round trip through the kernel and the runtime.
//!
//! A replicated write needs at least two round trips one after the other
//! (client to primary, primary to a backup and back, then the reply), so
//! twice the ping-pong latency is the floor for one client's write latency,
//! and the ping-pong rate at the same number of clients is a ceiling for
//! the write rate.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::runtime::{Runtime, GLOMMIO_IO_MEMORY_BYTES};

/// Bytes read at a time by the echo servers.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How often a server's loop looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(10);

/// A running echo server. Dropping it stops it.
pub struct EchoServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts an echo server of `runtime` on a free loopback port, on a
    /// thread of its own (as each replica has one).
    pub fn start(runtime: Runtime) -> io::Result<EchoServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vr-bench-{runtime}-echo"))
            .spawn(move || match runtime {
                Runtime::Mio => mio_echo(listener, &flag),
                Runtime::Tokio => tokio_echo(listener, &flag),
                Runtime::Glommio => glommio_echo(listener, &flag),
            })?;
        Ok(EchoServer {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if self.thread.is_some() && !std::thread::panicking() {
            self.shutdown();
        }
    }
}

// ---- mio ----

fn mio_echo(listener: std::net::TcpListener, stop: &AtomicBool) {
    use mio::{Events, Interest, Poll, Token};

    struct Connection {
        stream: mio::net::TcpStream,
        /// Echo bytes not yet written back.
        pending: Vec<u8>,
    }

    const LISTENER: Token = Token(usize::MAX);
    let mut poll = Poll::new().expect("mio poll");
    let mut listener = mio::net::TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .expect("register listener");
    let mut events = Events::with_capacity(1024);
    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(STOP_POLL)) {
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "mio poll failed: {e}");
            continue;
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let slot = connections
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or_else(|| {
                            connections.push(None);
                            connections.len() - 1
                        });
                    let registered = poll.registry().register(
                        &mut stream,
                        Token(slot),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if registered.is_ok() {
                        connections[slot] = Some(Connection {
                            stream,
                            pending: Vec::new(),
                        });
                    }
                }
                continue;
            }
            let slot = event.token().0;
            let Some(Some(c)) = connections.get_mut(slot) else {
                continue;
            };
            // Edge-triggered: read until WouldBlock, echo as we go.
            let mut closed = false;
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => c.pending.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            while !closed && !c.pending.is_empty() {
                match c.stream.write(&c.pending) {
                    Ok(n) => {
                        c.pending.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => closed = true,
                }
            }
            if closed {
                let _ = poll.registry().deregister(&mut c.stream);
                connections[slot] = None;
            }
        }
    }
}

/// A blocking ping-pong client on its own `mio::Poll`, the way `vr-mio`'s
/// client waits for its replies.
pub struct MioEchoClient {
    poll: mio::Poll,
    events: mio::Events,
    stream: mio::net::TcpStream,
}

impl MioEchoClient {
    /// Connects to `address`.
    pub fn connect(address: SocketAddr) -> io::Result<MioEchoClient> {
        let stream = std::net::TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        let poll = mio::Poll::new()?;
        poll.registry().register(
            &mut stream,
            mio::Token(0),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
        Ok(MioEchoClient {
            poll,
            events: mio::Events::with_capacity(4),
            stream,
        })
    }

    /// Sends `message` and waits until `buffer.len()` bytes came back.
    pub fn round_trip(&mut self, message: &[u8], buffer: &mut [u8]) -> io::Result<()> {
        let mut written = 0;
        let mut read = 0;
        while read < buffer.len() {
            let mut progressed = false;
            while written < message.len() {
                match self.stream.write(&message[written..]) {
                    Ok(n) => {
                        written += n;
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            loop {
                match self.stream.read(&mut buffer[read..]) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        read += n;
                        progressed = true;
                        if read == buffer.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if read < buffer.len() && !progressed {
                self.poll
                    .poll(&mut self.events, Some(Duration::from_secs(5)))?;
            }
        }
        Ok(())
    }
}

// ---- tokio ----

fn tokio_echo(listener: std::net::TcpListener, stop: &AtomicBool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let serve = async {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
                    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                        if stream.write_all(&chunk[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        };
        let stopped = async {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(STOP_POLL).await;
            }
        };
        tokio::select! {
            () = serve => {}
            () = stopped => {}
        }
    });
    // Dropping the runtime cancels the connection tasks and closes their sockets.
}

/// Connects a tokio ping-pong client to `address`.
pub async fn tokio_connect(address: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `message` and waits until `buffer.len()` bytes came back.
pub async fn tokio_round_trip(
    stream: &mut tokio::net::TcpStream,
    message: &[u8],
    buffer: &mut [u8],
) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(message).await?;
    stream.read_exact(buffer).await?;
    Ok(())
}

// ---- glommio ----

fn glommio_echo(listener: std::net::TcpListener, stop: &AtomicBool) {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::os::fd::{FromRawFd, IntoRawFd};

    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(GLOMMIO_IO_MEMORY_BYTES)
        .make()
        .expect("a glommio executor");
    executor.run(async {
        // SAFETY: the descriptor comes from a listener we own and give up here.
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
        let serve = async {
            while let Ok(mut stream) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                glommio::spawn_local(async move {
                    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
                    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                        if stream.write_all(&chunk[..n]).await.is_err() {
                            break;
                        }
                    }
                })
                .detach();
            }
        };
        let stopped = async {
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(STOP_POLL).await;
            }
        };
        futures_lite::future::or(serve, stopped).await;
    });
}

/// Connects a glommio ping-pong client to `address`.
pub async fn glommio_connect(address: SocketAddr) -> io::Result<glommio::net::TcpStream> {
    let stream = glommio::net::TcpStream::connect(address)
        .await
        .map_err(io::Error::from)?;
    stream.set_nodelay(true).map_err(io::Error::from)?;
    Ok(stream)
}

/// Sends `message` and waits until `buffer.len()` bytes came back.
pub async fn glommio_round_trip(
    stream: &mut glommio::net::TcpStream,
    message: &[u8],
    buffer: &mut [u8],
) -> io::Result<()> {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(message).await?;
    stream.read_exact(buffer).await?;
    Ok(())
}

/// The ping-pong message for operations of `op_size` bytes: as long as the
/// Request frame that carries such an operation, so the floor moves the
/// same bytes per round trip as a client's request does.
pub fn message_bytes(op_size: usize) -> usize {
    let request = vr_core::Message::Request(vr_core::message::Request {
        client_id: 0,
        request_number: 0,
        op: vec![0; op_size],
    });
    vr_core::codec::encoded_size(&request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_as_long_as_the_request_frame() {
        for op_size in [16, 1024] {
            let mut frame = Vec::new();
            let request = vr_core::Message::Request(vr_core::message::Request {
                client_id: 7,
                request_number: 1,
                op: vec![1; op_size],
            });
            vr_core::codec::encode(&request, 1, &mut frame);
            assert_eq!(message_bytes(op_size), frame.len());
            println!("op {op_size} B: request frame {} B", frame.len());
        }
    }

    #[test]
    fn every_runtime_echoes() {
        for runtime in Runtime::ALL {
            let server = EchoServer::start(runtime).unwrap();
            let mut client = MioEchoClient::connect(server.address()).unwrap();
            let message: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
            let mut back = vec![0; message.len()];
            client.round_trip(&message, &mut back).unwrap();
            assert_eq!(back, message, "{runtime}");
            server.stop();
        }
    }
}
