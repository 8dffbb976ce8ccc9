//! The client proxy (§4, "client"): a sans-IO state machine that gives each
//! request a number, sends it to the primary it believes in, retries to all
//! replicas when no reply comes, and learns the view from replies.
//!
//! The contract is the [`crate::Replica`]'s: inputs are `handle_*(now, …)`
//! and the requests; after every input, drain [`Client::poll_output`]
//! until it returns [`ClientOutput::Timeout`]`(t)`, and call
//! [`Client::handle_timeout`] at `t`. Completions and failures are outputs
//! too.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::config::Config;
use crate::message::{
    ClientId, MemberId, Message, ReadRequest, Reconfiguration, ReplicaIndex, Reply, Request,
    StartEpoch,
};
use crate::time::Instant;

/// What a client needs to know of the cluster, and its own tunables.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClientConfig {
    /// The number of replicas.
    pub replica_count: u8,
    /// The cluster's witnesses (`Config::witnesses`): never primary, so
    /// never the first to be sent a request.
    pub witnesses: Vec<ReplicaIndex>,
    /// The member id of each replica (`Config::members`; empty: replica `i`
    /// is member `i`).
    pub members: Vec<MemberId>,
    /// The epoch the client believes current (§7); it learns newer ones
    /// from [`StartEpoch`] notices ([`Client::handle_start_epoch`]).
    pub epoch: u32,
    /// The members' addresses, as the latest [`StartEpoch`] carried them
    /// (empty: the embedding knows them by other means).
    pub addresses: Vec<Vec<u8>>,
    /// How long to wait for a reply before resending to every replica.
    pub request_timeout_ns: u64,
    /// Largest operation accepted, in bytes (the cluster's `op_size_max`).
    pub op_size_max: u32,
    /// Largest frame accepted from a replica (the cluster's
    /// `message_size_max`); larger replies are rejected by the decoder.
    pub message_size_max: u32,
    /// Attempts (sends) per request before giving up with
    /// [`ClientError::TimedOut`]; `0` retries forever.
    pub request_attempts_max: u32,
    /// The client's identifier. Pick it at random: two clients with the
    /// same identifier would see each other's requests as duplicates.
    pub client_id: ClientId,
}

impl ClientConfig {
    /// A client of the cluster `config` with identifier `client_id`, a
    /// 200 ms request timeout and unlimited retries.
    pub fn new(config: &Config, client_id: ClientId) -> ClientConfig {
        ClientConfig {
            replica_count: config.replica_count,
            witnesses: config.witnesses.clone(),
            members: config.members.clone(),
            epoch: 0,
            addresses: Vec::new(),
            request_timeout_ns: 2 * config.view_change_timeout_ns,
            op_size_max: config.op_size_max,
            message_size_max: config.message_size_max,
            request_attempts_max: 0,
            client_id,
        }
    }
}

/// Why a request was refused or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A request is already outstanding: the protocol allows one per client.
    Busy,
    /// The operation exceeds `op_size_max`.
    TooLarge,
    /// No reply after `request_attempts_max` attempts. The request may still
    /// execute later: its outcome is unknown.
    TimedOut,
    /// The client's request-numbers are used up (a recovery's fence would
    /// pass [`crate::message::NUMBER_MAX`], see [`Client::recover`]): use
    /// a new client id.
    Exhausted,
}

impl core::fmt::Display for ClientError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ClientError::Busy => "a request is already outstanding",
            ClientError::TooLarge => "operation larger than op_size_max",
            ClientError::TimedOut => "no reply; the outcome is unknown",
            ClientError::Exhausted => "request-numbers exhausted; use a new client id",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ClientError {}

/// An output of the client proxy, drained with [`Client::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutput {
    /// Send `message` to member `to`, in the client's epoch `epoch` (the
    /// frame header's epoch).
    Send {
        /// The destination's member id (it equals the replica's index
        /// unless the cluster was reconfigured).
        to: MemberId,
        /// The client's epoch.
        epoch: u32,
        /// The message (a Request, ReadRequest or Reconfiguration).
        message: Message,
    },
    /// The outstanding request completed (a reply answered it).
    Completed(Completion),
    /// The outstanding request was abandoned after
    /// [`ClientConfig::request_attempts_max`] attempts; its outcome is
    /// unknown (it may still execute).
    Failed {
        /// The request-number of the abandoned request.
        request_number: u64,
        /// Why: [`ClientError::TimedOut`].
        error: ClientError,
    },
    /// Nothing more to carry out now; call [`Client::handle_timeout`] at
    /// this instant (`None`: no request outstanding, no timer armed).
    Timeout(Option<Instant>),
}

