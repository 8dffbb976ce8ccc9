//! A small deterministic in-memory harness: N replicas and some clients
//! exchanging messages through one queue, in FIFO or seeded random order,
//! with a filter that can drop messages (loss, partitions). Time moves only
//! when the queue is empty, straight to the next deadline.
#![allow(dead_code)]

use vr_core::prng::Prng;
use vr_core::{
    Client, ClientConfig, ClientOutput, Completion, Config, Instant, Message, Output, Replica,
    Service,
};

/// Every output `replica` holds now: a pure drain, up to the
/// `Output::Timeout` that ends it (returned separately).
pub fn drain<S: Service>(replica: &mut Replica<S>) -> (Vec<Output>, Option<Instant>) {
    let mut outputs = Vec::new();
    loop {
        match replica.poll_output() {
            Output::Timeout(t) => return (outputs, t),
            output => outputs.push(output),
        }
    }
}

/// The outputs of the last input, as the contract asks an embedding to
/// collect them: drain, and while the deadline is due (the batch timer),
/// fire it at `now` and drain again.
pub fn outputs<S: Service>(replica: &mut Replica<S>, now: Instant) -> Vec<Output> {
    let mut all = Vec::new();
    for _ in 0..8 {
        let (outputs, deadline) = drain(replica);
        all.extend(outputs);
        match deadline {
            Some(t) if t <= now => replica.handle_timeout(now),
            _ => return all,
        }
    }
    panic!("handle_timeout left its deadline due");
}

/// A service that records what it executed and returns the op-number and the
/// op, so tests can check order and exactly-once execution.
#[derive(Default)]
pub struct Recorder {
    pub executed: Vec<(u64, Vec<u8>)>,
}

impl Service for Recorder {
    fn execute(&mut self, op_number: u64, op: &[u8]) -> Vec<u8> {
        self.executed.push((op_number, op.to_vec()));
        let mut result = op_number.to_le_bytes().to_vec();
        result.extend_from_slice(op);
        result
    }
    // One page per executed op: its op-number, then the op.
    fn page_count(&self) -> u64 {
        self.executed.len() as u64
    }
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        let (op_number, op) = &self.executed[index as usize];
        out.extend_from_slice(&op_number.to_le_bytes());
        out.extend_from_slice(op);
    }
    fn install_pages(&mut self, pages: &[&[u8]]) {
        self.executed = pages
            .iter()
            .map(|p| {
                let (n, op) = p.split_at(8);
                (u64::from_le_bytes(n.try_into().unwrap()), op.to_vec())
            })
            .collect();
    }
    // Ops starting with "read" only read: they return how many ops were
    // executed, without executing.
    fn is_read_only(&self, op: &[u8]) -> bool {
        op.starts_with(b"read")
    }
    fn query(&self, _op: &[u8]) -> Vec<u8> {
        (self.executed.len() as u64).to_le_bytes().to_vec()
    }
}

/// A crash vector of `n` zeros: every replica in its first incarnation.
pub fn cv(n: usize) -> vr_core::message::CrashVector {
    std::iter::repeat_n(0, n).collect()
}

/// Where a message in flight goes. A replica is named by its slot in
/// `Cluster::replicas`, which is its member id (members join in order), so
/// `Node::Replica(m.0)` for a `MemberId` m.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Replica(u8),
    Client(usize),
}

#[derive(Clone, Debug)]
pub struct Envelope {
    pub from: Node,
    pub to: Node,
    /// The sender's epoch (§7), as a frame header carries it.
    pub epoch: u32,
    pub message: Message,
}

pub struct Cluster<S: Service = Recorder> {
    pub config: Config,
    pub replicas: Vec<Replica<S>>,
    /// A crashed replica receives nothing and fires no timers.
    pub crashed: Vec<bool>,
    pub clients: Vec<Client>,
    pub now: Instant,
    pub in_flight: Vec<Envelope>,
    /// Deliver in random order instead of FIFO.
    pub reorder: bool,
    /// Returns false for a message that must be dropped.
    pub filter: Box<dyn FnMut(&Envelope) -> bool>,
    pub prng: Prng,
    pub completions: Vec<(usize, Completion)>,
    /// Replies sent by each replica (backups must never reply, §4.1).
    pub replies_sent_by: Vec<u64>,
    /// Every delivered envelope, for determinism checks.
    pub delivered: Vec<String>,
    /// Encoded bytes of the messages delivered to each replica.
    pub bytes_to: Vec<u64>,
    /// Durable replicas: each replica's disk, written by its persists.
    pub disks: Vec<Disk>,
    /// Durable replicas: a replica whose persists neither land nor are
    /// answered until `complete_persists` (a slow disk); a crash loses
    /// them (unsynced writes).
    pub hold_persists: Vec<bool>,
    /// Persists issued but not yet on disk: (replica, persist, pages).
    pub held_persists: Vec<HeldPersist>,
}

