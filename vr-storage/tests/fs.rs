//! The std `fs` backend in a temporary directory: format, write, reopen,
//! scan; an unformatted directory refused; a byte flipped on disk detected
//! and named, never returned.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;

use vr_storage::format::{ReplicaState, HEADER_SIZE, SECTOR_SIZE};
use vr_storage::log::segment_file_name;
use vr_storage::{Config, EntryRef, Error, FsBackend, Identity, RecoveredCheckpoint, Storage};

fn config() -> Config {
    Config {
        segment_bytes: 128 * 1024,
        batch_bytes_max: 64 * 1024,
        entry_bytes_max: 16 * 1024,
        ..Config::new(Identity {
            cluster_id: 0xfeed,
            member_id: 1,
        })
    }
}

fn payload(op: u64) -> Vec<u8> {
    let mut bytes = vec![(op % 251) as u8; 50 + (op as usize * 37) % 700];
    bytes[..8].copy_from_slice(&op.to_le_bytes());
    bytes
}

fn write_ops(storage: &mut Storage<FsBackend>, first: u64, last: u64, view: u64) {
    let payloads: Vec<Vec<u8>> = (first..=last).map(payload).collect();
    let entries: Vec<EntryRef> = payloads
        .iter()
        .zip(first..)
        .map(|(p, op)| EntryRef {
            op,
            view,
            payload: p,
        })
        .collect();
    for chunk in entries.chunks(16) {
        storage.append(chunk).unwrap();
        storage.sync().unwrap();
    }
}

#[test]
fn format_write_reopen_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica-1");
    let mut backend = FsBackend::new(&path).unwrap();
    Storage::format(&mut backend, &config()).unwrap();
    assert!(matches!(
        Storage::format(&mut backend, &config()),
        Err(Error::AlreadyFormatted)
    ));
    let (mut storage, recovered) = Storage::open(backend, config()).unwrap();
    assert_eq!(recovered.checkpoint, RecoveredCheckpoint::Empty);
    let state = ReplicaState {
        epoch: 1,
        view_number: 7,
        last_normal_view: 7,
        incarnation: 2,
        commit_number: 100,
    };
    storage.write_superblock(&state).unwrap();
    write_ops(&mut storage, 1, 600, 7);
    let pages: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 4096]).collect();
    storage.write_checkpoint(500, [9; 32], &pages).unwrap();
    write_ops(&mut storage, 601, 650, 7);
    drop(storage);

    let (storage, recovered) = Storage::open(FsBackend::new(&path).unwrap(), config()).unwrap();
    assert_eq!(recovered.state, state);
    assert_eq!(
        recovered.checkpoint,
        RecoveredCheckpoint::Read {
            op: 500,
            root: [9; 32],
            pages,
            faulty_pages: vec![],
        }
    );
    let got: BTreeMap<u64, Vec<u8>> = recovered
        .log
        .entries
        .into_iter()
        .map(|e| (e.op, e.payload))
        .collect();
    let want: BTreeMap<u64, Vec<u8>> = (501..=650).map(|op| (op, payload(op))).collect();
    assert_eq!(got, want);
    assert!(recovered.log.faulty.is_empty());
    assert_eq!(storage.head_op(), 650);
    // Segments wholly behind op 500 are gone from the directory.
    let files: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let segments: Vec<&String> = files.iter().filter(|n| n.starts_with("log-")).collect();
    assert_eq!(segments.len(), storage.segments().len());
    assert!(storage.segments()[0] <= 501);
}

#[test]
fn an_unformatted_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Storage::open(FsBackend::new(dir.path()).unwrap(), config())
        .err()
        .unwrap();
    assert!(matches!(err, Error::Unformatted));
    assert!(err.to_string().contains("not formatted"), "{err}");
    // A directory that is missing is created empty, and still refused.
    let missing = dir.path().join("a/b");
    assert!(matches!(
        Storage::open(FsBackend::new(&missing).unwrap(), config()),
        Err(Error::Unformatted)
    ));
}

#[test]
fn a_flipped_byte_on_disk_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = FsBackend::new(dir.path()).unwrap();
    Storage::format(&mut backend, &config()).unwrap();
    let (mut storage, _) = Storage::open(backend, config()).unwrap();
    // One entry per batch: op n's record starts at sector 2(n-1).
    for op in 1..=20 {
        let p = payload(op);
        storage
            .append(&[EntryRef {
                op,
                view: 1,
                payload: &p,
            }])
            .unwrap();
        storage.sync().unwrap();
    }
    drop(storage);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join(segment_file_name(1)))
        .unwrap();
    let at = (2 * 9 * SECTOR_SIZE + HEADER_SIZE + 20) as u64; // op 10's body
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
    file.sync_data().unwrap();
    drop(file);
    let (_, recovered) = Storage::open(FsBackend::new(dir.path()).unwrap(), config()).unwrap();
    assert_eq!(recovered.log.faulty, vec![10]);
    assert_eq!(recovered.log.report.body_corrupt, 1);
    let ops: Vec<u64> = recovered.log.entries.iter().map(|e| e.op).collect();
    assert_eq!(ops, (1..=20).filter(|&op| op != 10).collect::<Vec<_>>());
    for entry in &recovered.log.entries {
        assert_eq!(entry.payload, payload(entry.op));
    }
}

/// What the adapters move to a blocking thread (tokio's `spawn_blocking`,
/// glommio's `spawn_blocking`, a mio storage thread) must be `Send +
/// 'static`; `MemDisk` is shared between a simulated replica and its test.
#[test]
fn storage_types_cross_threads() {
    fn send<T: Send + 'static>() {}
    fn shared<T: Send + Sync + 'static>() {}
    send::<Storage<FsBackend>>();
    send::<vr_storage::Planner>();
    send::<vr_storage::Step>();
    send::<Error>();
    shared::<vr_storage::MemDisk>();
    // And a storage really works from another thread.
    let dir = tempfile::tempdir().unwrap();
    let mut backend = FsBackend::new(dir.path()).unwrap();
    Storage::format(&mut backend, &config()).unwrap();
    let (storage, _) = Storage::open(backend, config()).unwrap();
    let storage = std::thread::spawn(move || {
        let mut storage = storage;
        write_ops(&mut storage, 1, 3, 1);
        storage
    })
    .join()
    .unwrap();
    assert_eq!(storage.head_op(), 3);
}
