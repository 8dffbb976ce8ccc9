//! Lists: `LPUSH`, `RPUSH`, `LPUSHX`, `RPUSHX`, `LPOP`, `RPOP`, `LLEN`,
//! `LRANGE`, `LINDEX`, `LSET`, `LINSERT`, `LREM`, `LTRIM`, `LPOS`,
//! `RPOPLPUSH`, `LMOVE`.

use super::{
    array, bulk, bulks, clamp_range, error, int_arg, integer, list, list_mut, syntax, wrongtype,
};
use crate::command::{ERR_INDEX, ERR_NO_SUCH_KEY, ERR_POSITIVE};
use crate::db::{Db, Value};
use crate::resp::Reply;

fn push(db: &mut Db, args: &[Vec<u8>], front: bool, only_existing: bool) -> Reply {
    match list_mut(db, &args[1], !only_existing) {
        Err(e) => e,
        Ok(None) => Reply::Integer(0),
        Ok(Some(l)) => {
            for value in &args[2..] {
                if front {
                    l.push_front(value.clone());
                } else {
                    l.push_back(value.clone());
                }
            }
            integer(l.len())
        }
    }
}

/// `LPUSH key element [element ...]`
pub fn lpush(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    push(db, args, true, false)
}

/// `RPUSH key element [element ...]`
pub fn rpush(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    push(db, args, false, false)
}

/// `LPUSHX key element [element ...]`
pub fn lpushx(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    push(db, args, true, true)
}

/// `RPUSHX key element [element ...]`
pub fn rpushx(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    push(db, args, false, true)
}

fn pop(db: &mut Db, args: &[Vec<u8>], front: bool) -> Reply {
    if args.len() > 3 {
        return syntax();
    }
    let count = match args.get(2).map(|c| int_arg(c)) {
        None => None,
        Some(Ok(n)) if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(Ok(_)) => return error(ERR_POSITIVE),
        Some(Err(_)) => return error(ERR_POSITIVE),
    };
    match list_mut(db, &args[1], false) {
        Err(e) => e,
        Ok(None) => match count {
            None => Reply::Bulk(None),
            Some(_) => Reply::Array(None),
        },
        Ok(Some(l)) => {
            let mut take = || if front { l.pop_front() } else { l.pop_back() };
            match count {
                None => Reply::Bulk(take()),
                Some(n) => {
                    let mut out = Vec::new();
                    for _ in 0..n {
                        match take() {
                            Some(v) => out.push(Reply::Bulk(Some(v))),
                            None => break,
                        }
                    }
                    array(out)
                }
            }
        }
    }
}

/// `LPOP key [count]`
pub fn lpop(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    pop(db, args, true)
}

/// `RPOP key [count]`
pub fn rpop(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    pop(db, args, false)
}

/// `LLEN key`
pub fn llen(db: &Db, args: &[Vec<u8>]) -> Reply {
    match list(db, &args[1]) {
        Ok(l) => integer(l.map_or(0, |l| l.len())),
        Err(e) => e,
    }
}

/// `LRANGE key start stop`
pub fn lrange(db: &Db, args: &[Vec<u8>]) -> Reply {
    let (start, stop) = match (int_arg(&args[2]), int_arg(&args[3])) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    match list(db, &args[1]) {
        Err(e) => e,
        Ok(None) => array(Vec::new()),
        Ok(Some(l)) => match clamp_range(start, stop, l.len()) {
            None => array(Vec::new()),
            Some((a, b)) => bulks(l.iter_from(a).take(b - a + 1)),
        },
    }
}

/// An index as Redis reads it: negative from the end; `None` if outside.
fn index(i: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let i = if i < 0 { len + i } else { i };
    (0..len).contains(&i).then_some(i as usize)
}

/// `LINDEX key index`
pub fn lindex(db: &Db, args: &[Vec<u8>]) -> Reply {
    let i = match int_arg(&args[2]) {
        Ok(i) => i,
        Err(e) => return e,
    };
    match list(db, &args[1]) {
        Err(e) => e,
        Ok(l) => Reply::Bulk(
            l.and_then(|l| index(i, l.len()).and_then(|i| l.get(i)))
                .cloned(),
        ),
    }
}

/// `LSET key index element`
pub fn lset(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let i = match int_arg(&args[2]) {
        Ok(i) => i,
        Err(e) => return e,
    };
    match list(db, &args[1]) {
        Err(e) => return e,
        Ok(None) => return error(ERR_NO_SUCH_KEY),
        Ok(Some(l)) if index(i, l.len()).is_none() => return error(ERR_INDEX),
        Ok(Some(_)) => {}
    }
    match list_mut(db, &args[1], false) {
        Ok(Some(l)) => {
            let i = index(i, l.len()).expect("checked above");
            l.set(i, args[3].clone());
            Reply::ok()
        }
        Ok(None) => error(ERR_NO_SUCH_KEY),
        Err(e) => e,
    }
}

/// `LINSERT key BEFORE | AFTER pivot element`
pub fn linsert(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let after = if args[2].eq_ignore_ascii_case(b"AFTER") {
        true
    } else if args[2].eq_ignore_ascii_case(b"BEFORE") {
        false
    } else {
        return syntax();
    };
    let at = match list(db, &args[1]) {
        Err(e) => return e,
        Ok(None) => return Reply::Integer(0),
        Ok(Some(l)) => match l.iter().position(|v| *v == args[3]) {
            None => return Reply::Integer(-1),
            Some(i) => i + usize::from(after),
        },
    };
    match list_mut(db, &args[1], false) {
        Ok(Some(l)) => {
            l.insert(at, args[4].clone());
            integer(l.len())
        }
        Ok(None) => Reply::Integer(0),
        Err(e) => e,
    }
}