/// A persist not yet on disk: the replica, the persist, and the pages of
/// the checkpoint it names (read when it was issued).
pub type HeldPersist = (u8, vr_core::Persist, Vec<std::sync::Arc<[u8]>>);

/// A replica's disk in the harness: what its persists wrote.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub state: vr_core::DurableState,
    pub log: std::collections::BTreeMap<u64, vr_core::LogEntry>,
    pub checkpoint: Option<vr_core::checkpoint::Checkpoint>,
    pub persists: u64,
}

impl Disk {
    /// Carries out one persist, in the order `Persist` documents.
    pub fn apply(&mut self, persist: &vr_core::Persist, pages: &[std::sync::Arc<[u8]>]) {
        if let Some(summary) = persist.checkpoint {
            let checkpoint = vr_core::checkpoint::Checkpoint::from_pages(
                summary.op_number,
                pages.to_vec(),
                summary.service_page_count,
            );
            assert_eq!(
                checkpoint.summary, summary,
                "the pages are the checkpoint's"
            );
            self.checkpoint = Some(checkpoint);
        }
        if let Some(after) = persist.truncate_after {
            self.log.retain(|&op, _| op <= after);
        }
        for entry in &persist.entries {
            self.log.insert(entry.op_number, entry.clone());
        }
        self.state = persist.state;
        let base = persist.state.log_base;
        self.log.retain(|&op, _| op > base);
        self.persists += 1;
    }
}

impl Cluster<Recorder> {
    pub fn new(replica_count: u8, client_count: usize, seed: u64) -> Cluster {
        let mut config = Config::new(7, replica_count);
        config.seed = seed;
        Cluster::with_config(config, client_count)
    }

    pub fn with_config(config: Config, client_count: usize) -> Cluster {
        Cluster::with_services(config, client_count, |_| Recorder::default())
    }
}

impl<S: Service> Cluster<S> {
    /// A new cluster whose replica `i` runs `service(i)`.
    pub fn with_services(
        config: Config,
        client_count: usize,
        mut service: impl FnMut(u8) -> S,
    ) -> Cluster<S> {
        let now = Instant::ZERO;
        let replicas = (0..config.replica_count)
            .map(|i| {
                Replica::new(config.clone(), vr_core::ReplicaIndex(i), service(i), now)
                    .expect("valid config")
            })
            .collect();
        let clients = (0..client_count)
            .map(|i| Client::new(ClientConfig::new(&config, 1000 + i as u128), 0))
            .collect();
        Cluster {
            replicas,
            crashed: vec![false; usize::from(config.replica_count)],
            clients,
            now,
            in_flight: Vec::new(),
            reorder: false,
            filter: Box::new(|_| true),
            prng: Prng::new(config.seed),
            completions: Vec::new(),
            replies_sent_by: vec![0; usize::from(config.replica_count)],
            delivered: Vec::new(),
            bytes_to: vec![0; usize::from(config.replica_count)],
            disks: vec![Disk::default(); usize::from(config.replica_count)],
            hold_persists: vec![false; usize::from(config.replica_count)],
            held_persists: Vec::new(),
            config,
        }
    }

    /// Restarts replica `replica` with its memory wiped: a fresh `service`
    /// and the recovery protocol (§4.3).
    pub fn restart(&mut self, replica: u8, service: S, nonce: u64) {
        let i = usize::from(replica);
        self.replicas[i] = Replica::recover(
            self.config.clone(),
            vr_core::ReplicaIndex(replica),
            service,
            self.now,
            nonce,
        )
        .expect("valid config");
        self.crashed[i] = false;
        self.drain_replica(replica);
    }

