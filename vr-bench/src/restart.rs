//! `vr-bench restart`: how long a killed replica takes to be normal again
//! (issue 18, item 8).
//!
//! Three real `vr-kv node` processes on loopback, durable (`--data-dir`) or
//! diskless, are loaded with a few MiB of keys and kept busy by closed-loop
//! writers. Then, trial after trial, a backup or the primary is killed with
//! SIGKILL and restarted at once with the same command line. A trial's time
//! runs from the restart (just before the process is spawned) until the
//! restarted node's `VR.STATUS` says `status:normal` and its
//! `commit_number` has reached the commit-number the primary reported just
//! before the kill: it serves again and has every write that was committed
//! when it died.
//!
//! Each trial also records when the process was listening (the line it
//! prints once bound) and when it first said `normal`, so that a slow trial
//! shows where its time went. The `vr-kv` binary is taken from beside this
//! one (`target/release/vr-kv`: build it first) unless `--vr-kv` says.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::runtime::Runtime;

/// How a node keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `--data-dir`: restarts from its disk.
    Disk,
    /// No data directory: restarts empty and recovers from the others
    /// (§4.3), fetching the state by checkpoint (§5.2).
    Diskless,
}

impl Mode {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Disk => "disk",
            Mode::Diskless => "diskless",
        }
    }
}

/// Which replica a trial kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Victim {
    /// A backup (the two take turns).
    Backup,
    /// The primary: the others change view while it restarts.
    Primary,
}

impl Victim {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Victim::Backup => "backup",
            Victim::Primary => "primary",
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct RestartPlan {
    /// The `vr-kv` binary.
    pub vr_kv: PathBuf,
    /// Runtimes, one cluster each per mode.
    pub runtimes: Vec<Runtime>,
    /// Durable, diskless, or both.
    pub modes: Vec<Mode>,
    /// Which replicas to kill; every trial of the first, then of the next.
    pub victims: Vec<Victim>,
    /// Trials per runtime, mode and victim.
    pub trials: usize,
    /// Keys written before the trials (and overwritten during them).
    pub keys: usize,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Writers during the trials (each one SET at a time).
    pub writers: usize,
    /// All writers together send at most this many SETs per second; `None`:
    /// each sends its next as soon as the last is answered (closed loop,
    /// which on a small machine takes every CPU cycle the nodes leave).
    pub rate_per_sec: Option<f64>,
    /// Time under load between a cluster being healthy and the next kill.
    pub settle: Duration,
    /// A trial that takes longer than this fails.
    pub timeout: Duration,
    /// Where the nodes' data directories and logs go (a fresh directory
    /// under it per cluster, removed afterwards unless `keep`).
    pub work_dir: PathBuf,
    /// Keep the logs and data directories.
    pub keep: bool,
}

/// One kill and restart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trial {
    /// From the restart until the process listened.
    pub bound: Duration,
    /// Until it first said `status:normal` (`None`: never did).
    pub normal: Option<Duration>,
    /// Until it was normal with the commit-number of the kill (`None`:
    /// not within the timeout).
    pub caught_up: Option<Duration>,
}

/// The trials of one runtime, mode and victim.
#[derive(Clone, Debug)]
pub struct RestartRow {
    /// The runtime.
    pub runtime: Runtime,
    /// Durable or diskless.
    pub mode: Mode,
    /// Backup or primary.
    pub victim: Victim,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
    /// Writes acknowledged during the trials, all together.
    pub writes: u64,
}

impl RestartRow {
    /// Restart-to-normal times of the trials that finished, sorted, in
    /// milliseconds.
    pub fn times_ms(&self) -> Vec<f64> {
        let mut times: Vec<f64> = (self.trials.iter())
            .filter_map(|t| t.caught_up)
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        times.sort_by(f64::total_cmp);
        times
    }

    /// Trials that did not finish within the timeout.
    pub fn failed(&self) -> usize {
        self.trials.iter().filter(|t| t.caught_up.is_none()).count()
    }
}

