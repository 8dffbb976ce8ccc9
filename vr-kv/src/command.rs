//! The command table: every command this server knows, its arity, its
//! keys, whether it only reads, and what runs it; and [`Command`], a
//! command parsed once against the table, which routing ([`crate::session`]),
//! the read-only checks (`Service::is_read_only` in [`crate::store`]) and
//! execution ([`crate::store`]) all work from.
//!
//! Options of a command (`SET`'s `EX`, `ZADD`'s `NX`) are parsed by the
//! function that runs it, once, on every replica: the table decides only
//! what must be known before the command is replicated.

use crate::commands::{hashes, keys, lists, server, sets, strings, zsets};
use crate::db::Db;
use crate::resp::Reply;

/// Runs a command that only reads.
pub type ReadFn = fn(&Db, &[Vec<u8>]) -> Reply;
/// Runs a command that may write.
pub type WriteFn = fn(&mut Db, &[Vec<u8>]) -> Reply;

/// What runs a command.
#[derive(Clone, Copy)]
pub enum Exec {
    /// The store, without changing it: served from local state on a
    /// `READONLY` connection, and under the primary's lease.
    Read(ReadFn),
    /// The store, through the log.
    Write(WriteFn),
    /// The connection's session: connection state and server information
    /// (`HELLO`, `CLIENT`, `SELECT`, `INFO`, `MULTI`, ...).
    Session,
    /// Known to Redis, not implemented here: answered with an error that
    /// says so (blocking commands, Pub/Sub, scripting, streams).
    Unsupported(&'static str),
}

/// Where a command's keys are, Redis's `(first, last, step)`: argument
/// indexes, `last` negative counting from the end (-1 the last argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// The first key's index; 0 when the command has no key.
    pub first: u8,
    /// The last key's index, negative from the end.
    pub last: i8,
    /// The distance between keys.
    pub step: u8,
}

/// One row of the table.
pub struct Spec {
    /// The lower-case name, as Redis prints it in errors.
    pub name: &'static str,
    /// Redis's convention: `n > 0` exactly `n` arguments, `n < 0` at least
    /// `-n`, the name counted.
    pub arity: i32,
    /// What runs it.
    pub exec: Exec,
    /// Its keys.
    pub keys: KeySpec,
}

const NOKEY: KeySpec = KeySpec {
    first: 0,
    last: 0,
    step: 0,
};
const K1: KeySpec = KeySpec {
    first: 1,
    last: 1,
    step: 1,
};
const K12: KeySpec = KeySpec {
    first: 1,
    last: 2,
    step: 1,
};
const KALL: KeySpec = KeySpec {
    first: 1,
    last: -1,
    step: 1,
};
const KPAIRS: KeySpec = KeySpec {
    first: 1,
    last: -1,
    step: 2,
};

const fn r(name: &'static str, arity: i32, keys: KeySpec, f: ReadFn) -> Spec {
    Spec {
        name,
        arity,
        exec: Exec::Read(f),
        keys,
    }
}
const fn w(name: &'static str, arity: i32, keys: KeySpec, f: WriteFn) -> Spec {
    Spec {
        name,
        arity,
        exec: Exec::Write(f),
        keys,
    }
}
const fn s(name: &'static str, arity: i32) -> Spec {
    Spec {
        name,
        arity,
        exec: Exec::Session,
        keys: NOKEY,
    }
}
const fn u(name: &'static str, arity: i32, what: &'static str) -> Spec {
    Spec {
        name,
        arity,
        exec: Exec::Unsupported(what),
        keys: NOKEY,
    }
}

const BLOCKING: &str = "blocking commands";
const PUBSUB: &str = "Pub/Sub";
const SCRIPTING: &str = "scripting";
const STREAMS: &str = "streams";

