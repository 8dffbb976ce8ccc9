//! The commands the store runs, one module per family. Each function takes
//! the keyspace and the arguments (the name first, arity already checked
//! against [`crate::command::TABLE`]) and returns Redis 7's reply. A
//! function that returns an error reply has changed nothing.

pub mod hashes;
pub mod keys;
pub mod lists;
pub mod server;
pub mod sets;
pub mod strings;
pub mod zsets;

use crate::command::{ERR_NOT_FLOAT, ERR_NOT_INTEGER, ERR_SYNTAX, ERR_WRONGTYPE};
use crate::db::{Db, List, Parted, Value, ZSet};
use crate::resp::{parse_integer, Reply};

/// Redis's reply when a stored value is not a float (`INCRBYFLOAT`).
pub const ERR_NOT_FLOAT_VALUE: &str = "ERR value is not a valid float";

/// An error reply.
pub fn error(message: &str) -> Reply {
    Reply::Error(message.to_owned())
}

/// `WRONGTYPE ...`.
pub fn wrongtype() -> Reply {
    error(ERR_WRONGTYPE)
}

/// `ERR syntax error`.
pub fn syntax() -> Reply {
    error(ERR_SYNTAX)
}

/// A count as an integer reply.
pub fn integer(count: usize) -> Reply {
    Reply::Integer(i64::try_from(count).unwrap_or(i64::MAX))
}

/// A bulk reply.
pub fn bulk(bytes: &[u8]) -> Reply {
    Reply::Bulk(Some(bytes.to_vec()))
}

/// An array reply.
pub fn array(items: Vec<Reply>) -> Reply {
    Reply::Array(Some(items))
}

/// An array of bulk strings.
pub fn bulks<'a>(items: impl IntoIterator<Item = &'a Vec<u8>>) -> Reply {
    array(items.into_iter().map(|b| bulk(b)).collect())
}

/// An argument that must be an integer, else Redis's error.
pub fn int_arg(arg: &[u8]) -> Result<i64, Reply> {
    parse_integer(arg).ok_or_else(|| error(ERR_NOT_INTEGER))
}

/// A float as Redis's `strtold` reads it (`inf`, `-inf`, `1e3`), never
/// NaN, no spaces.
pub fn parse_float(arg: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(arg).ok()?;
    if text.is_empty() || text.trim() != text {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("nan") || lower.contains("infinity") {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| !f.is_nan())
}

/// An argument that must be a float, else Redis's error.
pub fn float_arg(arg: &[u8]) -> Result<f64, Reply> {
    parse_float(arg).ok_or_else(|| error(ERR_NOT_FLOAT))
}

/// A float as C's `%.17g` prints it: what Redis 7.0 replies for a score.
pub fn fmt_g17(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{:.16e}", x);
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    if !(-4..17).contains(&exp) {
        let mantissa = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = usize::try_from(16 - exp).unwrap_or(0);
        trim_zeros(&format!("{:.*}", decimals, x)).to_owned()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// A float as `INCRBYFLOAT` stores it: no exponent, shortest digits.
pub fn fmt_human(x: f64) -> String {
    let s = format!("{x}");
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A score reply.
pub fn score(x: f64) -> Reply {
    Reply::Bulk(Some(fmt_g17(x).into_bytes()))
}

/// Redis's list/range index rule: negative from the end, clamped.
/// Returns `[start, end]` inclusive, or `None` when empty.
pub fn clamp_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let mut start = if start < 0 { len + start } else { start };
    let mut stop = if stop < 0 { len + stop } else { stop };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len {
        return None;
    }
    if stop >= len {
        stop = len - 1;
    }
    Some((start as usize, stop as usize))
}

/// `MATCH` patterns, as Redis's `stringmatchlen`: `*`, `?`, `[a-z]`,
/// `[^a]`, `\x`.
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    glob_depth(pattern, s, 0)
}

fn glob_depth(mut p: &[u8], mut s: &[u8], depth: usize) -> bool {
    // Redis bounds recursion the same way, against patterns like "*****x".
    if depth > 1000 {
        return false;
    }
    while let Some(&c) = p.first() {
        match c {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                for i in 0..=s.len() {
                    if glob_depth(&p[1..], &s[i..], depth + 1) {
                        return true;
                    }
                }
                return false;
            }
            b'?' => {
                if s.is_empty() {
                    return false;
                }
                s = &s[1..];
                p = &p[1..];
            }
            b'[' => {
                let Some(&ch) = s.first() else {
                    return false;
                };
                p = &p[1..];
                let not = p.first() == Some(&b'^');
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    match p.first() {
                        None => break,
                        Some(b'\\') if p.len() >= 2 => {
                            if p[1] == ch {
                                matched = true;
                            }
                            p = &p[2..];
                        }
                        Some(b']') => break,
                        Some(&lo) if p.len() >= 3 && p[1] == b'-' => {
                            let hi = p[2];
                            let (lo, hi) = if lo > hi { (hi, lo) } else { (lo, hi) };
                            if ch >= lo && ch <= hi {
                                matched = true;
                            }
                            p = &p[3..];
                        }
                        Some(&x) => {
                            if x == ch {
                                matched = true;
                            }
                            p = &p[1..];
                        }
                    }
                }
                if !p.is_empty() {
                    p = &p[1..];
                }
                if matched == not {
                    return false;
                }
                s = &s[1..];
            }
            b'\\' if p.len() >= 2 => {
                if s.first() != Some(&p[1]) {
                    return false;
                }
                s = &s[1..];
                p = &p[2..];
            }
            _ => {
                if s.first() != Some(&c) {
                    return false;
                }
                s = &s[1..];
                p = &p[1..];
            }
        }
    }
    s.is_empty()
}

