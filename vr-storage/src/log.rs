//! The write-ahead log, with no IO: where entries go (segments, batches,
//! seals), how a batch is encoded, and how segments read back at startup
//! are assembled into a log, with torn tails cut and damaged ops named.
//!
//! A segment is a file `log-NNNNNNNNNNNNNNNNNNNN` named by the first op
//! written to it (20 decimal digits), at most `segment_bytes` long. Names
//! increase with the ops: every op in a segment is at least its name and
//! below the next segment's name.
//!
//! Entries are written in *batches*. A batch starts at a sector boundary,
//! holds entry records back to back ([`RECORD_ALIGN`](crate::format::RECORD_ALIGN)ed), zeros to the next
//! sector boundary, and a *seal* record alone in its last sector naming the
//! batch's first and last op. One batch is one write (of whole sectors);
//! many batches then take one sync (group commit). No write ever touches a
//! sector an earlier write filled, so a torn write damages only its own
//! batch.

use std::ops::Range;

use crate::format::{
    align_up, align_up_u64, encode_record, record_size, Expect, Found, Identity, Kind, Place,
    Scanner, SECTOR_SIZE,
};

/// The file name of the segment named `name`.
pub fn segment_file_name(name: u64) -> String {
    format!("log-{name:020}")
}

/// The segment a file name names, if it is one.
pub fn parse_segment_file_name(file: &str) -> Option<u64> {
    let digits = file.strip_prefix("log-")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One log entry to append: the caller's encoded entry as opaque bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Its op number.
    pub op: u64,
    /// The view in which it was assigned its op number.
    pub view: u64,
    /// Its bytes (vr-core's encoded `LogEntry`).
    pub payload: &'a [u8],
}

/// A log entry read back from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its op number.
    pub op: u64,
    /// Its view.
    pub view: u64,
    /// Its bytes, as appended.
    pub payload: Vec<u8>,
}

/// Sizes the log works within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// The most bytes a segment file holds; a multiple of [`SECTOR_SIZE`].
    pub segment_bytes: u64,
    /// The most bytes one batch (one write) holds; a multiple of
    /// [`SECTOR_SIZE`].
    pub batch_bytes_max: usize,
    /// The largest entry payload.
    pub body_bytes_max: u32,
}

impl LogLimits {
    /// The bytes a batch of one entry of `body` bytes needs.
    pub fn single_batch_bytes(body: usize) -> usize {
        align_up(record_size(body), SECTOR_SIZE) + SECTOR_SIZE
    }
}

/// Why an append was refused. Each is a bug in the caller (the log's
/// shape is the protocol's to keep), reported rather than written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The first op is not one past the log's head (or the ops are not
    /// consecutive).
    NotConsecutive {
        /// The op expected.
        expected: u64,
        /// The op given.
        got: u64,
    },
    /// A payload over the configured maximum.
    TooLarge {
        /// The op.
        op: u64,
        /// Its size.
        bytes: usize,
    },
}

/// One write of a planned append: a whole number of sectors at a sector
/// boundary of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The segment (its name).
    pub segment: u64,
    /// Whether this write creates the segment's file (the directory must be
    /// synced before the batch counts as durable).
    pub creates_segment: bool,
    /// Where in the segment.
    pub offset: u64,
    /// How many bytes (a multiple of [`SECTOR_SIZE`]).
    pub len: usize,
    /// Which of the appended entries it holds.
    pub entries: Range<usize>,
}

/// Encodes `batch` (a plan from [`LogIndex::plan_append`]) of `entries`
/// into `out[..batch.len]`: the records, zero padding, and the seal. `out`
/// may be a DMA buffer; only its first `batch.len` bytes are written.
pub fn encode_batch(identity: Identity, batch: &Batch, entries: &[EntryRef<'_>], out: &mut [u8]) {
    let out = &mut out[..batch.len];
    let mut at = 0usize;
    let batch_entries = &entries[batch.entries.clone()];
    for entry in batch_entries {
        let place = Place {
            kind: Kind::Entry,
            op: entry.op,
            aux: entry.view,
            file: batch.segment,
            offset: batch.offset + at as u64,
        };
        encode_record(identity, place, entry.payload, &mut out[at..]);
        at += record_size(entry.payload.len());
    }
    let seal_at = align_up(at, SECTOR_SIZE);
    debug_assert_eq!(
        seal_at + SECTOR_SIZE,
        batch.len,
        "batch size disagrees with its plan"
    );
    out[at..seal_at].fill(0);
    let seal = Place {
        kind: Kind::Seal,
        op: batch_entries.last().map_or(0, |e| e.op),
        aux: batch_entries.first().map_or(0, |e| e.op),
        file: batch.segment,
        offset: batch.offset + seal_at as u64,
    };
    encode_record(identity, seal, &[], &mut out[seal_at..]);
    out[seal_at + record_size(0)..].fill(0);
}

/// What the log knows of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its name: no op in it is lower.
    pub name: u64,
    /// Where its next batch goes (a sector boundary).
    pub write_offset: u64,
    /// Its readable entries: op, view, and where the record ends.
    pub entries: Vec<(u64, u64, u64)>,
}

