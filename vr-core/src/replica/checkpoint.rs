//! Checkpoints (§5.1) and checkpoint transfer (§5.2).
//!
//! Every `checkpoint_interval_ops` committed ops a replica reads the
//! service's pages (only the changed ones, when the service tracks them),
//! appends the client table's, builds the Merkle tree and keeps the result
//! as its checkpoint; the log before it is dropped but for a tail.
//!
//! A peer whose log no longer reaches back far enough for a requester answers
//! its GetState with the checkpoint's summary instead. The requester walks
//! the source's tree from the root down, level by level, asking only for the
//! children of nodes whose digest differs from its own checkpoint's, then
//! fetches the differing pages in chunks that fit a message. Every digest is
//! checked against its parent and every page against its digest, so a
//! response from a stale checkpoint, or a corrupt one, is never installed.
//! Requests are resent on the repair timer: lost chunks are asked again.
//! The fetched checkpoint is staged and installed, with the log that follows
//! it, only when the whole sync is complete.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{Replica, SyncGoal};
use crate::checkpoint::{
    child_count, client_table_from_pages, client_table_pages, page_digest, Checkpoint,
    CheckpointSummary, Digest, MerkleTree, FANOUT,
};
use crate::message::{
    CheckpointPages, CheckpointTree, GetCheckpointPages, GetCheckpointTree, Message, PageChunk,
    ReplicaIndex,
};
use crate::time::Instant;
use crate::Service;

/// Bytes of a `CheckpointTree` answer besides its parents and digests: the
/// summary (3 × u64 and the root), the level, two counts and the replica.
const TREE_ANSWER_FIXED_SIZE: usize = 3 * 8 + 32 + 1 + 4 + 4 + 1;

/// Counters of one checkpoint fetch, for tests and operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointFetchStats {
    /// Pages reused from this replica's own checkpoint.
    pub pages_reused: u64,
    /// Pages fetched from the source.
    pub pages_fetched: u64,
}

/// A checkpoint being fetched.
#[derive(Clone, Debug)]
pub(crate) struct CheckpointFetch {
    summary: CheckpointSummary,
    /// The pages known so far, by index: reused from this replica's
    /// checkpoint or fetched and checked. A map filled as pages arrive, not
    /// a slot per page of the summary: a summary is one small frame, and a
    /// crafted one announcing 2^24 pages made the replica allocate for all
    /// of them up front (issue 17, item 5).
    pages: BTreeMap<u64, Arc<[u8]>>,
    /// Nodes whose children are still to be asked for: `(level, index,
    /// digest)`, level by level; `level == height` is the root.
    nodes_wanted: VecDeque<(usize, u64, Digest)>,
    /// Pages to fetch, in ascending order, with their digests (`None` when
    /// fetched without the tree: the whole checkpoint is then checked
    /// against the root). Fetched ones leave from the front; one fetched
    /// out of order stays until the pages before it are fetched (its entry
    /// in `pages` says it is done).
    pages_wanted: VecDeque<(u64, Option<Digest>)>,
    /// Without the tree walk, the pages from here to the end are wanted too
    /// (after those of `pages_wanted`), without digests: listed lazily, so
    /// that a summary costs nothing before its pages arrive. The page count
    /// when walking the tree.
    unlisted_from: u64,
    /// The beginning of pages received in part (a page larger than a
    /// message comes in several chunks).
    partials: BTreeMap<u64, Vec<u8>>,
    /// The last page asked for since the window was last sent whole: a
    /// follow-up request asks for the pages after it.
    requested_until: Option<u64>,
    stats: CheckpointFetchStats,
}

/// Page requests a checkpoint fetch keeps in flight: each answer is one
/// message, so a transfer moves this many messages per round trip instead
/// of one (a state many times a message's size over a long round trip).
const PAGE_REQUESTS_IN_FLIGHT: usize = 8;

