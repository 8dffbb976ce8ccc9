//! What the simulator asserts about a run, besides linearizability (which
//! [`crate::linearizability`] judges from the client history at the end):
//!
//! * agreement: no two replicas ever commit different operations at the
//!   same op-number, nor hold different checkpoints after the same one
//!   ([`Agreement`]);
//! * exactly-once: the service never executes a client request twice (the
//!   [`crate::kv::Kv`] service reports it);
//! * liveness and convergence after the network heals (the simulator's
//!   last phases).

use std::collections::BTreeMap;
use std::fmt;

use vr_core::{ClientId, LogEntry};

/// What kind of property a run broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// The client history is not linearizable.
    Linearizability,
    /// Two replicas executed different operations at one op-number, or
    /// replicas at the same commit-number hold different service states.
    Agreement,
    /// The service executed one client request twice.
    ExactlyOnce,
    /// A client operation did not complete in time after the network healed.
    Liveness,
    /// After the workload completed, healed replicas did not settle into one
    /// view with the same commit-number and state.
    Convergence,
    /// The codec accepted a corrupted frame or rejected an intact one (an
    /// oversized frame sent by a replica is one).
    Codec,
    /// The service was asked to execute an operation it cannot, out of
    /// order, or a reply did not fit its request.
    Service,
    /// The code under test panicked (a broken invariant it asserts).
    Panic,
    /// The simulation stopped making progress (a timer that does not
    /// advance, or an event budget used up).
    Stuck,
    /// A backup read (§6) broke its promise: it reflects an op-number below
    /// the client's highest seen (read-your-writes, monotonic reads), or
    /// its value is not the key's value after the committed ops up to the
    /// op-number it names.
    BackupRead,
    /// A durable replica's disk glue refused or failed where it must not:
    /// a persist that does not fit the disk, an intact disk that
    /// `Replica::restart` refuses, a disk that does not open.
    Storage,
}

impl ViolationKind {
    /// A short name for summaries.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::Linearizability => "linearizability",
            ViolationKind::Agreement => "agreement",
            ViolationKind::ExactlyOnce => "exactly-once",
            ViolationKind::Liveness => "liveness",
            ViolationKind::Convergence => "convergence",
            ViolationKind::Codec => "codec",
            ViolationKind::Service => "service",
            ViolationKind::Panic => "panic",
            ViolationKind::Stuck => "stuck",
            ViolationKind::BackupRead => "backup-read",
            ViolationKind::Storage => "storage",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A property a run broke, when and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property.
    pub kind: ViolationKind,
    /// Simulated time of detection, in ns.
    pub time_ns: u64,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}: {}",
            self.kind,
            crate::trace::Seconds(self.time_ns),
            self.detail
        )
    }
}

/// Which request a log entry holds, and the view that numbered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryId {
    /// The view in which its op-number was assigned.
    pub view: u64,
    /// The client.
    pub client_id: ClientId,
    /// The client's request-number.
    pub request_number: u64,
}

impl EntryId {
    fn of(entry: &LogEntry) -> EntryId {
        EntryId {
            view: entry.view,
            client_id: entry.client_id,
            request_number: entry.request_number,
        }
    }
}

/// One committed operation, as first observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOp {
    /// The operation's bytes.
    pub op: Vec<u8>,
    /// Its log entry's identity, once a replica's log showed it (an
    /// operation seen only through the service's journal has none yet).
    pub entry: Option<EntryId>,
    /// The replica that reported it first.
    pub first_replica: u8,
}

/// The global committed sequence, built from every replica's observations,
/// and the checkpoints taken along it.
///
/// A replica's log no longer holds every op from 1 (entries below a
/// checkpoint are dropped, and a replica that installed a checkpoint never
/// held them), so the sequence may have holes, and each replica is compared
/// where it overlaps:
///
/// * a log entry at a committed op-number (its view, client,
///   request-number and bytes) — [`Agreement::observe`];
/// * an operation the service executed there, by its bytes, for entries a
///   checkpoint dropped within the step that executed them —
///   [`Agreement::observe_executed`];
/// * the Merkle root of a checkpoint at an op-number, which covers the
///   whole service state and client table, so the committed prefixes that
///   were transferred rather than executed are compared too —
///   [`Agreement::observe_checkpoint`].
#[derive(Clone, Debug, Default)]
pub struct Agreement {
    committed: BTreeMap<u64, CommittedOp>,
    checkpoints: BTreeMap<u64, ([u8; 32], u8)>,
    highest: u64,
}

impl Agreement {
    /// An empty sequence.
    pub fn new() -> Agreement {
        Agreement::default()
    }

    /// The highest op-number any replica committed.
    pub fn len(&self) -> u64 {
        self.highest
    }

    /// Whether nothing was committed.
    pub fn is_empty(&self) -> bool {
        self.highest == 0
    }

    /// The committed operations observed, by op-number.
    pub fn committed(&self) -> &BTreeMap<u64, CommittedOp> {
        &self.committed
    }

    /// Checkpoint roots observed, by op-number.
    pub fn checkpoint_count(&self) -> usize {
        self.checkpoints.len()
    }

