//! One RESP connection, without the network: what the front end does with a
//! client's bytes, the same on every runtime.
//!
//! A [`Session`] takes the bytes a client sends ([`Session::receive`]),
//! parses them into commands, answers at once what needs no log (`PING`,
//! `ECHO`, `READONLY`, `READWRITE`, `VR.STATUS`, `INFO`, unknown commands,
//! wrong arity, reads on a `READONLY` connection), and packs the rest into
//! batches of at most `op_size_max` encoded bytes, one VR operation each.
//! [`Session::poll`] says what the runtime must do next ([`Step`]); the
//! replies come out in pipeline order in [`Session::output`].
//!
//! The runtime's loop, in outline (`vr_kv::server` has three of them):
//!
//! ```text
//! loop {
//!     match session.poll(&node) {
//!         Step::Submit(op) => {           // replicate op through the VR client,
//!             let outcome = submit(op);   // then hand back what came of it
//!             session.complete(outcome);
//!         }
//!         Step::Idle => {                 // everything received is answered:
//!             write(session.output());    // write the replies, then read
//!             session.clear_output();     // at most session.read_room() bytes
//!             session.receive(read()?);   // (0 bytes read: the client left)
//!         }
//!         Step::Close => {                // bad input: write the replies, the
//!             write(session.output());    // last of them the error, and close
//!             return;
//!         }
//!     }
//! }
//! ```
//!
//! Buffers are bounded: the input by `read_buffer_max` (a client that fills
//! it without completing a command gets [`ERR_REQUEST_TOO_LARGE`] and is
//! closed), a batch by the cluster's `op_size_max`, and the output by what
//! one batch and the local replies around it produce, since the session
//! takes no input while it has a batch in flight and a runtime reads again
//! only once the output is written.

use std::sync::{Arc, Mutex};

use vr_core::node::NodeStats;
use vr_core::{ClientError, Config, MemberId, Status};

use crate::batch::{
    decode_results, encode_op, encoded_entry_len, result_seq, Args, Batch, BatchResult, Entry,
    BATCH_HEADER_LEN,
};
use crate::command::{unsupported, Command, Exec};
use crate::connection::{self, ClientState};
use crate::resp::{parse_command, Limits, Reply};
use crate::service::lock;
use crate::store::Store;

/// The reply to each command of a batch whose outcome is unknown: the VR
/// client gave up waiting, and the batch may still execute later.
pub const UNCERTAIN: &str =
    "UNCERTAIN the outcome of this command is unknown (the cluster did not answer in time)";
/// The reply when `resp_connections_max` connections are open (Redis's).
pub const ERR_MAX_CLIENTS: &str = "ERR max number of clients reached";
/// The reply to a command too large for one replicated operation.
pub const ERR_TOO_LARGE: &str =
    "ERR command too large to replicate (larger than the cluster's op_size_max)";
/// The reply when a connection's buffer fills without a whole command.
pub const ERR_REQUEST_TOO_LARGE: &str = "ERR Protocol error: request too large";
/// The reply to a `READONLY` read while this replica is recovering its
/// state (Redis's reply while a replica loads its dataset).
pub const ERR_LOADING: &str = "LOADING VR replica is recovering its state from the cluster";

/// The reply to a `READONLY` read at a witness (§6): it keeps the log but
/// holds no data. Reads and writes in the default `READWRITE` mode are
/// forwarded to the primary like at any replica.
pub const ERR_WITNESS: &str =
    "ERR this VR replica is a witness and holds no data: read with READWRITE";

/// Longest inline command (and `*N` / `$N` header line), as Redis's
/// `PROTO_INLINE_MAX_SIZE`.
const INLINE_BYTES_MAX: usize = 64 * 1024;

/// What a session sees of its node: the store for local reads, the
/// cluster's configuration, and the replica's status for `VR.STATUS`.
pub struct NodeView {
    store: Arc<Mutex<Store>>,
    config: Config,
    replica: MemberId,
    limits: Limits,
    read_buffer_max: usize,
    status: Box<dyn Fn() -> NodeStats + Send + Sync>,
    /// The wall clock, µs since the Unix epoch: stamps operations (key
    /// expiry, `docs/kv.md`) and answers `TIME`.
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Connection ids (`CLIENT ID`).
    next_client_id: std::sync::atomic::AtomicU64,
    /// Sessions that have polled and are not dropped (`INFO clients`).
    connected: Arc<std::sync::atomic::AtomicUsize>,
}

