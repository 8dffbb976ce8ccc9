//! The administrator's side of reconfiguration (§7): `vr-kv reconfigure`.
//!
//! Members are named by their position in a *registry*: the list of every
//! VR address the cluster has had, in member-id order (the `--cluster` list
//! a node was started with, extended by the members each reconfiguration
//! added). A reconfiguration to a list of addresses keeps the ids of the
//! addresses already in the registry and gives new addresses the next ids.
//!
//! The request goes through a [`ClientNode`] over plain blocking sockets,
//! one reader thread per connection. It is sent for the epoch the client
//! believes current; a replica of a newer epoch answers with the new
//! members, and the client sends the same request again for that epoch
//! (`Client::handle_start_epoch`), so an administrator need not know the
//! current epoch. One request, retried: it runs at most once.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant as StdInstant};

use vr_core::node::ClientNode;
use vr_core::{Client, ClientConfig, Config, Instant, MemberId};

/// What a completed reconfiguration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconfigured {
    /// The new epoch-number.
    pub epoch: u32,
    /// The new members' ids, in index order.
    pub members: Vec<MemberId>,
    /// The registry with the new members appended: start the next
    /// reconfiguration (and new nodes) with it as `--cluster`.
    pub registry: Vec<SocketAddr>,
}

/// The member ids of `target` in `registry`, appending new addresses.
pub fn assign_members(
    registry: &[SocketAddr],
    target: &[SocketAddr],
) -> Result<(Vec<MemberId>, Vec<SocketAddr>), String> {
    let mut registry = registry.to_vec();
    let mut members = Vec::with_capacity(target.len());
    for address in target {
        let id = match registry.iter().position(|a| a == address) {
            Some(id) => id,
            None => {
                registry.push(*address);
                registry.len() - 1
            }
        };
        let id = MemberId::try_from(id).map_err(|_| "at most 256 members ever".to_owned())?;
        if members.contains(&id) {
            return Err(format!("{address} is listed twice"));
        }
        members.push(id);
    }
    if members.is_empty() {
        return Err("the new configuration is empty".to_owned());
    }
    Ok((members, registry))
}

/// Moves the cluster `cluster` (whose members ever are `registry`, by id)
/// to the members at `target`, waiting at most `timeout`.
pub fn reconfigure(
    cluster: u64,
    registry: &[SocketAddr],
    target: &[SocketAddr],
    timeout: Duration,
) -> Result<Reconfigured, String> {
    let (members, registry) = assign_members(registry, target)?;
    let addresses: Vec<Vec<u8>> = members
        .iter()
        .map(|&m| registry[usize::from(m)].to_string().into_bytes())
        .collect();
    let count = u8::try_from(registry.len()).map_err(|_| "at most 255 members ever")?;
    let config = Config::new(cluster, count);
    let mut client_config = ClientConfig::new(&config, admin_client_id());
    // Retried until `timeout`, always as the same request: the client table
    // runs it at most once, and the client follows newer epochs (the
    // request with them).
    client_config.request_timeout_ns = 300_000_000;
    client_config.request_attempts_max = 0;
    let frame_size_max = config.message_size_max as usize;
    let mut node = ClientNode::new(Client::new(client_config, 0), cluster, frame_size_max);
    let mut links = Links::new(&registry);
    let started = StdInstant::now();
    let now = |started: StdInstant| Instant::from_nanos(started.elapsed().as_nanos() as u64);
    let number = node
        .reconfigure(now(started), members.clone(), addresses.clone())
        .map_err(|e| e.to_string())?;
    loop {
        if started.elapsed() > timeout {
            return Err("no answer in time; the reconfiguration may still happen".to_owned());
        }
        links.learn(node.client());
        while let Some((member, frame)) = node.poll_transmit() {
            links.send(member, &frame);
        }
        if let Some(done) = links.receive(&mut node, now(started)) {
            if done.request_number == number {
                let epoch = done
                    .result
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_le_bytes)
                    .ok_or("a malformed answer")?;
                return Ok(Reconfigured {
                    epoch,
                    members,
                    registry,
                });
            }
        }
        // Unlimited attempts: no error to handle.
        let _ = node.handle_timeout(now(started));
    }
}

/// A random client id: the administrator's requests must not look like
/// another client's.
fn admin_client_id() -> u128 {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Fall back on the clock: distinct enough for an administrator.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        return nanos | 1 << 127;
    }
    u128::from_le_bytes(bytes)
}

/// Connections to members, opened on first use, with a reader thread each.
struct Links {
    addresses: BTreeMap<MemberId, SocketAddr>,
    streams: BTreeMap<MemberId, TcpStream>,
    received: mpsc::Receiver<Vec<u8>>,
    sender: mpsc::Sender<Vec<u8>>,
}

/// Frames larger than this from a replica close the link.
const FRAME_SIZE_MAX: u64 = 16 << 20;

impl Links {
    fn new(registry: &[SocketAddr]) -> Links {
        let (sender, received) = mpsc::channel();
        Links {
            addresses: (registry.iter().enumerate())
                .filter_map(|(i, a)| Some((MemberId::try_from(i).ok()?, *a)))
                .collect(),
            streams: BTreeMap::new(),
            received,
            sender,
        }
    }

    /// Takes the addresses of the client's current epoch, if it has them.
    fn learn(&mut self, client: &Client) {
        for (member, address) in client.members().into_iter().zip(client.addresses()) {
            let parsed = std::str::from_utf8(address)
                .ok()
                .and_then(|a| a.parse::<SocketAddr>().ok());
            if let Some(parsed) = parsed {
                self.addresses.insert(member, parsed);
            }
        }
    }

    fn send(&mut self, member: MemberId, frame: &[u8]) {
        if !self.streams.contains_key(&member) {
            let Some(&address) = self.addresses.get(&member) else {
                return;
            };
            let Ok(stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500))
            else {
                return; // That member is down: the client retries elsewhere.
            };
            let _ = stream.set_nodelay(true);
            if let Ok(mut reader) = stream.try_clone() {
                let sender = self.sender.clone();
                std::thread::spawn(move || {
                    // Whole frames only, so that frames of two connections
                    // never interleave in the receiver.
                    let mut chunk = vec![0u8; 64 * 1024];
                    let mut pending = Vec::new();
                    while let Ok(n) = reader.read(&mut chunk) {
                        if n == 0 {
                            break;
                        }
                        pending.extend_from_slice(&chunk[..n]);
                        while let Some(header) = vr_core::codec::peek_header(&pending) {
                            let size = header.frame_size();
                            if size > FRAME_SIZE_MAX {
                                return; // Not a frame of ours: drop the link.
                            }
                            let size = size as usize;
                            if pending.len() < size {
                                break;
                            }
                            let frame: Vec<u8> = pending.drain(..size).collect();
                            if sender.send(frame).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
            self.streams.insert(member, stream);
        }
        if let Some(stream) = self.streams.get_mut(&member) {
            if stream.write_all(frame).is_err() {
                self.streams.remove(&member);
            }
        }
    }

    /// Waits up to 50 ms for a frame and feeds it to `node`.
    fn receive(&mut self, node: &mut ClientNode, now: Instant) -> Option<vr_core::Completion> {
        let frame = self.received.recv_timeout(Duration::from_millis(50)).ok()?;
        // A frame that does not decode is dropped: the request is resent.
        node.handle_bytes(now, &frame).ok()?.1
    }
}