/// The median of sorted `values` (0 for none).
fn median(values: &[f64]) -> f64 {
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The table printed at the end.
pub fn restart_table(rows: &[RestartRow]) -> String {
    let mut out = String::from(
        "runtime  mode      victim   trials  median ms  max ms  min ms  failed  listening ms  normal ms\n",
    );
    for row in rows {
        let times = row.times_ms();
        let mut bound: Vec<f64> = (row.trials.iter())
            .map(|t| t.bound.as_secs_f64() * 1e3)
            .collect();
        bound.sort_by(f64::total_cmp);
        let mut normal: Vec<f64> = (row.trials.iter())
            .filter_map(|t| t.normal)
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        normal.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "{:<8} {:<9} {:<8} {:>6}  {:>9.1}  {:>6.1}  {:>6.1}  {:>6}  {:>12.1}  {:>9.1}\n",
            row.runtime.name(),
            row.mode.name(),
            row.victim.name(),
            row.trials.len(),
            median(&times),
            times.last().copied().unwrap_or(0.0),
            times.first().copied().unwrap_or(0.0),
            row.failed(),
            median(&bound),
            median(&normal),
        ));
    }
    out
}

/// Runs `plan`, printing a line per trial on stderr.
pub fn run_restarts(plan: &RestartPlan) -> io::Result<Vec<RestartRow>> {
    if !plan.vr_kv.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} not found: build it first (cargo build --release -p vr-kv) or pass --vr-kv",
                plan.vr_kv.display()
            ),
        ));
    }
    let mut rows = Vec::new();
    for &runtime in &plan.runtimes {
        for &mode in &plan.modes {
            let dir = plan.work_dir.join(format!(
                "vr-bench-restart-{}-{}-{}",
                std::process::id(),
                runtime.name(),
                mode.name()
            ));
            let result = measure_cluster(plan, runtime, mode, &dir);
            if !plan.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            rows.extend(result?);
        }
    }
    Ok(rows)
}

fn measure_cluster(
    plan: &RestartPlan,
    runtime: Runtime,
    mode: Mode,
    dir: &Path,
) -> io::Result<Vec<RestartRow>> {
    std::fs::create_dir_all(dir)?;
    let mut cluster = Cluster::start(plan, runtime, mode, dir)?;
    cluster.wait_healthy(plan.timeout)?;
    eprintln!(
        "{} {}: cluster up; writing {} keys of {} B",
        runtime.name(),
        mode.name(),
        plan.keys,
        plan.value_bytes
    );
    prefill(&cluster.resp, plan.keys, plan.value_bytes)?;
    let load = Load::start(&cluster.resp, plan);
    let mut rows = Vec::new();
    for &victim in &plan.victims {
        let writes_before = load.acknowledged.load(Ordering::Relaxed);
        let mut trials = Vec::new();
        for number in 0..plan.trials {
            cluster.wait_healthy(plan.timeout)?;
            thread::sleep(plan.settle);
            cluster.wait_healthy(plan.timeout)?;
            let trial = cluster.trial(victim, number, &load, plan.timeout)?;
            eprintln!(
                "{} {} {} #{number}: listening {:.1} ms, normal {}, caught up {}",
                runtime.name(),
                mode.name(),
                victim.name(),
                trial.bound.as_secs_f64() * 1e3,
                show_ms(trial.normal),
                show_ms(trial.caught_up),
            );
            trials.push(trial);
        }
        rows.push(RestartRow {
            runtime,
            mode,
            victim,
            trials,
            writes: load.acknowledged.load(Ordering::Relaxed) - writes_before,
        });
    }
    load.stop();
    drop(cluster);
    Ok(rows)
}

fn show_ms(duration: Option<Duration>) -> String {
    duration.map_or("never".to_owned(), |d| {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    })
}

/// One `vr-kv node` process, restartable with the same arguments.
struct Node {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Kept open: the node printed one line to it, and a closed pipe would
    /// make a later print fail.
    stdout: Option<ChildStdout>,
}

