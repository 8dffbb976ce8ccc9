//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use vr_storage::{Config, EntryRef, Identity, MemDisk, Rng, Storage};

pub const ID: Identity = Identity {
    cluster_id: 0x5eed_0000_0000_0000_0000_0000_0000_0001,
    member_id: 2,
};

/// Small sizes so that tests cross segment boundaries often.
pub fn small_config() -> Config {
    Config {
        segment_bytes: 64 * 1024,
        batch_bytes_max: 16 * 1024,
        entry_bytes_max: 4096,
        page_bytes_max: 8192,
        ..Config::new(ID)
    }
}

/// A payload for `op` in `view` that says which it is, of a size chosen
/// by `rng` (bytes random, so no record's bytes repeat another's).
pub fn payload(rng: &mut Rng, op: u64, view: u64, max: usize) -> Vec<u8> {
    let len = 16 + rng.below(max as u64 - 16) as usize;
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    bytes[..8].copy_from_slice(&op.to_le_bytes());
    bytes[8..16].copy_from_slice(&view.to_le_bytes());
    bytes
}

/// Appends ops `first..=last` in `view` as batches of up to `batch` entries,
/// each synced; returns what was written.
// A test helper whose arguments read best spelled out at each call.
#[allow(clippy::too_many_arguments)]
pub fn append_synced(
    storage: &mut Storage<MemDisk>,
    rng: &mut Rng,
    first: u64,
    last: u64,
    view: u64,
    batch: u64,
    max: usize,
    written: &mut BTreeMap<u64, (u64, Vec<u8>)>,
) {
    let mut op = first;
    while op <= last {
        let end = (op + batch - 1).min(last);
        let payloads: Vec<(u64, Vec<u8>)> = (op..=end)
            .map(|o| (o, payload(rng, o, view, max)))
            .collect();
        let entries: Vec<EntryRef> = payloads
            .iter()
            .map(|(o, p)| EntryRef {
                op: *o,
                view,
                payload: p,
            })
            .collect();
        storage.append(&entries).unwrap();
        storage.sync().unwrap();
        for (o, p) in payloads {
            written.insert(o, (view, p));
        }
        op = end + 1;
    }
}

/// Pages of the checkpoint at `op`: deterministic, so a test can check them.
pub fn pages_of(op: u64, count: u64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut page = vec![(op as u8) ^ (i as u8); 300 + (i as usize * 97) % 900];
            page[..8].copy_from_slice(&op.to_le_bytes());
            page
        })
        .collect()
}

pub fn root_of(op: u64) -> [u8; 32] {
    let mut root = [0u8; 32];
    root[..8].copy_from_slice(&op.to_le_bytes());
    root
}