/// A finished request: its number and the service's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The request-number.
    pub request_number: u64,
    /// The op-number the result reflects (see [`Reply::op_number`]).
    pub op_number: u64,
    /// The service's result.
    pub result: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Outstanding {
    request_number: u64,
    /// The Request or ReadRequest to resend.
    message: Message,
    deadline: Instant,
    attempts: u32,
}

/// The client proxy. One request outstanding at a time (§4.1).
pub struct Client {
    config: ClientConfig,
    /// The highest view heard of in a reply; its primary gets the first try.
    view: u64,
    request_number: u64,
    /// The highest op-number seen in a reply: a backup read must reflect at
    /// least this (read-your-writes, monotonic reads).
    op_number_seen: u64,
    outstanding: Option<Outstanding>,
    /// Outputs not yet drained; never holds [`ClientOutput::Timeout`].
    /// Bounded by the embedding's draining: each input adds at most one
    /// send per replica and one completion or failure.
    outbox: VecDeque<ClientOutput>,
}

impl Client {
    /// A new client whose first request will be number `first_request_number`
    /// plus one. A client restarting with the same id must continue above every
    /// number it used before (§4.3 "client recovery"); a fresh id starts at 0.
    pub fn new(config: ClientConfig, first_request_number: u64) -> Client {
        Client {
            config,
            view: 0,
            request_number: first_request_number,
            op_number_seen: 0,
            outstanding: None,
            outbox: VecDeque::new(),
        }
    }

    /// A client restarting with an identifier it used before and no memory
    /// of its request-numbers (§4.3, "client recovery"). It first sends
    /// the cluster a recovery query, which goes through the log: executing
    /// it fences every request of the client's earlier incarnations (they
    /// become stale, even those still in flight) and answers the
    /// request-number to continue above.
    ///
    /// The paper continues two above the latest request executed, which
    /// assumes at most one old request in flight; a client that timed out
    /// or abandoned requests and moved on may have several, and one of
    /// them executing after the recovery would take the new request's
    /// number. The fence is the start of the next block of
    /// [`REQUEST_NUMBERS_PER_INCARNATION`](crate::client_table::REQUEST_NUMBERS_PER_INCARNATION)
    /// numbers, above everything an earlier incarnation used.
    ///
    /// `nonce` must differ on every restart (take it from the operating
    /// system's random source): a retried query of this recovery is then
    /// told the same fence instead of being fenced off itself.
    ///
    /// Until the answer arrives the client is busy; the answer completes
    /// with request-number 0 (see [`Client::handle_reply`]).
    pub fn recover(config: ClientConfig, now: Instant, nonce: u64) -> Client {
        let mut client = Client::new(config, 0);
        let request = Request {
            client_id: client.config.client_id,
            request_number: 0,
            op: nonce.to_le_bytes().to_vec(),
        };
        let primary = client.primary();
        client.send_first(now, primary, 0, Message::Request(request));
        client
    }

    /// The next request-number, or [`ClientError::Exhausted`].
    fn next_request_number(&mut self) -> Result<u64, ClientError> {
        self.request_number = self
            .request_number
            .checked_add(1)
            .ok_or(ClientError::Exhausted)?;
        Ok(self.request_number)
    }

    /// Whether the client is still learning its request-numbers.
    pub fn is_recovering(&self) -> bool {
        self.outstanding
            .as_ref()
            .is_some_and(|o| o.request_number == 0)
    }

    /// The member id of replica `index` of the client's epoch (as
    /// [`crate::Config::member_id`]): without members, member `i` is
    /// replica `i`.
    fn member_id(&self, index: ReplicaIndex) -> MemberId {
        self.config
            .members
            .get(index.as_usize())
            .copied()
            .unwrap_or(MemberId(index.0))
    }

    /// The epoch the client believes current (§7).
    pub fn epoch(&self) -> u32 {
        self.config.epoch
    }

    /// The members' addresses, as the latest [`StartEpoch`] carried them.
    pub fn addresses(&self) -> &[Vec<u8>] {
        &self.config.addresses
    }

    /// The member ids of the epoch the client believes current.
    pub fn members(&self) -> Vec<MemberId> {
        (0..self.config.replica_count)
            .map(|i| self.member_id(ReplicaIndex(i)))
            .collect()
    }

