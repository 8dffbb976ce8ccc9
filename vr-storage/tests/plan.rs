//! The planner: every write it plans is whole sectors at a sector offset
//! (so an O_DIRECT adapter can write the bytes as they are), the order of
//! a checkpoint's steps is the crash-safe one, and a planner driven by an
//! executor other than `Storage` (as glommio's adapter will) keeps the same
//! promises, with an append's writes overlapping an earlier sync.

mod common;

use common::*;
use vr_storage::format::{ReplicaState, SECTOR_SIZE};
use vr_storage::plan::{execute, format_steps};
use vr_storage::{CrashMode, EntryRef, MemDisk, Rng, Step, Storage, StorageStats, SUPERBLOCK_FILE};

fn assert_sector_writes(steps: &[Step]) {
    for step in steps {
        if let Step::Write {
            file,
            offset,
            bytes,
        } = step
        {
            assert_eq!(offset % SECTOR_SIZE as u64, 0, "{file} at {offset}");
            assert_eq!(
                bytes.len() % SECTOR_SIZE,
                0,
                "{file}: {} bytes",
                bytes.len()
            );
            assert!(!bytes.is_empty());
        }
    }
}

#[test]
fn every_planned_write_is_whole_sectors_at_sector_offsets() {
    let config = small_config();
    assert_sector_writes(&format_steps(&config));
    let disk = MemDisk::new();
    Storage::format(&mut disk.clone(), &config).unwrap();
    let (storage, _) = Storage::open(disk.clone(), config).unwrap();
    let (mut planner, mut backend) = storage.into_parts().unwrap();
    let mut rng = Rng::new(9);
    let mut op = 0;
    let mut stats = StorageStats::default();
    for round in 0..40u64 {
        let count = 1 + rng.below(30);
        let payloads: Vec<Vec<u8>> = (op + 1..=op + count)
            .map(|o| payload(&mut rng, o, round, 4000))
            .collect();
        let entries: Vec<EntryRef> = payloads
            .iter()
            .zip(op + 1..)
            .map(|(p, o)| EntryRef {
                op: o,
                view: round,
                payload: p,
            })
            .collect();
        let steps = planner.append(&entries).unwrap();
        assert_sector_writes(&steps);
        execute(&mut backend, &steps, &mut stats).unwrap();
        op += count;
        let steps = planner.sync();
        execute(&mut backend, &steps, &mut stats).unwrap();
        if round % 7 == 3 {
            let steps = planner
                .write_superblock(&ReplicaState {
                    view_number: round,
                    ..planner.state()
                })
                .unwrap();
            assert_sector_writes(&steps);
            execute(&mut backend, &steps, &mut stats).unwrap();
        }
        if round % 11 == 5 {
            let steps = planner.truncate_after(op - count / 2).unwrap();
            assert_sector_writes(&steps);
            execute(&mut backend, &steps, &mut stats).unwrap();
            op -= count / 2;
        }
    }
    // A checkpoint big enough for several chunked writes, odd page sizes.
    let pages: Vec<Vec<u8>> = (0..400u32)
        .map(|i| vec![i as u8; 1 + (i as usize * 131) % 8000])
        .collect();
    let steps = planner
        .write_checkpoint(op - 5, root_of(op - 5), &pages)
        .unwrap();
    assert_sector_writes(&steps);
    let writes = steps
        .iter()
        .filter(|s| matches!(s, Step::Write { .. }))
        .count();
    assert!(writes >= 4, "checkpoint written in chunks: {writes}");
    // The order that makes it safe: file written and synced, directory
    // synced, then the superblock (two copies, each synced), then removals.
    let superblock_at = steps
        .iter()
        .position(|s| matches!(s, Step::Write { file, .. } if file == SUPERBLOCK_FILE))
        .unwrap();
    assert!(matches!(&steps[superblock_at - 1], Step::SyncDir));
    assert!(
        matches!(&steps[superblock_at - 2], Step::Sync { file } if file.starts_with("checkpoint-"))
    );
    assert!(steps[..superblock_at]
        .iter()
        .all(|s| !matches!(s, Step::Remove { file } if !file.starts_with("checkpoint-"))));
    assert!(steps[..superblock_at - 2]
        .iter()
        .all(|s| matches!(s, Step::Write { file, .. } | Step::Remove { file } if file.starts_with("checkpoint-"))));
    assert!(matches!(steps.last(), Some(Step::SyncDir)));
    execute(&mut backend, &steps, &mut stats).unwrap();
    let (_, recovered) = Storage::open(disk, config).unwrap();
    assert!(recovered.log.faulty.is_empty());
    assert_eq!(recovered.log.entries.len() as u64, 5);
}

#[test]
fn an_append_overlapping_an_earlier_sync_keeps_what_the_sync_vouched_for() {
    let config = small_config();
    for seed in 0..100 {
        let disk = MemDisk::new();
        Storage::format(&mut disk.clone(), &config).unwrap();
        let (storage, _) = Storage::open(disk.clone(), config).unwrap();
        let (mut planner, mut backend) = storage.into_parts().unwrap();
        let mut stats = StorageStats::default();
        let mut rng = Rng::new(seed);
        let first: Vec<Vec<u8>> = (1..=20).map(|o| payload(&mut rng, o, 1, 3000)).collect();
        let second: Vec<Vec<u8>> = (21..=40).map(|o| payload(&mut rng, o, 1, 3000)).collect();
        let entries = |from: u64, payloads: &[Vec<u8>]| -> Vec<(u64, Vec<u8>)> {
            payloads
                .iter()
                .cloned()
                .zip(from..)
                .map(|(p, o)| (o, p))
                .collect()
        };
        let a = entries(1, &first);
        let b = entries(21, &second);
        let a_refs: Vec<EntryRef> = a
            .iter()
            .map(|(o, p)| EntryRef {
                op: *o,
                view: 1,
                payload: p,
            })
            .collect();
        let b_refs: Vec<EntryRef> = b
            .iter()
            .map(|(o, p)| EntryRef {
                op: *o,
                view: 1,
                payload: p,
            })
            .collect();
        let append_a = planner.append(&a_refs).unwrap();
        execute(&mut backend, &append_a, &mut stats).unwrap();
        let sync_a = planner.sync();
        // B's writes are issued before A's sync runs (they overlap).
        let append_b = planner.append(&b_refs).unwrap();
        execute(&mut backend, &append_b, &mut stats).unwrap();
        execute(&mut backend, &sync_a, &mut stats).unwrap();
        // Crash before B's own sync: A must be whole; B any prefix-or-faulty.
        disk.crash(CrashMode::RandomSectors { seed });
        let (_, recovered) = Storage::open(disk, config).unwrap();
        for entry in &recovered.log.entries {
            let want = if entry.op <= 20 {
                &a[(entry.op - 1) as usize].1
            } else {
                &b[(entry.op - 21) as usize].1
            };
            assert_eq!(&entry.payload, want, "seed {seed} op {}", entry.op);
        }
        let got: Vec<u64> = recovered
            .log
            .entries
            .iter()
            .map(|e| e.op)
            .filter(|&o| o <= 20)
            .collect();
        assert_eq!(
            got,
            (1..=20).collect::<Vec<_>>(),
            "seed {seed}: synced ops lost"
        );
        assert!(recovered.log.faulty.iter().all(|&o| o > 20), "seed {seed}");
    }
}
