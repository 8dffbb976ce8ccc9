//! The replicated service of the simulator: a small deterministic key-value
//! store implementing [`vr_core::Service`], with its own binary operation
//! encoding.
//!
//! Keys are numbered `0..key_count` and come in two kinds so that every
//! operation the workload issues is well defined in the checker's model (a
//! register holding nil or a string, where `incr` on a non-integer is
//! illegal): even keys are *counters* (read, write of an integer, incr) and
//! odd keys are *strings* (read, write, append).
//!
//! Every operation carries a [`Tag`], the issuing client's index and its
//! request-number, so that the service can tell when the same client request
//! is executed twice: vr-core promises exactly-once execution through its
//! client table, and the service checks that promise independently.
//!
//! The state is exposed as pages for checkpoints (§5.1) and their transfer
//! (§5.2): values by key group, executed tags by client group, the last
//! op-number, and optional *ballast*: extra deterministic pages, one of which
//! each state-changing operation mutates, so that a checkpoint is large
//! enough for its transfer to take many chunks. The service tracks the pages
//! it changes (`take_changed_pages`), so a checkpoint rereads only those.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use vr_core::Service;

/// Identifies one client request: (client index in the simulation, request-number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    /// The client's index in the simulation (not its 128-bit id).
    pub client: u32,
    /// The request-number the client proxy gave the request.
    pub request_number: u64,
}

/// A key-value operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Returns the key's value.
    Read,
    /// Sets the key's value.
    Write(String),
    /// Adds to a counter key; returns the new value.
    Incr(i64),
    /// Appends to a string key.
    Append(String),
}

/// An operation on a key, tagged with the request that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedOp {
    /// Which request this is.
    pub tag: Tag,
    /// The key index.
    pub key: u8,
    /// The operation.
    pub op: KvOp,
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// A read: the value, `None` for a key never written.
    Value(Option<String>),
    /// A write or append completed.
    Done,
    /// An incr: the counter's new value.
    Counter(i64),
    /// The service could not execute the operation (undecodable, or an incr
    /// on a value that is not an integer). The workload never issues such an
    /// operation, so the simulator reports this as a violation.
    Error(String),
}

const OP_READ: u8 = 1;
const OP_WRITE: u8 = 2;
const OP_INCR: u8 = 3;
const OP_APPEND: u8 = 4;
/// kind (1) + key (1) + client (4) + request-number (8).
const OP_HEADER_SIZE: usize = 14;

const RESULT_NIL: u8 = 0;
const RESULT_VALUE: u8 = 1;
const RESULT_DONE: u8 = 2;
const RESULT_COUNTER: u8 = 3;
const RESULT_ERROR: u8 = 0xFF;

/// The name of key `index` in histories.
pub fn key_name(index: u8) -> String {
    format!("k{index}")
}

/// Whether key `index` is a counter (even) rather than a string (odd) key.
pub fn is_counter_key(index: u8) -> bool {
    index & 1 == 0
}

impl TaggedOp {
    /// The operation as request bytes:
    /// `kind u8, key u8, client u32 LE, request-number u64 LE, argument`,
    /// where the argument is the string's UTF-8 bytes (write, append), an
    /// `i64` LE (incr) or nothing (read).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, arg): (u8, Vec<u8>) = match &self.op {
            KvOp::Read => (OP_READ, Vec::new()),
            KvOp::Write(s) => (OP_WRITE, s.as_bytes().to_vec()),
            KvOp::Incr(d) => (OP_INCR, d.to_le_bytes().to_vec()),
            KvOp::Append(s) => (OP_APPEND, s.as_bytes().to_vec()),
        };
        let mut out = Vec::with_capacity(OP_HEADER_SIZE + arg.len());
        out.push(kind);
        out.push(self.key);
        out.extend_from_slice(&self.tag.client.to_le_bytes());
        out.extend_from_slice(&self.tag.request_number.to_le_bytes());
        out.extend_from_slice(&arg);
        out
    }

    /// Decodes [`TaggedOp::encode`]'s bytes; `None` if they are not an operation.
    pub fn decode(bytes: &[u8]) -> Option<TaggedOp> {
        if bytes.len() < OP_HEADER_SIZE {
            return None;
        }
        let client = u32::from_le_bytes(bytes[2..6].try_into().ok()?);
        let request_number = u64::from_le_bytes(bytes[6..14].try_into().ok()?);
        let arg = &bytes[OP_HEADER_SIZE..];
        let text = || String::from_utf8(arg.to_vec()).ok();
        let op = match bytes[0] {
            OP_READ if arg.is_empty() => KvOp::Read,
            OP_WRITE => KvOp::Write(text()?),
            OP_INCR => KvOp::Incr(i64::from_le_bytes(arg.try_into().ok()?)),
            OP_APPEND => KvOp::Append(text()?),
            _ => return None,
        };
        Some(TaggedOp {
            tag: Tag {
                client,
                request_number,
            },
            key: bytes[1],
            op,
        })
    }
}

