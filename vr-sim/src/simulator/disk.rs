//! Durable replicas (issue 18): each replica's disk is a
//! `vr_storage::MemDisk` under a `vr_storage::Storage`, driven through the
//! glue every embedding uses (`vr_storage::replica`).
//!
//! - A [`Persist`] is written when the replica's outputs are drained
//!   (`write_persist`: truncation and checkpoint durable at once, entries
//!   appended unsynced), then synced and answered (`complete_persist`, then
//!   `Replica::handle_persisted`) after a seeded disk latency. A paused
//!   replica answers nothing until it resumes.
//! - A crash loses what was not synced as a `CrashMode` drawn per crash
//!   says (all, nothing, random sectors, the last write torn).
//! - A restart opens the disk (`open_replica`): `Replica::restart` from an
//!   intact disk, or `Replica::recover` from peers when the scan found
//!   damage (the directory is reset and marked); the marker is removed
//!   (`finish_recovery`) once a persist drained after the replica left
//!   `Status::Recovering` is durable, before that persist is answered.
//! - Disk faults (corrupt sectors, bit rot, misdirected writes, read
//!   failures) strike only the disks of `DiskPlan::fault_replicas`, at
//!   most f replicas: every op keeps an intact copy on a quorum of disks.
//! - Whole-cluster crashes: every replica at the same instant, each
//!   losing its unsynced writes, then all restart from disk after a pause.

use std::sync::Arc;

use vr_core::Persist;
use vr_storage::replica::{self as glue, RecoverFromPeers, Start};
use vr_storage::{CrashMode, Identity, MemDisk, Storage};

use super::*;
use crate::plan::DiskFault;

/// Log segments of 256 KiB: small, so that checkpoints release them,
/// restarts read several, and misdirected writes have segments to hit.
const SEGMENT_BYTES: u64 = 256 << 10;

/// One replica's disk.
pub(super) struct DiskNode {
    /// The disk itself: it survives crashes.
    mem: MemDisk,
    /// Open while the replica runs (`None` while crashed).
    storage: Option<Storage<MemDisk>>,
    /// The persist written and not yet synced and answered (vr-core has
    /// one in flight at a time).
    pending: Option<PendingPersist>,
    /// The directory carries the recovery marker (`open_replica` reset
    /// it; `finish_recovery` not called yet).
    marked: bool,
    /// A misdirected write armed (`DiskFault::MisdirectedWrite`): its
    /// target segment, and the disk's write count when it was armed. Once
    /// a write consumed it, the target is synced with the writer's next
    /// sync: the device wrote the data to the wrong place, and the flush
    /// that made the writer's data durable made it durable there.
    misdirect: Option<(String, u64)>,
}

/// A persist written and waiting for its sync.
struct PendingPersist {
    persist: Persist,
    /// Global time at which the disk completes it.
    due: u64,
    /// Drained after the replica left `Status::Recovering`: once durable,
    /// the disk holds what its recovery installed.
    clears_marker: bool,
}

/// The storage configuration of member `member` of cluster `cluster`:
/// small segments (so that checkpoints release them and restarts read
/// several), room for any entry and page of the simulator's service.
pub(super) fn storage_config(
    cluster: u64,
    member: u8,
    log_tail_ops: u64,
    bug: Option<vr_storage::InjectedBug>,
) -> vr_storage::Config {
    vr_storage::Config {
        segment_bytes: SEGMENT_BYTES,
        batch_bytes_max: 64 << 10,
        entry_bytes_max: 8 << 10,
        page_bytes_max: 512 << 10,
        log_retain_ops: log_tail_ops,
        injected_bug: bug,
        ..vr_storage::Config::new(Identity {
            cluster_id: u128::from(cluster),
            member_id: member,
        })
    }
}

impl DiskNode {
    /// A replica's disk at cluster birth: formatted, opened.
    pub(super) fn format(config: vr_storage::Config) -> DiskNode {
        let mut mem = MemDisk::new();
        // A fresh MemDisk and a valid configuration: neither can fail.
        Storage::format(&mut mem, &config).expect("formatting a fresh in-memory disk");
        let (storage, _) =
            Storage::open(mem.clone(), config).expect("opening a freshly formatted disk");
        DiskNode {
            mem,
            storage: Some(storage),
            pending: None,
            marked: false,
            misdirect: None,
        }
    }
}

