//! A durable replica's data directory on a file system: what the three
//! runtime adapters (`vr-tokio`, `vr-mio`, `vr-glommio`) share, so that
//! each does only the IO its runtime's way (feature `vr-core`).
//!
//! 1. At startup, [`DataDir::open`] opens (or, for a replica's first
//!    start, prepares) the directory and says how the replica starts: a
//!    [`Boot`], whose [`Boot::build_replica`] calls `Replica::restart`,
//!    `Replica::recover` or `Replica::recover_lost_disk`.
//! 2. For every `NodeEvent::Persist` the replica emits, the adapter builds a
//!    [`PersistJob`] (at once: it reads the replica's checkpoint pages and
//!    status), runs [`DataDir::persist`] off its event loop (a blocking
//!    thread), and answers `handle_persisted` when it returned `Ok`. An
//!    `Err` leaves the disk in an unknown state: the adapter stops the
//!    replica, and the operator restarts it (it then restarts from what
//!    the disk holds, or recovers from its peers if that is damaged).
//!
//! # Safe formation
//!
//! A directory that was never formatted is a replica's *first start*: it
//! is formatted with a first-start marker and the replica recovers with
//! `Replica::recover`. When every replica of a cluster starts that way,
//! they find each other recovering and form view 0, empty (§4.3's
//! whole-cluster restart): that is how a new cluster forms. A replica
//! whose directory held data restarts from it, and one whose data is
//! damaged or lost recovers with `Replica::recover_lost_disk`: neither ever
//! forms a new cluster, and while either answers, no replica does. So a
//! cluster forms afresh only when every member starts with no data; a
//! member whose directory was deleted recovers from the others like a
//! replaced machine.
//!
//! The first-start marker stays until the replica's first persist after
//! its recovery is durable (the same rule as for a damaged disk), before
//! which it acknowledged nothing: a crash in between is still a first
//! start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vr_core::{Config as CoreConfig, ConfigError, Instant, Persist, Replica, Service, Status};

use crate::backend::FsBackend;
use crate::format::{record_size, Identity, HEADER_SIZE, RECORD_ALIGN};
use crate::replica::{
    apply_persist, finish_recovery, open_replica, reset_for_recovery_marked, Marker,
    RecoverFromPeers, Start, ENTRY_FIXED_BYTES,
};
use crate::storage::{Config, Error, Storage, StorageStats, CHECKPOINT_CHUNK_BYTES};

/// How a durable replica starts, decided by [`DataDir::open`].
#[derive(Debug)]
pub enum Boot {
    /// The directory holds an intact image: `Replica::restart` from it.
    /// Its epoch may be a later one than the configuration's (the cluster
    /// was reconfigured): then `epoch` is that epoch's membership, stored
    /// with it, which [`build_node_replica`] applies.
    Restart(vr_core::OnDisk),
    /// Like `Restart`, in an epoch other than the configuration's: the
    /// membership stored for the disk's epoch.
    RestartInEpoch(vr_core::OnDisk, EpochMembership),
    /// The directory never held data: `Replica::recover` (a new cluster
    /// forms when every replica starts so).
    FirstStart,
    /// The directory held data that is lost or damaged (and was reset):
    /// `Replica::recover_lost_disk`.
    LostDisk(RecoverFromPeers),
}

impl Boot {
    /// The replica this boot starts: member `member` of `config` (its
    /// index there, or in the epoch the disk holds, is looked up), with the
    /// options of a `vr-core` [`Replica`] constructor. `config.durability`
    /// must be `Disk`.
    pub fn build_replica<S: Service>(
        self,
        config: CoreConfig,
        member: vr_core::MemberId,
        service: S,
        now: Instant,
        nonce: u64,
    ) -> Result<Replica<S>, ConfigError> {
        let index_in = |config: &CoreConfig| {
            config
                .index_of_member(member)
                .ok_or(ConfigError::ReplicaIndexOutOfRange)
        };
        match self {
            Boot::Restart(disk) => {
                let replica = index_in(&config)?;
                Replica::restart(config, replica, service, now, nonce, disk)
            }
            Boot::RestartInEpoch(disk, epoch) => {
                let config = epoch.apply(&config);
                let index = epoch
                    .index_of(member)
                    .ok_or(ConfigError::ReplicaIndexOutOfRange)?;
                let mut replica = Replica::restart(config, index, service, now, nonce, disk)?;
                // Its StartEpoch notices carry them again: a client of an
                // older epoch learns where the members it never knew are.
                replica.restore_epoch_addresses(epoch.addresses);
                Ok(replica)
            }
            Boot::FirstStart => {
                let replica = index_in(&config)?;
                Replica::recover(config, replica, service, now, nonce)
            }
            Boot::LostDisk(_) => {
                let replica = index_in(&config)?;
                Replica::recover_lost_disk(config, replica, service, now, nonce)
            }
        }
    }

