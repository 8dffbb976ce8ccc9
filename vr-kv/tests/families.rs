//! Unit tests of the store, per command family: Redis 7's replies, errors
//! and edge cases; key expiry on log time; transactions; pages.

use vr_core::Service;
use vr_kv::batch::{decode_results, encode_op, Batch, BatchResult, Entry};
use vr_kv::{Reply, Store};

fn args(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn run(s: &mut Store, words: &[&str]) -> Reply {
    s.apply(&args(words))
}

fn ok() -> Reply {
    Reply::ok()
}
fn int(n: i64) -> Reply {
    Reply::Integer(n)
}
fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}
fn nil() -> Reply {
    Reply::Bulk(None)
}
fn arr(items: &[&str]) -> Reply {
    Reply::Array(Some(items.iter().map(|s| bulk(s)).collect()))
}
fn err(s: &str) -> Reply {
    Reply::Error(s.to_owned())
}
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

#[test]
fn strings() {
    let mut s = Store::new();
    assert_eq!(run(&mut s, &["SETNX", "k", "1"]), int(1));
    assert_eq!(run(&mut s, &["SETNX", "k", "2"]), int(0));
    assert_eq!(run(&mut s, &["DECR", "k"]), int(0));
    assert_eq!(run(&mut s, &["DECRBY", "k", "5"]), int(-5));
    assert_eq!(run(&mut s, &["INCRBYFLOAT", "k", "1.5"]), bulk("-3.5"));
    assert_eq!(
        run(&mut s, &["INCRBYFLOAT", "k", "abc"]),
        err("ERR value is not a valid float")
    );
    assert_eq!(run(&mut s, &["STRLEN", "k"]), int(4));
    assert_eq!(run(&mut s, &["GETSET", "k", "hello"]), bulk("-3.5"));
    assert_eq!(run(&mut s, &["GETRANGE", "k", "1", "-2"]), bulk("ell"));
    assert_eq!(run(&mut s, &["GETRANGE", "k", "-1", "-5"]), bulk(""));
    assert_eq!(run(&mut s, &["SETRANGE", "k", "7", "xy"]), int(9));
    assert_eq!(run(&mut s, &["GET", "k"]), bulk("hello\0\0xy"));
    assert_eq!(
        run(&mut s, &["SETRANGE", "k", "-1", "x"]),
        err("ERR offset is out of range")
    );
    assert_eq!(run(&mut s, &["GETDEL", "k"]), bulk("hello\0\0xy"));
    assert_eq!(run(&mut s, &["GETDEL", "k"]), nil());
    assert_eq!(run(&mut s, &["MSETNX", "a", "1", "b", "2"]), int(1));
    assert_eq!(run(&mut s, &["MSETNX", "b", "1", "c", "2"]), int(0));
    assert_eq!(
        run(&mut s, &["MGET", "a", "b", "c"]),
        Reply::Array(Some(vec![bulk("1"), bulk("2"), nil()]))
    );
    assert_eq!(
        run(&mut s, &["MSET", "a"]),
        err("ERR wrong number of arguments for 'mset' command")
    );
    // Another type: WRONGTYPE for strings commands, nil in MGET.
    assert_eq!(run(&mut s, &["LPUSH", "l", "x"]), int(1));
    assert_eq!(run(&mut s, &["GET", "l"]), err(WRONGTYPE));
    assert_eq!(run(&mut s, &["INCR", "l"]), err(WRONGTYPE));
    assert_eq!(run(&mut s, &["APPEND", "l", "x"]), err(WRONGTYPE));
    assert_eq!(run(&mut s, &["MGET", "l"]), Reply::Array(Some(vec![nil()])));
    assert_eq!(run(&mut s, &["SET", "l", "v", "GET"]), err(WRONGTYPE));
    assert_eq!(
        run(&mut s, &["SET", "l", "v"]),
        ok(),
        "SET replaces any type"
    );
    assert_eq!(run(&mut s, &["TYPE", "l"]), Reply::Simple("string".into()));
}