/// The short name of why a disk was not restarted from.
fn why_name(why: &RecoverFromPeers) -> &'static str {
    match why {
        RecoverFromPeers::FaultyOps { .. } => "faulty-ops",
        RecoverFromPeers::FaultyPages(_) => "faulty-pages",
        RecoverFromPeers::CheckpointLost { .. } => "checkpoint-lost",
        RecoverFromPeers::CheckpointMismatch { .. } => "checkpoint-mismatch",
        RecoverFromPeers::MalformedEntry { .. } => "malformed-entry",
        RecoverFromPeers::SuperblockLost => "superblock-lost",
        RecoverFromPeers::RecoveryUnfinished => "recovery-unfinished",
        RecoverFromPeers::FirstStartUnfinished => "first-start-unfinished",
    }
}

impl Simulator {
    /// Whether the replicas keep their promises on disk.
    pub(super) fn durable(&self) -> bool {
        self.plan.disk.durable
    }

    fn storage_config(&self, i: u8) -> vr_storage::Config {
        storage_config(
            self.config.cluster,
            i,
            self.config.log_tail_ops,
            self.options.storage_bug,
        )
    }

    /// Replica `i` emitted `persist` (its checkpoint's pages `pages`, read
    /// when it was drained): write it now, sync and answer it later.
    pub(super) fn disk_write(
        &mut self,
        i: u8,
        persist: Persist,
        pages: Vec<Arc<[u8]>>,
        clears_marker: bool,
    ) {
        let now = self.now;
        let latency = between(
            &mut self.disk_prng,
            self.plan.disk.latency_min_ns,
            self.plan.disk.latency_max_ns,
        );
        let backup = self.config.replica_count == 1
            || self.replicas[usize::from(i)]
                .replica()
                .is_some_and(|r| !r.is_primary());
        let Some(disk) = self.replicas[usize::from(i)].disk.as_mut() else {
            // The simulated replicas keep their state in memory
            // (`Durability::Memory`): none may ask for a disk.
            let detail = format!("r{i} asked to persist in a memory-only cluster");
            self.violation(ViolationKind::Service, detail);
            return;
        };
        if disk.pending.is_some() {
            let detail = format!(
                "r{i} emitted persist {} while one was in flight",
                persist.sequence
            );
            self.violation(ViolationKind::Storage, detail);
            return;
        }
        let Some(storage) = disk.storage.as_mut() else {
            let detail = format!("r{i} persisted with its disk closed");
            self.violation(ViolationKind::Storage, detail);
            return;
        };
        if let Err(e) = glue::write_persist(storage, &persist, &pages) {
            self.storage_failed(i, format!("writing persist {}", persist.sequence), e);
            return;
        }
        let (sequence, entries) = (persist.sequence, persist.entries.len() as u64);
        if entries > 0 && backup && std::mem::take(&mut self.cluster_crash_armed) {
            // An aimed whole-cluster crash strikes while this backup's
            // entries are in flight (not synced yet), and its primary may
            // have heard its acknowledgement: at once when the primary
            // commits one of them (`observe_replica`), so that an op
            // executed on an acknowledgement not yet durable is lost with
            // it, or at the last instant before the sync; or at random.
            self.cluster_crash_aimed = true;
            if self.plan.disk.cluster_crash_at_commit {
                let first = persist.entries[0].op_number;
                self.cluster_crash_watch = Some((i, first));
                self.cluster_crash_next_at = Some(now + latency.max(1) - 1);
            } else {
                self.cluster_crash_next_at = Some(now + self.disk_prng.below(latency));
            }
        }
        disk.pending = Some(PendingPersist {
            persist,
            due: now + latency,
            clears_marker,
        });
        self.stats.disk.persists_written += 1;
        self.trace.record(
            now,
            TraceKind::Disk,
            &[u64::from(i), sequence, entries],
            || format!("r{i} writes persist {sequence} ({entries} entries)"),
        );
    }

    /// When replica `i`'s disk completes its pending persist (global
    /// time), unless it is crashed or paused.
    pub(super) fn disk_due(&self, i: usize) -> Option<u64> {
        let node = &self.replicas[i];
        if node.paused_until.is_some() || node.node.is_none() {
            return None;
        }
        let due = node.disk.as_ref()?.pending.as_ref()?.due;
        Some(due.max(self.now))
    }

