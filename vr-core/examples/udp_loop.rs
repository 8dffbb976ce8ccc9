//! Embedding `vr-core` in a hand-written event loop: three replicas and a
//! client in one thread, each with its own UDP socket on loopback, one frame
//! per datagram. This is the whole of an embedding: decode what arrives and
//! feed it in, drain the outputs until the deadline, fire the timers when
//! they are due, and encode what goes out.
//!
//! The contract (the same for [`Replica`] and [`Client`]): after every
//! input, drain `poll_output` until it returns `Timeout(t)`; when
//! `t <= now`, call `handle_timeout(now)` and drain again. A replica is fed
//! every datagram that is ready before its timers fire, so requests that
//! arrived together share a Prepare (the batch timer, §6).
//!
//! Run with `cargo run -p vr-core --example udp_loop`.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant as StdInstant};

use vr_core::codec::{decode_in_epoch, encode_in_epoch};
use vr_core::{Client, ClientConfig, ClientId, ClientOutput, Config, Instant, Message};
use vr_core::{Output, Replica, ReplicaIndex, Service};

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

/// Encodes `message` in `epoch` and sends it to `to`.
fn send(socket: &UdpSocket, config: &Config, epoch: u32, message: &Message, to: SocketAddr) {
    let mut frame = Vec::new();
    encode_in_epoch(message, config.cluster, epoch, &mut frame);
    // UDP may drop it; the protocol resends what matters.
    let _ = socket.send_to(&frame, to);
}

fn main() -> std::io::Result<()> {
    let config = Config::new(99, 3);
    let frame_size_max = config.message_size_max as usize;
    let origin = StdInstant::now();
    let now = || Instant::from_nanos(origin.elapsed().as_nanos() as u64);

    // Member `i` listens on `addresses[i]` (no reconfiguration here, so
    // member `i` is replica index `i`).
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
    let mut replicas: Vec<Replica<Sum>> = (0..3)
        .map(|i| Replica::new(config.clone(), ReplicaIndex(i), Sum(0), now()))
        .collect::<Result<_, _>>()
        .expect("valid config");
    // Where each client's requests came from, for its replies.
    let mut routes: Vec<HashMap<ClientId, SocketAddr>> = vec![HashMap::new(); 3];

    let client_socket = UdpSocket::bind("127.0.0.1:0")?;
    client_socket.set_nonblocking(true)?;
    let mut client = Client::new(ClientConfig::new(&config, 0xC0FFEE), 0);

    let mut buffer = vec![0u8; 65536];
    let mut sent = 0u8;
    let mut committed = 0u8;
    let deadline = StdInstant::now() + Duration::from_secs(10);
    while committed < 10 && StdInstant::now() < deadline {
        // The client: one request at a time, ten in all.
        if client.outstanding().is_none() && sent < 10 {
            sent += 1;
            client.request(now(), vec![sent]).expect("idle client");
        }
        while let Ok((len, _)) = client_socket.recv_from(&mut buffer) {
            match decode_in_epoch(&buffer[..len], config.cluster, frame_size_max) {
                Ok((Message::Reply(reply), _, _)) => client.handle_reply(now(), reply),
                Ok((Message::StartEpoch(notice), _, _)) => {
                    client.handle_start_epoch(now(), notice);
                }
                _ => {} // Not for a client, or damaged: dropped.
            }
        }
        loop {
            match client.poll_output() {
                ClientOutput::Send { to, epoch, message } => {
                    send(
                        &client_socket,
                        &config,
                        epoch,
                        &message,
                        addresses[usize::from(to)],
                    );
                }
                ClientOutput::Completed(done) => {
                    committed += 1;
                    let total = u64::from_le_bytes(done.result.try_into().expect("8 bytes"));
                    println!(
                        "request {} committed, sum is now {total}",
                        done.request_number
                    );
                }
                ClientOutput::Failed {
                    request_number,
                    error,
                } => {
                    println!("request {request_number} abandoned: {error}");
                }
                ClientOutput::Timeout(Some(t)) if t <= now() => client.handle_timeout(now()),
                ClientOutput::Timeout(_) => break,
            }
        }

        // The replicas: every ready datagram in, then drain and fire due
        // timers until the next deadline is in the future.
        for (i, replica) in replicas.iter_mut().enumerate() {
            while let Ok((len, from)) = sockets[i].recv_from(&mut buffer) {
                let Ok((message, epoch, _)) =
                    decode_in_epoch(&buffer[..len], config.cluster, frame_size_max)
                else {
                    continue; // A damaged or foreign frame: dropped.
                };
                if let Message::Request(request) = &message {
                    routes[i].insert(request.client_id, from);
                }
                replica.handle_message(now(), epoch, message);
            }
            loop {
                match replica.poll_output() {
                    Output::Send { to, epoch, message } => {
                        send(
                            &sockets[i],
                            &config,
                            epoch,
                            &message,
                            addresses[usize::from(to)],
                        );
                    }
                    Output::Reply(reply) => {
                        if let Some(&to) = routes[i].get(&reply.client_id) {
                            let epoch = replica.epoch();
                            send(&sockets[i], &config, epoch, &Message::Reply(reply), to);
                        }
                    }
                    // Only after a reconfiguration (§7): tell the client.
                    Output::NewEpoch { client_id, notice } => {
                        if let Some(&to) = routes[i].get(&client_id) {
                            let epoch = replica.epoch();
                            send(
                                &sockets[i],
                                &config,
                                epoch,
                                &Message::StartEpoch(notice),
                                to,
                            );
                        }
                    }
                    // Only with `Durability::Disk`: write, sync, then
                    // `handle_persisted`.
                    Output::Persist(_) => {}
                    Output::Timeout(Some(t)) if t <= now() => replica.handle_timeout(now()),
                    Output::Timeout(_) => break,
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(committed, 10, "all requests committed");
    Ok(())
}