/// The system's wall clock in µs since the Unix epoch (0 if it is set
/// before 1970).
pub fn wall_clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl NodeView {
    /// The view of replica `replica` of the cluster `config`, whose service
    /// runs `store`; `status` reports the replica's view and numbers. A
    /// connection may buffer `read_buffer_max` bytes without a complete
    /// command; no argument may be longer than `op_size_max`, since no
    /// operation can be.
    pub fn new(
        store: Arc<Mutex<Store>>,
        config: Config,
        replica: MemberId,
        read_buffer_max: usize,
        status: Box<dyn Fn() -> NodeStats + Send + Sync>,
    ) -> NodeView {
        let op_size_max = config.op_size_max as usize;
        let limits = Limits {
            args_max: op_size_max.max(1),
            bulk_bytes_max: op_size_max,
            inline_bytes_max: INLINE_BYTES_MAX,
        };
        NodeView {
            store,
            config,
            replica,
            limits,
            read_buffer_max: read_buffer_max.max(1),
            status,
            clock: Box::new(wall_clock_micros),
            next_client_id: std::sync::atomic::AtomicU64::new(1),
            connected: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    /// Replaces the wall clock (µs since the Unix epoch), for tests.
    pub fn with_clock(mut self, clock: Box<dyn Fn() -> u64 + Send + Sync>) -> NodeView {
        self.clock = clock;
        self
    }

    fn is_primary(&self) -> bool {
        (self.status)().primary
    }

    /// `INFO [section ...]`.
    fn info(&self, args: &[Vec<u8>]) -> Reply {
        const DEFAULT: [&str; 6] = [
            "server",
            "clients",
            "memory",
            "persistence",
            "replication",
            "keyspace",
        ];
        let mut sections: Vec<String> = Vec::new();
        if args.len() == 1 {
            sections.extend(DEFAULT.iter().map(|s| (*s).to_owned()));
        }
        for arg in &args[1..] {
            let name = String::from_utf8_lossy(arg).to_ascii_lowercase();
            if ["all", "default", "everything"].contains(&name.as_str()) {
                sections.extend(DEFAULT.iter().map(|s| (*s).to_owned()));
            } else {
                sections.push(name);
            }
        }
        let mut text = String::new();
        for section in sections {
            let body = if section == "replication" {
                // Never while holding the store: the replica's loop answers
                // the status, and it may be waiting for the store.
                let Reply::Bulk(Some(bytes)) = self.status_reply(true) else {
                    continue;
                };
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                let store = lock(&self.store);
                let clients = self.connected.load(std::sync::atomic::Ordering::Relaxed);
                match connection::info_section(&section, &store, clients) {
                    Some(body) => body,
                    None => continue,
                }
            };
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            text.push_str(&body);
        }
        Reply::Bulk(Some(text.into_bytes()))
    }

    /// The cluster's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This replica's member id.
    pub fn replica(&self) -> MemberId {
        self.replica
    }

    /// Whether this replica is a witness (it holds no service state).
    /// Witness clusters refuse reconfiguration, so the first configuration
    /// says.
    fn is_witness(&self) -> bool {
        (self.config.index_of_member(self.replica)).is_some_and(|i| self.config.is_witness(i))
    }

    /// `VR.STATUS`, or `INFO replication` with its `# Replication` header.
    pub fn status_reply(&self, info: bool) -> Reply {
        let stats = (self.status)();
        let status = match stats.status {
            Some(Status::Normal) => "normal",
            Some(Status::ViewChange) => "view-change",
            Some(Status::Recovering) => "recovering",
            Some(Status::Transitioning) => "transitioning",
            Some(Status::Retired) => "retired",
            None => "unknown",
        };
        // After a reconfiguration (§7) indexes change: the node says.
        let primary = stats.primary;
        let mut text = String::new();
        if info {
            text.push_str("# Replication\r\n");
            // Redis's words first, for client libraries; VR's after.
            text.push_str(if primary {
                "role:master\r\nconnected_slaves:0\r\n"
            } else {
                "role:slave\r\nmaster_link_status:up\r\n"
            });
            text.push_str("vr_");
        }
        text.push_str(&format!(
            "role:{}\r\nreplica:{}\r\nreplicas:{}\r\nview:{}\r\nstatus:{}\r\nop_number:{}\r\ncommit_number:{}\r\nepoch:{}\r\n",
            if primary {
                "primary"
            } else if self.is_witness() {
                "witness"
            } else {
                "backup"
            },
            self.replica,
            if stats.members.is_empty() {
                usize::from(self.config.replica_count)
            } else {
                stats.members.len()
            },
            stats.view,
            status,
            stats.op_number,
            stats.commit_number,
            stats.epoch,
        ));
        let members: Vec<String> = stats.members.iter().map(|m| m.to_string()).collect();
        text.push_str(&format!(
            "members:{}\r\nmay_shut_down:{}\r\n",
            members.join(","),
            u8::from(stats.may_shut_down),
        ));
        let counters = &stats.replica;
        // Safe formation (issue 18): a diskless cluster that formed afresh
        // after holding data lost it; the replica that formed it says so.
        text.push_str(&format!(
            "durability:{}\r\npersists_completed:{}\r\nrestarts_from_disk:{}\r\nclusters_formed:{}\r\n",
            match self.config.durability {
                vr_core::Durability::Disk => "disk",
                vr_core::Durability::Memory => "memory",
            },
            counters.persists_completed,
            counters.restarts_from_disk,
            counters.clusters_formed,
        ));
        text.push_str(&format!(
            "recoveries_completed:{}\r\nleased_reads:{}\r\nbackup_reads:{}\r\nprepare_batches:{}\r\nprepare_batch_entries:{}\r\ncheckpoints_taken:{}\r\ncheckpoints_installed:{}\r\n",
            counters.recoveries_completed,
            counters.leased_reads,
            counters.backup_reads,
            counters.prepare_batches,
            counters.prepare_batch_entries,
            counters.checkpoints_taken,
            counters.checkpoints_installed,
        ));
        Reply::Bulk(Some(text.into_bytes()))
    }
}

/// What the runtime must do next for a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Replicate this operation (a batch) through the connection's VR
    /// client and pass the outcome to [`Session::complete`] before polling
    /// again.
    Submit(Vec<u8>),
    /// Every complete command received is answered: write the output, then
    /// read up to [`Session::read_room`] bytes and [`Session::receive`]
    /// them.
    Idle,
    /// The client sent something that is not RESP: write the output (the
    /// error reply is its end), then close the connection.
    Close,
}

/// Why a submitted batch has no result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The VR client proxy refused the batch or gave up on it
    /// ([`ClientError::TimedOut`]: the outcome is unknown).
    Client(ClientError),
    /// The front end could not set up a VR client (the message says why);
    /// nothing was sent.
    Unavailable(String),
}

