//! Helpers shared by the tests that drive `vr-kv node` processes.

use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

pub fn free_addresses(n: usize) -> Vec<SocketAddr> {
    // Bound together so that they differ; released just before the nodes
    // bind them (another process could take one in between: unlikely here).
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

pub fn connect(address: SocketAddr) -> Option<redis::Connection> {
    // The redis crate's connection handshake reads without a timeout: a
    // node frozen with SIGSTOP would block it for as long as it is frozen.
    // Connect on a helper thread and give up after a while (the thread
    // finishes, and drops the connection, once the node thaws).
    let (sender, receiver) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let connection = redis::Client::open(format!("redis://{address}/"))
            .ok()
            .and_then(|client| {
                client
                    .get_connection_with_timeout(Duration::from_secs(2))
                    .ok()
            });
        let _ = sender.send(connection);
    });
    let connection = receiver.recv_timeout(Duration::from_secs(3)).ok()??;
    connection
        .set_read_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    Some(connection)
}

pub fn status(address: SocketAddr) -> Option<String> {
    let mut c = connect(address)?;
    redis::cmd("VR.STATUS").query::<String>(&mut c).ok()
}

pub fn field(status: &str, name: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
}

pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}