impl KvResult {
    /// The result as reply bytes: a kind byte, then the value's UTF-8 bytes,
    /// an `i64` LE or an error text.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            KvResult::Value(None) => vec![RESULT_NIL],
            KvResult::Value(Some(s)) => [&[RESULT_VALUE][..], s.as_bytes()].concat(),
            KvResult::Done => vec![RESULT_DONE],
            KvResult::Counter(n) => [&[RESULT_COUNTER][..], &n.to_le_bytes()[..]].concat(),
            KvResult::Error(why) => [&[RESULT_ERROR][..], why.as_bytes()].concat(),
        }
    }

    /// Decodes [`KvResult::encode`]'s bytes; undecodable bytes become an
    /// [`KvResult::Error`].
    pub fn decode(bytes: &[u8]) -> KvResult {
        let bad = || KvResult::Error(format!("undecodable result {bytes:?}"));
        let Some((&kind, rest)) = bytes.split_first() else {
            return bad();
        };
        match kind {
            RESULT_NIL if rest.is_empty() => KvResult::Value(None),
            RESULT_VALUE => match String::from_utf8(rest.to_vec()) {
                Ok(s) => KvResult::Value(Some(s)),
                Err(_) => bad(),
            },
            RESULT_DONE if rest.is_empty() => KvResult::Done,
            RESULT_COUNTER => match rest.try_into() {
                Ok(b) => KvResult::Counter(i64::from_le_bytes(b)),
                Err(_) => bad(),
            },
            RESULT_ERROR => KvResult::Error(String::from_utf8_lossy(rest).into_owned()),
            _ => bad(),
        }
    }
}

/// Something the service saw that must never happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceFault {
    /// The request `tag` was executed a second time, at `op_number`.
    Duplicate {
        /// The request executed twice.
        tag: Tag,
        /// Where it was executed first.
        first_op_number: u64,
        /// Where it was executed again.
        op_number: u64,
    },
    /// Operations were executed out of op-number order (or one twice).
    OutOfOrder {
        /// The op-number executed before.
        after: u64,
        /// The op-number executed.
        got: u64,
    },
    /// The operation could not be executed.
    Rejected {
        /// Its op-number.
        op_number: u64,
        /// Why.
        reason: String,
    },
}

/// The key-value store. Every replica runs one.
#[derive(Clone, Debug, Default)]
pub struct Kv {
    values: BTreeMap<u8, String>,
    /// Every request executed, with its op-number: the exactly-once check.
    executed: BTreeMap<Tag, u64>,
    /// The op-number of the last executed operation.
    last_op_number: u64,
    /// Per ballast page, a stamp from which its bytes derive.
    ballast: Vec<u64>,
    /// Bytes of each ballast page (at least 8: the stamp).
    ballast_page_size: usize,
    /// Pages changed since the core last took them.
    changed: BTreeSet<u64>,
    /// Operations executed since the simulator last took them:
    /// `(op_number, op bytes)`. The simulator compares them across
    /// replicas (agreement) even when the log entries are gone, dropped
    /// by a checkpoint within the same step.
    journal: RefCell<Vec<(u64, Vec<u8>)>>,
    faults: Vec<ServiceFault>,
}

impl Kv {
    /// An empty store without ballast.
    pub fn new() -> Kv {
        Kv::default()
    }

    /// An empty store with `pages` ballast pages of `page_size` bytes
    /// (rounded up to a multiple of 8).
    pub fn with_ballast(pages: u32, page_size: u32) -> Kv {
        Kv {
            ballast: vec![0; pages as usize],
            ballast_page_size: (page_size as usize).max(8).next_multiple_of(8),
            ..Kv::default()
        }
    }

