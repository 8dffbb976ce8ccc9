//! What the simulator asserts about a run, besides linearizability (which
//! [`crate::linearizability`] judges from the client history at the end):
//!
//! * agreement: no two replicas ever execute different operations at the
//!   same op-number — every replica executes a prefix of one sequence
//!   ([`Agreement`]);
//! * exactly-once: the service never executes a client request twice (the
//!   [`crate::kv::Kv`] service reports it);
//! * liveness and convergence after the network heals (the simulator's
//!   last phases).

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

/// One committed operation, as the first replica to execute it held it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOp {
    /// The view in which its op-number was assigned.
    pub view: u64,
    /// The client.
    pub client_id: ClientId,
    /// The client's request-number.
    pub request_number: u64,
    /// The operation's bytes.
    pub op: Vec<u8>,
    /// The replica that executed it first.
    pub first_replica: u8,
}

impl CommittedOp {
    fn of(entry: &LogEntry, replica: u8) -> CommittedOp {
        CommittedOp {
            view: entry.view,
            client_id: entry.client_id,
            request_number: entry.request_number,
            op: entry.op.clone(),
            first_replica: replica,
        }
    }

    fn same(&self, entry: &LogEntry) -> bool {
        self.view == entry.view
            && self.client_id == entry.client_id
            && self.request_number == entry.request_number
            && self.op == entry.op
    }
}

/// The global committed sequence: the longest prefix any replica executed.
/// Each replica's newly executed entries are compared against it.
#[derive(Clone, Debug, Default)]
pub struct Agreement {
    committed: Vec<CommittedOp>,
}

impl Agreement {
    /// An empty sequence.
    pub fn new() -> Agreement {
        Agreement::default()
    }

    /// The number of operations committed (by any replica).
    pub fn len(&self) -> u64 {
        self.committed.len() as u64
    }

    /// Whether nothing was committed.
    pub fn is_empty(&self) -> bool {
        self.committed.is_empty()
    }

    /// The committed sequence.
    pub fn committed(&self) -> &[CommittedOp] {
        &self.committed
    }

    /// Replica `replica` executed `entry` at `op_number` (1-based). Its
    /// earlier ops must all have been observed. Returns why this disagrees
    /// with what another replica executed there, if it does.
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
        let index = (op_number - 1) as usize;
        match self.committed.get(index) {
            Some(first) if first.same(entry) => Ok(()),
            Some(first) => Err(format!(
                "op {op_number}: r{replica} executed (view {}, client {:x}, req {}, {} bytes) but r{} executed \
                 (view {}, client {:x}, req {}, {} bytes)",
                entry.view,
                entry.client_id,
                entry.request_number,
                entry.op.len(),
                first.first_replica,
                first.view,
                first.client_id,
                first.request_number,
                first.op.len()
            )),
            None if index == self.committed.len() => {
                self.committed.push(CommittedOp::of(entry, replica));
                Ok(())
            }
            // A replica executes in order from op 1 and every op it executes
            // is observed, so it cannot get ahead of the sequence.
            None => Err(format!(
                "r{replica} executed op {op_number} while only {} ops were observed committed",
                self.committed.len()
            )),
        }
    }
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
        }
    }

    #[test]
    fn agreement_accepts_prefixes_and_rejects_divergence() {
        let mut a = Agreement::new();
        assert_eq!(a.observe(0, 1, &entry(1, 0, 1)), Ok(()));
        assert_eq!(a.observe(0, 2, &entry(2, 0, 2)), Ok(()));
        assert_eq!(a.observe(1, 1, &entry(1, 0, 1)), Ok(()));
        assert!(a.observe(1, 2, &entry(2, 0, 3)).is_err(), "another request");
        assert!(a.observe(2, 2, &entry(2, 1, 2)).is_err(), "another view");
        assert!(a.observe(2, 4, &entry(4, 0, 4)).is_err(), "a gap");
        assert_eq!(a.len(), 2);
    }
}
