//! Every record type round-trips: superblock, log entry (and its batch
//! seal), checkpoint page and manifest; and a data directory's whole life
//! (format, write, reopen) reads back what was written.

mod common;

use std::collections::BTreeMap;

use common::*;
use vr_storage::checkpoint::{read_pages, verify_manifest, CheckpointWriter};
use vr_storage::format::{
    decode_header, encode_record, record_size, CheckpointRef, Kind, Place, ReplicaState,
    Superblock, HEADER_SIZE, SECTOR_SIZE,
};
use vr_storage::log::{encode_batch, LogIndex, LogLimits, LogRecovery};
use vr_storage::{EntryRef, Error, MemDisk, RecoveredCheckpoint, Rng, Storage};

#[test]
fn superblock_round_trips_in_both_copies() {
    let superblock = Superblock {
        sequence: 9,
        state: ReplicaState {
            epoch: 3,
            view_number: u64::MAX - 1,
            last_normal_view: 17,
            incarnation: 4,
            commit_number: 1234,
        },
        checkpoint: CheckpointRef {
            op: 1000,
            page_count: 12,
            root: [0xab; 32],
            manifest: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        },
        log_first_op: 1001,
    };
    for copy in 0..2 {
        let mut sector = [0u8; SECTOR_SIZE];
        superblock.encode(ID, copy, &mut sector);
        assert_eq!(
            Superblock::decode(&sector, copy, Some(ID)),
            Some((superblock, ID))
        );
        // A copy read in the other copy's place is a misdirected write.
        assert_eq!(Superblock::decode(&sector, 1 - copy, Some(ID)), None);
        let other = vr_storage::Identity { member_id: 3, ..ID };
        assert_eq!(Superblock::decode(&sector, copy, Some(other)), None);
    }
}

#[test]
fn every_record_kind_round_trips_through_its_header() {
    for (kind, body) in [
        (Kind::Entry, b"an entry".as_slice()),
        (Kind::Seal, b"".as_slice()),
        (Kind::Page, &[0x55u8; 777][..]),
        (Kind::Manifest, &[1u8; 64][..]),
        (Kind::Superblock, &[2u8; 4000][..]),
    ] {
        let place = Place {
            kind,
            op: 42,
            aux: 7,
            file: 3,
            offset: 8192,
        };
        let mut out = vec![0xffu8; record_size(body.len())];
        let id = encode_record(ID, place, body, &mut out);
        let header = decode_header(&out).expect("intact header");
        assert_eq!(header.kind, kind);
        assert_eq!(
            (header.op, header.aux, header.file, header.offset),
            (42, 7, 3, 8192)
        );
        assert_eq!(header.identity, ID);
        assert_eq!(header.header_checksum, id);
        assert_eq!(&out[HEADER_SIZE..HEADER_SIZE + body.len()], body);
        assert!(
            out[HEADER_SIZE + body.len()..].iter().all(|&b| b == 0),
            "padding is zeros"
        );
    }
}

#[test]
fn log_batches_round_trip_through_the_scan() {
    let limits = LogLimits {
        segment_bytes: 32 * 1024,
        batch_bytes_max: 8192,
        body_bytes_max: 2048,
    };
    let mut rng = Rng::new(1);
    let payloads: Vec<Vec<u8>> = (1..=300)
        .map(|op| payload(&mut rng, op, op / 50, 2048))
        .collect();
    let entries: Vec<EntryRef> = payloads
        .iter()
        .zip(1u64..)
        .map(|(p, op)| EntryRef {
            op,
            view: op / 50,
            payload: p,
        })
        .collect();
    let mut index = LogIndex::new(0, limits);
    let mut files: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for chunk in entries.chunks(37) {
        for batch in index.plan_append(chunk).unwrap() {
            assert_eq!(
                batch.offset % SECTOR_SIZE as u64,
                0,
                "writes start on sectors"
            );
            assert_eq!(batch.len % SECTOR_SIZE, 0, "writes are whole sectors");
            let file = files.entry(batch.segment).or_default();
            assert_eq!(
                file.len() as u64,
                batch.offset,
                "batches are appended, never rewritten"
            );
            file.resize(batch.offset as usize + batch.len, 0);
            encode_batch(ID, &batch, chunk, &mut file[batch.offset as usize..]);
        }
    }
    let mut recovery = LogRecovery::new(ID, 0, 1, 0, limits);
    for (name, bytes) in &files {
        assert!(bytes.len() as u64 <= limits.segment_bytes);
        recovery.add_segment(*name, bytes);
    }
    let (_, log, cut) = recovery.finish();
    assert_eq!(cut, None);
    assert!(log.faulty.is_empty());
    assert_eq!(log.head_op, 300);
    for (entry, written) in log.entries.iter().zip(&entries) {
        assert_eq!(
            (entry.op, entry.view, &entry.payload[..]),
            (written.op, written.view, written.payload)
        );
    }
    assert_eq!(log.entries.len(), 300);
}

#[test]
fn checkpoint_pages_and_manifest_round_trip() {
    let pages = pages_of(77, 40);
    let mut writer = CheckpointWriter::new(ID, 77);
    let mut body = Vec::new();
    for page in &pages {
        writer.push_page(page, &mut body);
    }
    body.resize(body.len() + writer.padding(), 0);
    let (sector, manifest_id, manifest) = writer.finish(root_of(77));
    let mut file = sector.to_vec();
    file.extend_from_slice(&body);
    let read_back = verify_manifest(ID, 77, manifest_id, &file[..SECTOR_SIZE]).expect("manifest");
    assert_eq!(read_back, manifest);
    assert_eq!(read_back.page_count, 40);
    assert_eq!(read_back.root, root_of(77));
    let read = read_pages(ID, 77, &read_back, &file, 8192).unwrap();
    assert!(read.faulty.is_empty());
    assert_eq!(read.pages, pages);
}

