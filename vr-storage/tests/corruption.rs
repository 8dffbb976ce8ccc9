//! Storage faults (issue 18, item 3; Alagappan et al., FAST '18): damage
//! anywhere is detected, never returned as data, and named precisely
//! enough (faulty ops, faulty pages) for the replica to repair it from its
//! peers.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use vr_storage::format::{Expect, Found, Kind, ReplicaState, Scanner, HEADER_SIZE, SECTOR_SIZE};
use vr_storage::log::segment_file_name;
use vr_storage::{
    EntryRef, Error, MemDisk, Recovered, RecoveredCheckpoint, Rng, Storage, SUPERBLOCK_FILE,
};

const CHECKPOINT_OP: u64 = 120;
const PAGES: u64 = 20;
const LAST_OP: u64 = 260;
/// The last batch: ops 256..=260, written alone.
const LAST_BATCH_FIRST: u64 = 256;

struct Built {
    disk: MemDisk,
    state: ReplicaState,
    written: BTreeMap<u64, (u64, Vec<u8>)>,
    /// The last segment's name and its length before the last batch.
    last_batch_at: (u64, u64),
}

fn build(seed: u64) -> Built {
    let mut disk = MemDisk::new();
    let config = small_config();
    Storage::format(&mut disk, &config).unwrap();
    let (mut storage, _) = Storage::open(disk.clone(), config).unwrap();
    let mut rng = Rng::new(seed);
    let mut written = BTreeMap::new();
    let state = ReplicaState {
        epoch: 0,
        view_number: 3,
        last_normal_view: 3,
        incarnation: 1,
        commit_number: 200,
    };
    storage.write_superblock(&state).unwrap();
    append_synced(&mut storage, &mut rng, 1, 200, 3, 7, 1500, &mut written);
    storage
        .write_checkpoint(
            CHECKPOINT_OP,
            root_of(CHECKPOINT_OP),
            pages_of(CHECKPOINT_OP, PAGES),
        )
        .unwrap();
    append_synced(
        &mut storage,
        &mut rng,
        201,
        LAST_BATCH_FIRST - 1,
        3,
        9,
        1500,
        &mut written,
    );
    let last_segment = *storage.segments().last().unwrap();
    let len = disk.file(&segment_file_name(last_segment)).unwrap().len() as u64;
    append_synced(
        &mut storage,
        &mut rng,
        LAST_BATCH_FIRST,
        LAST_OP,
        3,
        10,
        300,
        &mut written,
    );
    let last_segment_now = *storage.segments().last().unwrap();
    let last_batch_at = if last_segment_now == last_segment {
        (last_segment, len)
    } else {
        (last_segment_now, 0)
    };
    written.retain(|&op, _| op > CHECKPOINT_OP);
    Built {
        disk,
        state,
        written,
        last_batch_at,
    }
}