/// Where the log's entries are: enough to plan appends, truncations and
/// releases without reading the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogIndex {
    /// Segments in name order.
    pub segments: Vec<Segment>,
    /// The highest op in the log (or the checkpoint's op if higher).
    pub head_op: u64,
    /// The checkpoint's op: the log holds only ops above it that matter.
    pub checkpoint_op: u64,
    /// Sizes.
    pub limits: LogLimits,
}

/// What a truncation must do on disk, in this order: remove the segments,
/// sync the directory, cut the file, sync it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatePlan {
    /// Segments (names) to remove, highest first.
    pub remove: Vec<u64>,
    /// The segment to cut and its new length.
    pub cut: Option<(u64, u64)>,
}

impl LogIndex {
    /// An empty log after `checkpoint_op`.
    pub fn new(checkpoint_op: u64, limits: LogLimits) -> LogIndex {
        LogIndex {
            segments: Vec::new(),
            head_op: checkpoint_op,
            checkpoint_op,
            limits,
        }
    }

    /// Plans the writes of `entries` (which must continue the log) and
    /// records them as written. The caller then encodes each batch with
    /// [`encode_batch`] and writes it; a failed write leaves the index ahead
    /// of the disk, so the caller must stop using it (reopen).
    pub fn plan_append(&mut self, entries: &[EntryRef<'_>]) -> Result<Vec<Batch>, AppendError> {
        for (expected, entry) in (self.head_op + 1..).zip(entries) {
            if entry.op != expected {
                return Err(AppendError::NotConsecutive {
                    expected,
                    got: entry.op,
                });
            }
            // Views are ordered only within an epoch: a reconfiguration's
            // next epoch starts again at view 0 (§7), and its ops continue
            // the log. So a lower view is refused only by vr-core, which
            // knows the epochs; the log orders records by op-number, and
            // each record's placement (file and offset in its header)
            // keeps stale and misdirected ones out of a recovery.
            if entry.payload.len() > self.limits.body_bytes_max as usize {
                return Err(AppendError::TooLarge {
                    op: entry.op,
                    bytes: entry.payload.len(),
                });
            }
        }
        let mut batches = Vec::new();
        let mut next = 0usize;
        while next < entries.len() {
            let (segment, offset, creates) = match self.segments.last() {
                Some(s)
                    if s.write_offset + Self::fit_min(entries[next])
                        <= self.limits.segment_bytes =>
                {
                    (s.name, s.write_offset, false)
                }
                _ => (entries[next].op, 0, true),
            };
            let room = (self.limits.segment_bytes - offset).min(self.limits.batch_bytes_max as u64)
                as usize;
            let mut records = 0usize;
            let mut end = next;
            let mut ends = Vec::new();
            while end < entries.len() {
                let size = record_size(entries[end].payload.len());
                if align_up(records + size, SECTOR_SIZE) + SECTOR_SIZE > room {
                    break;
                }
                records += size;
                ends.push((entries[end].op, entries[end].view, offset + records as u64));
                end += 1;
            }
            // Config validation makes one entry fit an empty segment and a
            // batch; a fresh segment is taken above when it does not fit.
            assert!(end > next, "an entry fits no batch: limits not validated");
            let len = align_up(records, SECTOR_SIZE) + SECTOR_SIZE;
            if creates {
                self.segments.push(Segment {
                    name: segment,
                    write_offset: 0,
                    entries: Vec::new(),
                });
            }
            let s = self.segments.last_mut().expect("segment just ensured");
            s.entries.extend(ends);
            s.write_offset = offset + len as u64;
            batches.push(Batch {
                segment,
                creates_segment: creates,
                offset,
                len,
                entries: next..end,
            });
            next = end;
        }
        if let Some(last) = entries.last() {
            self.head_op = last.op;
        }
        Ok(batches)
    }

    fn fit_min(entry: EntryRef<'_>) -> u64 {
        LogLimits::single_batch_bytes(entry.payload.len()) as u64
    }

    /// Plans removing every op after `op` (a view change replacing the
    /// uncommitted suffix) and records it as done. `op` below the
    /// checkpoint is refused (`None`): committed ops are never removed.
    pub fn plan_truncate(&mut self, op: u64) -> Option<TruncatePlan> {
        if op < self.checkpoint_op {
            return None;
        }
        let mut plan = TruncatePlan {
            remove: Vec::new(),
            cut: None,
        };
        if op >= self.head_op {
            return Some(plan);
        }
        while self.segments.last().is_some_and(|s| s.name > op) {
            plan.remove.push(self.segments.pop().expect("checked").name);
        }
        self.head_op = op;
        if let Some(s) = self.segments.last_mut() {
            s.entries.retain(|&(entry_op, _, _)| entry_op <= op);
            let len = s.entries.last().map_or(0, |&(_, _, end)| end);
            s.write_offset = align_up_u64(len, SECTOR_SIZE as u64);
            plan.cut = Some((s.name, len));
        }
        Some(plan)
    }

    /// Records a new durable checkpoint at `op` and returns the segments
    /// (names) to remove: those holding nothing after `op - retain_ops`
    /// (the log keeps `retain_ops` ops behind its checkpoint, for peers
    /// that lag by fewer to catch up from it).
    pub fn release(&mut self, op: u64, retain_ops: u64) -> Vec<u64> {
        self.checkpoint_op = self.checkpoint_op.max(op);
        let mut op = op.saturating_sub(retain_ops);
        if self.head_op < self.checkpoint_op {
            // The checkpoint came from a peer (state transfer) past the
            // log: the log restarts after it, and nothing before it is
            // worth keeping (it does not reach the checkpoint).
            self.head_op = self.checkpoint_op;
            op = self.checkpoint_op;
        }
        let mut remove = Vec::new();
        loop {
            let entirely_behind = match self.segments.get(1) {
                Some(next) => next.name <= op + 1,
                None => !self.segments.is_empty() && self.head_op <= op,
            };
            if !entirely_behind {
                break;
            }
            remove.push(self.segments.remove(0).name);
        }
        remove
    }
}

/// What the recovery scan found wrong in the log, for the operator and the
/// caller's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogScanReport {
    /// Segments read.
    pub segments: u64,
    /// Records with an intact header over a damaged body.
    pub body_corrupt: u64,
    /// Intact records that do not belong where they were found
    /// (misdirected writes, other replicas' records, out of order).
    pub misplaced: u64,
    /// Runs of damaged bytes.
    pub garbage_runs: u64,
    /// Bytes cut from the end of the last segment (a torn tail).
    pub torn_bytes_cut: u64,
}

