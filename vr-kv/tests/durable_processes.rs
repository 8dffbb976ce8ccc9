//! Durable replicas as an operator meets them (issue 18): three real
//! `vr-kv node --data-dir` processes on loopback, on each runtime, while
//! four clients write, and then every acknowledged write read back.
//!
//! 1. **Every node killed at once** (SIGKILL), three times, each time
//!    restarted with the same command: the acknowledged writes are on a
//!    quorum's disks, so none is lost, and the cluster never forms afresh.
//! 2. **One node killed at a time, faster than a diskless node could
//!    recover** (restarted at once, the next kill 150 ms later, the primary
//!    most often): restarted from disk, each is back at once.
//! 3. **A node's data directory deleted**: it recovers from the others
//!    like a replaced machine; then another node is killed, so that the
//!    reads depend on the recovered node's copy.
//! 4. **One flipped byte in a node's log**: the restart detects it (the
//!    record's checksum), does not trust the disk, recovers from the
//!    others; then another node is killed, as in 3.
//!
//! And the diskless counterpart: a diskless cluster killed whole comes
//! back empty, and the replica that formed the new cluster says so
//! (`clusters_formed:1` in `VR.STATUS`, a warning in its log).

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read as _, Seek, SeekFrom, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{connect, field, free_addresses, status, wait_until};

const WRITERS: usize = 4;
/// One scenario at a time across this file's tests: each runs three
/// processes and four clients on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

struct Node {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vr-kv"))
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start vr-kv node");
        // It prints its addresses once bound.
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("replica "),
            "unexpected output {line:?}; log: {}",
            fs::read_to_string(&self.log).unwrap_or_default()
        );
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Cluster {
    nodes: Vec<Node>,
    resp: Vec<SocketAddr>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(runtime: &str, durable: bool) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addresses = free_addresses(6);
        let (vr, resp) = addresses.split_at(3);
        let cluster: Vec<String> = vr.iter().map(|a| a.to_string()).collect();
        let mut nodes: Vec<Node> = (0..3)
            .map(|i| {
                let mut args = vec![
                    "node".to_owned(),
                    "--cluster".to_owned(),
                    cluster.join(","),
                    "--replica".to_owned(),
                    i.to_string(),
                    "--listen-resp".to_owned(),
                    resp[i].to_string(),
                    "--runtime".to_owned(),
                    runtime.to_owned(),
                ];
                if durable {
                    args.push("--data-dir".to_owned());
                    args.push(
                        dir.path()
                            .join(format!("replica-{i}"))
                            .display()
                            .to_string(),
                    );
                }
                Node {
                    args,
                    log: dir.path().join(format!("node-{i}.log")),
                    child: None,
                }
            })
            .collect();
        for node in &mut nodes {
            node.start();
        }
        let cluster = Cluster {
            nodes,
            resp: resp.to_vec(),
            dir,
        };
        cluster.wait_for_primary();
        cluster
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("replica-{i}"))
    }

    fn primary(&self) -> Option<usize> {
        (0..self.resp.len()).find(|&i| {
            self.nodes[i].child.is_some()
                && status(self.resp[i]).is_some_and(|s| {
                    field(&s, "role").as_deref() == Some("primary")
                        && field(&s, "status").as_deref() == Some("normal")
                })
        })
    }

    fn wait_for_primary(&self) -> usize {
        let mut primary = None;
        wait_until("a normal primary", Duration::from_secs(30), || {
            primary = self.primary();
            primary.is_some()
        });
        primary.unwrap()
    }

    fn status_of(&self, i: usize) -> String {
        status(self.resp[i]).unwrap_or_default()
    }
}

/// What the writers had acknowledged: per writer, the values `n` whose
/// `SET d{w}:{n} n` returned OK, and the highest `INCR c{w}` result.
#[derive(Default)]
struct Acked {
    sets: Vec<Vec<u64>>,
    incr_max: Vec<u64>,
}

