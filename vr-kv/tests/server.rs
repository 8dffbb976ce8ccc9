//! The server end to end: a local cluster, spoken to with the `redis` crate
//! and raw sockets. Every test runs on each runtime (tokio, mio, glommio):
//! the front ends must behave the same, so one test body serves all three
//! (`tokio::…`, `mio::…`, `glommio::…` in the test names).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Commands, Connection, RedisResult, Value};
use vr_kv::server::{start_local_on, start_local_with_witnesses, LocalCluster, Runtime};

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

/// Waits until some replica reports itself the primary of a normal view.
fn wait_for_primary(cluster: &LocalCluster) -> usize {
    let mut primary = None;
    wait_until("a primary", || {
        primary = (0..cluster.resp_addrs().len()).find(|&i| {
            cluster.node(i).is_some() && {
                let mut c = connect(cluster.resp_addrs()[i]);
                let status: String = redis::cmd("VR.STATUS").query(&mut c).unwrap();
                status.contains("role:primary")
            }
        });
        primary.is_some()
    });
    primary.expect("found above")
}

/// A 3-replica cluster on `runtime` once it has a primary; returns it, the
/// primary's index and a backup's.
fn start_with_primary(runtime: Runtime) -> (LocalCluster, usize, usize) {
    let cluster = start_local_on(runtime, 1, 3).unwrap();
    let primary = wait_for_primary(&cluster);
    (cluster, primary, (primary + 1) % 3)
}

/// Waits until `done` holds, polling; fails after 30 s, far beyond what
/// any of these waits takes on a loaded machine.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn round_trips(c: &mut Connection, prefix: &str) {
    let k = |s: &str| format!("{prefix}:{s}");
    let _: () = c.set(k("a"), "1").unwrap();
    assert_eq!(
        c.get::<_, Option<String>>(k("a")).unwrap(),
        Some("1".into())
    );
    assert_eq!(c.get::<_, Option<String>>(k("nope")).unwrap(), None);
    assert_eq!(c.incr::<_, _, i64>(k("a"), 1).unwrap(), 2);
    let n: i64 = redis::cmd("INCR").arg(k("a")).query(c).unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("INCRBY").arg(k("a")).arg(-10).query(c).unwrap();
    assert_eq!(n, -7);
    assert_eq!(c.append::<_, _, i64>(k("s"), "foo").unwrap(), 3);
    assert_eq!(c.append::<_, _, i64>(k("s"), "bar").unwrap(), 6);
    assert_eq!(c.get::<_, String>(k("s")).unwrap(), "foobar");
    let _: () = c.mset(&[(k("m1"), "x"), (k("m2"), "y")]).unwrap();
    let got: Vec<Option<String>> = c.mget(&[k("m1"), k("zz"), k("m2")]).unwrap();
    assert_eq!(got, vec![Some("x".into()), None, Some("y".into())]);
    let n: i64 = redis::cmd("EXISTS")
        .arg(k("m1"))
        .arg(k("zz"))
        .arg(k("m2"))
        .query(c)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(c.del::<_, i64>(&[k("m1"), k("zz")]).unwrap(), 1);
    assert!(!c.exists::<_, bool>(k("m1")).unwrap());
    let pong: String = redis::cmd("PING").query(c).unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("ECHO").arg("hi").query(c).unwrap();
    assert_eq!(echo, "hi");
    // An error inside the store: not an integer.
    let _: () = c.set(k("t"), "text").unwrap();
    let err = c.incr::<_, _, i64>(k("t"), 1).unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
}

fn commands_round_trip_through_primary_and_backup(runtime: Runtime) {
    let (cluster, primary, backup) = start_with_primary(runtime);
    let mut at_primary = connect(cluster.resp_addrs()[primary]);
    let mut at_backup = connect(cluster.resp_addrs()[backup]);
    round_trips(&mut at_primary, "p");
    round_trips(&mut at_backup, "b");
    // Linearizable: a write through one is read through the other.
    let _: () = at_backup.set("shared", "from-backup").unwrap();
    assert_eq!(
        at_primary.get::<_, String>("shared").unwrap(),
        "from-backup"
    );
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut at_backup)
        .unwrap();
    assert!(info.starts_with("# Replication\r\n"), "{info}");
    assert!(info.contains("role:backup\r\n"), "{info}");
    assert!(info.contains("epoch:0\r\n"), "{info}");
    assert!(info.contains("commit_number:"), "{info}");
    cluster.stop();
}

