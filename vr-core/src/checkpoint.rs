//! Checkpoints (§5.1) and the Merkle tree that lets state transfer send only
//! the pages that differ (§5.2).
//!
//! A checkpoint is the service's state after a given op-number, read through
//! [`crate::Service::read_page`], plus the client table, as a list of pages.
//! Pages are hashed with BLAKE3 (a cryptographic hash: two different pages
//! never share a digest in practice, which a checksum cannot promise) and the
//! digests are folded into a tree of fan-out [`FANOUT`]. Two replicas compare
//! trees from the top down and fetch only the subtrees whose digests differ.
//!
//! Node `(level, index)` covers pages `index * FANOUT^level ..
//! (index + 1) * FANOUT^level`, so two trees over different page counts agree
//! on every node away from the end. Level 0 holds the page digests; the tree
//! grows until a level has at most [`FANOUT`] nodes, and the root is the hash
//! of that top level. The root of an empty state is the hash of nothing.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::client_table::{ClientEntry, ClientTable};

/// A BLAKE3 digest.
pub type Digest = [u8; 32];

/// Children per tree node. Wide enough that a 64 MiB state of 4 KiB pages
/// has four levels (four round trips to find a changed page), narrow enough
/// that one changed page costs few sibling digests.
pub const FANOUT: usize = 16;

/// The most pages a checkpoint may have (service and client table): 16 Mi
/// pages, 64 GiB of 4 KiB pages. A peer's summary announcing more is
/// refused, so that a corrupt one cannot make a replica allocate for it.
pub const PAGES_MAX: u64 = 1 << 24;

/// The client table travels as pages of this size after the service's pages.
pub const CLIENT_TABLE_PAGE_SIZE: usize = 4096;

/// The digest of one page. Domain-separated from interior nodes so that a
/// page can never be mistaken for a node.
pub fn page_digest(page: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"vr page\0");
    hasher.update(page);
    *hasher.finalize().as_bytes()
}

/// The digest of an interior node (or the root) from its children's digests.
pub fn node_digest(children: &[Digest]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"vr node\0");
    for child in children {
        hasher.update(child);
    }
    *hasher.finalize().as_bytes()
}

/// Nodes per level for `page_count` pages: `[page_count, ..., top]`, where the
/// top level is the first with at most [`FANOUT`] nodes.
pub fn level_sizes(page_count: u64) -> Vec<u64> {
    let mut sizes = alloc::vec![page_count];
    let mut size = page_count;
    while size > FANOUT as u64 {
        size = size.div_ceil(FANOUT as u64);
        sizes.push(size);
    }
    sizes
}

/// The number of children of node `(level, index)` in a tree over
/// `page_count` pages; `level == height` names the root.
pub fn child_count(page_count: u64, level: usize, index: u64) -> u64 {
    let sizes = level_sizes(page_count);
    if level == 0 || level > sizes.len() {
        return 0;
    }
    let below = sizes[level - 1];
    if level == sizes.len() {
        return if index == 0 { below } else { 0 };
    }
    let first = index * FANOUT as u64;
    below.saturating_sub(first).min(FANOUT as u64)
}

/// A Merkle tree over a checkpoint's pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[0]` are the page digests; the last level has at most FANOUT nodes.
    levels: Vec<Vec<Digest>>,
    root: Digest,
}

impl MerkleTree {
    /// Builds the tree over these page digests.
    pub fn build(leaves: Vec<Digest>) -> MerkleTree {
        let mut levels = alloc::vec![leaves];
        while levels.last().is_some_and(|l| l.len() > FANOUT) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above: Vec<Digest> = below.chunks(FANOUT).map(node_digest).collect();
            levels.push(above);
        }
        let root = node_digest(levels.last().map(Vec::as_slice).unwrap_or_default());
        MerkleTree { levels, root }
    }

    /// The root digest: names the whole checkpoint.
    pub fn root(&self) -> Digest {
        self.root
    }

    /// Levels below the root (at least one: the pages).
    pub fn height(&self) -> usize {
        self.levels.len()
    }

    /// The digest of node `(level, index)`, if the tree has it.
    pub fn node(&self, level: usize, index: u64) -> Option<&Digest> {
        self.levels.get(level)?.get(usize::try_from(index).ok()?)
    }

    /// The digests of the children of node `(level, index)`; `level ==
    /// height()` names the root, whose children are the top level.
    pub fn children(&self, level: usize, index: u64) -> &[Digest] {
        if level == 0 || level > self.levels.len() {
            return &[];
        }
        let below = &self.levels[level - 1];
        if level == self.levels.len() {
            return if index == 0 { below } else { &[] };
        }
        let Ok(first) = usize::try_from(index.saturating_mul(FANOUT as u64)) else {
            return &[];
        };
        let first = first.min(below.len());
        let last = (first + FANOUT).min(below.len());
        &below[first..last]
    }

    /// The page digests.
    pub fn leaves(&self) -> &[Digest] {
        &self.levels[0]
    }
}