/// `LREM key count element`
pub fn lrem(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let count = match int_arg(&args[2]) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let positions: Vec<usize> = match list(db, &args[1]) {
        Err(e) => return e,
        Ok(None) => return Reply::Integer(0),
        Ok(Some(l)) => {
            let limit = if count == 0 {
                usize::MAX
            } else {
                usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX)
            };
            let matching = l
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == args[3])
                .map(|(i, _)| i);
            if count < 0 {
                let mut all: Vec<usize> = matching.collect();
                all.reverse();
                all.truncate(limit);
                all
            } else {
                matching.take(limit).collect()
            }
        }
    };
    let mut positions = positions;
    positions.sort_unstable_by(|a, b| b.cmp(a));
    if let Ok(Some(l)) = list_mut(db, &args[1], false) {
        for i in &positions {
            l.remove(*i);
        }
    }
    integer(positions.len())
}

/// `LTRIM key start stop`
pub fn ltrim(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let (start, stop) = match (int_arg(&args[2]), int_arg(&args[3])) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    match list_mut(db, &args[1], false) {
        Err(e) => e,
        Ok(None) => Reply::ok(),
        Ok(Some(l)) => {
            let len = l.len();
            let (keep_from, keep_to) = match clamp_range(start, stop, len) {
                Some(r) => r,
                None => (len, len),
            };
            for _ in 0..keep_from.min(len) {
                l.pop_front();
            }
            let keep = if keep_from >= len {
                0
            } else {
                keep_to - keep_from + 1
            };
            while l.len() > keep {
                l.pop_back();
            }
            Reply::ok()
        }
    }
}

/// `LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]`
pub fn lpos(db: &Db, args: &[Vec<u8>]) -> Reply {
    let (mut rank, mut count, mut maxlen) = (1i64, None::<usize>, 0usize);
    let mut i = 3;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return syntax();
        };
        let n = match int_arg(value) {
            Ok(n) => n,
            Err(e) => return e,
        };
        if args[i].eq_ignore_ascii_case(b"RANK") {
            if n == 0 || n == i64::MIN {
                return error("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list");
            }
            rank = n;
        } else if args[i].eq_ignore_ascii_case(b"COUNT") {
            if n < 0 {
                return error("ERR COUNT can't be negative");
            }
            count = Some(n as usize);
        } else if args[i].eq_ignore_ascii_case(b"MAXLEN") {
            if n < 0 {
                return error("ERR MAXLEN can't be negative");
            }
            maxlen = n as usize;
        } else {
            return syntax();
        }
        i += 2;
    }
    let l = match list(db, &args[1]) {
        Err(e) => return e,
        Ok(None) => {
            return match count {
                Some(_) => array(Vec::new()),
                None => Reply::Bulk(None),
            }
        }
        Ok(Some(l)) => l,
    };
    let len = l.len();
    let scan = if maxlen == 0 { len } else { maxlen.min(len) };
    let want = match count {
        Some(0) => usize::MAX,
        Some(n) => n,
        None => 1,
    };
    let mut skip = rank.unsigned_abs() - 1;
    let mut found = Vec::new();
    let positions: Box<dyn Iterator<Item = (usize, &Vec<u8>)>> = if rank > 0 {
        Box::new(l.iter().enumerate().take(scan))
    } else {
        Box::new(
            l.iter()
                .rev()
                .enumerate()
                .map(move |(j, v)| (len - 1 - j, v))
                .take(scan),
        )
    };
    for (i, v) in positions {
        if *v == args[2] {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            found.push(i);
            if found.len() >= want {
                break;
            }
        }
    }
    match count {
        None => found.first().map_or(Reply::Bulk(None), |&i| integer(i)),
        Some(_) => array(found.into_iter().map(integer).collect()),
    }
}

fn move_generic(db: &mut Db, args: &[Vec<u8>], from_left: bool, to_left: bool) -> Reply {
    let (src, dst) = (&args[1], &args[2]);
    match list(db, src) {
        Err(e) => return e,
        Ok(None) => return Reply::Bulk(None),
        Ok(Some(_)) => {}
    }
    if !matches!(db.value(dst), None | Some(Value::List(_))) {
        return wrongtype();
    }
    let value = match list_mut(db, src, false) {
        Ok(Some(l)) => {
            if from_left {
                l.pop_front()
            } else {
                l.pop_back()
            }
        }
        _ => None,
    };
    let Some(value) = value else {
        return Reply::Bulk(None);
    };
    // The source may now be empty: it is deleted before the destination
    // (possibly the same key) is created again.
    db.settle();
    if let Ok(Some(l)) = list_mut(db, dst, true) {
        if to_left {
            l.push_front(value.clone());
        } else {
            l.push_back(value.clone());
        }
    }
    bulk(&value)
}

/// `RPOPLPUSH source destination`
pub fn rpoplpush(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    move_generic(db, args, false, true)
}

/// `LMOVE source destination LEFT | RIGHT LEFT | RIGHT`
pub fn lmove(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let side = |a: &[u8]| {
        if a.eq_ignore_ascii_case(b"LEFT") {
            Some(true)
        } else if a.eq_ignore_ascii_case(b"RIGHT") {
            Some(false)
        } else {
            None
        }
    };
    match (side(&args[3]), side(&args[4])) {
        (Some(from), Some(to)) => move_generic(db, args, from, to),
        _ => syntax(),
    }
}
