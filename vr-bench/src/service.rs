//! The one place where vr-bench implements [`vr_core::Service`].
//!
//! Every benchmark (the in-memory core, each runtime's cluster, the runner)
//! replicates [`BenchService`], so when the trait gains methods (checkpoints,
//! state pages) this module is the only one to adapt.

use vr_core::Service;

/// The first byte of a read-only operation; any other first byte writes.
pub const READ_MARKER: u8 = b'R';

/// A service that does almost nothing, so that the numbers measure the
/// protocol and its transport rather than a state machine.
///
/// Every write folds its first bytes into a running digest (so the
/// operation is read, as any real service would) and answers with an 8-byte
/// result, the op-number: the size of a typical write acknowledgement, and
/// the same whatever the operation's size, so a 1 KiB write is not echoed
/// back as a 1 KiB reply. An operation starting with [`READ_MARKER`] is
/// read-only: it answers the number of writes executed (8 bytes) and
/// changes nothing, whether it goes through the log or is answered under a
/// lease.
#[derive(Debug, Default)]
pub struct BenchService {
    digest: u64,
    executed: u64,
}

impl BenchService {
    /// A service that has executed nothing.
    pub fn new() -> BenchService {
        BenchService::default()
    }

    /// Writes executed so far.
    pub fn executed(&self) -> u64 {
        self.executed
    }

    /// A digest of what was executed: equal on replicas that executed the
    /// same operations in the same order.
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

impl Service for BenchService {
    fn execute(&mut self, op_number: u64, op: &[u8]) -> Vec<u8> {
        if self.is_read_only(op) {
            return self.query(op);
        }
        let mut head = [0u8; 8];
        let n = op.len().min(8);
        head[..n].copy_from_slice(&op[..n]);
        self.digest = self
            .digest
            .rotate_left(5)
            .wrapping_add(u64::from_le_bytes(head) ^ op_number);
        self.executed += 1;
        op_number.to_le_bytes().to_vec()
    }

    fn is_read_only(&self, op: &[u8]) -> bool {
        op.first() == Some(&READ_MARKER)
    }

    fn query(&self, _op: &[u8]) -> Vec<u8> {
        self.executed.to_le_bytes().to_vec()
    }

    // The whole state is one 16-byte page: checkpoints read it every
    // `checkpoint_interval_ops` operations, which is part of what the
    // benchmarks measure, at the cost of a service with almost no state.
    fn page_count(&self) -> u64 {
        1
    }

    fn read_page(&self, _index: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.digest.to_le_bytes());
        out.extend_from_slice(&self.executed.to_le_bytes());
    }

    fn install_pages(&mut self, pages: &[&[u8]]) {
        // A page of another length never comes from a BenchService;
        // start from zero then rather than panic on input.
        let word = |page: &[u8], at: usize| {
            page.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        let page = pages.first().copied().unwrap_or_default();
        self.digest = word(page, 0);
        self.executed = word(page, 8);
    }
}