/// Assembles the log from its segments, read one at a time in name order.
pub struct LogRecovery {
    identity: Identity,
    first_op: u64,
    index: LogIndex,
    entries: Vec<Entry>,
    /// Highest op accepted (also below the checkpoint: order is checked
    /// over the whole log).
    last_op: u64,
    /// Highest op that some intact record says was written (seals, and
    /// intact records in the wrong place).
    evidence_op: u64,
    /// Injected bug (`InjectedBug::TrustUncheckedRecord`): entry records
    /// whose body fails its checksum are taken as valid.
    #[cfg(feature = "bug-injection")]
    trust_unchecked: bool,
    /// End of the last intact record of the last segment read.
    last_segment_end: u64,
    last_segment_len: u64,
    report: LogScanReport,
}

/// The log as recovered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredLog {
    /// Readable entries above the checkpoint (and those retained behind it,
    /// `Config::log_retain_ops`), in op order.
    pub entries: Vec<Entry>,
    /// Ops above the checkpoint, up to the head, that were written but are
    /// unreadable: to be repaired from peers, never acknowledged again
    /// before then.
    pub faulty: Vec<u64>,
    /// The highest op known to have been written.
    pub head_op: u64,
    /// What was wrong.
    pub report: LogScanReport,
}

impl LogRecovery {
    /// Starts assembling a log whose checkpoint is at `checkpoint_op`.
    /// Entries from `first_op` on are returned (`checkpoint_op + 1`, or
    /// lower to return the ops retained behind the checkpoint); faulty ops
    /// are named only above the checkpoint. `known_op` is an op the log is
    /// known to reach (the superblock's commit number): ops up to it that
    /// cannot be read are faulty, never cut as a torn tail.
    pub fn new(
        identity: Identity,
        checkpoint_op: u64,
        first_op: u64,
        known_op: u64,
        limits: LogLimits,
    ) -> LogRecovery {
        LogRecovery {
            identity,
            first_op: first_op.min(checkpoint_op + 1),
            index: LogIndex::new(checkpoint_op, limits),
            entries: Vec::new(),
            last_op: 0,
            evidence_op: known_op,
            #[cfg(feature = "bug-injection")]
            trust_unchecked: false,
            last_segment_end: 0,
            last_segment_len: 0,
            report: LogScanReport::default(),
        }
    }

