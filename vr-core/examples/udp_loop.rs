//! Embedding `vr-core` in a hand-written event loop: three replicas and a
//! client in one thread, each with its own UDP socket on loopback, one frame
//! per datagram. This is the whole of an adapter: move bytes between sockets
//! and nodes, pass the time, and call the timer when it is due.
//!
//! Run with `cargo run -p vr-core --example udp_loop`.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant as StdInstant};

use vr_core::node::{ClientNode, Destination, ReplicaNode};
use vr_core::{Client, ClientConfig, Config, Instant, Replica, Service};

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
    for socket in &sockets {
        socket.set_nonblocking(true)?;
    }
    let mut nodes: Vec<ReplicaNode<Sum>> = (0..3)
        .map(|i| {
            ReplicaNode::new(
                Replica::new(config.clone(), vr_core::ReplicaIndex(i), Sum(0), now())
                    .expect("valid config"),
                64,
            )
        })
        .collect();

    let client_socket = UdpSocket::bind("127.0.0.1:0")?;
    client_socket.set_nonblocking(true)?;
    let client = Client::new(ClientConfig::new(&config, 0xC0FFEE), 0);
    let mut client = ClientNode::new(client, config.cluster, config.message_size_max as usize);

    let mut buffer = vec![0u8; 65536];
    let mut sent = 0u8;
    let deadline = StdInstant::now() + Duration::from_secs(10);
    while StdInstant::now() < deadline {
        // The client: one request at a time, ten in all.
        if client.client().outstanding().is_none() {
            if sent == 10 {
                break;
            }
            sent += 1;
            client.request(now(), vec![sent]).expect("idle client");
        }
        while let Some((replica, frame)) = client.poll_transmit() {
            client_socket.send_to(&frame, addresses[usize::from(replica)])?;
        }
        while let Ok((len, _)) = client_socket.recv_from(&mut buffer) {
            if let Ok((_, Some(done))) = client.handle_bytes(now(), &buffer[..len]) {
                let total = u64::from_le_bytes(done.result.try_into().expect("8 bytes"));
                println!(
                    "request {} committed, sum is now {total}",
                    done.request_number
                );
            }
        }
        if client.poll_timeout().is_some_and(|t| t <= now()) {
            client.handle_timeout(now());
        }

        // The replicas: input, timers, then drain every output.
        for (i, node) in nodes.iter_mut().enumerate() {
            while let Ok((len, from)) = sockets[i].recv_from(&mut buffer) {
                // A datagram is one connection's worth of bytes; its port
                // names the connection, so replies go back to the sender.
                let _ = node.handle_bytes(now(), u64::from(from.port()), &buffer[..len]);
            }
            if node.poll_timeout().is_some_and(|t| t <= now()) {
                node.handle_timeout(now());
            }
            while let Some(transmit) = node.poll_transmit() {
                let to = match transmit.destination {
                    Destination::Replica(r) => addresses[usize::from(r)],
                    Destination::Connection(port) => {
                        SocketAddr::from(([127, 0, 0, 1], port as u16))
                    }
                };
                sockets[i].send_to(&transmit.frame, to)?;
            }
            while let Some(event) = node.poll_event() {
                println!("replica {i}: {event:?}");
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(sent, 10, "all requests committed");
    Ok(())
}
