//! Agreement with Porcupine's verdicts on its test histories.
//!
//! The data lives outside the repository, in
//! `<workspace>/../shared/testdata/porcupine` (override with the environment
//! variable `VR_PORCUPINE_DIR`). Each of its folders `jepsen-etcd` and `kv`
//! has a `VERDICTS` file listing `FILE linearizable|not-linearizable`. If the
//! folder is missing the test fails when `CI=true` and is skipped (loudly)
//! otherwise.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vr_sim::history::{parse, Format};
use vr_sim::linearizability::{check_with_stats, CheckResult, DEFAULT_STEP_LIMIT};

fn data_dir() -> PathBuf {
    match std::env::var_os("VR_PORCUPINE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/porcupine"),
    }
}

fn verdicts(folder: &Path) -> Vec<(String, bool)> {
    let path = folder.join("VERDICTS");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let mut words = l.split_whitespace();
            let (Some(file), Some(verdict), None) = (words.next(), words.next(), words.next())
            else {
                panic!(
                    "{}:{}: expected `FILE VERDICT`, got {l:?}",
                    path.display(),
                    i + 1
                );
            };
            let linearizable = match verdict {
                "linearizable" => true,
                "not-linearizable" => false,
                v => panic!("{}:{}: unknown verdict {v:?}", path.display(), i + 1),
            };
            (file.to_string(), linearizable)
        })
        .collect()
}

#[test]
fn verdicts_agree_with_porcupine() {
    let dir = data_dir();
    if !dir.is_dir() {
        let msg = format!(
            "porcupine test data {} not found (set VR_PORCUPINE_DIR)",
            dir.display()
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("\n*** SKIPPED: {msg} ***\n");
        return;
    }

    let mut agreed = 0;
    let mut disagreements = Vec::new();
    let mut timings: Vec<(Duration, String)> = Vec::new();
    for (folder, format) in [
        ("jepsen-etcd", Format::JepsenEtcd),
        ("kv", Format::PorcupineKv),
    ] {
        let folder_path = dir.join(folder);
        let expected = verdicts(&folder_path);
        assert!(
            !expected.is_empty(),
            "{}: no verdicts",
            folder_path.display()
        );
        for (file, linearizable) in expected {
            let path = folder_path.join(&file);
            let name = format!("{folder}/{file}");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let history = parse(format, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let start = Instant::now();
            let (result, stats) = check_with_stats(&history, DEFAULT_STEP_LIMIT);
            timings.push((
                start.elapsed(),
                format!("{name} ({} ops, {} steps)", stats.operations, stats.steps),
            ));
            let ok = matches!(
                (&result, linearizable),
                (CheckResult::Linearizable, true) | (CheckResult::NotLinearizable { .. }, false)
            );
            if ok {
                agreed += 1;
            } else {
                let want = if linearizable {
                    "linearizable"
                } else {
                    "not-linearizable"
                };
                disagreements.push(format!("{name}: expected {want}, got {result}"));
            }
        }
    }

    timings.sort();
    let total: Duration = timings.iter().map(|(t, _)| *t).sum();
    eprintln!(
        "porcupine: {agreed} of {} verdicts agree; checking took {total:?} in all; slowest:",
        timings.len()
    );
    for (t, name) in timings.iter().rev().take(5) {
        eprintln!("  {t:>12?}  {name}");
    }
    assert!(
        disagreements.is_empty(),
        "disagreements:\n{}",
        disagreements.join("\n")
    );
}

/// Jepsen writes a log's fields separated by tabs or by runs of spaces, and
/// the checker must read both alike (issue 17, item 7): every `jepsen-etcd`
/// history, with each tab turned into one to four spaces at test time (the
/// data stays outside the repository), parses to the same history.
#[test]
fn jepsen_logs_separated_by_spaces_parse_as_with_tabs() {
    let folder = data_dir().join("jepsen-etcd");
    if !folder.is_dir() {
        let msg = format!(
            "porcupine test data {} not found (set VR_PORCUPINE_DIR)",
            folder.display()
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("\n*** SKIPPED: {msg} ***\n");
        return;
    }
    let mut files = 0;
    let mut tabs_replaced = 0usize;
    for (file, _) in verdicts(&folder) {
        let path = folder.join(&file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut spaced = String::with_capacity(text.len() * 2);
        for (i, c) in text.chars().enumerate() {
            if c == '\t' {
                tabs_replaced += 1;
                spaced.push_str(&"    "[..1 + i % 4]);
            } else {
                spaced.push(c);
            }
        }
        let want = parse(Format::JepsenEtcd, &text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got = parse(Format::JepsenEtcd, &spaced)
            .unwrap_or_else(|e| panic!("{file} with spaces: {e}"));
        assert!(!want.operations().is_empty(), "{file}: no operations");
        assert_eq!(got, want, "{file}: spaces read differently from tabs");
        files += 1;
    }
    assert!(files > 0, "no jepsen-etcd histories");
    assert!(tabs_replaced > 0, "the histories had no tabs to replace");
}
