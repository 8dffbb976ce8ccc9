//! The record format, with no IO: encode a record into a caller's buffer,
//! decode and verify one, and scan a file's bytes for records.
//!
//! Every record on disk, whatever its kind, starts with the same
//! [`HEADER_SIZE`]-byte header (all integers little-endian):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8  | magic [`MAGIC`] |
//! | 8  | 2  | format version [`FORMAT_VERSION`] |
//! | 10 | 1  | kind ([`Kind`]) |
//! | 11 | 1  | member id |
//! | 12 | 4  | body size in bytes |
//! | 16 | 16 | cluster id |
//! | 32 | 8  | `op`: op number (entry, page, manifest), last op (seal), sequence (superblock) |
//! | 40 | 8  | `aux`: view (entry), first op (seal), page index (page), page count (manifest), 0 (superblock) |
//! | 48 | 8  | `file`: which file the record belongs in (segment name, checkpoint op, superblock copy) |
//! | 56 | 8  | `offset`: the byte offset in that file where the record was written |
//! | 64 | 16 | body checksum |
//! | 80 | 16 | header checksum, over bytes 0..80 |
//!
//! The body follows the header; the record is padded with zeros to a
//! multiple of [`RECORD_ALIGN`]. A record read back is valid only if both
//! checksums match *and* its cluster id, member id, `file` and `offset` are
//! where it was read: a well-formed record written to the wrong place (a
//! misdirected write), or another replica's record, is not taken.

/// Sectors are the unit of every write: offsets and lengths of writes are
/// multiples of it, so that O_DIRECT (glommio's DMA files) can write the
/// same bytes, and so that no write ever rewrites a sector that holds data
/// already synced (a torn rewrite would destroy it).
pub const SECTOR_SIZE: usize = 4096;

/// The size of every record's header.
pub const HEADER_SIZE: usize = 96;

/// Records start at multiples of this within a file. The scan steps over
/// damaged bytes in these steps looking for the next record.
pub const RECORD_ALIGN: usize = 8;

/// The first eight bytes of every record. `\r\n` catches a file that went
/// through a text-mode conversion, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"VRSTOR\r\n";

/// The version of this format. Bumped on any incompatible change; a record
/// of another version is not read (it is reported, never guessed at).
pub const FORMAT_VERSION: u16 = 1;

/// A 128-bit checksum: BLAKE3, truncated.
pub type Checksum = u128;

/// The checksum of `bytes`: the first 16 bytes of their BLAKE3 hash.
///
/// Why not CRC-32: a CRC misses a random corruption with probability 2^-32
/// per damaged record, which a long-lived cluster reading many damaged
/// sectors can reach, and it is linear, so structured damage (a sector of
/// another record) is not random to it. 128 bits of a cryptographic hash
/// miss nothing in practice, and the same value names a record (the
/// superblock names its checkpoint's manifest by it). BLAKE3 hashes several
/// GB/s, far above what an fsync-bound log writes.
pub fn checksum(bytes: &[u8]) -> Checksum {
    let hash = blake3::hash(bytes);
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(first)
}

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One copy of the superblock.
    Superblock = 1,
    /// A log entry.
    Entry = 2,
    /// The end of a batch of log entries: names the ops written with it.
    Seal = 3,
    /// One page of a checkpoint.
    Page = 4,
    /// A checkpoint's manifest: its root, page count and pages' checksum.
    Manifest = 5,
}

impl Kind {
    fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Superblock,
            2 => Kind::Entry,
            3 => Kind::Seal,
            4 => Kind::Page,
            5 => Kind::Manifest,
            _ => return None,
        })
    }
}

/// Who a data directory belongs to; written at format time and checked in
/// every record, so that one replica's record is never taken by another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The cluster, chosen when the cluster is created (random, or given).
    pub cluster_id: u128,
    /// The replica's member id (`vr_core::MemberId`).
    pub member_id: u8,
}