impl CheckpointFetch {
    /// A fetch of `summary`: by walking its tree, or, when an answer cannot
    /// carry the children of one node (`walk_tree` false: a very small
    /// `message_size_max`), by fetching every page and checking them all
    /// against the root at the end.
    fn new(summary: CheckpointSummary, walk_tree: bool) -> CheckpointFetch {
        let height = crate::checkpoint::level_sizes(summary.page_count).len();
        let mut nodes_wanted = VecDeque::new();
        if walk_tree {
            nodes_wanted.push_back((height, 0, summary.root));
        }
        CheckpointFetch {
            summary,
            pages: BTreeMap::new(),
            nodes_wanted,
            pages_wanted: VecDeque::new(),
            unlisted_from: if walk_tree { summary.page_count } else { 0 },
            partials: BTreeMap::new(),
            requested_until: None,
            stats: CheckpointFetchStats::default(),
        }
    }

    /// Whether `page` needs nothing more: fetched, reused, or past the end.
    fn has_page(&self, page: u64) -> bool {
        page >= self.summary.page_count || self.pages.contains_key(&page)
    }

    /// If `page` is wanted, its digest (`None` without the tree walk).
    fn wanted_digest(&self, page: u64) -> Option<Option<Digest>> {
        match self.pages_wanted.binary_search_by_key(&page, |&(p, _)| p) {
            Ok(at) => Some(self.pages_wanted[at].1),
            Err(_) => {
                (page >= self.unlisted_from && page < self.summary.page_count).then_some(None)
            }
        }
    }

    /// The pages wanted, in order, from `from` on, not yet known.
    fn pending_from(&self, from: u64) -> impl Iterator<Item = u64> + '_ {
        let listed = self.pages_wanted.iter().map(|&(page, _)| page);
        let unlisted = self.unlisted_from.max(from)..self.summary.page_count;
        listed
            .chain(unlisted)
            .filter(move |&page| page >= from && !self.has_page(page))
    }

    /// Drops the pages known from the front of what is wanted.
    fn drop_known_front(&mut self) {
        while self
            .pages_wanted
            .front()
            .is_some_and(|&(page, _)| self.has_page(page))
        {
            self.pages_wanted.pop_front();
        }
        if self.pages_wanted.is_empty() {
            while self.unlisted_from < self.summary.page_count && self.has_page(self.unlisted_from)
            {
                self.unlisted_from += 1;
            }
        }
    }

    /// Whether every node and page is known.
    fn is_complete(&self) -> bool {
        self.nodes_wanted.is_empty()
            && self.pages_wanted.is_empty()
            && self.unlisted_from >= self.summary.page_count
    }
}