#[test]
fn a_data_directory_reads_back_what_was_written() {
    let mut disk = MemDisk::new();
    let config = small_config();
    Storage::format(&mut disk, &config).unwrap();
    assert!(matches!(
        Storage::format(&mut disk, &config),
        Err(Error::AlreadyFormatted)
    ));
    let (mut storage, recovered) = Storage::open(disk.clone(), config).unwrap();
    assert_eq!(recovered.state, ReplicaState::default());
    assert_eq!(recovered.checkpoint, RecoveredCheckpoint::Empty);
    assert_eq!(recovered.superblock_copies_intact, 2);
    let mut rng = Rng::new(5);
    let mut written = BTreeMap::new();
    append_synced(&mut storage, &mut rng, 1, 500, 1, 13, 1500, &mut written);
    let state = ReplicaState {
        epoch: 1,
        view_number: 2,
        last_normal_view: 2,
        incarnation: 1,
        commit_number: 450,
    };
    storage.write_superblock(&state).unwrap();
    storage
        .write_checkpoint(400, root_of(400), pages_of(400, 9))
        .unwrap();
    append_synced(&mut storage, &mut rng, 501, 600, 2, 7, 1500, &mut written);
    drop(storage);

    let (storage, recovered) = Storage::open(disk.clone(), config).unwrap();
    assert_eq!(recovered.state, state);
    assert_eq!(
        recovered.checkpoint,
        RecoveredCheckpoint::Read {
            op: 400,
            root: root_of(400),
            pages: pages_of(400, 9),
            faulty_pages: vec![],
        }
    );
    assert!(recovered.log.faulty.is_empty());
    let got: BTreeMap<u64, (u64, Vec<u8>)> = recovered
        .log
        .entries
        .into_iter()
        .map(|e| (e.op, (e.view, e.payload)))
        .collect();
    let want: BTreeMap<u64, (u64, Vec<u8>)> =
        written.range(401..).map(|(k, v)| (*k, v.clone())).collect();
    assert_eq!(got, want);
    assert_eq!(storage.head_op(), 600);
    assert_eq!(recovered.files_removed, 0);
}

#[test]
fn open_refuses_an_unformatted_directory_and_a_lost_superblock() {
    let disk = MemDisk::new();
    assert!(matches!(
        Storage::open(disk.clone(), small_config()),
        Err(Error::Unformatted)
    ));
    // Files that are not ours do not make a directory formatted.
    disk.set_file("lost+found", vec![1, 2, 3]);
    assert!(matches!(
        Storage::open(disk.clone(), small_config()),
        Err(Error::Unformatted)
    ));

    let mut disk = MemDisk::new();
    Storage::format(&mut disk, &small_config()).unwrap();
    let (mut storage, _) = Storage::open(disk.clone(), small_config()).unwrap();
    let mut rng = Rng::new(1);
    append_synced(
        &mut storage,
        &mut rng,
        1,
        10,
        0,
        5,
        100,
        &mut BTreeMap::new(),
    );
    drop(storage);
    // Superblock deleted: data remains, so this is loss, not emptiness.
    let mut removed = disk.clone();
    vr_storage::Backend::remove(&mut removed, vr_storage::SUPERBLOCK_FILE).unwrap();
    assert!(matches!(
        Storage::open(disk.clone(), small_config()),
        Err(Error::SuperblockLost)
    ));
}

#[test]
fn both_superblock_copies_damaged_is_an_error_not_an_empty_disk() {
    let mut disk = MemDisk::new();
    Storage::format(&mut disk, &small_config()).unwrap();
    disk.corrupt(vr_storage::SUPERBLOCK_FILE, 100, 1, 1);
    disk.corrupt(vr_storage::SUPERBLOCK_FILE, SECTOR_SIZE as u64 + 40, 1, 2);
    assert!(matches!(
        Storage::open(disk.clone(), small_config()),
        Err(Error::SuperblockLost)
    ));
    assert!(matches!(
        Storage::format(&mut disk, &small_config()),
        Err(Error::AlreadyFormatted)
    ));
}

#[test]
fn another_replicas_directory_is_refused() {
    let mut disk = MemDisk::new();
    Storage::format(&mut disk, &small_config()).unwrap();
    let mut other = small_config();
    other.identity.member_id = 0;
    match Storage::open(disk, other) {
        Err(Error::WrongIdentity { found, expected }) => {
            assert_eq!(found, ID);
            assert_eq!(expected, other.identity);
        }
        other => panic!(
            "opened another replica's directory: {:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn promises_never_go_back() {
    let mut disk = MemDisk::new();
    Storage::format(&mut disk, &small_config()).unwrap();
    let (mut storage, _) = Storage::open(disk, small_config()).unwrap();
    let state = ReplicaState {
        epoch: 2,
        view_number: 5,
        last_normal_view: 4,
        incarnation: 3,
        commit_number: 0,
    };
    storage.write_superblock(&state).unwrap();
    for lower in [
        ReplicaState { epoch: 1, ..state },
        ReplicaState {
            view_number: 4,
            ..state
        },
        ReplicaState {
            last_normal_view: 3,
            ..state
        },
        ReplicaState {
            incarnation: 2,
            ..state
        },
    ] {
        assert!(matches!(
            storage.write_superblock(&lower),
            Err(Error::Regression(_))
        ));
    }
    assert_eq!(storage.state(), state);
}