    /// Test-only: switches on the injected bug
    /// `InjectedBug::TrustUncheckedRecord` for this scan.
    #[cfg(feature = "bug-injection")]
    pub fn trust_unchecked_records(&mut self) {
        self.trust_unchecked = true;
    }

    /// The injected bug's view of a found record: an entry with an intact
    /// header over a damaged body that lies within the file becomes valid.
    #[cfg(feature = "bug-injection")]
    fn injected<'b>(&self, found: Found<'b>, bytes: &'b [u8]) -> Found<'b> {
        use crate::format::HEADER_SIZE;
        match found {
            Found::BodyCorrupt { offset, header }
                if self.trust_unchecked && header.kind == Kind::Entry =>
            {
                let start = offset as usize + HEADER_SIZE;
                match bytes.get(start..start + header.body_size as usize) {
                    Some(body) => Found::Valid {
                        offset,
                        header,
                        body,
                    },
                    None => Found::BodyCorrupt { offset, header },
                }
            }
            other => other,
        }
    }

    /// Adds the segment `name`, whose whole file is `bytes` (at most
    /// `segment_bytes`: the caller reads no more). Segments must come in
    /// name order.
    pub fn add_segment(&mut self, name: u64, bytes: &[u8]) {
        debug_assert!(
            self.index.segments.last().is_none_or(|s| s.name < name),
            "segments out of order"
        );
        self.report.segments += 1;
        let expect = Expect {
            identity: self.identity,
            file: name,
            body_bytes_max: self.index.limits.body_bytes_max,
        };
        let mut segment = Segment {
            name,
            write_offset: 0,
            entries: Vec::new(),
        };
        let mut end = 0u64;
        for found in Scanner::new(bytes, expect) {
            #[cfg(feature = "bug-injection")]
            let found = self.injected(found, bytes);
            match found {
                Found::Valid {
                    offset,
                    header,
                    body,
                } => {
                    let record_end = offset + record_size(body.len()) as u64;
                    match header.kind {
                        // No view order (see `plan_append`): views start
                        // again in each epoch.
                        Kind::Entry if header.op > self.last_op && header.op >= name => {
                            self.last_op = header.op;
                            segment.entries.push((header.op, header.aux, record_end));
                            if header.op >= self.first_op {
                                self.entries.push(Entry {
                                    op: header.op,
                                    view: header.aux,
                                    payload: body.to_vec(),
                                });
                            }
                            end = record_end;
                        }
                        Kind::Seal if header.aux >= name && header.op >= header.aux => {
                            self.evidence_op = self.evidence_op.max(header.op);
                            // A seal owns the rest of its sector.
                            end = align_up_u64(record_end, SECTOR_SIZE as u64);
                        }
                        _ => self.report.misplaced += 1,
                    }
                }
                Found::BodyCorrupt { .. } => self.report.body_corrupt += 1,
                Found::Misplaced { offset, header } => {
                    self.report.misplaced += 1;
                    // An intact record of ours written to the wrong place
                    // still proves its op was written: the op is reported
                    // faulty rather than silently cut with a torn tail. The
                    // record is kept (not cut) so the proof survives until
                    // the op is repaired.
                    if header.identity == self.identity
                        && matches!(header.kind, Kind::Entry | Kind::Seal)
                    {
                        self.evidence_op = self.evidence_op.max(header.op);
                        let record_end = offset + record_size(header.body_size as usize) as u64;
                        end = end.max(record_end.min(bytes.len() as u64));
                    }
                }
                Found::Garbage { .. } => self.report.garbage_runs += 1,
            }
        }
        segment.write_offset = align_up_u64(end, SECTOR_SIZE as u64);
        self.last_segment_end = end;
        self.last_segment_len = bytes.len() as u64;
        self.index.segments.push(segment);
    }

