//! `vr_storage::data_dir`, the directory the adapters run a durable replica
//! on (issue 18): how a start is decided from what the directory holds.
//! A one-replica cluster keeps the protocol out of the way: it forms at
//! once and commits alone, so each persist is the whole story.

use std::fs;
use std::path::Path;

use vr_core::{
    Config as CoreConfig, Durability, Instant, Message, Output, Replica, Service, Status,
};
use vr_storage::data_dir::{Boot, DataDir, EpochMembership, PersistJob};

#[derive(Default)]
struct Log(Vec<Vec<u8>>);

impl Service for Log {
    fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
        self.0.push(op.to_vec());
        Vec::new()
    }
    fn page_count(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0[index as usize]);
    }
    fn install_pages(&mut self, pages: &[&[u8]]) {
        self.0 = pages.iter().map(|p| p.to_vec()).collect();
    }
}

fn core() -> CoreConfig {
    let mut config = CoreConfig::new(3, 1);
    config.durability = Durability::Disk;
    config
}

fn open(path: &Path) -> (DataDir, Boot) {
    DataDir::open(path, &core(), vr_core::MemberId(0), 3).expect("open")
}

/// Carries out every persist the replica emits, as an adapter does.
fn drain(replica: &mut Replica<Log>, dir: &mut DataDir) {
    loop {
        match replica.poll_output() {
            Output::Persist(persist) => {
                let job = PersistJob::new(replica, persist);
                dir.persist(&job).expect("persist");
                replica.handle_persisted(Instant::ZERO, job.sequence());
            }
            // Timers due now (the batch timer) fire, as the contract asks.
            Output::Timeout(Some(t)) if t <= Instant::ZERO => replica.handle_timeout(Instant::ZERO),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
}

/// Starts the replica the directory says, writes `ops`, and returns it.
fn run(path: &Path, ops: &[&[u8]]) -> Replica<Log> {
    // A client of its own per run: request numbers restart at 1.
    let client_id = u128::from(ops[0][0]) << 8 | ops.len() as u128;
    let (mut dir, boot) = open(path);
    let mut replica = boot
        .build_replica(
            core(),
            vr_core::MemberId(0),
            Log::default(),
            Instant::ZERO,
            1,
        )
        .expect("build");
    drain(&mut replica, &mut dir);
    assert_eq!(replica.status(), Status::Normal);
    for (i, op) in ops.iter().enumerate() {
        replica.handle_message(
            Instant::ZERO,
            0,
            Message::Request(vr_core::message::Request {
                op: op.to_vec(),
                client_id,
                request_number: i as u64 + 1,
            }),
        );
        drain(&mut replica, &mut dir);
    }
    replica
}

#[test]
fn a_missing_directory_is_a_first_start_and_then_restarts_from_disk() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("replica-0");
    let (_, boot) = open(&path);
    assert!(matches!(boot, Boot::FirstStart), "{boot:?}");
    // An interrupted first start (nothing persisted since) is still one:
    // the marker says the directory never held data.
    let (_, boot) = open(&path);
    assert!(matches!(boot, Boot::FirstStart), "{boot:?}");

    let replica = run(&path, &[b"a", b"b"]);
    assert_eq!(replica.commit_number(), 2);
    match open(&path).1 {
        Boot::Restart(disk) => {
            assert_eq!(disk.log.len(), 2);
            assert_eq!(disk.log[1].op, b"b");
        }
        boot => panic!("expected a restart from disk, got {boot:?}"),
    }
    let replica = run(&path, &[b"c"]);
    assert_eq!(replica.op_number(), 3, "the restart kept the log");
}

#[test]
fn a_damaged_log_is_a_lost_disk_that_never_forms_a_cluster() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("replica-0");
    let ops: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; 100]).collect();
    let refs: Vec<&[u8]> = ops.iter().map(Vec::as_slice).collect();
    run(&path, &refs);
    // Flip a byte in the body of the third entry record (each single-entry
    // batch takes two sectors: the entry's and its seal's).
    let segment = fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    let offset = (0..bytes.len() / 4096)
        .map(|s| s * 4096)
        .filter(|&o| bytes[o + 10] == 2)
        .nth(2)
        .unwrap()
        + 100;
    bytes[offset] ^= 1;
    fs::write(&segment, &bytes).unwrap();
    let (_, boot) = open(&path);
    assert!(matches!(boot, Boot::LostDisk(_)), "{boot:?}");
    // The reset left a data-lost marker: still a lost disk, not a new one.
    let (_, boot) = open(&path);
    assert!(matches!(boot, Boot::LostDisk(_)), "{boot:?}");
}