/// Writer `w`: `SET d{w}:{n} n` then `INCR c{w}`, for n = 1, 2, ...,
/// through whichever node answers, moving on when one fails.
fn writer(w: usize, resp: Vec<SocketAddr>, stop: Arc<AtomicBool>, acked: Arc<Mutex<Acked>>) {
    let mut node = w % resp.len();
    let mut connection = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = connection.as_mut() else {
            connection = connect(resp[node]);
            if connection.is_none() {
                node = (node + 1) % resp.len();
                thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        n += 1;
        let set = redis::cmd("SET")
            .arg(format!("d{w}:{n}"))
            .arg(n)
            .query::<String>(c);
        match set {
            Ok(reply) if reply == "OK" => acked.lock().unwrap().sets[w].push(n),
            _ => {
                connection = None;
                node = (node + 1) % resp.len();
                continue;
            }
        }
        match redis::cmd("INCR").arg(format!("c{w}")).query::<u64>(c) {
            Ok(value) => {
                let mut acked = acked.lock().unwrap();
                acked.incr_max[w] = acked.incr_max[w].max(value);
            }
            Err(_) => {
                connection = None;
                node = (node + 1) % resp.len();
            }
        }
    }
}

struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Writers {
    fn start(resp: &[SocketAddr]) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Acked {
            sets: vec![Vec::new(); WRITERS],
            incr_max: vec![0; WRITERS],
        }));
        let threads = (0..WRITERS)
            .map(|w| {
                let (resp, stop, acked) = (resp.to_vec(), stop.clone(), acked.clone());
                thread::spawn(move || writer(w, resp, stop, acked))
            })
            .collect();
        Writers {
            stop,
            acked,
            threads,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().sets.iter().map(Vec::len).sum()
    }

    /// Waits until `more` further writes were acknowledged.
    fn wait_for_progress(&self, more: usize, what: &str) {
        let start = self.acked_count();
        wait_until(what, Duration::from_secs(30), || {
            self.acked_count() >= start + more
        });
    }

    fn stop(self) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        Arc::try_unwrap(self.acked)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// Reads every acknowledged write back through the primary (linearizable
/// reads) and checks it.
fn check_acked(cluster: &Cluster, acked: &Acked, scenario: &str) {
    let primary = cluster.wait_for_primary();
    let c = connect(cluster.resp[primary]).expect("connect to the primary");
    check_acked_on(c, acked, scenario);
}

/// Reads every acknowledged write back from node `k`'s own copy
/// (`READONLY`), once it executed everything the primary committed.
fn check_acked_at(cluster: &Cluster, k: usize, acked: &Acked, scenario: &str) {
    let primary = cluster.wait_for_primary();
    let committed: u64 = field(&cluster.status_of(primary), "commit_number")
        .and_then(|c| c.parse().ok())
        .unwrap();
    wait_until(
        &format!("{scenario}: node {k} executed up to op {committed}"),
        Duration::from_secs(30),
        || {
            field(&cluster.status_of(k), "commit_number")
                .and_then(|c| c.parse::<u64>().ok())
                .is_some_and(|c| c >= committed)
        },
    );
    let mut c = connect(cluster.resp[k]).expect("connect to the repaired node");
    let _: String = redis::cmd("READONLY").query(&mut c).unwrap();
    check_acked_on(c, acked, &format!("{scenario}, node {k}'s own copy"));
}

fn check_acked_on(mut c: redis::Connection, acked: &Acked, scenario: &str) {
    let mut checked = 0;
    for (w, values) in acked.sets.iter().enumerate() {
        for chunk in values.chunks(200) {
            let keys: Vec<String> = chunk.iter().map(|n| format!("d{w}:{n}")).collect();
            let got: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
            for (n, value) in chunk.iter().zip(got) {
                assert_eq!(
                    value,
                    Some(*n),
                    "{scenario}: acknowledged write d{w}:{n} lost (read {value:?})"
                );
                checked += 1;
            }
        }
        let counter: Option<u64> = redis::cmd("GET")
            .arg(format!("c{w}"))
            .query(&mut c)
            .unwrap();
        assert!(
            counter.unwrap_or(0) >= acked.incr_max[w],
            "{scenario}: counter c{w} is {counter:?}, below the acknowledged {}",
            acked.incr_max[w]
        );
    }
    assert!(checked > 0, "{scenario}: nothing was acknowledged");
}

/// Every `CHECKPOINT_INTERVAL_OPS` committed ops a replica takes a
/// checkpoint (vr-core's default, which vr-kv keeps); the log's entries at
/// or below it are no longer needed, so damage there is rightly ignored.
const CHECKPOINT_INTERVAL_OPS: u64 = 4096;

