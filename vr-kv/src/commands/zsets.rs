//! Sorted sets: `ZADD` (`NX XX GT LT CH INCR`), `ZINCRBY`, `ZREM`,
//! `ZSCORE`, `ZMSCORE`, `ZCARD`, `ZCOUNT`, `ZRANK`, `ZREVRANK`, `ZRANGE`
//! (by rank or `BYSCORE`, `REV`, `LIMIT`, `WITHSCORES`), `ZREVRANGE`,
//! `ZRANGEBYSCORE`, `ZREVRANGEBYSCORE`, `ZPOPMIN`, `ZPOPMAX`,
//! `ZREMRANGEBYRANK`, `ZREMRANGEBYSCORE`, `ZSCAN`.

use std::ops::Bound;

use super::{
    array, bulk, clamp_range, error, int_arg, integer, parse_float, scan_args, scan_parted,
    scan_reply, score, syntax, zset, zset_mut,
};
use crate::command::{ERR_NOT_FLOAT, ERR_POSITIVE};
use crate::db::{Db, Score, ZSet};
use crate::resp::Reply;

/// `ZADD key [NX | XX] [GT | LT] [CH] [INCR] score member [score member ...]`
pub fn zadd(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < args.len() {
        let a = &args[i];
        if a.eq_ignore_ascii_case(b"NX") {
            nx = true;
        } else if a.eq_ignore_ascii_case(b"XX") {
            xx = true;
        } else if a.eq_ignore_ascii_case(b"GT") {
            gt = true;
        } else if a.eq_ignore_ascii_case(b"LT") {
            lt = true;
        } else if a.eq_ignore_ascii_case(b"CH") {
            ch = true;
        } else if a.eq_ignore_ascii_case(b"INCR") {
            incr = true;
        } else {
            break;
        }
        i += 1;
    }
    let pairs = &args[i..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return syntax();
    }
    if nx && xx {
        return error("ERR XX and NX options at the same time are not compatible");
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return error("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if incr && pairs.len() > 2 {
        return error("ERR INCR option supports a single increment-element pair");
    }
    let mut scores = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks_exact(2) {
        match parse_float(&pair[0]) {
            Some(s) => scores.push((s, pair[1].clone())),
            None => return error(ERR_NOT_FLOAT),
        }
    }
    if let Err(e) = zset(db, &args[1]) {
        return e;
    }
    if xx && !db.contains(&args[1]) {
        return if incr {
            Reply::Bulk(None)
        } else {
            Reply::Integer(0)
        };
    }
    let Ok(Some(z)) = zset_mut(db, &args[1], true) else {
        return Reply::Integer(0);
    };
    let (mut added, mut changed) = (0usize, 0usize);
    let mut incr_result = None;
    for (value, member) in scores {
        let old = z.members.get(&member).copied();
        let new = match (old, incr) {
            (Some(old), true) => old + value,
            _ => value,
        };
        if new.is_nan() {
            return error("ERR resulting score is not a number (NaN)");
        }
        let allowed = match old {
            None => !xx,
            Some(old) => {
                let refused = nx || (gt && new <= old) || (lt && new >= old);
                !refused
            }
        };
        if !allowed {
            continue;
        }
        if old.is_none() {
            added += 1;
        } else if old != Some(new) {
            changed += 1;
        }
        if old != Some(new) {
            z.insert(member, new);
        }
        incr_result = Some(new);
    }
    if incr {
        return incr_result.map_or(Reply::Bulk(None), score);
    }
    integer(if ch { added + changed } else { added })
}

/// `ZINCRBY key increment member`
pub fn zincrby(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let Some(by) = parse_float(&args[2]) else {
        return error(ERR_NOT_FLOAT);
    };
    match zset_mut(db, &args[1], true) {
        Ok(Some(z)) => {
            let new = z.members.get(&args[3]).copied().unwrap_or(0.0) + by;
            if new.is_nan() {
                return error("ERR resulting score is not a number (NaN)");
            }
            z.insert(args[3].clone(), new);
            score(new)
        }
        Ok(None) => Reply::Bulk(None),
        Err(e) => e,
    }
}

/// `ZREM key member [member ...]`
pub fn zrem(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    match zset_mut(db, &args[1], false) {
        Ok(Some(z)) => integer(args[2..].iter().filter(|m| z.remove(m).is_some()).count()),
        Ok(None) => Reply::Integer(0),
        Err(e) => e,
    }
}

/// `ZSCORE key member`
pub fn zscore(db: &Db, args: &[Vec<u8>]) -> Reply {
    match zset(db, &args[1]) {
        Ok(z) => z
            .and_then(|z| z.members.get(&args[2]))
            .map_or(Reply::Bulk(None), |s| score(*s)),
        Err(e) => e,
    }
}

/// `ZMSCORE key member [member ...]`
pub fn zmscore(db: &Db, args: &[Vec<u8>]) -> Reply {
    match zset(db, &args[1]) {
        Ok(z) => array(
            args[2..]
                .iter()
                .map(|m| {
                    z.and_then(|z| z.members.get(m))
                        .map_or(Reply::Bulk(None), |s| score(*s))
                })
                .collect(),
        ),
        Err(e) => e,
    }
}

/// `ZCARD key`
pub fn zcard(db: &Db, args: &[Vec<u8>]) -> Reply {
    match zset(db, &args[1]) {
        Ok(z) => integer(z.map_or(0, ZSet::len)),
        Err(e) => e,
    }
}

/// A score bound: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
fn bound(arg: &[u8]) -> Option<Bound<f64>> {
    match arg.strip_prefix(b"(") {
        Some(rest) => parse_float(rest).map(Bound::Excluded),
        None => parse_float(arg).map(Bound::Included),
    }
}

fn above(s: f64, min: Bound<f64>) -> bool {
    match min {
        Bound::Included(m) => s >= m,
        Bound::Excluded(m) => s > m,
        Bound::Unbounded => true,
    }
}

fn below(s: f64, max: Bound<f64>) -> bool {
    match max {
        Bound::Included(m) => s <= m,
        Bound::Excluded(m) => s < m,
        Bound::Unbounded => true,
    }
}

fn in_range(
    z: &ZSet,
    min: Bound<f64>,
    max: Bound<f64>,
) -> impl DoubleEndedIterator<Item = &(Score, Vec<u8>)> {
    z.order
        .iter()
        .skip_while(move |(s, _)| !above(s.0, min))
        .take_while(move |(s, _)| below(s.0, max))
        .collect::<Vec<_>>()
        .into_iter()
}

/// `ZCOUNT key min max`
pub fn zcount(db: &Db, args: &[Vec<u8>]) -> Reply {
    let (Some(min), Some(max)) = (bound(&args[2]), bound(&args[3])) else {
        return error("ERR min or max is not a float");
    };
    match zset(db, &args[1]) {
        Ok(z) => integer(z.map_or(0, |z| in_range(z, min, max).count())),
        Err(e) => e,
    }
}

fn rank_generic(db: &Db, args: &[Vec<u8>], rev: bool) -> Reply {
    match zset(db, &args[1]) {
        Ok(z) => match z.and_then(|z| z.rank(&args[2]).map(|r| (r, z.len()))) {
            None => Reply::Bulk(None),
            Some((r, len)) => integer(if rev { len - 1 - r } else { r }),
        },
        Err(e) => e,
    }
}

/// `ZRANK key member`
pub fn zrank(db: &Db, args: &[Vec<u8>]) -> Reply {
    rank_generic(db, args, false)
}

/// `ZREVRANK key member`
pub fn zrevrank(db: &Db, args: &[Vec<u8>]) -> Reply {
    rank_generic(db, args, true)
}

fn emit(items: Vec<&(Score, Vec<u8>)>, with_scores: bool) -> Reply {
    let mut out = Vec::new();
    for (s, m) in items {
        out.push(bulk(m));
        if with_scores {
            out.push(score(s.0));
        }
    }
    array(out)
}

/// The common range query: by rank (`start`, `stop` integers) or by
/// score, ascending or reversed, with `LIMIT`.
struct RangeQuery {
    by_score: bool,
    rev: bool,
    with_scores: bool,
    limit: Option<(i64, i64)>,
}

fn range(db: &Db, key: &[u8], a: &[u8], b: &[u8], q: &RangeQuery) -> Reply {
    if q.by_score {
        // Reversed: a is max, b is min.
        let (lo, hi) = if q.rev { (b, a) } else { (a, b) };
        let (Some(min), Some(max)) = (bound(lo), bound(hi)) else {
            return error("ERR min or max is not a float");
        };
        let z = match zset(db, key) {
            Ok(Some(z)) => z,
            Ok(None) => return array(Vec::new()),
            Err(e) => return e,
        };
        let mut items: Vec<_> = in_range(z, min, max).collect();
        if q.rev {
            items.reverse();
        }
        if let Some((offset, count)) = q.limit {
            if offset < 0 {
                return array(Vec::new());
            }
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            let count = if count < 0 {
                usize::MAX
            } else {
                usize::try_from(count).unwrap_or(usize::MAX)
            };
            items = items.into_iter().skip(offset).take(count).collect();
        }
        emit(items, q.with_scores)
    } else {
        let (Ok(start), Ok(stop)) = (int_arg(a), int_arg(b)) else {
            return error(crate::command::ERR_NOT_INTEGER);
        };
        let z = match zset(db, key) {
            Ok(Some(z)) => z,
            Ok(None) => return array(Vec::new()),
            Err(e) => return e,
        };
        let Some((from, to)) = clamp_range(start, stop, z.len()) else {
            return array(Vec::new());
        };
        let items: Vec<_> = if q.rev {
            z.order
                .iter()
                .rev()
                .skip(from)
                .take(to - from + 1)
                .collect()
        } else {
            z.order.iter().skip(from).take(to - from + 1).collect()
        };
        emit(items, q.with_scores)
    }
}

/// Options after the range: `WITHSCORES`, `LIMIT offset count`, and for
/// `ZRANGE` also `BYSCORE`, `BYLEX`, `REV`.
fn options(args: &[Vec<u8>], zrange: bool, q: &mut RangeQuery) -> Result<(), Reply> {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.eq_ignore_ascii_case(b"WITHSCORES") {
            q.with_scores = true;
        } else if a.eq_ignore_ascii_case(b"LIMIT") && i + 2 < args.len() {
            q.limit = Some((int_arg(&args[i + 1])?, int_arg(&args[i + 2])?));
            i += 2;
        } else if zrange && a.eq_ignore_ascii_case(b"BYSCORE") {
            q.by_score = true;
        } else if zrange && a.eq_ignore_ascii_case(b"REV") {
            q.rev = true;
        } else if zrange && a.eq_ignore_ascii_case(b"BYLEX") {
            return Err(error(
                "ERR ZRANGE BYLEX is not supported by vr-kv (docs/kv.md)",
            ));
        } else {
            return Err(syntax());
        }
        i += 1;
    }
    Ok(())
}

