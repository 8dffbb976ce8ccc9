//! [`Storage`]: one replica's data directory over a blocking [`Backend`]:
//! the recovery scan at open, then the [`Planner`]'s plans executed in
//! order.

use std::fmt;
use std::io;

use crate::backend::{is_media_error, read_file, Backend};
use crate::checkpoint::{
    checkpoint_file_name, file_bytes_max, parse_checkpoint_file_name, read_pages, verify_manifest,
};
use crate::format::{
    record_size, CheckpointRef, Identity, ReplicaState, Superblock, SECTOR_SIZE, SUPERBLOCK_COPIES,
};
use crate::log::{
    parse_segment_file_name, segment_file_name, AppendError, EntryRef, LogLimits, LogRecovery,
    RecoveredLog,
};
use crate::plan::{execute, format_steps, superblock_steps, Planner, Step};

/// The superblock's file.
pub const SUPERBLOCK_FILE: &str = "superblock";

/// Where [`Storage::format`] writes the first superblock before renaming
/// it into place, so that a crash during format leaves the directory
/// unformatted (format again), never half formatted.
pub(crate) const FORMAT_FILE: &str = "superblock.format";

/// Checkpoint pages are written in chunks of this many bytes (whole
/// sectors).
pub(crate) const CHECKPOINT_CHUNK_BYTES: usize = 1 << 20;

/// Sizes and identity of a data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Whose directory it is: written by [`Storage::format`], checked by
    /// [`Storage::open`] and in every record.
    pub identity: Identity,
    /// The most bytes in one log segment file (a multiple of
    /// [`SECTOR_SIZE`]). Disk use is bounded by the segments since the last
    /// checkpoint plus one segment.
    pub segment_bytes: u64,
    /// The most bytes one write of log entries holds (a multiple of
    /// [`SECTOR_SIZE`]); a bigger append is written in several.
    pub batch_bytes_max: usize,
    /// The largest log entry payload.
    pub entry_bytes_max: u32,
    /// The largest checkpoint page.
    pub page_bytes_max: u32,
    /// Ops the log keeps behind its checkpoint (whole segments are removed
    /// only once wholly behind `checkpoint - log_retain_ops`), and that
    /// [`Storage::open`] returns: vr-core's `log_tail_ops`, so that peers
    /// lagging by fewer catch up from the log, after a restart too.
    pub log_retain_ops: u64,
    /// [`crate::replica::complete_persist`] writes the superblock when a
    /// promise changed, and also when the commit-number it would store is
    /// this many ops past the stored one (0: never for that reason). After
    /// a restart a replica knows only the disk's commit-number, and its
    /// DoViewChange carries its log after it: a commit-number that lags
    /// without bound makes that message outgrow a frame (vr-sim seed 43).
    /// vr-core's `prepare_window_max` keeps it within the window's reach.
    pub commit_refresh_ops: u64,
    /// Test-only: a deliberate storage bug, for showing that a checker
    /// catches it. `None` in every real configuration.
    #[cfg(feature = "bug-injection")]
    pub injected_bug: Option<InjectedBug>,
}

/// Deliberate storage bugs, for tests of checkers (the simulator's); they
/// can be switched on only with the feature `bug-injection`.
#[cfg(feature = "bug-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// The recovery scan takes a log entry record whose header is intact
    /// but whose body fails its checksum as if it were valid: the damaged
    /// bytes become the entry, instead of the op being reported faulty
    /// (breaks "damage is never returned as data").
    TrustUncheckedRecord,
}

impl Config {
    /// Defaults: 64 MiB segments, 1 MiB batches, entries up to 512 KiB,
    /// pages up to 64 KiB.
    pub fn new(identity: Identity) -> Config {
        Config {
            identity,
            segment_bytes: 64 << 20,
            batch_bytes_max: 1 << 20,
            entry_bytes_max: 512 << 10,
            page_bytes_max: 64 << 10,
            log_retain_ops: 0,
            commit_refresh_ops: 0,
            #[cfg(feature = "bug-injection")]
            injected_bug: None,
        }
    }

    fn limits(&self) -> LogLimits {
        LogLimits {
            segment_bytes: self.segment_bytes,
            batch_bytes_max: self.batch_bytes_max,
            body_bytes_max: self.entry_bytes_max,
        }
    }