/// Flips one byte in the body of an entry record of node's log (a sector
/// whose record kind, header byte 10, is 2: an entry) above the latest
/// possible checkpoint and followed by other records, so that the
/// record's checksum fails where the restart needs it. Returns the file
/// and offset.
fn flip_a_logged_byte(dir: &Path) -> (PathBuf, u64) {
    let mut segments: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("log-"))
        })
        .collect();
    segments.sort();
    let segment = segments.last().expect("a log segment").clone();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    // Entry records that start a sector, with their op (header bytes
    // 32..40, little-endian).
    let entries: Vec<(usize, u64)> = (0..bytes.len() / 4096)
        .filter(|&s| bytes[s * 4096..].starts_with(b"VRSTOR\r\n") && bytes[s * 4096 + 10] == 2)
        .map(|s| {
            let op = u64::from_le_bytes(bytes[s * 4096 + 32..s * 4096 + 40].try_into().unwrap());
            (s, op)
        })
        .collect();
    let head = entries.iter().map(|e| e.1).max().expect("an entry record");
    // The latest checkpoint is at most the last multiple of the interval
    // that the log reaches; the last two records are left intact, so that
    // the damaged one is not taken for a torn tail.
    let checkpoint_max = head / CHECKPOINT_INTERVAL_OPS * CHECKPOINT_INTERVAL_OPS;
    let above: Vec<usize> = entries
        .iter()
        .filter(|e| e.1 > checkpoint_max)
        .map(|e| e.0)
        .collect();
    assert!(
        above.len() >= 3,
        "too few entry records above op {checkpoint_max} to damage one: {}",
        above.len()
    );
    let sector = above[(above.len() - 2) / 2];
    let offset = (sector * 4096 + 96 + 4) as u64;
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut byte = [0u8];
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&[byte[0] ^ 0x5a]).unwrap();
    file.sync_all().unwrap();
    (segment, offset)
}

