//! Crafted but checksum-valid frames (issue 17, item 5).
//!
//! Until peers authenticate, anyone who reaches a replica's port can send it
//! a frame that passes the codec's checks (magic, cluster id, checksum,
//! lengths) with adversarial fields: numbers at `u64::MAX`, logs that do not
//! fit their op-numbers, checkpoints of 2^24 pages. VR trusts its peers
//! (the paper assumes crash failures only), so such a frame may still mislead
//! a replica that believes it; what it must never do is crash the replica
//! (a debug-build overflow or an index out of bounds is a panic) or make it
//! allocate memory out of proportion to the frame (`docs/protocol.md`,
//! "Bounds on a frame's cost").
//!
//! The property test below builds replicas in every status — normal primary
//! and backup, changing view (with and without a fetch in progress),
//! recovering (in round 1, and fetching), transitioning (waiting, and
//! fetching), retired (serving the epoch that removed it) — in clusters
//! with ordinary frames, with frames too small for a checkpoint tree walk,
//! and with a witness. It feeds each a few messages
//! of every kind whose fields are drawn from extreme values (0, 1, 2^24,
//! 2^62, 2^63, `u64::MAX`, arbitrary) and from values near the replica's
//! own (its view, op-number, commit-number, recovery nonce, checkpoint
//! root), encoded by the codec so that they are checksum-valid, and checks
//! for each frame: no panic, and the bytes allocated while decoding it and
//! handling it (outputs included) stay under [`frame_bound`]. A global
//! allocator that counts this thread's allocations measures it.
//!
//! Some messages of a case belong to one coherent crafted checkpoint (its
//! root really is the hash of its pages), so that fetches get past the
//! digest checks into the install path.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::collection::vec;
use proptest::prelude::*;

use common::{Cluster, Node};
use vr_core::checkpoint::{page_digest, MerkleTree};
use vr_core::codec::{decode_in_epoch, encode_in_epoch, encoded_size};
use vr_core::message::{
    CheckpointPages, CheckpointSummary, CheckpointTree, Commit, CrashVector, DoViewChange,
    EntryKind, EpochStarted, GetCheckpointPages, GetCheckpointTree, GetState, LogEntry, Message,
    NewState, PageChunk, Prepare, PrepareOk, ReadRequest, Reconfiguration, Recovery,
    RecoveryResponse, RecoveryStatus, Reply, Request, StartEpoch, StartView, StartViewChange,
};
use vr_core::{Config, Instant, Replica, Service, Status};

// ---- Counting this thread's allocations ----

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

fn note(bytes: usize) {
    // `try_with`: the thread-locals are gone while a thread exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes as u64)));
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the wrapper only
// adds to a thread-local counter, which allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Growing counts the growth: what the block adds.
        note(new_size.saturating_sub(layout.size()));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

thread_local! {
    /// The most bytes one frame cost, and that frame's size (for the survey).
    static LARGEST: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The bytes this thread allocates while `f` runs.
fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCATED.with(|a| a.set(0));
    COUNTING.with(|on| on.set(true));
    let result = f();
    COUNTING.with(|on| on.set(false));
    (result, ALLOCATED.with(Cell::get))
}

/// The most one frame of `frame_len` bytes may make a replica of `config`
/// allocate, decoding and handling it, outputs included, as
/// `docs/protocol.md` ("Bounds on a frame's cost") states it: 8 × the frame
/// for the decoded message (the rule says 6 ×; the rest is slack for the
/// handlers' small copies), one frame of `message_size_max` per replica for
/// the messages it causes (twice, for the copy kept to resend), and a fixed
/// 256 KiB for the work on the small states of this test (executing a few
/// ops, a checkpoint of a few pages). Sized by the frame and the
/// configuration, never by a number the frame carries.
fn frame_bound(config: &Config, frame_len: usize) -> u64 {
    8 * frame_len as u64
        + 2 * u64::from(config.replica_count) * u64::from(config.message_size_max)
        + 256 * 1024
}

// ---- The service: pages as they are, never a panic on crafted ones ----

/// One page per executed op (the op itself); installs any pages.
#[derive(Default)]
struct Store {
    pages: Vec<Vec<u8>>,
}

impl Service for Store {
    fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
        self.pages.push(op.to_vec());
        op.to_vec()
    }
    fn page_count(&self) -> u64 {
        self.pages.len() as u64
    }
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pages[index as usize]);
    }
    fn install_pages(&mut self, pages: &[&[u8]]) {
        self.pages = pages.iter().map(|p| p.to_vec()).collect();
    }
    fn is_read_only(&self, op: &[u8]) -> bool {
        op.starts_with(b"r")
    }
    fn query(&self, _op: &[u8]) -> Vec<u8> {
        (self.pages.len() as u64).to_le_bytes().to_vec()
    }
}

// ---- The replicas under test ----

/// The cluster's configuration.
#[derive(Clone, Copy, Debug)]
enum Setup {
    /// Three replicas, 64 KiB frames: checkpoints are fetched by tree walk.
    Plain,
    /// Three replicas, 600-byte frames: too small for one tree node's
    /// children, so a checkpoint is fetched page by page without the tree.
    TinyFrames,
    /// Two full replicas and a witness (replica 2).
    Witness,
}

/// The replica's status when the frames arrive.
#[derive(Clone, Copy, Debug)]
enum Base {
    /// Replica 0, primary of view 0, after six ops.
    Primary,
    /// Replica 1, a backup of view 0.
    Backup,
    /// Replica 2 (the witness, in `Setup::Witness`), a backup.
    OtherBackup,
    /// Replica 1 after its view-change timer fired.
    ViewChange,
    /// Replica 1 fetching the log of a later view it heard of.
    ViewChangeSyncing,
    /// Replica 1 restarted, in round 1 of recovery.
    Recovering,
    /// Replica 1 restarted, fetching the primary's state.
    RecoveringSyncing,
    /// A new replica (member 3) waiting to hear of its epoch.
    Transitioning,
    /// Member 3 of epoch 1, fetching the state up to the reconfiguration.
    TransitioningSyncing,
    /// Replica 2, removed by a reconfiguration to {0, 1}: it serves state
    /// to the new epoch until it may shut down (without witnesses: a
    /// cluster with witnesses cannot be reconfigured).
    Retired,
}

const OPS: usize = 6;

fn config(setup: Setup) -> Config {
    let mut config = Config::new(0x5eed, 3);
    config.seed = 17;
    config.checkpoint_interval_ops = 4;
    config.log_tail_ops = 1;
    config.op_size_max = 256;
    config.message_size_max = 64 * 1024;
    match setup {
        Setup::Plain => {}
        Setup::TinyFrames => config.message_size_max = 600,
        Setup::Witness => config.witnesses = vec![vr_core::ReplicaIndex(2)],
    }
    config.validate().expect("valid test configuration");
    config
}

/// Values near the replica's own that a crafted field may take.
#[derive(Clone, Copy, Debug, Default)]
struct Ctx {
    view: u64,
    op_number: u64,
    commit_number: u64,
    log_base: u64,
    nonce: u64,
    epoch: u32,
    root: [u8; 32],
    replica_count: u8,
    /// This replica's index.
    me: u8,
    /// The replica it hears from: the source of its fetch, its primary.
    peer: u8,
}

