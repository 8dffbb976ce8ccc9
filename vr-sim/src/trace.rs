//! The event log of a run: a running hash of every event (so that two runs
//! can be compared byte for byte without keeping their logs) and, when asked
//! for, the readable lines of `--trace`.

use std::fmt;

use vr_core::Message;

/// What kind of event a trace line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum TraceKind {
    /// A frame sent (encoded and handed to the network).
    Send = 1,
    /// A frame delivered to its destination and decoded.
    Deliver = 2,
    /// A frame lost: random loss, a partition, or a crashed destination.
    Drop = 3,
    /// A frame duplicated by the network.
    Duplicate = 4,
    /// A frame corrupted in flight.
    Corrupt = 5,
    /// A frame the decoder rejected.
    Reject = 6,
    /// A node's timer fired.
    Timeout = 7,
    /// A replica changed view or status.
    View = 8,
    /// A replica executed newly committed operations.
    Commit = 9,
    /// A client invoked an operation.
    Invoke = 10,
    /// A client's operation completed.
    Complete = 11,
    /// A fault was injected or healed.
    Nemesis = 12,
    /// The run moved to another phase.
    Phase = 13,
    /// A checker found a violation.
    Violation = 14,
    /// A durable replica's disk: a persist made durable, a crash's loss, a
    /// restart from disk, an injected disk fault.
    Disk = 15,
    /// A connection of the node layer: a connect, its outcome, a close.
    Link = 16,
}

impl TraceKind {
    fn label(self) -> &'static str {
        match self {
            TraceKind::Send => "send",
            TraceKind::Deliver => "deliver",
            TraceKind::Drop => "drop",
            TraceKind::Duplicate => "dup",
            TraceKind::Corrupt => "corrupt",
            TraceKind::Reject => "reject",
            TraceKind::Timeout => "timeout",
            TraceKind::Disk => "disk",
            TraceKind::Link => "link",
            TraceKind::View => "view",
            TraceKind::Commit => "commit",
            TraceKind::Invoke => "invoke",
            TraceKind::Complete => "complete",
            TraceKind::Nemesis => "nemesis",
            TraceKind::Phase => "phase",
            TraceKind::Violation => "VIOLATION",
        }
    }
}

/// 64-bit FNV-1a: tiny, deterministic on every platform and version, unlike
/// `std`'s `DefaultHasher`, whose algorithm is unspecified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Feeds a number.
    pub fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The hash of `bytes` alone.
    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Fnv64::default();
        h.write(bytes);
        h.finish()
    }
}

/// The event log of one run.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    hash: Fnv64,
    events: u64,
    /// Readable lines, kept only when tracing was asked for (formatting every
    /// event would slow batches of seeds down for nothing).
    lines: Option<Vec<String>>,
}

impl Trace {
    /// A trace that keeps readable lines when `readable`.
    pub fn new(readable: bool) -> Trace {
        Trace {
            hash: Fnv64::default(),
            events: 0,
            lines: readable.then(Vec::new),
        }
    }