    /// Durable replicas: restarts replica `replica` after a crash that also
    /// lost (or damaged) its disk: `Replica::recover_lost_disk`.
    #[allow(dead_code)]
    pub fn restart_lost_disk(&mut self, replica: u8, service: S, nonce: u64) {
        let i = usize::from(replica);
        self.held_persists.retain(|(r, _, _)| *r != replica);
        self.disks[i] = Default::default();
        self.replicas[i] = Replica::recover_lost_disk(
            self.config.clone(),
            vr_core::ReplicaIndex(replica),
            service,
            self.now,
            nonce,
        )
        .expect("valid config");
        self.crashed[i] = false;
        self.drain_replica(replica);
    }

    /// Durable replicas: restarts replica `replica` from its disk after a
    /// crash (memory lost, disk kept).
    pub fn restart_from_disk(&mut self, replica: u8, service: S, nonce: u64) {
        let i = usize::from(replica);
        let disk = self.disks[i].clone();
        self.held_persists.retain(|(r, _, _)| *r != replica);
        self.replicas[i] = Replica::restart(
            self.config.clone(),
            vr_core::ReplicaIndex(replica),
            service,
            self.now,
            nonce,
            vr_core::OnDisk {
                state: disk.state,
                checkpoint: disk.checkpoint,
                log: disk.log.into_values().collect(),
            },
        )
        .expect("the disk fits the configuration");
        self.crashed[i] = false;
        self.drain_replica(replica);
    }

    /// Durable replicas: writes and answers every held persist of
    /// `replica`, in order.
    pub fn complete_persists(&mut self, replica: u8) {
        let now = self.now;
        let (held, rest) = std::mem::take(&mut self.held_persists)
            .into_iter()
            .partition(|(r, _, _)| *r == replica);
        self.held_persists = rest;
        let i = usize::from(replica);
        for (_, persist, pages) in held {
            self.disks[i].apply(&persist, &pages);
            self.replicas[i].handle_persisted(now, persist.sequence);
        }
        self.drain_replica(replica);
    }

    /// Restarts replica `replica` with `config` (as a process restarted with
    /// other arguments would be) and index `index` in it.
    pub fn restart_with(&mut self, replica: u8, config: Config, index: u8, service: S, nonce: u64) {
        let i = usize::from(replica);
        self.replicas[i] = Replica::recover(
            config,
            vr_core::ReplicaIndex(index),
            service,
            self.now,
            nonce,
        )
        .expect("valid config");
        self.crashed[i] = false;
        self.drain_replica(replica);
    }

    /// Starts a request on a client.
    pub fn submit(&mut self, client: usize, op: &[u8]) -> u64 {
        let number = self.clients[client]
            .request(self.now, op.to_vec())
            .expect("client idle");
        self.drain_client(client);
        number
    }

    /// Carries out client `client`'s outputs: sends, and completions
    /// (recorded in `completions`); an abandoned request is dropped.
    pub fn drain_client(&mut self, client: usize) {
        loop {
            match self.clients[client].poll_output() {
                ClientOutput::Send { to, epoch, message } => {
                    self.push(Node::Client(client), Node::Replica(to.0), epoch, message)
                }
                ClientOutput::Completed(completion) => self.completions.push((client, completion)),
                ClientOutput::Failed { .. } => {}
                ClientOutput::Timeout(_) => break,
            }
        }
    }

    /// Starts a new replica, member `member` (the next index), that joins
    /// the cluster when a reconfiguration adds it (§7.2).
    pub fn join(&mut self, member: u8, service: S, nonce: u64) {
        assert_eq!(
            usize::from(member),
            self.replicas.len(),
            "members join in order"
        );
        let replica = Replica::join(
            self.config.clone(),
            vr_core::MemberId(member),
            service,
            self.now,
            nonce,
        )
        .expect("valid");
        self.replicas.push(replica);
        self.crashed.push(false);
        self.replies_sent_by.push(0);
        self.bytes_to.push(0);
        self.disks.push(Disk::default());
        self.hold_persists.push(false);
    }