fn ctx(replica: &Replica<Store>, nonce: u64) -> Ctx {
    Ctx {
        view: replica.view(),
        op_number: replica.op_number(),
        commit_number: replica.commit_number(),
        log_base: replica.log_base(),
        nonce,
        epoch: replica.epoch(),
        root: replica.checkpoint().root,
        replica_count: replica.config().replica_count,
        me: replica.replica().0,
        peer: if replica.replica() == vr_core::ReplicaIndex(0) {
            1
        } else {
            0
        },
    }
}

fn drain(replica: &mut Replica<Store>) -> Vec<Message> {
    let mut sent = Vec::new();
    for output in common::drain(replica).0 {
        if let vr_core::Output::Send { message, .. } = output {
            sent.push(message);
        }
    }
    sent
}

/// A cluster of `setup` that executed `OPS` ops.
fn cluster(setup: Setup) -> Cluster<Store> {
    let mut cluster = Cluster::with_services(config(setup), 1, |_| Store::default());
    for i in 0..OPS {
        cluster.execute(0, format!("w{i}").as_bytes());
    }
    cluster.run_for_ms(50);
    cluster
}

/// Builds the replica of `base` and what a crafted field may refer to.
fn build(setup: Setup, base: Base) -> (Replica<Store>, Ctx) {
    let mut cluster = cluster(setup);
    let now = cluster.now;
    let take = |cluster: &mut Cluster<Store>, i: usize| {
        let mut replica = cluster.replicas.swap_remove(i);
        drain(&mut replica);
        replica
    };
    let (mut replica, nonce) = match base {
        Base::Primary => (take(&mut cluster, 0), 0),
        Base::Backup => (take(&mut cluster, 1), 0),
        Base::OtherBackup => (take(&mut cluster, 2), 0),
        Base::ViewChange => {
            let mut replica = take(&mut cluster, 1);
            replica.handle_timeout(now + 10_000_000_000);
            drain(&mut replica);
            assert_eq!(replica.status(), Status::ViewChange);
            (replica, 0)
        }
        Base::ViewChangeSyncing => {
            let mut replica = take(&mut cluster, 1);
            // A Commit of a later view led by another replica: the backup
            // fetches that view's log.
            let view = (1..)
                .find(|&v| ![1, 2].contains(&replica.config().primary_index(v).0))
                .expect("a view led by replica 0");
            let commit = Commit {
                view,
                commit_number: replica.commit_number(),
                op_number: replica.op_number(),
                timestamp_ns: 1,
                full_commit_min: 0,
            };
            replica.handle_message(now, replica.epoch(), Message::Commit(commit));
            drain(&mut replica);
            assert_eq!(replica.status(), Status::ViewChange);
            (replica, 0)
        }
        Base::Recovering => {
            let mut replica = Replica::recover(
                config(setup),
                vr_core::ReplicaIndex(1),
                Store::default(),
                now,
                99,
            )
            .expect("valid config");
            let nonce = drain(&mut replica)
                .iter()
                .find_map(|m| match m {
                    Message::Recovery(r) => Some(r.nonce),
                    _ => None,
                })
                .expect("a Recovery sent");
            (replica, nonce)
        }
        Base::RecoveringSyncing => {
            cluster.restart(1, Store::default(), 99);
            let mut nonce = 0;
            // Deliver until the recovering replica asks for state.
            for _ in 0..1000 {
                let sent_state_request = cluster.replicas[1].stats().state_requests_sent > 0;
                if sent_state_request {
                    break;
                }
                if let Some(Message::Recovery(r)) = cluster
                    .in_flight
                    .first()
                    .filter(|e| e.from == Node::Replica(1))
                    .map(|e| &e.message)
                {
                    nonce = r.nonce;
                }
                if !cluster.deliver_one() {
                    break;
                }
            }
            cluster.in_flight.clear();
            let replica = take(&mut cluster, 1);
            assert_eq!(replica.status(), Status::Recovering);
            assert!(replica.stats().state_requests_sent > 0, "fetching");
            (replica, nonce)
        }
        Base::Retired => {
            let mut cluster = if matches!(setup, Setup::Witness) {
                self::cluster(Setup::Plain)
            } else {
                cluster
            };
            let number = cluster.reconfigure(0, &[0, 1]);
            cluster
                .await_completion(0, number, 10_000)
                .expect("the reconfiguration completes");
            cluster.run_for_ms(50);
            let replica = take(&mut cluster, 2);
            assert_eq!(replica.status(), Status::Retired);
            (replica, 0)
        }
        Base::Transitioning | Base::TransitioningSyncing => {
            let mut replica = Replica::join(
                config(setup),
                vr_core::MemberId(3),
                Store::default(),
                now,
                5,
            )
            .expect("valid config");
            if matches!(base, Base::TransitioningSyncing) {
                let notice = StartEpoch {
                    view: 0,
                    epoch: 1,
                    op_number: cluster.replicas[0].commit_number(),
                    entry_view: 0,
                    members: vec![
                        vr_core::MemberId(0),
                        vr_core::MemberId(1),
                        vr_core::MemberId(3),
                    ],
                    addresses: Vec::new(),
                    sender: vr_core::MemberId(0),
                };
                replica.handle_message(now, 1, Message::StartEpoch(notice));
                drain(&mut replica);
                assert_eq!(replica.epoch(), 1);
            }
            assert_eq!(replica.status(), Status::Transitioning);
            (replica, 0)
        }
    };
    drain(&mut replica);
    let ctx = ctx(&replica, nonce);
    (replica, ctx)
}

// ---- Crafted messages ----

/// A number: a literal, or one near the replica's own.
#[derive(Clone, Copy, Debug)]
enum V {
    Lit(u64),
    View(i8),
    Op(i8),
    Commit(i8),
    LogBase(i8),
    Nonce,
}

impl V {
    fn at(self, c: &Ctx) -> u64 {
        let near = |base: u64, d: i8| base.wrapping_add_signed(i64::from(d));
        match self {
            V::Lit(x) => x,
            V::View(d) => near(c.view, d),
            V::Op(d) => near(c.op_number, d),
            V::Commit(d) => near(c.commit_number, d),
            V::LogBase(d) => near(c.log_base, d),
            V::Nonce => c.nonce,
        }
    }
}

fn lit() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => 0..8u64,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(1 << 62),
        1 => Just((1 << 62) + 1),
        1 => Just(1 << 63),
        1 => Just(1 << 24),
        1 => Just((1 << 24) + 1),
        1 => Just(u64::from(u32::MAX)),
        2 => any::<u64>(),
    ]
    .boxed()
}

fn v() -> BoxedStrategy<V> {
    let near = -2i8..=2;
    prop_oneof![
        4 => lit().prop_map(V::Lit),
        2 => near.clone().prop_map(V::View),
        2 => near.clone().prop_map(V::Op),
        2 => near.clone().prop_map(V::Commit),
        1 => near.prop_map(V::LogBase),
        1 => Just(V::Nonce),
    ]
    .boxed()
}

/// A replica index: mostly valid ones, some past the configuration.
fn index() -> BoxedStrategy<u8> {
    prop_oneof![6 => 0..4u8, 1 => Just(255u8), 1 => any::<u8>()].boxed()
}

