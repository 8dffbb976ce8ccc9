//! Hashes: `HSET`, `HMSET`, `HSETNX`, `HGET`, `HMGET`, `HDEL`, `HEXISTS`,
//! `HLEN`, `HSTRLEN`, `HKEYS`, `HVALS`, `HGETALL`, `HINCRBY`,
//! `HINCRBYFLOAT`, `HSCAN`.

use super::{
    array, bulk, error, float_arg, fmt_human, hash, hash_mut, int_arg, integer, parse_float,
    scan_args, scan_parted, scan_reply,
};
use crate::command::{wrong_arity, ERR_NOT_INTEGER, ERR_OVERFLOW};
use crate::db::Db;
use crate::resp::{parse_integer, Reply};

fn set_pairs(db: &mut Db, args: &[Vec<u8>], name: &str) -> Result<usize, Reply> {
    if !args.len().is_multiple_of(2) {
        return Err(wrong_arity(name));
    }
    let h = hash_mut(db, &args[1], true)?.expect("created");
    let mut added = 0;
    for pair in args[2..].chunks_exact(2) {
        if h.insert(pair[0].clone(), pair[1].clone()).is_none() {
            added += 1;
        }
    }
    Ok(added)
}

/// `HSET key field value [field value ...]`
pub fn hset(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    set_pairs(db, args, "hset").map_or_else(|e| e, integer)
}

/// `HMSET key field value [field value ...]`
pub fn hmset(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    set_pairs(db, args, "hmset").map_or_else(|e| e, |_| Reply::ok())
}

/// `HSETNX key field value`
pub fn hsetnx(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    match hash(db, &args[1]) {
        Err(e) => return e,
        Ok(Some(h)) if h.get(&args[2]).is_some() => return Reply::Integer(0),
        Ok(_) => {}
    }
    match hash_mut(db, &args[1], true) {
        Ok(Some(h)) => {
            h.insert(args[2].clone(), args[3].clone());
            Reply::Integer(1)
        }
        Ok(None) => Reply::Integer(0),
        Err(e) => e,
    }
}

/// `HGET key field`
pub fn hget(db: &Db, args: &[Vec<u8>]) -> Reply {
    match hash(db, &args[1]) {
        Ok(h) => Reply::Bulk(h.and_then(|h| h.get(&args[2])).cloned()),
        Err(e) => e,
    }
}

/// `HMGET key field [field ...]`
pub fn hmget(db: &Db, args: &[Vec<u8>]) -> Reply {
    match hash(db, &args[1]) {
        Ok(h) => array(
            args[2..]
                .iter()
                .map(|f| Reply::Bulk(h.and_then(|h| h.get(f)).cloned()))
                .collect(),
        ),
        Err(e) => e,
    }
}

/// `HDEL key field [field ...]`
pub fn hdel(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    match hash_mut(db, &args[1], false) {
        Ok(Some(h)) => integer(args[2..].iter().filter(|f| h.remove(f).is_some()).count()),
        Ok(None) => Reply::Integer(0),
        Err(e) => e,
    }
}

/// `HEXISTS key field`
pub fn hexists(db: &Db, args: &[Vec<u8>]) -> Reply {
    match hash(db, &args[1]) {
        Ok(h) => integer(usize::from(h.is_some_and(|h| h.get(&args[2]).is_some()))),
        Err(e) => e,
    }
}

/// `HLEN key`
pub fn hlen(db: &Db, args: &[Vec<u8>]) -> Reply {
    match hash(db, &args[1]) {
        Ok(h) => integer(h.map_or(0, |h| h.len())),
        Err(e) => e,
    }
}

/// `HSTRLEN key field`
pub fn hstrlen(db: &Db, args: &[Vec<u8>]) -> Reply {
    match hash(db, &args[1]) {
        Ok(h) => integer(h.and_then(|h| h.get(&args[2])).map_or(0, Vec::len)),
        Err(e) => e,
    }
}

fn listing(db: &Db, key: &[u8], fields: bool, values: bool) -> Reply {
    match hash(db, key) {
        Ok(h) => {
            let mut out = Vec::new();
            for (f, v) in h.into_iter().flat_map(|h| h.iter()) {
                if fields {
                    out.push(bulk(f));
                }
                if values {
                    out.push(bulk(v));
                }
            }
            array(out)
        }
        Err(e) => e,
    }
}

/// `HKEYS key`
pub fn hkeys(db: &Db, args: &[Vec<u8>]) -> Reply {
    listing(db, &args[1], true, false)
}

/// `HVALS key`
pub fn hvals(db: &Db, args: &[Vec<u8>]) -> Reply {
    listing(db, &args[1], false, true)
}

/// `HGETALL key`
pub fn hgetall(db: &Db, args: &[Vec<u8>]) -> Reply {
    listing(db, &args[1], true, true)
}

/// `HINCRBY key field increment`
pub fn hincrby(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let increment = match int_arg(&args[3]) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let current = match hash(db, &args[1]) {
        Err(e) => return e,
        Ok(h) => match h.and_then(|h| h.get(&args[2])) {
            None => 0,
            Some(v) => match parse_integer(v) {
                Some(n) => n,
                None => return error("ERR hash value is not an integer"),
            },
        },
    };
    let Some(next) = current.checked_add(increment) else {
        return error(ERR_OVERFLOW);
    };
    match hash_mut(db, &args[1], true) {
        Ok(Some(h)) => {
            h.insert(args[2].clone(), next.to_string().into_bytes());
            Reply::Integer(next)
        }
        Ok(None) => error(ERR_NOT_INTEGER),
        Err(e) => e,
    }
}

/// `HINCRBYFLOAT key field increment`
pub fn hincrbyfloat(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let increment = match float_arg(&args[3]) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let current = match hash(db, &args[1]) {
        Err(e) => return e,
        Ok(h) => match h.and_then(|h| h.get(&args[2])) {
            None => 0.0,
            Some(v) => match parse_float(v) {
                Some(n) => n,
                None => return error("ERR hash value is not a float"),
            },
        },
    };
    let next = current + increment;
    if !next.is_finite() {
        return error("ERR increment would produce NaN or Infinity");
    }
    let text = fmt_human(next).into_bytes();
    match hash_mut(db, &args[1], true) {
        Ok(Some(h)) => {
            h.insert(args[2].clone(), text.clone());
            Reply::Bulk(Some(text))
        }
        Ok(None) => Reply::Bulk(None),
        Err(e) => e,
    }
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count]`: the cursor is the
/// next part of the hash.
pub fn hscan(db: &Db, args: &[Vec<u8>]) -> Reply {
    let (cursor, pattern, count) = match scan_args(args) {
        Ok(a) => a,
        Err(e) => return e,
    };
    match hash(db, &args[1]) {
        Err(e) => e,
        Ok(None) => scan_reply(0, Vec::new()),
        Ok(Some(h)) => {
            let mut items = Vec::new();
            let next = scan_parted(h, cursor, count, pattern, |f, v| {
                items.push(bulk(f));
                items.push(bulk(v));
            });
            scan_reply(next, items)
        }
    }
}