/// Every command, in families.
pub static TABLE: &[Spec] = &[
    // Connection and server.
    r("ping", -1, NOKEY, server::ping),
    r("echo", 2, NOKEY, server::echo),
    s("hello", -1),
    s("client", -2),
    s("select", 2),
    s("command", -1),
    s("config", -2),
    s("info", -1),
    s("time", 1),
    s("readonly", 1),
    s("readwrite", 1),
    s("vr.status", 1),
    w("vr.sweep", 1, NOKEY, server::sweep),
    s("quit", -1),
    s("auth", -2),
    s("reset", 1),
    r("dbsize", 1, NOKEY, server::dbsize),
    w("flushdb", -1, NOKEY, server::flush),
    w("flushall", -1, NOKEY, server::flush),
    // Transactions.
    s("multi", 1),
    s("exec", 1),
    s("discard", 1),
    s("watch", -2),
    s("unwatch", 1),
    // Strings.
    r("get", 2, K1, strings::get),
    w("set", -3, K1, strings::set),
    w("setnx", 3, K1, strings::setnx),
    w("setex", 4, K1, strings::setex),
    w("psetex", 4, K1, strings::psetex),
    w("getset", 3, K1, strings::getset),
    w("getdel", 2, K1, strings::getdel),
    w("getex", -2, K1, strings::getex),
    r("mget", -2, KALL, strings::mget),
    w("mset", -3, KPAIRS, strings::mset),
    w("msetnx", -3, KPAIRS, strings::msetnx),
    w("incr", 2, K1, strings::incr),
    w("decr", 2, K1, strings::decr),
    w("incrby", 3, K1, strings::incrby),
    w("decrby", 3, K1, strings::decrby),
    w("incrbyfloat", 3, K1, strings::incrbyfloat),
    w("append", 3, K1, strings::append),
    r("strlen", 2, K1, strings::strlen),
    r("getrange", 4, K1, strings::getrange),
    r("substr", 4, K1, strings::getrange),
    w("setrange", 4, K1, strings::setrange),
    // Keyspace.
    w("del", -2, KALL, keys::del),
    w("unlink", -2, KALL, keys::del),
    r("exists", -2, KALL, keys::exists),
    r("touch", -2, KALL, keys::exists),
    r("type", 2, K1, keys::type_),
    r("keys", 2, NOKEY, keys::keys),
    r("scan", -2, NOKEY, keys::scan),
    r("randomkey", 1, NOKEY, keys::randomkey),
    w("rename", 3, K12, keys::rename),
    w("renamenx", 3, K12, keys::renamenx),
    w("copy", -3, K12, keys::copy),
    w("expire", -3, K1, keys::expire),
    w("pexpire", -3, K1, keys::pexpire),
    w("expireat", -3, K1, keys::expireat),
    w("pexpireat", -3, K1, keys::pexpireat),
    r("ttl", 2, K1, keys::ttl),
    r("pttl", 2, K1, keys::pttl),
    r("expiretime", 2, K1, keys::expiretime),
    r("pexpiretime", 2, K1, keys::pexpiretime),
    w("persist", 2, K1, keys::persist),
    // Hashes.
    w("hset", -4, K1, hashes::hset),
    w("hmset", -4, K1, hashes::hmset),
    w("hsetnx", 4, K1, hashes::hsetnx),
    r("hget", 3, K1, hashes::hget),
    r("hmget", -3, K1, hashes::hmget),
    w("hdel", -3, K1, hashes::hdel),
    r("hexists", 3, K1, hashes::hexists),
    r("hlen", 2, K1, hashes::hlen),
    r("hstrlen", 3, K1, hashes::hstrlen),
    r("hkeys", 2, K1, hashes::hkeys),
    r("hvals", 2, K1, hashes::hvals),
    r("hgetall", 2, K1, hashes::hgetall),
    w("hincrby", 4, K1, hashes::hincrby),
    w("hincrbyfloat", 4, K1, hashes::hincrbyfloat),
    r("hscan", -3, K1, hashes::hscan),
    // Lists.
    w("lpush", -3, K1, lists::lpush),
    w("rpush", -3, K1, lists::rpush),
    w("lpushx", -3, K1, lists::lpushx),
    w("rpushx", -3, K1, lists::rpushx),
    w("lpop", -2, K1, lists::lpop),
    w("rpop", -2, K1, lists::rpop),
    r("llen", 2, K1, lists::llen),
    r("lrange", 4, K1, lists::lrange),
    r("lindex", 3, K1, lists::lindex),
    w("lset", 4, K1, lists::lset),
    w("linsert", 5, K1, lists::linsert),
    w("lrem", 4, K1, lists::lrem),
    w("ltrim", 4, K1, lists::ltrim),
    r("lpos", -3, K1, lists::lpos),
    w("rpoplpush", 3, K12, lists::rpoplpush),
    w("lmove", 5, K12, lists::lmove),
    // Sets.
    w("sadd", -3, K1, sets::sadd),
    w("srem", -3, K1, sets::srem),
    r("smembers", 2, K1, sets::smembers),
    r("sismember", 3, K1, sets::sismember),
    r("smismember", -3, K1, sets::smismember),
    r("scard", 2, K1, sets::scard),
    w("spop", -2, K1, sets::spop),
    r("srandmember", -2, K1, sets::srandmember),
    r("sinter", -2, KALL, sets::sinter),
    r("sunion", -2, KALL, sets::sunion),
    r("sdiff", -2, KALL, sets::sdiff),
    w("sinterstore", -3, KALL, sets::sinterstore),
    w("sunionstore", -3, KALL, sets::sunionstore),
    w("sdiffstore", -3, KALL, sets::sdiffstore),
    w("smove", 4, K12, sets::smove),
    r("sscan", -3, K1, sets::sscan),
    // Sorted sets.
    w("zadd", -4, K1, zsets::zadd),
    w("zincrby", 4, K1, zsets::zincrby),
    w("zrem", -3, K1, zsets::zrem),
    r("zscore", 3, K1, zsets::zscore),
    r("zmscore", -3, K1, zsets::zmscore),
    r("zcard", 2, K1, zsets::zcard),
    r("zcount", 4, K1, zsets::zcount),
    r("zrank", 3, K1, zsets::zrank),
    r("zrevrank", 3, K1, zsets::zrevrank),
    r("zrange", -4, K1, zsets::zrange),
    r("zrevrange", -4, K1, zsets::zrevrange),
    r("zrangebyscore", -4, K1, zsets::zrangebyscore),
    r("zrevrangebyscore", -4, K1, zsets::zrevrangebyscore),
    w("zpopmin", -2, K1, zsets::zpopmin),
    w("zpopmax", -2, K1, zsets::zpopmax),
    w("zremrangebyrank", 4, K1, zsets::zremrangebyrank),
    w("zremrangebyscore", 4, K1, zsets::zremrangebyscore),
    r("zscan", -3, K1, zsets::zscan),
    // Known to Redis, refused here with a clear error.
    u("blpop", -3, BLOCKING),
    u("brpop", -3, BLOCKING),
    u("brpoplpush", 4, BLOCKING),
    u("blmove", 6, BLOCKING),
    u("blmpop", -5, BLOCKING),
    u("bzpopmin", -3, BLOCKING),
    u("bzpopmax", -3, BLOCKING),
    u("bzmpop", -5, BLOCKING),
    u("wait", 3, BLOCKING),
    u("subscribe", -2, PUBSUB),
    u("unsubscribe", -1, PUBSUB),
    u("psubscribe", -2, PUBSUB),
    u("punsubscribe", -1, PUBSUB),
    u("ssubscribe", -2, PUBSUB),
    u("sunsubscribe", -1, PUBSUB),
    u("publish", 3, PUBSUB),
    u("spublish", 3, PUBSUB),
    u("pubsub", -2, PUBSUB),
    u("eval", -3, SCRIPTING),
    u("evalsha", -3, SCRIPTING),
    u("eval_ro", -3, SCRIPTING),
    u("evalsha_ro", -3, SCRIPTING),
    u("script", -2, SCRIPTING),
    u("function", -2, SCRIPTING),
    u("fcall", -3, SCRIPTING),
    u("fcall_ro", -3, SCRIPTING),
    u("xadd", -5, STREAMS),
    u("xrange", -4, STREAMS),
    u("xrevrange", -4, STREAMS),
    u("xlen", 2, STREAMS),
    u("xread", -4, STREAMS),
    u("xreadgroup", -7, STREAMS),
    u("xgroup", -2, STREAMS),
    u("xack", -4, STREAMS),
    u("xdel", -3, STREAMS),
    u("xtrim", -4, STREAMS),
    u("xinfo", -2, STREAMS),
];

