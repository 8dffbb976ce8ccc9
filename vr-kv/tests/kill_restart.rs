//! Real processes: three `vr-kv node`s on loopback while clients write and
//! read through every node.
//!
//! - The primary, then a backup, is killed with SIGKILL, restarted empty
//!   with the same arguments, recovers (§4.3) and serves again.
//! - The primary is paused with SIGSTOP for longer than its read lease,
//!   replaced by a view change, and resumed with SIGCONT (§6, leases).
//!
//! Either way the history of every key stays linearizable (no stale read)
//! and no acknowledged write is lost.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{connect, field, free_addresses, status, wait_until};

const WRITERS: usize = 2;
const READERS: usize = 2;

struct Node {
    args: Vec<String>,
    /// The node's stderr, kept so that a failure can show why it died.
    log: tempfile::NamedTempFile,
    child: Option<Child>,
}

/// Sends `signal` (`STOP`, `CONT`) to a node's process.
fn signal(node: &Node, signal: &str) {
    let pid = node.child.as_ref().expect("running").id();
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

impl Node {
    fn start(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vr-kv"))
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(self.log.path())
                    .expect("node log"),
            ))
            .spawn()
            .expect("start vr-kv node");
        // Wait until it listens (it prints its addresses once bound).
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("replica "),
            "unexpected output {line:?}; stderr: {}",
            std::fs::read_to_string(self.log.path()).unwrap_or_default()
        );
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn primary_of(resp: &[SocketAddr]) -> Option<usize> {
    (0..resp.len()).find(|&i| {
        status(resp[i]).is_some_and(|s| {
            field(&s, "role").as_deref() == Some("primary")
                && field(&s, "status").as_deref() == Some("normal")
        })
    })
}