    /// The operations executed since the last call, in order.
    pub fn take_journal(&self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut *self.journal.borrow_mut())
    }

    /// A digest of every page: equal for equal states.
    pub fn state_digest(&self) -> u64 {
        let mut hash = crate::trace::Fnv64::default();
        let mut page = Vec::new();
        for index in 0..self.page_count() {
            page.clear();
            self.read_page(index, &mut page);
            hash.write_u64(index);
            hash.write_u64(page.len() as u64);
            hash.write(&page);
        }
        hash.finish()
    }

    /// Bytes of all pages together (without reading them all).
    pub fn ballast_bytes(&self) -> u64 {
        (self.ballast.len() * self.ballast_page_size) as u64
    }

    /// The current values (keys never written are absent).
    pub fn values(&self) -> &BTreeMap<u8, String> {
        &self.values
    }

    /// The number of requests executed.
    pub fn executed_count(&self) -> usize {
        self.executed.len()
    }

    /// The requests executed.
    pub fn executed_tags(&self) -> BTreeSet<Tag> {
        self.executed.keys().copied().collect()
    }

    /// Every fault seen, in order. The simulator reads the new ones after
    /// each step (the replica owns the service, so it cannot take them).
    pub fn faults(&self) -> &[ServiceFault] {
        &self.faults
    }

    fn apply(&mut self, key: u8, op: &KvOp) -> Result<KvResult, String> {
        Ok(match op {
            KvOp::Read => KvResult::Value(self.values.get(&key).cloned()),
            KvOp::Write(s) => {
                self.values.insert(key, s.clone());
                KvResult::Done
            }
            KvOp::Append(s) => {
                self.values.entry(key).or_default().push_str(s);
                KvResult::Done
            }
            KvOp::Incr(d) => {
                let current = match self.values.get(&key).map(String::as_str) {
                    None | Some("") => 0,
                    Some(v) => v
                        .parse::<i64>()
                        .map_err(|_| format!("incr on the non-integer value {v:?}"))?,
                };
                let new = current
                    .checked_add(*d)
                    .ok_or_else(|| "incr overflows".to_string())?;
                self.values.insert(key, new.to_string());
                KvResult::Counter(new)
            }
        })
    }
}

/// The first ballast page.
const BALLAST_FIRST: u64 = 2 * PAGE_GROUPS + 1;

/// splitmix64: a stamp's successor, and the filler of ballast pages.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Kv {
    /// A state-changing operation mutates one ballast page, chosen from its tag.
    fn mutate_ballast(&mut self, tag: Tag) {
        if self.ballast.is_empty() {
            return;
        }
        let h = mix(u64::from(tag.client) << 40 ^ tag.request_number);
        let page = (h % self.ballast.len() as u64) as usize;
        self.ballast[page] = mix(self.ballast[page] ^ h);
        self.changed.insert(BALLAST_FIRST + page as u64);
    }
}

impl Service for Kv {
    fn execute(&mut self, op_number: u64, op: &[u8]) -> Vec<u8> {
        self.journal.borrow_mut().push((op_number, op.to_vec()));
        self.changed.insert(2 * PAGE_GROUPS);
        // Gaps are legitimate: the core skips log entries that repeat an
        // executed request (its client table says so) without an upcall.
        if op_number <= self.last_op_number {
            self.faults.push(ServiceFault::OutOfOrder {
                after: self.last_op_number,
                got: op_number,
            });
        }
        self.last_op_number = op_number;
        let Some(tagged) = TaggedOp::decode(op) else {
            let reason = format!("undecodable operation {op:?}");
            self.faults.push(ServiceFault::Rejected {
                op_number,
                reason: reason.clone(),
            });
            return KvResult::Error(reason).encode();
        };
        if let Some(&first_op_number) = self.executed.get(&tagged.tag) {
            // Executed again: report it, and do not apply it a second time so
            // that later checks see the state the protocol should have made.
            self.faults.push(ServiceFault::Duplicate {
                tag: tagged.tag,
                first_op_number,
                op_number,
            });
            return KvResult::Error("duplicate".into()).encode();
        }
        self.executed.insert(tagged.tag, op_number);
        self.changed
            .insert(PAGE_GROUPS + u64::from(tagged.tag.client) % PAGE_GROUPS);
        self.changed.insert(u64::from(tagged.key) % PAGE_GROUPS);
        if tagged.op != KvOp::Read {
            self.mutate_ballast(tagged.tag);
        }
        match self.apply(tagged.key, &tagged.op) {
            Ok(result) => result.encode(),
            Err(reason) => {
                self.faults.push(ServiceFault::Rejected {
                    op_number,
                    reason: reason.clone(),
                });
                KvResult::Error(reason).encode()
            }
        }
    }