#[test]
fn expiry_follows_the_log_time() {
    let mut s = Store::new();
    s.advance_time(1_000_000);
    assert_eq!(run(&mut s, &["SET", "k", "v", "EX", "10"]), ok());
    assert_eq!(run(&mut s, &["TTL", "k"]), int(10));
    assert_eq!(run(&mut s, &["PTTL", "k"]), int(10_000));
    assert_eq!(run(&mut s, &["EXPIRETIME", "k"]), int(1010));
    assert_eq!(
        run(&mut s, &["SET", "p", "v", "PX", "0"]),
        err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(run(&mut s, &["SET", "k2", "v", "PXAT", "1005000"]), ok());
    assert_eq!(run(&mut s, &["TTL", "nope"]), int(-2));
    assert_eq!(run(&mut s, &["SET", "forever", "v"]), ok());
    assert_eq!(run(&mut s, &["TTL", "forever"]), int(-1));
    // INCR keeps the TTL, SET without KEEPTTL clears it.
    assert_eq!(run(&mut s, &["SET", "n", "1", "EX", "100"]), ok());
    assert_eq!(run(&mut s, &["INCR", "n"]), int(2));
    assert_eq!(run(&mut s, &["TTL", "n"]), int(100));
    assert_eq!(run(&mut s, &["SET", "n", "5", "KEEPTTL"]), ok());
    assert_eq!(run(&mut s, &["TTL", "n"]), int(100));
    assert_eq!(run(&mut s, &["SET", "n", "5"]), ok());
    assert_eq!(run(&mut s, &["TTL", "n"]), int(-1));
    // EXPIRE options.
    assert_eq!(run(&mut s, &["EXPIRE", "forever", "50", "XX"]), int(0));
    assert_eq!(run(&mut s, &["EXPIRE", "forever", "50", "NX"]), int(1));
    assert_eq!(run(&mut s, &["EXPIRE", "forever", "40", "GT"]), int(0));
    assert_eq!(run(&mut s, &["EXPIRE", "forever", "40", "LT"]), int(1));
    assert_eq!(
        run(&mut s, &["EXPIRE", "forever", "1", "NX", "XX"]),
        err("ERR NX and XX, GT or LT options at the same time are not compatible")
    );
    assert_eq!(run(&mut s, &["PERSIST", "forever"]), int(1));
    assert_eq!(run(&mut s, &["PERSIST", "forever"]), int(0));
    assert_eq!(run(&mut s, &["GETEX", "forever", "PX", "500"]), bulk("v"));
    assert_eq!(run(&mut s, &["PTTL", "forever"]), int(500));
    assert_eq!(run(&mut s, &["GETEX", "forever", "PERSIST"]), bulk("v"));
    assert_eq!(run(&mut s, &["PTTL", "forever"]), int(-1));
    // A past deadline deletes at once.
    assert_eq!(run(&mut s, &["EXPIRE", "forever", "-1"]), int(1));
    assert_eq!(run(&mut s, &["EXISTS", "forever"]), int(0));
    // Time moves with the log: k2 is gone at 1005 s, k at 1010 s.
    s.advance_time(1_005_000);
    assert_eq!(run(&mut s, &["GET", "k2"]), nil());
    assert_eq!(run(&mut s, &["GET", "k"]), bulk("v"));
    assert_eq!(run(&mut s, &["TTL", "k"]), int(5));
    // The log time never goes back: an op stamped earlier changes nothing.
    s.advance_time(3);
    assert_eq!(s.log_time(), 1_005_000);
    s.advance_time(1_010_000);
    assert_eq!(run(&mut s, &["GET", "k"]), nil());
    assert_eq!(run(&mut s, &["KEYS", "*"]), arr(&["n"]).sorted_keys());
}

trait Sorted {
    fn sorted_keys(self) -> Reply;
}
impl Sorted for Reply {
    fn sorted_keys(self) -> Reply {
        match self {
            Reply::Array(Some(mut v)) => {
                v.sort_by_key(|r| format!("{r:?}"));
                Reply::Array(Some(v))
            }
            other => other,
        }
    }
}

fn sorted(r: Reply) -> Reply {
    r.sorted_keys()
}

/// Executes one op stamped `time_ms` holding `entries`; the replies.
fn execute(s: &mut Store, time_ms: u64, entries: Vec<Entry>) -> Vec<Vec<u8>> {
    let op = encode_op(&Batch { time_ms, entries });
    let n = s.op_number() + 1;
    let result = s.execute(n, &op);
    let BatchResult::Replies(replies) = decode_results(&result).unwrap() else {
        panic!("rejected")
    };
    replies.into_iter().map(<[u8]>::to_vec).collect()
}

#[test]
fn replicas_expire_the_same_keys_at_the_same_op_whatever_their_clocks() {
    let mut a = Store::new();
    let ops = [
        (
            1_000,
            vec![Entry::Command(args(&["SET", "k", "v", "PX", "100"]))],
        ),
        // A node with a slow clock: the log time stays at 1000.
        (900, vec![Entry::Command(args(&["GET", "k"]))]),
        (1_099, vec![Entry::Command(args(&["GET", "k"]))]),
        (1_100, vec![Entry::Command(args(&["GET", "k"]))]),
    ];
    let mut b = a.clone();
    let mut replies = Vec::new();
    for (time, entries) in &ops {
        let ra = execute(&mut a, *time, entries.clone());
        let rb = execute(&mut b, *time, entries.clone());
        assert_eq!(ra, rb);
        replies.push(ra.concat());
    }
    assert_eq!(replies[1], b"$1\r\nv\r\n");
    assert_eq!(replies[2], b"$1\r\nv\r\n");
    assert_eq!(replies[3], b"$-1\r\n");
    assert_eq!(a, b);
}

#[test]
fn active_expiry_is_an_op_in_the_log() {
    let mut s = Store::new();
    execute(&mut s, 1_000, vec![]);
    for i in 0..100 {
        run(&mut s, &["SET", &format!("k{i}"), "v", "PX", "10"]);
    }
    assert_eq!(s.len(), 100);
    // An op with no command sweeps at most SWEEP_PER_OP due keys.
    execute(&mut s, 2_000, vec![]);
    assert_eq!(s.len(), 100 - vr_kv::store::SWEEP_PER_OP);
    execute(&mut s, 2_001, vec![]);
    assert_eq!(s.len(), 0);
}

#[test]
fn a_read_of_a_key_due_at_its_stamp_is_not_read_only() {
    let mut s = Store::new();
    execute(
        &mut s,
        1_000,
        vec![Entry::Command(args(&["SET", "k", "v", "PX", "100"]))],
    );
    let read = |time| {
        encode_op(&Batch {
            time_ms: time,
            entries: vec![Entry::Command(args(&["GET", "k"]))],
        })
    };
    assert!(s.is_read_only(&read(1_050)));
    let result = s.query(&read(1_050));
    let BatchResult::Replies(r) = decode_results(&result).unwrap() else {
        panic!()
    };
    assert_eq!(r[0], b"$1\r\nv\r\n");
    // Due by the stamp: it must go through the log, which deletes it.
    assert!(!s.is_read_only(&read(1_100)));
    let keys = encode_op(&Batch {
        time_ms: 1_100,
        entries: vec![Entry::Command(args(&["KEYS", "*"]))],
    });
    assert!(!s.is_read_only(&keys));
}

#[test]
fn keyspace() {
    let mut s = Store::new();
    run(&mut s, &["SET", "a", "1"]);
    run(&mut s, &["HSET", "h", "f", "v"]);
    run(&mut s, &["SADD", "s", "m"]);
    run(&mut s, &["ZADD", "z", "1", "m"]);
    run(&mut s, &["RPUSH", "l", "x"]);
    for (key, kind) in [
        ("a", "string"),
        ("h", "hash"),
        ("s", "set"),
        ("z", "zset"),
        ("l", "list"),
        ("x", "none"),
    ] {
        assert_eq!(run(&mut s, &["TYPE", key]), Reply::Simple(kind.into()));
    }
    assert_eq!(
        sorted(run(&mut s, &["KEYS", "*"])),
        sorted(arr(&["a", "h", "s", "z", "l"]))
    );
    assert_eq!(
        run(&mut s, &["KEYS", "[hs]"]).sorted_keys(),
        arr(&["h", "s"]).sorted_keys()
    );
    assert_eq!(run(&mut s, &["DBSIZE"]), int(5));
    assert_eq!(
        run(&mut s, &["RENAME", "nope", "x"]),
        err("ERR no such key")
    );
    assert_eq!(run(&mut s, &["RENAME", "h", "h2"]), ok());
    assert_eq!(run(&mut s, &["HGET", "h2", "f"]), bulk("v"));
    assert_eq!(run(&mut s, &["RENAMENX", "h2", "a"]), int(0));
    assert_eq!(run(&mut s, &["COPY", "h2", "h3"]), int(1));
    assert_eq!(run(&mut s, &["COPY", "h2", "h3"]), int(0));
    assert_eq!(run(&mut s, &["HSET", "h3", "g", "w"]), int(1));
    assert_eq!(
        run(&mut s, &["HLEN", "h2"]),
        int(1),
        "a copy is independent"
    );
    assert_eq!(run(&mut s, &["UNLINK", "h2", "h3", "nope"]), int(2));
    // SCAN visits every key exactly once.
    for i in 0..500 {
        run(&mut s, &["SET", &format!("key:{i}"), "v"]);
    }
    let mut cursor = "0".to_owned();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let Reply::Array(Some(parts)) =
            run(&mut s, &["SCAN", &cursor, "MATCH", "key:*", "COUNT", "50"])
        else {
            panic!()
        };
        let (Reply::Bulk(Some(next)), Reply::Array(Some(keys))) = (&parts[0], &parts[1]) else {
            panic!()
        };
        for k in keys {
            let Reply::Bulk(Some(k)) = k else { panic!() };
            assert!(seen.insert(k.clone()), "a key twice");
        }
        cursor = String::from_utf8(next.clone()).unwrap();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 500);
    let Reply::Array(Some(parts)) = run(&mut s, &["SCAN", "0", "TYPE", "list", "COUNT", "100000"])
    else {
        panic!()
    };
    assert_eq!(parts[1], arr(&["l"]));
    assert_eq!(run(&mut s, &["FLUSHALL"]), ok());
    assert_eq!(run(&mut s, &["DBSIZE"]), int(0));
}