/// A record's header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the record is.
    pub kind: Kind,
    /// Whose it is.
    pub identity: Identity,
    /// Bytes of body after the header.
    pub body_size: u32,
    /// See the module docs: op number, last op, or sequence.
    pub op: u64,
    /// See the module docs: view, first op, page index or page count.
    pub aux: u64,
    /// The file it belongs in.
    pub file: u64,
    /// Its offset in that file.
    pub offset: u64,
    /// The body's checksum.
    pub body_checksum: Checksum,
    /// The header's own checksum: names this record.
    pub header_checksum: Checksum,
}

/// `n` rounded up to a multiple of `align` (a power of two).
pub const fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// `n` rounded up to a multiple of `align` (a power of two).
pub const fn align_up_u64(n: u64, align: u64) -> u64 {
    (n + align - 1) & !(align - 1)
}

/// The bytes a record with `body_size` bytes of body occupies, padding
/// included.
pub const fn record_size(body_size: usize) -> usize {
    align_up(HEADER_SIZE + body_size, RECORD_ALIGN)
}

/// Where a record is written and what it says: everything in its header
/// except the checksums and the body size, which [`encode_record`]
/// computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// What the record is.
    pub kind: Kind,
    /// Op number, last op, or sequence.
    pub op: u64,
    /// View, first op, page index or page count.
    pub aux: u64,
    /// The file it goes in.
    pub file: u64,
    /// Its offset in that file.
    pub offset: u64,
}

/// Encodes a record into `out[..record_size(body.len())]`, padding
/// included, and returns its header checksum.
///
/// # Panics
/// If `out` is too short, or the body longer than `u32::MAX`: both are bugs
/// in the caller, which sizes buffers from [`record_size`] and bounds bodies
/// by its configuration.
pub fn encode_record(identity: Identity, place: Place, body: &[u8], out: &mut [u8]) -> Checksum {
    let size = record_size(body.len());
    assert!(out.len() >= size, "record buffer too short");
    let body_size = u32::try_from(body.len()).expect("record body over 4 GiB");
    let out = &mut out[..size];
    out[0..8].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[10] = place.kind as u8;
    out[11] = identity.member_id;
    out[12..16].copy_from_slice(&body_size.to_le_bytes());
    out[16..32].copy_from_slice(&identity.cluster_id.to_le_bytes());
    out[32..40].copy_from_slice(&place.op.to_le_bytes());
    out[40..48].copy_from_slice(&place.aux.to_le_bytes());
    out[48..56].copy_from_slice(&place.file.to_le_bytes());
    out[56..64].copy_from_slice(&place.offset.to_le_bytes());
    out[64..80].copy_from_slice(&checksum(body).to_le_bytes());
    let header_checksum = checksum(&out[0..80]);
    out[80..96].copy_from_slice(&header_checksum.to_le_bytes());
    out[HEADER_SIZE..HEADER_SIZE + body.len()].copy_from_slice(body);
    out[HEADER_SIZE + body.len()..].fill(0);
    header_checksum
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

/// Decodes a header from `bytes[..HEADER_SIZE]` if its magic, version and
/// checksum are right. Says nothing yet about where it was found.
pub fn decode_header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() < HEADER_SIZE || bytes[0..8] != MAGIC {
        return None;
    }
    let header_checksum = u128_at(bytes, 80);
    if checksum(&bytes[0..80]) != header_checksum {
        return None;
    }
    if u16::from_le_bytes([bytes[8], bytes[9]]) != FORMAT_VERSION {
        return None;
    }
    Some(Header {
        kind: Kind::from_u8(bytes[10])?,
        identity: Identity {
            member_id: bytes[11],
            cluster_id: u128_at(bytes, 16),
        },
        body_size: u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")),
        op: u64_at(bytes, 32),
        aux: u64_at(bytes, 40),
        file: u64_at(bytes, 48),
        offset: u64_at(bytes, 56),
        body_checksum: u128_at(bytes, 64),
        header_checksum,
    })
}