    /// A short description for the startup log line.
    pub fn describe(&self) -> String {
        match self {
            Boot::Restart(disk) | Boot::RestartInEpoch(disk, _) => format!(
                "restarting from disk: view {}, epoch {}, log up to op {}, committed up to op {}",
                disk.state.view,
                disk.state.epoch,
                disk.state.log_base + disk.log.len() as u64,
                disk.state.commit_number
            ),
            Boot::FirstStart => "first start (empty data directory): recovering from the peers, \
                 or forming a new cluster if every replica is new"
                .to_owned(),
            Boot::LostDisk(why) => format!(
                "the data directory cannot be trusted ({why}): reset, recovering from the peers"
            ),
        }
    }
}

/// The storage configuration for a replica of a cluster configured with
/// `core`: entries up to the largest op, checkpoint pages up to what one
/// checkpoint chunk holds, the log kept `log_tail_ops` behind its
/// checkpoint (as vr-core keeps it in memory).
pub fn storage_config(core: &CoreConfig, member: vr_core::MemberId, cluster_id: u128) -> Config {
    let entry_bytes_max = core.op_size_max.saturating_add(ENTRY_FIXED_BYTES as u32);
    let one_batch = record_size(entry_bytes_max as usize) + RECORD_ALIGN;
    let batch_bytes_max = one_batch.next_multiple_of(crate::SECTOR_SIZE).max(1 << 20);
    Config {
        segment_bytes: (64u64 << 20).max(batch_bytes_max as u64),
        batch_bytes_max,
        entry_bytes_max,
        page_bytes_max: (CHECKPOINT_CHUNK_BYTES - HEADER_SIZE - RECORD_ALIGN) as u32,
        log_retain_ops: core.log_tail_ops,
        commit_refresh_ops: u64::from(core.prepare_window_max),
        ..Config::new(Identity {
            cluster_id,
            member_id: member.0,
        })
    }
}

/// One replica's data directory, open.
pub struct DataDir {
    storage: Storage<FsBackend>,
    path: PathBuf,
    /// The recovery marker is on disk (first start or lost data) until the
    /// first persist drained after the replica recovered is durable.
    marked: bool,
    /// The latest epoch whose membership is on disk (or that of the
    /// configuration the directory was opened with).
    stored_epoch: u32,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("path", &self.path)
            .field("marked", &self.marked)
            .finish_non_exhaustive()
    }
}