/// What every recovery must satisfy, whatever was damaged: nothing
/// returned that was not written, nothing written silently missing except
/// (when `tail_may_be_cut`) a suffix of the log.
fn check_never_wrong(built: &Built, recovered: &Recovered, tail_may_be_cut: bool) {
    assert_eq!(recovered.state, built.state);
    let mut returned = BTreeSet::new();
    for entry in &recovered.log.entries {
        let (view, payload) = built
            .written
            .get(&entry.op)
            .expect("an op that was never written");
        assert_eq!(
            (entry.view, &entry.payload),
            (*view, payload),
            "op {} returned wrong",
            entry.op
        );
        returned.insert(entry.op);
    }
    let faulty: BTreeSet<u64> = recovered.log.faulty.iter().copied().collect();
    assert!(returned.is_disjoint(&faulty));
    let missing: Vec<u64> = built
        .written
        .keys()
        .filter(|op| !returned.contains(op) && !faulty.contains(op))
        .copied()
        .collect();
    if !missing.is_empty() {
        assert!(tail_may_be_cut, "ops silently missing: {missing:?}");
        assert!(
            missing.windows(2).all(|w| w[1] == w[0] + 1),
            "missing ops not a suffix: {missing:?}"
        );
        assert_eq!(
            *missing.last().unwrap(),
            LAST_OP,
            "missing ops not a suffix: {missing:?}"
        );
    }
    if let RecoveredCheckpoint::Read {
        op,
        root,
        pages,
        faulty_pages,
    } = &recovered.checkpoint
    {
        assert_eq!((*op, *root), (CHECKPOINT_OP, root_of(CHECKPOINT_OP)));
        let want = pages_of(CHECKPOINT_OP, PAGES);
        for (i, page) in pages.iter().enumerate() {
            if !faulty_pages.contains(&(i as u64)) {
                assert_eq!(page, &want[i], "page {i} returned wrong");
            }
        }
    }
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random corruption of any byte range in any file is detected: never
    /// returned as valid data. A damaged superblock copy falls back to the
    /// other; only damage to both is an error (and then a loud one).
    #[test]
    fn any_corruption_is_detected(file_pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), len in 1u64..6000, seed in any::<u64>()) {
        let built = build(seed % 4);
        let names = built.disk.file_names();
        let name = file_pick.get(&names).clone();
        let file_len = built.disk.file(&name).unwrap().len() as u64;
        let offset = at.index(file_len as usize) as u64;
        let len = len.min(file_len - offset);
        built.disk.corrupt(&name, offset, len, seed);
        let range = (offset, offset + len);
        let result = Storage::open(built.disk.clone(), small_config());
        let copy_areas = [(0, SECTOR_SIZE as u64), (SECTOR_SIZE as u64, 2 * SECTOR_SIZE as u64)];
        match result {
            Err(Error::SuperblockLost) => {
                prop_assert_eq!(&name, SUPERBLOCK_FILE);
                prop_assert!(overlaps(range, copy_areas[0]) && overlaps(range, copy_areas[1]));
            }
            Err(e) => prop_assert!(false, "open failed: {e}"),
            Ok((_, recovered)) => {
                let (last_segment, last_batch) = built.last_batch_at;
                let tail = name == segment_file_name(last_segment) && range.1 > last_batch;
                check_never_wrong(&built, &recovered, tail);
                if !name.starts_with("checkpoint-") {
                    let intact = matches!(&recovered.checkpoint, RecoveredCheckpoint::Read { faulty_pages, .. } if faulty_pages.is_empty());
                    prop_assert!(intact, "checkpoint damaged by damage elsewhere");
                }
                if !name.starts_with("log-") {
                    prop_assert!(recovered.log.faulty.is_empty());
                    prop_assert_eq!(recovered.log.entries.len() as u64, LAST_OP - CHECKPOINT_OP);
                }
            }
        }
    }

    /// A damaged superblock copy: the other copy (the same, newest state,
    /// since both are written each time) is used, and open rewrites both.
    #[test]
    fn a_damaged_superblock_copy_falls_back_to_the_other(copy in 0u64..2, at in 0u64..SECTOR_SIZE as u64, len in 1u64..300, seed in any::<u64>()) {
        let built = build(1);
        let start = copy * SECTOR_SIZE as u64 + at;
        built.disk.corrupt(SUPERBLOCK_FILE, start, len.min(SECTOR_SIZE as u64 - at), seed);
        let (_, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
        prop_assert_eq!(recovered.superblock_copies_intact, 1);
        check_never_wrong(&built, &recovered, false);
        let (_, again) = Storage::open(built.disk.clone(), small_config()).unwrap();
        prop_assert_eq!(again.superblock_copies_intact, 2);
        prop_assert_eq!(again.state, built.state);
    }

    /// One damaged sector anywhere in the log (the tail included): exactly
    /// the ops whose records lie in it are faulty; every other op reads
    /// back.
    #[test]
    fn a_damaged_sector_in_the_log_names_exactly_its_ops(segment_pick in any::<prop::sample::Index>(), sector_pick in any::<prop::sample::Index>(), seed in any::<u64>()) {
        let built = build(seed % 4);
        let segments: Vec<String> = built.disk.file_names().into_iter().filter(|n| n.starts_with("log-")).collect();
        let name = segment_pick.get(&segments).clone();
        let bytes = built.disk.file(&name).unwrap();
        // Any sector, the last batch's included: its seal sits in a sector
        // of its own, so one damaged sector there is named too.
        let sectors = bytes.len() as u64 / SECTOR_SIZE as u64;
        prop_assume!(sectors > 0);
        let sector = sector_pick.index(sectors as usize) as u64;
        let damaged = (sector * SECTOR_SIZE as u64, (sector + 1) * SECTOR_SIZE as u64);
        let expect = Expect {
            identity: ID,
            file: name[4..].parse().unwrap(),
            body_bytes_max: 4096,
        };
        let mut want_faulty = BTreeSet::new();
        for found in Scanner::new(&bytes, expect) {
            if let Found::Valid { offset, header, body } = found {
                let record = (offset, offset + (HEADER_SIZE + body.len()) as u64);
                if header.kind == Kind::Entry && header.op > CHECKPOINT_OP && overlaps(record, damaged) {
                    want_faulty.insert(header.op);
                }
            }
        }
        built.disk.corrupt_sector(&name, sector, seed);
        let (_, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
        check_never_wrong(&built, &recovered, false);
        let faulty: BTreeSet<u64> = recovered.log.faulty.iter().copied().collect();
        prop_assert_eq!(faulty, want_faulty);
    }
}

#[test]
fn a_misdirected_write_is_not_taken_and_its_ops_are_faulty() {
    let built = build(2);
    let config = small_config();
    let (mut storage, _) = Storage::open(built.disk.clone(), config).unwrap();
    let first_segment = segment_file_name(storage.segments()[0]);
    let before = built.disk.file(&first_segment).unwrap();
    // The next batch (ops 261..=263) lands on sector 2 of the first
    // segment instead of the tail of the last.
    built
        .disk
        .misdirect_next_write(&first_segment, 2 * SECTOR_SIZE as u64);
    let payloads: Vec<Vec<u8>> = (261..=263u64).map(|op| vec![op as u8; 50]).collect();
    let entries: Vec<EntryRef> = payloads
        .iter()
        .zip(261u64..)
        .map(|(payload, op)| EntryRef {
            op,
            view: 3,
            payload,
        })
        .collect();
    storage.append(&entries).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, recovered) = Storage::open(built.disk.clone(), config).unwrap();
    check_never_wrong(&built, &recovered, false);
    assert!(
        recovered.log.report.misplaced >= 3,
        "{:?}",
        recovered.log.report
    );
    // The lost ops are known to have been written (their records were
    // found, misplaced), so they are faulty, not cut as a torn tail.
    for op in 261..=263 {
        assert!(
            recovered.log.faulty.contains(&op),
            "op {op} not faulty: {:?}",
            recovered.log.faulty
        );
    }
    // Ops whose records the stray write overwrote are faulty too.
    let expect = Expect {
        identity: ID,
        file: first_segment[4..].parse().unwrap(),
        body_bytes_max: 4096,
    };
    let overwritten = (2 * SECTOR_SIZE as u64, 4 * SECTOR_SIZE as u64);
    for found in Scanner::new(&before, expect) {
        if let Found::Valid {
            offset,
            header,
            body,
        } = found
        {
            let record = (offset, offset + (HEADER_SIZE + body.len()) as u64);
            if header.kind == Kind::Entry
                && header.op > CHECKPOINT_OP
                && overlaps(record, overwritten)
            {
                assert!(recovered.log.faulty.contains(&header.op));
            }
        }
    }
}