    /// Checks the sizes fit together: one entry of the largest size must
    /// fit a batch, and a batch a segment.
    pub fn validate(&self) -> Result<(), Error> {
        let sector = SECTOR_SIZE as u64;
        if !self.segment_bytes.is_multiple_of(sector)
            || !self.batch_bytes_max.is_multiple_of(SECTOR_SIZE)
        {
            return Err(Error::InvalidConfig(
                "segment and batch sizes must be multiples of 4096",
            ));
        }
        let one = LogLimits::single_batch_bytes(self.entry_bytes_max as usize);
        if one > self.batch_bytes_max || self.batch_bytes_max as u64 > self.segment_bytes {
            return Err(Error::InvalidConfig(
                "a batch of the largest entry must fit batch_bytes_max, and a batch a segment",
            ));
        }
        if record_size(self.page_bytes_max as usize) > CHECKPOINT_CHUNK_BYTES {
            return Err(Error::InvalidConfig("page_bytes_max over 1 MiB"));
        }
        Ok(())
    }
}

/// What went wrong.
#[derive(Debug)]
pub enum Error {
    /// The backend failed. After a failed write or sync the [`Storage`] is
    /// unusable (what reached the disk is unknown). After a failed sync,
    /// do not reopen in the same boot and carry on: Linux may have marked
    /// the unwritten pages clean, so they would read back as if durable.
    /// Stop the replica (see `docs/storage.md`).
    Io(io::Error),
    /// The directory holds no data of ours: it was never formatted. Format
    /// it only if this replica is new (see `docs/storage.md`).
    Unformatted,
    /// [`Storage::format`] on a directory that already holds data.
    AlreadyFormatted,
    /// The directory holds our files but no intact superblock copy: its
    /// data is lost. Never treated as empty: the replica must recover from
    /// its peers (and be reformatted by an operator who knows it).
    SuperblockLost,
    /// The directory belongs to another cluster or member.
    WrongIdentity {
        /// Whose it is.
        found: Identity,
        /// Whose it was expected to be.
        expected: Identity,
    },
    /// The configuration's sizes do not fit together.
    InvalidConfig(&'static str),
    /// An append that does not continue the log.
    Append(AppendError),
    /// A superblock write that would take a promise back (a lower view,
    /// epoch or incarnation): a bug in the caller.
    Regression(&'static str),
    /// A truncation below the checkpoint (committed ops are never removed).
    TruncateBelowCheckpoint,
    /// A checkpoint older than the current one.
    CheckpointNotNewer,
    /// A checkpoint at the current one's op whose pages or root differ
    /// from it (a repair must write the same checkpoint).
    CheckpointMismatch,
    /// A checkpoint page over `page_bytes_max`.
    PageTooLarge,
    /// An earlier IO error left the storage in an unknown state.
    Poisoned,
    /// A persist of vr-core that does not fit the disk (e.g. checkpoint
    /// pages that are not the checkpoint's): a bug in the caller.
    InvalidPersist(&'static str),
    /// The directory is an intact image of a later epoch (the cluster was
    /// reconfigured) whose membership is not stored with it: start the
    /// replica with that epoch's configuration.
    EpochUnknown {
        /// The disk's epoch.
        epoch: u32,
    },
    /// A log segment longer than `segment_bytes`: the directory was written
    /// with a larger setting. Open it with that setting.
    SegmentTooLarge {
        /// The segment's file.
        file: String,
        /// Its length.
        len: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "storage IO error: {e}"),
            Error::Unformatted => write!(f, "data directory is not formatted (no superblock, no log): format it first"),
            Error::AlreadyFormatted => write!(f, "data directory already holds data; refusing to format it"),
            Error::SuperblockLost => write!(
                f,
                "data directory holds data but no intact superblock copy: its state is lost; \
                 recover this replica from its peers, do not treat the directory as empty"
            ),
            Error::WrongIdentity { found, expected } => write!(
                f,
                "data directory belongs to cluster {:032x} member {}, not cluster {:032x} member {}",
                found.cluster_id, found.member_id, expected.cluster_id, expected.member_id
            ),
            Error::InvalidConfig(why) => write!(f, "invalid storage configuration: {why}"),
            Error::Append(e) => write!(f, "append refused: {e:?}"),
            Error::Regression(what) => write!(f, "superblock write would take {what} back"),
            Error::TruncateBelowCheckpoint => write!(f, "truncation below the durable checkpoint refused"),
            Error::CheckpointNotNewer => write!(f, "checkpoint is older than the current one"),
            Error::CheckpointMismatch => write!(
                f,
                "checkpoint at the current op differs from the current checkpoint: a repair must write the same pages"
            ),
            Error::PageTooLarge => write!(f, "checkpoint page over page_bytes_max"),
            Error::InvalidPersist(why) => write!(f, "persist refused: {why}"),
            Error::Poisoned => write!(f, "storage unusable after an earlier IO error: reopen it"),
            Error::EpochUnknown { epoch } => write!(
                f,
                "data directory is an intact image of epoch {epoch}, whose membership is not stored: \
                 start this replica with epoch {epoch}'s configuration (do not delete the directory)"
            ),
            Error::SegmentTooLarge { file, len } => write!(
                f,
                "log segment {file} is {len} bytes, over segment_bytes: open with the setting it was written with"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<AppendError> for Error {
    fn from(e: AppendError) -> Error {
        Error::Append(e)
    }
}

/// The current checkpoint as read at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveredCheckpoint {
    /// No checkpoint was ever written: the state is empty (before op 1).
    Empty,
    /// The checkpoint was read. Pages listed in `faulty_pages` are damaged
    /// (empty in `pages`): fetch them from peers by the root.
    Read {
        /// Its op number.
        op: u64,
        /// Its root, as given to [`Storage::write_checkpoint`].
        root: [u8; 32],
        /// Every page by index.
        pages: Vec<Vec<u8>>,
        /// Damaged pages.
        faulty_pages: Vec<u64>,
    },
    /// The superblock names a checkpoint whose file is missing or whose
    /// manifest is damaged: fetch it whole from peers by its root.
    Lost {
        /// Its op number.
        op: u64,
        /// Its root.
        root: [u8; 32],
        /// Its page count.
        page_count: u64,
    },
}

/// What [`Storage::open`] found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The replica's promises as last synced (or newer).
    pub state: ReplicaState,
    /// The current checkpoint.
    pub checkpoint: RecoveredCheckpoint,
    /// The log after the checkpoint: readable entries and faulty ops.
    pub log: RecoveredLog,
    /// Superblock copies found intact (of [`SUPERBLOCK_COPIES`]); fewer
    /// means one was rewritten at open.
    pub superblock_copies_intact: usize,
    /// Leftover files removed (checkpoints a crash left unreferenced,
    /// segments behind the checkpoint).
    pub files_removed: u64,
    /// Sectors the device could not read (`EIO`): treated as damaged, so
    /// what they held is in the faulty ops or pages (or cut, at the log's
    /// tail, like any damage there).
    pub sectors_unreadable: u64,
}

/// What the storage did so far: for the caller's counters and the
/// "fsyncs per write" figure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// File syncs (`fdatasync`).
    pub syncs: u64,
    /// Directory syncs.
    pub dir_syncs: u64,
    /// Writes issued.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Log entries appended.
    pub entries_appended: u64,
}

/// One replica's data directory: superblock, log, checkpoint.
///
/// Methods that change the disk say when their change is durable:
/// [`Storage::append`] only once [`Storage::sync`] returns;
/// [`Storage::truncate_after`], [`Storage::write_superblock`] and
/// [`Storage::write_checkpoint`] when they return. After any IO error the
/// storage refuses further use ([`Error::Poisoned`]); see [`Error::Io`]
/// for what the caller must do then.
pub struct Storage<B: Backend> {
    backend: B,
    planner: Planner,
    poisoned: bool,
    stats: StorageStats,
}

fn is_ours(name: &str) -> bool {
    name == SUPERBLOCK_FILE
        || parse_segment_file_name(name).is_some()
        || parse_checkpoint_file_name(name).is_some()
}

impl<B: Backend> Storage<B> {
    /// Formats an empty data directory: writes a fresh superblock (view 0,
    /// no checkpoint, empty log) for `config.identity`, durably, through a
    /// side file renamed into place (a crash leaves the directory
    /// unformatted or formatted, never half). Refuses a directory that
    /// holds any of our files.
    pub fn format(backend: &mut B, config: &Config) -> Result<(), Error> {
        config.validate()?;
        if backend.list()?.iter().any(|n| is_ours(n)) {
            return Err(Error::AlreadyFormatted);
        }
        execute(backend, &format_steps(config), &mut StorageStats::default())?;
        Ok(())
    }

    /// Opens a formatted data directory and scans it: returns the storage,
    /// ready to append after the log's head, and what was recovered.
    ///
    /// Repairs what it can by itself before returning, durably: a torn log
    /// tail is cut, a damaged or stale superblock copy rewritten, leftover
    /// files of an interrupted checkpoint removed. What needs peers (faulty
    /// ops, damaged or lost checkpoint pages) is reported in [`Recovered`].
    pub fn open(mut backend: B, config: Config) -> Result<(Storage<B>, Recovered), Error> {
        config.validate()?;
        let names = backend.list()?;
        let has_superblock = names.iter().any(|n| n == SUPERBLOCK_FILE);
        if !has_superblock {
            return Err(if names.iter().any(|n| is_ours(n)) {
                Error::SuperblockLost
            } else {
                Error::Unformatted
            });
        }
        let read = read_file(
            &mut backend,
            SUPERBLOCK_FILE,
            (SUPERBLOCK_COPIES * SECTOR_SIZE) as u64,
        )?;
        let mut sectors_unreadable = read.sectors_unreadable;
        let bytes = read.bytes;
        // Only copies of ours count: another replica's copy (a misdirected
        // write from a neighbour on the same disk) is damage, not a reason
        // to refuse our own intact copy.
        let sector = |copy: usize| bytes.get(copy * SECTOR_SIZE..(copy + 1) * SECTOR_SIZE);
        let copies: Vec<Option<(Superblock, Identity)>> = (0..SUPERBLOCK_COPIES)
            .map(|copy| Superblock::decode(sector(copy)?, copy, Some(config.identity)))
            .collect();
        let intact = copies.iter().flatten().count();
        let Some((superblock, identity)) = copies
            .iter()
            .flatten()
            .max_by_key(|(sb, _)| sb.sequence)
            .copied()
        else {
            let foreign = (0..SUPERBLOCK_COPIES)
                .find_map(|copy| Superblock::decode(sector(copy)?, copy, None));
            return Err(match foreign {
                Some((_, found)) => Error::WrongIdentity {
                    found,
                    expected: config.identity,
                },
                None => Error::SuperblockLost,
            });
        };
        let all_current = copies
            .iter()
            .all(|c| c.is_some_and(|(sb, _)| sb == superblock));

        let checkpoint = read_checkpoint(
            &mut backend,
            &config,
            &superblock.checkpoint,
            &mut sectors_unreadable,
        )?;

        let mut segments: Vec<u64> = names
            .iter()
            .filter_map(|n| parse_segment_file_name(n))
            .collect();
        segments.sort_unstable();
        let mut recovery = LogRecovery::new(
            identity,
            superblock.checkpoint.op,
            superblock
                .checkpoint
                .op
                .saturating_sub(config.log_retain_ops)
                + 1,
            superblock.state.commit_number,
            config.limits(),
        );
        #[cfg(feature = "bug-injection")]
        if config.injected_bug == Some(InjectedBug::TrustUncheckedRecord) {
            recovery.trust_unchecked_records();
        }
        for &name in &segments {
            let file = segment_file_name(name);
            // Memory is bounded by the segment size; a longer file (written
            // with a larger `segment_bytes`) is refused rather than read in
            // part, which would lose its end.
            let len = backend.len(&file)?;
            if len > config.segment_bytes {
                return Err(Error::SegmentTooLarge { file, len });
            }
            let read = read_file(&mut backend, &file, config.segment_bytes)?;
            sectors_unreadable += read.sectors_unreadable;
            recovery.add_segment(name, &read.bytes);
        }
        let (index, log, cut) = recovery.finish();

        let mut steps = Vec::new();
        let mut files_removed = 0;
        if let Some((name, len)) = cut {
            let file = segment_file_name(name);
            steps.push(Step::Truncate {
                file: file.clone(),
                len,
            });
            steps.push(Step::Sync { file });
        }
        let mut index = index;
        // A segment created for a batch that was lost whole is named above
        // the head: appending op head+1 to it would put an op below its
        // name, so it goes.
        while let Some(last) = index.segments.last() {
            if last.name <= index.head_op + 1 {
                break;
            }
            steps.push(Step::Remove {
                file: segment_file_name(last.name),
            });
            index.segments.pop();
            files_removed += 1;
        }
        if names.iter().any(|n| n == FORMAT_FILE) {
            // Left by a format whose rename survived a crash twice over.
            steps.push(Step::Remove {
                file: FORMAT_FILE.to_string(),
            });
            files_removed += 1;
        }
        for name in &names {
            if parse_checkpoint_file_name(name).is_some_and(|op| op != superblock.checkpoint.op) {
                steps.push(Step::Remove { file: name.clone() });
                files_removed += 1;
            }
        }
        for name in index.release(superblock.checkpoint.op, config.log_retain_ops) {
            steps.push(Step::Remove {
                file: segment_file_name(name),
            });
            files_removed += 1;
        }
        if files_removed > 0 {
            steps.push(Step::SyncDir);
        }
        let mut current = superblock;
        if !all_current {
            current.sequence += 1;
            steps.extend(superblock_steps(SUPERBLOCK_FILE, identity, &current));
        }
        let mut storage = Storage {
            backend,
            planner: Planner::new(config, current, index),
            poisoned: false,
            stats: StorageStats::default(),
        };
        storage.run(Ok(steps))?;
        let recovered = Recovered {
            state: superblock.state,
            checkpoint,
            log,
            superblock_copies_intact: intact,
            files_removed,
            sectors_unreadable,
        };
        Ok((storage, recovered))
    }

    /// Runs a plan; an IO error poisons the storage.
    fn run(&mut self, plan: Result<Vec<Step>, Error>) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let steps = plan?;
        execute(&mut self.backend, &steps, &mut self.stats).map_err(|e| {
            self.poisoned = true;
            Error::Io(e)
        })
    }

    /// Writes `entries`, which must continue the log (op `head_op() + 1`
    /// on, consecutive; views may restart at a new epoch), as few batches as the limits
    /// allow. Not durable until [`Storage::sync`] returns: call `sync` once
    /// for everything appended since the last one (group commit).
    pub fn append(&mut self, entries: &[EntryRef<'_>]) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let plan = self.planner.append(entries);
        self.run(plan)
    }

    /// Makes every append so far durable: one `fdatasync` per segment
    /// written (usually one), and a directory sync if a segment was
    /// created.
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let plan = self.planner.sync();
        self.run(Ok(plan))
    }

    /// Whether everything appended is durable.
    pub fn is_synced(&self) -> bool {
        self.planner.is_synced()
    }

    /// Removes every entry after `op` (a view change replacing the
    /// uncommitted suffix, or the start of repairing a faulty op: truncate
    /// before it, then append the entries again), durably. Later segments
    /// are removed first, one at a time, then the last one cut, so that a
    /// crash in between leaves a prefix of the old log, never old entries
    /// after a gap. Refused below the checkpoint.
    pub fn truncate_after(&mut self, op: u64) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let plan = self.planner.truncate_after(op);
        self.run(plan)
    }