impl DataDir {
    /// Opens replica `member`'s directory `path` (created if missing) for a
    /// cluster configured with `core` and identified by `cluster_id`, and
    /// says how the replica starts. An image of an epoch other than
    /// `core.epoch` (the cluster was reconfigured since the configuration
    /// the replica is started with) cannot be restarted from: the directory
    /// is reset and the replica recovers from its peers, as after a lost
    /// disk.
    pub fn open(
        path: &Path,
        core: &CoreConfig,
        member: vr_core::MemberId,
        cluster_id: u128,
    ) -> Result<(DataDir, Boot), Error> {
        let config = storage_config(core, member, cluster_id);
        config.validate()?;
        let reopen = || FsBackend::new(path);
        let (mut storage, boot) = match open_replica(reopen()?, reopen, config) {
            Ok(Start::Restart { storage, disk }) if disk.state.epoch == core.epoch => {
                (storage, Boot::Restart(disk))
            }
            Ok(Start::Restart { mut storage, disk }) => {
                // Reconfigured since the configuration given: restart in
                // the disk's epoch, with its stored membership. Without one
                // (a directory written before memberships were stored),
                // refuse: the image is intact, and wiping it to recover
                // from the peers would lose it if they are down too.
                let epoch = disk.state.epoch;
                match read_epoch(storage.backend_mut(), epoch)? {
                    Some(membership) => (storage, Boot::RestartInEpoch(disk, membership)),
                    None => return Err(Error::EpochUnknown { epoch }),
                }
            }
            Ok(Start::Recover { storage, why }) if why.held_data() => {
                (storage, Boot::LostDisk(why))
            }
            Ok(Start::Recover { storage, .. }) => (storage, Boot::FirstStart),
            Err(Error::Unformatted) => {
                let storage = reset_for_recovery_marked(reopen()?, config, Marker::FirstStart)?;
                (storage, Boot::FirstStart)
            }
            Err(e) => return Err(e),
        };
        let marked = !matches!(boot, Boot::Restart(_) | Boot::RestartInEpoch(..));
        let stored_epoch = match &boot {
            Boot::Restart(disk) | Boot::RestartInEpoch(disk, _) => disk.state.epoch,
            _ => core.epoch,
        };
        remove_other_epochs(storage.backend_mut(), stored_epoch)?;
        Ok((
            DataDir {
                storage,
                path: path.to_path_buf(),
                marked,
                stored_epoch,
            },
            boot,
        ))
    }

    /// Carries out `job` durably (see [`apply_persist`]); blocking. When it
    /// returns `Ok`, answer with `handle_persisted(now, job.sequence())`.
    pub fn persist(&mut self, job: &PersistJob) -> Result<(), Error> {
        if let Some(membership) = &job.epoch {
            if membership.epoch != self.stored_epoch {
                // Before the superblock that names the epoch: a restart
                // always finds the membership of the epoch it is in.
                write_epoch(self.storage.backend_mut(), membership)?;
                self.stored_epoch = membership.epoch;
            }
        }
        apply_persist(&mut self.storage, &job.persist, &job.pages)?;
        if self.marked && job.recovered {
            // The disk now holds what the recovery installed: an intact
            // image again. Before `handle_persisted`, so that nothing is
            // acknowledged while a crash would still lead to recovery.
            finish_recovery(&mut self.storage)?;
            self.marked = false;
        }
        Ok(())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The storage's counters (syncs, bytes written, ...).
    pub fn stats(&self) -> StorageStats {
        self.storage.stats()
    }
}

/// One persist, ready to be carried out away from the replica: the
/// `Persist` and what it needs of the replica's state at the moment it was
/// drained.
#[derive(Debug)]
pub struct PersistJob {
    /// The step.
    pub persist: Persist,
    /// The checkpoint's pages when the step names a checkpoint, else empty.
    pub pages: Vec<Arc<[u8]>>,
    /// The replica was no longer recovering when the step was drained.
    pub recovered: bool,
    /// The membership of the step's epoch, when it is the replica's
    /// current one and not the first: stored before the step, so that a
    /// restart in that epoch can rebuild its configuration.
    pub epoch: Option<EpochMembership>,
}

impl PersistJob {
    /// The job for `persist`, just drained from `replica`.
    pub fn new<S: Service>(replica: &Replica<S>, persist: Persist) -> PersistJob {
        let pages = if persist.checkpoint.is_some() {
            replica.checkpoint_pages().to_vec()
        } else {
            Vec::new()
        };
        let epoch = (persist.state.epoch != 0
            && persist.state.epoch == replica.epoch()
            && replica.status() != Status::Retired)
            .then(|| EpochMembership::of(replica));
        PersistJob {
            persist,
            pages,
            recovered: replica.status() != Status::Recovering,
            epoch,
        }
    }