/// `ZRANGE key start stop [BYSCORE] [REV] [LIMIT offset count] [WITHSCORES]`
pub fn zrange(db: &Db, args: &[Vec<u8>]) -> Reply {
    let mut q = RangeQuery {
        by_score: false,
        rev: false,
        with_scores: false,
        limit: None,
    };
    if let Err(e) = options(&args[4..], true, &mut q) {
        return e;
    }
    if q.limit.is_some() && !q.by_score {
        return error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
    }
    range(db, &args[1], &args[2], &args[3], &q)
}

/// `ZREVRANGE key start stop [WITHSCORES]`
pub fn zrevrange(db: &Db, args: &[Vec<u8>]) -> Reply {
    let mut q = RangeQuery {
        by_score: false,
        rev: true,
        with_scores: false,
        limit: None,
    };
    match &args[4..] {
        [] => {}
        [w] if w.eq_ignore_ascii_case(b"WITHSCORES") => q.with_scores = true,
        _ => return syntax(),
    }
    range(db, &args[1], &args[2], &args[3], &q)
}

fn byscore(db: &Db, args: &[Vec<u8>], rev: bool) -> Reply {
    let mut q = RangeQuery {
        by_score: true,
        rev,
        with_scores: false,
        limit: None,
    };
    if let Err(e) = options(&args[4..], false, &mut q) {
        return e;
    }
    range(db, &args[1], &args[2], &args[3], &q)
}