impl<S: Service> Replica<S> {
    /// Takes a checkpoint of the state after op `op_number` and drops the
    /// log before it but for the configured tail (§5.1).
    pub(super) fn take_checkpoint(&mut self, op_number: u64) {
        let mut changed = Vec::new();
        let tracked = self.service.take_changed_pages(&mut changed);
        changed.sort_unstable();
        let count = self.service.page_count();
        let old = &self.checkpoint;
        let old_count = old.summary.service_page_count;
        let mut pages: Vec<Arc<[u8]>> = Vec::with_capacity(count as usize);
        let mut leaves: Vec<Digest> = Vec::with_capacity(count as usize);
        let mut buffer = Vec::new();
        for index in 0..count {
            let unchanged = tracked && index < old_count && changed.binary_search(&index).is_err();
            if unchanged {
                pages.push(old.pages[index as usize].clone());
                leaves.push(old.tree.leaves()[index as usize]);
                continue;
            }
            buffer.clear();
            self.service.read_page(index, &mut buffer);
            let digest = page_digest(&buffer);
            // An unchanged page keeps sharing the previous checkpoint's copy.
            if index < old_count && old.tree.leaves()[index as usize] == digest {
                pages.push(old.pages[index as usize].clone());
            } else {
                pages.push(Arc::from(&buffer[..]));
            }
            leaves.push(digest);
        }
        // The client table is serialized whole, but most of its pages are
        // often byte for byte those of the previous checkpoint (clients
        // idle since): comparing bytes costs a fraction of hashing them.
        let old_table_pages = &old.pages[old_count as usize..];
        let old_table_leaves = &old.tree.leaves()[old_count as usize..];
        for (i, page) in client_table_pages(&self.client_table)
            .into_iter()
            .enumerate()
        {
            match old_table_pages.get(i) {
                Some(old_page) if old_page[..] == page[..] => {
                    leaves.push(old_table_leaves[i]);
                    pages.push(old_page.clone());
                }
                _ => {
                    leaves.push(page_digest(&page));
                    pages.push(page);
                }
            }
        }
        let tree = MerkleTree::build(leaves);
        let previous = core::mem::replace(
            &mut self.checkpoint,
            Checkpoint {
                summary: CheckpointSummary {
                    op_number,
                    page_count: pages.len() as u64,
                    service_page_count: count,
                    root: tree.root(),
                },
                pages,
                tree,
            },
        );
        self.stats.checkpoints_taken += 1;
        // A peer fetching the checkpoint just replaced, or the one retained
        // before, keeps it, with the log after it: otherwise the fetch
        // restarts with every new checkpoint, and under load, with
        // checkpoints more frequent than a transfer takes, it never
        // completes (vr-sim `lagging_backup_catches_up_by_checkpoint_under_load`).
        // Pages are shared with the latest checkpoint where unchanged.
        if self.fetched_recently(self.checkpoint_fetcher) {
            self.retained = Some(previous);
            self.retained_fetcher = self.checkpoint_fetcher;
        } else if !self.fetched_recently(self.retained_fetcher) {
            self.release_retained();
        }
        self.checkpoint_fetcher = None;
        // Keep `log_tail_ops` entries below the checkpoint for peers that lag
        // a little, and the log after a retained checkpoint; `log_base`
        // never passes the commit-number.
        let new_base = op_number
            .saturating_sub(self.config.log_tail_ops)
            .min(
                self.retained
                    .as_ref()
                    .map_or(u64::MAX, |r| r.summary.op_number),
            )
            .min(self.commit_number)
            // With witnesses, the log also reaches back to what every full
            // replica executed: a lagging witness, which cannot take a
            // checkpoint, catches up from there.
            .min(if self.config.has_witnesses() {
                self.full_commit_min
            } else {
                u64::MAX
            });
        if new_base > self.log_base {
            let drop = (new_base - self.log_base) as usize;
            self.log.drain(..drop.min(self.log.len()));
            self.log_base = new_base;
        }
    }

    /// Replaces the state with a fetched checkpoint: the service's pages,
    /// the client table, and an empty log after the checkpoint's op-number.
    pub(super) fn install_checkpoint(&mut self, checkpoint: Checkpoint) -> bool {
        let split = checkpoint.summary.service_page_count as usize;
        let Some(table) = client_table_from_pages(
            &checkpoint.pages[split..],
            self.config.client_table_max as usize,
        ) else {
            return false;
        };
        let service_pages: Vec<&[u8]> = checkpoint.pages[..split].iter().map(|p| &p[..]).collect();
        self.service.install_pages(&service_pages);
        // Changes are counted from the installed state on.
        let mut ignored = Vec::new();
        self.service.take_changed_pages(&mut ignored);
        self.client_table = table;
        let op_number = checkpoint.summary.op_number;
        // Every entry is replaced: those up to the checkpoint by it, those
        // after it (an older view's suffix) by the fetched log.
        self.note_log_cut(op_number.min(self.op_number));
        self.log.clear();
        self.log_base = op_number;
        self.op_number = op_number;
        self.commit_number = op_number;
        self.commit_max = self.commit_max.max(op_number);
        self.checkpoint = checkpoint;
        self.release_retained();
        self.stats.checkpoints_installed += 1;
        true
    }

    /// Whether `fetcher` asked recently enough that it is still fetching:
    /// its requests are resent well within this.
    fn fetched_recently(&self, fetcher: Option<(ReplicaIndex, Instant)>) -> bool {
        let horizon = self.config.view_change_timeout_ns + self.config.timeout_jitter_ns;
        fetcher.is_some_and(|(_, at)| self.now.saturating_since(at) < horizon)
    }

    /// Stops keeping a retained checkpoint; the log after it is dropped at
    /// the next checkpoint.
    pub(super) fn release_retained(&mut self) {
        self.retained = None;
        self.retained_fetcher = None;
    }