    /// Writes the replica's promises, durably: both superblock copies, one
    /// after the other, each synced, so a crash tears at most one and a
    /// damaged copy later still leaves the other at the newest state.
    /// Refuses to take the epoch, view, last normal view or incarnation
    /// back. Costs two `fdatasync`s: write it when a promise changes (a
    /// view change, a recovery), not per commit.
    pub fn write_superblock(&mut self, state: &ReplicaState) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let plan = self.planner.write_superblock(state);
        self.run(plan)
    }

    /// Writes the checkpoint at `op` (the state after executing op `op`:
    /// committed, executed) with its `pages` and the caller's `root` over
    /// them, durably; makes it current in the superblock; then removes the
    /// previous checkpoint and every log segment wholly at or before `op`.
    ///
    /// A crash before the superblock write leaves the previous checkpoint
    /// current (the new file is removed at the next open); after it, the
    /// new one. A checkpoint past the log's head (one fetched from peers)
    /// restarts the log after it. Pages are written whole every time (no
    /// incremental checkpoints yet).
    ///
    /// At the current checkpoint's op it is a *repair* (the checkpoint was
    /// [`RecoveredCheckpoint::Lost`] or had faulty pages, and its pages came
    /// from peers): the same bytes are written over the file in place, so a
    /// crash during it damages at most sectors that were being rewritten
    /// with the same content. Pages or root other than the current
    /// checkpoint's are refused ([`Error::CheckpointMismatch`]).
    pub fn write_checkpoint<I>(&mut self, op: u64, root: [u8; 32], pages: I) -> Result<(), Error>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let plan = self.planner.write_checkpoint(op, root, pages);
        self.run(plan)
    }

    /// The highest op in the log (appended, synced or not), or the
    /// checkpoint's op if the log is empty after it.
    pub fn head_op(&self) -> u64 {
        self.planner.head_op()
    }

    /// The promises as last written.
    pub fn state(&self) -> ReplicaState {
        self.planner.state()
    }

    /// The current checkpoint.
    pub fn checkpoint(&self) -> CheckpointRef {
        self.planner.checkpoint()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.planner.config()
    }

    /// Counts of the IO done so far.
    pub fn stats(&self) -> StorageStats {
        StorageStats {
            entries_appended: self.planner.entries_appended(),
            ..self.stats
        }
    }

    /// The log segments (names) on disk.
    pub fn segments(&self) -> Vec<u64> {
        self.planner.segments()
    }

    /// The backend, to inspect it.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, for files beside the storage's own (the glue's
    /// recovery marker).
    #[cfg_attr(not(feature = "vr-core"), allow(dead_code))]
    pub(crate) fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Gives the backend back (closing the storage).
    pub fn into_backend(self) -> B {
        self.backend
    }

    /// Splits the storage into its planner and backend, for an adapter that
    /// does its own IO after a blocking [`Storage::open`]: it executes the
    /// planner's [`Step`]s (see [`crate::plan`]). `None` if poisoned.
    pub fn into_parts(self) -> Option<(Planner, B)> {
        (!self.poisoned).then_some((self.planner, self.backend))
    }
}