fn wrong_arity_and_unknown_commands_are_errors(runtime: Runtime) {
    let cluster = start_local_on(runtime, 1, 3).unwrap();
    let mut c = connect(cluster.resp_addrs()[1]);
    let err = redis::cmd("GET").query::<Value>(&mut c).unwrap_err();
    assert!(
        err.to_string()
            .contains("wrong number of arguments for 'get' command"),
        "{err}"
    );
    let err = redis::cmd("MSET")
        .arg("a")
        .arg("b")
        .arg("c")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string().contains("wrong number of arguments"),
        "{err}"
    );
    let err = redis::cmd("FLUBBER")
        .arg("x")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
    // The connection still works.
    let _: () = c.set("after", "1").unwrap();
    assert_eq!(c.get::<_, String>("after").unwrap(), "1");
    cluster.stop();
}

fn pipeline_of_100_commands_is_answered_in_order(runtime: Runtime) {
    let cluster = start_local_on(runtime, 1, 3).unwrap();
    let mut c = connect(cluster.resp_addrs()[2]);
    let mut pipe = redis::pipe();
    for i in 0..100 {
        match i % 4 {
            0 => pipe.cmd("INCR").arg("counter"),
            1 => pipe.cmd("PING"),
            2 => pipe.cmd("GET").arg("counter"),
            _ => pipe.cmd("NOSUCHCOMMAND"),
        };
    }
    let replies: Vec<RedisResult<Value>> = {
        // Send raw so that the error replies are kept in place.
        let mut bytes = Vec::new();
        for cmd in pipe.cmd_iter() {
            bytes.extend_from_slice(&cmd.get_packed_command());
        }
        let mut raw = TcpStream::connect(cluster.resp_addrs()[2]).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        raw.write_all(&bytes).unwrap();
        let mut parser = redis::Parser::new();
        let mut reader = std::io::BufReader::new(raw);
        (0..100).map(|_| parser.parse_value(&mut reader)).collect()
    };
    let mut counter = 0;
    for (i, reply) in replies.into_iter().enumerate() {
        match i % 4 {
            0 => {
                counter += 1;
                assert_eq!(reply.unwrap(), Value::Int(counter), "reply {i}");
            }
            1 => assert_eq!(reply.unwrap(), Value::SimpleString("PONG".into())),
            2 => assert_eq!(
                reply.unwrap(),
                Value::BulkString(counter.to_string().into_bytes()),
                "reply {i}"
            ),
            _ => {
                let text = format!("{reply:?}");
                assert!(text.contains("unknown command"), "reply {i}: {text}");
            }
        }
    }
    // And through the redis crate's own pipeline API.
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
    }
    for i in 0..100 {
        pipe.cmd("GET").arg(format!("p{i}"));
    }
    let values: Vec<i64> = pipe.query(&mut c).unwrap();
    assert_eq!(values, (0..100).collect::<Vec<i64>>());
    cluster.stop();
}

fn a_pipeline_is_replicated_as_one_operation_not_one_per_command(runtime: Runtime) {
    let (cluster, primary, backup) = start_with_primary(runtime);
    let op_number = || cluster.node(primary).unwrap().stats().op_number;
    let before = op_number();
    // 200 commands in one write: the server reads them in one or a few
    // reads, and each read's commands travel as one batch.
    let mut bytes = Vec::new();
    for i in 0..200 {
        bytes.extend_from_slice(format!("SET batch{i} {i}\r\n").as_bytes());
    }
    let mut raw = TcpStream::connect(cluster.resp_addrs()[backup]).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw.write_all(&bytes).unwrap();
    let mut answer = vec![0u8; 200 * b"+OK\r\n".len()];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(answer, b"+OK\r\n".repeat(200));
    let operations = op_number() - before;
    assert!(
        (1..=20).contains(&operations),
        "200 pipelined commands took {operations} operations"
    );
    cluster.stop();
}

