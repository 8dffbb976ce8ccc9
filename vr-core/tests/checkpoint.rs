//! Checkpoints (§5.1) and state transfer by Merkle-tree diff (§5.2), on the
//! in-memory harness.

mod common;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::rc::Rc;

use common::{Cluster, Node};
use vr_core::message::Message;
use vr_core::{Config, Service, Status};

/// A service whose state is an array of fixed-size pages; an op writes bytes
/// into one page: `page` (u64 LE), `offset` (u32 LE), then the bytes.
#[derive(Clone)]
struct PagedArray {
    pages: Vec<Vec<u8>>,
    dirty: BTreeSet<u64>,
}

impl PagedArray {
    /// `count` pages of `size` bytes of deterministic noise, different in
    /// every page (so that no two pages share a digest).
    fn new(count: usize, size: usize) -> PagedArray {
        let pages = (0..count)
            .map(|p| {
                let mut x = (p as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                (0..size)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        PagedArray {
            pages,
            dirty: BTreeSet::new(),
        }
    }

    fn write(page: u64, offset: u32, bytes: &[u8]) -> Vec<u8> {
        let mut op = page.to_le_bytes().to_vec();
        op.extend_from_slice(&offset.to_le_bytes());
        op.extend_from_slice(bytes);
        op
    }
}

impl Service for PagedArray {
    fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
        let page = u64::from_le_bytes(op[..8].try_into().unwrap());
        let offset = u32::from_le_bytes(op[8..12].try_into().unwrap()) as usize;
        let bytes = &op[12..];
        self.pages[page as usize][offset..offset + bytes.len()].copy_from_slice(bytes);
        self.dirty.insert(page);
        page.to_le_bytes().to_vec()
    }
    fn page_count(&self) -> u64 {
        self.pages.len() as u64
    }
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pages[index as usize]);
    }
    fn install_pages(&mut self, pages: &[&[u8]]) {
        self.pages = pages.iter().map(|p| p.to_vec()).collect();
        self.dirty.clear();
    }
    fn take_changed_pages(&mut self, changed: &mut Vec<u64>) -> bool {
        changed.extend(std::mem::take(&mut self.dirty));
        true
    }
}

/// Runs until replica `replica` has committed `op_number`, or panics.
fn catch_up(cluster: &mut Cluster<PagedArray>, replica: usize, op_number: u64) {
    for _ in 0..200 {
        if cluster.replicas[replica].commit_number() >= op_number
            && cluster.replicas[replica].status() == Status::Normal
        {
            return;
        }
        cluster.run_for_ms(20);
    }
    panic!(
        "replica {replica} stuck at commit {} ({:?})",
        cluster.replicas[replica].commit_number(),
        cluster.replicas[replica].status()
    );
}

/// Reference: §5.2 ("a Merkle tree … only the pages that differ"). A backup
/// that missed writes to 1% of the pages of a 64 MiB state, for longer than
/// the log tail, catches up by checkpoint transfer and receives less than
/// 5% of the state's bytes in all (tree digests, pages and log included).
#[test]
fn lagging_replica_receives_only_the_changed_pages_of_a_64_mib_state() {
    const PAGES: usize = 16 * 1024;
    const PAGE_SIZE: usize = 4096;
    const STATE_BYTES: u64 = (PAGES * PAGE_SIZE) as u64;
    let changed = PAGES / 100;
    let mut config = Config::new(7, 3);
    config.checkpoint_interval_ops = 50;
    config.log_tail_ops = 10;
    let initial = PagedArray::new(PAGES, PAGE_SIZE);
    let mut cluster = Cluster::with_services(config, 1, |_| initial.clone());
    drop(initial);

    cluster.filter = Box::new(|e| e.to != Node::Replica(2) && e.from != Node::Replica(2));
    for i in 0..changed as u64 {
        let page = i * 97 % PAGES as u64; // distinct for i < PAGES
        cluster.execute(0, &PagedArray::write(page, 8, &i.to_le_bytes()));
    }
    let target = changed as u64;
    assert!(
        cluster.replicas[0].log_base() > 0,
        "the primary dropped its log prefix"
    );
    assert!(cluster.replicas[2].commit_number() < cluster.replicas[0].log_base());

    cluster.heal();
    cluster.bytes_to[2] = 0;
    catch_up(&mut cluster, 2, target);

    let lagging = &cluster.replicas[2];
    assert!(
        lagging.stats().checkpoints_installed >= 1,
        "caught up by checkpoint"
    );
    assert_eq!(lagging.service().pages, cluster.replicas[0].service().pages);
    let received = cluster.bytes_to[2];
    println!(
        "received {received} bytes ({:.2}% of {STATE_BYTES}); {} pages, {} page bytes",
        100.0 * received as f64 / STATE_BYTES as f64,
        lagging.stats().checkpoint_pages_received,
        lagging.stats().checkpoint_bytes_received,
    );
    assert!(
        received * 100 < STATE_BYTES * 5,
        "received {received} bytes, not under 5% of {STATE_BYTES}"
    );
    assert!(lagging.stats().checkpoint_pages_received <= changed as u64 + 2);
}

