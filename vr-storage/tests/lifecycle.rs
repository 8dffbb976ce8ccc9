//! The log's life: truncating the uncommitted suffix and appending after it
//! (a view change, §4.2), checkpoints (§5.1) that let segments behind them
//! go, a checkpoint fetched from peers past the log's head (state
//! transfer, §5.2), and disk use bounded over a long run (issue 18, item 4).

mod common;

use std::collections::BTreeMap;

use common::*;
use vr_storage::format::ReplicaState;
use vr_storage::log::segment_file_name;
use vr_storage::{Config, EntryRef, Error, MemDisk, RecoveredCheckpoint, Rng, Storage};

fn fresh(config: Config) -> (MemDisk, Storage<MemDisk>) {
    let mut disk = MemDisk::new();
    Storage::format(&mut disk, &config).unwrap();
    let (storage, _) = Storage::open(disk.clone(), config).unwrap();
    (disk, storage)
}

fn read_back(disk: &MemDisk, config: Config) -> BTreeMap<u64, (u64, Vec<u8>)> {
    let (_, recovered) = Storage::open(disk.clone(), config).unwrap();
    assert!(
        recovered.log.faulty.is_empty(),
        "{:?}",
        recovered.log.faulty
    );
    recovered
        .log
        .entries
        .into_iter()
        .map(|e| (e.op, (e.view, e.payload)))
        .collect()
}

#[test]
fn truncate_the_suffix_then_append_a_new_one() {
    let config = small_config();
    let (disk, mut storage) = fresh(config);
    let mut rng = Rng::new(1);
    let mut written = BTreeMap::new();
    append_synced(&mut storage, &mut rng, 1, 300, 1, 10, 1500, &mut written);
    let segments_before = storage.segments();
    assert!(
        segments_before.len() >= 4,
        "test needs several segments: {segments_before:?}"
    );
    // A view change keeps ops up to 90 and replaces the rest (view 2).
    storage.truncate_after(90).unwrap();
    assert_eq!(storage.head_op(), 90);
    assert!(
        storage.segments().len() < segments_before.len(),
        "later segments removed"
    );
    for name in &segments_before {
        let present = disk.file_names().contains(&segment_file_name(*name));
        assert_eq!(present, storage.segments().contains(name));
    }
    written.retain(|&op, _| op <= 90);
    // Appending anything but op 91 is refused.
    let wrong = [EntryRef {
        op: 92,
        view: 2,
        payload: b"x",
    }];
    assert!(matches!(storage.append(&wrong), Err(Error::Append(_))));
    append_synced(&mut storage, &mut rng, 91, 150, 2, 7, 1500, &mut written);
    drop(storage);
    let got = read_back(&disk, config);
    assert_eq!(
        got, written,
        "the new suffix replaced the old, nothing else changed"
    );
    assert!(got.range(91..).all(|(_, (view, _))| *view == 2));

    // Truncating to the head is a no-op; below the checkpoint is refused.
    let (mut storage, _) = Storage::open(disk.clone(), config).unwrap();
    storage.truncate_after(150).unwrap();
    storage
        .write_checkpoint(100, root_of(100), pages_of(100, 2))
        .unwrap();
    assert!(matches!(
        storage.truncate_after(99),
        Err(Error::TruncateBelowCheckpoint)
    ));
    storage.truncate_after(100).unwrap();
    assert_eq!(storage.head_op(), 100);
    drop(storage);
    let (_, recovered) = Storage::open(disk, config).unwrap();
    assert!(recovered.log.entries.is_empty());
    assert!(recovered.log.faulty.is_empty());
}