/// What the scan expects of the records in one file.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// The data directory's owner.
    pub identity: Identity,
    /// The file's number (its `file` header field).
    pub file: u64,
    /// The largest body a record may have.
    pub body_bytes_max: u32,
}

/// One thing found by [`Scanner`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// A record whose checksums match and that belongs where it was found.
    Valid {
        /// Where it starts.
        offset: u64,
        /// Its header.
        header: Header,
        /// Its body.
        body: &'a [u8],
    },
    /// A header that is intact and in its place, over a body that is not
    /// (corrupt, or cut short by the end of the file). The header says
    /// which record is damaged, so it can be repaired.
    BodyCorrupt {
        /// Where it starts.
        offset: u64,
        /// Its (intact) header.
        header: Header,
    },
    /// An intact record that does not belong here: another replica's or
    /// cluster's, or one whose `file`/`offset` name another place (a
    /// misdirected write). Never used as data.
    Misplaced {
        /// Where it was found.
        offset: u64,
        /// Its header.
        header: Header,
    },
    /// Bytes that are neither zeros nor a record: damage, or a torn write.
    Garbage {
        /// Where they start.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
}

/// Scans a file's bytes for records, from offset 0.
///
/// At each [`RECORD_ALIGN`]ed offset it tries a header; zeros (padding,
/// never-written space) are skipped silently; anything else that is not an
/// intact header is reported as [`Found::Garbage`] and stepped over
/// [`RECORD_ALIGN`] bytes at a time, so that the records after damage are
/// still found. Only a valid record is stepped over whole; a damaged or
/// misplaced one is stepped into, since what damaged it may be records.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    expect: Expect,
    position: usize,
    garbage_start: Option<usize>,
    held: Option<Found<'a>>,
}

impl<'a> Scanner<'a> {
    /// A scan of `bytes`, a whole file, from its start.
    pub fn new(bytes: &'a [u8], expect: Expect) -> Scanner<'a> {
        Scanner {
            bytes,
            expect,
            position: 0,
            garbage_start: None,
            held: None,
        }
    }

    fn take_garbage(&mut self, end: usize) -> Option<Found<'a>> {
        self.garbage_start.take().map(|start| Found::Garbage {
            offset: start as u64,
            len: (end - start) as u64,
        })
    }

    /// Classifies the header at `at`; advances `position`.
    fn step(&mut self) -> Option<Found<'a>> {
        let at = self.position;
        let word = &self.bytes[at..(at + RECORD_ALIGN).min(self.bytes.len())];
        let Some(header) = decode_header(&self.bytes[at..]) else {
            if word.iter().any(|&b| b != 0) {
                self.position += RECORD_ALIGN;
                self.garbage_start.get_or_insert(at);
                return None;
            }
            // Zeros: skip the whole run at once, word by word it would be
            // the bulk of a scan (every batch pads its last sector, so a
            // segment is mostly zeros, and opening a data directory read
            // it all a word at a time; issue 18, item 8). No header starts
            // with a zero word, so nothing is skipped that would be found.
            self.position = next_nonzero_word(self.bytes, at);
            return self.take_garbage(at);
        };
        let in_place = header.identity == self.expect.identity
            && header.file == self.expect.file
            && header.offset == at as u64;
        if !in_place {
            // Step one word only: the genuine records this one may have
            // overwritten part of are still to be found after it.
            self.position += RECORD_ALIGN;
            return Some(Found::Misplaced {
                offset: at as u64,
                header,
            });
        }
        let body_size = header.body_size as usize;
        let body_end = at + HEADER_SIZE + body_size;
        if header.body_size > self.expect.body_bytes_max || body_end > self.bytes.len() {
            self.position += RECORD_ALIGN;
            return Some(Found::BodyCorrupt {
                offset: at as u64,
                header,
            });
        }
        let body = &self.bytes[at + HEADER_SIZE..body_end];
        if checksum(body) != header.body_checksum {
            // Step into the damaged body a word at a time: what damaged it
            // may be other records (a misdirected write), to be found.
            self.position += RECORD_ALIGN;
            return Some(Found::BodyCorrupt {
                offset: at as u64,
                header,
            });
        }
        self.position = at + record_size(body_size);
        Some(Found::Valid {
            offset: at as u64,
            header,
            body,
        })
    }
}

