//! The `vr-kv` binary: `local` starts a cluster and prints its ports, and
//! `node` processes form a cluster, on every runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUNTIMES: [&str; 3] = ["tokio", "mio", "glommio"];

/// Kills the process when dropped, so that a failed assertion leaves no
/// server behind; if the test is failing, prints what the process logged.
struct Killed(Child, tempfile::NamedTempFile);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.1.path()).unwrap_or_default();
            eprintln!("--- stderr of {:?}:\n{log}", self.0.id());
        }
    }
}

fn spawn(args: &[&str]) -> Killed {
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vr-kv"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap();
    Killed(child, log)
}

/// Sends `command` (inline) on a new connection and reads `want.len()`
/// bytes of answer.
fn ask(address: SocketAddr, command: &str, want: &str) -> String {
    let mut raw = TcpStream::connect(address).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut answer = vec![0u8; want.len()];
    raw.read_exact(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn local_starts_and_prints_its_ports_on_every_runtime() {
    for runtime in RUNTIMES {
        let mut child = spawn(&["local", "--replicas", "3", "--runtime", runtime]);
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut ports = Vec::new();
        for i in 0..3 {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let prefix = format!("replica {i}: redis-cli -p ");
            assert!(line.starts_with(&prefix), "{runtime}: {line:?}");
            ports.push(line[prefix.len()..].trim().parse::<u16>().unwrap());
        }
        let at = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
        assert_eq!(ask(at(1), "PING", "+PONG\r\n"), "+PONG\r\n", "{runtime}");
        // Through a backup to the primary, and read back elsewhere.
        assert_eq!(ask(at(1), "SET cli yes", "+OK\r\n"), "+OK\r\n", "{runtime}");
        assert_eq!(ask(at(2), "GET cli", "$3\r\nyes\r\n"), "$3\r\nyes\r\n");
    }
}

/// Free loopback ports: bound, read, released. Another process could take
/// one in between, which on a test machine does not happen in practice.
fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

#[test]
fn node_processes_on_three_runtimes_form_one_cluster() {
    // Replica i runs on RUNTIMES[i]: each runtime's `node` serves, and they
    // speak one protocol.
    // One call, so that all of them differ (ports released by one call
    // could come back from the next).
    let addresses = free_addresses(6);
    let (vr, resp) = (addresses[..3].to_vec(), addresses[3..].to_vec());
    let cluster = vr
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, runtime) in RUNTIMES.iter().enumerate() {
        let mut child = spawn(&[
            "node",
            "--cluster",
            &cluster,
            "--replica",
            &i.to_string(),
            "--listen-resp",
            &resp[i].to_string(),
            "--runtime",
            runtime,
        ]);
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with(&format!("replica {i}: VR on ")),
            "{line:?}"
        );
        nodes.push(child);
    }
    // The first write waits for the replicas to find each other: every
    // node starts recovering, and they form view 0 together (§4.3,
    // `form_new_cluster`). It once never happened (no write within 30 s, in
    // CI and in 1 of 10 loaded local runs): r0 formed first and took a
    // request alone, and the others would not form with a replica holding
    // an op (docs/testing.md, bug 15, fixed in vr-core; the simulator's
    // boot seeds cover it). 60 s keeps the test about correctness, not
    // timing, on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut k = 0;
    while ask(resp[2], &format!("SET n{k} 1"), "+OK\r\n") != "+OK\r\n" {
        assert!(Instant::now() < deadline, "the cluster never took a write");
        k += 1;
    }
    for i in 0..3 {
        let key = format!("from{i}");
        assert_eq!(
            ask(resp[i], &format!("SET {key} {i}"), "+OK\r\n"),
            "+OK\r\n"
        );
        let j = (i + 1) % 3;
        let want = format!("$1\r\n{i}\r\n");
        assert_eq!(ask(resp[j], &format!("GET {key}"), &want), want);
    }
}