    /// Asks the cluster to move to a new configuration of `members` (§7.1),
    /// as an administrator does, and returns the request-number. The
    /// completion's result is the new epoch-number (`u32` LE). The primary
    /// refuses it (no reply: the client retries, then times out) when the
    /// client's epoch is not current, when a reconfiguration is already in
    /// progress, when the cluster has witnesses, or when `members` is not a
    /// valid configuration keeping at least one current member.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        members: Vec<MemberId>,
    ) -> Result<u64, ClientError> {
        self.reconfigure_with_addresses(now, members, Vec::new())
    }

    /// [`Client::reconfigure`], carrying one address per member (opaque, at
    /// most [`crate::message::ADDRESS_SIZE_MAX`] bytes each) that every
    /// replica and client learns with the new epoch.
    pub fn reconfigure_with_addresses(
        &mut self,
        now: Instant,
        members: Vec<MemberId>,
        addresses: Vec<Vec<u8>>,
    ) -> Result<u64, ClientError> {
        if self.outstanding.is_some() {
            return Err(ClientError::Busy);
        }
        self.next_request_number()?;
        let message = Reconfiguration {
            client_id: self.config.client_id,
            request_number: self.request_number,
            epoch: self.config.epoch,
            members,
            addresses,
        };
        let primary = self.primary();
        self.send_first(
            now,
            primary,
            self.request_number,
            Message::Reconfiguration(message),
        );
        Ok(self.request_number)
    }

    /// Takes in a [`StartEpoch`] notice, which a replica of a newer epoch
    /// sends a client still using an older one (§7.3): the client adopts
    /// the new members and resends its outstanding request to the new
    /// epoch's first primary. Returns whether the epoch was new.
    ///
    /// A notice of the client's own epoch that carries the members'
    /// addresses when the client has none (it heard of the epoch first from
    /// a replica that knew no addresses: one restarted from a configuration
    /// that named only members) fills them in; that is not a new epoch.
    pub fn handle_start_epoch(&mut self, now: Instant, notice: StartEpoch) -> bool {
        let count = u8::try_from(notice.members.len()).unwrap_or(0);
        if notice.epoch == self.config.epoch
            && self.config.addresses.is_empty()
            && notice.addresses.len() == notice.members.len()
            && notice.members == self.config.members
        {
            self.config.addresses = notice.addresses;
            return false;
        }
        if notice.epoch <= self.config.epoch || count == 0 {
            return false;
        }
        self.config.epoch = notice.epoch;
        self.config.replica_count = count;
        self.config.members = notice.members;
        self.config.addresses = notice.addresses;
        self.config.witnesses.clear();
        self.view = 0;
        if let Some(outstanding) = &mut self.outstanding {
            outstanding.deadline = now + self.config.request_timeout_ns;
            if let Message::Reconfiguration(r) = &mut outstanding.message {
                // The administrator named the whole new configuration: ask
                // for it in the current epoch. If it is what began this
                // epoch, the client table answers it without running it
                // again.
                r.epoch = self.config.epoch;
            }
            let message = outstanding.message.clone();
            let primary = self.primary();
            self.outbox.push_back(ClientOutput::Send {
                to: self.member_id(primary),
                epoch: self.config.epoch,
                message,
            });
        }
        true
    }

    fn primary(&self) -> ReplicaIndex {
        crate::config::primary_of(self.view, self.config.replica_count, &self.config.witnesses)
    }

    fn send_first(
        &mut self,
        now: Instant,
        to: ReplicaIndex,
        request_number: u64,
        message: Message,
    ) {
        self.outbox.push_back(ClientOutput::Send {
            to: self.member_id(to),
            epoch: self.config.epoch,
            message: message.clone(),
        });
        self.outstanding = Some(Outstanding {
            request_number,
            message,
            deadline: now + self.config.request_timeout_ns,
            attempts: 1,
        });
    }

    /// The highest op-number this client has seen in a reply.
    pub fn op_number_seen(&self) -> u64 {
        self.op_number_seen
    }

    /// Starts a read of the read-only `op` at replica `replica`, typically a
    /// backup (§6, "reads at backups"), and returns its request-number. The
    /// replica answers from its own state once it has executed every op this
    /// client has seen, so the answer may be stale but never older than the
    /// client's own writes and earlier reads. A retry goes to every replica;
    /// any of them may answer.
    pub fn read_at(
        &mut self,
        now: Instant,
        replica: ReplicaIndex,
        op: Vec<u8>,
    ) -> Result<u64, ClientError> {
        if self.outstanding.is_some() {
            return Err(ClientError::Busy);
        }
        if op.len() > self.config.op_size_max as usize {
            return Err(ClientError::TooLarge);
        }
        self.next_request_number()?;
        let read = ReadRequest {
            client_id: self.config.client_id,
            request_number: self.request_number,
            op_number_min: self.op_number_seen,
            op,
        };
        let mut to = replica.min(ReplicaIndex(self.config.replica_count.saturating_sub(1)));
        if self.config.witnesses.contains(&to) {
            // A witness has no state to read: ask the primary instead.
            to = self.primary();
        }
        self.send_first(now, to, self.request_number, Message::ReadRequest(read));
        Ok(self.request_number)
    }

    /// The client's identifier.
    pub fn client_id(&self) -> ClientId {
        self.config.client_id
    }

    /// The view the client believes current.
    pub fn view(&self) -> u64 {
        self.view
    }

    /// The request-number of the outstanding request, if any.
    pub fn outstanding(&self) -> Option<u64> {
        self.outstanding.as_ref().map(|o| o.request_number)
    }

    /// Starts a request for `op` and returns its request-number.
    pub fn request(&mut self, now: Instant, op: Vec<u8>) -> Result<u64, ClientError> {
        if self.outstanding.is_some() {
            return Err(ClientError::Busy);
        }
        if op.len() > self.config.op_size_max as usize {
            return Err(ClientError::TooLarge);
        }
        self.next_request_number()?;
        let request = Request {
            client_id: self.config.client_id,
            request_number: self.request_number,
            op,
        };
        let primary = self.primary();
        self.send_first(now, primary, self.request_number, Message::Request(request));
        Ok(self.request_number)
    }

    /// Takes in a reply. When it answers the outstanding request, queues
    /// [`ClientOutput::Completed`]; replies to older requests (duplicates)
    /// are dropped. For a recovering client the completion has
    /// request-number 0 and the recovery's fence (`u64` little-endian,
    /// then the nonce) as its result; the client then continues above it.
    pub fn handle_reply(&mut self, _now: Instant, reply: Reply) {
        if let Some(completion) = self.complete(reply) {
            self.outbox.push_back(ClientOutput::Completed(completion));
        }
    }

    /// The completion `reply` brings, if it answers the outstanding request.
    fn complete(&mut self, reply: Reply) -> Option<Completion> {
        if reply.client_id != self.config.client_id || !reply_in_range(&reply) {
            return None;
        }
        // A reply to a Request comes from the primary of its view (a backup
        // read's reply names the view its replica is in, which is no newer).
        self.view = self.view.max(reply.view);
        let outstanding = self.outstanding.as_ref()?;
        if outstanding.request_number != reply.request_number {
            return None;
        }
        self.op_number_seen = self.op_number_seen.max(reply.op_number);
        self.outstanding = None;
        if reply.request_number == 0 {
            // The fence of this recovery; none (exhausted): no number is left.
            let fence = reply
                .result
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(u64::MAX, u64::from_le_bytes);
            self.request_number = self.request_number.max(fence);
        }
        Some(Completion {
            request_number: reply.request_number,
            op_number: reply.op_number,
            result: reply.result,
        })
    }

    /// Resends the outstanding request to every replica when its deadline
    /// passed: the primary may have changed (§4.1, "the client re-sends").
    /// Queues [`ClientOutput::Failed`] when the request is abandoned.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(outstanding) = self.outstanding.as_mut() else {
            return;
        };
        if outstanding.deadline > now {
            return;
        }
        if self.config.request_attempts_max != 0
            && outstanding.attempts >= self.config.request_attempts_max
        {
            let request_number = outstanding.request_number;
            self.outstanding = None;
            self.outbox.push_back(ClientOutput::Failed {
                request_number,
                error: ClientError::TimedOut,
            });
            return;
        }
        outstanding.attempts += 1;
        outstanding.deadline = now + self.config.request_timeout_ns;
        if let Message::ReadRequest(read) = &mut outstanding.message {
            // Later replies may have raised what this read must reflect.
            read.op_number_min = read.op_number_min.max(self.op_number_seen);
        }
        let message = outstanding.message.clone();
        for member in self.members() {
            self.outbox.push_back(ClientOutput::Send {
                to: member,
                epoch: self.config.epoch,
                message: message.clone(),
            });
        }
    }

    /// Gives up on the outstanding request, whose outcome is then unknown (it
    /// may still execute), and returns its number. For an embedding whose
    /// caller cancelled the wait; the next request gets a new number, so a
    /// late reply to the abandoned one is ignored.
    pub fn abandon(&mut self) -> Option<u64> {
        self.outstanding.take().map(|o| o.request_number)
    }

    /// The next output to carry out; [`ClientOutput::Timeout`] once there
    /// is none. A pure drain: it changes no state.
    pub fn poll_output(&mut self) -> ClientOutput {
        match self.outbox.pop_front() {
            Some(output) => {
                debug_assert!(
                    !matches!(output, ClientOutput::Timeout(_)),
                    "the outbox holds no Timeout"
                );
                output
            }
            None => ClientOutput::Timeout(self.poll_timeout()),
        }
    }

    /// When [`Client::handle_timeout`] must next be called (a getter; the
    /// instant [`ClientOutput::Timeout`] carries).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outstanding.as_ref().map(|o| o.deadline)
    }
}

