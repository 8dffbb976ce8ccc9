//! The on-disk format of a vr replica and its recovery scan: a superblock
//! (the replica's promises), a write-ahead log in segments, and
//! checkpoints, every record checksummed and placed, with the faults of
//! real disks handled (torn writes, corruption, misdirected writes, lost
//! unsynced writes). The format is documented byte by byte in
//! `docs/storage.md`.
//!
//! Two layers:
//! - **Pure, no IO**: [`format`](mod@format) (records, superblock, the scanner),
//!   [`log`] (where entries go, batch encoding, log assembly at recovery),
//!   [`checkpoint`] (checkpoint file layout and verification). Every write
//!   they plan is whole 4096-byte sectors at sector offsets, so an
//!   O_DIRECT/io_uring adapter (glommio's DMA files) can encode straight
//!   into its own aligned buffers.
//! - **Plans, no IO**: [`plan`]'s [`Planner`] turns each change (append,
//!   sync, truncate, superblock, checkpoint) into [`Step`]s (write, sync,
//!   truncate, remove, rename, sync the directory) in the order that makes
//!   it crash-safe. The order exists once, whoever does the IO.
//! - **IO**: [`Storage`] runs the recovery scan and then executes the
//!   planner's steps on a blocking [`Backend`]. [`FsBackend`] is std `fs`
//!   with `pwrite` and `fdatasync`; [`MemDisk`] is an in-memory disk with
//!   seeded faults for the simulator and tests. An adapter with its own IO
//!   opens with [`Storage::open`] (blocking, once) and then takes the
//!   planner with [`Storage::into_parts`].
//!
//! A data directory must be formatted once ([`Storage::format`]) before
//! [`Storage::open`] accepts it; `open` tells a never-formatted directory
//! ([`Error::Unformatted`]) from one whose data is lost
//! ([`Error::SuperblockLost`]), so that a replica that held data never
//! mistakes itself for a new one.
//!
//! # Example
//!
//! ```
//! use vr_storage::{Config, EntryRef, Identity, MemDisk, RecoveredCheckpoint, ReplicaState, Storage};
//!
//! # fn main() -> Result<(), vr_storage::Error> {
//! let config = Config::new(Identity { cluster_id: 0xc1, member_id: 0 });
//! let mut disk = MemDisk::new(); // or FsBackend::new("data/replica-0")?
//! Storage::format(&mut disk, &config)?;
//!
//! let (mut storage, recovered) = Storage::open(disk.clone(), config)?;
//! assert_eq!(recovered.checkpoint, RecoveredCheckpoint::Empty);
//! assert!(recovered.log.entries.is_empty());
//!
//! // A promise is durable before the message that rests on it is sent.
//! storage.write_superblock(&ReplicaState { view_number: 1, ..ReplicaState::default() })?;
//!
//! // Group commit: many entries, one write, one sync; acknowledge after.
//! let payloads: Vec<Vec<u8>> = (1..=16u64).map(|op| op.to_le_bytes().to_vec()).collect();
//! let entries: Vec<EntryRef> = payloads
//!     .iter()
//!     .zip(1..)
//!     .map(|(payload, op)| EntryRef { op, view: 1, payload })
//!     .collect();
//! storage.append(&entries)?;
//! storage.sync()?;
//!
//! // A checkpoint at op 10: the log before it can go.
//! storage.write_checkpoint(10, [7; 32], [b"page 0".as_slice(), b"page 1"])?;
//!
//! // Restart: the same state comes back.
//! drop(storage);
//! let (_storage, recovered) = Storage::open(disk, config)?;
//! assert_eq!(recovered.state.view_number, 1);
//! let ops: Vec<u64> = recovered.log.entries.iter().map(|e| e.op).collect();
//! assert_eq!(ops, (11..=16).collect::<Vec<_>>());
//! assert!(recovered.log.faulty.is_empty());
//! match recovered.checkpoint {
//!     RecoveredCheckpoint::Read { op, pages, .. } => assert_eq!((op, pages.len()), (10, 2)),
//!     other => panic!("checkpoint not read: {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
pub mod checkpoint;
#[cfg(feature = "vr-core")]
pub mod data_dir;
pub mod format;
pub mod log;
mod mem;
pub mod plan;
#[cfg(feature = "vr-core")]
pub mod replica;
mod storage;

pub use backend::{Backend, FsBackend};
pub use format::{CheckpointRef, Identity, ReplicaState, SECTOR_SIZE};
pub use log::{Entry, EntryRef, RecoveredLog};
pub use mem::{CrashMode, MemDisk, MemStats, Rng};
pub use plan::{Planner, Step};
#[cfg(feature = "bug-injection")]
pub use storage::InjectedBug;
pub use storage::{
    Config, Error, Recovered, RecoveredCheckpoint, Storage, StorageStats, SUPERBLOCK_FILE,
};
