//! The crash model, with the in-memory disk: a long random run of appends,
//! syncs, superblock writes, truncations and checkpoints, crashed at random
//! points (between calls and in the middle of one), each crash losing
//! unsynced writes in a random way. After every crash, recovery:
//! - loses nothing that a returned `sync` (or a returned truncate,
//!   superblock or checkpoint write) made durable;
//! - returns no entry that was not written, nor one a finished truncation
//!   removed;
//! - never returns a view number older than the last synced superblock's.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use common::*;
use vr_storage::format::ReplicaState;
use vr_storage::{Backend, CrashMode, EntryRef, MemDisk, RecoveredCheckpoint, Rng, Storage};

/// A backend that fails every change after a budget: the process dies in
/// the middle of whatever it was doing.
struct Dying {
    disk: MemDisk,
    budget: Rc<Cell<u64>>,
}

impl Dying {
    fn spend(&self) -> io::Result<()> {
        if self.budget.get() == 0 {
            return Err(io::Error::other("injected crash"));
        }
        self.budget.set(self.budget.get() - 1);
        Ok(())
    }
}

impl Backend for Dying {
    fn list(&mut self) -> io::Result<Vec<String>> {
        self.disk.list()
    }
    fn len(&mut self, name: &str) -> io::Result<u64> {
        self.disk.len(name)
    }
    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.disk.read_at(name, offset, buf)
    }
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.spend()?;
        self.disk.write_at(name, offset, data)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.spend()?;
        self.disk.sync(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.spend()?;
        self.disk.truncate(name, len)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.spend()?;
        self.disk.remove(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.spend()?;
        self.disk.rename(from, to)
    }
    fn sync_dir(&mut self) -> io::Result<()> {
        self.spend()?;
        self.disk.sync_dir()
    }
}