/// A disk of an epoch other than the configuration's, without that
/// epoch's membership stored, is refused, not wiped: the image is intact.
#[test]
fn an_image_of_an_unknown_epoch_is_refused_not_wiped() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("replica-0");
    run(&path, &[b"a"]);
    let mut later = core();
    later.epoch = 1;
    let error = DataDir::open(&path, &later, vr_core::MemberId(0), 3).unwrap_err();
    assert!(
        matches!(error, vr_storage::Error::EpochUnknown { epoch: 0 }),
        "{error}"
    );
    // Still intact for the right configuration.
    assert!(matches!(open(&path).1, Boot::Restart(_)));
}

/// A replica that entered a later epoch (§7) stores its membership before
/// the superblock names the epoch; restarted with the first epoch's
/// configuration (the command line it was started with), it restarts from
/// its disk in the later epoch.
#[test]
fn a_disk_of_a_later_epoch_restarts_in_it_with_the_stored_membership() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("replica-0");
    run(&path, &[b"a"]);
    let (mut dir, boot) = open(&path);
    let Boot::Restart(disk) = boot else {
        panic!("expected a restart")
    };
    // What entering epoch 1, alone, persists.
    let membership = EpochMembership {
        epoch: 1,
        members: vec![vr_core::MemberId(0)],
        witnesses: Vec::new(),
        addresses: vec![b"127.0.0.1:7005".to_vec()],
    };
    let job = PersistJob {
        persist: vr_core::Persist {
            sequence: 1,
            state: vr_core::DurableState {
                epoch: 1,
                view: 0,
                last_normal_view: 0,
                incarnation: 0,
                commit_number: 1,
                log_base: disk.state.log_base,
            },
            truncate_after: None,
            entries: Vec::new(),
            checkpoint: None,
        },
        pages: Vec::new(),
        recovered: true,
        epoch: Some(membership.clone()),
    };
    dir.persist(&job).expect("persist in epoch 1");
    drop(dir);
    let first = core();
    let (_, boot) = DataDir::open(&path, &first, vr_core::MemberId(0), 3).expect("open");
    match &boot {
        Boot::RestartInEpoch(disk, stored) => {
            assert_eq!(disk.state.epoch, 1);
            assert_eq!(stored, &membership);
        }
        boot => panic!("expected a restart in epoch 1, got {boot:?}"),
    }
    let replica = boot
        .build_replica(
            first,
            vr_core::MemberId(0),
            Log::default(),
            Instant::ZERO,
            2,
        )
        .expect("restart in epoch 1");
    assert_eq!(replica.epoch(), 1);
    assert_eq!(replica.epoch_members(), vec![vr_core::MemberId(0)]);
    assert_eq!(replica.op_number(), 1, "the log came back");
}

#[test]
fn a_directory_of_another_cluster_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("replica-0");
    run(&path, &[b"a"]);
    let error = DataDir::open(&path, &core(), vr_core::MemberId(0), 4).unwrap_err();
    assert!(error.to_string().contains("belongs to cluster"), "{error}");
}

/// The stored commit-number follows the replica's once it lags a prepare
/// window, without a promise changing: a restarted replica's DoViewChange
/// carries its log after that number, which must fit a frame (vr-sim
/// seed 43 formed no view after a whole-cluster crash without it).
#[test]
fn the_stored_commit_number_never_lags_more_than_a_window() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("replica-0");
    let mut config = core();
    config.prepare_window_max = 4;
    let (mut dir, boot) = DataDir::open(&path, &config, vr_core::MemberId(0), 3).unwrap();
    let mut replica = boot
        .build_replica(
            config.clone(),
            vr_core::MemberId(0),
            Log::default(),
            Instant::ZERO,
            1,
        )
        .unwrap();
    drain(&mut replica, &mut dir);
    for i in 0..20u64 {
        replica.handle_message(
            Instant::ZERO,
            0,
            Message::Request(vr_core::message::Request {
                op: vec![i as u8],
                client_id: 77,
                request_number: i + 1,
            }),
        );
        drain(&mut replica, &mut dir);
    }
    assert_eq!(replica.commit_number(), 20);
    drop(dir);
    let Boot::Restart(disk) = DataDir::open(&path, &config, vr_core::MemberId(0), 3)
        .unwrap()
        .1
    else {
        panic!("expected a restart from disk")
    };
    assert!(
        disk.state.commit_number + 4 >= 20,
        "the stored commit-number lags: {}",
        disk.state.commit_number
    );
}