/// Reference: §5.1. Under a sustained workload the log, the client table
/// and the checkpoint stay bounded, on every replica.
#[test]
fn log_client_table_and_checkpoint_stay_bounded_over_a_long_run() {
    let mut config = Config::new(7, 3);
    config.checkpoint_interval_ops = 32;
    config.log_tail_ops = 8;
    config.client_table_max = 4;
    let log_max = (config.log_tail_ops + config.checkpoint_interval_ops) as usize
        + config.prepare_window_max as usize;
    let mut cluster = Cluster::with_services(config, 8, |_| PagedArray::new(64, 256));
    let mut checkpoint_max = 0;
    for i in 0..3000u64 {
        cluster.execute(
            (i % 8) as usize,
            &PagedArray::write(i % 64, 0, &i.to_le_bytes()),
        );
        if i % 100 == 99 {
            cluster.run_for_ms(15);
            for (r, replica) in cluster.replicas.iter().enumerate() {
                assert!(
                    replica.log().len() <= log_max,
                    "replica {r}: log of {} entries",
                    replica.log().len()
                );
                assert!(
                    replica.client_table().len() <= 4,
                    "replica {r}: client table"
                );
                checkpoint_max = checkpoint_max.max(replica.checkpoint_size_bytes());
            }
        }
    }
    for replica in &cluster.replicas {
        assert!(replica.stats().checkpoints_taken >= 3000 / 32);
        assert!(replica.log_base() >= 3000 - 32 - 8);
        // 64 pages of 256 bytes plus a client table of 4 entries.
        assert!(replica.checkpoint_size_bytes() <= 64 * 256 + 4096);
    }
    assert!(checkpoint_max <= 64 * 256 + 4096);
    assert_eq!(
        cluster.replicas[1].checkpoint(),
        cluster.replicas[0].checkpoint(),
        "replicas take identical checkpoints"
    );
}

/// A backup that lags by less than the log tail catches up from the log,
/// with no checkpoint transfer.
#[test]
fn a_short_lag_is_repaired_from_the_log_tail() {
    let mut config = Config::new(7, 3);
    config.checkpoint_interval_ops = 16;
    config.log_tail_ops = 32;
    let mut cluster = Cluster::with_services(config, 1, |_| PagedArray::new(16, 64));
    for i in 0..20u64 {
        cluster.execute(0, &PagedArray::write(i % 16, 0, &[1]));
    }
    cluster.filter = Box::new(|e| e.to != Node::Replica(2) && e.from != Node::Replica(2));
    for i in 0..10u64 {
        cluster.execute(0, &PagedArray::write(i % 16, 1, &[2]));
    }
    cluster.heal();
    catch_up(&mut cluster, 2, 30);
    assert_eq!(cluster.replicas[2].stats().checkpoints_installed, 0);
    assert_eq!(
        cluster.replicas[2].service().pages,
        cluster.replicas[0].service().pages
    );
}

/// Reference: §5.2. Pages larger than a message travel in chunks under
/// `message_size_max`, and chunks lost on the way are asked for again.
#[test]
fn large_pages_travel_in_bounded_chunks_and_survive_loss() {
    let mut config = Config::new(7, 3);
    config.op_size_max = 1024;
    config.message_size_max = 16 * 1024;
    config.checkpoint_interval_ops = 8;
    config.log_tail_ops = 2;
    let message_size_max = config.message_size_max as usize;
    // 16 pages of 100 KiB: each page takes at least 7 messages.
    let mut cluster = Cluster::with_services(config, 1, |_| PagedArray::new(16, 100 * 1024));
    cluster.filter = Box::new(|e| e.to != Node::Replica(2) && e.from != Node::Replica(2));
    for i in 0..40u64 {
        cluster.execute(0, &PagedArray::write(i % 16, 0, &i.to_le_bytes()));
    }
    // Heal, but drop every third chunk message and check every frame's size.
    let counter = Rc::new(Cell::new(0u64));
    let oversized = Rc::new(Cell::new(0u64));
    let (c, o) = (counter.clone(), oversized.clone());
    cluster.filter = Box::new(move |e| {
        if vr_core::codec::encoded_size(&e.message) > message_size_max {
            o.set(o.get() + 1);
        }
        if let Message::CheckpointPages(_) = e.message {
            c.set(c.get() + 1);
            return c.get() % 3 != 0;
        }
        true
    });
    catch_up(&mut cluster, 2, 40);
    assert_eq!(oversized.get(), 0, "every frame under message_size_max");
    assert!(counter.get() >= 16 * 7, "{} chunk messages", counter.get());
    assert!(cluster.replicas[2].stats().checkpoints_installed >= 1);
    assert_eq!(
        cluster.replicas[2].service().pages,
        cluster.replicas[0].service().pages
    );
}