    /// The checkpoint that `peer`'s request names by its root: the latest or
    /// the retained one (recording that `peer` fetches it), else the
    /// latest, whose summary tells the peer to start over.
    fn checkpoint_for(&mut self, root: &Digest, peer: ReplicaIndex) -> &Checkpoint {
        let now = self.now;
        match &self.retained {
            Some(retained) if retained.summary.root == *root => {
                self.retained_fetcher = Some((peer, now));
                self.retained.as_ref().unwrap_or(&self.checkpoint)
            }
            _ => {
                if self.checkpoint.summary.root == *root {
                    self.checkpoint_fetcher = Some((peer, now));
                }
                &self.checkpoint
            }
        }
    }

    /// `peer` asks for the ops after `after`: offers the latest checkpoint
    /// when the log does not reach back that far, and notes whether the
    /// peer fetches the log kept after a retained checkpoint.
    pub(super) fn note_state_request(
        &mut self,
        after: u64,
        peer: ReplicaIndex,
    ) -> Option<CheckpointSummary> {
        if after < self.log_base {
            self.checkpoint_fetcher = Some((peer, self.now));
            return Some(self.checkpoint.summary);
        }
        let trimmed_base = self
            .checkpoint
            .summary
            .op_number
            .saturating_sub(self.config.log_tail_ops);
        if after < trimmed_base && self.retained_fetcher.is_some_and(|(p, _)| p == peer) {
            // Only the retained checkpoint keeps these entries: its fetcher
            // now fetches the log after it.
            self.retained_fetcher = Some((peer, self.now));
        }
        None
    }

    // ---- Serving ----

    /// Answers with the children of the asked nodes of the asked
    /// checkpoint's tree (the latest or the retained one), as many as fit a
    /// message.
    pub(super) fn on_get_checkpoint_tree(&mut self, now: Instant, message: GetCheckpointTree) {
        // A replica that left is asked by the new epoch's indexes.
        if self.status != crate::Status::Retired
            && (!self.config.has_replica(message.replica) || message.replica == self.replica)
        {
            self.stats.messages_invalid += 1;
            return;
        }
        self.heard_fetching_peer(now, message.view, message.replica);
        let summary = self.checkpoint_for(&message.root, message.replica).summary;
        let mut reply = CheckpointTree {
            view: self.view,
            summary,
            level: message.level,
            parents: Vec::new(),
            digests: Vec::new(),
            replica: self.replica,
        };
        if message.root == summary.root {
            // The fixed part of the answer is larger than the 64 bytes
            // `log_budget_bytes` allows for: count it, or a full answer
            // exceeds `message_size_max` by a few bytes and its receiver
            // rejects it (vr-sim regression test
            // `checkpoint_tree_answers_fit_their_frame`).
            let fixed = crate::codec::encoded_size(&Message::CheckpointTree(reply.clone()));
            let budget = (self.config.message_size_max as usize).saturating_sub(fixed);
            let mut size = 0usize;
            let level = usize::from(message.level);
            let checkpoint = self.checkpoint_for(&message.root, message.replica);
            for &parent in &message.parents {
                let children = checkpoint.tree.children(level, parent);
                size += 8 + 32 * children.len();
                if size > budget {
                    break;
                }
                reply.parents.push(parent);
                reply.digests.extend_from_slice(children);
            }
        }
        self.send(message.replica, Message::CheckpointTree(reply));
    }

    /// Answers with the asked pages of the asked checkpoint (the latest or
    /// the retained one), in order, as many bytes as fit a message.
    pub(super) fn on_get_checkpoint_pages(&mut self, now: Instant, message: GetCheckpointPages) {
        // A replica that left is asked by the new epoch's indexes.
        if self.status != crate::Status::Retired
            && (!self.config.has_replica(message.replica) || message.replica == self.replica)
        {
            self.stats.messages_invalid += 1;
            return;
        }
        self.heard_fetching_peer(now, message.view, message.replica);
        let mut budget = self.log_budget_bytes();
        let checkpoint = self.checkpoint_for(&message.root, message.replica);
        let summary = checkpoint.summary;
        let mut chunks = Vec::new();
        if message.root == summary.root {
            let mut offset = message.offset;
            for &page in &message.pages {
                let Some(bytes) = usize::try_from(page)
                    .ok()
                    .and_then(|p| checkpoint.pages.get(p))
                else {
                    break;
                };
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let room = budget.saturating_sub(crate::codec::PAGE_CHUNK_FIXED_SIZE);
                if room == 0 || (start < bytes.len() && room < 64 && !chunks.is_empty()) {
                    break;
                }
                let end = bytes.len().min(start + room);
                chunks.push(PageChunk {
                    page,
                    offset: start as u64,
                    size: bytes.len() as u64,
                    data: bytes[start..end].to_vec(),
                });
                budget = budget.saturating_sub(crate::codec::PAGE_CHUNK_FIXED_SIZE + end - start);
                if end < bytes.len() {
                    break;
                }
                offset = 0;
            }
        }
        self.send(
            message.replica,
            Message::CheckpointPages(CheckpointPages {
                view: self.view,
                summary,
                chunks,
                replica: self.replica,
            }),
        );
    }

