//! The async client: a [`ClientNode`] driven from the caller's runtime.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use vr_core::node::ClientNode;
use vr_core::{ClientConfig, ClientError, Completion, Instant, MemberId};

use crate::link::{self, Backoff, LinkCounters, LinkEvent, Outbox};
use crate::replica::parse_address;

/// Connection events waiting for the client; a full channel makes the
/// connection tasks wait.
const EVENTS_QUEUED_MAX: usize = 64;
/// Reconnects are rare for a client: it resends only on its request timer.
const BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(5),
    max: Duration::from_millis(500),
};

/// Link slots at most: one per member id.
const LINK_SLOTS_MAX: usize = 1 << u8::BITS;

/// One connection to a replica, opened when the first frame is queued.
struct Link {
    /// Names this link's events; a new link to the same replica gets a new
    /// key, so that bytes of an abandoned connection are never mixed in.
    key: u64,
    outbox: Outbox,
    task: JoinHandle<()>,
    /// Bytes of an incomplete reply.
    buffer: Vec<u8>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Closes the socket even if the task is in the middle of a connect.
        self.task.abort();
    }
}

/// A client of a VR cluster, submitting one operation at a time.
///
/// It runs in the caller's tokio runtime: connection tasks are spawned on it
/// and must not outlive it.
pub struct Client {
    node: ClientNode,
    /// The highest request-number used so far.
    request_number: u64,
    /// The epoch whose members' addresses are in `addresses`.
    epoch: u32,
    /// Each member's address, by member id.
    addresses: Vec<Option<SocketAddr>>,
    /// Links by member id.
    links: Vec<Option<Link>>,
    key_next: u64,
    events_tx: mpsc::Sender<LinkEvent>,
    events: mpsc::Receiver<LinkEvent>,
    frame_size_max: usize,
    counters: Arc<LinkCounters>,
    origin: std::time::Instant,
}

