//! An in-memory disk with faults, for the simulator and tests.
//!
//! [`MemDisk`] is a handle (clone it freely) on one replica's disk. It keeps,
//! per file, what is durable and what was written since, and per directory
//! which creations and removals are durable, so that [`MemDisk::crash`] can
//! lose exactly what a real disk may lose: any unsynced write (all, none, a
//! seeded random subset of its sectors, or the last write torn at a random
//! byte), and unsynced creations and removals. Corruption and misdirected
//! writes are injected explicitly. Every random choice comes from a seed.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::Backend;
use crate::format::SECTOR_SIZE;

/// What a crash loses of the writes since the last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing: every write reached the disk (a process crash).
    KeepAll,
    /// Every unsynced write and directory change (power loss with the disk's
    /// cache lost).
    LoseAll,
    /// Each sector of each unsynced write reaches the disk whole, not at
    /// all, or torn at a random byte with garbage after it (a third each),
    /// and each unsynced
    /// truncation and directory change survives with probability one half,
    /// chosen from `seed`: writes reach the disk out of order, and a sector
    /// is not assumed to be written atomically.
    RandomSectors {
        /// The seed of the choices.
        seed: u64,
    },
    /// Every unsynced write survives except the last, which is cut at a
    /// byte chosen from `seed` (power lost in the middle of it).
    TornLast {
        /// The seed of the cut.
        seed: u64,
    },
}

#[derive(Clone, Debug)]
enum Pending {
    Write {
        seq: u64,
        offset: u64,
        data: Vec<u8>,
    },
    SetLen {
        len: u64,
    },
}

#[derive(Clone, Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Pending>,
}

fn apply_write(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(data);
}

/// Counts of what the disk was asked to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Calls to `write_at`.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Calls to `sync` (fdatasync).
    pub syncs: u64,
    /// Calls to `sync_dir`.
    pub dir_syncs: u64,
}

#[derive(Debug, Default)]
struct Inner {
    inodes: HashMap<u64, Inode>,
    /// The directory as it is now.
    now: BTreeMap<String, u64>,
    /// The directory as it is durably.
    durable_dir: BTreeMap<String, u64>,
    next_inode: u64,
    write_seq: u64,
    misdirect: Option<(String, u64)>,
    /// Sectors (inode, index) whose reads fail with `EIO` until rewritten.
    /// Kept by inode, not by name: a latent sector error is in the blocks
    /// of the file that had it, not in a file created later under the
    /// same name (or renamed over it).
    unreadable: std::collections::BTreeSet<(u64, u64)>,
    stats: MemStats,
}

/// A seeded PRNG (SplitMix64): enough for fault choices, and reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A coin toss.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// One replica's in-memory disk; clones share it.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    inner: Arc<Mutex<Inner>>,
}

impl MemDisk {
    /// An empty disk (an empty data directory).
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a test failure already; the
        // state is still usable to report it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the disk was asked to do so far.
    pub fn stats(&self) -> MemStats {
        self.lock().stats
    }

    /// The names of the files there now.
    pub fn file_names(&self) -> Vec<String> {
        self.lock().now.keys().cloned().collect()
    }