    /// The number `handle_persisted` takes.
    pub fn sequence(&self) -> u64 {
        self.persist.sequence
    }
}

/// The replica an adapter runs for `options`: built by
/// [`ReplicaOptions::build_replica`](vr_core::node::ReplicaOptions::build_replica)
/// for a diskless replica (`disk` is `None`), or as `boot` says for a
/// durable one (a joining replica's first start joins). The data directory
/// is handed back for the adapter to keep. Errors say what is wrong with
/// the options.
///
/// A restart in a later epoch than `options.config`'s adds the addresses
/// stored with that epoch to `options.addresses` (by member id), so that
/// the adapter reaches members the command line did not name.
pub fn build_node_replica<S: Service>(
    options: &mut vr_core::node::ReplicaOptions,
    service: S,
    disk: Option<(DataDir, Boot)>,
) -> Result<(Replica<S>, Option<DataDir>), String> {
    if let Some((_, Boot::RestartInEpoch(_, membership))) = &disk {
        for (member, address) in membership.addresses_by_member() {
            let index = usize::from(member);
            if options.addresses.len() <= index {
                // Members between the known ones and this one get a
                // placeholder no connection reaches (port 0: refused), as
                // for a member whose address is unknown.
                let nowhere = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                options.addresses.resize(index + 1, nowhere);
            }
            options.addresses[index] = address;
        }
    }
    let durable = options.config.durability == vr_core::Durability::Disk;
    let now = Instant::ZERO;
    match disk {
        None if durable => {
            Err("a durable replica (Durability::Disk) needs a data directory".into())
        }
        None => Ok((
            options
                .build_replica(service, now)
                .map_err(|e| e.to_string())?,
            None,
        )),
        Some(_) if !durable => {
            Err("a data directory is given but the configuration is diskless".into())
        }
        // A witness moves its log's start forward without a checkpoint
        // (it holds no state); the disk's log refuses that gap.
        Some(_)
            if !options.join
                && (options.config.index_of_member(options.replica))
                    .is_some_and(|index| options.config.is_witness(index)) =>
        {
            Err("a witness cannot be durable yet: run witnesses without a data directory, or no witnesses".into())
        }
        Some((dir, boot)) => {
            let nonce = options.recovery_nonce.unwrap_or(0);
            let replica = match boot {
                Boot::FirstStart if options.join => {
                    Replica::join(options.config.clone(), options.replica, service, now, nonce)
                }
                boot => {
                    boot.build_replica(options.config.clone(), options.replica, service, now, nonce)
                }
            }
            .map_err(|e| e.to_string())?;
            Ok((replica, Some(dir)))
        }
    }
}

/// The membership of one epoch (§7), stored in the data directory as
/// `epoch-E` when the replica enters epoch E, so that a replica restarted
/// from a disk of a later epoch than its command line's configuration can
/// rebuild that epoch's configuration: the tunables come from the command
/// line, the membership from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochMembership {
    /// The epoch.
    pub epoch: u32,
    /// Its replicas' member ids, in index order.
    pub members: Vec<vr_core::MemberId>,
    /// Its witnesses, by index.
    pub witnesses: Vec<vr_core::ReplicaIndex>,
    /// The members' addresses as the reconfiguration carried them (in
    /// index order; empty if it carried none).
    pub addresses: Vec<Vec<u8>>,
}

/// `epoch-E` files begin with this.
const EPOCH_MAGIC: &[u8; 8] = b"VREPOCH1";

impl EpochMembership {
    /// The membership of `replica`'s current epoch.
    pub fn of<S: Service>(replica: &Replica<S>) -> EpochMembership {
        EpochMembership {
            epoch: replica.epoch(),
            members: replica.epoch_members(),
            witnesses: replica.config().witnesses.clone(),
            addresses: replica.epoch_addresses().to_vec(),
        }
    }

    /// `base` (the command line's tunables) with this membership.
    pub fn apply(&self, base: &CoreConfig) -> CoreConfig {
        let mut config = base.clone();
        config.epoch = self.epoch;
        config.replica_count = self.members.len() as u8;
        config.members = self.members.clone();
        config.witnesses = self.witnesses.clone();
        config
    }

    /// The index of `member` in this epoch.
    pub fn index_of(&self, member: vr_core::MemberId) -> Option<vr_core::ReplicaIndex> {
        let index = self.members.iter().position(|&m| m == member)?;
        u8::try_from(index).ok().map(vr_core::ReplicaIndex)
    }

