//! The core alone: a cluster of [`vr_core::Replica`]s and
//! [`vr_core::Client`]s in one thread, messages moved between them through
//! an in-memory queue, no encoding, no IO and no clock (the drive loop of
//! `vr-core`'s crate docs, made reusable).
//!
//! What this measures is the protocol's own work per operation: the client
//! proxy building a Request; the primary's client-table lookup, log append
//! and one Prepare per backup; each backup's append and PrepareOk; the
//! primary's commit, the service upcall and the Reply. Every message is
//! moved, never encoded: `vr_core::codec` is not on this path.
//!
//! # "Batch" here
//!
//! The core batches requests into one Prepare (`Config::batch_ops_max`),
//! but this harness drains a replica's outputs after every message it
//! delivers, so Prepares carry one request unless the prepare window
//! releases queued ones together. What [`MemCluster::submit`] calls a batch is the number of
//! client requests handed to the cluster before it is driven: with a batch
//! of 256, 256 requests are in the primary's prepare window together
//! (pipelining), but most travel in a Prepare of their own. Numbers
//! for "batch 16" and "batch 256" are therefore numbers for requests in
//! flight, not for Prepare batching.

use std::collections::VecDeque;

use vr_core::{Action, Client, ClientAction, ClientConfig, Config, Instant, Message, Replica};

use crate::service::BenchService;

/// The replicas of every in-memory cluster.
pub const REPLICA_COUNT: u8 = 3;

/// A 3-replica cluster and its clients, wired in memory.
pub struct MemCluster {
    replicas: Vec<Replica<BenchService>>,
    clients: Vec<Client>,
    /// Clients with no request outstanding, used as a stack.
    idle: Vec<usize>,
    /// Messages in flight to replicas, delivered in order.
    network: VecDeque<(u8, Message)>,
    /// The operation every request carries.
    op: Vec<u8>,
    /// Closed loop: a client whose request completes sends the next one at once.
    closed_loop: bool,
    completed: u64,
}

/// Time never moves in memory: no timer is due, so no retransmission or
/// view change can happen and every message is handled exactly once.
const NOW: Instant = Instant::ZERO;

impl MemCluster {
    /// A fresh cluster (view 0, empty logs) with `clients` idle clients whose
    /// operations are `op_size` bytes.
    pub fn new(clients: usize, op_size: usize) -> MemCluster {
        let config = Config::new(1, REPLICA_COUNT);
        // The primary keeps the whole prepare window busy; clients beyond it
        // wait in its request queue, which must hold them all.
        assert!(
            clients <= config.request_queue_max as usize + config.prepare_window_max as usize,
            "more clients in flight than the primary can hold"
        );
        let replicas = (0..REPLICA_COUNT)
            .map(|i| {
                Replica::new(config.clone(), i, BenchService::new(), NOW)
                    .expect("Config::new is valid")
            })
            .collect();
        let clients = (0..clients)
            // Client id 0 is avoided only for readability of traces.
            .map(|i| Client::new(ClientConfig::new(&config, i as u128 + 1), 0))
            .collect::<Vec<_>>();
        MemCluster {
            replicas,
            idle: (0..clients.len()).rev().collect(),
            clients,
            network: VecDeque::new(),
            op: vec![0x5a; op_size],
            closed_loop: false,
            completed: 0,
        }
    }

    /// Requests completed (replies received by their clients) since `new`.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Clients with no request outstanding.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// The replicas, for checks.
    pub fn replicas(&self) -> &[Replica<BenchService>] {
        &self.replicas
    }

    /// Starts one request on each of up to `batch` idle clients, without
    /// delivering anything yet; returns how many were started.
    pub fn submit(&mut self, batch: usize) -> usize {
        let mut started = 0;
        while started < batch {
            let Some(client) = self.idle.pop() else { break };
            self.start(client);
            started += 1;
        }
        started
    }

    /// Delivers messages until none is in flight. Returns the requests
    /// completed meanwhile.
    pub fn drive(&mut self) -> u64 {
        let before = self.completed;
        while self.step() {}
        self.completed - before
    }

    /// Closed loop: starts every idle client, then keeps each client busy
    /// (a completed request is followed at once by the next) until `ops`
    /// more requests have completed, then lets the requests still in flight
    /// finish so the cluster is quiescent again. Returns the requests
    /// completed, `ops` plus those that were in flight.
    pub fn run_closed_loop(&mut self, ops: u64) -> u64 {
        let before = self.completed;
        let goal = before + ops;
        self.closed_loop = true;
        self.submit(usize::MAX);
        while self.completed < goal && self.step() {}
        self.closed_loop = false;
        self.drive();
        self.completed - before
    }

    /// Delivers one message and carries out what it caused; returns whether
    /// there was one.
    fn step(&mut self) -> bool {
        let Some((to, message)) = self.network.pop_front() else {
            return false;
        };
        // Split the borrows: the replica's actions feed clients and the network.
        let MemCluster {
            replicas,
            clients,
            idle,
            network,
            op,
            closed_loop,
            completed,
        } = self;
        let replica = &mut replicas[usize::from(to)];
        replica.handle_message(NOW, message);
        while let Some(action) = replica.poll_action() {
            match action {
                Action::Send { replica, message } => network.push_back((replica, message)),
                Action::Reply(reply) => {
                    // Client ids are index + 1 (see `new`).
                    let index = (reply.client_id - 1) as usize;
                    if clients[index].handle_reply(NOW, reply).is_some() {
                        *completed += 1;
                        if *closed_loop {
                            start(&mut clients[index], op, network);
                        } else {
                            idle.push(index);
                        }
                    }
                }
            }
        }
        true
    }

    fn start(&mut self, client: usize) {
        start(&mut self.clients[client], &self.op, &mut self.network);
    }
}

/// Starts a request of `op` on an idle `client` and puts its message in flight.
fn start(client: &mut Client, op: &[u8], network: &mut VecDeque<(u8, Message)>) {
    // A client is started only when idle, and the op fits op_size_max.
    client
        .request(NOW, op.to_vec())
        .expect("an idle client with an op under op_size_max");
    while let Some(ClientAction::Send { replica, message }) = client.poll_action() {
        network.push_back((replica, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_of_a_batch_commits_everywhere_in_the_same_order() {
        let mut cluster = MemCluster::new(16, 16);
        for _ in 0..10 {
            assert_eq!(cluster.submit(16), 16);
            assert_eq!(cluster.drive(), 16, "one drive answers the whole batch");
            assert_eq!(cluster.idle(), 16);
        }
        let primary = &cluster.replicas()[0];
        assert_eq!(primary.commit_number(), 160);
        assert_eq!(primary.service().executed(), 160);
        // Backups learn the last commits from the next Prepare or Commit, so
        // they may lag; what they executed is a prefix of the same order.
        for backup in &cluster.replicas()[1..] {
            assert_eq!(backup.op_number(), 160, "every op is in every log");
            assert!(backup.commit_number() >= 160 - 16);
        }
    }

    #[test]
    fn closed_loop_keeps_every_client_busy_until_the_goal() {
        let mut cluster = MemCluster::new(300, 16);
        let done = cluster.run_closed_loop(5000);
        assert!((5000..=5000 + 300).contains(&done), "{done}");
        assert_eq!(cluster.idle(), 300, "in-flight requests finished");
        assert_eq!(cluster.replicas()[0].commit_number(), done);
    }
}
