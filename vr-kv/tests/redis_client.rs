//! Every command family end to end through the `redis` crate against a
//! 3-replica local cluster, through a backup (which forwards to the
//! primary), on each runtime: the handshake a client library sends,
//! strings, keys and expiry, hashes, lists, sets, sorted sets, MULTI/EXEC
//! with WATCH, and the clear errors for what is not supported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use redis::{Commands, Connection, RedisResult, Value};
use vr_kv::server::{start_local_on, LocalCluster, Runtime};

fn connect(address: SocketAddr) -> Connection {
    let client = redis::Client::open(format!("redis://{address}/")).unwrap();
    let connection = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    connection
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    connection
}

/// A cluster with a primary, and a connection to a backup.
fn start(runtime: Runtime) -> (LocalCluster, Connection) {
    let cluster = start_local_on(runtime, 1, 3).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let primary = loop {
        let found = (0..3).find(|&i| {
            let mut c = connect(cluster.resp_addrs()[i]);
            let status: String = redis::cmd("VR.STATUS").query(&mut c).unwrap();
            status.contains("role:primary")
        });
        if let Some(i) = found {
            break i;
        }
        assert!(Instant::now() < deadline, "no primary");
        std::thread::sleep(Duration::from_millis(20));
    };
    let backup = cluster.resp_addrs()[(primary + 1) % 3];
    (cluster, connect(backup))
}

fn handshake_and_server(c: &mut Connection) {
    let hello: Vec<Value> = redis::cmd("HELLO").arg(2).query(c).unwrap();
    assert_eq!(hello.len(), 14);
    let err = redis::cmd("HELLO").arg(3).query::<Value>(c).unwrap_err();
    assert_eq!(err.code(), Some("NOPROTO"));
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(c)
        .unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(c).unwrap();
    assert_eq!(name, "tester");
    let _: () = redis::cmd("CLIENT")
        .arg("SETINFO")
        .arg("lib-name")
        .arg("redis-rs")
        .query(c)
        .unwrap();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(c).unwrap();
    assert!(id > 0);
    let _: () = redis::cmd("SELECT").arg(0).query(c).unwrap();
    assert!(redis::cmd("SELECT").arg(1).query::<()>(c).is_err());
    let count: usize = redis::cmd("COMMAND").arg("COUNT").query(c).unwrap();
    assert!(count > 100);
    let config: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(c)
        .unwrap();
    assert_eq!(config.get("save").map(String::as_str), Some(""));
    let info: redis::InfoDict = redis::cmd("INFO").query(c).unwrap();
    assert_eq!(
        info.get::<String>("redis_version").as_deref(),
        Some("7.0.0")
    );
    assert_eq!(info.get::<String>("role").as_deref(), Some("slave"));
    // This connection, and the other test connections to the node.
    assert!(info
        .get::<usize>("connected_clients")
        .is_some_and(|n| n >= 1));
    let time: (u64, u64) = redis::cmd("TIME").query(c).unwrap();
    assert!(time.0 > 1_600_000_000);
    let _: () = redis::cmd("FLUSHALL").query(c).unwrap();
    let size: usize = redis::cmd("DBSIZE").query(c).unwrap();
    assert_eq!(size, 0);
}

fn strings_and_expiry(c: &mut Connection) {
    let _: () = c.set_ex("e", "v", 100).unwrap();
    let ttl: i64 = c.ttl("e").unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(150)
        .query(c)
        .unwrap();
    assert_eq!(
        c.get::<_, Option<String>>("short").unwrap().as_deref(),
        Some("v")
    );
    std::thread::sleep(Duration::from_millis(300));
    // Gone by the log time of this read's own operation.
    assert_eq!(c.get::<_, Option<String>>("short").unwrap(), None);
    assert!(!c.exists::<_, bool>("short").unwrap());
    assert_eq!(c.incr::<_, _, i64>("n", 5).unwrap(), 5);
    assert_eq!(c.decr::<_, _, i64>("n", 2).unwrap(), 3);
    let f: f64 = c.incr("f", 1.5).unwrap();
    assert_eq!(f, 1.5);
    assert_eq!(c.append::<_, _, usize>("s", "abc").unwrap(), 3);
    assert_eq!(c.strlen::<_, usize>("s").unwrap(), 3);
    assert_eq!(c.getrange::<_, String>("s", 1, -1).unwrap(), "bc");
    let _: () = c.mset(&[("m1", "1"), ("m2", "2")]).unwrap();
    let got: Vec<Option<String>> = c.mget(&["m1", "m2", "m3"]).unwrap();
    assert_eq!(got, vec![Some("1".into()), Some("2".into()), None]);
    assert_eq!(c.key_type::<_, String>("m1").unwrap(), "string");
    let _: () = c.rename("m1", "m9").unwrap();
    let keys: BTreeSet<String> = c.keys("m*").unwrap();
    assert_eq!(keys, ["m2", "m9"].iter().map(|s| s.to_string()).collect());
    assert!(c.expire::<_, bool>("m9", 1000).unwrap());
    assert!(c.persist::<_, bool>("m9").unwrap());
    let scanned: BTreeSet<String> = c.scan_match("m*").unwrap().collect();
    assert_eq!(scanned, keys);
}