    /// Starts a reconfiguration to `members` from `client` (§7.1).
    pub fn reconfigure(&mut self, client: usize, members: &[u8]) -> u64 {
        let number = self.clients[client]
            .reconfigure(
                self.now,
                members.iter().map(|&m| vr_core::MemberId(m)).collect(),
            )
            .expect("client idle");
        self.drain_client(client);
        number
    }

    /// Carries out replica `replica`'s outputs in order until the
    /// `Output::Timeout` that ends them; timers due now (the batch timer)
    /// fire then, so each delivered request leaves in its own Prepare, as
    /// a node that fires timers after every input sends it.
    fn drain_replica(&mut self, replica: u8) {
        let now = self.now;
        let mut timer_rounds = 0;
        loop {
            let output = self.replicas[usize::from(replica)].poll_output();
            match output {
                Output::Timeout(Some(t)) if t <= now => {
                    timer_rounds += 1;
                    assert!(timer_rounds < 8, "handle_timeout left its deadline due");
                    self.replicas[usize::from(replica)].handle_timeout(now);
                }
                Output::Timeout(_) => break,
                Output::Send { to, epoch, message } => {
                    self.push(Node::Replica(replica), Node::Replica(to.0), epoch, message)
                }
                Output::Reply(reply) => {
                    self.replies_sent_by[usize::from(replica)] += 1;
                    let client = (reply.client_id - 1000) as usize;
                    let epoch = self.replicas[usize::from(replica)].epoch();
                    self.push(
                        Node::Replica(replica),
                        Node::Client(client),
                        epoch,
                        Message::Reply(reply),
                    );
                }
                Output::Persist(persist) => {
                    let i = usize::from(replica);
                    // The pages are read now: a later checkpoint replaces them.
                    let pages = persist
                        .checkpoint
                        .map(|_| self.replicas[i].checkpoint_pages().to_vec())
                        .unwrap_or_default();
                    if self.hold_persists[i] {
                        self.held_persists.push((replica, persist, pages));
                    } else {
                        self.disks[i].apply(&persist, &pages);
                        let now = self.now;
                        self.replicas[i].handle_persisted(now, persist.sequence);
                    }
                }
                Output::NewEpoch { client_id, notice } => {
                    let client = (client_id - 1000) as usize;
                    let epoch = notice.epoch;
                    self.push(
                        Node::Replica(replica),
                        Node::Client(client),
                        epoch,
                        Message::StartEpoch(notice),
                    );
                }
            }
        }
    }

    fn push(&mut self, from: Node, to: Node, epoch: u32, message: Message) {
        let envelope = Envelope {
            from,
            to,
            epoch,
            message,
        };
        if (self.filter)(&envelope) {
            self.in_flight.push(envelope);
        }
    }

    /// Inject a message as if `from` had sent it.
    pub fn inject(&mut self, from: Node, to: Node, message: Message) {
        // In the destination's epoch: an injected message is one of its peers'.
        let epoch = match to {
            Node::Replica(i) => self.replicas[usize::from(i)].epoch(),
            Node::Client(_) => 0,
        };
        self.in_flight.push(Envelope {
            from,
            to,
            epoch,
            message,
        });
    }

