//! What to write, in what order, with no IO: the [`Planner`] turns each
//! change (append, sync, truncate, superblock, checkpoint) into a list of
//! [`Step`]s whose order is what makes it crash-safe. [`Storage`] executes
//! them on a blocking [`Backend`]; an adapter with its own IO (glommio's DMA
//! files over io_uring) executes the same steps its own way, so the order
//! exists once.
//!
//! Executing plans: run the steps of a plan in order, each finished before
//! the next starts, and plans in the order they were made. Two relaxations
//! are safe: consecutive [`Step::Write`]s of one plan may run concurrently,
//! and an append's writes may run while an earlier sync plan's
//! [`Step::Sync`] is in flight (they go to fresh sectors; that sync vouches
//! only for appends planned before it). Every write is whole sectors at a
//! sector offset, so the bytes can go to an O_DIRECT file as they are (the
//! executor copies them into its aligned buffers). After any failed step,
//! stop using the planner: what reached the disk is unknown.
//!
//! [`Storage`]: crate::Storage

use std::collections::BTreeSet;

use crate::backend::Backend;
use crate::checkpoint::{checkpoint_file_name, CheckpointWriter};
use crate::format::{
    CheckpointRef, Identity, ReplicaState, Superblock, SECTOR_SIZE, SUPERBLOCK_COPIES,
};
use crate::log::{encode_batch, segment_file_name, EntryRef, LogIndex};
use crate::storage::{
    Config, Error, StorageStats, CHECKPOINT_CHUNK_BYTES, FORMAT_FILE, SUPERBLOCK_FILE,
};

/// One IO step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write `bytes` at `offset` of `file`, creating it if missing.
    Write {
        /// The file.
        file: String,
        /// Where (a multiple of [`SECTOR_SIZE`]).
        offset: u64,
        /// What (a multiple of [`SECTOR_SIZE`] bytes).
        bytes: Vec<u8>,
    },
    /// `fdatasync` the file.
    Sync {
        /// The file.
        file: String,
    },
    /// Set the file's length.
    Truncate {
        /// The file.
        file: String,
        /// Its new length.
        len: u64,
    },
    /// Remove the file (missing is fine).
    Remove {
        /// The file.
        file: String,
    },
    /// Rename `from` to `to`.
    Rename {
        /// The old name.
        from: String,
        /// The new name.
        to: String,
    },
    /// `fsync` the directory.
    SyncDir,
}

/// Runs `steps` in order on a blocking backend, counting them in `stats`.
pub fn execute<B: Backend + ?Sized>(
    backend: &mut B,
    steps: &[Step],
    stats: &mut StorageStats,
) -> std::io::Result<()> {
    for step in steps {
        match step {
            Step::Write {
                file,
                offset,
                bytes,
            } => {
                backend.write_at(file, *offset, bytes)?;
                stats.writes += 1;
                stats.bytes_written += bytes.len() as u64;
            }
            Step::Sync { file } => {
                backend.sync(file)?;
                stats.syncs += 1;
            }
            Step::Truncate { file, len } => backend.truncate(file, *len)?,
            Step::Remove { file } => backend.remove(file)?,
            Step::Rename { from, to } => backend.rename(from, to)?,
            Step::SyncDir => {
                backend.sync_dir()?;
                stats.dir_syncs += 1;
            }
        }
    }
    Ok(())
}

/// The steps that write `superblock` into `file`: copy 0, sync, copy 1,
/// sync. Synced one at a time, so a crash tears at most the copy being
/// written, never both.
pub fn superblock_steps(file: &str, identity: Identity, superblock: &Superblock) -> Vec<Step> {
    let mut steps = Vec::with_capacity(2 * SUPERBLOCK_COPIES);
    let mut sector = Box::new([0u8; SECTOR_SIZE]);
    for copy in 0..SUPERBLOCK_COPIES {
        superblock.encode(identity, copy, &mut sector);
        steps.push(Step::Write {
            file: file.to_string(),
            offset: (copy * SECTOR_SIZE) as u64,
            bytes: sector.to_vec(),
        });
        steps.push(Step::Sync {
            file: file.to_string(),
        });
    }
    steps
}

/// The steps that format an empty directory: the first superblock written
/// to a side file, synced, renamed into place, the directory synced. A
/// crash leaves the directory unformatted or formatted, never half.
pub fn format_steps(config: &Config) -> Vec<Step> {
    let superblock = Superblock {
        sequence: 1,
        state: ReplicaState::default(),
        checkpoint: CheckpointRef::default(),
        log_first_op: 1,
    };
    let mut steps = vec![Step::Remove {
        file: FORMAT_FILE.to_string(),
    }];
    steps.extend(superblock_steps(FORMAT_FILE, config.identity, &superblock));
    steps.push(Step::Rename {
        from: FORMAT_FILE.to_string(),
        to: SUPERBLOCK_FILE.to_string(),
    });
    steps.push(Step::SyncDir);
    steps
}