/// What identifies a checkpoint and lets a peer fetch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CheckpointSummary {
    /// The state after executing every op up to this one.
    pub op_number: u64,
    /// Pages in all: the service's, then the client table's.
    pub page_count: u64,
    /// How many of the pages are the service's.
    pub service_page_count: u64,
    /// The Merkle root over all pages.
    pub root: Digest,
}

/// A checkpoint held by a replica: the pages, shared (`Arc`) with the
/// previous checkpoint where they did not change, and their tree.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Its summary.
    pub summary: CheckpointSummary,
    /// Every page: the service's, then the client table's.
    pub pages: Vec<Arc<[u8]>>,
    /// The tree over `pages`.
    pub tree: MerkleTree,
}

impl Checkpoint {
    /// The checkpoint of an empty state (before op 1), what every replica of
    /// a new cluster starts from.
    pub fn empty() -> Checkpoint {
        Checkpoint::from_pages(0, Vec::new(), 0)
    }

    /// A checkpoint at `op_number` from its pages.
    pub fn from_pages(
        op_number: u64,
        pages: Vec<Arc<[u8]>>,
        service_page_count: u64,
    ) -> Checkpoint {
        let tree = MerkleTree::build(pages.iter().map(|p| page_digest(p)).collect());
        Checkpoint {
            summary: CheckpointSummary {
                op_number,
                page_count: pages.len() as u64,
                service_page_count,
                root: tree.root(),
            },
            pages,
            tree,
        }
    }

    /// Bytes of page data held (shared pages counted in full).
    pub fn size_bytes(&self) -> usize {
        self.pages.iter().map(|p| p.len()).sum()
    }
}

/// Serializes the client table into pages of [`CLIENT_TABLE_PAGE_SIZE`]:
/// entries in client-id order, so every replica with the same table writes
/// the same bytes.
pub fn client_table_pages(table: &ClientTable) -> Vec<Arc<[u8]>> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(table.len() as u64).to_le_bytes());
    for (client_id, entry) in table.iter() {
        bytes.extend_from_slice(&client_id.to_le_bytes());
        bytes.extend_from_slice(&entry.request_number.to_le_bytes());
        bytes.extend_from_slice(&entry.op_number.to_le_bytes());
        bytes.extend_from_slice(&(entry.result.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&entry.result);
    }
    bytes
        .chunks(CLIENT_TABLE_PAGE_SIZE)
        .map(Arc::from)
        .collect()
}

/// Reads a client table back from its pages; `None` if they are malformed
/// (which hash-checked pages from a correct peer never are).
pub fn client_table_from_pages(pages: &[Arc<[u8]>], table_max: usize) -> Option<ClientTable> {
    let bytes: Vec<u8> = pages.iter().flat_map(|p| p.iter().copied()).collect();
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let slice = bytes.get(at..at.checked_add(n)?)?;
        at += n;
        Some(slice)
    };
    let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let mut entries = BTreeMap::new();
    for _ in 0..count {
        let client_id = u128::from_le_bytes(take(16)?.try_into().ok()?);
        let request_number = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let op_number = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let result = take(len)?.to_vec();
        entries.insert(
            client_id,
            ClientEntry {
                request_number,
                op_number,
                result,
            },
        );
    }
    if at != bytes.len() {
        return None;
    }
    Some(ClientTable::from_entries(entries, table_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(n: usize) -> Vec<Digest> {
        (0..n).map(|i| page_digest(&i.to_le_bytes())).collect()
    }

    #[test]
    fn shape_and_children_agree() {
        for n in [0usize, 1, 15, 16, 17, 255, 256, 257, 5000] {
            let tree = MerkleTree::build(digests(n));
            let sizes = level_sizes(n as u64);
            assert_eq!(tree.height(), sizes.len(), "n = {n}");
            for (level, &size) in sizes
                .iter()
                .enumerate()
                .skip(1)
                .chain([(tree.height(), &1)])
            {
                let parents = size;
                for index in 0..parents {
                    let children = tree.children(level, index);
                    assert_eq!(children.len() as u64, child_count(n as u64, level, index));
                    let parent = if level == tree.height() {
                        tree.root()
                    } else {
                        *tree.node(level, index).unwrap()
                    };
                    assert_eq!(node_digest(children), parent);
                }
            }
        }
    }

    #[test]
    fn one_changed_page_changes_one_path() {
        let mut leaves = digests(4096);
        let a = MerkleTree::build(leaves.clone());
        leaves[1234] = page_digest(b"changed");
        let b = MerkleTree::build(leaves);
        assert_ne!(a.root(), b.root());
        for level in 0..a.height() {
            let differing = (0..level_sizes(4096)[level])
                .filter(|&i| a.node(level, i) != b.node(level, i))
                .count();
            assert_eq!(differing, 1, "level {level}");
        }
    }

    #[test]
    fn client_table_round_trips_through_pages() {
        let mut table = ClientTable::with_max(100);
        for c in 0..300u128 {
            table.record(c, 1, c as u64 + 1, alloc::vec![c as u8; 20]);
        }
        let pages = client_table_pages(&table);
        assert!(pages.len() > 1);
        let back = client_table_from_pages(&pages, 100).unwrap();
        assert_eq!(back, table);
        assert!(client_table_from_pages(&pages[..1], 100).is_none());
    }
}
