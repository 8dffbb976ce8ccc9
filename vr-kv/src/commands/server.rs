//! The server commands the store runs: `PING`, `ECHO` (also inside
//! `MULTI`), `DBSIZE`, `FLUSHDB`, `FLUSHALL`. The rest of the family
//! (`HELLO`, `CLIENT`, `INFO`, ...) is connection state, answered by
//! [`crate::session`].

use super::{integer, syntax};
use crate::command::wrong_arity;
use crate::db::Db;
use crate::resp::Reply;

/// `PING [message]`
pub fn ping(_db: &Db, args: &[Vec<u8>]) -> Reply {
    ping_reply(args)
}

/// `PING` or `ECHO` without a store: the front end answers them itself.
pub fn ping_reply(args: &[Vec<u8>]) -> Reply {
    if args[0].eq_ignore_ascii_case(b"ECHO") {
        return match args.len() {
            2 => Reply::Bulk(Some(args[1].clone())),
            _ => wrong_arity("echo"),
        };
    }
    match args.len() {
        1 => Reply::Simple("PONG".to_owned()),
        2 => Reply::Bulk(Some(args[1].clone())),
        _ => wrong_arity("ping"),
    }
}

/// `ECHO message`
pub fn echo(_db: &Db, args: &[Vec<u8>]) -> Reply {
    Reply::Bulk(Some(args[1].clone()))
}

/// `DBSIZE`: keys held, including expired ones not deleted yet, as Redis.
pub fn dbsize(db: &Db, _args: &[Vec<u8>]) -> Reply {
    integer(db.len())
}

/// Keys one `VR.SWEEP` deletes at most (on top of the operation's own
/// sweep), so that one operation's cost stays bounded.
pub const SWEEP_MAX: usize = 1024;

/// `VR.SWEEP`: deletes up to [`SWEEP_MAX`] keys whose deadline has passed
/// by the log time, earliest first; replies how many. The primary's node
/// sends it when keys are due and no client writes (active expiry).
pub fn sweep(db: &mut Db, _args: &[Vec<u8>]) -> Reply {
    integer(db.sweep(SWEEP_MAX))
}

/// `FLUSHDB [ASYNC | SYNC]`, `FLUSHALL [ASYNC | SYNC]`: there is one
/// database, so both delete every key.
pub fn flush(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    match &args[1..] {
        [] => {}
        [mode] if mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC") => {}
        _ => return syntax(),
    }
    db.clear();
    Reply::ok()
}