    /// Pages: one per key (by key index), one per client's executed tags
    /// (by client index, modulo [`PAGE_GROUPS`]), the last op-number, then
    /// the ballast. The faults and the journal are the simulator's
    /// observations, not state.
    fn page_count(&self) -> u64 {
        BALLAST_FIRST + self.ballast.len() as u64
    }

    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        if index < PAGE_GROUPS {
            for (&key, value) in &self.values {
                if u64::from(key) % PAGE_GROUPS == index {
                    out.push(key);
                    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    out.extend_from_slice(value.as_bytes());
                }
            }
        } else if index < 2 * PAGE_GROUPS {
            for (tag, &op_number) in &self.executed {
                if u64::from(tag.client) % PAGE_GROUPS == index - PAGE_GROUPS {
                    out.extend_from_slice(&tag.client.to_le_bytes());
                    out.extend_from_slice(&tag.request_number.to_le_bytes());
                    out.extend_from_slice(&op_number.to_le_bytes());
                }
            }
        } else if index == 2 * PAGE_GROUPS {
            out.extend_from_slice(&self.last_op_number.to_le_bytes());
        } else if let Some(&stamp) = self.ballast.get((index - BALLAST_FIRST) as usize) {
            // The stamp, then filler derived from it and the page index.
            let end = out.len() + self.ballast_page_size;
            out.extend_from_slice(&stamp.to_le_bytes());
            let mut state = stamp ^ index.rotate_left(32);
            while out.len() < end {
                state = mix(state);
                out.extend_from_slice(&state.to_le_bytes());
            }
        }
    }

    /// Only [`KvOp::Read`] is read-only: a leased read at the primary or a
    /// backup read answers it with [`Service::query`] (§6).
    fn is_read_only(&self, op: &[u8]) -> bool {
        TaggedOp::decode(op).is_some_and(|t| t.op == KvOp::Read)
    }

    /// The key's value, as `execute` of the same Read would return it, but
    /// without recording the request: a query is not an execution (the
    /// exactly-once check is about the log).
    fn query(&self, op: &[u8]) -> Vec<u8> {
        match TaggedOp::decode(op) {
            Some(TaggedOp {
                key,
                op: KvOp::Read,
                ..
            }) => KvResult::Value(self.values.get(&key).cloned()).encode(),
            _ => KvResult::Error(format!("query of a non-read operation {op:?}")).encode(),
        }
    }

    fn take_changed_pages(&mut self, changed: &mut Vec<u64>) -> bool {
        changed.extend(std::mem::take(&mut self.changed));
        true
    }

    fn install_pages(&mut self, pages: &[&[u8]]) {
        self.values.clear();
        self.executed.clear();
        for (index, page) in pages.iter().enumerate() {
            let index = index as u64;
            let mut rest: &[u8] = page;
            if index < PAGE_GROUPS {
                while let Some((&key, tail)) = rest.split_first() {
                    let Some((len, tail)) = tail.split_first_chunk::<4>() else {
                        break;
                    };
                    let len = u32::from_le_bytes(*len) as usize;
                    let Some((value, tail)) = tail.split_at_checked(len) else {
                        break;
                    };
                    self.values
                        .insert(key, String::from_utf8_lossy(value).into_owned());
                    rest = tail;
                }
            } else if index < 2 * PAGE_GROUPS {
                while let Some((record, tail)) = rest.split_first_chunk::<20>() {
                    let tag = Tag {
                        client: u32::from_le_bytes(record[..4].try_into().unwrap_or_default()),
                        request_number: u64::from_le_bytes(
                            record[4..12].try_into().unwrap_or_default(),
                        ),
                    };
                    let op_number = u64::from_le_bytes(record[12..].try_into().unwrap_or_default());
                    self.executed.insert(tag, op_number);
                    rest = tail;
                }
            } else if index == 2 * PAGE_GROUPS {
                if let Some(bytes) = rest.first_chunk::<8>() {
                    self.last_op_number = u64::from_le_bytes(*bytes);
                }
            } else if let Some(stamp) = self.ballast.get_mut((index - BALLAST_FIRST) as usize) {
                *stamp = rest
                    .first_chunk::<8>()
                    .map_or(0, |b| u64::from_le_bytes(*b));
            }
        }
        self.changed.clear();
    }
}