    // ---- Fetching ----

    /// The sync's source cannot serve the log from the sync's base: fetch
    /// its checkpoint `summary` first.
    pub(super) fn start_checkpoint_fetch(&mut self, now: Instant, summary: CheckpointSummary) {
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        let have = sync
            .staged_checkpoint
            .as_ref()
            .map_or(sync.base, |c| c.summary.op_number);
        if summary.page_count > crate::checkpoint::PAGES_MAX
            || summary.service_page_count > summary.page_count
        {
            // More pages than any replica takes: a corrupt summary. Refuse
            // it rather than allocate for it.
            self.stats.messages_invalid += 1;
            return;
        }
        if summary.op_number <= have && sync.base < have {
            // Asked for the log below a staged checkpoint (with witnesses,
            // see `on_checkpoint_pages`), the source offers a checkpoint
            // instead: its log does not reach back that far. Take the log
            // from the staged checkpoint on.
            sync.base = have;
            sync.entries.clear();
            let source = sync.source;
            self.send_get_state(now, source, have);
            return;
        }
        if summary.op_number <= have
            || sync
                .fetch
                .as_ref()
                .is_some_and(|f| f.summary.op_number >= summary.op_number)
        {
            return;
        }
        if let SyncGoal::CommittedTo(target) = sync.goal {
            if summary.op_number > target {
                // A new primary may take only what the chosen log commits.
                return;
            }
        }
        // The answer to a tree request must hold the children of one node;
        // a smaller frame (which `Config::validate` allows: it only asks
        // for one Prepare) would get empty answers forever (vr-sim
        // regression seed 139).
        let walk_tree = crate::codec::HEADER_SIZE + TREE_ANSWER_FIXED_SIZE + 8 + 32 * FANOUT
            <= self.config.message_size_max as usize;
        sync.fetch = Some(CheckpointFetch::new(summary, walk_tree));
        self.arm_view_change_timer(now);
        self.send_checkpoint_request(now);
    }

    /// Sends the next request of the checkpoint fetch: children of wanted
    /// nodes of one level, else wanted pages.
    fn send_checkpoint_request(&mut self, now: Instant) {
        let budget = self.log_budget_bytes();
        let Some(sync) = self.sync.as_ref() else {
            return;
        };
        let Some(fetch) = sync.fetch.as_ref() else {
            return;
        };
        let source = sync.source;
        let messages = if let Some(&(level, _, _)) = fetch.nodes_wanted.front() {
            // Children of as many parents as one answer can carry.
            let per_parent = 8 + 32 * FANOUT;
            let max = (budget / per_parent).max(1);
            let parents = fetch
                .nodes_wanted
                .iter()
                .take_while(|(l, _, _)| *l == level)
                .take(max)
                .map(|&(_, index, _)| index)
                .collect();
            alloc::vec![Message::GetCheckpointTree(GetCheckpointTree {
                view: self.view,
                root: fetch.summary.root,
                level: u8::try_from(level).unwrap_or(u8::MAX),
                parents,
                replica: self.replica,
            })]
        } else {
            // The whole window of page requests, from the first page still
            // wanted (sent at the start and again on the repair timer).
            let groups = self.page_groups(0, PAGE_REQUESTS_IN_FLIGHT);
            if let Some(fetch) = self.sync.as_mut().and_then(|s| s.fetch.as_mut()) {
                fetch.requested_until = groups.last().and_then(|g| g.pages.last().copied());
            }
            groups
                .into_iter()
                .map(Message::GetCheckpointPages)
                .collect()
        };
        for message in messages {
            self.send_fetch_request(source, message);
        }
        self.timers.repair = Some(now + self.config.resend_interval_ns);
    }