/// The row of the command named `name`, compared without regard to ASCII
/// case, as Redis does.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    static INDEX: std::sync::OnceLock<std::collections::HashMap<&'static [u8], &'static Spec>> =
        std::sync::OnceLock::new();
    let index = INDEX.get_or_init(|| TABLE.iter().map(|s| (s.name.as_bytes(), s)).collect());
    // Every name is short: lower-case into a buffer on the stack.
    let mut lower = [0u8; 24];
    let lower = lower.get_mut(..name.len())?;
    for (to, from) in lower.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    index.get(&*lower).copied()
}

impl Spec {
    /// Whether `argc` arguments (the name included) satisfy the arity.
    pub fn accepts_argc(&self, argc: usize) -> bool {
        let wanted = usize::try_from(self.arity.unsigned_abs()).unwrap_or(usize::MAX);
        if self.arity > 0 {
            argc == wanted
        } else {
            argc >= wanted
        }
    }

    /// Whether the command never changes the store.
    pub fn is_read_only(&self) -> bool {
        matches!(self.exec, Exec::Read(_))
    }
}

/// A command parsed against the table: its row and its arguments (the
/// name first), arity checked.
#[derive(Clone)]
pub struct Command {
    /// The row of the table.
    pub spec: &'static Spec,
    /// The arguments, the name first.
    pub args: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Command({}, {} args)", self.spec.name, self.args.len())
    }
}

