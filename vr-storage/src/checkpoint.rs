//! Checkpoint files, with no IO: how pages are laid out, and how a file read
//! back is verified.
//!
//! A checkpoint at op `n` is the file `checkpoint-NNNNNNNNNNNNNNNNNNNN` (`n`
//! in 20 decimal digits). Its first sector holds the manifest record (the
//! caller's root, the page count, and a checksum over every page's body
//! checksum); page records follow from offset [`SECTOR_SIZE`], back to back
//! ([`RECORD_ALIGN`]ed), each naming its checkpoint and page index; the file
//! is padded with zeros to a whole number of sectors. Every checkpoint is
//! written whole (no incremental checkpoints yet: see `docs/storage.md`).
//!
//! [`RECORD_ALIGN`]: crate::format::RECORD_ALIGN

use crate::format::{
    align_up, checksum, decode_header, encode_record, record_size, Checksum, Expect, Found,
    Identity, Kind, Manifest, Place, Scanner, HEADER_SIZE, SECTOR_SIZE,
};

/// The file name of the checkpoint at `op`.
pub fn checkpoint_file_name(op: u64) -> String {
    format!("checkpoint-{op:020}")
}

/// The checkpoint op a file name names, if it is a checkpoint file.
pub fn parse_checkpoint_file_name(file: &str) -> Option<u64> {
    let digits = file.strip_prefix("checkpoint-")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Lays out a checkpoint's pages one at a time, into a caller's buffer
/// that stands for the file from offset [`SECTOR_SIZE`] on.
pub struct CheckpointWriter {
    identity: Identity,
    op: u64,
    offset: u64,
    page_count: u64,
    pages_bytes: u64,
    pages_hasher: blake3::Hasher,
}

impl CheckpointWriter {
    /// Starts the checkpoint at `op`.
    pub fn new(identity: Identity, op: u64) -> CheckpointWriter {
        CheckpointWriter {
            identity,
            op,
            offset: SECTOR_SIZE as u64,
            page_count: 0,
            pages_bytes: 0,
            pages_hasher: blake3::Hasher::new(),
        }
    }

    /// Where the next page's record goes in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends the next page's record to `out`.
    pub fn push_page(&mut self, page: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + record_size(page.len()), 0);
        let place = Place {
            kind: Kind::Page,
            op: self.op,
            aux: self.page_count,
            file: self.op,
            offset: self.offset,
        };
        encode_record(self.identity, place, page, &mut out[start..]);
        self.pages_hasher.update(&checksum(page).to_le_bytes());
        self.offset += record_size(page.len()) as u64;
        self.page_count += 1;
        self.pages_bytes += page.len() as u64;
    }

    /// Zeros to append to the pages so the file ends on a sector boundary.
    pub fn padding(&self) -> usize {
        align_up(self.offset as usize, SECTOR_SIZE) - self.offset as usize
    }

    /// The manifest's sector (offset 0) and its header checksum, which the
    /// superblock records to name this checkpoint.
    pub fn finish(&self, root: [u8; 32]) -> (Box<[u8; SECTOR_SIZE]>, Checksum, Manifest) {
        let manifest = Manifest {
            root,
            page_count: self.page_count,
            pages_checksum: pages_checksum_of(&self.pages_hasher),
            pages_bytes: self.pages_bytes,
        };
        let mut sector = Box::new([0u8; SECTOR_SIZE]);
        let place = Place {
            kind: Kind::Manifest,
            op: self.op,
            aux: self.page_count,
            file: self.op,
            offset: 0,
        };
        let id = encode_record(
            self.identity,
            place,
            &manifest.encode_body(),
            &mut sector[..],
        );
        (sector, id, manifest)
    }
}

fn pages_checksum_of(hasher: &blake3::Hasher) -> Checksum {
    let mut first = [0u8; 16];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    u128::from_le_bytes(first)
}

/// Why a checkpoint file could not be read as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointDamage {
    /// The manifest is damaged, missing, or not the one the superblock
    /// names.
    Manifest,
    /// Every page is intact but they are not the set the manifest names.
    PagesMismatch,
}

/// Verifies a checkpoint's manifest sector against the checksum the
/// superblock recorded; returns the manifest.
pub fn verify_manifest(
    identity: Identity,
    op: u64,
    expected: Checksum,
    sector: &[u8],
) -> Option<Manifest> {
    let header = decode_header(sector)?;
    if header.header_checksum != expected
        || header.kind != Kind::Manifest
        || header.identity != identity
        || header.file != op
        || header.offset != 0
    {
        return None;
    }
    let body = sector.get(HEADER_SIZE..HEADER_SIZE + header.body_size as usize)?;
    if checksum(body) != header.body_checksum {
        return None;
    }
    Manifest::decode_body(body).filter(|m| m.page_count == header.aux)
}

