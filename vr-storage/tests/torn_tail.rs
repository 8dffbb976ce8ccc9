//! A write cut short by power loss (a torn write) at the log's tail is
//! detected and cut at the last complete, valid record; the log before it
//! is intact, and appending resumes after the cut.

mod common;

use std::collections::BTreeMap;

use common::*;
use vr_storage::format::{record_size, HEADER_SIZE, SECTOR_SIZE};
use vr_storage::log::segment_file_name;
use vr_storage::{CrashMode, EntryRef, MemDisk, Rng, Storage};

/// Ops 1..=40 synced; then one batch of ops 41..=48 whose write is cut at
/// every byte offset in turn.
#[test]
fn a_write_cut_at_any_byte_is_cut_at_the_last_complete_record() {
    let config = small_config();
    let mut disk = MemDisk::new();
    Storage::format(&mut disk, &config).unwrap();
    let (mut storage, _) = Storage::open(disk.clone(), config).unwrap();
    let mut rng = Rng::new(3);
    let mut written = BTreeMap::new();
    append_synced(&mut storage, &mut rng, 1, 40, 1, 8, 700, &mut written);
    let segment = segment_file_name(*storage.segments().last().unwrap());
    let synced = disk.file(&segment).unwrap();
    let payloads: Vec<Vec<u8>> = (41..=48).map(|op| payload(&mut rng, op, 1, 700)).collect();
    let entries: Vec<EntryRef> = payloads
        .iter()
        .zip(41u64..)
        .map(|(p, op)| EntryRef {
            op,
            view: 1,
            payload: p,
        })
        .collect();
    storage.append(&entries).unwrap();
    let full = disk.file(&segment).unwrap();
    assert_eq!(
        *storage.segments().last().unwrap(),
        1,
        "the batch went to the same segment"
    );
    drop(storage);
    let batch_at = synced.len();
    let batch_len = full.len() - batch_at;
    // Where each record of the batch ends (header and body: its padding
    // carries nothing).
    let mut ends = Vec::new();
    let mut at = batch_at;
    for p in &payloads {
        ends.push(at + HEADER_SIZE + p.len());
        at += record_size(p.len());
    }
    let seal_end = batch_at + batch_len - SECTOR_SIZE + HEADER_SIZE;

    for cut in 0..=batch_len {
        let torn = MemDisk::new();
        for name in disk.file_names() {
            torn.set_file(&name, disk.file(&name).unwrap());
        }
        torn.set_file(&segment, full[..batch_at + cut].to_vec());
        let (mut storage, recovered) = Storage::open(torn.clone(), config).unwrap();
        let complete = if batch_at + cut >= seal_end {
            8
        } else {
            ends.iter().filter(|&&end| end <= batch_at + cut).count()
        };
        let ops: Vec<u64> = recovered.log.entries.iter().map(|e| e.op).collect();
        assert_eq!(
            ops,
            (1..=40 + complete as u64).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        assert!(
            recovered.log.faulty.is_empty(),
            "cut at {cut}: {:?}",
            recovered.log.faulty
        );
        for entry in &recovered.log.entries {
            let payload = if entry.op <= 40 {
                &written[&entry.op].1
            } else {
                &payloads[(entry.op - 41) as usize]
            };
            assert_eq!(&entry.payload, payload, "cut at {cut}, op {}", entry.op);
        }
        // The log goes on after the cut, and reads back whole.
        let next = 41 + complete as u64;
        let more = [EntryRef {
            op: next,
            view: 2,
            payload: b"after the cut",
        }];
        storage.append(&more).unwrap();
        storage.sync().unwrap();
        drop(storage);
        let (_, again) = Storage::open(torn, config).unwrap();
        assert_eq!(
            again.log.entries.last().unwrap().payload,
            b"after the cut",
            "cut at {cut}"
        );
        assert_eq!(again.log.entries.len() as u64, next, "cut at {cut}");
        assert!(again.log.faulty.is_empty());
        assert_eq!(
            again.log.report.torn_bytes_cut, 0,
            "the cut was made durable"
        );
    }
}

/// The same through the in-memory disk's own torn-write fault, over many
/// seeds and with the tail of a multi-batch append.
#[test]
fn torn_last_write_over_many_seeds() {
    let config = small_config();
    for seed in 0..300 {
        let mut disk = MemDisk::new();
        Storage::format(&mut disk, &config).unwrap();
        let (mut storage, _) = Storage::open(disk.clone(), config).unwrap();
        let mut rng = Rng::new(seed);
        let mut written = BTreeMap::new();
        append_synced(&mut storage, &mut rng, 1, 30, 1, 5, 2000, &mut written);
        let payloads: Vec<Vec<u8>> = (31..=60).map(|op| payload(&mut rng, op, 1, 2000)).collect();
        let entries: Vec<EntryRef> = payloads
            .iter()
            .zip(31u64..)
            .map(|(p, op)| EntryRef {
                op,
                view: 1,
                payload: p,
            })
            .collect();
        storage.append(&entries).unwrap();
        drop(storage);
        disk.crash(CrashMode::TornLast { seed });
        let (_, recovered) = Storage::open(disk.clone(), config).unwrap();
        let ops: Vec<u64> = recovered.log.entries.iter().map(|e| e.op).collect();
        let head = *ops.last().unwrap();
        assert!(head >= 30, "seed {seed}: synced ops lost");
        assert_eq!(
            ops,
            (1..=head).collect::<Vec<_>>(),
            "seed {seed}: not a prefix"
        );
        for entry in &recovered.log.entries {
            let payload = if entry.op <= 30 {
                &written[&entry.op].1
            } else {
                &payloads[(entry.op - 31) as usize]
            };
            assert_eq!(&entry.payload, payload);
        }
    }
}
