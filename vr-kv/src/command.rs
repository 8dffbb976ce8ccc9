//! The command table: which commands exist, their arity, which only read,
//! and the errors Redis gives before running a command (unknown command,
//! wrong number of arguments).
//!
//! The server uses this table before anything is replicated: an unknown or
//! malformed command is answered at once, a read may be served from local
//! state on a `READONLY` connection, and only writes need the log.

use crate::resp::Reply;

/// A command this store implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// `GET key`
    Get,
    /// `SET key value [NX | XX] [GET] [KEEPTTL]`
    Set,
    /// `DEL key [key ...]`
    Del,
    /// `EXISTS key [key ...]`
    Exists,
    /// `INCR key`
    Incr,
    /// `INCRBY key increment`
    IncrBy,
    /// `APPEND key value`
    Append,
    /// `MGET key [key ...]`
    MGet,
    /// `MSET key value [key value ...]`
    MSet,
    /// `PING [message]`
    Ping,
    /// `ECHO message`
    Echo,
}

/// One row of the table. `arity` follows Redis's convention: positive means
/// exactly that many arguments (the name included), negative means at least
/// that many.
struct Spec {
    command: Command,
    name: &'static str,
    arity: i32,
    read_only: bool,
}

const TABLE: [Spec; 11] = [
    spec(Command::Get, "get", 2, true),
    spec(Command::Set, "set", -3, false),
    spec(Command::Del, "del", -2, false),
    spec(Command::Exists, "exists", -2, true),
    spec(Command::Incr, "incr", 2, false),
    spec(Command::IncrBy, "incrby", 3, false),
    spec(Command::Append, "append", 3, false),
    spec(Command::MGet, "mget", -2, true),
    spec(Command::MSet, "mset", -3, false),
    spec(Command::Ping, "ping", -1, true),
    spec(Command::Echo, "echo", 2, true),
];

const fn spec(command: Command, name: &'static str, arity: i32, read_only: bool) -> Spec {
    Spec {
        command,
        name,
        arity,
        read_only,
    }
}

impl Command {
    /// The command named `name`, compared without regard to ASCII case, as
    /// Redis does.
    pub fn lookup(name: &[u8]) -> Option<Command> {
        TABLE
            .iter()
            .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
            .map(|s| s.command)
    }

    fn spec(self) -> &'static Spec {
        // Every variant has exactly one row; the table test checks it.
        TABLE
            .iter()
            .find(|s| s.command == self)
            .expect("every command has a row in TABLE")
    }

    /// The lower-case name, as Redis prints it in errors.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The arity in Redis's convention: `n > 0` exactly `n` arguments,
    /// `n < 0` at least `-n`, the command name counted.
    pub fn arity(self) -> i32 {
        self.spec().arity
    }

    /// Whether the command never changes the store, so it needs no log
    /// entry when served from a replica's local state.
    pub fn is_read_only(self) -> bool {
        self.spec().read_only
    }

    /// Whether `argc` arguments (the name included) satisfy the arity.
    pub fn accepts_argc(self, argc: usize) -> bool {
        let arity = self.arity();
        let wanted = usize::try_from(arity.unsigned_abs()).unwrap_or(usize::MAX);
        if arity > 0 {
            argc == wanted
        } else {
            argc >= wanted
        }
    }

    /// What Redis checks before running a command: that it exists and that
    /// the number of arguments fits. `Err` holds the reply Redis would send.
    ///
    /// Commands with a finer rule (`MSET` wants pairs, `PING` at most one
    /// message) check it when they run, with the same arity error, as Redis.
    pub fn parse(args: &[Vec<u8>]) -> Result<Command, Reply> {
        let Some(name) = args.first() else {
            return Err(Reply::Error(ERR_EMPTY_COMMAND.to_owned()));
        };
        let command = Command::lookup(name).ok_or_else(|| unknown_command(args))?;
        if !command.accepts_argc(args.len()) {
            return Err(wrong_arity(command));
        }
        Ok(command)
    }
}

/// Whether `args` is a known command that only reads: `GET`, `MGET`,
/// `EXISTS`, `PING`, `ECHO`. The arity is not checked here; a read with the
/// wrong arity is still a read (it fails without touching the store).
pub fn is_read_only(args: &[Vec<u8>]) -> bool {
    args.first()
        .and_then(|name| Command::lookup(name))
        .is_some_and(Command::is_read_only)
}

/// Whether `args` names a command this store implements (arity unchecked).
pub fn is_known(args: &[Vec<u8>]) -> bool {
    args.first()
        .is_some_and(|name| Command::lookup(name).is_some())
}

/// Ours, not Redis's: Redis never runs an empty command (it ignores a blank
/// line or `*0`), so it has no message. A server should skip empty
/// commands, as [`crate::resp::parse_command`] documents; this is the
/// answer if one reaches the store anyway.
pub const ERR_EMPTY_COMMAND: &str = "ERR empty command";
/// Redis's reply to an option it does not know, or to conflicting options.
pub const ERR_SYNTAX: &str = "ERR syntax error";
/// Redis's reply when a value or an argument is not a 64-bit integer.
pub const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";
/// Redis's reply when `INCR`/`INCRBY` would leave the `i64` range.
pub const ERR_OVERFLOW: &str = "ERR increment or decrement would overflow";
/// Redis's reply when `APPEND` would make a value longer than allowed.
pub const ERR_STRING_TOO_LONG: &str =
    "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
/// Redis's reply to a write sent to a read-only replica.
pub const ERR_READONLY: &str = "READONLY You can't write against a read only replica.";

/// `ERR wrong number of arguments for 'get' command`, as Redis 7 words it.
pub fn wrong_arity(command: Command) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{}' command",
        command.name()
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

    #[test]
    fn every_command_has_exactly_one_row() {
        use Command::*;
        let all = [
            Get, Set, Del, Exists, Incr, IncrBy, Append, MGet, MSet, Ping, Echo,
        ];
        assert_eq!(all.len(), TABLE.len());
        for command in all {
            assert_eq!(TABLE.iter().filter(|s| s.command == command).count(), 1);
            assert_eq!(Command::lookup(command.name().as_bytes()), Some(command));
            assert_eq!(command.name(), command.name().to_ascii_lowercase());
        }
    }

    #[test]
    fn arity_follows_redis_convention() {
        assert!(Command::Get.accepts_argc(2));
        assert!(!Command::Get.accepts_argc(3));
        assert!(Command::Del.accepts_argc(2));
        assert!(Command::Del.accepts_argc(100));
        assert!(!Command::Del.accepts_argc(1));
        assert!(Command::Ping.accepts_argc(1));
    }
}