fn a_request_that_fills_the_buffer_is_refused(runtime: Runtime) {
    let cluster = start_local_on(runtime, 1, 3).unwrap();
    // Exactly the default read_buffer_max (op_size_max + 64 KiB) of a
    // command that is still incomplete: every byte sent is read, so the
    // close that follows is clean and the error reply arrives.
    let buffer_max = 2 * 64 * 1024;
    let mut bytes = format!(
        "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$65536\r\n{}\r\n$65536\r\n",
        "v".repeat(65536)
    )
    .into_bytes();
    bytes.resize(buffer_max, b'w');
    let mut raw = TcpStream::connect(cluster.resp_addrs()[1]).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw.write_all(b"PING\r\n").unwrap();
    raw.write_all(&bytes).unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("+PONG\r\n-{}\r\n", vr_kv::server::ERR_REQUEST_TOO_LARGE)
    );
    cluster.stop();
}

fn readonly_reads_at_a_backup_eventually_see_a_write(runtime: Runtime) {
    let (cluster, primary, backup) = start_with_primary(runtime);
    let mut writer = connect(cluster.resp_addrs()[primary]);
    let mut reader = connect(cluster.resp_addrs()[backup]);
    let ok: String = redis::cmd("READONLY").query(&mut reader).unwrap();
    assert_eq!(ok, "OK");
    let _: () = writer.set("ro", "v1").unwrap();
    wait_until("the backup to apply the write", || {
        reader.get::<_, Option<String>>("ro").unwrap().as_deref() == Some("v1")
    });
    // Writes on a READONLY connection still go through the cluster.
    let _: () = reader.set("ro2", "w").unwrap();
    assert_eq!(writer.get::<_, String>("ro2").unwrap(), "w");
    let ok: String = redis::cmd("READWRITE").query(&mut reader).unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(reader.get::<_, String>("ro2").unwrap(), "w");
    cluster.stop();
}

fn acknowledged_writes_survive_the_primary_stopping(runtime: Runtime) {
    let mut cluster = start_local_on(runtime, 1, 3).unwrap();
    let primary = wait_for_primary(&cluster);
    assert_eq!(primary, 0, "view 0's primary is replica 0");
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..4 {
        let address = cluster.resp_addrs()[1 + t % 2];
        let stop = stop.clone();
        let acks = acks.clone();
        threads.push(std::thread::spawn(move || {
            let mut c = connect(address);
            let mut acknowledged = Vec::new();
            let mut uncertain = 0;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("t{t}:k{i}");
                let value = format!("v{t}-{i}");
                match c.set::<_, _, String>(&key, &value) {
                    Ok(ok) => {
                        assert_eq!(ok, "OK");
                        acks.fetch_add(1, Ordering::Relaxed);
                        acknowledged.push((key, value));
                    }
                    Err(error) => {
                        assert_eq!(error.code(), Some("UNCERTAIN"), "{error}");
                        uncertain += 1;
                    }
                }
                i += 1;
            }
            (acknowledged, uncertain)
        }));
    }
    // Counts of writes rather than fixed sleeps, so that a slow machine
    // makes the test slower, not flaky.
    wait_until("20 writes before the stop", || {
        acks.load(Ordering::Relaxed) >= 20
    });
    let acks_before = acks.load(Ordering::Relaxed);
    cluster.stop_node(0);
    wait_until("20 writes after the stop", || {
        acks.load(Ordering::Relaxed) > acks_before + 20
    });
    stop.store(true, Ordering::Relaxed);
    let acks_after = acks.load(Ordering::Relaxed) - acks_before;
    let mut acknowledged = Vec::new();
    let mut uncertain = 0;
    for thread in threads {
        let (a, u) = thread.join().unwrap();
        acknowledged.extend(a);
        uncertain += u;
    }
    assert!(
        acknowledged.len() > 20,
        "too few writes: {}",
        acknowledged.len()
    );
    let new_primary = wait_for_primary(&cluster);
    assert_ne!(new_primary, 0);
    let mut c = connect(cluster.resp_addrs()[1]);
    // Writes after the failover succeed too.
    let _: () = c.set("after-failover", "yes").unwrap();
    for chunk in acknowledged.chunks(200) {
        let keys: Vec<&String> = chunk.iter().map(|(k, _)| k).collect();
        let values: Vec<Option<String>> = c.mget(&keys).unwrap();
        for ((key, value), got) in chunk.iter().zip(values) {
            assert_eq!(
                got.as_ref(),
                Some(value),
                "acknowledged write of {key} lost"
            );
        }
    }
    eprintln!(
        "{} acknowledged writes checked ({acks_after} after the stop), {uncertain} uncertain",
        acknowledged.len()
    );
    cluster.stop();
}