impl Client {
    /// A client of the cluster `cluster` whose replica `i` is at
    /// `addresses[i]`. Connections are opened when there is something to
    /// send, so this succeeds even while replicas are down; it fails only
    /// if the addresses do not match `config.replica_count`. Replies up to
    /// `config.message_size_max` are accepted.
    pub async fn connect(
        addresses: Vec<SocketAddr>,
        config: ClientConfig,
        cluster: u64,
    ) -> io::Result<Client> {
        let frame_size_max = config.message_size_max as usize;
        if addresses.len() != usize::from(config.replica_count) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "one address per replica is needed",
            ));
        }
        let (events_tx, events) = mpsc::channel(EVENTS_QUEUED_MAX);
        // Member ids: the configuration's (epoch 0: replica `i` is member `i`).
        let ids: Vec<usize> = (0..config.replica_count)
            .map(|i| {
                usize::from(
                    config
                        .members
                        .get(usize::from(i))
                        .copied()
                        .unwrap_or(vr_core::MemberId(i)),
                )
            })
            .collect();
        let slots = ids.iter().max().map_or(0, |m| m + 1);
        let mut by_member = vec![None; slots];
        for (&id, &address) in ids.iter().zip(&addresses) {
            by_member[id] = Some(address);
        }
        let epoch = config.epoch;
        let client = vr_core::Client::new(config, 0);
        Ok(Client {
            node: ClientNode::new(client, cluster, frame_size_max),
            epoch,
            request_number: 0,
            links: by_member.iter().map(|_| None).collect(),
            addresses: by_member,
            key_next: 0,
            events_tx,
            events,
            frame_size_max,
            counters: Arc::default(),
            origin: std::time::Instant::now(),
        })
    }

    /// Submits `op` and waits for its result. Resends on the client's timer
    /// until a reply comes, or fails with [`ClientError::TimedOut`] after
    /// `request_attempts_max` attempts (the outcome is then unknown).
    ///
    /// If an earlier `submit` was cancelled (its future dropped), its request
    /// is still outstanding: this waits for it to finish first and discards
    /// its result, since the protocol allows one request at a time.
    pub async fn submit(&mut self, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        if self.node.client().outstanding().is_some() {
            // Its outcome belonged to the cancelled caller.
            let _ = self.wait().await;
        }
        self.request_number = self.node.request(self.now(), op)?;
        self.wait().await.map(|completion| completion.result)
    }

    /// Asks the cluster to move to a new configuration (§7.1): `members`
    /// (member ids, in index order) at `addresses` (one per member, which
    /// every replica and client learns with the new epoch). Returns the new
    /// epoch-number once the reconfiguration committed. The primary refuses
    /// an invalid one, or one from a client whose epoch is not current, by
    /// not answering: it then fails like any request (after
    /// `request_attempts_max` attempts, or never when unlimited). A request
    /// sent for an epoch that has ended is answered with the new epoch's
    /// members, and sent again for it.
    pub async fn reconfigure(
        &mut self,
        members: Vec<MemberId>,
        addresses: Vec<SocketAddr>,
    ) -> Result<u32, ClientError> {
        if self.node.client().outstanding().is_some() {
            let _ = self.wait().await;
        }
        let addresses = addresses
            .iter()
            .map(|a| a.to_string().into_bytes())
            .collect();
        let now = self.now();
        self.request_number = self.node.reconfigure(now, members, addresses)?;
        let completion = self.wait().await?;
        let epoch = completion
            .result
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes);
        Ok(epoch)
    }

    /// The epoch the client believes current (§7).
    pub fn epoch(&self) -> u32 {
        self.node.client().epoch()
    }

    /// The member ids of that epoch, in index order.
    pub fn members(&self) -> Vec<MemberId> {
        self.node.client().members()
    }

    /// Runs the outstanding request to completion or abandonment.
    async fn wait(&mut self) -> Result<Completion, ClientError> {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            self.drain();
            let Some(deadline) = self.node.poll_timeout() else {
                debug_assert!(false, "waiting without an outstanding request");
                return Err(ClientError::TimedOut);
            };
            let at = self.origin + Duration::from_nanos(deadline.as_nanos());
            timer.as_mut().reset(tokio::time::Instant::from_std(at));
            tokio::select! {
                // Never `None`: the client holds a sender.
                Some(event) = self.events.recv() => {
                    if let Some(completion) = self.on_event(event) {
                        return Ok(completion);
                    }
                }
                () = &mut timer => {
                    if let Some(error) = self.node.handle_timeout(self.now()) {
                        return Err(error);
                    }
                }
            }
        }
    }

    fn now(&self) -> Instant {
        // u64 nanoseconds last 584 years.
        Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    fn on_event(&mut self, event: LinkEvent) -> Option<Completion> {
        let now = self.now();
        let key = match &event {
            LinkEvent::Data { key, .. } | LinkEvent::Closed { key, .. } => *key,
        };
        // Events of a link dropped after a bad frame may still be queued.
        let index = self
            .links
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.key == key))?;
        let link = self.links[index].as_mut()?;
        let bytes = match event {
            LinkEvent::Data { bytes, .. } => bytes,
            LinkEvent::Closed { error, .. } => {
                tracing::debug!(replica = index, %error, "connection lost");
                link.buffer.clear();
                return None;
            }
        };
        link.buffer.extend_from_slice(&bytes);
        match self.node.handle_bytes(now, &link.buffer) {
            Ok((used, completion)) => {
                link.buffer.drain(..used);
                self.follow_epoch();
                completion
            }
            Err(error) => {
                // A replica of this cluster never sends that: drop the
                // connection; the next frame for it opens a new one.
                tracing::warn!(replica = index, %error, "closing connection: rejected frame");
                self.links[index] = None;
                None
            }
        }
    }

    /// After a `StartEpoch` notice (§7.3): learns the new members'
    /// addresses, keeping the links to members whose address is unchanged.
    fn follow_epoch(&mut self) {
        let client = self.node.client();
        if client.epoch() == self.epoch {
            return;
        }
        self.epoch = client.epoch();
        let members = client.members();
        tracing::info!(epoch = self.epoch, ?members, "following a new epoch");
        for (member, address) in members.iter().zip(client.addresses()) {
            let Some(address) = parse_address(address) else {
                continue;
            };
            let index = usize::from(*member);
            if index >= LINK_SLOTS_MAX {
                continue;
            }
            if self.addresses.len() <= index {
                self.addresses.resize(index + 1, None);
                self.links.resize_with(index + 1, || None);
            }
            if self.addresses[index] != Some(address) {
                self.addresses[index] = Some(address);
                self.links[index] = None;
            }
        }
    }

    /// Queues the node's frames on their links, opening links on demand.
    fn drain(&mut self) {
        while let Some((replica, frame)) = self.node.poll_transmit() {
            let index = usize::from(replica);
            let Some(address) = self.addresses.get(index).copied().flatten() else {
                tracing::debug!(member = %replica, "no address for member: frame dropped");
                continue;
            };
            let Some(slot) = self.links.get_mut(index) else {
                continue;
            };
            let link = slot.get_or_insert_with(|| {
                let key = self.key_next;
                self.key_next += 1;
                // A few resends of one request; more is a backlog not worth keeping.
                let (outbox, inbox) = link::queue(2 * self.frame_size_max);
                let events = Some((self.events_tx.clone(), key));
                let task = tokio::spawn(link::run_outbound(
                    address,
                    inbox,
                    events,
                    BACKOFF,
                    self.counters.clone(),
                    None,
                ));
                Link {
                    key,
                    outbox,
                    task,
                    buffer: Vec::new(),
                }
            });
            // A dropped frame is resent on the client's timer.
            if let Err(error) = link.outbox.push(frame) {
                tracing::debug!(%replica, ?error, "request frame dropped");
            }
        }
    }
}