    /// Delivers one message; false if none was in flight.
    pub fn deliver_one(&mut self) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        let index = if self.reorder {
            self.prng.below(self.in_flight.len() as u64) as usize
        } else {
            0
        };
        let envelope = self.in_flight.remove(index);
        self.delivered.push(format!(
            "{:?}->{:?} {:?}",
            envelope.from,
            envelope.to,
            envelope.message.command()
        ));
        match envelope.to {
            Node::Replica(i) => {
                if self.crashed[usize::from(i)] {
                    return true;
                }
                self.bytes_to[usize::from(i)] +=
                    vr_core::codec::encoded_size(&envelope.message) as u64;
                self.replicas[usize::from(i)].handle_message(
                    self.now,
                    envelope.epoch,
                    envelope.message,
                );
                self.drain_replica(i);
            }
            Node::Client(c) => match envelope.message {
                Message::Reply(reply) => {
                    self.clients[c].handle_reply(self.now, reply);
                    self.drain_client(c);
                }
                Message::StartEpoch(notice) => {
                    self.clients[c].handle_start_epoch(self.now, notice);
                    self.drain_client(c);
                }
                _ => {}
            },
        }
        true
    }

    /// The earliest deadline of any live replica or client.
    fn next_deadline(&self) -> Option<Instant> {
        let replicas = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.crashed[*i])
            .filter_map(|(_, r)| r.poll_timeout());
        let clients = self.clients.iter().filter_map(|c| c.poll_timeout());
        replicas.chain(clients).min()
    }

    /// Delivers messages until none is in flight, then jumps to the next
    /// deadline and fires it; stops at `until`.
    pub fn run_until(&mut self, until: Instant) {
        let mut steps = 0u64;
        loop {
            steps += 1;
            assert!(steps < 10_000_000, "runaway simulation");
            if self.deliver_one() {
                continue;
            }
            let Some(deadline) = self.next_deadline() else {
                break;
            };
            if deadline > until {
                break;
            }
            self.now = self.now.max(deadline);
            self.fire_timers();
        }
        self.now = self.now.max(until);
    }

    pub fn run_for_ms(&mut self, ms: u64) {
        let until = self.now + ms * 1_000_000;
        self.run_until(until);
    }

    fn fire_timers(&mut self) {
        for i in 0..self.replicas.len() {
            if !self.crashed[i]
                && self.replicas[i]
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
            {
                self.replicas[i].handle_timeout(self.now);
                self.drain_replica(i as u8);
            }
        }
        for c in 0..self.clients.len() {
            if self.clients[c]
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                self.clients[c].handle_timeout(self.now);
                self.drain_client(c);
            }
        }
    }

    /// Runs until `client` has completed request `number` or `ms_max` passes.
    pub fn await_completion(
        &mut self,
        client: usize,
        number: u64,
        ms_max: u64,
    ) -> Option<Completion> {
        let until = self.now + ms_max * 1_000_000;
        while self.now < until {
            if let Some((_, c)) = self
                .completions
                .iter()
                .find(|(cl, c)| *cl == client && c.request_number == number)
            {
                return Some(c.clone());
            }
            if !self.deliver_one() {
                let Some(deadline) = self.next_deadline() else {
                    break;
                };
                if deadline > until {
                    break;
                }
                self.now = self.now.max(deadline);
                self.fire_timers();
            }
        }
        self.completions
            .iter()
            .find(|(cl, c)| *cl == client && c.request_number == number)
            .map(|(_, c)| c.clone())
    }

    /// Submits `op` from `client` and waits for its completion.
    pub fn execute(&mut self, client: usize, op: &[u8]) -> Completion {
        let number = self.submit(client, op);
        self.await_completion(client, number, 10_000)
            .unwrap_or_else(|| panic!("request {number} of client {client} did not complete"))
    }

    /// Crashes `replica`: its memory is lost (restart it with `restart` or
    /// `restart_from_disk`), and so are its persists not yet on disk.
    pub fn crash(&mut self, replica: u8) {
        self.crashed[usize::from(replica)] = true;
        self.held_persists.retain(|(r, _, _)| *r != replica);
    }

    /// Drops every message to or from `replica` (both directions).
    pub fn isolate(&mut self, replica: u8) {
        self.filter =
            Box::new(move |e| e.from != Node::Replica(replica) && e.to != Node::Replica(replica));
    }

    pub fn heal(&mut self) {
        self.filter = Box::new(|_| true);
    }
}

impl Cluster<Recorder> {
    /// The ops executed by a replica, in order.
    pub fn executed(&self, replica: u8) -> Vec<Vec<u8>> {
        self.replicas[usize::from(replica)]
            .service()
            .executed
            .iter()
            .map(|(_, op)| op.clone())
            .collect()
    }

    /// Asserts the agreement invariant: every replica's executed sequence of
    /// (op-number, op) is a prefix of the longest one, in increasing op order.
    pub fn assert_agreement(&self) {
        let longest = self
            .replicas
            .iter()
            .map(|r| r.service().executed.clone())
            .max_by_key(|e| e.len())
            .unwrap_or_default();
        for (r, replica) in self.replicas.iter().enumerate() {
            let executed = &replica.service().executed;
            assert!(
                executed.windows(2).all(|w| w[0].0 < w[1].0),
                "replica {r} executed out of order"
            );
            assert_eq!(
                executed[..],
                longest[..executed.len()],
                "replica {r} diverged"
            );
        }
    }
}