#[derive(Clone, Debug)]
struct EntrySpec {
    op_number: V,
    view: V,
    client: u8,
    request_number: V,
    op: Vec<u8>,
    reconfiguration: bool,
}

fn entry_spec() -> BoxedStrategy<EntrySpec> {
    (
        v(),
        v(),
        0..4u8,
        v(),
        vec(any::<u8>(), 0..24),
        proptest::bool::weighted(0.1),
    )
        .prop_map(
            |(op_number, view, client, request_number, op, reconfiguration)| EntrySpec {
                op_number,
                view,
                client,
                request_number,
                op,
                reconfiguration,
            },
        )
        .boxed()
}

/// A log: consecutive op-numbers from `start`, or each entry's own.
#[derive(Clone, Debug)]
struct LogSpec {
    start: V,
    contiguous: bool,
    entries: Vec<EntrySpec>,
}

fn log_spec() -> BoxedStrategy<LogSpec> {
    (v(), proptest::bool::weighted(0.8), vec(entry_spec(), 0..5))
        .prop_map(|(start, contiguous, entries)| LogSpec {
            start,
            contiguous,
            entries,
        })
        .boxed()
}

impl LogSpec {
    fn build(&self, c: &Ctx) -> Vec<LogEntry> {
        let start = self.start.at(c);
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| LogEntry {
                op_number: if self.contiguous {
                    start.wrapping_add(i as u64)
                } else {
                    e.op_number.at(c)
                },
                view: e.view.at(c),
                client_id: 1000 + u128::from(e.client),
                request_number: e.request_number.at(c),
                op: e.op.clone(),
                kind: if e.reconfiguration {
                    EntryKind::Reconfiguration
                } else {
                    EntryKind::Operation
                },
            })
            .collect()
    }
}

/// A crash vector: one entry per replica (mostly), or any length.
#[derive(Clone, Debug)]
struct CvSpec {
    right_length: bool,
    entries: Vec<V>,
}

fn cv_spec() -> BoxedStrategy<CvSpec> {
    let entry = prop_oneof![4 => Just(V::Lit(0)), 1 => Just(V::Lit(1)), 2 => v()];
    (proptest::bool::weighted(0.85), vec(entry, 0..10))
        .prop_map(|(right_length, entries)| CvSpec {
            right_length,
            entries,
        })
        .boxed()
}

impl CvSpec {
    fn build(&self, c: &Ctx) -> CrashVector {
        let len = if self.right_length {
            usize::from(c.replica_count)
        } else {
            self.entries.len()
        };
        (0..len)
            .map(|i| self.entries.get(i).map_or(0, |e| e.at(c)))
            .collect()
    }
}

/// The case's coherent crafted checkpoint: its root is the hash of its
/// pages, so fetches of it get past every digest check.
#[derive(Clone, Debug)]
struct Story {
    op_number: V,
    pages: Vec<Vec<u8>>,
    service_page_count: u64,
}

fn story() -> BoxedStrategy<Story> {
    (
        v(),
        vec(vec(any::<u8>(), 0..40), 0..20),
        0..22u64,
        any::<bool>(),
    )
        .prop_map(|(op_number, mut pages, service_page_count, installable)| {
            let service_page_count = if installable {
                // The service's pages, then an empty client table: a
                // checkpoint a replica can install.
                let count = pages.len() as u64;
                pages.push(0u64.to_le_bytes().to_vec());
                count
            } else {
                service_page_count
            };
            Story {
                op_number,
                pages,
                service_page_count,
            }
        })
        .boxed()
}

impl Story {
    fn leaves(&self) -> Vec<[u8; 32]> {
        self.pages.iter().map(|p| page_digest(p)).collect()
    }
    fn summary(&self, c: &Ctx) -> CheckpointSummary {
        CheckpointSummary {
            op_number: self.op_number.at(c),
            page_count: self.pages.len() as u64,
            service_page_count: self.service_page_count,
            root: MerkleTree::build(self.leaves()).root(),
        }
    }
    /// The answer to a tree request for node `(level, parent)`.
    fn tree(&self, level: u8, parent: u64) -> (Vec<u64>, Vec<[u8; 32]>) {
        let tree = MerkleTree::build(self.leaves());
        let children = tree.children(usize::from(level), parent).to_vec();
        (vec![parent], children)
    }
}

#[derive(Clone, Debug)]
enum SummarySpec {
    /// The case's coherent checkpoint.
    Story,
    /// The replica's own root with a crafted op-number.
    Own(V),
    /// Anything.
    Crafted {
        op_number: V,
        page_count: u64,
        service_page_count: u64,
        root: u64,
    },
}

fn summary_spec() -> BoxedStrategy<SummarySpec> {
    let count = prop_oneof![
        3 => 0..40u64,
        1 => Just(1u64 << 24),
        1 => Just((1u64 << 24) + 1),
        1 => Just(1u64 << 20),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ];
    prop_oneof![
        3 => Just(SummarySpec::Story),
        1 => v().prop_map(SummarySpec::Own),
        3 => (v(), count.clone(), count, any::<u64>()).prop_map(
            |(op_number, page_count, service_page_count, root)| SummarySpec::Crafted {
                op_number,
                page_count,
                service_page_count,
                root,
            }
        ),
    ]
    .boxed()
}

fn digest_of(x: u64) -> [u8; 32] {
    let mut d = [0u8; 32];
    for (i, chunk) in d.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&x.rotate_left(i as u32 * 13).to_le_bytes());
    }
    d
}

impl SummarySpec {
    fn build(&self, c: &Ctx, story: &Story) -> CheckpointSummary {
        match self {
            SummarySpec::Story => story.summary(c),
            SummarySpec::Own(op_number) => CheckpointSummary {
                op_number: op_number.at(c),
                page_count: 1,
                service_page_count: 0,
                root: c.root,
            },
            SummarySpec::Crafted {
                op_number,
                page_count,
                service_page_count,
                root,
            } => CheckpointSummary {
                op_number: op_number.at(c),
                page_count: *page_count,
                service_page_count: *service_page_count,
                root: digest_of(*root),
            },
        }
    }
}

#[derive(Clone, Debug)]
struct ChunkSpec {
    /// A page of the story (its index, the data from `offset`), or a crafted one.
    story_page: Option<usize>,
    page: V,
    offset: V,
    size: V,
    data: Vec<u8>,
}

fn chunk_spec() -> BoxedStrategy<ChunkSpec> {
    (
        proptest::option::weighted(0.7, 0..24usize),
        v(),
        prop_oneof![3 => Just(V::Lit(0)), 1 => v()],
        v(),
        vec(any::<u8>(), 0..48),
    )
        .prop_map(|(story_page, page, offset, size, data)| ChunkSpec {
            story_page,
            page,
            offset,
            size,
            data,
        })
        .boxed()
}

impl ChunkSpec {
    fn build(&self, c: &Ctx, story: &Story) -> PageChunk {
        match self.story_page.filter(|&p| p < story.pages.len()) {
            Some(p) => {
                let page = &story.pages[p];
                let offset = usize::try_from(self.offset.at(c))
                    .unwrap_or(usize::MAX)
                    .min(page.len());
                PageChunk {
                    page: p as u64,
                    offset: offset as u64,
                    size: page.len() as u64,
                    data: page[offset..].to_vec(),
                }
            }
            None => PageChunk {
                page: self.page.at(c),
                offset: self.offset.at(c),
                size: self.size.at(c),
                data: self.data.clone(),
            },
        }
    }
}