    /// Up to `count` page requests of the fetch: consecutive wanted pages
    /// not yet fetched, from page `from` on, as many per request as one
    /// answer may carry, each starting where its first page was cut.
    fn page_groups(&self, from: u64, count: usize) -> Vec<GetCheckpointPages> {
        let budget = self.log_budget_bytes();
        let per_request = (budget / 4096).clamp(1, 1024);
        let Some(fetch) = self.sync.as_ref().and_then(|s| s.fetch.as_ref()) else {
            return Vec::new();
        };
        let mut groups: Vec<GetCheckpointPages> = Vec::new();
        for page in fetch.pending_from(from) {
            let open = groups
                .last()
                .is_some_and(|g| g.pages.len() < per_request && g.offset == 0);
            if open {
                if let Some(group) = groups.last_mut() {
                    group.pages.push(page);
                }
                continue;
            }
            if groups.len() == count {
                break;
            }
            let offset = fetch.partials.get(&page).map_or(0, |p| p.len() as u64);
            groups.push(GetCheckpointPages {
                view: self.view,
                root: fetch.summary.root,
                pages: alloc::vec![page],
                offset,
                replica: self.replica,
            });
        }
        groups
    }

    fn send_fetch_request(&mut self, source: ReplicaIndex, message: Message) {
        self.stats.state_requests_sent += 1;
        match self.transition_source() {
            // Transitioning (§7.2): named by member id (see `send_get_state`).
            Some(member) => self.send_member(member, message),
            None => self.send(source, message),
        }
    }

    /// Resends whatever the sync is waiting for (the repair timer).
    pub(super) fn resend_sync_request(&mut self, now: Instant) {
        let Some(sync) = &self.sync else {
            return;
        };
        if sync.fetch.is_some() {
            self.send_checkpoint_request(now);
        } else {
            let (mut source, next) = (sync.source, sync.base + sync.entries.len() as u64);
            if matches!(sync.goal, SyncGoal::CommittedTo(_)) && self.config.is_witness(source) {
                // A new primary completing its committed prefix from a
                // witness that does not answer (it may have dropped those
                // ops, or be gone): committed entries are the same at every
                // replica, so ask the next one that sent a DoViewChange
                // committing past what is here.
                source = self.next_committed_source(source, next);
                if let Some(sync) = self.sync.as_mut() {
                    sync.source = source;
                }
            }
            self.send_get_state(now, source, next);
        }
    }

    /// The DoViewChange sender after `current` (cyclically, this replica
    /// excluded) whose commit-number is past `have`; `current` if none.
    fn next_committed_source(&self, current: ReplicaIndex, have: u64) -> ReplicaIndex {
        let n = self.config.replica_count;
        (1..n)
            // In u16: the sum of two indexes may pass 255.
            .map(|step| {
                // Below n, a u8: the cast cannot truncate.
                ReplicaIndex(((u16::from(current.0) + u16::from(step)) % u16::from(n)) as u8)
            })
            .find(|&r| {
                r != self.replica
                    && self.do_view_change_from[usize::from(r)]
                        .as_ref()
                        .is_some_and(|d| d.commit_number > have)
            })
            .unwrap_or(current)
    }

    /// Whether a checkpoint answer belongs to the fetch in progress; a newer
    /// checkpoint at the source restarts the fetch with it.
    fn fetch_matches(
        &mut self,
        now: Instant,
        from: ReplicaIndex,
        summary: &CheckpointSummary,
    ) -> bool {
        let Some(sync) = self.sync.as_ref() else {
            self.stats.messages_stale_view += 1;
            return false;
        };
        let Some(fetch) = sync.fetch.as_ref() else {
            self.stats.messages_stale_view += 1;
            return false;
        };
        // A transitioning member's source may be a replica that left,
        // which names itself by an old index; every page is checked
        // against the root anyway.
        if sync.source != from && !matches!(sync.goal, SyncGoal::Transition(_)) {
            self.stats.messages_stale_view += 1;
            return false;
        }
        if summary.root == fetch.summary.root {
            return true;
        }
        if summary.op_number > fetch.summary.op_number {
            // The source moved to a newer checkpoint and dropped this one.
            if let Some(sync) = self.sync.as_mut() {
                sync.fetch = None;
            }
            self.start_checkpoint_fetch(now, *summary);
        } else {
            self.stats.messages_stale_view += 1;
        }
        false
    }