/// A replica's durable state as the planner knows it, and the planning of
/// every change to it. Get one from [`Storage::open`] and
/// [`Storage::into_parts`](crate::Storage::into_parts).
///
/// [`Storage::open`]: crate::Storage::open
#[derive(Debug)]
pub struct Planner {
    config: Config,
    superblock: Superblock,
    index: LogIndex,
    unsynced: BTreeSet<u64>,
    dir_unsynced: bool,
    entries_appended: u64,
}

impl Planner {
    pub(crate) fn new(config: Config, superblock: Superblock, index: LogIndex) -> Planner {
        Planner {
            config,
            superblock,
            index,
            unsynced: BTreeSet::new(),
            dir_unsynced: false,
            entries_appended: 0,
        }
    }

    /// Plans writing `entries`, which must continue the log (op
    /// `head_op() + 1` on, consecutive; views may restart at a new epoch): one
    /// [`Step::Write`] per batch. Not durable until a [`Planner::sync`]
    /// plan made after it has run.
    pub fn append(&mut self, entries: &[EntryRef<'_>]) -> Result<Vec<Step>, Error> {
        let batches = self.index.plan_append(entries)?;
        let mut steps = Vec::with_capacity(batches.len());
        for batch in &batches {
            let mut bytes = vec![0u8; batch.len];
            encode_batch(self.config.identity, batch, entries, &mut bytes);
            steps.push(Step::Write {
                file: segment_file_name(batch.segment),
                offset: batch.offset,
                bytes,
            });
            self.unsynced.insert(batch.segment);
            self.dir_unsynced |= batch.creates_segment;
        }
        self.entries_appended += entries.len() as u64;
        Ok(steps)
    }

    /// Plans making every append so far durable: one `fdatasync` per
    /// segment written (usually one), and a directory sync if a segment was
    /// created. Empty when everything is synced.
    pub fn sync(&mut self) -> Vec<Step> {
        let mut steps: Vec<Step> = std::mem::take(&mut self.unsynced)
            .into_iter()
            .map(|segment| Step::Sync {
                file: segment_file_name(segment),
            })
            .collect();
        if std::mem::take(&mut self.dir_unsynced) {
            steps.push(Step::SyncDir);
        }
        steps
    }

    /// Whether every append has been planned into a sync.
    pub fn is_synced(&self) -> bool {
        self.unsynced.is_empty() && !self.dir_unsynced
    }

    /// Plans removing every entry after `op`, durably: later segments
    /// removed one at a time, highest first, each removal made durable
    /// before the next (a directory need not make removals durable in
    /// order, and a later segment coming back after an earlier one went
    /// would leave old entries after a gap); then the last one cut and
    /// synced. A crash in between leaves a prefix of the old log.
    pub fn truncate_after(&mut self, op: u64) -> Result<Vec<Step>, Error> {
        let plan = self
            .index
            .plan_truncate(op)
            .ok_or(Error::TruncateBelowCheckpoint)?;
        let mut steps = Vec::new();
        for &name in &plan.remove {
            steps.push(Step::Remove {
                file: segment_file_name(name),
            });
            steps.push(Step::SyncDir);
            self.unsynced.remove(&name);
        }
        if let Some((name, len)) = plan.cut {
            let file = segment_file_name(name);
            steps.push(Step::Truncate {
                file: file.clone(),
                len,
            });
            steps.push(Step::Sync { file });
            self.unsynced.remove(&name);
        }
        Ok(steps)
    }

    /// Plans writing the replica's promises: both superblock copies, each
    /// synced. Refuses to take the epoch or incarnation back, or the view or
    /// last normal view within one epoch (views restart in a new epoch).
    pub fn write_superblock(&mut self, state: &ReplicaState) -> Result<Vec<Step>, Error> {
        let old = &self.superblock.state;
        if state.epoch < old.epoch {
            return Err(Error::Regression("the epoch"));
        }
        // Views start again at 0 in a new epoch (§7): they are ordered
        // only within one.
        let same_epoch = state.epoch == old.epoch;
        if same_epoch && state.view_number < old.view_number {
            return Err(Error::Regression("the view number"));
        }
        if same_epoch && state.last_normal_view < old.last_normal_view {
            return Err(Error::Regression("the last normal view"));
        }
        // Incarnations too: a new epoch's crash vectors start at 0
        // (vr-core resets them with the epoch's replica indexes).
        if same_epoch && state.incarnation < old.incarnation {
            return Err(Error::Regression("the incarnation"));
        }
        self.superblock = Superblock {
            sequence: self.superblock.sequence + 1,
            state: *state,
            ..self.superblock
        };
        Ok(superblock_steps(
            SUPERBLOCK_FILE,
            self.config.identity,
            &self.superblock,
        ))
    }

    /// Plans writing the checkpoint at `op` with its `pages` and the
    /// caller's `root`: the file (pages in 1 MiB sector-aligned writes,
    /// then the manifest sector), synced with the directory; the superblock
    /// naming it; then removing the previous checkpoint and every log
    /// segment wholly at or before `op`, and a directory sync. The plan
    /// holds the encoded checkpoint (about the pages' size).
    pub fn write_checkpoint<I>(
        &mut self,
        op: u64,
        root: [u8; 32],
        pages: I,
    ) -> Result<Vec<Step>, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let current = self.superblock.checkpoint;
        if op < current.op || (op == current.op && op == 0) {
            return Err(Error::CheckpointNotNewer);
        }
        let repair = op == current.op;
        if repair && root != current.root {
            return Err(Error::CheckpointMismatch);
        }
        let file = checkpoint_file_name(op);
        // A new checkpoint starts from an empty file (a leftover of an
        // interrupted attempt goes); a repair rewrites the current file in
        // place with the same bytes.
        let mut steps = if repair {
            Vec::new()
        } else {
            vec![Step::Remove { file: file.clone() }]
        };
        let mut writer = CheckpointWriter::new(self.config.identity, op);
        let mut chunk = Vec::with_capacity(CHECKPOINT_CHUNK_BYTES + SECTOR_SIZE);
        let mut flushed = SECTOR_SIZE as u64;
        for page in pages {
            let page = page.as_ref();
            if page.len() > self.config.page_bytes_max as usize {
                return Err(Error::PageTooLarge);
            }
            writer.push_page(page, &mut chunk);
            if chunk.len() >= CHECKPOINT_CHUNK_BYTES {
                // Whole sectors only; the rest waits for the next write.
                let whole = chunk.len() / SECTOR_SIZE * SECTOR_SIZE;
                let rest = chunk.split_off(whole);
                steps.push(Step::Write {
                    file: file.clone(),
                    offset: flushed,
                    bytes: std::mem::replace(&mut chunk, rest),
                });
                flushed += whole as u64;
            }
        }
        chunk.resize(chunk.len() + writer.padding(), 0);
        if !chunk.is_empty() {
            steps.push(Step::Write {
                file: file.clone(),
                offset: flushed,
                bytes: chunk,
            });
        }
        let (sector, manifest_id, manifest) = writer.finish(root);
        if repair {
            if manifest_id != current.manifest {
                return Err(Error::CheckpointMismatch);
            }
            steps.push(Step::Write {
                file: file.clone(),
                offset: 0,
                bytes: sector.to_vec(),
            });
            steps.push(Step::Sync { file });
            steps.push(Step::SyncDir);
            return Ok(steps);
        }
        steps.push(Step::Write {
            file: file.clone(),
            offset: 0,
            bytes: sector.to_vec(),
        });
        steps.push(Step::Sync { file });
        steps.push(Step::SyncDir);

        let previous = self.superblock.checkpoint.op;
        self.superblock = Superblock {
            sequence: self.superblock.sequence + 1,
            checkpoint: CheckpointRef {
                op,
                page_count: manifest.page_count,
                root,
                manifest: manifest_id,
            },
            log_first_op: if op > self.index.head_op {
                op + 1
            } else {
                op.saturating_sub(self.config.log_retain_ops) + 1
            },
            ..self.superblock
        };
        steps.extend(superblock_steps(
            SUPERBLOCK_FILE,
            self.config.identity,
            &self.superblock,
        ));
        if previous != 0 {
            steps.push(Step::Remove {
                file: checkpoint_file_name(previous),
            });
        }
        for name in self.index.release(op, self.config.log_retain_ops) {
            steps.push(Step::Remove {
                file: segment_file_name(name),
            });
            self.unsynced.remove(&name);
        }
        steps.push(Step::SyncDir);
        Ok(steps)
    }

    /// The highest op in the log (appended, synced or not), or the
    /// checkpoint's op if the log is empty after it.
    pub fn head_op(&self) -> u64 {
        self.index.head_op
    }

    /// The promises as last planned.
    pub fn state(&self) -> ReplicaState {
        self.superblock.state
    }

    /// The current checkpoint.
    pub fn checkpoint(&self) -> CheckpointRef {
        self.superblock.checkpoint
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The log segments (names).
    pub fn segments(&self) -> Vec<u64> {
        self.index.segments.iter().map(|s| s.name).collect()
    }

    /// Log entries appended so far (since open).
    pub fn entries_appended(&self) -> u64 {
        self.entries_appended
    }
}