fn collections(c: &mut Connection) {
    let _: () = c.hset_multiple("h", &[("a", "1"), ("b", "2")]).unwrap();
    let all: BTreeMap<String, String> = c.hgetall("h").unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(c.hincr::<_, _, _, i64>("h", "a", 10).unwrap(), 11);
    assert_eq!(c.hdel::<_, _, usize>("h", "b").unwrap(), 1);
    assert_eq!(c.rpush::<_, _, usize>("l", &["a", "b", "c"]).unwrap(), 3);
    assert_eq!(c.lpush::<_, _, usize>("l", "z").unwrap(), 4);
    let range: Vec<String> = c.lrange("l", 0, -1).unwrap();
    assert_eq!(range, ["z", "a", "b", "c"]);
    assert_eq!(
        c.lpop::<_, Option<String>>("l", None).unwrap().as_deref(),
        Some("z")
    );
    assert_eq!(c.sadd::<_, _, usize>("s1", &["x", "y"]).unwrap(), 2);
    assert!(c.sismember::<_, _, bool>("s1", "x").unwrap());
    let members: BTreeSet<String> = c.smembers("s1").unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(c.zadd::<_, _, _, usize>("z", "a", 1).unwrap(), 1);
    assert_eq!(c.zadd::<_, _, _, usize>("z", "b", 2).unwrap(), 1);
    let top: Vec<(String, f64)> = c.zrevrange_withscores("z", 0, 0).unwrap();
    assert_eq!(top, vec![("b".to_string(), 2.0)]);
    let popped: Vec<(String, f64)> = c.zpopmin("z", 1).unwrap();
    assert_eq!(popped, vec![("a".to_string(), 1.0)]);
    let wrong: RedisResult<usize> = c.sadd("h", "x");
    assert_eq!(wrong.unwrap_err().code(), Some("WRONGTYPE"));
}

fn transactions(c: &mut Connection, other: &mut Connection) {
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("tx", 1)
        .incr("tx", 1)
        .query(c)
        .unwrap();
    assert_eq!((a, b), (1, 2));
    // WATCH: a change by another connection aborts the EXEC (nil).
    let _: () = redis::cmd("WATCH").arg("tx").query(c).unwrap();
    let _: () = other.set("tx", 100).unwrap();
    let _: () = redis::cmd("MULTI").query(c).unwrap();
    let _: String = redis::cmd("INCR").arg("tx").query(c).unwrap();
    let aborted: Value = redis::cmd("EXEC").query(c).unwrap();
    assert_eq!(aborted, Value::Nil);
    assert_eq!(c.get::<_, i64>("tx").unwrap(), 100);
    // Unchanged: it runs.
    let _: () = redis::cmd("WATCH").arg("tx").query(c).unwrap();
    let (n,): (i64,) = redis::pipe().atomic().incr("tx", 1).query(c).unwrap();
    assert_eq!(n, 101);
    // An unknown command inside MULTI aborts the transaction.
    let _: () = redis::cmd("MULTI").query(c).unwrap();
    assert!(redis::cmd("NOPE").query::<Value>(c).is_err());
    let err = redis::cmd("EXEC").query::<Value>(c).unwrap_err();
    assert_eq!(err.code(), Some("EXECABORT"));
    assert!(redis::cmd("DISCARD").query::<()>(c).is_err());
}

fn unsupported(c: &mut Connection) {
    for command in [
        &["BLPOP", "l", "0"][..],
        &["SUBSCRIBE", "ch"],
        &["EVAL", "return 1", "0"],
    ] {
        let mut cmd = redis::cmd(command[0]);
        for arg in &command[1..] {
            cmd.arg(*arg);
        }
        let err = cmd.query::<Value>(c).unwrap_err();
        assert!(
            err.to_string().contains("not supported by vr-kv"),
            "{command:?}: {err}"
        );
    }
}

/// Active expiry without client writes: the primary's node sends
/// `VR.SWEEP` (an op in the log), so even a backup's own copy, read with
/// `READONLY`, loses the expired key; `DBSIZE` counts keys held, so it
/// shows the deletion.
fn expired_keys_are_swept_without_writes(cluster: &LocalCluster, c: &mut Connection) {
    let _: () = redis::cmd("FLUSHALL").query(c).unwrap();
    let _: () = redis::cmd("SET")
        .arg("soon")
        .arg("v")
        .arg("PX")
        .arg(50)
        .query(c)
        .unwrap();
    let mut backups: Vec<Connection> = cluster.resp_addrs().iter().map(|a| connect(*a)).collect();
    for b in &mut backups {
        let _: () = redis::cmd("READONLY").query(b).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sizes: Vec<usize> = backups
            .iter_mut()
            .map(|b| redis::cmd("DBSIZE").query(b).unwrap())
            .collect();
        if sizes.iter().all(|&n| n == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "never swept: {sizes:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `INFO` while the same node executes writes: `INFO replication` asks the
/// replica's loop for its status, which must never happen while the front
/// end holds the store the loop needs to execute (that deadlocked).
fn info_during_writes(cluster: &LocalCluster) {
    for address in cluster.resp_addrs().to_vec() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut w = connect(address);
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut pipe = redis::pipe();
                    for i in 0..20 {
                        pipe.set(format!("w{i}"), n).ignore();
                    }
                    let _: () = pipe.query(&mut w).unwrap();
                    n += 1;
                }
            })
        };
        let mut c = connect(address);
        for _ in 0..100 {
            let info: String = redis::cmd("INFO").query(&mut c).unwrap();
            assert!(info.contains("# Replication"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
    }
}

fn every_family(runtime: Runtime) {
    let (cluster, mut c) = start(runtime);
    let mut other = connect(cluster.resp_addrs()[0]);
    handshake_and_server(&mut c);
    strings_and_expiry(&mut c);
    collections(&mut c);
    transactions(&mut c, &mut other);
    unsupported(&mut c);
    expired_keys_are_swept_without_writes(&cluster, &mut c);
    info_during_writes(&cluster);
}

#[test]
fn every_family_on_tokio() {
    every_family(Runtime::Tokio);
}

#[test]
fn every_family_on_mio() {
    every_family(Runtime::Mio);
}

#[test]
fn every_family_on_glommio() {
    every_family(Runtime::Glommio);
}