    /// Replica `i`'s disk completed its persist: sync, superblock, the
    /// marker removed if the recovery it marked is now on disk, answer.
    pub(super) fn disk_complete(&mut self, i: u8) {
        let now = self.now;
        let Some(disk) = self.replicas[usize::from(i)].disk.as_mut() else {
            return;
        };
        let Some(pending) = disk.pending.take() else {
            return;
        };
        let Some(storage) = disk.storage.as_mut() else {
            return;
        };
        if let Err(e) = glue::complete_persist(storage, &pending.persist) {
            let what = format!("completing persist {}", pending.persist.sequence);
            self.storage_failed(i, what, e);
            return;
        }
        // The glue writes the superblock, and with it the commit-number,
        // only when a promise changes. After a restart the replica knows
        // only the disk's commit-number, and its DoViewChange carries the
        // whole log after it: with a commit-number that lags without
        // bound, no frame holds it, and a cluster that lost power forms no
        // view again (docs/testing.md, "Durable replicas"). As the
        // embedding, the simulator refreshes it once it lags a window.
        let stored = storage.state();
        let commit = pending.persist.state.commit_number.min(storage.head_op());
        if self.options.disk_commit_refresh
            && commit >= stored.commit_number + u64::from(self.config.prepare_window_max)
        {
            let refreshed = vr_storage::ReplicaState {
                commit_number: commit,
                ..stored
            };
            if let Err(e) = storage.write_superblock(&refreshed) {
                self.storage_failed(i, "refreshing the commit-number".into(), e);
                return;
            }
            self.stats.disk.commit_refreshes += 1;
        }
        // The flush that made this persist durable made a misdirected
        // write issued since (the device wrote it elsewhere) durable too.
        if let Some((target, armed_at)) = disk.misdirect.take() {
            if disk.mem.stats().writes > armed_at {
                let _ = vr_storage::Backend::sync(&mut disk.mem, &target);
            } else {
                disk.misdirect = Some((target, armed_at));
            }
        }
        let mut finished = false;
        if pending.clears_marker && disk.marked {
            if let Err(e) = glue::finish_recovery(storage) {
                self.storage_failed(i, "removing the recovery marker".into(), e);
                return;
            }
            disk.marked = false;
            finished = true;
        }
        let sequence = pending.persist.sequence;
        self.trace
            .record(now, TraceKind::Disk, &[u64::from(i), sequence], || {
                let marker = if finished {
                    "; recovery marker removed"
                } else {
                    ""
                };
                format!("r{i} persist {sequence} durable{marker}")
            });
        if finished {
            self.stats.disk.recoveries_finished += 1;
        }
        self.replica_step(i, |node, local| node.handle_persisted(local, sequence));
    }

    /// The storage refused or failed: an IO error poisons it (the replica
    /// must stop: it crashes and restarts from its disk); anything else is
    /// a bug of the glue or the core, reported, and the replica stops too.
    fn storage_failed(&mut self, i: u8, what: String, error: vr_storage::Error) {
        let io = matches!(error, vr_storage::Error::Io(_));
        if io {
            self.stats.disk.storage_errors += 1;
        } else {
            let detail = format!("r{i}: {what}: {error}");
            self.violation(ViolationKind::Storage, detail);
        }
        self.trace
            .record(self.now, TraceKind::Disk, &[u64::from(i), 1], || {
                format!("r{i}: {what} failed ({error}): the replica stops")
            });
        let restart_at = self.now + MS;
        self.crash(i, Some(restart_at));
    }