/// `ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]`
pub fn zrangebyscore(db: &Db, args: &[Vec<u8>]) -> Reply {
    byscore(db, args, false)
}

/// `ZREVRANGEBYSCORE key max min [WITHSCORES] [LIMIT offset count]`
pub fn zrevrangebyscore(db: &Db, args: &[Vec<u8>]) -> Reply {
    byscore(db, args, true)
}

fn pop(db: &mut Db, args: &[Vec<u8>], max: bool) -> Reply {
    if args.len() > 3 {
        return syntax();
    }
    let count = match args.get(2).map(|c| int_arg(c)) {
        None => 1,
        Some(Ok(n)) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(Ok(_)) => return error(ERR_POSITIVE),
        Some(Err(e)) => return e,
    };
    match zset_mut(db, &args[1], false) {
        Err(e) => e,
        Ok(None) => array(Vec::new()),
        Ok(Some(z)) => {
            let mut out = Vec::new();
            for _ in 0..count {
                let first = if max {
                    z.order.last().cloned()
                } else {
                    z.order.first().cloned()
                };
                let Some((s, m)) = first else { break };
                z.remove(&m);
                out.push(bulk(&m));
                out.push(score(s.0));
            }
            array(out)
        }
    }
}

/// `ZPOPMIN key [count]`
pub fn zpopmin(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    pop(db, args, false)
}