    /// Finishes: the log, and the index to append after it. When
    /// `cut` is `Some((segment, len))`, the last segment's file is longer
    /// than its last intact record (a torn tail): the caller truncates it to
    /// `len` and syncs before appending. When `remove_last` is set, the last
    /// segment holds nothing and is named above the head: remove it.
    pub fn finish(mut self) -> (LogIndex, RecoveredLog, Option<(u64, u64)>) {
        let checkpoint_op = self.index.checkpoint_op;
        let head = checkpoint_op.max(self.last_op).max(self.evidence_op);
        self.index.head_op = head;
        let mut cut = None;
        if let Some(last) = self.index.segments.last() {
            if self.last_segment_len > self.last_segment_end {
                self.report.torn_bytes_cut = self.last_segment_len - self.last_segment_end;
                cut = Some((last.name, self.last_segment_end));
            }
        }
        let mut faulty = Vec::new();
        let mut next = checkpoint_op + 1;
        for entry in self.entries.iter().filter(|e| e.op > checkpoint_op) {
            faulty.extend(next..entry.op);
            next = entry.op + 1;
        }
        faulty.extend(next..=head);
        (
            self.index,
            RecoveredLog {
                entries: self.entries,
                faulty,
                head_op: head,
                report: self.report,
            },
            cut,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Identity = Identity {
        cluster_id: 77,
        member_id: 1,
    };
    const LIMITS: LogLimits = LogLimits {
        segment_bytes: 64 * 1024,
        batch_bytes_max: 16 * 1024,
        body_bytes_max: 4096,
    };

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_file_name(42), "log-00000000000000000042");
        assert_eq!(
            parse_segment_file_name("log-00000000000000000042"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("log-42"), None);
        assert_eq!(parse_segment_file_name("superblock"), None);
    }

    #[test]
    fn append_is_refused_unless_it_continues_the_log() {
        let mut index = LogIndex::new(0, LIMITS);
        let gap = [EntryRef {
            op: 2,
            view: 0,
            payload: b"x",
        }];
        assert_eq!(
            index.plan_append(&gap),
            Err(AppendError::NotConsecutive {
                expected: 1,
                got: 2
            })
        );
        let ok = [EntryRef {
            op: 1,
            view: 5,
            payload: b"x",
        }];
        assert_eq!(index.plan_append(&ok).unwrap().len(), 1);
        // A lower view is a new epoch's (§7): the log takes it.
        let next_epoch = [EntryRef {
            op: 2,
            view: 0,
            payload: b"x",
        }];
        assert_eq!(index.plan_append(&next_epoch).unwrap().len(), 1);
    }

    #[test]
    fn batches_fill_segments_and_roll_over() {
        let mut index = LogIndex::new(0, LIMITS);
        let payload = [7u8; 1000];
        let entries: Vec<_> = (1..=200)
            .map(|op| EntryRef {
                op,
                view: 1,
                payload: &payload,
            })
            .collect();
        let batches = index.plan_append(&entries).unwrap();
        for b in &batches {
            assert_eq!(b.offset % SECTOR_SIZE as u64, 0);
            assert_eq!(b.len % SECTOR_SIZE, 0);
            assert!(b.len <= LIMITS.batch_bytes_max);
            assert!(b.offset + b.len as u64 <= LIMITS.segment_bytes);
        }
        assert!(index.segments.len() > 1);
        // Encode everything into per-segment images and read them back.
        let mut files: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
        for b in &batches {
            let file = files.entry(b.segment).or_default();
            file.resize((b.offset as usize + b.len).max(file.len()), 0);
            encode_batch(ID, b, &entries, &mut file[b.offset as usize..]);
        }
        let mut recovery = LogRecovery::new(ID, 0, 1, 0, LIMITS);
        for (name, bytes) in &files {
            recovery.add_segment(*name, bytes);
        }
        let (recovered_index, log, cut) = recovery.finish();
        assert_eq!(cut, None);
        assert!(log.faulty.is_empty());
        assert_eq!(log.entries.len(), 200);
        assert_eq!(recovered_index.segments, index.segments);
        assert_eq!(recovered_index.head_op, 200);
    }

    #[test]
    fn release_removes_only_segments_wholly_behind() {
        let mut index = LogIndex::new(0, LIMITS);
        for (name, ops) in [(1u64, 1..=10u64), (11, 11..=20), (21, 21..=25)] {
            index.segments.push(Segment {
                name,
                write_offset: 0,
                entries: ops.map(|op| (op, 1, op * 100)).collect(),
            });
        }
        index.head_op = 25;
        assert_eq!(index.release(9, 0), Vec::<u64>::new());
        assert_eq!(index.release(14, 5), Vec::<u64>::new());
        assert_eq!(index.release(15, 5), vec![1]);
        assert_eq!(index.release(24, 0), vec![11]);
        assert_eq!(index.release(25, 0), vec![21]);
        assert!(index.segments.is_empty());
        assert_eq!(index.head_op, 25);
    }
}