    /// A file's bytes as they read now.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let inner = self.lock();
        let id = inner.now.get(name)?;
        Some(inner.inodes[id].current.clone())
    }

    /// Bytes in all files now: the disk use.
    pub fn total_bytes(&self) -> u64 {
        let inner = self.lock();
        inner
            .now
            .values()
            .map(|id| inner.inodes[id].current.len() as u64)
            .sum()
    }

    /// Replaces a file's bytes, durably (a test's hand-made damage).
    pub fn set_file(&self, name: &str, bytes: Vec<u8>) {
        let mut inner = self.lock();
        let id = match inner.now.get(name) {
            Some(&id) => id,
            None => {
                let id = inner.next_inode;
                inner.next_inode += 1;
                inner.now.insert(name.to_string(), id);
                inner.durable_dir.insert(name.to_string(), id);
                id
            }
        };
        let inode = inner.inodes.entry(id).or_default();
        inode.durable = bytes.clone();
        inode.current = bytes;
        inode.pending.clear();
    }

    /// Corrupts `len` bytes of `name` from `offset` (within the file),
    /// durably: each byte is XORed with a nonzero value from `seed`, so
    /// every byte in the range changes (latent sector errors, bit rot).
    pub fn corrupt(&self, name: &str, offset: u64, len: u64, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut inner = self.lock();
        let Some(&id) = inner.now.get(name) else {
            return;
        };
        let inode = inner.inodes.get_mut(&id).expect("inode of a listed file");
        // Corruption is of the media: bytes not on it yet (an unsynced
        // append) are left alone, and where an unsynced write covers a
        // byte, what the next sync writes is that write's data, so the
        // page cache (`current`) keeps it; elsewhere the cache reads what
        // the media holds.
        let pending_covers = |i: u64, pending: &[Pending]| {
            pending.iter().any(|p| match p {
                Pending::Write { offset, data, .. } => {
                    (*offset..offset + data.len() as u64).contains(&i)
                }
                Pending::SetLen { len } => i >= *len,
            })
        };
        for i in offset..offset + len {
            let mask = 1 + rng.below(255) as u8;
            let Some(byte) = inode.durable.get_mut(i as usize) else {
                continue;
            };
            *byte ^= mask;
            if !pending_covers(i, &inode.pending) {
                if let Some(byte) = inode.current.get_mut(i as usize) {
                    *byte ^= mask;
                }
            }
        }
    }

    /// Corrupts sector `sector` of `name` whole (see [`MemDisk::corrupt`]).
    pub fn corrupt_sector(&self, name: &str, sector: u64, seed: u64) {
        self.corrupt(name, sector * SECTOR_SIZE as u64, SECTOR_SIZE as u64, seed);
    }

    /// Sends the next write to `name` at `offset` instead of where it was
    /// meant to go (a misdirected write: firmware or driver bug).
    pub fn misdirect_next_write(&self, name: &str, offset: u64) {
        self.lock().misdirect = Some((name.to_string(), offset));
    }

    /// Makes reads of sector `sector` of `name` fail with `EIO` (a latent
    /// sector error) until the sector is written again (the device remaps
    /// it).
    pub fn fail_reads(&self, name: &str, sector: u64) {
        let mut inner = self.lock();
        if let Some(&id) = inner.now.get(name) {
            inner.unreadable.insert((id, sector));
        }
    }

    /// Whether any write or directory change is not yet durable.
    pub fn has_unsynced(&self) -> bool {
        let inner = self.lock();
        inner.now != inner.durable_dir
            || inner
                .now
                .values()
                .any(|id| !inner.inodes[id].pending.is_empty())
    }

    /// Crashes the machine: what was not synced is lost as `mode` says, and
    /// the disk then holds only what survived (all of it durable).
    pub fn crash(&self, mode: CrashMode) {
        let mut inner = self.lock();
        let mut rng = Rng::new(match mode {
            CrashMode::RandomSectors { seed } | CrashMode::TornLast { seed } => seed,
            _ => 0,
        });
        // The directory: each name whose state differs takes either.
        let mut names: Vec<String> = inner
            .now
            .keys()
            .chain(inner.durable_dir.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        let mut dir = BTreeMap::new();
        for name in names {
            let now = inner.now.get(&name).copied();
            let durable = inner.durable_dir.get(&name).copied();
            let pick = if now == durable {
                now
            } else {
                match mode {
                    CrashMode::KeepAll | CrashMode::TornLast { .. } => now,
                    CrashMode::LoseAll => durable,
                    CrashMode::RandomSectors { .. } => {
                        if rng.coin() {
                            now
                        } else {
                            durable
                        }
                    }
                }
            };
            if let Some(id) = pick {
                dir.insert(name, id);
            }
        }
        let last_seq = inner
            .inodes
            .values()
            .flat_map(|i| i.pending.iter())
            .filter_map(|p| match p {
                Pending::Write { seq, .. } => Some(*seq),
                Pending::SetLen { .. } => None,
            })
            .max();
        let mut ids: Vec<u64> = dir.values().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        for id in &ids {
            let inode = inner.inodes.get_mut(id).expect("inode of a listed file");
            let mut image = inode.durable.clone();
            for op in std::mem::take(&mut inode.pending) {
                match op {
                    Pending::SetLen { len } => {
                        let keep = match mode {
                            CrashMode::KeepAll | CrashMode::TornLast { .. } => true,
                            CrashMode::LoseAll => false,
                            CrashMode::RandomSectors { .. } => rng.coin(),
                        };
                        if keep {
                            image.resize(len as usize, 0);
                        }
                    }
                    Pending::Write { seq, offset, data } => match mode {
                        CrashMode::KeepAll => apply_write(&mut image, offset, &data),
                        CrashMode::LoseAll => {}
                        CrashMode::TornLast { .. } => {
                            if Some(seq) == last_seq {
                                let cut = rng.below(data.len() as u64 + 1) as usize;
                                apply_write(&mut image, offset, &data[..cut]);
                            } else {
                                apply_write(&mut image, offset, &data);
                            }
                        }
                        CrashMode::RandomSectors { .. } => {
                            // Split at absolute sector boundaries: each
                            // sector reaches the disk whole, torn inside
                            // (a disk need not write a sector atomically),
                            // or not at all.
                            let mut at = 0usize;
                            while at < data.len() {
                                let abs = offset as usize + at;
                                let end = ((abs / SECTOR_SIZE + 1) * SECTOR_SIZE - offset as usize)
                                    .min(data.len());
                                let sector = &data[at..end];
                                match rng.below(3) {
                                    0 => apply_write(&mut image, abs as u64, sector),
                                    1 => {
                                        // Torn: a prefix arrives, the rest
                                        // of the sector is garbage (worse
                                        // than old-or-new, so it covers it).
                                        let cut = rng.below(sector.len() as u64) as usize;
                                        let mut torn = sector.to_vec();
                                        for byte in &mut torn[cut..] {
                                            *byte = rng.next_u64() as u8;
                                        }
                                        apply_write(&mut image, abs as u64, &torn);
                                    }
                                    _ => {}
                                }
                                at = end;
                            }
                        }
                    },
                }
            }
            inode.durable = image.clone();
            inode.current = image;
        }
        inner.inodes.retain(|id, _| ids.contains(id));
        inner.now = dir.clone();
        inner.durable_dir = dir;
        inner.misdirect = None;
    }

    fn inode_mut<'a>(inner: &'a mut Inner, name: &str) -> io::Result<&'a mut Inode> {
        let id = *inner
            .now
            .get(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")))?;
        Ok(inner.inodes.get_mut(&id).expect("inode of a listed file"))
    }
}