#[test]
fn segments_behind_a_checkpoint_are_deleted() {
    let config = small_config();
    let (disk, mut storage) = fresh(config);
    let mut rng = Rng::new(2);
    let mut written = BTreeMap::new();
    append_synced(&mut storage, &mut rng, 1, 400, 1, 10, 1500, &mut written);
    let segments = storage.segments();
    assert!(segments.len() >= 5);
    // Checkpoint inside the third segment: the first two go, the third
    // stays (it holds ops after the checkpoint).
    let op = segments[3] - 2;
    assert!(op >= segments[2]);
    storage
        .write_checkpoint(op, root_of(op), pages_of(op, 4))
        .unwrap();
    assert_eq!(storage.segments(), segments[2..].to_vec());
    let files = disk.file_names();
    for name in &segments[..2] {
        assert!(!files.contains(&segment_file_name(*name)));
    }
    // A second checkpoint replaces the first file.
    let op2 = segments[4];
    storage
        .write_checkpoint(op2, root_of(op2), pages_of(op2, 4))
        .unwrap();
    let checkpoints: Vec<String> = disk
        .file_names()
        .into_iter()
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    assert_eq!(
        checkpoints,
        vec![vr_storage::checkpoint::checkpoint_file_name(op2)]
    );
    assert!(matches!(
        storage.write_checkpoint(op, root_of(op), pages_of(op, 4)),
        Err(Error::CheckpointNotNewer)
    ));
    // At the same op, only the same checkpoint (a repair) is accepted.
    assert!(matches!(
        storage.write_checkpoint(op2, root_of(op2), pages_of(op2, 5)),
        Err(Error::CheckpointMismatch)
    ));
    assert!(matches!(
        storage.write_checkpoint(op2, root_of(op2 + 1), pages_of(op2, 4)),
        Err(Error::CheckpointMismatch)
    ));
    storage
        .write_checkpoint(op2, root_of(op2), pages_of(op2, 4))
        .unwrap();
    drop(storage);
    let (_, recovered) = Storage::open(disk.clone(), config).unwrap();
    assert_eq!(recovered.files_removed, 0);
    let ops: Vec<u64> = recovered.log.entries.iter().map(|e| e.op).collect();
    assert_eq!(ops, (op2 + 1..=400).collect::<Vec<_>>());
    assert!(matches!(recovered.checkpoint, RecoveredCheckpoint::Read { op, .. } if op == op2));
}

#[test]
fn a_checkpoint_past_the_head_restarts_the_log_after_it() {
    let config = small_config();
    let (disk, mut storage) = fresh(config);
    let mut rng = Rng::new(3);
    append_synced(
        &mut storage,
        &mut rng,
        1,
        50,
        1,
        10,
        500,
        &mut BTreeMap::new(),
    );
    // State transfer brings the checkpoint at 5000.
    storage
        .write_checkpoint(5000, root_of(5000), pages_of(5000, 3))
        .unwrap();
    assert_eq!(storage.head_op(), 5000);
    assert!(storage.segments().is_empty());
    let mut written = BTreeMap::new();
    append_synced(&mut storage, &mut rng, 5001, 5020, 4, 10, 500, &mut written);
    drop(storage);
    assert_eq!(read_back(&disk, config), written);
}