#[test]
fn another_replicas_records_are_never_taken() {
    let built = build(0);
    // Replica 3 of the same cluster, same ops, different bytes.
    let mut other_disk = MemDisk::new();
    let mut other = small_config();
    other.identity.member_id = 3;
    Storage::format(&mut other_disk, &other).unwrap();
    let (mut storage, _) = Storage::open(other_disk.clone(), other).unwrap();
    let mut rng = Rng::new(99);
    append_synced(
        &mut storage,
        &mut rng,
        1,
        200,
        3,
        7,
        1500,
        &mut BTreeMap::new(),
    );
    let first = segment_file_name(storage.segments()[0]);
    drop(storage);
    // Its first segment replaces ours wholesale (a mixed-up copy).
    built
        .disk
        .set_file(&first, other_disk.file(&first).unwrap());
    let (_, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
    check_never_wrong(&built, &recovered, false);
    assert!(recovered.log.report.misplaced > 0);
}

#[test]
fn a_damaged_checkpoint_page_is_named_and_a_damaged_manifest_loses_the_checkpoint() {
    let built = build(3);
    let name = vr_storage::checkpoint::checkpoint_file_name(CHECKPOINT_OP);
    // Page 0's body starts at sector 1 + header.
    built
        .disk
        .corrupt(&name, (SECTOR_SIZE + HEADER_SIZE + 5) as u64, 1, 7);
    let (_, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
    check_never_wrong(&built, &recovered, false);
    match &recovered.checkpoint {
        RecoveredCheckpoint::Read { faulty_pages, .. } => assert_eq!(faulty_pages, &vec![0]),
        other => panic!("{other:?}"),
    }
    built.disk.corrupt(&name, 20, 1, 7);
    let (_, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
    assert_eq!(
        recovered.checkpoint,
        RecoveredCheckpoint::Lost {
            op: CHECKPOINT_OP,
            root: root_of(CHECKPOINT_OP),
            page_count: PAGES,
        }
    );
    // The log after the checkpoint is still all there.
    assert_eq!(recovered.log.entries.len() as u64, LAST_OP - CHECKPOINT_OP);
}

/// The last batches damaged whole (entries and seals) look like a torn
/// tail, but ops up to the superblock's commit number were written and
/// synced: they are faulty, never cut.
#[test]
fn damage_at_the_tail_below_the_commit_number_is_faulty_not_cut() {
    let built = build(1);
    let (last_segment, last_batch) = built.last_batch_at;
    let name = segment_file_name(last_segment);
    let len = built.disk.file(&name).unwrap().len() as u64;
    // Without a commit number past them, the last batch's ops are cut
    // (indistinguishable from a torn write): check that first.
    built.disk.corrupt(&name, last_batch, len - last_batch, 5);
    let copy = MemDisk::new();
    for file in built.disk.file_names() {
        copy.set_file(&file, built.disk.file(&file).unwrap());
    }
    let (_, recovered) = Storage::open(copy, small_config()).unwrap();
    check_never_wrong(&built, &recovered, true);
    assert!(recovered.log.faulty.is_empty());
    assert_eq!(recovered.log.head_op, LAST_BATCH_FIRST - 1);
    // With the commit number at the last op, they are faulty.
    let (mut storage, _) = Storage::open(built.disk.clone(), small_config()).unwrap();
    let state = ReplicaState {
        commit_number: LAST_OP,
        ..built.state
    };
    storage.write_superblock(&state).unwrap();
    drop(storage);
    let (_, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
    assert_eq!(
        recovered.log.faulty,
        (LAST_BATCH_FIRST..=LAST_OP).collect::<Vec<_>>()
    );
}

/// Sectors the device cannot read (`EIO`, a latent sector error) are
/// damage like any other: named, never fatal to the replica's start.
#[test]
fn unreadable_sectors_are_damage_not_a_failed_start() {
    let built = build(2);
    let segments: Vec<String> = built
        .disk
        .file_names()
        .into_iter()
        .filter(|n| n.starts_with("log-"))
        .collect();
    let name = &segments[1];
    let bytes = built.disk.file(name).unwrap();
    let sector = 3u64;
    let damaged = (
        sector * SECTOR_SIZE as u64,
        (sector + 1) * SECTOR_SIZE as u64,
    );
    let expect = Expect {
        identity: ID,
        file: name[4..].parse().unwrap(),
        body_bytes_max: 4096,
    };
    let mut want_faulty = Vec::new();
    for found in Scanner::new(&bytes, expect) {
        if let Found::Valid {
            offset,
            header,
            body,
        } = found
        {
            let record = (offset, offset + (HEADER_SIZE + body.len()) as u64);
            if header.kind == Kind::Entry && header.op > CHECKPOINT_OP && overlaps(record, damaged)
            {
                want_faulty.push(header.op);
            }
        }
    }
    assert!(!want_faulty.is_empty());
    built.disk.fail_reads(name, sector);
    // Superblock copy 0 and checkpoint page 0's sector too.
    built.disk.fail_reads(SUPERBLOCK_FILE, 0);
    let checkpoint = vr_storage::checkpoint::checkpoint_file_name(CHECKPOINT_OP);
    built.disk.fail_reads(&checkpoint, 1);
    let (_, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
    check_never_wrong(&built, &recovered, false);
    assert_eq!(recovered.sectors_unreadable, 3);
    assert_eq!(recovered.log.faulty, want_faulty);
    assert_eq!(recovered.superblock_copies_intact, 1);
    match &recovered.checkpoint {
        RecoveredCheckpoint::Read { faulty_pages, .. } => {
            assert!(faulty_pages.contains(&0), "{faulty_pages:?}")
        }
        other => panic!("{other:?}"),
    }
    // The superblock was rewritten at open (the device remaps the sector).
    let (_, again) = Storage::open(built.disk.clone(), small_config()).unwrap();
    assert_eq!(again.superblock_copies_intact, 2);
    assert_eq!(again.sectors_unreadable, 2);

    // An unreadable manifest loses the checkpoint (fetch it from peers).
    built.disk.fail_reads(&checkpoint, 0);
    let (_, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
    assert!(matches!(
        recovered.checkpoint,
        RecoveredCheckpoint::Lost {
            op: CHECKPOINT_OP,
            ..
        }
    ));
}

/// Any other read error (not the device's `EIO`) fails the start loudly:
/// taking a permissions problem for damage would cut the log.
#[test]
fn other_read_errors_fail_the_start() {
    struct Denied(MemDisk);
    impl vr_storage::Backend for Denied {
        fn list(&mut self) -> std::io::Result<Vec<String>> {
            self.0.list()
        }
        fn len(&mut self, name: &str) -> std::io::Result<u64> {
            self.0.len(name)
        }
        fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            if name.starts_with("log-") {
                return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
            }
            self.0.read_at(name, offset, buf)
        }
        fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.0.write_at(name, offset, data)
        }
        fn sync(&mut self, name: &str) -> std::io::Result<()> {
            self.0.sync(name)
        }
        fn truncate(&mut self, name: &str, len: u64) -> std::io::Result<()> {
            self.0.truncate(name, len)
        }
        fn remove(&mut self, name: &str) -> std::io::Result<()> {
            self.0.remove(name)
        }
        fn rename(&mut self, from: &str, to: &str) -> std::io::Result<()> {
            self.0.rename(from, to)
        }
        fn sync_dir(&mut self) -> std::io::Result<()> {
            self.0.sync_dir()
        }
    }
    let built = build(0);
    let before: Vec<(String, Vec<u8>)> = built
        .disk
        .file_names()
        .into_iter()
        .map(|n| (n.clone(), built.disk.file(&n).unwrap()))
        .collect();
    assert!(matches!(
        Storage::open(Denied(built.disk.clone()), small_config()),
        Err(Error::Io(_))
    ));
    let after: Vec<(String, Vec<u8>)> = built
        .disk
        .file_names()
        .into_iter()
        .map(|n| (n.clone(), built.disk.file(&n).unwrap()))
        .collect();
    assert_eq!(before, after, "a failed open changed nothing");
}

/// A damaged or lost checkpoint is repaired by writing the same checkpoint
/// again (its pages fetched from peers): in place, then read whole.
#[test]
fn a_damaged_checkpoint_is_repaired_in_place() {
    let built = build(3);
    let name = vr_storage::checkpoint::checkpoint_file_name(CHECKPOINT_OP);
    for (offset, lost) in [((SECTOR_SIZE + HEADER_SIZE + 5) as u64, false), (20, true)] {
        built.disk.corrupt(&name, offset, 1, 11);
        let (mut storage, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
        assert_eq!(
            matches!(recovered.checkpoint, RecoveredCheckpoint::Lost { .. }),
            lost
        );
        storage
            .write_checkpoint(
                CHECKPOINT_OP,
                root_of(CHECKPOINT_OP),
                pages_of(CHECKPOINT_OP, PAGES),
            )
            .unwrap();
        drop(storage);
        let (_, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
        check_never_wrong(&built, &recovered, false);
        assert_eq!(
            recovered.checkpoint,
            RecoveredCheckpoint::Read {
                op: CHECKPOINT_OP,
                root: root_of(CHECKPOINT_OP),
                pages: pages_of(CHECKPOINT_OP, PAGES),
                faulty_pages: vec![],
            }
        );
        assert_eq!(recovered.log.entries.len() as u64, LAST_OP - CHECKPOINT_OP);
    }
}

/// Another replica's superblock copy written over one of ours (a
/// misdirected write between neighbours on one disk) is damage: our other
/// copy is used. Only when no copy is ours is the directory refused as
/// someone else's.
#[test]
fn a_foreign_superblock_copy_is_damage() {
    let built = build(1);
    let mut other = MemDisk::new();
    let mut other_config = small_config();
    other_config.identity.member_id = 7;
    Storage::format(&mut other, &other_config).unwrap();
    let (mut storage, _) = Storage::open(other.clone(), other_config).unwrap();
    for view in 1..50 {
        storage
            .write_superblock(&ReplicaState {
                view_number: view,
                ..ReplicaState::default()
            })
            .unwrap();
    }
    drop(storage);
    let foreign = other.file(SUPERBLOCK_FILE).unwrap();
    let mut ours = built.disk.file(SUPERBLOCK_FILE).unwrap();
    ours[SECTOR_SIZE..].copy_from_slice(&foreign[SECTOR_SIZE..]);
    built.disk.set_file(SUPERBLOCK_FILE, ours);
    let (_, recovered) = Storage::open(built.disk.clone(), small_config()).unwrap();
    check_never_wrong(&built, &recovered, false);
    assert_eq!(recovered.superblock_copies_intact, 1);
    // Both copies foreign: someone else's directory.
    built.disk.set_file(SUPERBLOCK_FILE, foreign);
    assert!(matches!(
        Storage::open(built.disk.clone(), small_config()),
        Err(Error::WrongIdentity { .. })
    ));
}