/// One crafted message: its kind and a pool of fields each kind draws on.
#[derive(Clone, Debug)]
struct Spec {
    kind: u8,
    /// Fields consistent with the replica's state (its view, the next
    /// op-numbers, its peer, the case's checkpoint), so that the message
    /// gets past the first checks; some of them still crafted.
    plausible: bool,
    /// The header's epoch: the replica's (mostly), or another.
    epoch: prop::sample::Index,
    epoch_choice: u8,
    n: [V; 6],
    replica: u8,
    status: u8,
    level: u8,
    log: LogSpec,
    cv: CvSpec,
    summary: SummarySpec,
    list: Vec<V>,
    digests: Vec<u64>,
    chunks: Vec<ChunkSpec>,
    bytes: Vec<u8>,
    members: Vec<u8>,
    addresses: Vec<Vec<u8>>,
    u: u64,
}

fn spec() -> BoxedStrategy<Spec> {
    (
        (
            0..20u8,
            any::<prop::sample::Index>(),
            prop_oneof![6 => Just(0u8), 1 => 1..5u8],
            [v(), v(), v(), v(), v(), v()],
            index(),
            0..4u8,
            prop_oneof![3 => 0..3u8, 1 => any::<u8>()],
        ),
        (
            log_spec(),
            cv_spec(),
            summary_spec(),
            vec(v(), 0..5),
            vec(any::<u64>(), 0..20),
            vec(chunk_spec(), 0..5),
            vec(any::<u8>(), 0..40),
            prop_oneof![3 => vec(0..5u8, 0..5), 1 => vec(any::<u8>(), 0..8)],
            prop_oneof![3 => Just(Vec::new()), 1 => vec(vec(any::<u8>(), 0..8), 0..5)],
            any::<u64>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (kind, epoch, epoch_choice, n, replica, status, level),
                (log, cv, summary, list, digests, chunks, bytes, members, addresses, u, plausible),
            )| Spec {
                kind,
                plausible,
                epoch,
                epoch_choice,
                n,
                replica,
                status,
                level,
                log,
                cv,
                summary,
                list,
                digests,
                chunks,
                bytes,
                members,
                addresses,
                u,
            },
        )
        .boxed()
}

impl Spec {
    fn header_epoch(&self, c: &Ctx) -> u32 {
        match self.epoch_choice {
            0 => c.epoch,
            1 => c.epoch.wrapping_add(1),
            2 => c.epoch.wrapping_sub(1),
            3 => u32::MAX,
            _ => self.epoch.index(4) as u32,
        }
    }

    /// A message consistent with the replica's state, but for a field or
    /// two; `None` for the kinds without such a template.
    fn plausible_message(&self, c: &Ctx, story: &Story) -> Option<Message> {
        // A small step from the replica's numbers (mostly), or a crafted one.
        let step = |i: usize| match self.n[i] {
            V::Lit(x) if self.status == 3 => x,
            V::Lit(x) => x % 3,
            V::View(d) | V::Op(d) | V::Commit(d) | V::LogBase(d) => d.unsigned_abs().into(),
            V::Nonce => 1,
        };
        let view = c.view;
        let commit = c.commit_number;
        let op = c.op_number;
        let entries = |from: u64, count: u64, entry_view: u64| -> Vec<LogEntry> {
            (0..count.min(4))
                .map(|i| LogEntry {
                    op_number: from.wrapping_add(i),
                    view: entry_view,
                    client_id: 1000 + u128::from(self.replica % 4),
                    request_number: 100 + from.wrapping_add(i),
                    op: self.bytes.iter().take(16).copied().collect(),
                    kind: EntryKind::Operation,
                })
                .collect()
        };
        let cv: CrashVector = (0..usize::from(c.replica_count))
            .map(|i| {
                if i == usize::from(c.me) {
                    step(5).min(2)
                } else {
                    0
                }
            })
            .collect();
        let story_summary = || CheckpointSummary {
            op_number: commit.wrapping_add(step(1)),
            ..story.summary(c)
        };
        Some(match self.kind {
            1 => Message::Prepare(Prepare {
                view,
                commit_number: commit.wrapping_add(step(2)),
                timestamp_ns: 5,
                full_commit_min: step(3),
                entries: entries(op.wrapping_add(1).wrapping_sub(step(1) % 2), step(4), view),
            }),
            2 => Message::PrepareOk(PrepareOk {
                view,
                op_number: op.wrapping_sub(step(1)),
                replica: vr_core::ReplicaIndex(c.peer),
                timestamp_ns: 5,
                commit_number: commit.wrapping_sub(step(2)),
                crash_vector: cv,
            }),
            3 => Message::Commit(Commit {
                view,
                commit_number: commit.wrapping_add(step(1)),
                op_number: op.wrapping_add(step(2)),
                timestamp_ns: 5,
                full_commit_min: step(3),
            }),
            5 => Message::StartViewChange(StartViewChange {
                view: view.wrapping_add(step(1) % 2),
                promised_view: 0,
                replica: vr_core::ReplicaIndex(c.peer),
                crash_vector: cv,
            }),
            6 => {
                let log_ops = step(2) % 4;
                Message::DoViewChange(DoViewChange {
                    view,
                    last_normal_view: view.saturating_sub(1 + step(3) % 2),
                    op_number: commit.wrapping_add(log_ops),
                    commit_number: commit,
                    log: entries(commit.wrapping_add(1), log_ops, step(4) % 2),
                    replica: if self.status == 0 {
                        vr_core::ReplicaIndex(c.peer)
                    } else {
                        vr_core::ReplicaIndex(2)
                    },
                    crash_vector: cv,
                })
            }
            7 => {
                let new_ops = step(2) % 4;
                Message::StartView(StartView {
                    view: view.wrapping_add(step(1) % 2),
                    op_number: commit.wrapping_add(new_ops),
                    commit_number: commit.wrapping_add(step(3) % 3).min(commit + new_ops),
                    log: entries(commit.wrapping_add(1), new_ops, view),
                })
            }
            8 => Message::GetState(GetState {
                view,
                op_number: commit.wrapping_sub(step(1)),
                replica: vr_core::ReplicaIndex(c.peer),
            }),
            9 => {
                let offer = self.status % 2 == 1;
                let new_ops = step(2) % 4;
                // Status 2: a log starting past this replica's end, and
                // every full replica said to have executed up to there (a
                // witness skips to it).
                let gap = if self.status == 2 { 1 + step(4) } else { 0 };
                Message::NewState(NewState {
                    view,
                    op_number: commit.wrapping_add(gap + new_ops),
                    commit_number: commit.wrapping_add(gap + new_ops),
                    log: if offer {
                        Vec::new()
                    } else {
                        entries(commit.wrapping_add(1 + gap), new_ops, view)
                    },
                    replica: vr_core::ReplicaIndex(c.peer),
                    // The case's checkpoint, or (one time in two) any
                    // summary: 2^24 pages, more pages of the service than
                    // in all.
                    checkpoint: offer.then(|| CheckpointSummary {
                        op_number: commit.wrapping_add(1 + step(1) % 2),
                        ..if self.level.is_multiple_of(2) {
                            story.summary(c)
                        } else {
                            self.summary.build(c, story)
                        }
                    }),
                    full_commit_min: if gap > 0 {
                        commit.wrapping_add(gap + step(3))
                    } else {
                        step(3)
                    },
                })
            }
            11 => Message::RecoveryResponse(RecoveryResponse {
                view,
                nonce: c.nonce,
                status: if self.status == 2 {
                    RecoveryStatus::Recovering
                } else {
                    RecoveryStatus::Normal
                },
                op_number: op.wrapping_add(step(1)),
                commit_number: op,
                crash_vector: cv,
                replica: if self.level.is_multiple_of(2) {
                    vr_core::ReplicaIndex(c.peer)
                } else {
                    vr_core::ReplicaIndex(2)
                },
            }),
            12 => Message::GetCheckpointTree(GetCheckpointTree {
                view,
                root: c.root,
                level: (step(1) % 3) as u8,
                parents: vec![0, step(2)],
                replica: vr_core::ReplicaIndex(c.peer),
            }),
            13 => {
                // The children of every node of one level of the story's tree.
                let tree = MerkleTree::build(story.leaves());
                let level = (tree.height() - (step(2) as usize % tree.height())) as u8;
                let parents: Vec<u64> = (0..16u64)
                    .filter(|&p| !tree.children(usize::from(level), p).is_empty())
                    .collect();
                let digests = parents
                    .iter()
                    .flat_map(|&p| tree.children(usize::from(level), p).to_vec())
                    .collect();
                Message::CheckpointTree(CheckpointTree {
                    view,
                    summary: story_summary(),
                    level,
                    parents: if parents.is_empty() { vec![0] } else { parents },
                    digests,
                    replica: vr_core::ReplicaIndex(c.peer),
                })
            }
            14 => Message::GetCheckpointPages(GetCheckpointPages {
                view,
                root: c.root,
                pages: vec![0, step(1)],
                offset: step(2),
                replica: vr_core::ReplicaIndex(c.peer),
            }),
            15 => Message::CheckpointPages(CheckpointPages {
                view,
                summary: story_summary(),
                chunks: (0..story.pages.len())
                    .skip(step(2) as usize % 3)
                    .take(4)
                    .map(|p| {
                        let data = &story.pages[p];
                        let offset = (step(3) as usize % 2).min(data.len());
                        PageChunk {
                            page: p as u64,
                            offset: offset as u64,
                            size: data.len() as u64,
                            data: data[offset..].to_vec(),
                        }
                    })
                    .collect(),
                replica: vr_core::ReplicaIndex(c.peer),
            }),
            18 => Message::StartEpoch(StartEpoch {
                view: 0,
                epoch: c.epoch.wrapping_add(1),
                op_number: commit.wrapping_add(step(1) % 3).max(1),
                entry_view: step(2) % 2,
                members: if self.status.is_multiple_of(2) {
                    vec![
                        vr_core::MemberId(0),
                        vr_core::MemberId(1),
                        vr_core::MemberId(3),
                    ]
                } else {
                    vec![vr_core::MemberId(0), vr_core::MemberId(1)]
                },
                addresses: Vec::new(),
                sender: vr_core::MemberId(c.peer),
            }),
            _ => return None,
        })
    }

