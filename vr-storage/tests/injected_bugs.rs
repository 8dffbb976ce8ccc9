//! The storage's injected bugs (feature `bug-injection`, a test tool) do
//! what they say, so that a checker that catches them (the simulator's,
//! `vr-sim/tests/injected_bugs.rs`) is known to catch a real defect.
#![cfg(feature = "bug-injection")]

mod common;

use std::collections::BTreeMap;

use common::*;
use vr_storage::format::{Expect, Found, Kind, Scanner, HEADER_SIZE};
use vr_storage::log::segment_file_name;
use vr_storage::{Config, InjectedBug, MemDisk, Rng, Storage};

/// Writes ops 1..=40 (synced) and damages a few bytes of op 20's body,
/// leaving its header intact; returns the disk and op 20's payload.
fn disk_with_a_damaged_body() -> (MemDisk, Vec<u8>) {
    let mut disk = MemDisk::new();
    let config = small_config();
    Storage::format(&mut disk, &config).unwrap();
    let (mut storage, _) = Storage::open(disk.clone(), config).unwrap();
    let mut rng = Rng::new(7);
    let mut written = BTreeMap::new();
    append_synced(&mut storage, &mut rng, 1, 40, 2, 4, 600, &mut written);
    drop(storage);
    let file = segment_file_name(1);
    let bytes = disk.file(&file).unwrap();
    let expect = Expect {
        identity: ID,
        file: 1,
        body_bytes_max: config.entry_bytes_max,
    };
    let offset = Scanner::new(&bytes, expect)
        .find_map(|found| match found {
            Found::Valid { offset, header, .. }
                if header.kind == Kind::Entry && header.op == 20 =>
            {
                Some(offset)
            }
            _ => None,
        })
        .expect("op 20's record");
    disk.corrupt(&file, offset + HEADER_SIZE as u64 + 3, 2, 11);
    (disk, written[&20].1.clone())
}

fn reopen(disk: MemDisk, bug: Option<InjectedBug>) -> vr_storage::Recovered {
    let config = Config {
        injected_bug: bug,
        ..small_config()
    };
    Storage::open(disk, config).unwrap().1
}

/// Without the bug the damaged op is faulty and never returned; with it,
/// the damaged bytes come back as op 20 and nothing is faulty.
#[test]
fn trust_unchecked_record_returns_damaged_bytes_as_an_entry() {
    let (disk, original) = disk_with_a_damaged_body();
    let correct = reopen(disk.clone(), None);
    assert_eq!(correct.log.faulty, vec![20]);
    assert!(correct.log.entries.iter().all(|e| e.op != 20));
    let buggy = reopen(disk, Some(InjectedBug::TrustUncheckedRecord));
    assert!(buggy.log.faulty.is_empty(), "{:?}", buggy.log.faulty);
    let entry = buggy
        .log
        .entries
        .iter()
        .find(|e| e.op == 20)
        .expect("op 20");
    assert_eq!(entry.payload.len(), original.len());
    assert_ne!(entry.payload, original, "the damaged bytes, taken as data");
}
