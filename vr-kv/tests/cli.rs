//! The `vr-kv` binary starts a local cluster and prints its ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn local_starts_and_prints_its_ports() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vr-kv"))
        .args(["local", "--replicas", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ports = Vec::new();
    for i in 0..3 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let prefix = format!("replica {i}: redis-cli -p ");
        assert!(line.starts_with(&prefix), "{line:?}");
        ports.push(line[prefix.len()..].trim().parse::<u16>().unwrap());
    }
    // The port answers.
    let mut raw = TcpStream::connect(("127.0.0.1", ports[1])).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    raw.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn other_runtimes_are_not_supported_yet() {
    for runtime in ["mio", "glommio"] {
        let output = Command::new(env!("CARGO_BIN_EXE_vr-kv"))
            .args(["local", "--runtime", runtime])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("not supported yet"), "{stderr}");
    }
}