    pub(super) fn on_checkpoint_tree(&mut self, now: Instant, message: CheckpointTree) {
        if !self.fetch_matches(now, message.replica, &message.summary) {
            return;
        }
        let own = &self.checkpoint;
        let Some(fetch) = self.sync.as_mut().and_then(|s| s.fetch.as_mut()) else {
            return;
        };
        let page_count = fetch.summary.page_count;
        let level = usize::from(message.level);
        let mut digests = &message.digests[..];
        let mut progressed = false;
        for &parent in &message.parents {
            // Only the wanted node at the front, in order: anything else is a
            // duplicate or a late answer.
            let Some(&(want_level, want_index, want_digest)) = fetch.nodes_wanted.front() else {
                break;
            };
            if want_level != level || want_index != parent {
                break;
            }
            let count = child_count(page_count, level, parent) as usize;
            if digests.len() < count {
                self.stats.messages_invalid += 1;
                return;
            }
            let (children, rest) = digests.split_at(count);
            digests = rest;
            if crate::checkpoint::node_digest(children) != want_digest {
                self.stats.messages_invalid += 1;
                return;
            }
            fetch.nodes_wanted.pop_front();
            progressed = true;
            let height = crate::checkpoint::level_sizes(page_count).len();
            for (j, &digest) in children.iter().enumerate() {
                let index = if level == height {
                    j as u64
                } else {
                    parent * FANOUT as u64 + j as u64
                };
                let child_level = level - 1;
                if own.tree.node(child_level, index) == Some(&digest) {
                    // Same digest, same subtree: reuse this replica's pages.
                    let span = (FANOUT as u64).pow(child_level as u32);
                    let first = index * span;
                    let last = ((index + 1) * span).min(page_count);
                    for page in first..last {
                        if let Some(bytes) = own.pages.get(page as usize) {
                            fetch.pages.insert(page, bytes.clone());
                            fetch.stats.pages_reused += 1;
                        }
                    }
                } else if child_level == 0 {
                    fetch.pages_wanted.push_back((index, Some(digest)));
                } else {
                    fetch.nodes_wanted.push_back((child_level, index, digest));
                }
            }
        }
        if progressed {
            self.after_fetch_progress(now);
        }
    }