#[test]
fn hashes() {
    let mut s = Store::new();
    assert_eq!(run(&mut s, &["HSET", "h", "a", "1", "b", "2"]), int(2));
    assert_eq!(run(&mut s, &["HSET", "h", "a", "3"]), int(0));
    assert_eq!(
        run(&mut s, &["HSET", "h", "a"]),
        err("ERR wrong number of arguments for 'hset' command")
    );
    assert_eq!(run(&mut s, &["HMSET", "h", "c", "x"]), ok());
    assert_eq!(run(&mut s, &["HSETNX", "h", "c", "y"]), int(0));
    assert_eq!(
        run(&mut s, &["HMGET", "h", "a", "z"]),
        Reply::Array(Some(vec![bulk("3"), nil()]))
    );
    assert_eq!(run(&mut s, &["HINCRBY", "h", "a", "10"]), int(13));
    assert_eq!(
        run(&mut s, &["HINCRBY", "h", "c", "1"]),
        err("ERR hash value is not an integer")
    );
    assert_eq!(run(&mut s, &["HINCRBYFLOAT", "h", "f", "2.5"]), bulk("2.5"));
    assert_eq!(run(&mut s, &["HSTRLEN", "h", "f"]), int(3));
    assert_eq!(run(&mut s, &["HLEN", "h"]), int(4));
    assert_eq!(
        sorted(run(&mut s, &["HKEYS", "h"])),
        sorted(arr(&["a", "b", "c", "f"]))
    );
    assert_eq!(
        run(&mut s, &["HDEL", "h", "a", "b", "c", "f", "zz"]),
        int(4)
    );
    assert_eq!(
        run(&mut s, &["EXISTS", "h"]),
        int(0),
        "an emptied hash is deleted"
    );
    run(&mut s, &["SET", "str", "v"]);
    assert_eq!(run(&mut s, &["HSET", "str", "a", "1"]), err(WRONGTYPE));
    assert_eq!(run(&mut s, &["HGETALL", "nope"]), arr(&[]));
}