    /// At a crash of replica `i`: its storage closes, the persist in flight
    /// is never answered, and the disk loses unsynced writes as a crash
    /// mode drawn now says. `reorder`: whether `CrashMode::RandomSectors`
    /// may be drawn (see [`Options::reordered_power_loss`]); in its place
    /// `LoseAll`.
    pub(super) fn disk_crash(&mut self, i: u8, reorder: bool) {
        let now = self.now;
        let random_sectors = CrashMode::RandomSectors {
            seed: self.disk_prng.next_u64(),
        };
        let modes = [
            CrashMode::KeepAll,
            CrashMode::LoseAll,
            if reorder {
                random_sectors
            } else {
                CrashMode::LoseAll
            },
            CrashMode::TornLast {
                seed: self.disk_prng.next_u64(),
            },
        ];
        let mode = pick(&mut self.disk_prng, &modes);
        let Some(disk) = self.replicas[usize::from(i)].disk.as_mut() else {
            return;
        };
        disk.storage = None;
        disk.pending = None;
        disk.misdirect = None;
        let unsynced = disk.mem.has_unsynced();
        disk.mem.crash(mode);
        let d = &mut self.stats.disk;
        match mode {
            CrashMode::KeepAll => d.crashes_keep_all += 1,
            CrashMode::LoseAll => d.crashes_lose_all += 1,
            CrashMode::RandomSectors { .. } => d.crashes_random_sectors += 1,
            CrashMode::TornLast { .. } => d.crashes_torn_last += 1,
        }
        if unsynced && mode != CrashMode::KeepAll {
            d.crashes_losing_writes += 1;
        }
        self.trace.record(
            now,
            TraceKind::Disk,
            &[u64::from(i), 2, u64::from(unsynced)],
            || format!("r{i}'s disk crashes: {mode:?} (unsynced writes: {unsynced})"),
        );
    }

    /// Restarts replica `i` from its disk: `Replica::restart` if the disk
    /// is intact, else (damage, or an unfinished recovery) the directory
    /// is reset and marked and the replica recovers from its peers.
    /// Returns the replica and whether it is recovering.
    pub(super) fn restart_from_disk(
        &mut self,
        i: u8,
        local: Instant,
        nonce: u64,
    ) -> (Replica<Kv>, bool) {
        let now = self.now;
        let config = self.storage_config(i);
        let recovery = &self.plan.recovery;
        let kv = Kv::with_ballast(recovery.ballast_pages, recovery.ballast_page_size);
        let kv_again = Kv::with_ballast(recovery.ballast_pages, recovery.ballast_page_size);
        let Some(mem) = self.replicas[usize::from(i)]
            .disk
            .as_ref()
            .map(|d| d.mem.clone())
        else {
            panic!("r{i}: a durable replica without a disk");
        };
        let reopen = mem.clone();
        let start = glue::open_replica(mem.clone(), || Ok(reopen.clone()), config);
        let (storage, why) = match start {
            Ok(Start::Restart { storage, disk }) => {
                // The log may hold entries retained behind the checkpoint.
                let base = disk.state.log_base;
                let log_end = disk.log.last().map_or(base, |e| e.op_number.max(base));
                let (view, lnv) = (disk.state.view, disk.state.last_normal_view);
                match Replica::restart(
                    self.config.clone(),
                    vr_core::ReplicaIndex(i),
                    kv,
                    local,
                    nonce,
                    disk,
                ) {
                    Ok(replica) => {
                        self.stats.disk.restarts_from_disk += 1;
                        self.trace.record(
                            now,
                            TraceKind::Disk,
                            &[u64::from(i), 3, view, log_end],
                            || {
                                format!(
                                    "restart r{i} from disk: view {view}, last normal view {lnv}, \
                                     log to op {log_end} (nonce {nonce:x})"
                                )
                            },
                        );
                        let disk = self.replicas[usize::from(i)]
                            .disk
                            .as_mut()
                            .expect("checked above");
                        disk.storage = Some(storage);
                        disk.marked = false;
                        return (replica, false);
                    }
                    Err(e) => {
                        let detail = format!("r{i}: Replica::restart refused its intact disk: {e}");
                        self.violation(ViolationKind::Storage, detail);
                        drop(storage);
                        (self.reset_disk(i, &mem), "restart-refused")
                    }
                }
            }
            Ok(Start::Recover { storage, why }) => {
                let name = why_name(&why);
                self.trace
                    .record(now, TraceKind::Disk, &[u64::from(i), 4], || {
                        format!("r{i}'s disk is not intact ({why:?}): reset, recovering from peers")
                    });
                (Some(storage), name)
            }
            // A misdirected write that grew a segment past its size: an
            // operator would wipe the directory and let it recover.
            Err(vr_storage::Error::SegmentTooLarge { file, len }) => {
                self.trace
                    .record(now, TraceKind::Disk, &[u64::from(i), 5], || {
                        format!("r{i}'s disk does not open ({file} is {len} bytes): reset")
                    });
                (self.reset_disk(i, &mem), "segment-too-large")
            }
            Err(e) => {
                let detail = format!("r{i}: its disk does not open: {e}");
                self.violation(ViolationKind::Storage, detail);
                (self.reset_disk(i, &mem), "open-failed")
            }
        };
        *self.stats.disk.repairs.entry(why.to_string()).or_default() += 1;
        let disk = self.replicas[usize::from(i)]
            .disk
            .as_mut()
            .expect("checked above");
        disk.storage = storage;
        disk.marked = true;
        // Every simulated disk held data (formatted at the cluster's
        // birth): a replica that cannot trust it never forms a new cluster
        // (safe formation, `docs/protocol.md`).
        let replica = Replica::recover_lost_disk(
            self.config.clone(),
            vr_core::ReplicaIndex(i),
            kv_again,
            local,
            nonce,
        )
        .unwrap_or_else(|e| panic!("invalid replica configuration: {e}"));
        (replica, true)
    }