    fn message(&self, c: &Ctx, story: &Story) -> Message {
        if self.plausible {
            if let Some(message) = self.plausible_message(c, story) {
                return message;
            }
        }
        let n = |i: usize| self.n[i].at(c);
        let view = n(0);
        let replica = self.replica;
        let log = || self.log.build(c);
        let cv = || self.cv.build(c);
        let list = || self.list.iter().map(|x| x.at(c)).collect::<Vec<u64>>();
        let summary = || self.summary.build(c, story);
        match self.kind {
            0 => Message::Request(Request {
                client_id: 1000 + u128::from(self.replica % 4),
                request_number: n(1),
                op: self.bytes.clone(),
            }),
            1 => Message::Prepare(Prepare {
                view,
                commit_number: n(1),
                timestamp_ns: n(2),
                full_commit_min: n(3),
                entries: log(),
            }),
            2 => Message::PrepareOk(PrepareOk {
                view,
                op_number: n(1),
                replica: vr_core::ReplicaIndex(replica),
                timestamp_ns: n(2),
                commit_number: n(3),
                crash_vector: cv(),
            }),
            3 => Message::Commit(Commit {
                view,
                commit_number: n(1),
                op_number: n(2),
                timestamp_ns: n(3),
                full_commit_min: n(4),
            }),
            4 => Message::Reply(Reply {
                view,
                client_id: 1000,
                request_number: n(1),
                op_number: n(2),
                result: self.bytes.clone(),
            }),
            5 => Message::StartViewChange(StartViewChange {
                view,
                promised_view: n(1),
                replica: vr_core::ReplicaIndex(replica),
                crash_vector: cv(),
            }),
            6 => {
                let log = log();
                Message::DoViewChange(DoViewChange {
                    view,
                    last_normal_view: n(1),
                    op_number: n(2),
                    // Mostly consistent with the log, so that it gets past
                    // the first checks.
                    commit_number: if self.status == 0 {
                        n(3)
                    } else {
                        n(2).wrapping_sub(log.len() as u64)
                    },
                    log,
                    replica: vr_core::ReplicaIndex(replica),
                    crash_vector: cv(),
                })
            }
            7 => {
                let log = log();
                Message::StartView(StartView {
                    view,
                    op_number: if self.status == 0 {
                        n(1)
                    } else {
                        log.last().map_or(n(1), |e| e.op_number)
                    },
                    commit_number: n(2),
                    log,
                })
            }
            8 => Message::GetState(GetState {
                view,
                op_number: n(1),
                replica: vr_core::ReplicaIndex(replica),
            }),
            9 => {
                let log = log();
                let checkpoint = (self.status % 2 == 1).then(summary);
                Message::NewState(NewState {
                    view,
                    op_number: if self.status < 2 {
                        n(1)
                    } else {
                        log.last().map_or(n(1), |e| e.op_number)
                    },
                    commit_number: n(2),
                    log: if checkpoint.is_some() {
                        Vec::new()
                    } else {
                        log
                    },
                    replica: vr_core::ReplicaIndex(replica),
                    checkpoint,
                    full_commit_min: n(3),
                })
            }
            10 => Message::Recovery(Recovery {
                replica: vr_core::ReplicaIndex(replica),
                nonce: n(1),
                incarnation: n(2),
            }),
            11 => Message::RecoveryResponse(RecoveryResponse {
                view,
                nonce: if self.status == 3 { n(1) } else { c.nonce },
                status: match self.status {
                    0 | 3 => RecoveryStatus::Normal,
                    1 => RecoveryStatus::ViewChange,
                    _ => RecoveryStatus::Recovering,
                },
                op_number: n(2),
                commit_number: n(3),
                crash_vector: cv(),
                replica: vr_core::ReplicaIndex(replica),
            }),
            12 => Message::GetCheckpointTree(GetCheckpointTree {
                view,
                root: if self.status == 0 {
                    digest_of(self.u)
                } else {
                    c.root
                },
                level: self.level,
                parents: list(),
                replica: vr_core::ReplicaIndex(replica),
            }),
            13 => {
                let summary = summary();
                let (parents, digests) = if self.status == 0 {
                    (list(), self.digests.iter().map(|&d| digest_of(d)).collect())
                } else {
                    story.tree(self.level.max(1), n(1) % 2)
                };
                Message::CheckpointTree(CheckpointTree {
                    view,
                    summary,
                    level: self.level,
                    parents,
                    digests,
                    replica: vr_core::ReplicaIndex(replica),
                })
            }
            14 => Message::GetCheckpointPages(GetCheckpointPages {
                view,
                root: if self.status == 0 {
                    digest_of(self.u)
                } else {
                    c.root
                },
                pages: list(),
                offset: n(1),
                replica: vr_core::ReplicaIndex(replica),
            }),
            15 => Message::CheckpointPages(CheckpointPages {
                view,
                summary: summary(),
                chunks: self.chunks.iter().map(|s| s.build(c, story)).collect(),
                replica: vr_core::ReplicaIndex(replica),
            }),
            16 => Message::ReadRequest(ReadRequest {
                client_id: 1000 + u128::from(self.replica % 4),
                request_number: n(1),
                op_number_min: n(2),
                op: if self.status == 0 {
                    b"r".to_vec()
                } else {
                    self.bytes.clone()
                },
            }),
            17 => Message::Reconfiguration(Reconfiguration {
                client_id: 1000 + u128::from(self.replica % 4),
                request_number: n(1),
                epoch: if self.status == 0 {
                    c.epoch
                } else {
                    self.u as u32
                },
                members: self.members.iter().map(|&m| vr_core::MemberId(m)).collect(),
                addresses: self.addresses.clone(),
            }),
            18 => Message::StartEpoch(StartEpoch {
                view,
                epoch: match self.status {
                    0 => c.epoch.wrapping_add(1),
                    1 => u32::MAX,
                    _ => self.u as u32,
                },
                op_number: n(1),
                entry_view: n(2),
                members: self.members.iter().map(|&m| vr_core::MemberId(m)).collect(),
                addresses: self.addresses.clone(),
                sender: vr_core::MemberId(replica),
            }),
            _ => Message::EpochStarted(EpochStarted {
                epoch: self.u as u32,
                member: vr_core::MemberId(replica),
            }),
        }
    }
}