impl Node {
    /// Starts the process and waits until it says it listens.
    fn start(&mut self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()?;
        let Some(stdout) = child.stdout.take() else {
            return Err(io::Error::other("no stdout"));
        };
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if !line.starts_with("replica ") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "vr-kv did not start ({line:?}); see {}",
                self.log.display()
            )));
        }
        self.stdout = Some(reader.into_inner());
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and reaps the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stdout = None;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three nodes on loopback.
struct Cluster {
    nodes: Vec<Node>,
    resp: Vec<SocketAddr>,
}

impl Cluster {
    fn start(plan: &RestartPlan, runtime: Runtime, mode: Mode, dir: &Path) -> io::Result<Cluster> {
        let addresses = free_addresses(6)?;
        let (vr, resp) = addresses.split_at(3);
        let cluster: Vec<String> = vr.iter().map(|a| a.to_string()).collect();
        let mut nodes = Vec::new();
        for (i, resp) in resp.iter().enumerate() {
            let mut args: Vec<String> = [
                "node",
                "--cluster",
                &cluster.join(","),
                "--replica",
                &i.to_string(),
                "--listen-resp",
                &resp.to_string(),
                "--runtime",
                runtime.name(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if mode == Mode::Disk {
                args.push("--data-dir".to_owned());
                args.push(dir.join(format!("replica-{i}")).display().to_string());
            }
            nodes.push(Node {
                program: plan.vr_kv.clone(),
                args,
                log: dir.join(format!("node-{i}.log")),
                child: None,
                stdout: None,
            });
        }
        for node in &mut nodes {
            node.start()?;
        }
        Ok(Cluster {
            nodes,
            resp: resp.to_vec(),
        })
    }

    /// Waits until every node is normal in one view with one primary.
    fn wait_healthy(&self, timeout: Duration) -> io::Result<()> {
        let start = Instant::now();
        loop {
            let statuses: Vec<Option<Status>> = self.resp.iter().map(|&a| status(a)).collect();
            let healthy = statuses
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s.normal))
                && statuses.iter().flatten().filter(|s| s.primary).count() == 1
                && statuses
                    .iter()
                    .flatten()
                    .all(|s| Some(s.view) == statuses[0].as_ref().map(|s| s.view));
            if healthy {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the cluster did not become healthy: {statuses:?}"),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn primary(&self) -> Option<(usize, Status)> {
        (0..self.resp.len()).find_map(|i| {
            status(self.resp[i])
                .filter(|s| s.primary && s.normal)
                .map(|s| (i, s))
        })
    }

    /// Kills `victim`, restarts it and times its return.
    fn trial(
        &mut self,
        victim: Victim,
        number: usize,
        load: &Load,
        timeout: Duration,
    ) -> io::Result<Trial> {
        let Some((primary, _)) = self.primary() else {
            return Err(io::Error::other("no primary"));
        };
        let index = match victim {
            Victim::Primary => primary,
            // The two backups take turns.
            Victim::Backup => (primary + 1 + number % 2) % self.nodes.len(),
        };
        load.avoid.store(index, Ordering::Relaxed);
        // The primary's commit-number just before the kill: committed ops
        // the restarted node must hold before it counts as back.
        let target = status(self.resp[primary])
            .map(|s| s.commit_number)
            .ok_or_else(|| io::Error::other("the primary did not answer"))?;
        self.nodes[index].kill();
        let start = Instant::now();
        self.nodes[index].start()?;
        let bound = start.elapsed();
        let mut normal = None;
        let mut caught_up = None;
        let mut connection = None;
        while start.elapsed() < timeout {
            if connection.is_none() {
                connection = Resp::connect(self.resp[index]).ok();
            }
            let answer = connection.as_mut().map(|c| c.status());
            match answer {
                Some(Ok(s)) if s.normal => {
                    normal.get_or_insert_with(|| start.elapsed());
                    if s.commit_number >= target {
                        caught_up = Some(start.elapsed());
                        break;
                    }
                }
                Some(Ok(_)) | None => {}
                Some(Err(_)) => connection = None,
            }
            thread::sleep(Duration::from_millis(1));
        }
        load.avoid.store(usize::MAX, Ordering::Relaxed);
        Ok(Trial {
            bound,
            normal,
            caught_up,
        })
    }
}

fn free_addresses(n: usize) -> io::Result<Vec<SocketAddr>> {
    // Bound together so that they differ, released just before the nodes
    // bind them.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr()).collect()
}

/// What `VR.STATUS` says, the fields used here.
#[derive(Clone, Debug)]
struct Status {
    normal: bool,
    primary: bool,
    view: u64,
    commit_number: u64,
}

impl Status {
    fn parse(text: &str) -> Option<Status> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        Some(Status {
            normal: field("status")? == "normal",
            primary: field("role")? == "primary",
            view: field("view")?.parse().ok()?,
            commit_number: field("commit_number")?.parse().ok()?,
        })
    }
}

fn status(address: SocketAddr) -> Option<Status> {
    Resp::connect(address).ok()?.status().ok()
}

/// A minimal blocking RESP2 connection: commands out, one reply each.
struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Resp {
    fn connect(address: SocketAddr) -> io::Result<Resp> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
        stream.set_nodelay(true)?;
        // A node that stopped answering fails the call rather than hangs it.
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Resp {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    fn encode(out: &mut Vec<u8>, parts: &[&[u8]]) {
        out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
        for part in parts {
            out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Reads one reply: `Ok(Some(bytes))` for a bulk or simple string,
    /// `Ok(None)` for a nil or an integer, an error for an error reply.
    fn reply(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" => Ok(Some(rest.as_bytes().to_vec())),
            ":" => Ok(None),
            "-" => Err(io::Error::other(rest.to_owned())),
            "$" => {
                let Ok(len) = rest.parse::<i64>() else {
                    return Err(io::ErrorKind::InvalidData.into());
                };
                let Ok(len) = usize::try_from(len) else {
                    return Ok(None); // $-1: nil
                };
                let mut bytes = vec![0; len + 2];
                self.reader.read_exact(&mut bytes)?;
                bytes.truncate(len);
                Ok(Some(bytes))
            }
            _ => Err(io::ErrorKind::InvalidData.into()),
        }
    }

    fn status(&mut self) -> io::Result<Status> {
        let mut out = Vec::new();
        Resp::encode(&mut out, &[b"VR.STATUS"]);
        self.send(&out)?;
        let text = self.reply()?.unwrap_or_default();
        Status::parse(&String::from_utf8_lossy(&text))
            .ok_or_else(|| io::ErrorKind::InvalidData.into())
    }
}

fn key(index: usize) -> Vec<u8> {
    format!("key:{index:08}").into_bytes()
}

/// Writes every key once, pipelined, from a few connections.
fn prefill(resp: &[SocketAddr], keys: usize, value_bytes: usize) -> io::Result<()> {
    const CONNECTIONS: usize = 4;
    const PIPELINE: usize = 64;
    let value = vec![b'v'; value_bytes];
    thread::scope(|scope| {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let value = &value;
                scope.spawn(move || -> io::Result<()> {
                    let mine: Vec<usize> = (c..keys).step_by(CONNECTIONS).collect();
                    let mut node = c % resp.len();
                    let mut connection = None;
                    for batch in mine.chunks(PIPELINE) {
                        let mut out = Vec::new();
                        for &k in batch {
                            Resp::encode(&mut out, &[b"SET", &key(k), value]);
                        }
                        // A SET may be sent again: a batch that failed (an
                        // error answer, a reply that did not come in time)
                        // goes again, through the next node, a few times.
                        let mut attempts = 0;
                        loop {
                            let done = (|| -> io::Result<()> {
                                let c = match &mut connection {
                                    Some(c) => c,
                                    None => connection.insert(Resp::connect(resp[node])?),
                                };
                                c.send(&out)?;
                                batch.iter().try_for_each(|_| c.reply().map(drop))
                            })();
                            match done {
                                Ok(()) => break,
                                Err(e) if attempts < 5 => {
                                    eprintln!("prefill through node {node}: {e}; trying again");
                                    attempts += 1;
                                    connection = None;
                                    node = (node + 1) % resp.len();
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        tasks.into_iter().try_for_each(|t| {
            t.join()
                .unwrap_or_else(|_| Err(io::Error::other("panicked")))
        })
    })
}

/// Closed-loop writers overwriting random keys, each through a node other
/// than the one being restarted.
struct Load {
    stop: Arc<AtomicBool>,
    /// The node no writer should use (`usize::MAX`: none).
    avoid: Arc<AtomicUsize>,
    acknowledged: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(resp: &[SocketAddr], plan: &RestartPlan) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let avoid = Arc::new(AtomicUsize::new(usize::MAX));
        let acknowledged = Arc::new(AtomicU64::new(0));
        // Each writer's share of the rate, as the time between its SETs.
        let interval = plan
            .rate_per_sec
            .filter(|&r| r > 0.0)
            .map(|r| Duration::from_secs_f64(plan.writers as f64 / r));
        let threads = (0..plan.writers)
            .map(|index| {
                let (stop, avoid, acknowledged) =
                    (stop.clone(), avoid.clone(), acknowledged.clone());
                let resp = resp.to_vec();
                let writer = Writer {
                    index,
                    keys: plan.keys,
                    value_bytes: plan.value_bytes,
                    interval,
                };
                thread::spawn(move || write_loop(&writer, &resp, &stop, &avoid, &acknowledged))
            })
            .collect();
        Load {
            stop,
            avoid,
            acknowledged,
            threads,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// What one writer does.
struct Writer {
    index: usize,
    keys: usize,
    value_bytes: usize,
    /// Between two of its SETs, if paced.
    interval: Option<Duration>,
}

fn write_loop(
    writer: &Writer,
    resp: &[SocketAddr],
    stop: &AtomicBool,
    avoid: &AtomicUsize,
    acknowledged: &AtomicU64,
) {
    let (keys, value_bytes) = (writer.keys, writer.value_bytes);
    let value = vec![b'w'; value_bytes];
    // xorshift64: any spread of keys will do, and runs need not repeat.
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (writer.index as u64 + 1);
    let mut node = writer.index % resp.len();
    let mut connection: Option<(usize, Resp)> = None;
    let mut recent_errors: VecDeque<Instant> = VecDeque::new();
    let mut next_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(interval) = writer.interval {
            let now = Instant::now();
            if next_at > now {
                thread::sleep(next_at - now);
            } else if now - next_at > Duration::from_millis(100) {
                // Far behind (a node was down): no burst to catch up.
                next_at = now;
            }
            next_at += interval;
        }
        let avoided = avoid.load(Ordering::Relaxed);
        if connection.as_ref().is_some_and(|(n, _)| *n == avoided) {
            connection = None;
        }
        if connection.is_none() {
            node = (node + 1) % resp.len();
            if node == avoided {
                continue;
            }
            match Resp::connect(resp[node]) {
                Ok(c) => connection = Some((node, c)),
                Err(_) => {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        let Some((_, c)) = connection.as_mut() else {
            continue;
        };
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut out = Vec::new();
        Resp::encode(
            &mut out,
            &[b"SET", &key(state as usize % keys.max(1)), &value],
        );
        match c.send(&out).and_then(|()| c.reply()) {
            Ok(_) => {
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                // The node died, or answered with an error (a view change
                // under way): try the next one, pausing when errors pile up.
                connection = None;
                let now = Instant::now();
                recent_errors.push_back(now);
                while recent_errors
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > Duration::from_millis(100))
                {
                    recent_errors.pop_front();
                }
                if recent_errors.len() > 5 {
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_parsed() {
        let text = "role:primary\r\nreplica:1\r\nreplicas:3\r\nview:4\r\nstatus:normal\r\nop_number:7\r\ncommit_number:6\r\n";
        let s = Status::parse(text).unwrap();
        assert!(s.primary && s.normal);
        assert_eq!((s.view, s.commit_number), (4, 6));
        assert!(Status::parse("role:backup\r\n").is_none());
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        assert_eq!(median(&[]), 0.0);
    }
}