/// Whether a reply's numbers are ones a replica sends (at most
/// [`crate::message::NUMBER_MAX`], the latest request-number of a recovery
/// answer included). A crafted one is dropped: a recovering client that
/// took `u64::MAX` as its latest request-number would overflow numbering
/// its next request (issue 17, item 5).
fn reply_in_range(reply: &Reply) -> bool {
    use crate::message::NUMBER_MAX;
    let latest = (reply.request_number == 0)
        .then(|| reply.result.get(..8).and_then(|b| b.try_into().ok()))
        .flatten()
        .map_or(0, u64::from_le_bytes);
    [reply.view, reply.request_number, reply.op_number, latest]
        .iter()
        .all(|&x| x <= NUMBER_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn reply(view: u64, request_number: u64) -> Reply {
        Reply {
            view,
            client_id: 1,
            request_number,
            op_number: request_number,
            result: vec![request_number as u8],
        }
    }

    /// Every output up to the timeout that ends them, and the timeout.
    fn drain(client: &mut Client) -> (Vec<ClientOutput>, Option<Instant>) {
        let mut outputs = Vec::new();
        loop {
            match client.poll_output() {
                ClientOutput::Timeout(t) => return (outputs, t),
                output => outputs.push(output),
            }
        }
    }

    fn completed(client: &mut Client) -> Option<u64> {
        let (outputs, _) = drain(client);
        outputs.iter().find_map(|o| match o {
            ClientOutput::Completed(c) => Some(c.request_number),
            _ => None,
        })
    }

    #[test]
    fn one_request_at_a_time_and_late_replies_ignored() {
        let config = Config::new(1, 3);
        let mut client = Client::new(ClientConfig::new(&config, 1), 0);
        let now = Instant::ZERO;
        assert_eq!(client.request(now, vec![1]), Ok(1));
        assert_eq!(client.request(now, vec![2]), Err(ClientError::Busy));
        assert_eq!(client.abandon(), Some(1));
        assert_eq!(client.request(now, vec![2]), Ok(2));
        drain(&mut client);
        client.handle_reply(now, reply(0, 1));
        assert_eq!(
            completed(&mut client),
            None,
            "reply to the abandoned request"
        );
        client.handle_reply(now, reply(4, 2));
        assert_eq!(completed(&mut client), Some(2));
        client.handle_reply(now, reply(4, 2));
        assert_eq!(completed(&mut client), None, "a duplicate reply");
        assert_eq!(client.view(), 4, "learned the view from replies");
    }

    #[test]
    fn gives_up_after_its_attempts() {
        let config = Config::new(1, 3);
        let mut client_config = ClientConfig::new(&config, 1);
        client_config.request_attempts_max = 2;
        let timeout = client_config.request_timeout_ns;
        let mut client = Client::new(client_config, 0);
        client.request(Instant::ZERO, vec![1]).unwrap();
        let (sent, deadline) = drain(&mut client);
        assert_eq!(sent.len(), 1, "first try: the primary");
        assert_eq!(deadline, Some(Instant::from_nanos(timeout)));
        client.handle_timeout(Instant::from_nanos(timeout));
        let (sent, _) = drain(&mut client);
        assert!(
            sent.len() == 3 && sent.iter().all(|o| matches!(o, ClientOutput::Send { .. })),
            "retry: every replica, no failure yet: {sent:?}"
        );
        client.handle_timeout(Instant::from_nanos(2 * timeout));
        assert_eq!(
            drain(&mut client),
            (
                vec![ClientOutput::Failed {
                    request_number: 1,
                    error: ClientError::TimedOut
                }],
                None
            ),
            "abandoned: a failure output, and no timer left"
        );
        assert_eq!(client.outstanding(), None);
    }
}
