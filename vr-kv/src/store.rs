//! The key-value state machine that every replica runs: a map from byte
//! strings to byte strings, changed only by committed operations.
//!
//! Determinism: the result of every command depends only on the state and
//! the command. The map is a `BTreeMap`, so even iteration (for a snapshot or
//! a digest later) is the same on every replica; nothing reads a clock or a
//! random number. That is also why `SET` has no expiry options yet: an
//! expiry needs a time that every replica agrees on, which a later op
//! format can carry (see [`crate::batch`]).
//!
//! Only strings exist, so Redis's `WRONGTYPE Operation against a key holding
//! the wrong kind of value` cannot happen here; it will when another type
//! does.

use std::collections::{BTreeMap, BTreeSet};

use crate::batch::{decode_batch, encode_rejected, encode_results};
use crate::command::{
    wrong_arity, Command, ERR_NOT_INTEGER, ERR_OVERFLOW, ERR_READONLY, ERR_STRING_TOO_LONG,
    ERR_SYNTAX,
};
use crate::resp::{parse_integer, Reply};

/// Redis's `proto-max-bulk-len`: the longest value `APPEND` may build.
pub const VALUE_BYTES_MAX_DEFAULT: usize = 512 * 1024 * 1024;

/// The replicated key-value store: a [`vr_core::Service`] whose operations
/// are batches of Redis commands ([`crate::batch`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    data: Buckets,
    /// Part of the replicated behaviour: every replica must use the same.
    value_bytes_max: usize,
    /// The op number of the last operation executed, 0 before the first.
    op_number: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty store; `APPEND` may build values up to
    /// [`VALUE_BYTES_MAX_DEFAULT`] bytes, as in Redis.
    pub fn new() -> Store {
        Store::with_value_bytes_max(VALUE_BYTES_MAX_DEFAULT)
    }

    /// An empty store whose `APPEND` refuses to build a value longer than
    /// `value_bytes_max`. All replicas of one cluster must agree on it, or
    /// their states diverge.
    pub fn with_value_bytes_max(value_bytes_max: usize) -> Store {
        Store {
            data: Buckets::new(),
            value_bytes_max,
            op_number: 0,
        }
    }

    /// The value at `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
    }

    /// How many keys exist.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no key exists.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The op number of the last operation [`vr_core::Service::execute`]
    /// ran, 0 if none.
    pub fn op_number(&self) -> u64 {
        self.op_number
    }

    /// Runs one command, reads and writes alike, and returns Redis's reply.
    /// An error reply leaves the store unchanged.
    pub fn apply(&mut self, args: &[Vec<u8>]) -> Reply {
        let command = match Command::parse(args) {
            Ok(command) => command,
            Err(reply) => return reply,
        };
        match command {
            Command::Set => self.set(args),
            Command::Del => integer(
                args[1..]
                    .iter()
                    .filter(|key| self.data.remove(key).is_some())
                    .count(),
            ),
            Command::Incr => self.incr_by(&args[1], 1),
            Command::IncrBy => match parse_integer(&args[2]) {
                Some(increment) => self.incr_by(&args[1], increment),
                None => error(ERR_NOT_INTEGER),
            },
            Command::Append => self.append(&args[1], &args[2]),
            Command::MSet => {
                // The table says "at least 3"; pairs are checked here, with
                // the same arity error, as in Redis's msetGenericCommand.
                if args.len().is_multiple_of(2) {
                    return wrong_arity(command);
                }
                for pair in args[1..].chunks_exact(2) {
                    self.data.insert(pair[0].clone(), pair[1].clone());
                }
                Reply::ok()
            }
            Command::Get | Command::MGet | Command::Exists | Command::Ping | Command::Echo => {
                self.evaluate(command, args)
            }
        }
    }

    /// Runs a read-only command against the current state without changing
    /// it: for reads a replica serves locally (a `READONLY` connection),
    /// which may be stale.
    ///
    /// A write gets Redis's replica answer, `READONLY You can't write
    /// against a read only replica.`, after the same unknown-command and
    /// arity checks Redis makes first.
    pub fn read(&self, args: &[Vec<u8>]) -> Reply {
        match Command::parse(args) {
            Ok(command) => self.evaluate(command, args),
            Err(reply) => reply,
        }
    }

    /// The read-only commands; a write is refused. `args` has passed
    /// [`Command::parse`] for `command`.
    fn evaluate(&self, command: Command, args: &[Vec<u8>]) -> Reply {
        match command {
            Command::Get => Reply::Bulk(self.data.get(&args[1]).cloned()),
            Command::MGet => Reply::Array(Some(
                args[1..]
                    .iter()
                    .map(|key| Reply::Bulk(self.data.get(key).cloned()))
                    .collect(),
            )),
            // Each occurrence counts: `EXISTS k k` is 2, as in Redis.
            Command::Exists => integer(
                args[1..]
                    .iter()
                    .filter(|key| self.data.contains_key(key))
                    .count(),
            ),
            Command::Ping => match args.len() {
                1 => Reply::Simple("PONG".to_owned()),
                2 => Reply::Bulk(Some(args[1].clone())),
                _ => wrong_arity(command),
            },
            Command::Echo => Reply::Bulk(Some(args[1].clone())),
            Command::Set
            | Command::Del
            | Command::Incr
            | Command::IncrBy
            | Command::Append
            | Command::MSet => error(ERR_READONLY),
        }
    }

    /// `SET key value [NX | XX] [GET] [KEEPTTL]`, with Redis 7's option
    /// rules: options in any order and repeatable, `NX` with `XX` is a
    /// syntax error, `GET` combines with either. `KEEPTTL` is accepted and
    /// does nothing, which is exactly its meaning when no key has a TTL.
    /// The expiry options (`EX`, `PX`, `EXAT`, `PXAT`) get `ERR syntax
    /// error`: this store has no clock (see the module docs).
    fn set(&mut self, args: &[Vec<u8>]) -> Reply {
        let (mut nx, mut xx, mut get) = (false, false, false);
        for option in &args[3..] {
            if option.eq_ignore_ascii_case(b"NX") && !xx {
                nx = true;
            } else if option.eq_ignore_ascii_case(b"XX") && !nx {
                xx = true;
            } else if option.eq_ignore_ascii_case(b"GET") {
                get = true;
            } else if !option.eq_ignore_ascii_case(b"KEEPTTL") {
                return error(ERR_SYNTAX);
            }
        }
        let old = self.data.get(&args[1]);
        let found = old.is_some();
        // With GET the reply is the old value whether or not the set
        // happens; without it, a condition that fails replies nil.
        let reply = get.then(|| Reply::Bulk(old.cloned()));
        if (nx && found) || (xx && !found) {
            return reply.unwrap_or(Reply::Bulk(None));
        }
        self.data.insert(args[1].clone(), args[2].clone());
        reply.unwrap_or_else(Reply::ok)
    }

    fn incr_by(&mut self, key: &[u8], increment: i64) -> Reply {
        let current = match self.data.get(key) {
            None => 0,
            Some(value) => match parse_integer(value) {
                Some(n) => n,
                None => return error(ERR_NOT_INTEGER),
            },
        };
        let Some(next) = current.checked_add(increment) else {
            return error(ERR_OVERFLOW);
        };
        self.data
            .insert(key.to_vec(), next.to_string().into_bytes());
        Reply::Integer(next)
    }

    fn append(&mut self, key: &[u8], value: &[u8]) -> Reply {
        match self.data.get_mut(key) {
            // Like Redis, a new key takes the value as is, unchecked: it
            // came in one bulk string, already bounded by the parser.
            None => {
                self.data.insert(key.to_vec(), value.to_vec());
                integer(value.len())
            }
            Some(existing) => {
                if existing.len().saturating_add(value.len()) > self.value_bytes_max {
                    return error(ERR_STRING_TOO_LONG);
                }
                existing.extend_from_slice(value);
                integer(existing.len())
            }
        }
    }
}