#[test]
fn lists() {
    let mut s = Store::new();
    assert_eq!(run(&mut s, &["RPUSH", "l", "a", "b", "c"]), int(3));
    assert_eq!(run(&mut s, &["LPUSH", "l", "z"]), int(4));
    assert_eq!(
        run(&mut s, &["LRANGE", "l", "0", "-1"]),
        arr(&["z", "a", "b", "c"])
    );
    assert_eq!(run(&mut s, &["LRANGE", "l", "-2", "100"]), arr(&["b", "c"]));
    assert_eq!(run(&mut s, &["LINDEX", "l", "-1"]), bulk("c"));
    assert_eq!(
        run(&mut s, &["LSET", "l", "9", "x"]),
        err("ERR index out of range")
    );
    assert_eq!(
        run(&mut s, &["LSET", "nope", "0", "x"]),
        err("ERR no such key")
    );
    assert_eq!(run(&mut s, &["LINSERT", "l", "BEFORE", "b", "q"]), int(5));
    assert_eq!(
        run(&mut s, &["LINSERT", "l", "AFTER", "nope", "q"]),
        int(-1)
    );
    assert_eq!(run(&mut s, &["LREM", "l", "0", "q"]), int(1));
    assert_eq!(run(&mut s, &["LPOS", "l", "b"]), int(2));
    assert_eq!(run(&mut s, &["LPOP", "l", "2"]), arr(&["z", "a"]));
    assert_eq!(run(&mut s, &["RPOP", "l"]), bulk("c"));
    assert_eq!(
        run(&mut s, &["LPOP", "l", "-1"]),
        err("ERR value is out of range, must be positive")
    );
    assert_eq!(
        run(&mut s, &["LMOVE", "l", "m", "LEFT", "RIGHT"]),
        bulk("b")
    );
    assert_eq!(run(&mut s, &["EXISTS", "l"]), int(0));
    assert_eq!(run(&mut s, &["LPOP", "l"]), nil());
    assert_eq!(run(&mut s, &["LPOP", "l", "1"]), Reply::Array(None));
    assert_eq!(run(&mut s, &["LPUSHX", "l", "x"]), int(0));
    // Long lists: chunks, order kept across pushes at both ends, inserts
    // and trims.
    for i in 0..1000 {
        run(&mut s, &["RPUSH", "big", &i.to_string()]);
        run(&mut s, &["LPUSH", "big", &(-i - 1).to_string()]);
    }
    assert_eq!(run(&mut s, &["LLEN", "big"]), int(2000));
    assert_eq!(run(&mut s, &["LINDEX", "big", "1000"]), bulk("0"));
    assert_eq!(
        run(&mut s, &["LRANGE", "big", "998", "1001"]),
        arr(&["-2", "-1", "0", "1"])
    );
    for _ in 0..300 {
        run(&mut s, &["LINSERT", "big", "AFTER", "0", "i"]);
    }
    assert_eq!(run(&mut s, &["LINDEX", "big", "1301"]), bulk("1"));
    assert_eq!(run(&mut s, &["LTRIM", "big", "1000", "1300"]), ok());
    assert_eq!(run(&mut s, &["LLEN", "big"]), int(301));
    assert_eq!(run(&mut s, &["LINDEX", "big", "0"]), bulk("0"));
}