impl Command {
    /// What Redis checks before running a command: that it exists and that
    /// the number of arguments fits. `Err` holds the reply Redis would send.
    /// Finer rules (`MSET` wants pairs) are checked when the command runs,
    /// with the same arity error, as Redis does.
    pub fn parse(args: Vec<Vec<u8>>) -> Result<Command, Reply> {
        let spec = check(&args)?;
        Ok(Command { spec, args })
    }

    /// The lower-case name.
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// Whether the command never changes the store.
    pub fn is_read_only(&self) -> bool {
        self.spec.is_read_only()
    }

    /// The command's keys, by its [`KeySpec`].
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        keys_of(self.spec, &self.args)
    }
}

/// The row for `args`, after the existence and arity checks.
pub fn check(args: &[Vec<u8>]) -> Result<&'static Spec, Reply> {
    let Some(name) = args.first() else {
        return Err(Reply::Error(ERR_EMPTY_COMMAND.to_owned()));
    };
    let spec = lookup(name).ok_or_else(|| unknown_command(args))?;
    if !spec.accepts_argc(args.len()) {
        return Err(wrong_arity(spec.name));
    }
    Ok(spec)
}

/// The keys of `args` by `spec`'s key positions.
pub fn keys_of<'a>(spec: &Spec, args: &'a [Vec<u8>]) -> impl Iterator<Item = &'a [u8]> {
    let k = spec.keys;
    let (first, step) = (usize::from(k.first), usize::from(k.step.max(1)));
    let last = if k.first == 0 {
        0
    } else if k.last < 0 {
        args.len()
            .saturating_sub(usize::from(k.last.unsigned_abs()))
    } else {
        usize::from(k.last.unsigned_abs()).min(args.len().saturating_sub(1))
    };
    let range = if k.first == 0 || first > last {
        0..0
    } else {
        first..last + 1
    };
    range.step_by(step).map(move |i| args[i].as_slice())
}

/// Whether `args` is a known command that only reads. The arity is not
/// checked here; a read with the wrong arity is still a read (it fails
/// without touching the store).
pub fn is_read_only(args: &[Vec<u8>]) -> bool {
    args.first()
        .and_then(|name| lookup(name))
        .is_some_and(Spec::is_read_only)
}

/// Whether `args` names a command this server knows (arity unchecked).
pub fn is_known(args: &[Vec<u8>]) -> bool {
    args.first().is_some_and(|name| lookup(name).is_some())
}