/// The most bytes a checkpoint file with `manifest` can hold: the caller
/// reads no more than this.
pub fn file_bytes_max(manifest: &Manifest) -> u64 {
    let records = manifest
        .page_count
        .saturating_mul(record_size(0) as u64)
        .saturating_add(manifest.pages_bytes)
        .saturating_add(manifest.page_count.saturating_mul(8));
    (SECTOR_SIZE as u64)
        .saturating_add(records)
        .saturating_add(SECTOR_SIZE as u64)
}

/// A checkpoint's pages as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredPages {
    /// Every page by index; a damaged page is empty and listed in `faulty`.
    pub pages: Vec<Vec<u8>>,
    /// Indexes of the pages that could not be read: to fetch from peers.
    pub faulty: Vec<u64>,
}

/// Reads the pages of the checkpoint at `op` out of its file's `bytes`
/// (the whole file, manifest sector included), checked against the
/// verified `manifest`.
pub fn read_pages(
    identity: Identity,
    op: u64,
    manifest: &Manifest,
    bytes: &[u8],
    page_bytes_max: u32,
) -> Result<RecoveredPages, CheckpointDamage> {
    // page_count is bounded by what the file can hold, so a corrupt one
    // cannot make this allocate more than the file's size.
    let page_count = manifest
        .page_count
        .min(bytes.len() as u64 / record_size(0) as u64);
    if page_count != manifest.page_count {
        return Err(CheckpointDamage::Manifest);
    }
    let mut pages: Vec<Option<Vec<u8>>> = vec![None; page_count as usize];
    let expect = Expect {
        identity,
        file: op,
        body_bytes_max: page_bytes_max,
    };
    for found in Scanner::new(bytes, expect) {
        if let Found::Valid { header, body, .. } = found {
            if header.kind == Kind::Page && header.op == op && header.aux < page_count {
                let slot = &mut pages[header.aux as usize];
                if slot.is_none() {
                    *slot = Some(body.to_vec());
                }
            }
        }
    }
    let faulty: Vec<u64> = (0..page_count)
        .filter(|&i| pages[i as usize].is_none())
        .collect();
    if faulty.is_empty() {
        let mut hasher = blake3::Hasher::new();
        for page in pages.iter().flatten() {
            hasher.update(&checksum(page).to_le_bytes());
        }
        if pages_checksum_of(&hasher) != manifest.pages_checksum {
            return Err(CheckpointDamage::PagesMismatch);
        }
    }
    Ok(RecoveredPages {
        pages: pages.into_iter().map(Option::unwrap_or_default).collect(),
        faulty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Identity = Identity {
        cluster_id: 5,
        member_id: 0,
    };

    fn file_of(op: u64, pages: &[&[u8]], root: [u8; 32]) -> (Vec<u8>, Checksum) {
        let mut writer = CheckpointWriter::new(ID, op);
        let mut body = Vec::new();
        for page in pages {
            writer.push_page(page, &mut body);
        }
        body.resize(body.len() + writer.padding(), 0);
        let (sector, id, _) = writer.finish(root);
        let mut file = sector.to_vec();
        file.extend_from_slice(&body);
        assert_eq!(file.len() % SECTOR_SIZE, 0);
        (file, id)
    }

    #[test]
    fn pages_round_trip() {
        let pages: [&[u8]; 3] = [b"one", &[9u8; 5000], b""];
        let (file, id) = file_of(12, &pages, [4; 32]);
        let manifest = verify_manifest(ID, 12, id, &file[..SECTOR_SIZE]).unwrap();
        assert_eq!(manifest.root, [4; 32]);
        assert_eq!(manifest.page_count, 3);
        assert!(file.len() as u64 <= file_bytes_max(&manifest));
        let read = read_pages(ID, 12, &manifest, &file, 8192).unwrap();
        assert!(read.faulty.is_empty());
        assert_eq!(
            read.pages,
            pages.iter().map(|p| p.to_vec()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_damaged_page_is_named() {
        let pages: [&[u8]; 3] = [&[1u8; 100], &[2u8; 100], &[3u8; 100]];
        let (mut file, id) = file_of(3, &pages, [0; 32]);
        let second = SECTOR_SIZE + record_size(100) + HEADER_SIZE + 10;
        file[second] ^= 1;
        let manifest = verify_manifest(ID, 3, id, &file[..SECTOR_SIZE]).unwrap();
        let read = read_pages(ID, 3, &manifest, &file, 8192).unwrap();
        assert_eq!(read.faulty, vec![1]);
        assert_eq!(read.pages[2], vec![3u8; 100]);
    }

    #[test]
    fn another_manifest_is_refused() {
        let (file, id) = file_of(3, &[b"a"], [0; 32]);
        assert!(verify_manifest(ID, 3, id ^ 1, &file[..SECTOR_SIZE]).is_none());
        assert!(verify_manifest(ID, 4, id, &file[..SECTOR_SIZE]).is_none());
    }
}