    /// Resets `mem` for a recovery from peers, as `open_replica` does for
    /// a damaged disk; `None` (reported) if even that fails.
    fn reset_disk(&mut self, i: u8, mem: &MemDisk) -> Option<Storage<MemDisk>> {
        match glue::reset_for_recovery(mem.clone(), self.storage_config(i)) {
            Ok(storage) => Some(storage),
            Err(e) => {
                let detail = format!("r{i}: its disk cannot be reset: {e}");
                self.violation(ViolationKind::Storage, detail);
                None
            }
        }
    }

    /// A disk fault strikes one of the plan's fault-prone replicas.
    pub(super) fn disk_fault_act(&mut self) {
        let now = self.now;
        let mean = self.plan.disk.fault_interval_mean_ns;
        self.disk_fault_next_at = Some(now + between(&mut self.disk_prng, 1, 2 * mean));
        let kind = pick(&mut self.disk_prng, &self.plan.disk.fault_kinds.clone());
        // A misdirected write strikes a running replica's next write: one
        // armed while it is down would hit the recovery marker of its
        // restart, a file the glue only checks exists, which MemDisk's
        // model (the write renamed) removes but a real misdirected block
        // write would not.
        let victims: Vec<u8> = self
            .plan
            .disk
            .fault_replicas
            .iter()
            .copied()
            .filter(|&r| {
                let node = &self.replicas[usize::from(r)];
                node.disk.is_some()
                    && (kind != DiskFault::MisdirectedWrite
                        || node
                            .disk
                            .as_ref()
                            .is_some_and(|d| d.storage.is_some() && d.misdirect.is_none()))
            })
            .collect();
        if victims.is_empty() {
            return;
        }
        let i = pick(&mut self.disk_prng, &victims);
        let seed = self.disk_prng.next_u64();
        let mem = self.replicas[usize::from(i)]
            .disk
            .as_ref()
            .expect("a victim has a disk")
            .mem
            .clone();
        let ours = |name: &str| {
            name == vr_storage::SUPERBLOCK_FILE
                || vr_storage::log::parse_segment_file_name(name).is_some()
                || vr_storage::checkpoint::parse_checkpoint_file_name(name).is_some()
        };
        let mut files: Vec<String> = mem.file_names().into_iter().filter(|n| ours(n)).collect();
        if kind == DiskFault::MisdirectedWrite {
            // Into a segment that is not the last: whatever it overwrites
            // is followed by later records (the gap is named), and the
            // misplaced copy is found by the scan.
            files.retain(|n| vr_storage::log::parse_segment_file_name(n).is_some());
            files.pop();
        }
        if files.is_empty() {
            return;
        }
        // Half of the time the newest segment (the log a restart replays),
        // else any file of ours.
        let newest = files
            .iter()
            .rfind(|n| vr_storage::log::parse_segment_file_name(n).is_some())
            .cloned();
        let file = match newest {
            Some(newest) if self.disk_prng.below(2) == 0 => newest,
            _ => pick(&mut self.disk_prng, &files.iter().collect::<Vec<_>>()).clone(),
        };
        let bytes = mem.file(&file).unwrap_or_default();
        let len = bytes.len() as u64;
        if len == 0 {
            return;
        }
        let sector_size = vr_storage::SECTOR_SIZE as u64;
        let sectors = len.div_ceil(sector_size);
        // Damage lands on written bytes (records), not on the zeros that
        // pad batches to their sectors, where it would change nothing: a
        // few random offsets are tried for a nonzero byte.
        let somewhere = |prng: &mut Prng| {
            let mut at = prng.below(len);
            for _ in 0..64 {
                if bytes[at as usize] != 0 {
                    break;
                }
                at = prng.below(len);
            }
            at
        };
        let description = match kind {
            DiskFault::CorruptSector => {
                let sector = somewhere(&mut self.disk_prng) / sector_size;
                mem.corrupt_sector(&file, sector, seed);
                self.stats.disk.corrupt_sectors += 1;
                format!("sector {sector} of {file} corrupted")
            }
            DiskFault::BitRot => {
                let offset = somewhere(&mut self.disk_prng);
                let count = between(&mut self.disk_prng, 1, 16).min(len - offset);
                mem.corrupt(&file, offset, count, seed);
                self.stats.disk.bit_rot += 1;
                format!("{count} bytes of {file} at {offset} rotted")
            }
            DiskFault::MisdirectedWrite => {
                let offset = self.disk_prng.below(sectors) * sector_size;
                mem.misdirect_next_write(&file, offset);
                let writes = mem.stats().writes;
                if let Some(disk) = self.replicas[usize::from(i)].disk.as_mut() {
                    disk.misdirect = Some((file.clone(), writes));
                }
                self.stats.disk.misdirected_writes += 1;
                format!("the next write goes to {file} at {offset}")
            }
            DiskFault::ReadFailure => {
                let sector = somewhere(&mut self.disk_prng) / sector_size;
                mem.fail_reads(&file, sector);
                self.stats.disk.read_failures += 1;
                format!("reads of sector {sector} of {file} fail")
            }
        };
        self.trace.record(
            now,
            TraceKind::Disk,
            &[u64::from(i), 6, kind as u64, seed],
            || format!("r{i}'s disk: {description}"),
        );
    }