/// The offset of the first [`RECORD_ALIGN`]ed word at or after `at` that
/// holds a byte other than zero, or the end of `bytes`.
fn next_nonzero_word(bytes: &[u8], at: usize) -> usize {
    /// Checked a block at a time first: the compiler vectorizes the `|`.
    const BLOCK: usize = 64;
    let mut position = at;
    while let Some(block) = bytes.get(position..position + BLOCK) {
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            break;
        }
        position += BLOCK;
    }
    while let Some(word) = bytes.get(position..(position + RECORD_ALIGN).min(bytes.len())) {
        if word.is_empty() || word.iter().any(|&b| b != 0) {
            break;
        }
        position += RECORD_ALIGN;
    }
    position.min(bytes.len())
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Found<'a>;

    fn next(&mut self) -> Option<Found<'a>> {
        // A record found after a run of garbage is held back one call, so
        // that the garbage before it is reported first.
        if let Some(found) = self.held.take() {
            return Some(found);
        }
        while self.position < self.bytes.len() {
            let garbage_before = self.garbage_start;
            let at = self.position;
            match self.step() {
                Some(Found::Garbage { offset, len }) => {
                    return Some(Found::Garbage { offset, len })
                }
                Some(record) => match garbage_before {
                    Some(start) => {
                        self.garbage_start = None;
                        self.held = Some(record);
                        return Some(Found::Garbage {
                            offset: start as u64,
                            len: (at - start) as u64,
                        });
                    }
                    None => return Some(record),
                },
                None => {}
            }
        }
        let end = self.bytes.len();
        self.take_garbage(end)
    }
}

/// Bytes of a superblock copy's body: the rest of its sector. The fields
/// take the first 128; the rest is reserved (zeros), under the checksum, so
/// that a write torn anywhere in the sector is detected.
pub const SUPERBLOCK_BODY_SIZE: usize = SECTOR_SIZE - HEADER_SIZE;

/// The durable state of a replica: what its promises rest on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaState {
    /// The epoch (§7) the replica is in.
    pub epoch: u32,
    /// The highest view the replica has promised (§4.2: it never again
    /// takes part in a lower one).
    pub view_number: u64,
    /// The latest view in which the replica's status was normal (§4.2).
    pub last_normal_view: u64,
    /// The replica's incarnation (crash vectors).
    pub incarnation: u64,
    /// A commit number the replica knew: a lower bound, updated whenever
    /// the superblock is written for another reason.
    pub commit_number: u64,
}

/// Which checkpoint is current.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointRef {
    /// The checkpoint's op number; 0 with no checkpoint on disk (the empty
    /// state before op 1).
    pub op: u64,
    /// Its pages.
    pub page_count: u64,
    /// Its root, as the caller gave it (vr-core's Merkle root).
    pub root: [u8; 32],
    /// The header checksum of its manifest record: names the exact file.
    pub manifest: Checksum,
}

/// One copy of the superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Increases by one with each write; the newest valid copy wins.
    pub sequence: u64,
    /// The replica's promises.
    pub state: ReplicaState,
    /// The current checkpoint.
    pub checkpoint: CheckpointRef,
    /// The first op the log is meant to keep: `checkpoint.op + 1`, or
    /// `checkpoint.op - log_retain_ops + 1` (for the operator and tools;
    /// recovery does not depend on it).
    pub log_first_op: u64,
}

/// The superblock file holds [`SUPERBLOCK_COPIES`] copies, one sector each.
pub const SUPERBLOCK_COPIES: usize = 2;