#[test]
fn sets() {
    let mut s = Store::new();
    assert_eq!(run(&mut s, &["SADD", "a", "1", "2", "3", "3"]), int(3));
    assert_eq!(run(&mut s, &["SADD", "b", "3", "4"]), int(2));
    assert_eq!(run(&mut s, &["SISMEMBER", "a", "1"]), int(1));
    assert_eq!(
        run(&mut s, &["SMISMEMBER", "a", "1", "9"]),
        Reply::Array(Some(vec![int(1), int(0)]))
    );
    assert_eq!(run(&mut s, &["SINTER", "a", "b"]), arr(&["3"]));
    assert_eq!(
        sorted(run(&mut s, &["SUNION", "a", "b"])),
        sorted(arr(&["1", "2", "3", "4"]))
    );
    assert_eq!(
        sorted(run(&mut s, &["SDIFF", "a", "b"])),
        sorted(arr(&["1", "2"]))
    );
    assert_eq!(run(&mut s, &["SINTERSTORE", "c", "a", "b"]), int(1));
    assert_eq!(run(&mut s, &["SMOVE", "a", "c", "1"]), int(1));
    assert_eq!(run(&mut s, &["SCARD", "c"]), int(2));
    assert_eq!(run(&mut s, &["SREM", "a", "2", "9"]), int(1));
    // SPOP takes the same member on every replica.
    let mut other = s.clone();
    assert_eq!(run(&mut s, &["SPOP", "c"]), run(&mut other, &["SPOP", "c"]));
    assert_eq!(run(&mut s, &["SCARD", "c"]), int(1));
    assert_eq!(
        run(&mut s, &["SPOP", "c", "5"]).sorted_keys(),
        run(&mut other, &["SPOP", "c", "5"]).sorted_keys()
    );
    assert_eq!(run(&mut s, &["EXISTS", "c"]), int(0));
    run(&mut s, &["SET", "str", "v"]);
    assert_eq!(run(&mut s, &["SADD", "str", "1"]), err(WRONGTYPE));
    assert_eq!(run(&mut s, &["SINTER", "a", "str"]), err(WRONGTYPE));
}

