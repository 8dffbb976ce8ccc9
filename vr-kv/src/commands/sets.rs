//! Sets: `SADD`, `SREM`, `SMEMBERS`, `SISMEMBER`, `SMISMEMBER`, `SCARD`,
//! `SPOP`, `SRANDMEMBER`, `SINTER`, `SUNION`, `SDIFF`, their `*STORE`
//! forms, `SMOVE`, `SSCAN`.
//!
//! `SPOP` and `SRANDMEMBER` choose with a generator seeded by the write
//! sequence number, so every replica chooses the same members.

use std::collections::BTreeSet;

use super::{
    array, bulk, error, int_arg, integer, scan_args, scan_parted, scan_reply, set, set_mut,
    wrongtype,
};
use crate::command::ERR_POSITIVE;
use crate::db::{fnv, Db, Parted, Value};
use crate::resp::Reply;

/// The most members `SRANDMEMBER key -count` returns.
pub const SRANDMEMBER_REPEATS_MAX: usize = 1 << 20;

/// `SADD key member [member ...]`
pub fn sadd(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    match set_mut(db, &args[1], true) {
        Ok(Some(s)) => integer(
            args[2..]
                .iter()
                .filter(|m| s.insert((*m).clone(), ()).is_none())
                .count(),
        ),
        Ok(None) => Reply::Integer(0),
        Err(e) => e,
    }
}

/// `SREM key member [member ...]`
pub fn srem(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    match set_mut(db, &args[1], false) {
        Ok(Some(s)) => integer(args[2..].iter().filter(|m| s.remove(m).is_some()).count()),
        Ok(None) => Reply::Integer(0),
        Err(e) => e,
    }
}

/// `SMEMBERS key`
pub fn smembers(db: &Db, args: &[Vec<u8>]) -> Reply {
    match set(db, &args[1]) {
        Ok(s) => array(
            s.into_iter()
                .flat_map(|s| s.iter())
                .map(|(m, _)| bulk(m))
                .collect(),
        ),
        Err(e) => e,
    }
}

/// `SISMEMBER key member`
pub fn sismember(db: &Db, args: &[Vec<u8>]) -> Reply {
    match set(db, &args[1]) {
        Ok(s) => integer(usize::from(s.is_some_and(|s| s.get(&args[2]).is_some()))),
        Err(e) => e,
    }
}

/// `SMISMEMBER key member [member ...]`
pub fn smismember(db: &Db, args: &[Vec<u8>]) -> Reply {
    match set(db, &args[1]) {
        Ok(s) => array(
            args[2..]
                .iter()
                .map(|m| integer(usize::from(s.is_some_and(|s| s.get(m).is_some()))))
                .collect(),
        ),
        Err(e) => e,
    }
}

/// `SCARD key`
pub fn scard(db: &Db, args: &[Vec<u8>]) -> Reply {
    match set(db, &args[1]) {
        Ok(s) => integer(s.map_or(0, |s| s.len())),
        Err(e) => e,
    }
}

/// A deterministic generator: splitmix64 seeded from the sequence number.
struct Chooser(u64);

impl Chooser {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % n.max(1) as u64) as usize
    }
}

fn chooser(db: &Db, key: &[u8]) -> Chooser {
    Chooser(fnv(&[key, &db.seq.to_le_bytes()]))
}

/// `SPOP key [count]`
pub fn spop(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    if args.len() > 3 {
        return super::syntax();
    }
    let count = match args.get(2).map(|c| int_arg(c)) {
        None => None,
        Some(Ok(n)) if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(_) => return error(ERR_POSITIVE),
    };
    let mut choose = chooser(db, &args[1]);
    match set_mut(db, &args[1], false) {
        Err(e) => e,
        Ok(None) => match count {
            None => Reply::Bulk(None),
            Some(_) => array(Vec::new()),
        },
        Ok(Some(s)) => {
            let mut popped = Vec::new();
            for _ in 0..count.unwrap_or(1).min(s.len()) {
                let n = choose.below(s.len());
                let Some(member) = s.nth(n).map(|(m, _)| m.clone()) else {
                    break;
                };
                s.remove(&member);
                popped.push(member);
            }
            match count {
                None => Reply::Bulk(popped.pop()),
                Some(_) => array(popped.iter().map(|m| bulk(m)).collect()),
            }
        }
    }
}