impl Superblock {
    /// Encodes copy `copy` into one sector.
    pub fn encode(&self, identity: Identity, copy: usize, out: &mut [u8; SECTOR_SIZE]) {
        let mut body = [0u8; SUPERBLOCK_BODY_SIZE];
        let s = &self.state;
        body[0..8].copy_from_slice(&self.sequence.to_le_bytes());
        body[8..12].copy_from_slice(&s.epoch.to_le_bytes());
        body[16..24].copy_from_slice(&s.view_number.to_le_bytes());
        body[24..32].copy_from_slice(&s.last_normal_view.to_le_bytes());
        body[32..40].copy_from_slice(&s.incarnation.to_le_bytes());
        body[40..48].copy_from_slice(&s.commit_number.to_le_bytes());
        let c = &self.checkpoint;
        body[48..56].copy_from_slice(&c.op.to_le_bytes());
        body[56..64].copy_from_slice(&c.page_count.to_le_bytes());
        body[64..96].copy_from_slice(&c.root);
        body[96..112].copy_from_slice(&c.manifest.to_le_bytes());
        body[112..120].copy_from_slice(&self.log_first_op.to_le_bytes());
        let place = Place {
            kind: Kind::Superblock,
            op: self.sequence,
            aux: 0,
            file: copy as u64,
            offset: (copy * SECTOR_SIZE) as u64,
        };
        out.fill(0);
        encode_record(identity, place, &body, out);
    }

    /// Decodes copy `copy` from its sector; `None` unless it is intact,
    /// belongs to `identity` (if given) and to that copy's place.
    pub fn decode(
        sector: &[u8],
        copy: usize,
        identity: Option<Identity>,
    ) -> Option<(Superblock, Identity)> {
        let header = decode_header(sector)?;
        if header.kind != Kind::Superblock
            || header.file != copy as u64
            || header.offset != (copy * SECTOR_SIZE) as u64
            || header.body_size as usize != SUPERBLOCK_BODY_SIZE
            || identity.is_some_and(|id| id != header.identity)
        {
            return None;
        }
        let body = sector.get(HEADER_SIZE..HEADER_SIZE + SUPERBLOCK_BODY_SIZE)?;
        if checksum(body) != header.body_checksum || u64_at(body, 0) != header.op {
            return None;
        }
        let superblock = Superblock {
            sequence: u64_at(body, 0),
            state: ReplicaState {
                epoch: u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")),
                view_number: u64_at(body, 16),
                last_normal_view: u64_at(body, 24),
                incarnation: u64_at(body, 32),
                commit_number: u64_at(body, 40),
            },
            checkpoint: CheckpointRef {
                op: u64_at(body, 48),
                page_count: u64_at(body, 56),
                root: body[64..96].try_into().expect("32 bytes"),
                manifest: u128_at(body, 96),
            },
            log_first_op: u64_at(body, 112),
        };
        Some((superblock, header.identity))
    }
}

/// Bytes of a checkpoint manifest's body.
pub const MANIFEST_BODY_SIZE: usize = 64;

/// A checkpoint's manifest: written at offset 0 of its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The caller's root over the pages.
    pub root: [u8; 32],
    /// How many pages.
    pub page_count: u64,
    /// The checksum of the pages' body checksums, in page order: binds the
    /// manifest to exactly these pages.
    pub pages_checksum: Checksum,
    /// Bytes of page data in all.
    pub pages_bytes: u64,
}

impl Manifest {
    /// The manifest's body.
    pub fn encode_body(&self) -> [u8; MANIFEST_BODY_SIZE] {
        let mut body = [0u8; MANIFEST_BODY_SIZE];
        body[0..32].copy_from_slice(&self.root);
        body[32..40].copy_from_slice(&self.page_count.to_le_bytes());
        body[40..56].copy_from_slice(&self.pages_checksum.to_le_bytes());
        body[56..64].copy_from_slice(&self.pages_bytes.to_le_bytes());
        body
    }