/// 100,000 entries of 100 bytes in batches of 16, a checkpoint every 1,000
/// ops: disk use never exceeds two segments, plus the log since the last
/// checkpoint, plus two checkpoints and the superblock.
#[test]
fn disk_use_stays_bounded_over_a_long_run() {
    let config = Config {
        segment_bytes: 256 * 1024,
        ..small_config()
    };
    let (disk, mut storage) = fresh(config);
    let payload = [0x42u8; 100];
    let batch = 16u64;
    // Each batch takes one sector of records and one of seal.
    let log_bytes_per_checkpoint = 1000u64.div_ceil(batch) * 2 * 4096;
    let checkpoint_bytes = 64 * 1024;
    let bound = 2 * config.segment_bytes + log_bytes_per_checkpoint + 2 * checkpoint_bytes + 8192;
    let mut max_bytes = 0;
    let mut op = 0u64;
    let mut view = 1;
    while op < 100_000 {
        let entries: Vec<EntryRef> = (op + 1..=op + batch)
            .map(|o| EntryRef {
                op: o,
                view,
                payload: &payload,
            })
            .collect();
        storage.append(&entries).unwrap();
        storage.sync().unwrap();
        op += batch;
        max_bytes = max_bytes.max(disk.total_bytes());
        if op % 1000 < batch {
            let at = op - op % 1000;
            if at > storage.checkpoint().op {
                let pages: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8; 1024]).collect();
                storage.write_checkpoint(at, root_of(at), &pages).unwrap();
                max_bytes = max_bytes.max(disk.total_bytes());
            }
        }
        if op % 25_000 < batch {
            view += 1;
            storage
                .write_superblock(&ReplicaState {
                    view_number: view,
                    last_normal_view: view,
                    ..storage.state()
                })
                .unwrap();
        }
    }
    assert!(
        max_bytes <= bound,
        "disk use {max_bytes} over the bound {bound}"
    );
    // Not vacuous: the log was far bigger than the bound in all.
    let stats = storage.stats();
    assert!(stats.bytes_written > 20 * bound, "{stats:?}");
    // Group commit: one fdatasync per batch of 16 (plus checkpoints and
    // superblocks).
    let syncs_per_entry = stats.syncs as f64 / 100_000.0;
    assert!(syncs_per_entry < 0.1, "{syncs_per_entry} syncs per entry");
    eprintln!(
        "100k entries: max disk use {max_bytes} bytes (bound {bound}), {} bytes written, {syncs_per_entry:.4} syncs per entry",
        stats.bytes_written
    );
    drop(storage);
    let (_, recovered) = Storage::open(disk, config).unwrap();
    // The last checkpoint is at the head: the log after it is empty.
    assert!(matches!(
        recovered.checkpoint,
        RecoveredCheckpoint::Read { op: 100_000, .. }
    ));
    assert!(recovered.log.entries.is_empty());
    assert!(recovered.log.faulty.is_empty());
}

#[test]
fn a_segment_longer_than_configured_is_refused_not_cut() {
    let config = small_config();
    let (disk, mut storage) = fresh(config);
    let mut rng = Rng::new(4);
    append_synced(
        &mut storage,
        &mut rng,
        1,
        200,
        1,
        10,
        1500,
        &mut BTreeMap::new(),
    );
    drop(storage);
    let smaller = Config {
        segment_bytes: 32 * 1024,
        ..config
    };
    assert!(matches!(
        Storage::open(disk.clone(), smaller),
        Err(Error::SegmentTooLarge { .. })
    ));
    // Nothing was cut: the right setting reads everything.
    assert_eq!(read_back(&disk, config).len(), 200);
}

/// With `log_retain_ops`, the log keeps (and recovery returns) the ops
/// behind the checkpoint that peers lagging by fewer need (vr-core's
/// `log_tail_ops`); faults there are not reported (the state is in the
/// checkpoint), and disk use still stays bounded.
#[test]
fn ops_retained_behind_the_checkpoint_come_back() {
    let config = Config {
        log_retain_ops: 150,
        ..small_config()
    };
    let (disk, mut storage) = fresh(config);
    let mut rng = Rng::new(6);
    let mut written = BTreeMap::new();
    append_synced(&mut storage, &mut rng, 1, 600, 1, 10, 1500, &mut written);
    storage
        .write_checkpoint(500, root_of(500), pages_of(500, 3))
        .unwrap();
    // Segments wholly behind op 350 went; the one holding 351 stayed.
    let first = storage.segments()[0];
    assert!(first <= 351, "{first}");
    assert!(storage.segments().len() < 12);
    drop(storage);
    let (_, recovered) = Storage::open(disk.clone(), config).unwrap();
    let got: BTreeMap<u64, (u64, Vec<u8>)> = recovered
        .log
        .entries
        .into_iter()
        .map(|e| (e.op, (e.view, e.payload)))
        .collect();
    let want: BTreeMap<u64, (u64, Vec<u8>)> =
        written.range(351..).map(|(k, v)| (*k, v.clone())).collect();
    assert_eq!(
        got, want,
        "ops 351..=600 come back, the retained tail included"
    );
    assert!(recovered.log.faulty.is_empty());
    // Without retention the same directory returns only ops after it.
    let (_, recovered) = Storage::open(disk, small_config()).unwrap();
    assert_eq!(recovered.log.entries.first().map(|e| e.op), Some(501));
}