/// §6, witnesses: 2 full replicas and a witness. Clients talk to any of
/// them (the witness forwards to the primary); the witness holds no data
/// (`READONLY` there is an error, `VR.STATUS` says `role:witness`); with
/// the full backup stopped, the primary commits with the witness, and the
/// acknowledged writes are all there.
fn a_witness_forwards_and_completes_quorums_but_holds_no_data(runtime: Runtime) {
    let mut cluster = start_local_with_witnesses(runtime, 1, 3, 1).unwrap();
    assert_eq!(wait_for_primary(&cluster), 0);
    let mut at_witness = connect(cluster.resp_addrs()[2]);
    let status: String = redis::cmd("VR.STATUS").query(&mut at_witness).unwrap();
    assert!(status.contains("role:witness"), "{status}");
    let _: () = at_witness.set("w:a", "1").unwrap();
    assert_eq!(at_witness.get::<_, String>("w:a").unwrap(), "1");
    let ok: String = redis::cmd("READONLY").query(&mut at_witness).unwrap();
    assert_eq!(ok, "OK");
    let error = at_witness.get::<_, String>("w:a").unwrap_err();
    assert!(
        error.to_string().contains("witness"),
        "a witness has no data to read: {error}"
    );
    // The full backup goes; the primary and the witness are a quorum.
    cluster.stop_node(1);
    let mut at_primary = connect(cluster.resp_addrs()[0]);
    for i in 0..50 {
        let _: () = at_primary.set(format!("w:k{i}"), i).unwrap();
    }
    let keys: Vec<String> = (0..50).map(|i| format!("w:k{i}")).collect();
    let values: Vec<i64> = at_primary.mget(&keys).unwrap();
    assert_eq!(values, (0..50).collect::<Vec<i64>>());
    cluster.stop();
}

fn malformed_resp_gets_an_error_and_the_connection_is_closed(runtime: Runtime) {
    let cluster = start_local_on(runtime, 1, 3).unwrap();
    for bad in [
        &b"*2\r\n$3\r\nGET\r\n:1\r\n"[..],
        b"*abc\r\n",
        b"*1\r\n$-5\r\n",
        b"SET \"unbalanced k\r\n",
    ] {
        let mut raw = TcpStream::connect(cluster.resp_addrs()[1]).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        raw.write_all(b"PING\r\n").unwrap();
        raw.write_all(bad).unwrap();
        let mut answer = Vec::new();
        // read_to_end returns once the server closes the connection.
        raw.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("+PONG\r\n-ERR Protocol error: "),
            "{bad:?}: {answer:?}"
        );
        assert!(answer.ends_with("\r\n"));
    }
    // The server keeps serving.
    let mut c = connect(cluster.resp_addrs()[1]);
    let _: () = c.set("still", "here").unwrap();
    assert_eq!(c.get::<_, String>("still").unwrap(), "here");
    cluster.stop();
}