/// Kills node `k`, lets `damage` do something to its data directory,
/// restarts it, waits until it recovered from the others, then kills
/// another node so that the reads depend on `k`'s copy, checks every
/// acknowledged write, and restarts that node.
fn repair_then_depend_on_it(
    cluster: &mut Cluster,
    writers: Writers,
    k: usize,
    scenario: &str,
    damage: impl FnOnce(&Path),
) -> Writers {
    cluster.nodes[k].kill();
    damage(&cluster.data_dir(k));
    cluster.nodes[k].start();
    let start = Instant::now();
    loop {
        let s = cluster.status_of(k);
        if field(&s, "status").as_deref() == Some("normal")
            && field(&s, "recoveries_completed").is_some_and(|r| r != "0")
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let logs: Vec<String> = (0..3)
                .map(|i| {
                    let log = cluster.nodes[i].log_text();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    format!(
                        "--- node {i} ({}):\n{}",
                        cluster.status_of(i).replace("\r\n", " "),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            panic!(
                "{scenario}: node {k} did not recover in 60 s\n{}",
                logs.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    writers.wait_for_progress(50, &format!("{scenario}: writes after the repair"));
    let acked = writers.stop();
    // The repaired node's own copy holds every acknowledged write...
    check_acked_at(cluster, k, &acked, scenario);
    // ... and with another node down it is half of every quorum.
    let other = (k + 1) % 3;
    cluster.nodes[other].kill();
    check_acked(cluster, &acked, scenario);
    cluster.nodes[other].start();
    cluster.wait_for_primary();
    Writers::start(&cluster.resp)
}

fn durable_cluster_survives_every_kill(runtime: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(runtime, true);
    let writers = Writers::start(&cluster.resp);

    // 1. Every node at once, three times.
    for round in 0..3 {
        writers.wait_for_progress(100, &format!("writes before kill-all {round}"));
        for node in &mut cluster.nodes {
            node.kill();
        }
        for node in &mut cluster.nodes {
            node.start();
        }
        cluster.wait_for_primary();
    }
    writers.wait_for_progress(100, "writes after the last kill-all");
    let acked = writers.stop();
    check_acked(&cluster, &acked, "kill-all");
    for i in 0..3 {
        let s = cluster.status_of(i);
        assert_eq!(field(&s, "durability").as_deref(), Some("disk"));
        assert_eq!(
            field(&s, "clusters_formed").as_deref(),
            Some("0"),
            "node {i} formed a new cluster after a restart: {s}"
        );
        assert!(
            field(&s, "restarts_from_disk").is_some_and(|r| r == "1"),
            "node {i} did not restart from its disk: {s}"
        );
    }

    // 2. One at a time, restarted at once, 150 ms apart; the primary two
    //    times in three.
    let mut writers = Writers::start(&cluster.resp);
    writers.wait_for_progress(50, "writes before the rolling kills");
    let started = Instant::now();
    for kill in 0..9 {
        let victim = match (kill % 3, cluster.primary()) {
            (0 | 1, Some(primary)) => primary,
            _ => kill % 3,
        };
        cluster.nodes[victim].kill();
        cluster.nodes[victim].start();
        thread::sleep(Duration::from_millis(150));
    }
    let rolling = started.elapsed();
    writers.wait_for_progress(100, "writes after the rolling kills");
    let acked = writers.stop();
    check_acked(&cluster, &acked, "rolling kills");
    eprintln!("{runtime}: 9 rolling kills in {rolling:?}");

    // 3. A deleted data directory.
    writers = Writers::start(&cluster.resp);
    writers.wait_for_progress(50, "writes before deleting a data directory");
    writers = repair_then_depend_on_it(&mut cluster, writers, 1, "deleted data dir", |dir| {
        fs::remove_dir_all(dir).unwrap();
    });

    // 4. One flipped byte in a log record.
    writers.wait_for_progress(300, "writes before damaging a log");
    let k = 2;
    // Damage is detected only in an entry the restart needs: above the
    // latest checkpoint. Kill the node while its log holds many of those.
    let past_checkpoint = |c: &Cluster| {
        field(&c.status_of(k), "op_number")
            .and_then(|op| op.parse::<u64>().ok())
            .is_some_and(|op| (1024..3584).contains(&(op % CHECKPOINT_INTERVAL_OPS)))
    };
    wait_until(
        "node 2's log to reach well past a checkpoint",
        Duration::from_secs(60),
        || past_checkpoint(&cluster),
    );
    let mut flipped = None;
    writers = repair_then_depend_on_it(&mut cluster, writers, k, "flipped byte", |dir| {
        flipped = Some(flip_a_logged_byte(dir));
    });
    let log = cluster.nodes[k].log_text();
    assert!(
        log.contains("cannot be trusted"),
        "the flipped byte at {flipped:?} was not detected; node log:\n{log}"
    );
    writers.wait_for_progress(50, "writes after the flipped byte");
    let acked = writers.stop();
    check_acked(&cluster, &acked, "after the flipped byte");
}

#[test]
fn durable_cluster_survives_every_kill_on_tokio() {
    durable_cluster_survives_every_kill("tokio");
}

#[test]
fn durable_cluster_survives_every_kill_on_mio() {
    durable_cluster_survives_every_kill("mio");
}

#[test]
fn durable_cluster_survives_every_kill_on_glommio() {
    durable_cluster_survives_every_kill("glommio");
}

/// Diskless, the same whole-cluster kill loses the data (the model allows
/// at most f replicas down or recovering), and the node that forms the new
/// cluster says so.
#[test]
fn a_diskless_cluster_killed_whole_comes_back_empty_and_says_so() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start("tokio", false);
    let primary = cluster.wait_for_primary();
    let mut c = connect(cluster.resp[primary]).unwrap();
    let _: String = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    drop(c);
    for node in &mut cluster.nodes {
        node.kill();
    }
    for node in &mut cluster.nodes {
        node.start();
    }
    let primary = cluster.wait_for_primary();
    let mut c = connect(cluster.resp[primary]).unwrap();
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(
        value, None,
        "a diskless cluster killed whole kept its data?"
    );
    let formed: Vec<usize> = (0..3)
        .filter(|&i| field(&cluster.status_of(i), "clusters_formed").is_some_and(|f| f != "0"))
        .collect();
    assert!(!formed.is_empty(), "no node says it formed a new cluster");
    for i in formed {
        assert_eq!(
            field(&cluster.status_of(i), "durability").as_deref(),
            Some("memory")
        );
        let log = cluster.nodes[i].log_text();
        assert!(
            log.contains("formed a new, empty cluster"),
            "node {i} formed a cluster without a warning; log:\n{log}"
        );
    }
}