/// `SRANDMEMBER key [count]`
pub fn srandmember(db: &Db, args: &[Vec<u8>]) -> Reply {
    if args.len() > 3 {
        return super::syntax();
    }
    let count = match args.get(2).map(|c| int_arg(c)) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => return e,
    };
    let s = match set(db, &args[1]) {
        Err(e) => return e,
        Ok(None) => {
            return match count {
                None => Reply::Bulk(None),
                Some(_) => array(Vec::new()),
            }
        }
        Ok(Some(s)) => s,
    };
    let mut choose = chooser(db, &args[1]);
    match count {
        None => Reply::Bulk(s.nth(choose.below(s.len())).map(|(m, _)| m.clone())),
        Some(n) if n < 0 => {
            // Bounded: the reply repeats members, and a count of -2^62
            // would hold the store for ever (Redis would run out of
            // memory building it). Every replica cuts alike.
            let n = usize::try_from(n.unsigned_abs())
                .unwrap_or(usize::MAX)
                .min(SRANDMEMBER_REPEATS_MAX);
            array(
                (0..n)
                    .filter_map(|_| s.nth(choose.below(s.len())).map(|(m, _)| bulk(m)))
                    .collect(),
            )
        }
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n >= s.len() {
                return array(s.iter().map(|(m, _)| bulk(m)).collect());
            }
            let mut picked = BTreeSet::new();
            while picked.len() < n {
                picked.insert(choose.below(s.len()));
            }
            array(
                picked
                    .into_iter()
                    .filter_map(|i| s.nth(i).map(|(m, _)| bulk(m)))
                    .collect(),
            )
        }
    }
}

enum Op {
    Inter,
    Union,
    Diff,
}

fn combine(db: &Db, keys: &[Vec<u8>], op: &Op) -> Result<Vec<Vec<u8>>, Reply> {
    let mut sets: Vec<Option<&Parted<()>>> = Vec::new();
    for key in keys {
        sets.push(set(db, key)?);
    }
    let members = |s: Option<&Parted<()>>| -> BTreeSet<Vec<u8>> {
        s.into_iter()
            .flat_map(|s| s.iter())
            .map(|(m, _)| m.clone())
            .collect()
    };
    let mut result = members(sets[0]);
    for s in &sets[1..] {
        match op {
            Op::Inter => result.retain(|m| s.is_some_and(|s| s.get(m).is_some())),
            Op::Union => result.extend(members(*s)),
            Op::Diff => result.retain(|m| !s.is_some_and(|s| s.get(m).is_some())),
        }
    }
    Ok(result.into_iter().collect())
}

fn combine_reply(db: &Db, keys: &[Vec<u8>], op: &Op) -> Reply {
    match combine(db, keys, op) {
        Ok(members) => array(members.iter().map(|m| bulk(m)).collect()),
        Err(e) => e,
    }
}

/// `SINTER key [key ...]`
pub fn sinter(db: &Db, args: &[Vec<u8>]) -> Reply {
    combine_reply(db, &args[1..], &Op::Inter)
}

/// `SUNION key [key ...]`
pub fn sunion(db: &Db, args: &[Vec<u8>]) -> Reply {
    combine_reply(db, &args[1..], &Op::Union)
}

/// `SDIFF key [key ...]`
pub fn sdiff(db: &Db, args: &[Vec<u8>]) -> Reply {
    combine_reply(db, &args[1..], &Op::Diff)
}

fn store(db: &mut Db, args: &[Vec<u8>], op: &Op) -> Reply {
    let members = match combine(db, &args[2..], op) {
        Ok(m) => m,
        Err(e) => return e,
    };
    db.delete(&args[1]);
    let count = members.len();
    if count > 0 {
        let mut s = Parted::default();
        for m in members {
            s.insert(m, ());
        }
        db.insert(&args[1], Value::Set(s));
    }
    integer(count)
}

/// `SINTERSTORE destination key [key ...]`
pub fn sinterstore(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    store(db, args, &Op::Inter)
}

/// `SUNIONSTORE destination key [key ...]`
pub fn sunionstore(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    store(db, args, &Op::Union)
}

/// `SDIFFSTORE destination key [key ...]`
pub fn sdiffstore(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    store(db, args, &Op::Diff)
}

/// `SMOVE source destination member`
pub fn smove(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let (src, dst, member) = (&args[1], &args[2], &args[3]);
    let present = match set(db, src) {
        Err(e) => return e,
        Ok(None) => return Reply::Integer(0),
        Ok(Some(s)) => s.get(member).is_some(),
    };
    if !matches!(db.value(dst), None | Some(Value::Set(_))) {
        return wrongtype();
    }
    if !present {
        return Reply::Integer(0);
    }
    if src == dst {
        return Reply::Integer(1);
    }
    if let Ok(Some(s)) = set_mut(db, src, false) {
        s.remove(member);
    }
    db.settle();
    if let Ok(Some(s)) = set_mut(db, dst, true) {
        s.insert(member.clone(), ());
    }
    Reply::Integer(1)
}

/// `SSCAN key cursor [MATCH pattern] [COUNT count]`
pub fn sscan(db: &Db, args: &[Vec<u8>]) -> Reply {
    let (cursor, pattern, count) = match scan_args(args) {
        Ok(a) => a,
        Err(e) => return e,
    };
    match set(db, &args[1]) {
        Err(e) => e,
        Ok(None) => scan_reply(0, Vec::new()),
        Ok(Some(s)) => {
            let mut items = Vec::new();
            let next = scan_parted(s, cursor, count, pattern, |m, _| items.push(bulk(m)));
            scan_reply(next, items)
        }
    }
}
