//! Strings: `GET`, `SET` and its options, `SETNX`, `SETEX`, `PSETEX`,
//! `GETSET`, `GETDEL`, `GETEX`, `MGET`, `MSET`, `MSETNX`, `INCR`, `DECR`,
//! `INCRBY`, `DECRBY`, `INCRBYFLOAT`, `APPEND`, `STRLEN`, `GETRANGE`,
//! `SUBSTR`, `SETRANGE`.

use super::{bulk, error, float_arg, fmt_human, int_arg, integer, syntax, wrongtype};
use crate::command::{wrong_arity, ERR_NOT_INTEGER, ERR_OVERFLOW, ERR_STRING_TOO_LONG};
use crate::db::{Db, Value};
use crate::resp::{parse_integer, Reply};

/// The string at `key`; `WRONGTYPE` if another type.
pub fn string<'a>(db: &'a Db, key: &[u8]) -> Result<Option<&'a Vec<u8>>, Reply> {
    match db.value(key) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(_) => Err(wrongtype()),
    }
}

/// `GET key`
pub fn get(db: &Db, args: &[Vec<u8>]) -> Reply {
    match string(db, &args[1]) {
        Ok(v) => Reply::Bulk(v.cloned()),
        Err(e) => e,
    }
}

/// An expiry option's deadline: `EX`/`PX` relative to the log time,
/// `EXAT`/`PXAT` absolute. `None` for a time Redis calls invalid.
pub fn deadline(now: u64, amount: i64, unit_ms: i64, absolute: bool) -> Option<u64> {
    if amount <= 0 {
        return None;
    }
    let ms = amount.checked_mul(unit_ms)?;
    let at = if absolute {
        ms
    } else {
        ms.checked_add(i64::try_from(now).ok()?)?
    };
    u64::try_from(at).ok()
}

/// The expiry options of `SET` and `GETEX`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Unchanged,
    KeepTtl,
    Persist,
    At(u64),
}