/// One write: its value, and when it was invoked and (if acknowledged)
/// answered.
#[derive(Clone, Copy, Debug)]
struct Write {
    value: u64,
    invoked: Instant,
    acked: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Read {
    key: usize,
    value: u64,
    invoked: Instant,
    returned: Instant,
}

/// Writer `w` sets key `w{w}` to 1, 2, 3, … in turn through node `w + 1`
/// (a backup at first, so writes are forwarded), reconnecting to the next
/// node when its node dies. Any error leaves the write's outcome unknown.
fn writer(
    w: usize,
    resp: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Vec<Write>>>>,
) {
    let key = format!("w{w}");
    let mut node = (w + 1) % resp.len();
    let mut connection = None;
    let mut value = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = connection.as_mut() else {
            connection = connect(resp[node]);
            if connection.is_none() {
                node = (node + 1) % resp.len();
                thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        value += 1;
        let invoked = Instant::now();
        let index = {
            let mut log = log.lock().unwrap();
            log[w].push(Write {
                value,
                invoked,
                acked: None,
            });
            log[w].len() - 1
        };
        match redis::cmd("SET").arg(&key).arg(value).query::<String>(c) {
            Ok(reply) => {
                assert_eq!(reply, "OK");
                log.lock().unwrap()[w][index].acked = Some(Instant::now());
            }
            Err(_) => {
                // UNCERTAIN, or the connection died with the node.
                connection = None;
                node = (node + 1) % resp.len();
            }
        }
    }
}

/// Reader `r` reads every writer's key in turn through node `r`.
fn reader(r: usize, resp: Vec<SocketAddr>, stop: Arc<AtomicBool>, reads: Arc<Mutex<Vec<Read>>>) {
    let mut node = r % resp.len();
    let mut connection = None;
    let mut key = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = connection.as_mut() else {
            connection = connect(resp[node]);
            if connection.is_none() {
                node = (node + 1) % resp.len();
                thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        key = (key + 1) % WRITERS;
        let invoked = Instant::now();
        match redis::cmd("GET")
            .arg(format!("w{key}"))
            .query::<Option<u64>>(c)
        {
            Ok(value) => reads.lock().unwrap().push(Read {
                key,
                value: value.unwrap_or(0),
                invoked,
                returned: Instant::now(),
            }),
            Err(_) => {
                connection = None;
                node = (node + 1) % resp.len();
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Linearizability of one register written by one writer with increasing
/// values: a read returns a value no older than the last write acknowledged
/// before the read began, no newer than the last write invoked before it
/// ended, and never older than a read that finished before it began. With
/// one writer and increasing values these conditions are also sufficient:
/// the values order the writes, and reads slot in between.
fn check_history(writes: &[Vec<Write>], reads: &[Read]) {
    for read in reads {
        let history = &writes[read.key];
        let floor = history
            .iter()
            .filter(|w| w.acked.is_some_and(|a| a < read.invoked))
            .map(|w| w.value)
            .max()
            .unwrap_or(0);
        let ceiling = history
            .iter()
            .filter(|w| w.invoked < read.returned)
            .map(|w| w.value)
            .max()
            .unwrap_or(0);
        assert!(
            read.value >= floor,
            "stale read of w{}: {} but {} was acknowledged before the read began",
            read.key,
            read.value,
            floor
        );
        assert!(
            read.value <= ceiling,
            "read of w{} returned {} never written before the read ended",
            read.key,
            read.value
        );
    }
    for a in reads {
        for b in reads {
            if a.key == b.key && a.returned < b.invoked {
                assert!(
                    b.value >= a.value,
                    "w{}: a read returned {} after another had returned {}",
                    a.key,
                    b.value,
                    a.value
                );
            }
        }
    }
}

#[test]
fn killed_nodes_restart_empty_recover_and_lose_no_acknowledged_write_tokio() {
    kill_and_restart("tokio");
}

#[test]
fn killed_nodes_restart_empty_recover_and_lose_no_acknowledged_write_mio() {
    kill_and_restart("mio");
}

#[test]
fn killed_nodes_restart_empty_recover_and_lose_no_acknowledged_write_glommio() {
    kill_and_restart("glommio");
}

#[test]
fn a_paused_primary_serves_no_stale_read_after_its_lease() {
    pause_primary("tokio");
}

/// A cluster of three node processes with writers and readers running.
struct Run {
    runtime: String,
    nodes: Vec<Node>,
    resp: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Vec<Vec<Write>>>>,
    reads: Arc<Mutex<Vec<Read>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Run {
    fn start(runtime: &str) -> Run {
        // One call, so that all of them differ (ports released by one call
        // could come back from the next).
        let addresses = free_addresses(6);
        let (vr, resp) = (addresses[..3].to_vec(), addresses[3..].to_vec());
        let cluster = vr
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                args: vec![
                    "node".into(),
                    "--cluster".into(),
                    cluster.clone(),
                    "--replica".into(),
                    i.to_string(),
                    "--listen-resp".into(),
                    resp[i].to_string(),
                    "--cluster-id".into(),
                    "77".into(),
                    "--runtime".into(),
                    runtime.into(),
                ],
                log: tempfile::NamedTempFile::new().expect("node log"),
                child: None,
            })
            .collect();
        // Every node starts recovering; finding each other so, they form
        // the cluster.
        for node in &mut nodes {
            node.start();
        }
        wait_until("a primary", Duration::from_secs(20), || {
            primary_of(&resp).is_some()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(vec![Vec::new(); WRITERS]));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for w in 0..WRITERS {
            let (resp, stop, writes) = (resp.clone(), stop.clone(), writes.clone());
            threads.push(thread::spawn(move || writer(w, resp, stop, writes)));
        }
        for r in 0..READERS {
            let (resp, stop, reads) = (resp.clone(), stop.clone(), reads.clone());
            threads.push(thread::spawn(move || reader(r, resp, stop, reads)));
        }
        let run = Run {
            runtime: runtime.to_owned(),
            nodes,
            resp,
            stop,
            writes,
            reads,
            threads,
        };
        run.await_writes("writes before the first fault", 50);
        run
    }

    fn acked(&self) -> usize {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter(|w| w.acked.is_some())
            .count()
    }

    /// Waits for `more` writes to be acknowledged from now on.
    fn await_writes(&self, what: &str, more: usize) {
        let before = self.acked();
        wait_until(what, Duration::from_secs(30), || {
            self.acked() >= before + more
        });
    }

    fn await_normal(&self, node: usize) {
        wait_until("the node to be normal", Duration::from_secs(30), || {
            status(self.resp[node])
                .is_some_and(|s| field(&s, "status").as_deref() == Some("normal"))
        });
    }

    /// Stops the clients, reads every key through every node, and checks
    /// the whole history; then checks that every replica's own copy caught
    /// up with the final values.
    fn finish(self, acked_min: usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let writes = self.writes.lock().unwrap().clone();
        let mut reads = self.reads.lock().unwrap().clone();
        for (i, &address) in self.resp.iter().enumerate() {
            let mut c = connect(address).unwrap_or_else(|| panic!("node {i} answers"));
            for key in 0..WRITERS {
                let invoked = Instant::now();
                let value: Option<u64> = redis::cmd("GET")
                    .arg(format!("w{key}"))
                    .query(&mut c)
                    .unwrap();
                reads.push(Read {
                    key,
                    value: value.unwrap_or(0),
                    invoked,
                    returned: Instant::now(),
                });
            }
        }
        let acked_total = writes
            .iter()
            .flatten()
            .filter(|w| w.acked.is_some())
            .count();
        let unknown = writes
            .iter()
            .flatten()
            .filter(|w| w.acked.is_none())
            .count();
        println!(
            "{}: {acked_total} writes acknowledged, {unknown} with unknown outcome, {} reads checked",
            self.runtime,
            reads.len()
        );
        assert!(
            acked_total >= acked_min,
            "{acked_total} writes acknowledged"
        );
        assert!(reads.len() > 50, "{} reads", reads.len());
        check_history(&writes, &reads);
        // READONLY reads the replica's local copy: every replica, restarted
        // or resumed ones included, holds the final values once caught up.
        for key in 0..WRITERS {
            let mut c = connect(self.resp[0]).unwrap();
            let last: Option<u64> = redis::cmd("GET")
                .arg(format!("w{key}"))
                .query(&mut c)
                .unwrap();
            for &address in &self.resp {
                wait_until(
                    "a replica's own copy to catch up",
                    Duration::from_secs(10),
                    || {
                        let Some(mut c) = connect(address) else {
                            return false;
                        };
                        let _: Result<String, _> = redis::cmd("READONLY").query(&mut c);
                        redis::cmd("GET")
                            .arg(format!("w{key}"))
                            .query::<Option<u64>>(&mut c)
                            .is_ok_and(|v| v == last)
                    },
                );
            }
        }
    }
}

fn kill_and_restart(runtime: &str) {
    let mut run = Run::start(runtime);
    // The primary first, then a backup.
    let primary = primary_of(&run.resp).expect("a primary");
    let victims = [primary, (primary + 1) % 3];
    for victim in victims {
        run.nodes[victim].kill();
        run.await_writes("writes while a node is down", 100);
        run.nodes[victim].start();
        run.await_normal(victim);
        run.await_writes("writes after recovery", 100);
    }
    // The recovered nodes serve: a write and a read through each.
    for victim in victims {
        let mut c = connect(run.resp[victim]).expect("recovered node accepts clients");
        let _: () = redis::cmd("SET")
            .arg("after")
            .arg(victim)
            .query(&mut c)
            .unwrap();
        let value: usize = redis::cmd("GET").arg("after").query(&mut c).unwrap();
        assert_eq!(value, victim);
        let s = status(run.resp[victim]).unwrap();
        assert_eq!(
            field(&s, "recoveries_completed").as_deref(),
            Some("1"),
            "{s}"
        );
    }
    run.finish(450);
}

/// Reference: §6 ("leases"). The primary is frozen with SIGSTOP for much
/// longer than its lease, the others change view and go on, and the old
/// primary is thawed with SIGCONT while a reader talks to it. Its lease
/// ran out during the pause (its clock kept going), so it answers no read
/// from its stale state; the history stays linearizable.
fn pause_primary(runtime: &str) {
    let run = Run::start(runtime);
    let primary = primary_of(&run.resp).expect("a primary");
    let leased = |node: usize| {
        status(run.resp[node])
            .and_then(|s| field(&s, "leased_reads"))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_until(
        "leased reads at the primary",
        Duration::from_secs(20),
        || leased(primary) > 0,
    );
    signal(&run.nodes[primary], "STOP");
    wait_until("a new primary", Duration::from_secs(30), || {
        primary_of(&run.resp).is_some_and(|p| p != primary)
    });
    run.await_writes("writes while the old primary is frozen", 100);
    thread::sleep(Duration::from_millis(300));
    signal(&run.nodes[primary], "CONT");
    run.await_normal(primary);
    run.await_writes("writes after the old primary resumed", 100);
    let new_primary = primary_of(&run.resp).expect("a primary");
    assert_ne!(new_primary, primary);
    assert!(leased(new_primary) > 0, "the new primary leases too");
    run.finish(300);
}