impl Backend for MemDisk {
    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.file_names())
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        let mut inner = self.lock();
        Ok(MemDisk::inode_mut(&mut inner, name)?.current.len() as u64)
    }

    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut inner = self.lock();
        let first = offset / SECTOR_SIZE as u64;
        let last = (offset + buf.len().max(1) as u64 - 1) / SECTOR_SIZE as u64;
        if let Some(&id) = inner.now.get(name) {
            if (first..=last).any(|sector| inner.unreadable.contains(&(id, sector))) {
                return Err(io::Error::from_raw_os_error(crate::backend::EIO));
            }
        }
        let image = &MemDisk::inode_mut(&mut inner, name)?.current;
        let start = (offset as usize).min(image.len());
        let n = buf.len().min(image.len() - start);
        buf[..n].copy_from_slice(&image[start..start + n]);
        Ok(n)
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        inner.stats.writes += 1;
        inner.stats.bytes_written += data.len() as u64;
        let (name, offset) = match inner.misdirect.take() {
            Some((to, at)) => (to, at),
            None => (name.to_string(), offset),
        };
        if !inner.now.contains_key(&name) {
            let id = inner.next_inode;
            inner.next_inode += 1;
            inner.inodes.insert(id, Inode::default());
            inner.now.insert(name.clone(), id);
        }
        if !data.is_empty() {
            let id = inner.now[&name];
            let first = offset / SECTOR_SIZE as u64;
            let last = (offset + data.len() as u64 - 1) / SECTOR_SIZE as u64;
            inner
                .unreadable
                .retain(|&(inode, sector)| inode != id || !(first..=last).contains(&sector));
        }
        inner.write_seq += 1;
        let seq = inner.write_seq;
        let inode = MemDisk::inode_mut(&mut inner, &name)?;
        apply_write(&mut inode.current, offset, data);
        inode.pending.push(Pending::Write {
            seq,
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let mut inner = self.lock();
        inner.stats.syncs += 1;
        let inode = MemDisk::inode_mut(&mut inner, name)?;
        for op in std::mem::take(&mut inode.pending) {
            match op {
                Pending::Write { offset, data, .. } => {
                    apply_write(&mut inode.durable, offset, &data)
                }
                Pending::SetLen { len } => inode.durable.resize(len as usize, 0),
            }
        }
        debug_assert_eq!(
            inode.durable, inode.current,
            "a synced file reads as written"
        );
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let mut inner = self.lock();
        let inode = MemDisk::inode_mut(&mut inner, name)?;
        inode.current.resize(len as usize, 0);
        inode.pending.push(Pending::SetLen { len });
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let mut inner = self.lock();
        inner.now.remove(name);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let mut inner = self.lock();
        let id = inner
            .now
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {from}")))?;
        inner.now.insert(to.to_string(), id);
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        let mut inner = self.lock();
        inner.stats.dir_syncs += 1;
        inner.durable_dir = inner.now.clone();
        let live: Vec<u64> = inner.now.values().copied().collect();
        inner.inodes.retain(|id, _| live.contains(id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_bytes_survive_every_crash() {
        for mode in [
            CrashMode::KeepAll,
            CrashMode::LoseAll,
            CrashMode::RandomSectors { seed: 1 },
            CrashMode::TornLast { seed: 2 },
        ] {
            let mut disk = MemDisk::new();
            disk.write_at("a", 0, &[1; 10]).unwrap();
            disk.sync("a").unwrap();
            disk.sync_dir().unwrap();
            disk.write_at("a", 10, &[2; 10]).unwrap();
            disk.crash(mode);
            let bytes = disk.file("a").unwrap();
            assert_eq!(&bytes[..10], &[1; 10], "{mode:?}");
            if mode == CrashMode::LoseAll {
                assert_eq!(bytes.len(), 10);
            }
        }
    }

    #[test]
    fn unsynced_creation_and_removal_may_be_undone() {
        let mut disk = MemDisk::new();
        disk.write_at("old", 0, b"x").unwrap();
        disk.sync("old").unwrap();
        disk.sync_dir().unwrap();
        disk.write_at("new", 0, b"y").unwrap();
        disk.sync("new").unwrap();
        disk.remove("old").unwrap();
        disk.crash(CrashMode::LoseAll);
        assert_eq!(disk.file_names(), vec!["old".to_string()]);
    }

    /// A latent sector error belongs to the file that had it: a file made
    /// later under its name (a reformat renames a new superblock over the
    /// old) reads fine.
    #[test]
    fn unreadable_sectors_stay_with_their_file() {
        let mut disk = MemDisk::new();
        disk.write_at("a", 0, &[1; 8192]).unwrap();
        disk.fail_reads("a", 1);
        let mut buf = [0u8; 8192];
        assert!(disk.read_at("a", 0, &mut buf).is_err());
        disk.write_at("a.new", 0, &[2; 8192]).unwrap();
        disk.rename("a.new", "a").unwrap();
        assert_eq!(disk.read_at("a", 0, &mut buf).unwrap(), 8192);
        disk.fail_reads("a", 0);
        disk.remove("a").unwrap();
        disk.write_at("a", 0, &[3; 100]).unwrap();
        assert_eq!(disk.read_at("a", 0, &mut buf[..100]).unwrap(), 100);
    }

    #[test]
    fn misdirected_write_lands_elsewhere() {
        let mut disk = MemDisk::new();
        disk.misdirect_next_write("b", 4);
        disk.write_at("a", 0, b"zz").unwrap();
        assert_eq!(disk.file("a"), None);
        assert_eq!(disk.file("b").unwrap(), b"\0\0\0\0zz");
    }
}