/// A reply owed to the client, in pipeline order.
enum Slot {
    /// A reply computed without the cluster.
    Local(Vec<u8>),
    /// The reply to the command at this index of the batch.
    Batched(usize),
}

/// The state of one RESP connection; see the module docs.
pub struct Session {
    /// Set by `READONLY`: reads are served from the local store.
    read_only: bool,
    /// Bytes received; `input[..parsed]` are commands already taken.
    input: Vec<u8>,
    parsed: usize,
    /// Replies owed for the batch being built or replicated, and local
    /// replies that must wait for them. Empty whenever `batch` is empty and
    /// nothing is in flight: local replies then go straight to `out`.
    slots: Vec<Slot>,
    batch: Vec<Entry>,
    /// `encode_op(&batch).len()`, kept as entries are added.
    batch_bytes: usize,
    /// A command parsed but not taken yet: the batch ahead of it must be
    /// replicated first.
    held: Option<Args>,
    /// The number of commands in the batch being replicated.
    in_flight: Option<usize>,
    /// The error to send, after the pending replies, before closing.
    closing_reply: Option<Reply>,
    closed: bool,
    out: Vec<u8>,
    /// `CLIENT` state.
    client: ClientState,
    /// Inside `MULTI`: the commands queued, and whether one was refused
    /// (then `EXEC` answers `EXECABORT`).
    multi: Option<(Vec<Args>, bool)>,
    /// The keys watched, each with the write sequence its `WATCH` was
    /// taken at.
    watch: Vec<(u64, Vec<u8>)>,
    /// The store's write sequence after this connection's last batch.
    last_seq: u64,
    /// The node's count of connected sessions, once this one counts.
    connected: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(connected) = &self.connected {
            connected.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Redis's reply to `EXEC` after a command was refused inside `MULTI`.
pub const ERR_EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// A new connection's session: read-write, nothing received.
    pub fn new() -> Session {
        Session {
            read_only: false,
            input: Vec::new(),
            parsed: 0,
            slots: Vec::new(),
            batch: Vec::new(),
            batch_bytes: BATCH_HEADER_LEN,
            held: None,
            in_flight: None,
            closing_reply: None,
            closed: false,
            out: Vec::new(),
            client: ClientState::default(),
            multi: None,
            watch: Vec::new(),
            last_seq: 0,
            connected: None,
        }
    }

    /// How many bytes [`Session::receive`] may take now: none while a batch
    /// is in flight or after [`Step::Close`], otherwise what is left of
    /// `read_buffer_max`. After [`Step::Idle`] it is at least one.
    pub fn read_room(&self, node: &NodeView) -> usize {
        if self.in_flight.is_some() || self.closed || self.closing_reply.is_some() {
            return 0;
        }
        node.read_buffer_max.saturating_sub(self.input.len())
    }

    /// Takes bytes the client sent. They are parsed on the next
    /// [`Session::poll`]. Give at most [`Session::read_room`] bytes: more
    /// are kept, but the buffer is bounded only if the runtime respects it.
    pub fn receive(&mut self, bytes: &[u8]) {
        debug_assert!(
            self.in_flight.is_none(),
            "bytes received while a batch is in flight"
        );
        self.input.extend_from_slice(bytes);
    }

    /// The replies ready to be written, in order.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Drops the first `written` bytes of the output (the runtime wrote
    /// them).
    pub fn consume_output(&mut self, written: usize) {
        self.out.drain(..written.min(self.out.len()));
    }

    /// Drops the whole output (the runtime wrote it).
    pub fn clear_output(&mut self) {
        self.out.clear();
    }

    /// Whether a batch is being replicated: [`Session::complete`] is due.
    pub fn is_submitting(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Works through the input and says what to do next.
    ///
    /// # Panics
    ///
    /// While a batch is in flight ([`Step::Submit`] was returned and
    /// [`Session::complete`] not called yet): that is a bug in the runtime.
    pub fn poll(&mut self, node: &NodeView) -> Step {
        assert!(
            self.in_flight.is_none(),
            "Session::poll while a batch is in flight"
        );
        if self.client.id == 0 {
            self.client.id = node
                .next_client_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            node.connected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.connected = Some(node.connected.clone());
        }
        // Each turn takes a command, replicates a batch, or returns; the
        // input is finite, so this ends.
        loop {
            if self.closed {
                return Step::Close;
            }
            if let Some(args) = self.held.take() {
                if let Some(args) = self.push(args, node) {
                    // The batch must run before this command: keep it.
                    self.held = Some(args);
                    if let Some(op) = self.flush(node) {
                        return Step::Submit(op);
                    }
                }
                continue;
            }
            if let Some(reply) = self.closing_reply.take() {
                // The commands before the bad input are answered first.
                if let Some(op) = self.flush(node) {
                    self.closing_reply = Some(reply);
                    return Step::Submit(op);
                }
                reply.encode(&mut self.out);
                self.closed = true;
                self.input = Vec::new();
                self.parsed = 0;
                return Step::Close;
            }
            match parse_command(&self.input[self.parsed..], &node.limits) {
                Ok(Some((args, used))) => {
                    self.parsed += used;
                    // Redis ignores an empty command (a blank line, `*0`).
                    if !args.is_empty() {
                        self.held = Some(args);
                    }
                }
                Ok(None) => {
                    self.input.drain(..self.parsed);
                    self.parsed = 0;
                    if self.input.len() >= node.read_buffer_max {
                        self.closing_reply = Some(Reply::Error(ERR_REQUEST_TOO_LARGE.to_owned()));
                        continue;
                    }
                    // Everything received so far is one batch.
                    if let Some(op) = self.flush(node) {
                        return Step::Submit(op);
                    }
                    return Step::Idle;
                }
                Err(error) => {
                    self.closing_reply = Some(error.reply());
                }
            }
        }
    }

    /// Takes the outcome of the batch of the last [`Step::Submit`] and
    /// renders the replies it was waiting for.
    pub fn complete(&mut self, outcome: Result<Vec<u8>, SubmitError>) {
        let Some(count) = self.in_flight.take() else {
            debug_assert!(false, "Session::complete without a batch in flight");
            return;
        };
        if let Ok(result) = &outcome {
            if let Some(seq) = result_seq(result) {
                self.last_seq = self.last_seq.max(seq);
            }
        }
        let replies = batch_replies(count, outcome);
        self.render(&replies);
    }

    /// An answer computed here, after those owed before it.
    fn local(&mut self, reply: Reply) {
        if self.batch.is_empty() {
            debug_assert!(self.slots.is_empty(), "no reply waits without a batch");
            reply.encode(&mut self.out);
        } else {
            self.slots.push(Slot::Local(reply.to_bytes()));
        }
    }

    /// Takes one command in pipeline order, or gives it back when the batch
    /// must be replicated before it (it would not fit, or it is a local read
    /// that must see the batch's effects, or a `WATCH`).
    fn push(&mut self, args: Args, node: &NodeView) -> Option<Args> {
        let command = match Command::parse(args) {
            Ok(command) => command,
            Err(reply) => {
                if let Some((_, failed)) = &mut self.multi {
                    *failed = true;
                }
                self.local(reply);
                return None;
            }
        };
        let name = command.name();
        if let Some((queued, failed)) = &mut self.multi {
            if !matches!(
                name,
                "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
            ) {
                match command.spec.exec {
                    // UNWATCH inside MULTI is queued, as in Redis; by EXEC
                    // the watch has done its work, so it only answers OK.
                    Exec::Read(_) | Exec::Write(_) => {
                        queued.push(command.args);
                        self.local(Reply::Simple("QUEUED".to_owned()));
                    }
                    Exec::Session if name == "unwatch" => {
                        queued.push(command.args);
                        self.local(Reply::Simple("QUEUED".to_owned()));
                    }
                    Exec::Session => {
                        *failed = true;
                        self.local(Reply::Error(format!(
                            "ERR '{name}' inside MULTI is not supported by vr-kv"
                        )));
                    }
                    Exec::Unsupported(what) => {
                        *failed = true;
                        self.local(unsupported(name, what));
                    }
                }
                return None;
            }
        }
        match command.spec.exec {
            Exec::Session => self.session_command(command, node),
            Exec::Unsupported(what) => {
                self.local(unsupported(name, what));
                None
            }
            Exec::Read(_) if matches!(name, "ping" | "echo") => {
                // Not through a store: a PING costs no allocation.
                self.local(crate::commands::server::ping_reply(&command.args));
                None
            }
            Exec::Read(_) if self.read_only => {
                // Possibly stale, but not older than this connection's own
                // earlier commands as this replica has applied them.
                if !self.batch.is_empty() {
                    return Some(command.args);
                }
                // A replica restarted empty has nothing to read until
                // recovery has installed the state: answer as a Redis
                // replica still loading its dataset does, rather than with
                // an empty store.
                let reply = if node.is_witness() {
                    Reply::Error(ERR_WITNESS.to_owned())
                } else if (node.status)().status == Some(Status::Recovering) {
                    Reply::Error(ERR_LOADING.to_owned())
                } else {
                    lock(&node.store).read(&command.args)
                };
                self.local(reply);
                None
            }
            Exec::Read(_) | Exec::Write(_) => self
                .push_entry(Entry::Command(command.args), node)
                .map(|entry| match entry {
                    Entry::Command(args) => args,
                    Entry::Transaction { .. } => unreachable!("a command was pushed"),
                }),
        }
    }

    /// Adds an entry to the batch, or gives it back when the batch is too
    /// full for it.
    fn push_entry(&mut self, entry: Entry, node: &NodeView) -> Option<Entry> {
        let entry_bytes = encoded_entry_len(&entry);
        let op_size_max = node.config.op_size_max as usize;
        if !self.batch.is_empty() && self.batch_bytes + entry_bytes > op_size_max {
            return Some(entry);
        }
        // An entry too large on its own goes alone; `flush` refuses it.
        self.slots.push(Slot::Batched(self.batch.len()));
        self.batch_bytes += entry_bytes;
        self.batch.push(entry);
        None
    }

    /// The commands the connection answers itself.
    fn session_command(&mut self, command: Command, node: &NodeView) -> Option<Args> {
        let args = &command.args;
        let reply = match command.name() {
            "readonly" | "readwrite" => {
                self.read_only = command.name() == "readonly";
                Reply::ok()
            }
            "vr.status" => node.status_reply(false),
            "info" => node.info(args),
            "hello" => connection::hello(args, &mut self.client, node.is_primary()),
            "auth" => connection::auth(args),
            "client" => connection::client(args, &mut self.client),
            "select" => connection::select(args),
            "command" => connection::command(args),
            "config" => connection::config(args),
            "time" => connection::time((node.clock)()),
            "quit" => {
                self.closing_reply = Some(Reply::ok());
                return None;
            }
            "reset" => {
                self.read_only = false;
                self.multi = None;
                self.watch.clear();
                self.client.name = None;
                Reply::Simple("RESET".to_owned())
            }
            "multi" => {
                if self.multi.is_some() {
                    Reply::Error("ERR MULTI calls can not be nested".to_owned())
                } else {
                    self.multi = Some((Vec::new(), false));
                    Reply::ok()
                }
            }
            "discard" => match self.multi.take() {
                None => Reply::Error("ERR DISCARD without MULTI".to_owned()),
                Some(_) => {
                    self.watch.clear();
                    Reply::ok()
                }
            },
            "watch" => {
                if self.multi.is_some() {
                    Reply::Error("ERR WATCH inside MULTI is not allowed".to_owned())
                } else if !self.batch.is_empty() {
                    // The version must cover this connection's own writes
                    // before the WATCH: replicate them first.
                    return Some(command.args);
                } else {
                    // Never later than the true sequence at this point: at
                    // worst a change before the WATCH aborts the EXEC.
                    let seq = self.last_seq.max(lock(&node.store).seq());
                    self.watch
                        .extend(args[1..].iter().map(|key| (seq, key.clone())));
                    Reply::ok()
                }
            }
            "unwatch" => {
                self.watch.clear();
                Reply::ok()
            }
            "exec" => match self.multi.take() {
                None => Reply::Error("ERR EXEC without MULTI".to_owned()),
                Some((_, true)) => {
                    self.watch.clear();
                    Reply::Error(ERR_EXECABORT.to_owned())
                }
                Some((commands, false)) => {
                    let watched = std::mem::take(&mut self.watch);
                    let entry = Entry::Transaction { watched, commands };
                    if let Some(Entry::Transaction { watched, commands }) =
                        self.push_entry(entry, node)
                    {
                        // The batch is full: replicate it, then come back
                        // to this EXEC with the transaction restored.
                        self.multi = Some((commands, false));
                        self.watch = watched;
                        return Some(command.args);
                    }
                    return None;
                }
            },
            other => Reply::Error(format!("ERR '{other}' is not handled by the connection")),
        };
        self.local(reply);
        None
    }

    /// Starts replicating the batch: returns its operation, or `None` when
    /// there is nothing to replicate (the replies owed are then rendered).
    fn flush(&mut self, node: &NodeView) -> Option<Vec<u8>> {
        if self.batch.is_empty() {
            self.render(&[]);
            return None;
        }
        let entries = std::mem::take(&mut self.batch);
        let batch_bytes = std::mem::replace(&mut self.batch_bytes, BATCH_HEADER_LEN);
        if batch_bytes > node.config.op_size_max as usize {
            let every = vec![Reply::Error(ERR_TOO_LARGE.to_owned()).to_bytes(); entries.len()];
            self.render(&every);
            return None;
        }
        self.in_flight = Some(entries.len());
        Some(encode_op(&Batch {
            time_ms: (node.clock)() / 1000,
            entries,
        }))
    }

    /// Writes every reply owed, in order, to the output; `replies` are the
    /// batch's, one per command.
    fn render(&mut self, replies: &[Vec<u8>]) {
        for slot in self.slots.drain(..) {
            match slot {
                Slot::Local(bytes) => self.out.extend_from_slice(&bytes),
                Slot::Batched(i) => match replies.get(i) {
                    Some(bytes) => self.out.extend_from_slice(bytes),
                    None => Reply::Error("ERR internal error: missing reply".to_owned())
                        .encode(&mut self.out),
                },
            }
        }
    }
}

/// One encoded reply per command of a batch of `count` commands, from what
/// came of replicating it.
fn batch_replies(count: usize, outcome: Result<Vec<u8>, SubmitError>) -> Vec<Vec<u8>> {
    let every = |reply: Reply| vec![reply.to_bytes(); count];
    let result = match outcome {
        Ok(result) => result,
        Err(SubmitError::Client(ClientError::TimedOut)) => {
            return every(Reply::Error(UNCERTAIN.to_owned()))
        }
        Err(SubmitError::Client(ClientError::TooLarge)) => {
            return every(Reply::Error(ERR_TOO_LARGE.to_owned()))
        }
        Err(SubmitError::Client(ClientError::Exhausted)) => {
            return every(Reply::Error(
                "ERR internal error: request-numbers exhausted".to_owned(),
            ))
        }
        Err(SubmitError::Client(ClientError::Busy)) => {
            return every(Reply::Error(
                "ERR internal error: a request is already outstanding".to_owned(),
            ))
        }
        Err(SubmitError::Unavailable(why)) => return every(Reply::Error(format!("ERR {why}"))),
    };
    match decode_results(&result) {
        Ok(BatchResult::Replies(replies)) if replies.len() == count => {
            replies.into_iter().map(<[u8]>::to_vec).collect()
        }
        Ok(BatchResult::Rejected(why)) => every(Reply::Error(format!("ERR {why}"))),
        // Executed, but the result is not what our batch gets: the effect is
        // unknown to us.
        _ => every(Reply::Error(UNCERTAIN.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::decode_batch;
    use vr_core::Service;

    /// Replica 1 of 3 in view 4, and a new session that has received
    /// `bytes`.
    fn start(op_size_max: u32, read_buffer_max: usize, bytes: &[u8]) -> (NodeView, Session) {
        let mut config = Config::new(1, 3);
        config.op_size_max = op_size_max;
        let stats = NodeStats {
            status: Some(Status::Normal),
            view: 4,
            op_number: 7,
            commit_number: 6,
            epoch: 2,
            members: vec![
                vr_core::MemberId(0),
                vr_core::MemberId(1),
                vr_core::MemberId(4),
            ],
            primary: true,
            ..NodeStats::default()
        };
        let node = NodeView::new(
            Arc::new(Mutex::new(Store::new())),
            config,
            MemberId(1),
            read_buffer_max,
            Box::new(move || stats.clone()),
        );
        let mut session = Session::new();
        session.receive(bytes);
        (node, session)
    }

    /// [`start`] with a 64 KiB `op_size_max` and a 1 MiB buffer.
    fn started(bytes: &[u8]) -> (NodeView, Session) {
        start(64 * 1024, 1 << 20, bytes)
    }

    /// Checks the whole output.
    #[track_caller]
    fn assert_output(session: &Session, want: &str) {
        assert_eq!(String::from_utf8_lossy(session.output()), want);
    }

    /// Runs the session until it stops at `last` (idle or closed),
    /// committing every batch on the node's store as the cluster would
    /// (this replica applies it before the reply comes); returns the
    /// batches.
    #[track_caller]
    fn run(session: &mut Session, node: &NodeView, last: Step) -> Vec<Vec<Args>> {
        let mut batches = Vec::new();
        loop {
            match session.poll(node) {
                Step::Submit(op) => {
                    batches.push(decode_batch(&op).unwrap());
                    let mut store = lock(&node.store);
                    let op_number = store.op_number() + 1;
                    let result = store.execute(op_number, &op);
                    drop(store);
                    session.complete(Ok(result));
                }
                step => {
                    assert_eq!(step, last);
                    return batches;
                }
            }
        }
    }

    #[test]
    fn a_pipeline_is_one_batch_and_replies_keep_their_order() {
        let (node, mut session) = started(b"SET k 1\r\nPING\r\nINCR k\r\nNOPE\r\nGET k\r\n");
        let batches = run(&mut session, &node, Step::Idle);
        assert_eq!(batches.len(), 1);
        assert_eq!(
            batches[0].len(),
            3,
            "SET, INCR and GET; PING and NOPE are local"
        );
        let out = String::from_utf8_lossy(session.output()).into_owned();
        assert!(
            out.starts_with("+OK\r\n+PONG\r\n:2\r\n-ERR unknown command 'NOPE'"),
            "{out}"
        );
        assert!(out.ends_with("$1\r\n2\r\n"), "{out}");
    }

    #[test]
    fn a_batch_never_exceeds_op_size_max() {
        let pipeline: String = (0..10)
            .map(|i| format!("SET key{i} value{i}\r\n"))
            .collect();
        let (node, mut session) = start(64, 1 << 20, pipeline.as_bytes());
        let batches = run(&mut session, &node, Step::Idle);
        assert!(batches.len() > 1);
        for batch in &batches {
            assert!(crate::batch::encoded_batch_len(batch) <= 64);
        }
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 10);
        assert_output(&session, &"+OK\r\n".repeat(10));
        // A command too large on its own is refused without being sent.
        session.clear_output();
        session.receive(format!("SET big {}\r\nPING\r\n", "x".repeat(60)).as_bytes());
        let batches = run(&mut session, &node, Step::Idle);
        assert!(batches.is_empty());
        assert_output(&session, &format!("-{ERR_TOO_LARGE}\r\n+PONG\r\n"));
    }

    #[test]
    fn a_readonly_read_sees_the_writes_pipelined_before_it() {
        let (node, mut session) = started(b"READONLY\r\nSET k v\r\nGET k\r\nGET k\r\n");
        let batches = run(&mut session, &node, Step::Idle);
        assert_eq!(batches.len(), 1, "the reads are local");
        assert_output(&session, "+OK\r\n+OK\r\n$1\r\nv\r\n$1\r\nv\r\n");
    }

    #[test]
    fn a_readonly_read_while_recovering_is_refused_not_empty() {
        let node = NodeView::new(
            Arc::new(Mutex::new(Store::new())),
            Config::new(1, 3),
            MemberId(1),
            1 << 20,
            Box::new(|| NodeStats {
                status: Some(Status::Recovering),
                ..NodeStats::default()
            }),
        );
        let mut session = Session::new();
        session.receive(b"READONLY\r\nGET k\r\n");
        let batches = run(&mut session, &node, Step::Idle);
        assert!(batches.is_empty());
        assert_output(&session, &format!("+OK\r\n-{ERR_LOADING}\r\n"));
    }

    #[test]
    fn bad_input_answers_what_came_before_then_closes() {
        let (node, mut session) = started(b"SET a 1\r\n*1\r\n$-5\r\nPING\r\n");
        let batches = run(&mut session, &node, Step::Close);
        assert_eq!(batches.len(), 1);
        let out = String::from_utf8_lossy(session.output()).into_owned();
        assert!(out.starts_with("+OK\r\n-ERR Protocol error: "), "{out}");
        assert_eq!(session.read_room(&node), 0);
        assert_eq!(session.poll(&node), Step::Close);
    }

    #[test]
    fn a_full_buffer_without_a_command_is_refused() {
        let header = b"*2\r\n$3\r\nGET\r\n$200\r\n";
        let (node, mut session) = start(64 * 1024, 100, header);
        assert_eq!(session.poll(&node), Step::Idle);
        let room = session.read_room(&node);
        assert_eq!(room, 100 - header.len());
        session.receive(&vec![b'x'; room]);
        assert_eq!(session.poll(&node), Step::Close);
        assert_output(&session, &format!("-{ERR_REQUEST_TOO_LARGE}\r\n"));
    }

    #[test]
    fn an_unknown_outcome_is_uncertain_for_every_command_of_the_batch() {
        let (node, mut session) = started(b"SET k v\r\nINCR n\r\nPING\r\n");
        let Step::Submit(_) = session.poll(&node) else {
            panic!("the writes are replicated");
        };
        assert_eq!(session.read_room(&node), 0);
        session.complete(Err(SubmitError::Client(ClientError::TimedOut)));
        assert_eq!(session.poll(&node), Step::Idle);
        assert_output(
            &session,
            &format!("-{UNCERTAIN}\r\n-{UNCERTAIN}\r\n+PONG\r\n"),
        );
    }

    #[test]
    fn status_is_reported_from_the_view() {
        let (node, mut session) = started(b"VR.STATUS\r\nINFO replication\r\nINFO keyspace\r\n");
        assert_eq!(session.poll(&node), Step::Idle);
        let out = String::from_utf8_lossy(session.output()).into_owned();
        // View 4 of 3 replicas: replica 1 is the primary.
        assert!(out.contains("role:primary\r\nreplica:1\r\nreplicas:3\r\nview:4\r\nstatus:normal\r\nop_number:7\r\ncommit_number:6\r\nepoch:2\r\nmembers:0,1,4\r\nmay_shut_down:0\r\n"), "{out}");
        assert!(
            out.contains("# Replication\r\nrole:master\r\nconnected_slaves:0\r\nvr_role:primary\r\nreplica:1\r\n"),
            "{out}"
        );
        // An empty keyspace section is its header alone, as in Redis.
        assert!(out.ends_with("$12\r\n# Keyspace\r\n\r\n"), "{out}");
    }

    #[test]
    fn a_transaction_is_one_entry_of_one_stamped_operation() {
        let (node, mut session) =
            started(b"MULTI\r\nSET k 1\r\nINCR k\r\nPING\r\nEXEC\r\nGET k\r\n");
        let node = node.with_clock(Box::new(|| 1_700_000_000_123_456));
        let Step::Submit(op) = session.poll(&node) else {
            panic!("the transaction is replicated");
        };
        let batch = crate::batch::decode_op(&op).unwrap();
        assert_eq!(
            batch.time_ms, 1_700_000_000_123,
            "stamped with the clock, in ms"
        );
        assert_eq!(batch.entries.len(), 2, "the transaction, then GET");
        let Entry::Transaction { watched, commands } = &batch.entries[0] else {
            panic!("{:?}", batch.entries[0]);
        };
        assert!(watched.is_empty());
        assert_eq!(commands.len(), 3, "SET, INCR and PING, queued");
        let mut store = lock(&node.store);
        let result = store.execute(1, &op);
        drop(store);
        session.complete(Ok(result));
        assert_eq!(session.poll(&node), Step::Idle);
        assert_output(
            &session,
            "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n:2\r\n+PONG\r\n$1\r\n2\r\n",
        );
    }

    #[test]
    fn a_refused_command_inside_multi_aborts_the_exec_and_nothing_is_sent() {
        let (node, mut session) = started(
            b"MULTI\r\nSET k 1\r\nNOPE\r\nINFO\r\nEXEC\r\nEXEC\r\nDISCARD\r\nMULTI\r\nMULTI\r\nDISCARD\r\n",
        );
        let batches = run(&mut session, &node, Step::Idle);
        assert!(batches.is_empty());
        let out = String::from_utf8_lossy(session.output()).into_owned();
        assert!(
            out.starts_with("+OK\r\n+QUEUED\r\n-ERR unknown command 'NOPE'"),
            "{out}"
        );
        assert!(
            out.ends_with(&format!(
                "-{ERR_EXECABORT}\r\n-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n+OK\r\n-ERR MULTI calls can not be nested\r\n+OK\r\n"
            )),
            "{out}"
        );
    }

    #[test]
    fn watch_waits_for_the_writes_pipelined_before_it() {
        // Redis runs this EXEC: the INCR happened before the WATCH.
        let (node, mut session) = started(b"SET k 1\r\nWATCH k\r\nMULTI\r\nINCR k\r\nEXEC\r\n");
        let batches = run(&mut session, &node, Step::Idle);
        assert_eq!(
            batches.len(),
            2,
            "the SET is replicated before the WATCH is taken"
        );
        assert_output(&session, "+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n:2\r\n");
        // A change after the WATCH (here by this connection) aborts.
        session.clear_output();
        session.receive(b"WATCH k\r\nSET k 5\r\nMULTI\r\nINCR k\r\nEXEC\r\nGET k\r\n");
        run(&mut session, &node, Step::Idle);
        assert_output(
            &session,
            "+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n$1\r\n5\r\n",
        );
    }

    #[test]
    fn unsupported_and_connection_commands_answer_locally() {
        let (node, mut session) = started(
            b"BLPOP l 0\r\nSUBSCRIBE c\r\nHELLO 3\r\nSELECT 0\r\nSELECT 2\r\nCLIENT SETNAME x\r\nCLIENT GETNAME\r\nCONFIG GET appendonly\r\nQUIT\r\nPING\r\n",
        );
        let batches = run(&mut session, &node, Step::Close);
        assert!(batches.is_empty());
        let out = String::from_utf8_lossy(session.output()).into_owned();
        assert!(
            out.starts_with("-ERR 'blpop' is not supported by vr-kv: blocking commands"),
            "{out}"
        );
        assert!(
            out.contains("-ERR 'subscribe' is not supported by vr-kv: Pub/Sub"),
            "{out}"
        );
        assert!(out.contains("-NOPROTO"), "{out}");
        assert!(
            out.ends_with("+OK\r\n-ERR DB index is out of range\r\n+OK\r\n$1\r\nx\r\n*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n+OK\r\n"),
            "QUIT answers OK and closes; the PING after it is never answered: {out}"
        );
    }
}