    /// Records an event at global time `time_ns`. `numbers` identify it for
    /// the hash (nodes, numbers, a hash of the frame); `detail` renders it and
    /// runs only when readable lines are kept.
    pub fn record(
        &mut self,
        time_ns: u64,
        kind: TraceKind,
        numbers: &[u64],
        detail: impl FnOnce() -> String,
    ) {
        self.events += 1;
        self.hash.write_u64(time_ns);
        self.hash.write(&[kind as u8]);
        for &n in numbers {
            self.hash.write_u64(n);
        }
        if let Some(lines) = &mut self.lines {
            lines.push(format!(
                "{} {:<9} {}",
                Seconds(time_ns),
                kind.label(),
                detail()
            ));
        }
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    /// The number of events recorded.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// The readable lines, if kept.
    pub fn lines(&self) -> Option<&[String]> {
        self.lines.as_deref()
    }

    /// Takes the readable lines out.
    pub fn take_lines(&mut self) -> Vec<String> {
        self.lines.take().unwrap_or_default()
    }
}

/// Nanoseconds shown as seconds with nine decimals.
#[derive(Clone, Copy, Debug)]
pub struct Seconds(pub u64);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>4}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// A one-line summary of a message for the trace.
pub fn describe(message: &Message) -> String {
    match message {
        Message::Reconfiguration(m) => format!(
            "Reconfiguration client {:x} req {} epoch {} to {:?}",
            short_id(m.client_id),
            m.request_number,
            m.epoch,
            numbers(&m.members)
        ),
        Message::StartEpoch(m) => format!(
            "StartEpoch e{} after op {} members {:?} from m{} (v{})",
            m.epoch,
            m.op_number,
            numbers(&m.members),
            m.sender,
            m.view
        ),
        Message::EpochStarted(m) => format!("EpochStarted e{} from m{}", m.epoch, m.member),
        Message::Request(m) => format!(
            "Request client {:x} req {} ({} bytes)",
            short_id(m.client_id),
            m.request_number,
            m.op.len()
        ),
        Message::Prepare(m) => format!(
            "Prepare v{} ops {}..={} commit {} ({} entries)",
            m.view,
            m.entries.first().map_or(0, |e| e.op_number),
            m.entries.last().map_or(0, |e| e.op_number),
            m.commit_number,
            m.entries.len()
        ),
        Message::PrepareOk(m) => format!(
            "PrepareOk v{} op {} from r{}",
            m.view, m.op_number, m.replica
        ),
        Message::Commit(m) => format!(
            "Commit v{} commit {} op {}",
            m.view, m.commit_number, m.op_number
        ),
        Message::Reply(m) => format!(
            "Reply v{} client {:x} req {}",
            m.view,
            short_id(m.client_id),
            m.request_number
        ),
        Message::StartViewChange(m) => format!("StartViewChange v{} from r{}", m.view, m.replica),
        Message::DoViewChange(m) => format!(
            "DoViewChange v{} lnv {} op {} commit {} ({} entries) from r{}",
            m.view,
            m.last_normal_view,
            m.op_number,
            m.commit_number,
            m.log.len(),
            m.replica
        ),
        Message::StartView(m) => format!(
            "StartView v{} op {} commit {} ({} entries)",
            m.view,
            m.op_number,
            m.commit_number,
            m.log.len()
        ),
        Message::GetState(m) => format!(
            "GetState v{} after op {} from r{}",
            m.view, m.op_number, m.replica
        ),
        Message::NewState(m) => format!(
            "NewState v{} op {} commit {} ({} entries) from r{}",
            m.view,
            m.op_number,
            m.commit_number,
            m.log.len(),
            m.replica
        ),
        Message::Recovery(m) => format!(
            "Recovery from r{} nonce {:x} incarnation {}",
            m.replica, m.nonce, m.incarnation
        ),
        Message::RecoveryResponse(m) => format!(
            "RecoveryResponse v{} {:?} op {} commit {} cv {:?} from r{}",
            m.view, m.status, m.op_number, m.commit_number, m.crash_vector, m.replica
        ),
        Message::GetCheckpointTree(m) => format!(
            "GetCheckpointTree level {} ({} parents) from r{}",
            m.level,
            m.parents.len(),
            m.replica
        ),
        Message::CheckpointTree(m) => format!(
            "CheckpointTree op {} level {} ({} digests) from r{}",
            m.summary.op_number,
            m.level,
            m.digests.len(),
            m.replica
        ),
        Message::GetCheckpointPages(m) => format!(
            "GetCheckpointPages ({} pages, offset {}) from r{}",
            m.pages.len(),
            m.offset,
            m.replica
        ),
        Message::ReadRequest(m) => format!(
            "ReadRequest client {:x} req {} min op {}",
            short_id(m.client_id),
            m.request_number,
            m.op_number_min
        ),
        Message::CheckpointPages(m) => format!(
            "CheckpointPages op {} ({} chunks, {} bytes) from r{}",
            m.summary.op_number,
            m.chunks.len(),
            m.chunks.iter().map(|c| c.data.len()).sum::<usize>(),
            m.replica
        ),
    }
}

/// The low 16 bits of a client id: enough to tell a run's clients apart in
/// a trace.
fn short_id(client_id: u128) -> u16 {
    (client_id & 0xFFFF) as u16
}

/// Member ids as the numbers a trace line shows.
fn numbers(members: &[vr_core::MemberId]) -> Vec<u8> {
    members.iter().map(|m| m.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field_and_lines_are_optional() {
        let mut a = Trace::new(false);
        let mut b = Trace::new(true);
        a.record(5, TraceKind::Deliver, &[1, 2], || "x".into());
        b.record(5, TraceKind::Deliver, &[1, 2], || "x".into());
        assert_eq!(a.hash(), b.hash());
        assert!(a.lines().is_none());
        assert_eq!(b.lines().map(<[String]>::len), Some(1));
        let mut c = Trace::new(false);
        c.record(5, TraceKind::Deliver, &[1, 3], || "x".into());
        assert_ne!(a.hash(), c.hash());
        assert_eq!(Seconds(1_500_000_000).to_string(), "   1.500000000");
    }
}