/// Encodes `message` as a checksum-valid frame, decodes it as a node does,
/// and has `replica` handle it, draining its outputs; returns the frame's
/// size, or `None` if the codec refuses the frame (larger than
/// `message_size_max`).
fn feed(
    replica: &mut Replica<Store>,
    now: Instant,
    epoch: u32,
    message: &Message,
) -> Option<usize> {
    let config = replica.config().clone();
    if encoded_size(message) > config.message_size_max as usize {
        return None;
    }
    let mut frame = Vec::new();
    encode_in_epoch(message, config.cluster, epoch, &mut frame);
    let (handled, allocated) = allocated_by(|| {
        match decode_in_epoch(&frame, config.cluster, config.message_size_max as usize) {
            Ok((decoded, epoch, _)) => {
                replica.handle_message(now, epoch, decoded);
                common::drain(replica);
                true
            }
            // A view in the header of a message that carries none.
            Err(_) => false,
        }
    });
    let bound = frame_bound(&config, frame.len());
    LARGEST.with(|l| {
        let (most, _) = l.get();
        if allocated > most {
            l.set((allocated, frame.len() as u64));
        }
    });
    assert!(
        allocated <= bound,
        "{} bytes allocated for a frame of {} bytes (bound {bound}): {message:?}",
        allocated,
        frame.len()
    );
    handled.then_some(frame.len())
}

fn setup() -> impl Strategy<Value = Setup> {
    prop_oneof![
        Just(Setup::Plain),
        Just(Setup::TinyFrames),
        Just(Setup::Witness)
    ]
}

fn base() -> impl Strategy<Value = Base> {
    prop_oneof![
        Just(Base::Primary),
        Just(Base::Backup),
        Just(Base::OtherBackup),
        Just(Base::ViewChange),
        Just(Base::ViewChangeSyncing),
        Just(Base::Recovering),
        Just(Base::RecoveringSyncing),
        Just(Base::Transitioning),
        Just(Base::TransitioningSyncing),
        Just(Base::Retired),
    ]
}

/// Plausible messages in an order that takes the replica of `base`
/// somewhere: through a checkpoint fetch and install, a view change, a
/// recovery, a transition. `(kind, status)`; a crafted field or two remain.
fn script(base: Base) -> &'static [(u8, u8)] {
    match base {
        Base::Primary => &[(0, 0), (2, 0), (2, 1), (14, 0), (12, 0), (8, 0)],
        Base::Backup => &[(1, 0), (3, 0), (9, 1), (13, 0), (15, 0), (9, 0)],
        Base::OtherBackup => &[(9, 2), (1, 0), (3, 0), (9, 2), (9, 1), (13, 0), (15, 0)],
        Base::ViewChange => &[(5, 0), (6, 0), (6, 1), (2, 0), (8, 0)],
        Base::Recovering => &[(11, 0), (11, 1), (11, 0), (11, 1), (9, 1), (13, 0), (15, 0)],
        Base::ViewChangeSyncing | Base::RecoveringSyncing | Base::TransitioningSyncing => {
            &[(9, 1), (13, 0), (13, 0), (15, 0), (15, 0), (9, 0), (9, 0)]
        }
        Base::Transitioning => &[(18, 0), (9, 1), (13, 0), (15, 0), (9, 0)],
        Base::Retired => &[(8, 0), (12, 0), (14, 0), (18, 0), (19, 0)],
    }
}

/// Feeds `specs` (following `script(base)` when `scripted`) to the replica
/// of `base`, firing its timers now and then; returns its counters before
/// and after.
fn run_case(
    setup: Setup,
    base: Base,
    story: &Story,
    specs: &[Spec],
    scripted: bool,
) -> (vr_core::Stats, vr_core::Stats) {
    let (mut replica, built) = build(setup, base);
    let before = replica.stats().clone();
    let mut now = Instant::from_nanos(1_000_000_000);
    let steps = if scripted {
        script(base).len().max(specs.len())
    } else {
        specs.len()
    };
    for i in 0..steps {
        let mut spec = specs[i % specs.len()].clone();
        if scripted {
            if let Some(&(kind, status)) = script(base).get(i) {
                spec.kind = kind;
                spec.status = status;
                spec.plausible = true;
                spec.epoch_choice = 0;
            }
        }
        // Values near the replica's own as it is now.
        let c = ctx(&replica, built.nonce);
        let message = spec.message(&c, story);
        let epoch = if scripted && spec.kind == 18 {
            c.epoch.wrapping_add(1)
        } else {
            spec.header_epoch(&c)
        };
        feed(&mut replica, now, epoch, &message);
        now = now + 1_000_000;
        // Timers fire too: state a crafted frame left must not make them panic.
        if spec.u.is_multiple_of(5) {
            replica.handle_timeout(replica.poll_timeout().unwrap_or(now).max(now));
            common::drain(&mut replica);
        }
    }
    (before, replica.stats().clone())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Crafted frames of every kind, a few in a row, to a replica in every
    /// status: no panic, and no frame costs more than `frame_bound`.
    #[test]
    fn crafted_frames_never_panic_nor_allocate_out_of_bounds(
        setup in setup(),
        base in base(),
        story in story(),
        specs in vec(spec(), 1..6),
        scripted in proptest::bool::weighted(0.4),
    ) {
        run_case(setup, base, &story, &specs, scripted);
    }
}