/// A format crashed at every IO step, under every crash mode: the
/// directory is either formatted (and opens empty) or unformatted (and
/// formats again), never half formatted.
#[test]
fn an_interrupted_format_leaves_the_directory_formatted_or_unformatted() {
    let config = small_config();
    let mut outcomes = [0u32; 2];
    for budget in 0..8 {
        for seed in 0..40 {
            let disk = MemDisk::new();
            let mut dying = Dying {
                disk: disk.clone(),
                budget: Rc::new(Cell::new(budget)),
            };
            let returned = Storage::format(&mut dying, &config).is_ok();
            let mode = match seed % 3 {
                0 => CrashMode::LoseAll,
                1 => CrashMode::RandomSectors { seed },
                _ => CrashMode::TornLast { seed },
            };
            disk.crash(mode);
            match Storage::open(disk.clone(), config) {
                Ok((_, recovered)) => {
                    outcomes[0] += 1;
                    assert_eq!(recovered.state, ReplicaState::default());
                    assert!(recovered.log.entries.is_empty() && recovered.log.faulty.is_empty());
                }
                Err(vr_storage::Error::Unformatted) => {
                    outcomes[1] += 1;
                    assert!(
                        !returned,
                        "budget {budget} seed {seed}: a returned format was lost"
                    );
                    let mut again = disk.clone();
                    Storage::format(&mut again, &config).unwrap();
                    Storage::open(disk, config).unwrap();
                }
                Err(e) => panic!("budget {budget} seed {seed}: {e}"),
            }
        }
    }
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

/// What the test knows the disk must (and may) hold.
#[derive(Default)]
struct Model {
    /// Per op, the entry written last (view, payload): the only one that
    /// may come back.
    live: BTreeMap<u64, (u64, Vec<u8>)>,
    /// Ops up to here were durable (a sync returned after they were
    /// appended), unless a later truncation removed them.
    durable_head: u64,
    /// The state of the last superblock write that returned, and of one
    /// that was under way at the crash.
    state: ReplicaState,
    state_attempt: Option<ReplicaState>,
    checkpoint: u64,
    checkpoint_attempt: Option<u64>,
    /// A truncation under way at the crash: the old log may come back up
    /// to here, or cut anywhere above the truncation point.
    truncate_attempt: Option<u64>,
}

fn check(model: &Model, recovered: &vr_storage::Recovered, context: &str) {
    // Promises: never older than the last that returned.
    let state = recovered.state;
    assert!(
        state == model.state || Some(state) == model.state_attempt,
        "{context}: state {state:?} is neither {:?} nor {:?}",
        model.state,
        model.state_attempt
    );
    assert!(
        state.view_number >= model.state.view_number,
        "{context}: view went back"
    );
    // The checkpoint: the last written, or the one under way.
    let checkpoint = match &recovered.checkpoint {
        RecoveredCheckpoint::Empty => 0,
        RecoveredCheckpoint::Read {
            op,
            pages,
            faulty_pages,
            root,
        } => {
            assert!(
                faulty_pages.is_empty(),
                "{context}: no corruption, yet faulty pages"
            );
            assert_eq!(pages, &pages_of(*op, 1 + op % 5), "{context}");
            assert_eq!(root, &root_of(*op));
            *op
        }
        RecoveredCheckpoint::Lost { .. } => panic!("{context}: checkpoint lost without corruption"),
    };
    assert!(
        checkpoint == model.checkpoint || Some(checkpoint) == model.checkpoint_attempt,
        "{context}: checkpoint {checkpoint}"
    );
    // Every entry returned was written and is the live one.
    for entry in &recovered.log.entries {
        let (view, payload) = model
            .live
            .get(&entry.op)
            .unwrap_or_else(|| panic!("{context}: op {} never written (or removed)", entry.op));
        assert_eq!(
            (entry.view, &entry.payload),
            (*view, payload),
            "{context}: op {}",
            entry.op
        );
    }
    // Everything durable is there, readable.
    let must = match model.truncate_attempt {
        Some(to) => model.durable_head.min(to),
        None => model.durable_head,
    };
    let returned: std::collections::BTreeSet<u64> =
        recovered.log.entries.iter().map(|e| e.op).collect();
    for op in checkpoint + 1..=must {
        assert!(
            returned.contains(&op),
            "{context}: durable op {op} lost (faulty: {:?})",
            recovered.log.faulty
        );
    }
    // Without corruption, faulty ops can only be unsynced ones (an
    // interrupted truncation leaves a prefix of the old log, no gap).
    for &op in &recovered.log.faulty {
        assert!(
            op > model.durable_head,
            "{context}: synced op {op} reported faulty"
        );
    }
    assert!(
        recovered
            .log
            .entries
            .windows(2)
            .all(|w| w[0].op < w[1].op && w[0].view <= w[1].view),
        "{context}: log out of order"
    );
}

fn run(seed: u64, steps: u64, log_retain_ops: u64) {
    let config = vr_storage::Config {
        log_retain_ops,
        ..small_config()
    };
    let mut rng = Rng::new(seed);
    let mut disk = MemDisk::new();
    Storage::format(&mut disk, &config).unwrap();
    let mut model = Model::default();
    let mut crashes = 0;
    let mut step = 0;
    while step < steps {
        // Open (after a crash), with a budget of IO until the next one.
        let budget = Rc::new(Cell::new(if rng.below(3) == 0 {
            rng.below(40)
        } else {
            u64::MAX
        }));
        let dying = Dying {
            disk: disk.clone(),
            budget: budget.clone(),
        };
        let saved = budget.get();
        budget.set(u64::MAX); // open itself is not crashed here
        let (mut storage, recovered) = Storage::open(dying, config).unwrap();
        check(&model, &recovered, &format!("seed {seed} crash {crashes}"));
        // What recovery found is the disk now: adopt it.
        model.state = recovered.state;
        model.state_attempt = None;
        model.checkpoint = storage.checkpoint().op;
        model.checkpoint_attempt = None;
        model.truncate_attempt = None;
        let first_kept = model.checkpoint.saturating_sub(log_retain_ops) + 1;
        model.live.retain(|op, _| *op >= first_kept);
        let keep: std::collections::BTreeSet<u64> =
            recovered.log.entries.iter().map(|e| e.op).collect();
        model.live.retain(|op, _| keep.contains(op));
        // Unsynced ops that came back faulty: drop them (repair by cutting,
        // since no peer has them in this test).
        let mut head = storage.head_op();
        if let Some(&first) = recovered.log.faulty.first() {
            storage.truncate_after(first - 1).unwrap();
            head = first - 1;
            model.live.retain(|op, _| *op < first);
        }
        model.durable_head = head;
        budget.set(saved);
        let mut view = recovered
            .log
            .entries
            .last()
            .map_or(0, |e| e.view)
            .max(model.state.view_number);

        // Run until the budget runs out.
        let crashed = loop {
            step += 1;
            if step >= steps {
                break false;
            }
            let result = match rng.below(20) {
                0..=11 => {
                    let count = 1 + rng.below(12);
                    let payloads: Vec<Vec<u8>> = (head + 1..=head + count)
                        .map(|op| payload(&mut rng, op, view, 600))
                        .collect();
                    let entries: Vec<EntryRef> = payloads
                        .iter()
                        .zip(head + 1..)
                        .map(|(p, op)| EntryRef {
                            op,
                            view,
                            payload: p,
                        })
                        .collect();
                    for (p, op) in payloads.iter().zip(head + 1..) {
                        model.live.insert(op, (view, p.clone()));
                    }
                    let r = storage.append(&entries);
                    if r.is_ok() {
                        head += count;
                    }
                    r
                }
                12..=15 => storage.sync().map(|()| model.durable_head = head),
                16 => {
                    view += 1;
                    let next = ReplicaState {
                        view_number: view,
                        last_normal_view: view,
                        commit_number: model.durable_head,
                        ..model.state
                    };
                    model.state_attempt = Some(next);
                    storage.write_superblock(&next).map(|()| {
                        model.state = next;
                        model.state_attempt = None;
                    })
                }
                17 => {
                    // A view change: the uncommitted suffix goes (never
                    // below the commit number the superblock holds).
                    let floor = model.checkpoint.max(model.state.commit_number);
                    if head < floor {
                        continue;
                    }
                    let to = floor + rng.below(head - floor + 1);
                    view += 1;
                    model.truncate_attempt = Some(to);
                    storage.truncate_after(to).map(|()| {
                        model.live.retain(|op, _| *op <= to);
                        head = to;
                        model.durable_head = model.durable_head.min(to);
                        model.truncate_attempt = None;
                    })
                }
                _ => {
                    if model.durable_head <= model.checkpoint {
                        continue;
                    }
                    let op =
                        model.checkpoint + 1 + rng.below(model.durable_head - model.checkpoint);
                    model.checkpoint_attempt = Some(op);
                    storage
                        .write_checkpoint(op, root_of(op), pages_of(op, 1 + op % 5))
                        .map(|()| {
                            model.checkpoint = op;
                            model.checkpoint_attempt = None;
                        })
                }
            };
            if result.is_err() {
                break true;
            }
            if rng.below(25) == 0 {
                break true;
            }
        };
        if !crashed {
            break;
        }
        // A truncation in progress may leave either log; a crash in the
        // middle of an append or before sync may lose any unsynced part.
        crashes += 1;
        drop(storage);
        let mode = match rng.below(4) {
            0 => CrashMode::KeepAll,
            1 => CrashMode::LoseAll,
            2 => CrashMode::RandomSectors {
                seed: rng.next_u64(),
            },
            _ => CrashMode::TornLast {
                seed: rng.next_u64(),
            },
        };
        disk.crash(mode);
        // Entries of an interrupted truncation's old log may come back:
        // the model cannot say which, so it keeps them live only where the
        // disk does (checked above against `live`, which still has them).
    }
    assert!(
        crashes > 5 || steps < 100,
        "seed {seed}: too few crashes ({crashes}) to mean anything"
    );
}

#[test]
fn nothing_synced_is_lost_and_nothing_unwritten_appears() {
    for seed in 0..40 {
        run(seed, 1500, 0);
    }
    // With ops retained behind the checkpoint (vr-core's log tail).
    for seed in 100..110 {
        run(seed, 1500, 60);
    }
}

/// A superblock write (and a checkpoint write, which ends in one) crashed
/// at every IO step, under every crash mode: the promise comes back as the
/// old or the new one, never lost, never older than the last that
/// returned.
#[test]
fn an_interrupted_superblock_write_leaves_the_old_or_the_new_promise() {
    let config = small_config();
    for budget in 0..12 {
        for seed in 0..150 {
            let mut disk = MemDisk::new();
            Storage::format(&mut disk, &config).unwrap();
            let (mut storage, _) = Storage::open(disk.clone(), config).unwrap();
            let old = ReplicaState {
                view_number: 4,
                last_normal_view: 4,
                ..ReplicaState::default()
            };
            storage.write_superblock(&old).unwrap();
            let mut rng = Rng::new(seed);
            append_synced(
                &mut storage,
                &mut rng,
                1,
                20,
                4,
                20,
                100,
                &mut BTreeMap::new(),
            );
            drop(storage);
            let dying = Dying {
                disk: disk.clone(),
                budget: Rc::new(Cell::new(u64::MAX)),
            };
            let budget_cell = dying.budget.clone();
            let (mut storage, _) = Storage::open(dying, config).unwrap();
            budget_cell.set(budget);
            let new = ReplicaState {
                view_number: 5,
                ..old
            };
            let returned = if seed % 2 == 0 {
                storage.write_superblock(&new).is_ok()
            } else {
                storage
                    .write_checkpoint(10, root_of(10), pages_of(10, 3))
                    .is_ok()
            };
            drop(storage);
            let mode = match seed % 3 {
                0 => CrashMode::LoseAll,
                1 => CrashMode::RandomSectors { seed },
                _ => CrashMode::TornLast { seed },
            };
            disk.crash(mode);
            let (_, recovered) = Storage::open(disk.clone(), config)
                .unwrap_or_else(|e| panic!("budget {budget} seed {seed}: {e}"));
            if seed % 2 == 0 {
                assert!(
                    recovered.state == old || recovered.state == new,
                    "budget {budget} seed {seed}"
                );
                if returned {
                    assert_eq!(
                        recovered.state, new,
                        "budget {budget} seed {seed}: a returned write lost"
                    );
                }
            } else {
                let op = match recovered.checkpoint {
                    RecoveredCheckpoint::Empty => 0,
                    RecoveredCheckpoint::Read { op, ref pages, .. } => {
                        assert_eq!(pages, &pages_of(10, 3));
                        op
                    }
                    RecoveredCheckpoint::Lost { .. } => {
                        panic!("budget {budget} seed {seed}: checkpoint lost")
                    }
                };
                assert!(op == 0 || op == 10);
                if returned {
                    assert_eq!(
                        op, 10,
                        "budget {budget} seed {seed}: a returned checkpoint lost"
                    );
                }
                // Ops after the checkpoint, if any, all read back.
                let ops: Vec<u64> = recovered.log.entries.iter().map(|e| e.op).collect();
                assert_eq!(
                    ops,
                    (op + 1..=20).collect::<Vec<_>>(),
                    "budget {budget} seed {seed}"
                );
            }
        }
    }
}