macro_rules! typed {
    ($get:ident, $get_mut:ident, $variant:ident, $ty:ty) => {
        /// The value at `key` if it has this type; `WRONGTYPE` if another.
        pub fn $get<'a>(db: &'a Db, key: &[u8]) -> Result<Option<&'a $ty>, Reply> {
            match db.value(key) {
                None => Ok(None),
                Some(Value::$variant(v)) => Ok(Some(v)),
                Some(_) => Err(wrongtype()),
            }
        }

        /// The value at `key` to change, created empty if `create` and
        /// absent (an empty collection is deleted after the command).
        pub fn $get_mut<'a>(
            db: &'a mut Db,
            key: &[u8],
            create: bool,
        ) -> Result<Option<&'a mut $ty>, Reply> {
            match db.value(key) {
                Some(Value::$variant(_)) => {}
                Some(_) => return Err(wrongtype()),
                None if create => {
                    db.insert(key, Value::$variant(Default::default()));
                }
                None => return Ok(None),
            }
            match db.value_mut(key) {
                Some(Value::$variant(v)) => Ok(Some(v)),
                _ => Ok(None),
            }
        }
    };
}

typed!(hash, hash_mut, Hash, Parted<Vec<u8>>);
typed!(list, list_mut, List, List);
typed!(set, set_mut, Set, Parted<()>);
typed!(zset, zset_mut, ZSet, ZSet);

/// A `*SCAN` over a parted collection: `cursor` is the part to start at;
/// returns the next cursor (0 when done) and the fields.
pub fn scan_parted<V>(
    parted: &Parted<V>,
    cursor: u64,
    count: usize,
    pattern: Option<&[u8]>,
    mut emit: impl FnMut(&Vec<u8>, &V),
) -> u64 {
    let mut seen = 0;
    let mut part = cursor as i64;
    let parts = crate::db::PARTS as i64;
    while part < parts {
        for (field, value) in parted.part(part) {
            seen += 1;
            if pattern.is_none_or(|p| glob(p, field)) {
                emit(field, value);
            }
        }
        part += 1;
        if seen >= count {
            break;
        }
    }
    if part >= parts {
        0
    } else {
        part as u64
    }
}

/// The `MATCH` and `COUNT` options of `HSCAN`, `SSCAN`, `ZSCAN` from
/// argument 3 on; the cursor at argument 2.
pub fn scan_args(args: &[Vec<u8>]) -> Result<(u64, Option<&[u8]>, usize), Reply> {
    let cursor = std::str::from_utf8(&args[2])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| error("ERR invalid cursor"))?;
    let mut pattern = None;
    let mut count = 10usize;
    let mut i = 3;
    while i < args.len() {
        let option = &args[i];
        let Some(value) = args.get(i + 1) else {
            return Err(syntax());
        };
        if option.eq_ignore_ascii_case(b"MATCH") {
            pattern = Some(value.as_slice());
        } else if option.eq_ignore_ascii_case(b"COUNT") {
            let n = int_arg(value)?;
            if n < 1 {
                return Err(syntax());
            }
            count = usize::try_from(n).unwrap_or(usize::MAX);
        } else {
            return Err(syntax());
        }
        i += 2;
    }
    Ok((cursor, pattern, count))
}

/// The reply of a `*SCAN`: the next cursor and the items.
pub fn scan_reply(cursor: u64, items: Vec<Reply>) -> Reply {
    array(vec![bulk(cursor.to_string().as_bytes()), array(items)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g17_prints_as_c_does() {
        assert_eq!(fmt_g17(1.0), "1");
        assert_eq!(fmt_g17(1.5), "1.5");
        assert_eq!(fmt_g17(0.1), "0.10000000000000001");
        assert_eq!(fmt_g17(-2.25), "-2.25");
        assert_eq!(fmt_g17(1e20), "1e+20");
        assert_eq!(fmt_g17(1e-5), "1.0000000000000001e-05");
        assert_eq!(fmt_g17(123456.0), "123456");
        assert_eq!(fmt_g17(f64::INFINITY), "inf");
    }

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"h?llo", b"hello"));
        assert!(glob(b"h[ae]llo", b"hallo"));
        assert!(!glob(b"h[^e]llo", b"hello"));
        assert!(glob(b"h[a-b]llo", b"hbllo"));
        assert!(glob(b"key:*", b"key:1"));
        assert!(!glob(b"key:*", b"ke"));
        assert!(glob(b"a\\*b", b"a*b"));
    }

    #[test]
    fn ranges_clamp_like_redis() {
        assert_eq!(clamp_range(0, -1, 3), Some((0, 2)));
        assert_eq!(clamp_range(-100, 100, 3), Some((0, 2)));
        assert_eq!(clamp_range(2, 1, 3), None);
        assert_eq!(clamp_range(5, 10, 3), None);
        assert_eq!(clamp_range(0, 0, 0), None);
    }
}