#[test]
fn sorted_sets() {
    let mut s = Store::new();
    assert_eq!(
        run(&mut s, &["ZADD", "z", "1", "a", "2", "b", "2", "c"]),
        int(3)
    );
    assert_eq!(
        run(&mut s, &["ZADD", "z", "XX", "CH", "5", "a", "1", "new"]),
        int(1)
    );
    assert_eq!(
        run(&mut s, &["ZADD", "z", "NX", "XX", "1", "a"]),
        err("ERR XX and NX options at the same time are not compatible")
    );
    assert_eq!(run(&mut s, &["ZADD", "z", "GT", "1", "a"]), int(0));
    assert_eq!(run(&mut s, &["ZSCORE", "z", "a"]), bulk("5"));
    assert_eq!(run(&mut s, &["ZADD", "z", "INCR", "0.5", "a"]), bulk("5.5"));
    assert_eq!(
        run(&mut s, &["ZINCRBY", "z", "0.1", "b"]),
        bulk("2.1000000000000001")
    );
    assert_eq!(
        run(&mut s, &["ZADD", "z", "x", "a"]),
        err("ERR value is not a valid float")
    );
    assert_eq!(
        run(&mut s, &["ZRANGE", "z", "0", "-1"]),
        arr(&["c", "b", "a"])
    );
    assert_eq!(
        run(&mut s, &["ZRANGE", "z", "0", "0", "WITHSCORES"]),
        arr(&["c", "2"])
    );
    assert_eq!(run(&mut s, &["ZREVRANGE", "z", "0", "0"]), arr(&["a"]));
    assert_eq!(
        run(&mut s, &["ZRANGEBYSCORE", "z", "(2", "+inf"]),
        arr(&["b", "a"])
    );
    assert_eq!(
        run(
            &mut s,
            &["ZRANGE", "z", "+inf", "-inf", "BYSCORE", "REV", "LIMIT", "0", "1"]
        ),
        arr(&["a"])
    );
    assert_eq!(run(&mut s, &["ZCOUNT", "z", "-inf", "2.1"]), int(2));
    assert_eq!(run(&mut s, &["ZRANK", "z", "a"]), int(2));
    assert_eq!(run(&mut s, &["ZREVRANK", "z", "a"]), int(0));
    assert_eq!(run(&mut s, &["ZPOPMIN", "z"]), arr(&["c", "2"]));
    assert_eq!(
        run(&mut s, &["ZPOPMAX", "z", "5"]),
        arr(&["a", "5.5", "b", "2.1000000000000001"])
    );
    assert_eq!(run(&mut s, &["EXISTS", "z"]), int(0));
    assert_eq!(run(&mut s, &["ZPOPMIN", "z"]), arr(&[]));
    for i in 0..10 {
        run(&mut s, &["ZADD", "r", &i.to_string(), &format!("m{i}")]);
    }
    assert_eq!(run(&mut s, &["ZREMRANGEBYRANK", "r", "0", "2"]), int(3));
    assert_eq!(run(&mut s, &["ZREMRANGEBYSCORE", "r", "8", "(100"]), int(2));
    assert_eq!(run(&mut s, &["ZCARD", "r"]), int(5));
}

