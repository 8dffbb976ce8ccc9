//! Measures group commit on this machine's disk: entries per second and
//! fsyncs per entry when each `sync` covers 1, 16 or 256 appended entries,
//! beside a plain loop of one `write` + one `fdatasync` per 100-byte record
//! (the floor every fsync-per-write store pays).
//!
//! ```text
//! cargo run --release -p vr-storage --example group_commit [DIR] [SECONDS]
//! ```
//!
//! DIR (default: a fresh directory under the system temp dir) must be on
//! the disk to measure; each case runs about SECONDS (default 2) seconds.
//! Bounded: every case stops after its time or 200,000 entries.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vr_storage::{Config, EntryRef, FsBackend, Identity, Storage};

const PAYLOAD_BYTES: usize = 100;
const ENTRIES_MAX: u64 = 200_000;

struct Figure {
    entries: u64,
    seconds: f64,
    fsyncs: u64,
}

impl Figure {
    fn print(&self, name: &str) {
        println!(
            "| {name:<34} | {:>9.0} | {:>12.3} | {:>8.0} |",
            self.entries as f64 / self.seconds,
            self.fsyncs as f64 / self.entries as f64,
            self.seconds * 1e6 / (self.fsyncs.max(1)) as f64,
        );
    }
}

fn plain_loop(dir: &Path, run: Duration) -> Figure {
    let path = dir.join("plain");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let record = [0x5au8; PAYLOAD_BYTES];
    let start = Instant::now();
    let mut entries = 0u64;
    while start.elapsed() < run && entries < ENTRIES_MAX {
        file.write_all_at(&record, entries * PAYLOAD_BYTES as u64)
            .unwrap();
        file.sync_data().unwrap();
        entries += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    Figure {
        entries,
        seconds,
        fsyncs: entries,
    }
}

fn group_commit(dir: &Path, group: u64, run: Duration) -> Figure {
    let data = dir.join(format!("group-{group}"));
    let config = Config::new(Identity {
        cluster_id: 1,
        member_id: 0,
    });
    let mut backend = FsBackend::new(&data).unwrap();
    Storage::format(&mut backend, &config).unwrap();
    let (mut storage, _) = Storage::open(backend, config).unwrap();
    let before = storage.stats();
    let payload = [0xa5u8; PAYLOAD_BYTES];
    let start = Instant::now();
    let mut op = 0u64;
    while start.elapsed() < run && op < ENTRIES_MAX {
        let entries: Vec<EntryRef> = (op + 1..=op + group)
            .map(|o| EntryRef {
                op: o,
                view: 1,
                payload: &payload,
            })
            .collect();
        storage.append(&entries).unwrap();
        storage.sync().unwrap();
        op += group;
    }
    let seconds = start.elapsed().as_secs_f64();
    let stats = storage.stats();
    drop(storage);
    std::fs::remove_dir_all(&data).unwrap();
    Figure {
        entries: op,
        seconds,
        fsyncs: stats.syncs + stats.dir_syncs - before.syncs - before.dir_syncs,
    }
}

/// Appends without syncing (the CPU and page-cache cost of encoding and
/// checksumming), then times the recovery scan of what was written.
fn cpu_and_scan(dir: &Path, entries_total: u64) {
    let data = dir.join("scan");
    let config = Config::new(Identity {
        cluster_id: 1,
        member_id: 0,
    });
    let mut backend = FsBackend::new(&data).unwrap();
    Storage::format(&mut backend, &config).unwrap();
    let (mut storage, _) = Storage::open(backend, config).unwrap();
    let payload = [0xa5u8; PAYLOAD_BYTES];
    let start = Instant::now();
    let mut op = 0u64;
    while op < entries_total {
        let entries: Vec<EntryRef> = (op + 1..=op + 256)
            .map(|o| EntryRef {
                op: o,
                view: 1,
                payload: &payload,
            })
            .collect();
        storage.append(&entries).unwrap();
        op += 256;
    }
    let append_seconds = start.elapsed().as_secs_f64();
    storage.sync().unwrap();
    let bytes = storage.stats().bytes_written;
    drop(storage);
    let start = Instant::now();
    let (_, recovered) = Storage::open(FsBackend::new(&data).unwrap(), config).unwrap();
    let scan_seconds = start.elapsed().as_secs_f64();
    assert_eq!(recovered.log.entries.len() as u64, op);
    std::fs::remove_dir_all(&data).unwrap();
    println!(
        "| {:<34} | {:>9.0} | {:>12} | {:>8} |",
        "append 256/batch, no sync (CPU)",
        op as f64 / append_seconds,
        "-",
        "-"
    );
    println!(
        "recovery scan (page cache warm): {op} entries, {:.1} MiB in {:.0} ms: {:.0} entries/s, {:.0} MiB/s",
        bytes as f64 / (1 << 20) as f64,
        scan_seconds * 1e3,
        op as f64 / scan_seconds,
        bytes as f64 / (1 << 20) as f64 / scan_seconds
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir: PathBuf = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("vr-storage-bench-{}", std::process::id()))
    });
    let seconds: f64 = args
        .next()
        .map_or(2.0, |s| s.parse().expect("SECONDS: a number"));
    let run = Duration::from_secs_f64(seconds);
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "dir {}, {PAYLOAD_BYTES}-byte entries, ~{seconds} s per case",
        dir.display()
    );
    println!("| case                               | entries/s | fsyncs/entry | µs/fsync |");
    println!("|------------------------------------|----------:|-------------:|---------:|");
    plain_loop(&dir, run).print("plain write + fdatasync per entry");
    for group in [1, 16, 256] {
        group_commit(&dir, group, run).print(&format!("vr-storage, {group} entries per sync"));
    }
    cpu_and_scan(&dir, 200_192);
    let _ = std::fs::remove_dir(&dir);
}
