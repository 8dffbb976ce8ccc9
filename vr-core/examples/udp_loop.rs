//! Embedding `vr-core` in a hand-written event loop: three replicas and a
//! client in one thread, each with its own UDP socket on loopback, one frame
//! per datagram. This is the whole of an adapter: move bytes between sockets
//! and nodes, pass the time, and drain every node's outputs after its
//! inputs (`vr_core::node`, "The contract").
//!
//! The node speaks of connections; over UDP a connection is just the
//! address at its other end: an outbound one is "open" at once, and each
//! new source address of a datagram is an accepted one.
//!
//! Run with `cargo run -p vr-core --example udp_loop`.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant as StdInstant};

use vr_core::node::{
    ClientEvent, ClientNode, ClientOptions, ConnectionId, Output, ReplicaNode, ReplicaOptions,
};
use vr_core::{Client, ClientConfig, Config, Instant, MemberId, Service};

/// The replicated service: a running sum of the bytes of every operation.
struct Sum(u64);

impl Service for Sum {
    fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
        self.0 += op.iter().map(|&b| u64::from(b)).sum::<u64>();
        self.0.to_le_bytes().to_vec()
    }
    // The whole state fits one page.
    fn page_count(&self) -> u64 {
        1
    }
    fn read_page(&self, _index: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
    fn install_pages(&mut self, pages: &[&[u8]]) {
        self.0 = pages[0].try_into().map(u64::from_le_bytes).unwrap_or(0);
    }
}

/// One node's socket and its connections: id → the address at the other end.
struct Endpoint {
    socket: UdpSocket,
    to: HashMap<ConnectionId, SocketAddr>,
    from: HashMap<SocketAddr, ConnectionId>,
}

impl Endpoint {
    fn new(socket: UdpSocket) -> Endpoint {
        Endpoint {
            socket,
            to: HashMap::new(),
            from: HashMap::new(),
        }
    }

    /// Carries out one output of a node, and says what is left for the
    /// caller to do.
    fn carry_out<E>(&mut self, output: Output<E>, frames: &[u8]) -> std::io::Result<Step<E>> {
        match output {
            Output::Connect {
                connection,
                address,
            } => {
                self.to.insert(connection, address);
                self.from.insert(address, connection);
                // A datagram "connection" is open at once.
                return Ok(Step::Connected(connection));
            }
            Output::Transmit { connection, len } => {
                if let Some(address) = self.to.get(&connection) {
                    self.socket
                        .send_to(&frames[frames.len() - len..], address)?;
                }
            }
            Output::Close { connection } => drop(self.to.remove(&connection)),
            Output::Event(event) => return Ok(Step::Event(event)),
            Output::Timeout(deadline) => return Ok(Step::Wait(deadline)),
        }
        Ok(Step::Next)
    }
}

/// What the loop does after an output.
enum Step<E> {
    Next,
    Connected(ConnectionId),
    Event(E),
    Wait(Option<Instant>),
}

fn main() -> std::io::Result<()> {
    let config = Config::new(99, 3);
    let origin = StdInstant::now();
    let now = || Instant::from_nanos(origin.elapsed().as_nanos() as u64);

    let sockets: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let addresses: Vec<SocketAddr> = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    let mut replicas = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        socket.set_nonblocking(true)?;
        let options = ReplicaOptions::new(config.clone(), addresses.clone(), MemberId(i as u8));
        let replica = options.build_replica(Sum(0), now()).expect("valid config");
        replicas.push((
            ReplicaNode::new(replica, &options, now()),
            Endpoint::new(socket),
        ));
    }

    let client_socket = UdpSocket::bind("127.0.0.1:0")?;
    client_socket.set_nonblocking(true)?;
    let client = Client::new(ClientConfig::new(&config, 0xC0FFEE), 0);
    let options = ClientOptions::new(addresses.clone());
    let mut client = ClientNode::new(
        client,
        config.cluster,
        config.message_size_max as usize,
        &options,
    );
    let mut client_end = Endpoint::new(client_socket);

    let (mut buffer, mut frames) = (vec![0u8; 65536], Vec::new());
    let (mut sent, mut committed) = (0u8, 0u8);
    let deadline = StdInstant::now() + Duration::from_secs(10);
    while StdInstant::now() < deadline && committed < 10 {
        // The client: one request at a time, ten in all.
        if client.client().outstanding().is_none() && sent == committed {
            sent += 1;
            client.request(now(), vec![sent]).expect("idle client");
        }
        while let Ok((len, from)) = client_end.socket.recv_from(&mut buffer) {
            if let Some(&connection) = client_end.from.get(&from) {
                let _ = client.handle_bytes(now(), connection, &buffer[..len]);
            }
        }
        loop {
            frames.clear();
            let output = client.poll_output(&mut frames);
            match client_end.carry_out(output, &frames)? {
                Step::Event(ClientEvent::Completed(done)) => {
                    let total = u64::from_le_bytes(done.result.try_into().expect("8 bytes"));
                    println!(
                        "request {} committed, sum is now {total}",
                        done.request_number
                    );
                    committed += 1;
                }
                Step::Event(_) | Step::Next => {}
                Step::Connected(connection) => client.handle_connected(now(), connection),
                Step::Wait(Some(t)) if t <= now() => client.handle_timeout(now()),
                Step::Wait(_) => break,
            }
        }

        // The replicas: every input first, then drain, firing due timers
        // (the batch among them) on the way.
        for (i, (node, end)) in replicas.iter_mut().enumerate() {
            while let Ok((len, from)) = end.socket.recv_from(&mut buffer) {
                let connection = match end.from.get(&from) {
                    Some(&c) => c,
                    None => match node.handle_accepted(now(), Some(from)) {
                        Some(c) => {
                            end.from.insert(from, c);
                            end.to.insert(c, from);
                            c
                        }
                        None => continue,
                    },
                };
                let _ = node.handle_bytes(now(), connection, &buffer[..len]);
            }
            loop {
                frames.clear();
                let output = node.poll_output(&mut frames);
                match end.carry_out(output, &frames)? {
                    Step::Event(event) => println!("replica {i}: {event}"),
                    Step::Next => {}
                    Step::Connected(connection) => node.handle_connected(now(), connection),
                    Step::Wait(Some(t)) if t <= now() => node.handle_timeout(now()),
                    Step::Wait(_) => break,
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(committed, 10, "all requests committed");
    Ok(())
}