/// `ZPOPMAX key [count]`
pub fn zpopmax(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    pop(db, args, true)
}

/// `ZREMRANGEBYRANK key start stop`
pub fn zremrangebyrank(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let (start, stop) = match (int_arg(&args[2]), int_arg(&args[3])) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    match zset_mut(db, &args[1], false) {
        Err(e) => e,
        Ok(None) => Reply::Integer(0),
        Ok(Some(z)) => {
            let Some((from, to)) = clamp_range(start, stop, z.len()) else {
                return Reply::Integer(0);
            };
            let doomed: Vec<Vec<u8>> = z
                .order
                .iter()
                .skip(from)
                .take(to - from + 1)
                .map(|(_, m)| m.clone())
                .collect();
            for m in &doomed {
                z.remove(m);
            }
            integer(doomed.len())
        }
    }
}

/// `ZREMRANGEBYSCORE key min max`
pub fn zremrangebyscore(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let (Some(min), Some(max)) = (bound(&args[2]), bound(&args[3])) else {
        return error("ERR min or max is not a float");
    };
    match zset_mut(db, &args[1], false) {
        Err(e) => e,
        Ok(None) => Reply::Integer(0),
        Ok(Some(z)) => {
            let doomed: Vec<Vec<u8>> = in_range(z, min, max).map(|(_, m)| m.clone()).collect();
            for m in &doomed {
                z.remove(m);
            }
            integer(doomed.len())
        }
    }
}

/// `ZSCAN key cursor [MATCH pattern] [COUNT count]`
pub fn zscan(db: &Db, args: &[Vec<u8>]) -> Reply {
    let (cursor, pattern, count) = match scan_args(args) {
        Ok(a) => a,
        Err(e) => return e,
    };
    match zset(db, &args[1]) {
        Err(e) => e,
        Ok(None) => scan_reply(0, Vec::new()),
        Ok(Some(z)) => {
            let mut items = Vec::new();
            let next = scan_parted(&z.members, cursor, count, pattern, |m, s| {
                items.push(bulk(m));
                items.push(score(*s));
            });
            scan_reply(next, items)
        }
    }
}