#[test]
fn transactions_run_whole_and_watch_aborts_after_a_change() {
    let mut s = Store::new();
    let tx = |watch_seq: u64, watched: &[&str], commands: &[&[&str]]| Entry::Transaction {
        watched: watched
            .iter()
            .map(|k| (watch_seq, k.as_bytes().to_vec()))
            .collect(),
        commands: commands.iter().map(|c| args(c)).collect(),
    };
    let r = execute(
        &mut s,
        0,
        vec![tx(
            0,
            &[],
            &[&["SET", "k", "1"], &["INCR", "k"], &["LPUSH", "k", "x"]],
        )],
    );
    // The failing command does not stop the others (as Redis's EXEC).
    assert_eq!(r[0], b"*3\r\n+OK\r\n:2\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    let seq = s.seq();
    // Watched, untouched: runs.
    let r = execute(&mut s, 0, vec![tx(seq, &["k"], &[&["INCR", "k"]])]);
    assert_eq!(r[0], b"*1\r\n:3\r\n");
    // Changed after the watch: nil, nothing runs.
    let r = execute(
        &mut s,
        0,
        vec![
            Entry::Command(args(&["SET", "other", "1"])),
            tx(seq, &["k"], &[&["INCR", "k"]]),
        ],
    );
    assert_eq!(r[1], b"*-1\r\n");
    assert_eq!(s.get(b"k"), Some(&b"3"[..]));
    // A watched key deleted counts as changed, as does one created.
    let seq = s.seq();
    execute(&mut s, 0, vec![Entry::Command(args(&["DEL", "k"]))]);
    let r = execute(&mut s, 0, vec![tx(seq, &["k"], &[&["SET", "k", "9"]])]);
    assert_eq!(r[0], b"*-1\r\n");
    let seq = s.seq();
    execute(
        &mut s,
        0,
        vec![Entry::Command(args(&["SET", "fresh", "1"]))],
    );
    let r = execute(&mut s, 0, vec![tx(seq, &["fresh"], &[&["GET", "fresh"]])]);
    assert_eq!(r[0], b"*-1\r\n");
}

/// Reads every page of `s` as a checkpoint would.
fn pages(s: &Store) -> Vec<Vec<u8>> {
    (0..s.page_count())
        .map(|i| {
            let mut out = Vec::new();
            s.read_page(i, &mut out);
            out
        })
        .collect()
}

#[test]
fn a_write_to_a_large_hash_changes_few_small_pages() {
    let mut s = Store::new();
    for chunk in 0..100 {
        let mut words = vec!["HSET".to_owned(), "big".to_owned()];
        for i in 0..1000 {
            words.push(format!("field:{}", chunk * 1000 + i));
            words.push(format!("value:{i}"));
        }
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        run(&mut s, &words);
    }
    for words in [&["SADD", "set"][..], &["ZADD", "zs"], &["RPUSH", "list"]] {
        let mut all: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        for i in 0..100_000 {
            if words[0] == "ZADD" {
                all.push(i.to_string());
            }
            all.push(format!("m{i}"));
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run(&mut s, &all);
    }
    assert_eq!(run(&mut s, &["HLEN", "big"]), int(100_000));
    let mut changed = Vec::new();
    s.take_changed_pages(&mut changed);
    let before = pages(&s);
    for write in [
        &["HSET", "big", "field:5", "new"][..],
        &["SADD", "set", "m-new"],
        &["ZADD", "zs", "7", "m5"],
        &["RPUSH", "list", "tail"],
        &["LSET", "list", "50000", "mid"],
    ] {
        run(&mut s, write);
        changed.clear();
        s.take_changed_pages(&mut changed);
        // The key's page, one element page, the meta page.
        assert!(changed.len() <= 3, "{write:?} changed {changed:?}");
        for &page in &changed {
            let mut out = Vec::new();
            s.read_page(page, &mut out);
            assert!(
                out.len() < 16 * 1024,
                "{write:?}: page {page} is {} bytes",
                out.len()
            );
        }
    }
    let after = pages(&s);
    let differing = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(differing <= 5 * 3, "{differing} pages differ");
}

#[test]
fn installed_pages_rebuild_the_same_store() {
    let mut s = Store::new();
    s.advance_time(5_000);
    run(&mut s, &["SET", "a", "1", "PX", "1000"]);
    run(&mut s, &["HSET", "h", "f", "v", "g", "w"]);
    for i in 0..300 {
        run(&mut s, &["RPUSH", "l", &i.to_string()]);
    }
    run(&mut s, &["LINSERT", "l", "BEFORE", "150", "x"]);
    run(&mut s, &["SADD", "s", "m", "n"]);
    run(&mut s, &["ZADD", "z", "1.5", "m", "-2", "n"]);
    let source = pages(&s);
    let refs: Vec<&[u8]> = source.iter().map(Vec::as_slice).collect();
    let mut copy = Store::new();
    copy.install_pages(&refs);
    assert_eq!(pages(&copy), source, "the copy's pages are the source's");
    for words in [
        &["LRANGE", "l", "148", "152"][..],
        &["PTTL", "a"],
        &["HGETALL", "h"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["SMEMBERS", "s"],
        &["DBSIZE"],
    ] {
        assert_eq!(copy.read(&args(words)), s.read(&args(words)), "{words:?}");
    }
    // Both go on alike.
    for store in [&mut s, &mut copy] {
        run(store, &["SPOP", "s"]);
        run(store, &["LPUSH", "l", "head"]);
    }
    assert_eq!(pages(&copy), pages(&s));
}

/// A random command of any family, from a small key space so that types
/// collide and collections grow and shrink.
fn random_command(r: &mut u64) -> Vec<Vec<u8>> {
    let mut next = |n: u64| {
        *r ^= *r << 13;
        *r ^= *r >> 7;
        *r ^= *r << 17;
        *r % n
    };
    let key = format!("k{}", next(12));
    let field = format!("f{}", next(300));
    let n = next(50).to_string();
    let other = format!("k{}", next(12));
    let words: Vec<String> = match next(32) {
        20 => vec!["LSET".into(), key, next(6).to_string(), n],
        21 => vec!["LREM".into(), key, "0".into(), field],
        22 => vec!["SMOVE".into(), key, other, field],
        23 => vec!["LMOVE".into(), key, other, "LEFT".into(), "RIGHT".into()],
        24 => vec!["ZREM".into(), key, field],
        25 => vec!["HINCRBY".into(), key, field, n],
        26 => vec!["SINTERSTORE".into(), key, other, format!("k{}", next(12))],
        27 => vec!["EXPIRE".into(), key, (next(3) + 1).to_string()],
        28 => vec!["GETDEL".into(), key],
        29 => vec!["PERSIST".into(), key],
        30 => vec!["RENAMENX".into(), key, other],
        0 => vec!["SET".into(), key, n],
        1 => vec![
            "SET".into(),
            key,
            n,
            "PX".into(),
            (next(3000) + 1).to_string(),
        ],
        2 => vec!["DEL".into(), key],
        3 | 4 => vec!["HSET".into(), key, field, n],
        5 => vec!["HDEL".into(), key, field],
        6 | 7 => vec!["RPUSH".into(), key, field, n],
        8 => vec!["LPUSH".into(), key, field],
        9 => vec!["LPOP".into(), key, next(5).to_string()],
        10 => vec!["LINSERT".into(), key, "BEFORE".into(), field, n],
        11 => vec!["LTRIM".into(), key, next(5).to_string(), "-3".into()],
        12 | 13 => vec!["SADD".into(), key, field],
        14 => vec!["SPOP".into(), key],
        15 | 16 => vec!["ZADD".into(), key, n, field],
        17 => vec!["ZPOPMIN".into(), key, next(4).to_string()],
        18 => vec!["RENAME".into(), key, format!("k{}", next(12))],
        _ => vec![
            "COPY".into(),
            key,
            format!("k{}", next(12)),
            "REPLACE".into(),
        ],
    };
    words.into_iter().map(String::into_bytes).collect()
}

/// Incremental checkpoints rest on the store naming every page a write
/// changed (§5.1, `Service::take_changed_pages`): a page it does not name
/// must be byte for byte what it was, or a lagging replica would keep a
/// stale page. And pages installed anywhere rebuild the same state.
#[test]
fn changed_pages_cover_every_change_and_installs_agree() {
    let mut r = 0x2545_f491_4f6c_dd1d_u64;
    let mut s = Store::new();
    let mut time = 1_000_000;
    let mut snapshot = pages(&s);
    let mut changed = Vec::new();
    s.take_changed_pages(&mut changed);
    for round in 0..100 {
        time += 500;
        let entries = (0..40)
            .map(|_| Entry::Command(random_command(&mut r)))
            .collect();
        execute(&mut s, time, entries);
        changed.clear();
        s.take_changed_pages(&mut changed);
        let now = pages(&s);
        for (i, (old, new)) in snapshot.iter().zip(&now).enumerate() {
            if old != new {
                assert!(
                    changed.contains(&(i as u64)),
                    "round {round}: page {i} changed but was not reported"
                );
            }
        }
        if round % 5 == 4 {
            let refs: Vec<&[u8]> = now.iter().map(Vec::as_slice).collect();
            let mut copy = Store::new();
            copy.install_pages(&refs);
            assert_eq!(pages(&copy), now, "round {round}: installed pages differ");
            assert!(copy == s, "round {round}: the installed state differs");
            // And the copy goes on exactly as the original.
            let mut r2 = r;
            let entries: Vec<Entry> = (0..40)
                .map(|_| Entry::Command(random_command(&mut r2)))
                .collect();
            let a = execute(&mut s.clone(), time + 1, entries.clone());
            let b = execute(&mut copy, time + 1, entries);
            assert_eq!(a, b, "round {round}: replies after install differ");
        }
        snapshot = now;
    }
}