/// The base states build as described (a test of the harness itself).
#[test]
fn every_base_state_builds() {
    for setup in [Setup::Plain, Setup::TinyFrames, Setup::Witness] {
        for base in [
            Base::Primary,
            Base::Backup,
            Base::OtherBackup,
            Base::ViewChange,
            Base::ViewChangeSyncing,
            Base::Recovering,
            Base::RecoveringSyncing,
            Base::Transitioning,
            Base::TransitioningSyncing,
            Base::Retired,
        ] {
            let (replica, c) = build(setup, base);
            match base {
                Base::Primary => assert!(replica.is_primary()),
                Base::Backup | Base::OtherBackup => {
                    assert_eq!(replica.status(), Status::Normal);
                    assert!(!replica.is_primary());
                    assert_eq!(replica.commit_number(), OPS as u64, "{setup:?} {base:?}");
                }
                Base::Recovering | Base::RecoveringSyncing => {
                    assert_ne!(c.nonce, 0, "{setup:?} {base:?}: nonce seen")
                }
                _ => {}
            }
        }
    }
}

/// A tool rather than a test, run by hand: `CRAFTED_SURVEY=N cargo test -p
/// vr-core --test crafted_frames survey -- --ignored --nocapture` runs N
/// cases (20,000 by default) without stopping at the first panic, and
/// prints where every distinct panic happened (to fix them all in one
/// round), the largest cost of one frame, and in how many cases the
/// crafted frames reached each path (to judge the generator).
#[test]
#[ignore]
fn survey() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    let cases = std::env::var("CRAFTED_SURVEY")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(20_000);
    let seen: Arc<Mutex<BTreeMap<String, (usize, String)>>> = Arc::default();
    let hook_seen = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let mut seen = hook_seen.lock().unwrap();
        let e = seen
            .entry(at)
            .or_insert((0, payload.chars().take(600).collect()));
        e.0 += 1;
    }));
    let mut runner = TestRunner::deterministic();
    let strategy = (
        setup(),
        base(),
        story(),
        vec(spec(), 1..6),
        proptest::bool::weighted(0.4),
    );
    let tally: Arc<Mutex<BTreeMap<&'static str, u64>>> = Arc::default();
    for _ in 0..cases {
        let (setup, base, story, specs, scripted) =
            strategy.new_tree(&mut runner).unwrap().current();
        let tally = tally.clone();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let (b, s) = run_case(setup, base, &story, &specs, scripted);
            // Which paths the crafted frames reached.
            let mut tally = tally.lock().unwrap();
            for (name, value) in [
                ("messages_invalid", s.messages_invalid - b.messages_invalid),
                ("ops_executed", s.ops_executed - b.ops_executed),
                (
                    "view_changes_completed",
                    s.view_changes_completed - b.view_changes_completed,
                ),
                (
                    "recoveries_completed",
                    s.recoveries_completed - b.recoveries_completed,
                ),
                (
                    "checkpoints_installed",
                    s.checkpoints_installed - b.checkpoints_installed,
                ),
                (
                    "checkpoint_pages_received",
                    s.checkpoint_pages_received - b.checkpoint_pages_received,
                ),
                ("epochs_started", s.epochs_started - b.epochs_started),
                (
                    "witness_log_skips",
                    s.witness_log_skips - b.witness_log_skips,
                ),
                ("backup_reads", s.backup_reads - b.backup_reads),
                (
                    "stale_incarnation",
                    s.messages_stale_incarnation - b.messages_stale_incarnation,
                ),
            ] {
                *tally.entry(name).or_default() += u64::from(value > 0);
            }
        }));
    }
    let _ = std::panic::take_hook();
    let (most, frame) = LARGEST.with(Cell::get);
    eprintln!("largest cost of one frame: {most} bytes (a frame of {frame} bytes)");
    for (name, cases) in tally.lock().unwrap().iter() {
        eprintln!("cases with {name}: {cases}");
    }
    for (at, (count, payload)) in seen.lock().unwrap().iter() {
        eprintln!("{count:6} {at}: {payload}");
    }
}

// ---- Clients ----