    /// Replica `replica` holds `entry` at the committed `op_number`.
    /// Returns why this disagrees with what was observed there, if it does.
    ///
    /// The comparison includes the entry's view: the log entry at a
    /// committed op-number is never replaced, so even the same request
    /// under another view means a committed entry was overwritten.
    pub fn observe(&mut self, replica: u8, op_number: u64, entry: &LogEntry) -> Result<(), String> {
        if entry.op_number != op_number {
            return Err(format!(
                "r{replica} executed op {op_number} from a log entry numbered {}",
                entry.op_number
            ));
        }
        self.highest = self.highest.max(op_number);
        let id = EntryId::of(entry);
        match self.committed.get_mut(&op_number) {
            None => {
                self.committed.insert(
                    op_number,
                    CommittedOp {
                        op: entry.op.clone(),
                        entry: Some(id),
                        first_replica: replica,
                    },
                );
                Ok(())
            }
            Some(first) if first.op == entry.op && first.entry.is_none_or(|e| e == id) => {
                first.entry = Some(id);
                Ok(())
            }
            Some(first) => Err(format!(
                "op {op_number}: r{replica} committed (view {}, client {:x}, req {}, {} bytes) but r{} \
                 committed {}",
                id.view,
                id.client_id,
                id.request_number,
                entry.op.len(),
                first.first_replica,
                first.describe()
            )),
        }
    }

    /// Replica `replica`'s service executed `op` at `op_number`.
    pub fn observe_executed(
        &mut self,
        replica: u8,
        op_number: u64,
        op: &[u8],
    ) -> Result<(), String> {
        self.highest = self.highest.max(op_number);
        match self.committed.get(&op_number) {
            None => {
                self.committed.insert(
                    op_number,
                    CommittedOp {
                        op: op.to_vec(),
                        entry: None,
                        first_replica: replica,
                    },
                );
                Ok(())
            }
            Some(first) if first.op == op => Ok(()),
            Some(first) => Err(format!(
                "op {op_number}: r{replica} executed {} bytes {:02x?} but r{} committed {}",
                op.len(),
                &op[..op.len().min(16)],
                first.first_replica,
                first.describe()
            )),
        }
    }

    /// Replica `replica` took or installed a checkpoint of the state after
    /// `op_number` with Merkle root `root`.
    pub fn observe_checkpoint(
        &mut self,
        replica: u8,
        op_number: u64,
        root: [u8; 32],
    ) -> Result<(), String> {
        match self.checkpoints.get(&op_number) {
            None => {
                self.checkpoints.insert(op_number, (root, replica));
                Ok(())
            }
            Some((first, _)) if *first == root => Ok(()),
            Some((first, other)) => Err(format!(
                "the checkpoints of r{replica} and r{other} after op {op_number} differ (roots {} and {})",
                hex8(&root),
                hex8(first)
            )),
        }
    }
}

impl CommittedOp {
    fn describe(&self) -> String {
        match self.entry {
            Some(e) => format!(
                "(view {}, client {:x}, req {}, {} bytes)",
                e.view,
                e.client_id,
                e.request_number,
                self.op.len()
            ),
            None => format!(
                "{} bytes {:02x?}",
                self.op.len(),
                &self.op[..self.op.len().min(16)]
            ),
        }
    }
}

/// The first 8 bytes of a digest, in hex.
fn hex8(digest: &[u8; 32]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(op_number: u64, view: u64, request_number: u64) -> LogEntry {
        LogEntry {
            op_number,
            view,
            client_id: 7,
            request_number,
            op: vec![1, 2],
            kind: Default::default(),
        }
    }

    #[test]
    fn agreement_accepts_overlaps_and_rejects_divergence() {
        let mut a = Agreement::new();
        assert_eq!(a.observe(0, 1, &entry(1, 0, 1)), Ok(()));
        assert_eq!(a.observe(0, 2, &entry(2, 0, 2)), Ok(()));
        assert_eq!(a.observe(1, 1, &entry(1, 0, 1)), Ok(()));
        assert!(a.observe(1, 2, &entry(2, 0, 3)).is_err(), "another request");
        assert!(a.observe(2, 2, &entry(2, 1, 2)).is_err(), "another view");
        // A replica that installed a checkpoint starts above a hole.
        assert_eq!(a.observe(2, 9, &entry(9, 0, 9)), Ok(()));
        assert_eq!(a.len(), 9);
        // Executions are compared by their bytes.
        assert_eq!(a.observe_executed(1, 2, &[1, 2]), Ok(()));
        assert!(a.observe_executed(1, 2, &[9]).is_err());
        assert_eq!(a.observe_executed(1, 5, &[7]), Ok(()));
        assert!(a.observe(0, 5, &entry(5, 0, 5)).is_err(), "other bytes");
        // Checkpoints after the same op must have the same root.
        assert_eq!(a.observe_checkpoint(0, 4, [1; 32]), Ok(()));
        assert_eq!(a.observe_checkpoint(1, 4, [1; 32]), Ok(()));
        assert!(a.observe_checkpoint(2, 4, [2; 32]).is_err());
    }
}
