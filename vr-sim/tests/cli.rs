//! The `vr-sim` binary: `check` on small written histories, and a seed run.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vr_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vr-sim"))
        .args(args)
        .output()
        .expect("the vr-sim binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes `text` to a file of its own under the target directory.
fn history_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-histories");
    std::fs::create_dir_all(&dir).expect("create the history folder");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the history");
    path
}

/// Client 2's read starts after client 1's write of "a" completed, so it
/// must see "a" (or a later value).
const OK: &str = r#"{"process":1,"type":"invoke","f":"write","key":"x","value":"a","time":1}
{"process":1,"type":"ok","f":"write","key":"x","value":"a","time":2}
{"process":2,"type":"invoke","f":"read","key":"x","value":null,"time":3}
{"process":3,"type":"invoke","f":"incr","key":"n","value":2,"time":3}
{"process":2,"type":"ok","f":"read","key":"x","value":"a","time":4}
{"process":3,"type":"ok","f":"incr","key":"n","value":2,"time":5}
"#;

/// The same, but the read returns nil after the write completed: stale.
const STALE: &str = r#"{"process":1,"type":"invoke","f":"write","key":"x","value":"a","time":1}
{"process":1,"type":"ok","f":"write","key":"x","value":"a","time":2}
{"process":2,"type":"invoke","f":"read","key":"x","value":null,"time":3}
{"process":2,"type":"ok","f":"read","key":"x","value":null,"time":4}
"#;

#[test]
fn check_says_linearizable() {
    let path = history_file("ok.jsonl", OK);
    let out = vr_sim(&["check", "--format", "jsonl", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out).trim(), "linearizable");
}

#[test]
fn check_says_not_linearizable() {
    let path = history_file("stale.jsonl", STALE);
    let out = vr_sim(&["check", "--format", "jsonl", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(stdout(&out).lines().next(), Some("not linearizable"));
}

#[test]
fn check_rejects_an_unreadable_history_with_its_reason() {
    let path = history_file("broken.jsonl", "{\"process\":1,\"type\":\"ok\"\n");
    let out = vr_sim(&["check", "--format", "jsonl", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("line 1"), "{}", stdout(&out));
    let missing = vr_sim(&["check", "--format", "jsonl", "/nonexistent/history.jsonl"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn check_reads_the_other_formats() {
    let etcd = "INFO  jepsen.util - 0\t:invoke\t:write\t1\n\
                INFO  jepsen.util - 0\t:ok\t:write\t1\n\
                INFO  jepsen.util - 1\t:invoke\t:read\tnil\n\
                INFO  jepsen.util - 1\t:ok\t:read\t1\n";
    let path = history_file("etcd.log", etcd);
    let out = vr_sim(&["check", "--format", "jepsen-etcd", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Jepsen also separates the fields by runs of spaces (issue 17, item 7):
    // the same history, and one that a stale read makes not linearizable.
    let spaced = "INFO  jepsen.util - 0   :invoke :write  1\n\
                  INFO  jepsen.util - 0   :ok     :write  1\n\
                  INFO  jepsen.util - 1   :invoke :read   nil\n\
                  INFO  jepsen.util - 1   :ok     :read   1\n";
    let path = history_file("etcd-spaces.log", spaced);
    let out = vr_sim(&["check", "--format", "jepsen-etcd", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let stale = spaced.replace(":ok     :read   1", ":ok     :read   nil");
    let path = history_file("etcd-spaces-stale.log", &stale);
    let out = vr_sim(&["check", "--format", "jepsen-etcd", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let kv = "{:process 0, :type :invoke, :f :put, :key \"k\", :value \"v\"}\n\
              {:process 0, :type :ok, :f :put, :key \"k\", :value \"v\"}\n\
              {:process 1, :type :invoke, :f :get, :key \"k\", :value nil}\n\
              {:process 1, :type :ok, :f :get, :key \"k\", :value \"\"}\n";
    let path = history_file("kv.log", kv);
    let out = vr_sim(&["check", "--format", "porcupine-kv", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

#[test]
fn a_seed_run_writes_its_history_and_the_checker_agrees() {
    let path = history_file("seed-2.jsonl", "");
    let out = vr_sim(&["--seed", "2", "--history-out", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).lines().last() == Some("ok"),
        "{}",
        stdout(&out)
    );
    let check = vr_sim(&["check", "--format", "jsonl", path.to_str().unwrap()]);
    assert_eq!(stdout(&check).trim(), "linearizable");

    let traced = vr_sim(&["--seed", "2", "--trace"]);
    let text = stdout(&traced);
    assert!(
        text.contains("deliver") && text.contains("commit"),
        "{text}"
    );
    // The trace hash is printed and the same as without --trace.
    let hash = |s: &str| {
        s.split("trace hash ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    };
    assert_eq!(hash(&text), hash(&stdout(&out)));
    assert!(hash(&text).is_some());
}

#[test]
fn a_batch_run_prints_totals_and_fails_on_a_violation() {
    let out = vr_sim(&["--seeds", "3", "--start", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("seeds: 3"), "{text}");
    assert!(text.contains("violations: 0"), "{text}");
    assert!(
        text.contains("restarts") && text.contains("installed from a peer"),
        "{text}"
    );
    // The new injected bugs are named on the command line too.
    for bug in ["recovery-without-crash-vectors", "truncate-log-on-new-view"] {
        let out = vr_sim(&["--seed", "1", "--bug", bug]);
        assert!(stdout(&out).contains("injected-bug="), "{}", stdout(&out));
    }

    let bad = vr_sim(&[
        "--seeds",
        "5",
        "--start",
        "3",
        "--bug",
        "commit-without-quorum",
    ]);
    assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    assert!(stdout(&bad).contains("FAIL seed"), "{}", stdout(&bad));
}

/// Durable replicas on the command line: `--durability disk` prints the
/// disks' counters; a storage bug is named with `--bug` like the core's
/// (it forces durable replicas) and fails its pinned seed.
#[test]
fn durable_runs_and_the_storage_bug_on_the_command_line() {
    let out = vr_sim(&["--seed", "160", "--durability", "disk"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains(" durable disk-latency="), "{text}");
    assert!(text.contains("restarts from disk"), "{text}");
    let buggy = vr_sim(&["--seed", "160", "--bug", "trust-unchecked-record"]);
    assert_eq!(buggy.status.code(), Some(1), "{}", stdout(&buggy));
    assert!(
        stdout(&buggy).contains("VIOLATION agreement"),
        "{}",
        stdout(&buggy)
    );
    let memory = vr_sim(&["--seed", "14", "--durability", "memory"]);
    assert!(
        !stdout(&memory).contains(" durable "),
        "{}",
        stdout(&memory)
    );
}