/// Keys and clients are spread over this many pages each.
pub const PAGE_GROUPS: u64 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_read_only_and_query_answers_like_execute() {
        let mut kv = Kv::new();
        let write = TaggedOp {
            tag: Tag {
                client: 1,
                request_number: 1,
            },
            key: 3,
            op: KvOp::Write("w1.1".into()),
        };
        let read = TaggedOp {
            tag: Tag {
                client: 2,
                request_number: 1,
            },
            key: 3,
            op: KvOp::Read,
        };
        assert!(!kv.is_read_only(&write.encode()));
        assert!(kv.is_read_only(&read.encode()));
        assert!(!kv.is_read_only(&[]));
        kv.execute(1, &write.encode());
        let queried = kv.query(&read.encode());
        assert_eq!(
            KvResult::decode(&queried),
            KvResult::Value(Some("w1.1".into()))
        );
        assert_eq!(kv.executed_count(), 1, "a query is not an execution");
        assert_eq!(kv.execute(2, &read.encode()), queried);
    }

    fn tagged(op: KvOp) -> TaggedOp {
        TaggedOp {
            tag: Tag {
                client: 3,
                request_number: 9,
            },
            key: 1,
            op,
        }
    }

    #[test]
    fn ops_and_results_round_trip() {
        for op in [
            KvOp::Read,
            KvOp::Write("w".into()),
            KvOp::Incr(-4),
            KvOp::Append("a;".into()),
        ] {
            let t = tagged(op);
            assert_eq!(TaggedOp::decode(&t.encode()), Some(t));
        }
        for r in [
            KvResult::Value(None),
            KvResult::Value(Some("x".into())),
            KvResult::Done,
            KvResult::Counter(-7),
            KvResult::Error("e".into()),
        ] {
            assert_eq!(KvResult::decode(&r.encode()), r);
        }
    }

    #[test]
    fn executes_and_reports_duplicates() {
        let mut kv = Kv::new();
        let incr = TaggedOp {
            tag: Tag {
                client: 0,
                request_number: 1,
            },
            key: 0,
            op: KvOp::Incr(2),
        };
        assert_eq!(
            KvResult::decode(&kv.execute(1, &incr.encode())),
            KvResult::Counter(2)
        );
        assert!(kv.faults().is_empty());
        kv.execute(2, &incr.encode());
        assert_eq!(
            kv.faults(),
            [ServiceFault::Duplicate {
                tag: incr.tag,
                first_op_number: 1,
                op_number: 2
            }]
        );
        assert_eq!(kv.values().get(&0).map(String::as_str), Some("2"));
    }

    fn run_ops(kv: &mut Kv, count: u64) {
        let mut prng = vr_core::prng::Prng::new(5);
        for r in 1..=count {
            let op = crate::workload::next_op(&mut prng, (r % 3) as u32, r, 4);
            kv.execute(r, &op.encode());
        }
    }

    fn pages(kv: &Kv) -> Vec<Vec<u8>> {
        (0..kv.page_count())
            .map(|i| {
                let mut page = Vec::new();
                kv.read_page(i, &mut page);
                page
            })
            .collect()
    }

    #[test]
    fn pages_round_trip_and_track_changes() {
        let mut kv = Kv::with_ballast(64, 1000);
        assert_eq!(kv.page_count(), BALLAST_FIRST + 64);
        let mut changed = Vec::new();
        assert!(kv.take_changed_pages(&mut changed));
        assert!(changed.is_empty());
        let before = pages(&kv);
        assert!(before[BALLAST_FIRST as usize..]
            .iter()
            .all(|p| p.len() == 1000usize.next_multiple_of(8)));
        run_ops(&mut kv, 200);
        assert!(kv.take_changed_pages(&mut changed));
        let after = pages(&kv);
        // Exactly the pages reported changed differ.
        for (i, (old, new)) in before.iter().zip(&after).enumerate() {
            if old != new {
                assert!(changed.contains(&(i as u64)), "page {i} changed unreported");
            }
        }
        assert!(
            changed.iter().any(|&p| p >= BALLAST_FIRST),
            "writes touch the ballast"
        );
        // Installing the pages gives the same state.
        let mut copy = Kv::with_ballast(64, 1000);
        let refs: Vec<&[u8]> = after.iter().map(Vec::as_slice).collect();
        copy.install_pages(&refs);
        assert_eq!(copy.state_digest(), kv.state_digest());
        assert_eq!(copy.values(), kv.values());
        assert_eq!(copy.executed_tags(), kv.executed_tags());
        assert_eq!(pages(&copy), after);
        assert_ne!(Kv::with_ballast(64, 1000).state_digest(), kv.state_digest());
        // The journal has every execution, once.
        let journal = kv.take_journal();
        assert_eq!(journal.len(), 200);
        assert!(kv.take_journal().is_empty());
    }
}