fn without_a_majority_a_write_is_uncertain_not_failed(runtime: Runtime) {
    let mut cluster = start_local_on(runtime, 1, 3).unwrap();
    let mut c = connect(cluster.resp_addrs()[2]);
    let _: () = c.set("before", "1").unwrap();
    let _: () = redis::cmd("READONLY").query(&mut c).unwrap();
    wait_until("replica 2 to apply the write", || {
        c.get::<_, Option<String>>("before").unwrap().is_some()
    });
    cluster.stop_node(0);
    cluster.stop_node(1);
    // A pipeline of two: each command gets its own UNCERTAIN reply.
    let started = Instant::now();
    let mut raw = TcpStream::connect(cluster.resp_addrs()[2]).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw.write_all(b"SET k v\r\nINCR n\r\nPING\r\n").unwrap();
    let expected = format!(
        "-{}\r\n-{}\r\n+PONG\r\n",
        vr_kv::server::UNCERTAIN,
        vr_kv::server::UNCERTAIN
    );
    let mut answer = vec![0u8; expected.len()];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(String::from_utf8_lossy(&answer), expected);
    let waited = started.elapsed();
    // 15 attempts of 200 ms: about 3 s, with room for a loaded machine.
    assert!(waited < Duration::from_secs(20), "gave up after {waited:?}");
    // READONLY reads still answer from the local store.
    assert_eq!(c.get::<_, String>("before").unwrap(), "1");
    cluster.stop();
}

fn start_node_runs_a_single_replica_and_bounds_connections(runtime: Runtime) {
    let replica = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let replicas = vec![replica.local_addr().unwrap()];
    let mut options = vr_kv::server::NodeOptions::new(
        9,
        replicas,
        vr_core::MemberId(0),
        "127.0.0.1:0".parse().unwrap(),
    );
    options.replica_listener = Some(replica);
    options.resp_connections_max = 2;
    options.runtime = runtime;
    let node = vr_kv::server::start_node(options).unwrap();
    let mut first = connect(node.resp_addr());
    let _: () = first.set("solo", "1").unwrap();
    let mut second = connect(node.resp_addr());
    assert_eq!(second.get::<_, String>("solo").unwrap(), "1");
    let mut third = TcpStream::connect(node.resp_addr()).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    third.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"-ERR max number of clients reached\r\n");
    // A slot frees up when a connection closes.
    drop(first);
    wait_until("a slot to free up", || {
        // A refused connection may be reset under our PING: not yet, then.
        let Ok(mut c) = TcpStream::connect(node.resp_addr()) else {
            return false;
        };
        let mut reply = [0u8; 7];
        c.set_read_timeout(Some(Duration::from_secs(5))).is_ok()
            && c.write_all(b"PING\r\n").is_ok()
            && c.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    });
    let status: String = redis::cmd("VR.STATUS").query(&mut second).unwrap();
    assert!(status.contains("role:primary\r\n"), "{status}");
    node.stop();
}

/// Runs each test body once per runtime, as `<runtime>::<test>`.
macro_rules! on_every_runtime {
    ($($test:ident),* $(,)?) => {
        mod tokio {
            $(#[test] fn $test() { super::$test(super::Runtime::Tokio) })*
        }
        mod mio {
            $(#[test] fn $test() { super::$test(super::Runtime::Mio) })*
        }
        mod glommio {
            $(#[test] fn $test() { super::$test(super::Runtime::Glommio) })*
        }
    };
}

on_every_runtime!(
    commands_round_trip_through_primary_and_backup,
    wrong_arity_and_unknown_commands_are_errors,
    pipeline_of_100_commands_is_answered_in_order,
    readonly_reads_at_a_backup_eventually_see_a_write,
    acknowledged_writes_survive_the_primary_stopping,
    malformed_resp_gets_an_error_and_the_connection_is_closed,
    without_a_majority_a_write_is_uncertain_not_failed,
    start_node_runs_a_single_replica_and_bounds_connections,
    a_pipeline_is_replicated_as_one_operation_not_one_per_command,
    a_request_that_fills_the_buffer_is_refused,
    a_witness_forwards_and_completes_quorums_but_holds_no_data
);