    /// Every replica loses power at the same instant (each disk losing its
    /// unsynced writes as its own crash mode says); all restart from their
    /// disks after a pause. Replicas crashed for good stay down; one
    /// already down with a restart pending restarts at its own time.
    pub(super) fn cluster_crash_act(&mut self) {
        let now = self.now;
        self.cluster_crash_watch = None;
        let d = &self.plan.disk;
        let (mean, pause_max) = (
            d.cluster_crash_interval_mean_ns,
            d.cluster_crash_pause_max_ns,
        );
        // While a replica outside the fault-prone ones recovers from its
        // peers (its disk is reset), a power loss would leave more than
        // f replicas recovering: the crash waits.
        let repairing = (0..self.replicas.len()).any(|i| {
            !d.fault_replicas.contains(&(i as u8))
                && (self.recovering(i)
                    || self.replicas[i]
                        .disk
                        .as_ref()
                        .is_some_and(|disk| disk.marked))
        });
        if repairing {
            self.cluster_crash_aimed = false;
            self.cluster_crash_next_at = Some(now + between(&mut self.disk_prng, 1, 2 * mean));
            return;
        }
        if !std::mem::take(&mut self.cluster_crash_aimed) && self.disk_prng.below(2) == 0 {
            // Half of the crashes are aimed: they wait for the next
            // persist of entries a backup writes and strike while it is
            // in flight, so that some disk has unsynced entries to lose
            // (`disk_write`).
            self.cluster_crash_next_at = None;
            self.cluster_crash_armed = true;
            return;
        }
        self.cluster_crashes_left = self.cluster_crashes_left.saturating_sub(1);
        self.cluster_crash_next_at = (self.cluster_crashes_left > 0)
            .then(|| now + between(&mut self.disk_prng, 1, 2 * mean));
        let restart_at = now + between(&mut self.disk_prng, MS, pause_max.max(MS));
        self.stats.disk.cluster_crashes += 1;
        let seconds = crate::trace::Seconds(restart_at);
        self.trace
            .record(now, TraceKind::Nemesis, &[20, restart_at], || {
                format!("the whole cluster loses power (restart at {seconds})")
            });
        self.cluster_crashing = true;
        for i in 0..self.replicas.len() as u8 {
            if self.replicas[usize::from(i)].node.is_some() {
                self.crash(i, Some(restart_at));
            }
        }
        self.cluster_crashing = false;
    }
}