    pub(super) fn on_checkpoint_pages(&mut self, now: Instant, message: CheckpointPages) {
        if !self.fetch_matches(now, message.replica, &message.summary) {
            return;
        }
        let Some(fetch) = self.sync.as_mut().and_then(|s| s.fetch.as_mut()) else {
            return;
        };
        if !fetch.nodes_wanted.is_empty() {
            return;
        }
        // Answers arrive in any order (several requests are in flight):
        // each chunk continues its own page, and anything else (a
        // duplicate, a late answer) is skipped.
        let mut progressed = false;
        let mut received = 0u64;
        let mut cut = None;
        for chunk in message.chunks {
            let page = chunk.page;
            let Some(digest) = fetch.wanted_digest(page) else {
                continue;
            };
            if fetch.has_page(page) {
                continue; // Fetched already.
            }
            let partial = fetch.partials.entry(page).or_default();
            if chunk.offset != partial.len() as u64 {
                continue;
            }
            partial.extend_from_slice(&chunk.data);
            progressed |= !chunk.data.is_empty();
            if (partial.len() as u64) < chunk.size {
                cut = Some(page);
                continue;
            }
            let bytes = fetch.partials.remove(&page).unwrap_or_default();
            if bytes.len() as u64 != chunk.size || digest.is_some_and(|d| page_digest(&bytes) != d)
            {
                // Not the page the tree promised: ask for it again.
                self.stats.messages_invalid += 1;
                continue;
            }
            received += bytes.len() as u64;
            fetch.pages.insert(page, Arc::from(bytes));
            // An empty page completes without bytes: still progress.
            progressed = true;
            fetch.stats.pages_fetched += 1;
            self.stats.checkpoint_pages_received += 1;
        }
        fetch.drop_known_front();
        self.stats.checkpoint_bytes_received += received;
        if !progressed {
            // A duplicate or stale answer begets no request: with a network
            // that duplicates, requests would multiply (seed 1813).
            return;
        }
        if self.fetch_complete() {
            self.after_fetch_progress(now);
            return;
        }
        self.arm_view_change_timer(now);
        // One answer, one request: the window stays full. The rest of a page
        // cut short, else the next pages no request has asked for yet.
        let source = self.sync.as_ref().map_or(ReplicaIndex(0), |s| s.source);
        let follow_up = match cut {
            Some(page) => self.page_groups(page, 1),
            None => {
                let from = self
                    .sync
                    .as_ref()
                    .and_then(|s| s.fetch.as_ref())
                    .and_then(|f| f.requested_until)
                    .map_or(0, |last| last + 1);
                let groups = self.page_groups(from, 1);
                if let Some(fetch) = self.sync.as_mut().and_then(|s| s.fetch.as_mut()) {
                    if let Some(last) = groups.last().and_then(|g| g.pages.last()) {
                        fetch.requested_until = Some(*last);
                    }
                }
                groups
            }
        };
        for group in follow_up {
            self.send_fetch_request(source, Message::GetCheckpointPages(group));
        }
        self.timers.repair = Some(now + self.config.resend_interval_ns);
    }

    /// Whether every node and page of the fetch is known.
    fn fetch_complete(&self) -> bool {
        self.sync
            .as_ref()
            .and_then(|s| s.fetch.as_ref())
            .is_some_and(CheckpointFetch::is_complete)
    }

    /// After a fetch step: ask for more, or stage the complete checkpoint and
    /// go on with the log after it.
    fn after_fetch_progress(&mut self, now: Instant) {
        // The source answers: give the fetch another timeout (a large state
        // takes longer than one).
        self.arm_view_change_timer(now);
        if !self.fetch_complete() {
            self.send_checkpoint_request(now);
            return;
        }
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        let Some(fetch) = sync.fetch.take() else {
            return;
        };
        // Every page below the count, or some missing (which checked pages
        // never leave).
        let complete = (fetch.pages.len() as u64 == fetch.summary.page_count)
            .then(|| fetch.pages.into_values().collect::<Vec<Arc<[u8]>>>());
        let checkpoint = complete.map(|pages| {
            Checkpoint::from_pages(
                fetch.summary.op_number,
                pages,
                fetch.summary.service_page_count,
            )
        });
        match checkpoint {
            Some(checkpoint) if checkpoint.summary == fetch.summary => {
                // With witnesses, a full replica's log reaches back to what
                // every full replica executed, below its checkpoint: a
                // lagging full replica may have to catch up from it, or
                // from witnesses that took their log from it, when the
                // others are gone (issue 17, item 2). So the log is fetched
                // from there, not only from the checkpoint on; a source
                // whose log does not reach back that far offers its
                // checkpoint again, and the fetch then starts at the
                // checkpoint (`start_checkpoint_fetch`).
                let op_number = fetch.summary.op_number;
                let from = if self.config.has_witnesses() && !self.config.is_witness(self.replica) {
                    self.full_commit_min.min(op_number)
                } else {
                    op_number
                };
                sync.base = from;
                sync.entries.clear();
                sync.staged_checkpoint = Some(checkpoint);
                let source = sync.source;
                self.send_get_state(now, source, from);
            }
            _ => {
                // Cannot happen with checked pages; start the sync's request
                // over rather than install something wrong.
                self.stats.messages_invalid += 1;
                self.resend_sync_request(now);
            }
        }
    }

    /// Pages reused and fetched by the checkpoint fetch in progress.
    pub fn checkpoint_fetch_stats(&self) -> Option<CheckpointFetchStats> {
        self.sync.as_ref()?.fetch.as_ref().map(|f| f.stats)
    }
}