/// Pages of the state (checkpoints, state transfer): one per hash bucket of
/// keys, then one for the op-number. A write changes one bucket's page, so a
/// lagging replica receives only the buckets written since its checkpoint.
pub const BUCKETS: u64 = 1024;

/// The map, split into [`BUCKETS`] maps by a fixed hash of the key (FNV-1a:
/// the same on every machine and every run, unlike `std`'s seeded hasher).
#[derive(Clone, Debug)]
struct Buckets {
    maps: Vec<BTreeMap<Vec<u8>, Vec<u8>>>,
    len: usize,
    /// Buckets changed since the last checkpoint.
    dirty: BTreeSet<u64>,
}

impl PartialEq for Buckets {
    fn eq(&self, other: &Buckets) -> bool {
        self.maps == other.maps
    }
}

impl Eq for Buckets {}

fn bucket_of(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % BUCKETS
}

impl Buckets {
    fn new() -> Buckets {
        Buckets {
            maps: vec![BTreeMap::new(); BUCKETS as usize],
            len: 0,
            dirty: BTreeSet::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.maps[bucket_of(key) as usize].get(key)
    }

    fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut Vec<u8>> {
        let bucket = bucket_of(key);
        let value = self.maps[bucket as usize].get_mut(key)?;
        self.dirty.insert(bucket);
        Some(value)
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let bucket = bucket_of(&key);
        self.dirty.insert(bucket);
        if self.maps[bucket as usize].insert(key, value).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let bucket = bucket_of(key);
        let removed = self.maps[bucket as usize].remove(key)?;
        self.dirty.insert(bucket);
        self.len -= 1;
        Some(removed)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Reads a `u32` length and that many bytes from `page` at `at`.
fn take_bytes<'a>(page: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(page.get(*at..*at + 4)?.try_into().ok()?) as usize;
    let bytes = page.get(*at + 4..(*at + 4).checked_add(len)?)?;
    *at += 4 + len;
    Some(bytes)
}

impl vr_core::Service for Store {
    /// Decodes the batch, runs each command in order and returns one reply
    /// per command ([`crate::batch::encode_results`]). A command that fails
    /// does not stop the ones after it, as in a Redis pipeline. Bytes that
    /// are not a batch change nothing and get a rejected result.
    fn execute(&mut self, op_number: u64, op: &[u8]) -> Vec<u8> {
        // VR executes each committed op once, in order; a duplicate request
        // is skipped by the client table, so numbers rise but may jump.
        debug_assert!(
            op_number > self.op_number,
            "op {op_number} executed after op {}",
            self.op_number
        );
        self.op_number = op_number;
        match decode_batch(op) {
            Ok(commands) => {
                let replies: Vec<Reply> = commands.iter().map(|args| self.apply(args)).collect();
                debug_assert_eq!(replies.len(), commands.len(), "one reply per command");
                encode_results(&replies)
            }
            Err(e) => encode_rejected(&format!("malformed operation: {e}")),
        }
    }

    fn page_count(&self) -> u64 {
        BUCKETS + 1
    }

    /// A bucket's page: its entries in key order, each a `u32` length and
    /// the key, a `u32` length and the value. The last page: the op-number.
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        if index == BUCKETS {
            out.extend_from_slice(&self.op_number.to_le_bytes());
            return;
        }
        let Some(map) = self.data.maps.get(index as usize) else {
            return;
        };
        for (key, value) in map {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }

    fn install_pages(&mut self, pages: &[&[u8]]) {
        let mut data = Buckets::new();
        for (index, page) in pages.iter().enumerate().take(BUCKETS as usize) {
            let mut at = 0;
            while at < page.len() {
                // Pages were checked against their digests: a malformed one
                // is a bug in the writer; keep what parses.
                let (Some(key), Some(value)) =
                    (take_bytes(page, &mut at), take_bytes(page, &mut at))
                else {
                    tracing::error!(page = index, "malformed store page");
                    break;
                };
                data.maps[index].insert(key.to_vec(), value.to_vec());
                data.len += 1;
            }
        }
        self.data = data;
        self.op_number = pages
            .get(BUCKETS as usize)
            .and_then(|p| p.get(..8))
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
    }

    fn take_changed_pages(&mut self, changed: &mut Vec<u64>) -> bool {
        changed.extend(std::mem::take(&mut self.data.dirty));
        // The op-number page changes with every operation.
        changed.push(BUCKETS);
        true
    }

    /// A batch is read-only when every command in it is (`GET`, `MGET`,
    /// `EXISTS`, `PING`, `ECHO`): the primary may then answer it under its
    /// lease, and a backup may answer it for a backup read.
    fn is_read_only(&self, op: &[u8]) -> bool {
        decode_batch(op).is_ok_and(|commands| {
            !commands.is_empty()
                && commands
                    .iter()
                    .all(|args| crate::command::is_read_only(args))
        })
    }

    /// The replies `execute` would give, without changing anything.
    fn query(&self, op: &[u8]) -> Vec<u8> {
        match decode_batch(op) {
            Ok(commands) => {
                let replies: Vec<Reply> = commands.iter().map(|args| self.read(args)).collect();
                encode_results(&replies)
            }
            Err(e) => encode_rejected(&format!("malformed operation: {e}")),
        }
    }
}

fn error(message: &str) -> Reply {
    Reply::Error(message.to_owned())
}

/// A count as an integer reply. Counts are bounded by the number of
/// arguments, far below `i64::MAX`.
fn integer(count: usize) -> Reply {
    Reply::Integer(i64::try_from(count).expect("a count of arguments fits in i64"))
}