    /// Decodes a manifest's body.
    pub fn decode_body(body: &[u8]) -> Option<Manifest> {
        if body.len() != MANIFEST_BODY_SIZE {
            return None;
        }
        Some(Manifest {
            root: body[0..32].try_into().expect("32 bytes"),
            page_count: u64_at(body, 32),
            pages_checksum: u128_at(body, 40),
            pages_bytes: u64_at(body, 56),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Identity = Identity {
        cluster_id: 0x1234_5678_9abc_def0_0fed_cba9_8765_4321,
        member_id: 3,
    };

    #[test]
    fn header_layout_is_fixed() {
        let mut out = vec![0u8; record_size(5)];
        let place = Place {
            kind: Kind::Entry,
            op: 7,
            aux: 2,
            file: 1,
            offset: 4096,
        };
        encode_record(ID, place, b"hello", &mut out);
        assert_eq!(&out[0..8], b"VRSTOR\r\n");
        assert_eq!(out[10], 2);
        assert_eq!(out[11], 3);
        assert_eq!(u32::from_le_bytes(out[12..16].try_into().unwrap()), 5);
        assert_eq!(u64_at(&out, 32), 7);
        assert_eq!(u64_at(&out, 56), 4096);
        assert_eq!(&out[96..101], b"hello");
        assert_eq!(out.len(), 104);
    }

    #[test]
    fn scanner_reports_garbage_then_record() {
        let size = record_size(3);
        let mut bytes = vec![0u8; 16 + size];
        bytes[0] = 0xff;
        let place = Place {
            kind: Kind::Entry,
            op: 1,
            aux: 0,
            file: 9,
            offset: 16,
        };
        encode_record(ID, place, b"abc", &mut bytes[16..]);
        let expect = Expect {
            identity: ID,
            file: 9,
            body_bytes_max: 100,
        };
        let found: Vec<_> = Scanner::new(&bytes, expect).collect();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], Found::Garbage { offset: 0, len: 8 });
        assert!(matches!(
            found[1],
            Found::Valid {
                offset: 16,
                body: b"abc",
                ..
            }
        ));
    }

    /// Runs of zeros (a batch's padded sector, never-written space) are
    /// skipped whole, and what lies between them is found exactly as a scan
    /// word by word finds it: records, and garbage to the word, up to a
    /// file end that is not word-aligned.
    #[test]
    fn scanner_skips_zero_runs_and_finds_what_is_between() {
        let place = |op: u64, offset: u64| Place {
            kind: Kind::Entry,
            op,
            aux: 0,
            file: 9,
            offset,
        };
        let mut bytes = vec![0u8; 3 * 4096 + 1000 + 5];
        encode_record(ID, place(1, 0), b"first", &mut bytes[..record_size(5)]);
        // Garbage alone in a zero run, in the last word before a record,
        // and a run of two words.
        bytes[4296 + 3] = 1;
        bytes[8184] = 2;
        bytes[10_000] = 3;
        bytes[10_015] = 4;
        encode_record(
            ID,
            place(2, 8192),
            b"second",
            &mut bytes[8192..8192 + record_size(6)],
        );
        // And in the last, partial word of the file.
        let end = bytes.len();
        bytes[end - 1] = 5;
        let expect = Expect {
            identity: ID,
            file: 9,
            body_bytes_max: 100,
        };
        let found: Vec<_> = Scanner::new(&bytes, expect).collect();
        let summary: Vec<String> = found
            .iter()
            .map(|f| match f {
                Found::Valid { offset, body, .. } => {
                    format!("valid {offset} {}", String::from_utf8_lossy(body))
                }
                Found::Garbage { offset, len } => format!("garbage {offset} {len}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "valid 0 first",
                "garbage 4296 8",
                "garbage 8184 8",
                "valid 8192 second",
                "garbage 10000 16",
                format!("garbage {} 5", end - 5).as_str(),
            ]
        );
    }
}
