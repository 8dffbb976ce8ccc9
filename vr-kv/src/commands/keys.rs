//! The keyspace: `DEL`, `UNLINK`, `EXISTS`, `TOUCH`, `TYPE`, `KEYS`,
//! `SCAN`, `RANDOMKEY`, `RENAME`, `RENAMENX`, `COPY`, the `EXPIRE` family,
//! `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`, `PERSIST`.

use super::{array, bulk, error, glob, int_arg, integer, syntax};
use crate::command::ERR_NO_SUCH_KEY;
use crate::db::{Db, KEY_PAGES};
use crate::resp::Reply;

/// `DEL key [key ...]`, `UNLINK`
pub fn del(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    integer(args[1..].iter().filter(|key| db.delete(key)).count())
}

/// `EXISTS key [key ...]`, `TOUCH`: each occurrence counts.
pub fn exists(db: &Db, args: &[Vec<u8>]) -> Reply {
    integer(args[1..].iter().filter(|key| db.contains(key)).count())
}

/// `TYPE key`
pub fn type_(db: &Db, args: &[Vec<u8>]) -> Reply {
    Reply::Simple(
        db.value(&args[1])
            .map_or("none", |v| v.type_name())
            .to_owned(),
    )
}

/// `KEYS pattern`
pub fn keys(db: &Db, args: &[Vec<u8>]) -> Reply {
    array(
        db.iter_from(0)
            .filter(|(_, key, _)| glob(&args[1], key))
            .map(|(_, key, _)| bulk(key))
            .collect(),
    )
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`: the cursor is
/// the next key page; every key of a page comes in one reply.
pub fn scan(db: &Db, args: &[Vec<u8>]) -> Reply {
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return error("ERR invalid cursor");
    };
    let (mut pattern, mut count, mut kind) = (None, 10usize, None);
    let mut i = 2;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return syntax();
        };
        if args[i].eq_ignore_ascii_case(b"MATCH") {
            pattern = Some(value.as_slice());
        } else if args[i].eq_ignore_ascii_case(b"COUNT") {
            match int_arg(value) {
                Ok(n) if n >= 1 => count = usize::try_from(n).unwrap_or(usize::MAX),
                Ok(_) => return syntax(),
                Err(e) => return e,
            }
        } else if args[i].eq_ignore_ascii_case(b"TYPE") {
            kind = Some(value.to_ascii_lowercase());
        } else {
            return syntax();
        }
        i += 2;
    }
    let mut page = usize::try_from(cursor).unwrap_or(usize::MAX);
    let mut seen = 0;
    let mut found = Vec::new();
    let mut items = db.iter_from(page).peekable();
    while page < KEY_PAGES as usize {
        while let Some((_, key, entry)) = items.next_if(|(p, _, _)| *p == page) {
            seen += 1;
            if pattern.is_some_and(|p| !glob(p, key)) {
                continue;
            }
            if kind
                .as_ref()
                .is_some_and(|k| k.as_slice() != entry.value.type_name().as_bytes())
            {
                continue;
            }
            found.push(bulk(key));
        }
        page += 1;
        if seen >= count {
            break;
        }
    }
    let next = if page >= KEY_PAGES as usize { 0 } else { page };
    super::scan_reply(next as u64, found)
}

/// `RANDOMKEY`: deterministic, the first key in page order (every replica
/// must answer the same).
pub fn randomkey(db: &Db, _args: &[Vec<u8>]) -> Reply {
    Reply::Bulk(db.iter_from(0).next().map(|(_, key, _)| key.clone()))
}

fn rename_generic(db: &mut Db, args: &[Vec<u8>], nx: bool) -> Reply {
    let (from, to) = (&args[1], &args[2]);
    if !db.contains(from) {
        return error(ERR_NO_SUCH_KEY);
    }
    if from == to {
        return if nx { Reply::Integer(0) } else { Reply::ok() };
    }
    if nx && db.contains(to) {
        return Reply::Integer(0);
    }
    let Some(entry) = db.remove(from) else {
        return error(ERR_NO_SUCH_KEY);
    };
    let at = entry.expire_at();
    db.insert(to, entry.value);
    if at.is_some() {
        db.set_expiry(to, at);
    }
    if nx {
        Reply::Integer(1)
    } else {
        Reply::ok()
    }
}

/// `RENAME key newkey`
pub fn rename(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    rename_generic(db, args, false)
}

/// `RENAMENX key newkey`
pub fn renamenx(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    rename_generic(db, args, true)
}

/// `COPY source destination [DB n] [REPLACE]`
pub fn copy(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"REPLACE") {
            replace = true;
        } else if args[i].eq_ignore_ascii_case(b"DB") && i + 1 < args.len() {
            match int_arg(&args[i + 1]) {
                Ok(0) => {}
                Ok(_) => return error("ERR DB index is out of range"),
                Err(e) => return e,
            }
            i += 1;
        } else {
            return syntax();
        }
        i += 1;
    }
    let (from, to) = (&args[1], &args[2]);
    if from == to {
        return error("ERR source and destination objects are the same");
    }
    let Some(entry) = db.get(from).cloned() else {
        return Reply::Integer(0);
    };
    if db.contains(to) && !replace {
        return Reply::Integer(0);
    }
    let at = entry.expire_at();
    db.insert(to, entry.value);
    if at.is_some() {
        db.set_expiry(to, at);
    }
    Reply::Integer(1)
}

/// `EXPIRE key seconds [NX | XX | GT | LT]` and its three siblings: `unit`
/// ms per unit, `absolute` for `EXPIREAT`/`PEXPIREAT`.
fn expire_generic(db: &mut Db, args: &[Vec<u8>], unit: i64, absolute: bool, name: &str) -> Reply {
    let amount = match int_arg(&args[2]) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &args[3..] {
        if option.eq_ignore_ascii_case(b"NX") {
            nx = true;
        } else if option.eq_ignore_ascii_case(b"XX") {
            xx = true;
        } else if option.eq_ignore_ascii_case(b"GT") {
            gt = true;
        } else if option.eq_ignore_ascii_case(b"LT") {
            lt = true;
        } else {
            return error(&format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(option)
            ));
        }
    }
    if nx && (xx || gt || lt) {
        return error("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return error("ERR GT and LT options at the same time are not compatible");
    }
    let now = i64::try_from(db.now()).unwrap_or(i64::MAX);
    let at = amount.checked_mul(unit).and_then(|ms| {
        if absolute {
            Some(ms)
        } else {
            ms.checked_add(now)
        }
    });
    let Some(at) = at else {
        return error(&format!("ERR invalid expire time in '{name}' command"));
    };
    let Some(entry) = db.get(&args[1]) else {
        return Reply::Integer(0);
    };
    let current = entry.expire_at();
    let ok = match current {
        None => !(xx || gt),
        Some(old) => {
            let old = i64::try_from(old).unwrap_or(i64::MAX);
            let refused = nx || (gt && at <= old) || (lt && at >= old);
            !refused
        }
    };
    if !ok {
        return Reply::Integer(0);
    }
    if at <= now {
        db.delete(&args[1]);
    } else {
        db.set_expiry(&args[1], Some(at as u64));
    }
    Reply::Integer(1)
}

/// `EXPIRE key seconds [NX | XX | GT | LT]`
pub fn expire(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    expire_generic(db, args, 1000, false, "expire")
}

/// `PEXPIRE key milliseconds [NX | XX | GT | LT]`
pub fn pexpire(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    expire_generic(db, args, 1, false, "pexpire")
}

/// `EXPIREAT key unix-time-seconds [NX | XX | GT | LT]`
pub fn expireat(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    expire_generic(db, args, 1000, true, "expireat")
}

/// `PEXPIREAT key unix-time-milliseconds [NX | XX | GT | LT]`
pub fn pexpireat(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    expire_generic(db, args, 1, true, "pexpireat")
}

/// -2 without the key, -1 without an expiry, else `f(deadline)`.
fn ttl_generic(db: &Db, key: &[u8], f: impl Fn(u64, u64) -> i64) -> Reply {
    match db.get(key) {
        None => Reply::Integer(-2),
        Some(entry) => match entry.expire_at() {
            None => Reply::Integer(-1),
            Some(at) => Reply::Integer(f(at, db.now())),
        },
    }
}

/// `TTL key`: seconds left, rounded as Redis rounds.
pub fn ttl(db: &Db, args: &[Vec<u8>]) -> Reply {
    ttl_generic(db, &args[1], |at, now| {
        (at.saturating_sub(now).saturating_add(500) / 1000) as i64
    })
}

/// `PTTL key`
pub fn pttl(db: &Db, args: &[Vec<u8>]) -> Reply {
    ttl_generic(db, &args[1], |at, now| at.saturating_sub(now) as i64)
}

/// `EXPIRETIME key`
pub fn expiretime(db: &Db, args: &[Vec<u8>]) -> Reply {
    // Rounded as TTL is, as in Redis's ttlGenericCommand.
    ttl_generic(db, &args[1], |at, _| (at.saturating_add(500) / 1000) as i64)
}

/// `PEXPIRETIME key`
pub fn pexpiretime(db: &Db, args: &[Vec<u8>]) -> Reply {
    ttl_generic(db, &args[1], |at, _| at as i64)
}

/// `PERSIST key`
pub fn persist(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    match db.get(&args[1]) {
        Some(entry) if entry.expire_at().is_some() => {
            db.set_expiry(&args[1], None);
            Reply::Integer(1)
        }
        _ => Reply::Integer(0),
    }
}