/// Ours, not Redis's: Redis never runs an empty command (it ignores a blank
/// line or `*0`), so it has no message.
pub const ERR_EMPTY_COMMAND: &str = "ERR empty command";
/// Redis's reply to an option it does not know, or to conflicting options.
pub const ERR_SYNTAX: &str = "ERR syntax error";
/// Redis's reply when a value or an argument is not a 64-bit integer.
pub const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";
/// Redis's reply when a value or an argument is not a float.
pub const ERR_NOT_FLOAT: &str = "ERR value is not a valid float";
/// Redis's reply when `INCR`/`INCRBY` would leave the `i64` range.
pub const ERR_OVERFLOW: &str = "ERR increment or decrement would overflow";
/// Redis's reply when a string would grow past `proto-max-bulk-len`.
pub const ERR_STRING_TOO_LONG: &str =
    "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
/// Redis's reply to a write sent to a read-only replica.
pub const ERR_READONLY: &str = "READONLY You can't write against a read only replica.";
/// Redis's reply to a command on a key of another type.
pub const ERR_WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
/// Redis's reply when a key a command needs does not exist.
pub const ERR_NO_SUCH_KEY: &str = "ERR no such key";
/// Redis's reply when an index is past the end of a list.
pub const ERR_INDEX: &str = "ERR index out of range";
/// Redis's reply to a negative or zero count where a positive one is due.
pub const ERR_POSITIVE: &str = "ERR value is out of range, must be positive";

/// `ERR wrong number of arguments for 'get' command`, as Redis 7 words it.
pub fn wrong_arity(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// The reply to a command Redis has and this server does not implement.
pub fn unsupported(name: &str, what: &str) -> Reply {
    Reply::Error(format!(
        "ERR '{name}' is not supported by vr-kv: {what} are not implemented yet (docs/kv.md)"
    ))
}

/// Redis 7's reply to an unknown command:
/// `ERR unknown command 'FOO', with args beginning with: 'a' 'b' `.
///
/// Reproduces `commandCheckExistence`: the name as sent, cut to 128 bytes;
/// then each argument quoted and followed by a space while the list is
/// shorter than 128 bytes, the argument cut to the room left. C strings end
/// at a NUL byte, so every piece does too. One difference: the reply is a
/// Rust `String`, so bytes that are not UTF-8 show as U+FFFD where Redis
/// would echo them raw.
pub fn unknown_command(args: &[Vec<u8>]) -> Reply {
    const CUT: usize = 128;
    let name = args.first().map_or(&[][..], |n| c_prefix(n, CUT));
    let mut list: Vec<u8> = Vec::new();
    for arg in args.iter().skip(1) {
        if list.len() >= CUT {
            break;
        }
        list.push(b'\'');
        list.extend_from_slice(c_prefix(arg, CUT - list.len() + 1));
        list.extend_from_slice(b"' ");
    }
    Reply::Error(format!(
        "ERR unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(name),
        String::from_utf8_lossy(&list)
    ))
}

/// The bytes C's `%.*s` prints: up to the first NUL, at most `max`.
fn c_prefix(bytes: &[u8], max: usize) -> &[u8] {
    let end = bytes
        .iter()
        .take(max)
        .position(|&b| b == 0)
        .unwrap_or(bytes.len().min(max));
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn every_name_has_exactly_one_row_in_lower_case() {
        for spec in TABLE {
            assert_eq!(TABLE.iter().filter(|s| s.name == spec.name).count(), 1);
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(std::ptr::eq(
                lookup(spec.name.to_uppercase().as_bytes()).unwrap(),
                spec
            ));
        }
    }

    #[test]
    fn arity_follows_redis_convention() {
        let get = lookup(b"get").unwrap();
        assert!(get.accepts_argc(2));
        assert!(!get.accepts_argc(3));
        let del = lookup(b"del").unwrap();
        assert!(del.accepts_argc(2) && del.accepts_argc(100) && !del.accepts_argc(1));
    }

    #[test]
    fn keys_follow_the_key_spec() {
        let keys = |words: &[&str]| -> Vec<Vec<u8>> {
            Command::parse(args(words))
                .unwrap()
                .keys()
                .map(<[u8]>::to_vec)
                .collect()
        };
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]), args(&["a", "b"]));
        assert_eq!(keys(&["DEL", "a", "b", "c"]), args(&["a", "b", "c"]));
        assert_eq!(keys(&["RENAME", "a", "b"]), args(&["a", "b"]));
        assert_eq!(keys(&["SET", "a", "v", "EX", "1"]), args(&["a"]));
        assert!(keys(&["PING"]).is_empty());
    }
}