fn read_checkpoint<B: Backend>(
    backend: &mut B,
    config: &Config,
    checkpoint: &CheckpointRef,
    sectors_unreadable: &mut u64,
) -> Result<RecoveredCheckpoint, Error> {
    if checkpoint.op == 0 {
        return Ok(RecoveredCheckpoint::Empty);
    }
    let lost = RecoveredCheckpoint::Lost {
        op: checkpoint.op,
        root: checkpoint.root,
        page_count: checkpoint.page_count,
    };
    let file = checkpoint_file_name(checkpoint.op);
    if !backend.list()?.contains(&file) {
        return Ok(lost);
    }
    let mut sector = vec![0u8; SECTOR_SIZE];
    let n = match backend.read_at(&file, 0, &mut sector) {
        Ok(n) => n,
        Err(e) if is_media_error(&e) => {
            *sectors_unreadable += 1;
            return Ok(lost);
        }
        Err(e) => return Err(e.into()),
    };
    let Some(manifest) = verify_manifest(
        config.identity,
        checkpoint.op,
        checkpoint.manifest,
        &sector[..n],
    ) else {
        return Ok(lost);
    };
    if manifest.root != checkpoint.root || manifest.page_count != checkpoint.page_count {
        return Ok(lost);
    }
    let read = read_file(backend, &file, file_bytes_max(&manifest))?;
    *sectors_unreadable += read.sectors_unreadable;
    let bytes = read.bytes;
    Ok(
        match read_pages(
            config.identity,
            checkpoint.op,
            &manifest,
            &bytes,
            config.page_bytes_max,
        ) {
            Ok(read) => RecoveredCheckpoint::Read {
                op: checkpoint.op,
                root: checkpoint.root,
                pages: read.pages,
                faulty_pages: read.faulty,
            },
            Err(_) => lost,
        },
    )
}