fn reply_spec() -> impl Strategy<Value = (V, V, V, bool, Vec<u8>)> {
    (v(), v(), v(), any::<bool>(), vec(any::<u8>(), 0..12))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Crafted replies (extreme view, request- and op-numbers, a recovery
    /// answer of `u64::MAX`) to a client that is recovering or waiting for
    /// a request: no panic, then or when it numbers its next requests.
    #[test]
    fn crafted_replies_never_panic_a_client(
        recovering in any::<bool>(),
        replies in vec(reply_spec(), 1..5),
    ) {
        use vr_core::{Client, ClientConfig};
        let config = config(Setup::Plain);
        let now = Instant::from_nanos(1);
        let mut client = if recovering {
            Client::recover(ClientConfig::new(&config, 1000), now, 7)
        } else {
            let mut client = Client::new(ClientConfig::new(&config, 1000), 0);
            client.request(now, b"w".to_vec()).expect("idle");
            client
        };
        let c = Ctx::default();
        for (view, request_number, op_number, latest, result) in replies {
            let reply = Reply {
                view: view.at(&c),
                client_id: 1000,
                request_number: if latest { 0 } else { request_number.at(&c) },
                op_number: op_number.at(&c),
                result: if latest {
                    request_number.at(&c).to_le_bytes().to_vec()
                } else {
                    result
                },
            };
            let mut frame = Vec::new();
            let message = Message::Reply(reply);
            encode_in_epoch(&message, config.cluster, 0, &mut frame);
            let (decoded, _, _) =
                decode_in_epoch(&frame, config.cluster, config.message_size_max as usize)
                    .expect("a valid frame");
            let Message::Reply(reply) = decoded else { unreachable!() };
            client.handle_reply(now, reply);
            if completed(&mut client) || client.poll_timeout().is_none() {
                // Idle again: it numbers requests from what it learned.
                // Just above a fence in range (`Client::recover`), or no
                // number left when a recovery answer said so (no fence).
                match client.request(now, b"w".to_vec()) {
                    Ok(number) => prop_assert!(number <= vr_core::message::NUMBER_MAX + 2),
                    Err(e) => prop_assert_eq!(e, vr_core::ClientError::Exhausted),
                }
            }
            completed(&mut client);
        }
    }
}

/// Drains the client's outputs; whether one was a completion.
fn completed(client: &mut vr_core::Client) -> bool {
    let mut done = false;
    loop {
        match client.poll_output() {
            vr_core::ClientOutput::Completed(_) => done = true,
            vr_core::ClientOutput::Timeout(_) => return done,
            _ => {}
        }
    }
}

/// A recovering client ignores a recovery answer above `NUMBER_MAX`, which
/// would overflow its next request-number, and takes a true one.
#[test]
fn a_client_ignores_a_recovery_answer_out_of_range() {
    use vr_core::{Client, ClientConfig};
    let config = config(Setup::Plain);
    let now = Instant::from_nanos(1);
    let mut client = Client::recover(ClientConfig::new(&config, 1000), now, 7);
    let answer = |latest: u64| Reply {
        view: 0,
        client_id: 1000,
        request_number: 0,
        op_number: 1,
        result: latest.to_le_bytes().to_vec(),
    };
    completed(&mut client);
    client.handle_reply(now, answer(u64::MAX));
    assert!(!completed(&mut client));
    assert!(client.is_recovering(), "still waiting for a true answer");
    client.handle_reply(now, answer(41));
    assert!(completed(&mut client));
    let next = client.request(now, b"w".to_vec()).expect("idle");
    assert!(next > 41);
}

// ---- The cases the survey found on the code before the fix ----

/// What a dropped frame must leave alone.
fn state(replica: &Replica<Store>) -> (Status, u64, u64, u64, u64, Vec<u64>) {
    (
        replica.status(),
        replica.view(),
        replica.op_number(),
        replica.commit_number(),
        replica.log_base(),
        replica.crash_vector().to_vec(),
    )
}

/// Feeds one crafted message and asserts that it was counted invalid and
/// changed nothing.
fn assert_dropped(setup: Setup, base: Base, message: impl Fn(&Ctx) -> Message) {
    let (mut replica, c) = build(setup, base);
    let before = state(&replica);
    let invalid = replica.stats().messages_invalid;
    let message = message(&c);
    feed(
        &mut replica,
        Instant::from_nanos(1_000_000_000),
        c.epoch,
        &message,
    )
    .expect("a frame the codec accepts");
    assert_eq!(
        replica.stats().messages_invalid,
        invalid + 1,
        "{base:?}: counted invalid: {message:?}"
    );
    assert_eq!(
        state(&replica),
        before,
        "{base:?}: unchanged by {message:?}"
    );
}

fn entry(op_number: u64, view: u64) -> LogEntry {
    LogEntry {
        op_number,
        view,
        client_id: 1000,
        request_number: 1,
        op: b"x".to_vec(),
        kind: EntryKind::Operation,
    }
}

/// Two entries from op `u64::MAX`: `first + i` overflowed checking that
/// they are contiguous (`view_change.rs`).
#[test]
fn a_prepare_numbered_past_u64_max_is_dropped() {
    assert_dropped(Setup::Plain, Base::Backup, |c| {
        Message::Prepare(Prepare {
            view: c.view,
            commit_number: c.commit_number,
            timestamp_ns: 1,
            full_commit_min: 0,
            entries: vec![entry(u64::MAX, c.view), entry(0, c.view)],
        })
    });
}

/// A StartView ending at op `u64::MAX`: `op_number + 1` overflowed.
#[test]
fn a_start_view_ending_at_u64_max_is_dropped() {
    assert_dropped(Setup::Plain, Base::Backup, |c| {
        Message::StartView(StartView {
            view: c.view + 1,
            op_number: u64::MAX,
            commit_number: 0,
            log: Vec::new(),
        })
    });
}

/// A DoViewChange committing up to `u64::MAX`: `commit_number + 1`
/// overflowed (replica 1 leads view 1).
#[test]
fn a_do_view_change_committed_to_u64_max_is_dropped() {
    assert_dropped(Setup::Plain, Base::ViewChange, |c| {
        Message::DoViewChange(DoViewChange {
            view: c.view,
            last_normal_view: 0,
            op_number: u64::MAX,
            commit_number: u64::MAX,
            log: Vec::new(),
            replica: vr_core::ReplicaIndex(0),
            crash_vector: vec![0; 3].into(),
        })
    });
}

/// Recovery answers that know this replica's incarnation as `u64::MAX`:
/// round 1 chose `highest + 1`, round 2 `known + 1`, both overflowing
/// (`recovery.rs`).
#[test]
fn recovery_answers_with_incarnation_u64_max_are_dropped() {
    let answer = |c: &Ctx, from: u8, incarnation: u64| {
        Message::RecoveryResponse(RecoveryResponse {
            view: 0,
            nonce: c.nonce,
            status: RecoveryStatus::Normal,
            op_number: 0,
            commit_number: 0,
            crash_vector: vec![0, incarnation, 0].into(),
            replica: vr_core::ReplicaIndex(from),
        })
    };
    let now = Instant::from_nanos(1_000_000_000);
    // Round 1: two answers (f + 1) choose the incarnation.
    let (mut replica, c) = build(Setup::Plain, Base::Recovering);
    let before = state(&replica);
    for from in [0, 2] {
        feed(&mut replica, now, 0, &answer(&c, from, u64::MAX));
    }
    assert_eq!(replica.stats().messages_invalid, 2, "both dropped");
    assert_eq!(state(&replica), before);
    // Round 2, after a true round 1 (incarnation 1).
    let (mut replica, c) = build(Setup::Plain, Base::Recovering);
    for from in [0, 2] {
        feed(&mut replica, now, 0, &answer(&c, from, 0));
    }
    assert_eq!(replica.incarnation(), 1, "round 1 done");
    let before = state(&replica);
    feed(&mut replica, now, 0, &answer(&c, 0, u64::MAX));
    assert_eq!(replica.stats().messages_invalid, 1, "dropped");
    assert_eq!(state(&replica), before);
}

/// A StartView whose log replaces ops this replica committed by others, or
/// ends below its commit-number: installing it would lose committed ops
/// (debug assertions of `install_view` fired on it).
#[test]
fn a_start_view_contradicting_committed_ops_is_refused() {
    assert_dropped(Setup::Plain, Base::Backup, |c| {
        // View 2: led by replica 2, not this one.
        Message::StartView(StartView {
            view: c.view + 2,
            op_number: c.commit_number,
            commit_number: c.commit_number,
            log: vec![entry(c.commit_number, c.view + 7)],
        })
    });
    assert_dropped(Setup::Plain, Base::Backup, |c| {
        Message::StartView(StartView {
            view: c.view + 2,
            op_number: c.commit_number - 1,
            commit_number: 0,
            log: Vec::new(),
        })
    });
}

/// A checkpoint summary of 2^24 pages, offered to a replica fetching a
/// view's log (from its source, in its view): it made the replica allocate
/// 16 bytes per page up front (256 MiB), and 48 more per page when frames
/// are too small for the tree walk. Now the fetch starts at no cost.
#[test]
fn a_summary_of_two_to_the_24_pages_costs_nothing_up_front() {
    for setup in [Setup::Plain, Setup::TinyFrames] {
        let (mut replica, c) = build(setup, Base::ViewChangeSyncing);
        let offer = Message::NewState(NewState {
            view: c.view,
            op_number: c.commit_number + 1,
            commit_number: c.commit_number + 1,
            log: Vec::new(),
            replica: vr_core::ReplicaIndex(c.peer),
            checkpoint: Some(CheckpointSummary {
                op_number: c.commit_number + 1,
                page_count: 1 << 24,
                service_page_count: 1 << 24,
                root: digest_of(7),
            }),
            full_commit_min: 0,
        });
        let requests = replica.stats().state_requests_sent;
        // `feed` asserts the bound.
        feed(
            &mut replica,
            Instant::from_nanos(1_000_000_000),
            c.epoch,
            &offer,
        );
        assert!(
            replica.stats().state_requests_sent > requests,
            "{setup:?}: the fetch started (it asks for the tree or pages)"
        );
        assert!(replica.checkpoint_fetch_stats().is_some(), "{setup:?}");
    }
}