/// Reads `EX s | PX ms | EXAT s | PXAT ms` at `args[*i]`; `Ok(None)` if
/// the option is not one of them.
fn expiry_option(
    db: &Db,
    args: &[Vec<u8>],
    i: &mut usize,
    command: &str,
) -> Result<Option<u64>, Reply> {
    let option = &args[*i];
    let (unit, absolute) = if option.eq_ignore_ascii_case(b"EX") {
        (1000, false)
    } else if option.eq_ignore_ascii_case(b"PX") {
        (1, false)
    } else if option.eq_ignore_ascii_case(b"EXAT") {
        (1000, true)
    } else if option.eq_ignore_ascii_case(b"PXAT") {
        (1, true)
    } else {
        return Ok(None);
    };
    let Some(value) = args.get(*i + 1) else {
        return Err(syntax());
    };
    *i += 1;
    let amount = int_arg(value)?;
    deadline(db.now(), amount, unit, absolute)
        .map(Some)
        .ok_or_else(|| error(&format!("ERR invalid expire time in '{command}' command")))
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]`
pub fn set(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let (mut nx, mut xx, mut get) = (false, false, false);
    let mut expiry = Expiry::Unchanged;
    let mut i = 3;
    while i < args.len() {
        let option = &args[i];
        if option.eq_ignore_ascii_case(b"NX") && !xx {
            nx = true;
        } else if option.eq_ignore_ascii_case(b"XX") && !nx {
            xx = true;
        } else if option.eq_ignore_ascii_case(b"GET") {
            get = true;
        } else if option.eq_ignore_ascii_case(b"KEEPTTL") && !matches!(expiry, Expiry::At(_)) {
            expiry = Expiry::KeepTtl;
        } else if expiry != Expiry::KeepTtl
            && !matches!(expiry, Expiry::At(_))
            && [&b"EX"[..], b"PX", b"EXAT", b"PXAT"]
                .iter()
                .any(|o| option.eq_ignore_ascii_case(o))
        {
            match expiry_option(db, args, &mut i, "set") {
                Ok(Some(at)) => expiry = Expiry::At(at),
                Ok(None) => return syntax(),
                Err(e) => return e,
            }
        } else {
            return syntax();
        }
        i += 1;
    }
    let old = match db.value(&args[1]) {
        None => None,
        Some(Value::Str(s)) => Some(s.clone()),
        Some(_) if get => return wrongtype(),
        Some(_) => Some(Vec::new()),
    };
    let found = old.is_some();
    let reply = get.then_some(Reply::Bulk(old));
    if (nx && found) || (xx && !found) {
        return reply.unwrap_or(Reply::Bulk(None));
    }
    let value = Value::Str(args[2].clone());
    match expiry {
        Expiry::KeepTtl => db.replace_value(&args[1], value),
        Expiry::At(at) => {
            db.insert(&args[1], value);
            db.set_expiry(&args[1], Some(at));
        }
        Expiry::Unchanged | Expiry::Persist => {
            db.insert(&args[1], value);
        }
    }
    reply.unwrap_or_else(Reply::ok)
}

/// `SETNX key value`
pub fn setnx(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    if db.contains(&args[1]) {
        return Reply::Integer(0);
    }
    db.insert(&args[1], Value::Str(args[2].clone()));
    Reply::Integer(1)
}

fn setex_generic(db: &mut Db, args: &[Vec<u8>], unit: i64, name: &str) -> Reply {
    let amount = match int_arg(&args[2]) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let Some(at) = deadline(db.now(), amount, unit, false) else {
        return error(&format!("ERR invalid expire time in '{name}' command"));
    };
    db.insert(&args[1], Value::Str(args[3].clone()));
    db.set_expiry(&args[1], Some(at));
    Reply::ok()
}

/// `SETEX key seconds value`
pub fn setex(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    setex_generic(db, args, 1000, "setex")
}

/// `PSETEX key milliseconds value`
pub fn psetex(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    setex_generic(db, args, 1, "psetex")
}

/// `GETSET key value`
pub fn getset(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let old = match string(db, &args[1]) {
        Ok(v) => v.cloned(),
        Err(e) => return e,
    };
    db.insert(&args[1], Value::Str(args[2].clone()));
    Reply::Bulk(old)
}

/// `GETDEL key`
pub fn getdel(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let old = match string(db, &args[1]) {
        Ok(v) => v.cloned(),
        Err(e) => return e,
    };
    if old.is_some() {
        db.delete(&args[1]);
    }
    Reply::Bulk(old)
}

/// `GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]`
pub fn getex(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let mut expiry = Expiry::Unchanged;
    let mut i = 2;
    while i < args.len() {
        if expiry != Expiry::Unchanged {
            return syntax();
        }
        if args[i].eq_ignore_ascii_case(b"PERSIST") {
            expiry = Expiry::Persist;
        } else {
            match expiry_option(db, args, &mut i, "getex") {
                Ok(Some(at)) => expiry = Expiry::At(at),
                Ok(None) => return syntax(),
                Err(e) => return e,
            }
        }
        i += 1;
    }
    let value = match string(db, &args[1]) {
        Ok(Some(v)) => v.clone(),
        Ok(None) => return Reply::Bulk(None),
        Err(e) => return e,
    };
    match expiry {
        Expiry::At(at) => {
            db.set_expiry(&args[1], Some(at));
        }
        Expiry::Persist => {
            if db.get(&args[1]).is_some_and(|e| e.expire_at().is_some()) {
                db.set_expiry(&args[1], None);
            }
        }
        Expiry::Unchanged | Expiry::KeepTtl => {}
    }
    Reply::Bulk(Some(value))
}

/// `MGET key [key ...]`: a key of another type reads as nil.
pub fn mget(db: &Db, args: &[Vec<u8>]) -> Reply {
    Reply::Array(Some(
        args[1..]
            .iter()
            .map(|key| Reply::Bulk(string(db, key).ok().flatten().cloned()))
            .collect(),
    ))
}

/// `MSET key value [key value ...]`
pub fn mset(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    if args.len().is_multiple_of(2) {
        return wrong_arity("mset");
    }
    for pair in args[1..].chunks_exact(2) {
        db.insert(&pair[0], Value::Str(pair[1].clone()));
    }
    Reply::ok()
}

/// `MSETNX key value [key value ...]`
pub fn msetnx(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    if args.len().is_multiple_of(2) {
        return wrong_arity("msetnx");
    }
    if args[1..].chunks_exact(2).any(|pair| db.contains(&pair[0])) {
        return Reply::Integer(0);
    }
    for pair in args[1..].chunks_exact(2) {
        db.insert(&pair[0], Value::Str(pair[1].clone()));
    }
    Reply::Integer(1)
}

fn incr_by(db: &mut Db, key: &[u8], increment: i64) -> Reply {
    let current = match string(db, key) {
        Err(e) => return e,
        Ok(None) => 0,
        Ok(Some(value)) => match parse_integer(value) {
            Some(n) => n,
            None => return error(ERR_NOT_INTEGER),
        },
    };
    let Some(next) = current.checked_add(increment) else {
        return error(ERR_OVERFLOW);
    };
    // The TTL stays, as in Redis.
    db.replace_value(key, Value::Str(next.to_string().into_bytes()));
    Reply::Integer(next)
}

/// `INCR key`
pub fn incr(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    incr_by(db, &args[1], 1)
}

/// `DECR key`
pub fn decr(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    incr_by(db, &args[1], -1)
}

/// `INCRBY key increment`
pub fn incrby(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    match int_arg(&args[2]) {
        Ok(n) => incr_by(db, &args[1], n),
        Err(e) => e,
    }
}

/// `DECRBY key decrement`
pub fn decrby(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    match int_arg(&args[2]) {
        Ok(n) => match n.checked_neg() {
            Some(n) => incr_by(db, &args[1], n),
            None => error("ERR decrement would overflow"),
        },
        Err(e) => e,
    }
}

/// `INCRBYFLOAT key increment`
pub fn incrbyfloat(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let increment = match float_arg(&args[2]) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let current = match string(db, &args[1]) {
        Err(e) => return e,
        Ok(None) => 0.0,
        Ok(Some(value)) => match super::parse_float(value) {
            Some(f) => f,
            None => return error(super::ERR_NOT_FLOAT_VALUE),
        },
    };
    let next = current + increment;
    if !next.is_finite() {
        return error("ERR increment would produce NaN or Infinity");
    }
    let text = fmt_human(next).into_bytes();
    db.replace_value(&args[1], Value::Str(text.clone()));
    Reply::Bulk(Some(text))
}

/// `APPEND key value`
pub fn append(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let max = db.value_bytes_max;
    let existing = match string(db, &args[1]) {
        Ok(v) => v.map(Vec::len),
        Err(e) => return e,
    };
    match existing {
        None => {
            db.insert(&args[1], Value::Str(args[2].clone()));
            integer(args[2].len())
        }
        Some(len) => {
            if len.saturating_add(args[2].len()) > max {
                return error(ERR_STRING_TOO_LONG);
            }
            let Some(Value::Str(s)) = db.value_mut(&args[1]) else {
                return wrongtype();
            };
            s.extend_from_slice(&args[2]);
            integer(s.len())
        }
    }
}

/// `STRLEN key`
pub fn strlen(db: &Db, args: &[Vec<u8>]) -> Reply {
    match string(db, &args[1]) {
        Ok(v) => integer(v.map_or(0, Vec::len)),
        Err(e) => e,
    }
}

/// `GETRANGE key start end`, with Redis 7.0's index rules.
pub fn getrange(db: &Db, args: &[Vec<u8>]) -> Reply {
    let (start, end) = match (int_arg(&args[2]), int_arg(&args[3])) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let value = match string(db, &args[1]) {
        Ok(v) => v.map_or(&[][..], Vec::as_slice),
        Err(e) => return e,
    };
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return bulk(b"");
    }
    let mut start = if start < 0 { len + start } else { start };
    let mut end = if end < 0 { len + end } else { end };
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return bulk(b"");
    }
    bulk(&value[start as usize..=end as usize])
}

/// `SETRANGE key offset value`
pub fn setrange(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let offset = match int_arg(&args[2]) {
        Ok(n) if n >= 0 => n as usize,
        Ok(_) => return error("ERR offset is out of range"),
        Err(e) => return e,
    };
    let piece = &args[3];
    let existing = match string(db, &args[1]) {
        Ok(v) => v.map(Vec::len),
        Err(e) => return e,
    };
    if piece.is_empty() {
        return integer(existing.unwrap_or(0));
    }
    if offset.saturating_add(piece.len()) > db.value_bytes_max {
        return error(ERR_STRING_TOO_LONG);
    }
    if existing.is_none() {
        db.insert(&args[1], Value::Str(Vec::new()));
    }
    let Some(Value::Str(s)) = db.value_mut(&args[1]) else {
        return wrongtype();
    };
    if s.len() < offset + piece.len() {
        s.resize(offset + piece.len(), 0);
    }
    s[offset..offset + piece.len()].copy_from_slice(piece);
    integer(s.len())
}