    /// The members' addresses by member id, where carried and valid:
    /// what an adapter adds to its address book.
    pub fn addresses_by_member(&self) -> Vec<(vr_core::MemberId, std::net::SocketAddr)> {
        self.members
            .iter()
            .zip(&self.addresses)
            .filter_map(|(&m, a)| Some((m, std::str::from_utf8(a).ok()?.parse().ok()?)))
            .collect()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = EPOCH_MAGIC.to_vec();
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.push(self.members.len() as u8);
        out.extend(self.members.iter().map(|m| m.0));
        out.push(self.witnesses.len() as u8);
        out.extend(self.witnesses.iter().map(|w| w.0));
        out.push(self.addresses.len() as u8);
        for address in &self.addresses {
            out.push(address.len().min(255) as u8);
            out.extend_from_slice(&address[..address.len().min(255)]);
        }
        let checksum = blake3::hash(&out);
        out.extend_from_slice(&checksum.as_bytes()[..16]);
        out
    }

    fn decode(bytes: &[u8]) -> Option<EpochMembership> {
        let (body, checksum) = bytes.split_at(bytes.len().checked_sub(16)?);
        if blake3::hash(body).as_bytes()[..16] != *checksum || !body.starts_with(EPOCH_MAGIC) {
            return None;
        }
        let mut rest = &body[EPOCH_MAGIC.len()..];
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let epoch = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let n = usize::from(take(1)?[0]);
        let members: Vec<_> = take(n)?.iter().map(|&m| vr_core::MemberId(m)).collect();
        let w = usize::from(take(1)?[0]);
        let witnesses = take(w)?.iter().map(|&i| vr_core::ReplicaIndex(i)).collect();
        let a = usize::from(take(1)?[0]);
        let mut addresses = Vec::with_capacity(a);
        for _ in 0..a {
            let len = usize::from(take(1)?[0]);
            addresses.push(take(len)?.to_vec());
        }
        (!members.is_empty()).then_some(EpochMembership {
            epoch,
            members,
            witnesses,
            addresses,
        })
    }
}

fn epoch_file_name(epoch: u32) -> String {
    format!("epoch-{epoch:010}")
}

/// Writes `epoch-E` durably: a temporary file, synced, renamed, the
/// directory synced.
fn write_epoch(backend: &mut FsBackend, membership: &EpochMembership) -> Result<(), Error> {
    use crate::Backend as _;
    let name = epoch_file_name(membership.epoch);
    let temporary = format!("{name}.tmp");
    backend.remove(&temporary)?;
    backend.write_at(&temporary, 0, &membership.encode())?;
    backend.sync(&temporary)?;
    backend.rename(&temporary, &name)?;
    backend.sync_dir()?;
    Ok(())
}

/// The membership stored for `epoch`, if its file is there and intact.
fn read_epoch(backend: &mut FsBackend, epoch: u32) -> Result<Option<EpochMembership>, Error> {
    use crate::Backend as _;
    let name = epoch_file_name(epoch);
    if !backend.list()?.contains(&name) {
        return Ok(None);
    }
    let len = backend.len(&name)?;
    if len > 64 * 1024 {
        return Ok(None);
    }
    let mut bytes = vec![0; len as usize];
    let read = backend.read_at(&name, 0, &mut bytes)?;
    bytes.truncate(read);
    Ok(EpochMembership::decode(&bytes).filter(|m| m.epoch == epoch))
}

/// Removes the membership files of epochs before `keep` (never needed
/// again: the superblock only moves forward) and temporary leftovers.
fn remove_other_epochs(backend: &mut FsBackend, keep: u32) -> Result<(), Error> {
    use crate::Backend as _;
    let mut removed = false;
    for name in backend.list()? {
        let Some(number) = name.strip_prefix("epoch-") else {
            continue;
        };
        let stale = match number.parse::<u32>() {
            Ok(epoch) => epoch < keep,
            Err(_) => number.ends_with(".tmp"),
        };
        if stale {
            backend.remove(&name)?;
            removed = true;
        }
    }
    if removed {
        backend.sync_dir()?;
    }
    Ok(())
}
