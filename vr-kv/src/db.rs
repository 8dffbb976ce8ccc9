//! The keyspace: keys, their typed values, their expiry, and the pages the
//! state is shown as for checkpoints (§5.1–5.2).
//!
//! # Pages
//!
//! A write must change few pages whatever the size of the value it
//! touches, so a collection is not one page:
//!
//! - [`KEY_PAGES`] *key pages*: the keys, split by an FNV-1a hash of the
//!   key. A key's record holds its type, expiry, WATCH version and, for a
//!   string, the value; for a collection, nothing more.
//! - [`ELEMENT_PAGES`] *element pages*: a collection is split into
//!   *parts*: a hash, set or sorted set by an FNV-1a hash of the field or
//!   member into [`PARTS`] parts, a list into chunks of about
//!   [`LIST_CHUNK`] elements. Part `(key, part)` lives on element page
//!   `fnv(key, part) % ELEMENT_PAGES`. Writing one field changes the key's
//!   page and one element page.
//! - one *meta page*: the op-number, the log time and the write sequence.
//!
//! Every replica that executed the same operations produces the same
//! pages byte for byte: maps are ordered, hashes are fixed functions.
//!
//! # Expiry
//!
//! `now` is the log time ([`crate::store`]): a key whose deadline is at or
//! before it does not exist for reads, and is deleted when a write touches
//! it or when a sweep reaches it ([`Db::sweep`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Pages holding keys.
pub const KEY_PAGES: u64 = 1024;
/// Pages holding the parts of collections.
pub const ELEMENT_PAGES: u64 = 4096;
/// The parts a hash, set or sorted set is split into.
pub const PARTS: u64 = 1024;
/// The usual number of elements in one chunk of a list (`LINSERT` may let
/// a chunk grow to twice this before it is split).
pub const LIST_CHUNK: usize = 128;
/// The distance between the positions of consecutive list chunks made by
/// pushes, so a split can take a position in between.
const CHUNK_GAP: i64 = 1 << 32;

/// FNV-1a, 64 bits: the same on every machine and every run.
pub fn fnv(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The key page of `key`.
pub fn key_page(key: &[u8]) -> u64 {
    fnv(&[key]) % KEY_PAGES
}

/// The element page of part `part` of the collection at `key`.
pub fn element_page(key: &[u8], part: i64) -> u64 {
    fnv(&[key, &part.to_le_bytes()]) % ELEMENT_PAGES
}

/// The part of a hash, set or sorted set that `field` belongs to.
pub fn part_of(field: &[u8]) -> i64 {
    (fnv(&[field]) % PARTS) as i64
}

/// A score of a sorted set, ordered as Redis orders them (never NaN;
/// `-0.0` is stored as `0.0`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Score) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Score) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A map split into parts by the hash of its keys, each part tracked for
/// the pages: the body of hashes, sets and sorted sets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parted<V> {
    parts: BTreeMap<i64, BTreeMap<Vec<u8>, V>>,
    len: usize,
    dirty: BTreeSet<i64>,
}

impl<V> Parted<V> {
    /// The number of fields.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `field`.
    pub fn get(&self, field: &[u8]) -> Option<&V> {
        self.parts.get(&part_of(field))?.get(field)
    }

    /// The value of `field`, to change.
    pub fn get_mut(&mut self, field: &[u8]) -> Option<&mut V> {
        let part = part_of(field);
        let value = self.parts.get_mut(&part)?.get_mut(field)?;
        self.dirty.insert(part);
        Some(value)
    }

    /// Sets `field`; returns the old value.
    pub fn insert(&mut self, field: Vec<u8>, value: V) -> Option<V> {
        let part = part_of(&field);
        self.dirty.insert(part);
        let old = self.parts.entry(part).or_default().insert(field, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `field`; returns its value.
    pub fn remove(&mut self, field: &[u8]) -> Option<V> {
        let part = part_of(field);
        let map = self.parts.get_mut(&part)?;
        let old = map.remove(field)?;
        if map.is_empty() {
            self.parts.remove(&part);
        }
        self.dirty.insert(part);
        self.len -= 1;
        Some(old)
    }

    /// Every field, in part order then byte order: the same on every
    /// replica.
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &V)> {
        self.parts.values().flat_map(|m| m.iter())
    }

    /// The `n`-th field in [`Parted::iter`] order.
    pub fn nth(&self, mut n: usize) -> Option<(&Vec<u8>, &V)> {
        for map in self.parts.values() {
            if n < map.len() {
                return map.iter().nth(n);
            }
            n -= map.len();
        }
        None
    }

    /// The fields of part `part`.
    pub fn part(&self, part: i64) -> impl Iterator<Item = (&Vec<u8>, &V)> {
        self.parts.get(&part).into_iter().flatten()
    }

    fn part_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.parts.keys().copied()
    }
}

/// A sorted set: members by name (in parts, for the pages) and by score.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ZSet {
    /// Member to score.
    pub members: Parted<f64>,
    /// (score, member), Redis's order.
    pub order: BTreeSet<(Score, Vec<u8>)>,
}

impl ZSet {
    /// Sets `member`'s score; returns the old one.
    pub fn insert(&mut self, member: Vec<u8>, score: f64) -> Option<f64> {
        let score = if score == 0.0 { 0.0 } else { score };
        let old = self.members.insert(member.clone(), score);
        if let Some(old) = old {
            self.order.remove(&(Score(old), member.clone()));
        }
        self.order.insert((Score(score), member));
        old
    }

    /// Removes `member`; returns its score.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let old = self.members.remove(member)?;
        self.order.remove(&(Score(old), member.to_vec()));
        Some(old)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The 0-based rank of `member` in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = *self.members.get(member)?;
        Some(self.order.range(..(Score(score), member.to_vec())).count())
    }
}

/// A list: chunks in position order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct List {
    chunks: BTreeMap<i64, VecDeque<Vec<u8>>>,
    len: usize,
    dirty: BTreeSet<i64>,
}

impl List {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` at the head.
    pub fn push_front(&mut self, value: Vec<u8>) {
        let pos = match self.chunks.first_key_value() {
            Some((&pos, chunk)) if chunk.len() < LIST_CHUNK => pos,
            Some((&pos, _)) => pos.saturating_sub(CHUNK_GAP),
            None => 0,
        };
        self.chunks.entry(pos).or_default().push_front(value);
        self.dirty.insert(pos);
        self.len += 1;
        self.renumber_if_crowded(pos);
    }

    /// Adds `value` at the tail.
    pub fn push_back(&mut self, value: Vec<u8>) {
        let pos = match self.chunks.last_key_value() {
            Some((&pos, chunk)) if chunk.len() < LIST_CHUNK => pos,
            Some((&pos, _)) => pos.saturating_add(CHUNK_GAP),
            None => 0,
        };
        self.chunks.entry(pos).or_default().push_back(value);
        self.dirty.insert(pos);
        self.len += 1;
        self.renumber_if_crowded(pos);
    }

    /// Removes the head element.
    pub fn pop_front(&mut self) -> Option<Vec<u8>> {
        let mut entry = self.chunks.first_entry()?;
        let pos = *entry.key();
        let value = entry.get_mut().pop_front();
        if entry.get().is_empty() {
            entry.remove();
        }
        self.dirty.insert(pos);
        self.len -= 1;
        value
    }

    /// Removes the tail element.
    pub fn pop_back(&mut self) -> Option<Vec<u8>> {
        let mut entry = self.chunks.last_entry()?;
        let pos = *entry.key();
        let value = entry.get_mut().pop_back();
        if entry.get().is_empty() {
            entry.remove();
        }
        self.dirty.insert(pos);
        self.len -= 1;
        value
    }

    /// Elements from index `start` on, in order.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &Vec<u8>> {
        let mut offset = 0;
        let mut first = None;
        for (&pos, chunk) in &self.chunks {
            if start < offset + chunk.len() {
                first = Some((pos, start - offset));
                break;
            }
            offset += chunk.len();
        }
        let within = first.map_or(0, |(_, w)| w);
        first
            .into_iter()
            .flat_map(move |(pos, _)| self.chunks.range(pos..))
            .flat_map(|(_, c)| c.iter())
            .skip(within)
    }

    /// Every element, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Vec<u8>> {
        self.chunks.values().flat_map(|c| c.iter())
    }

    /// The chunk position and index within it of element `i`.
    fn locate(&self, i: usize) -> Option<(i64, usize)> {
        let mut offset = 0;
        for (&pos, chunk) in &self.chunks {
            if i < offset + chunk.len() {
                return Some((pos, i - offset));
            }
            offset += chunk.len();
        }
        None
    }

    /// Element `i`.
    pub fn get(&self, i: usize) -> Option<&Vec<u8>> {
        let (pos, at) = self.locate(i)?;
        self.chunks.get(&pos)?.get(at)
    }

    /// Replaces element `i`; false if out of range.
    pub fn set(&mut self, i: usize, value: Vec<u8>) -> bool {
        let Some((pos, at)) = self.locate(i) else {
            return false;
        };
        if let Some(slot) = self.chunks.get_mut(&pos).and_then(|c| c.get_mut(at)) {
            *slot = value;
            self.dirty.insert(pos);
            return true;
        }
        false
    }

    /// Inserts `value` before element `i` (`i == len` appends).
    pub fn insert(&mut self, i: usize, value: Vec<u8>) {
        if i >= self.len {
            self.push_back(value);
            return;
        }
        let Some((pos, at)) = self.locate(i) else {
            return;
        };
        let chunk = self.chunks.get_mut(&pos).expect("located chunk exists");
        chunk.insert(at, value);
        self.len += 1;
        self.dirty.insert(pos);
        if chunk.len() > 2 * LIST_CHUNK {
            self.split(pos);
        }
    }

    /// Removes element `i`.
    pub fn remove(&mut self, i: usize) -> Option<Vec<u8>> {
        let (pos, at) = self.locate(i)?;
        let chunk = self.chunks.get_mut(&pos)?;
        let value = chunk.remove(at)?;
        if chunk.is_empty() {
            self.chunks.remove(&pos);
        }
        self.dirty.insert(pos);
        self.len -= 1;
        Some(value)
    }

    /// Splits the chunk at `pos` in two, the second half at a position
    /// between it and the next chunk.
    fn split(&mut self, pos: i64) {
        let next = self
            .chunks
            .range(pos + 1..)
            .next()
            .map_or(pos.saturating_add(CHUNK_GAP), |(&p, _)| p);
        if next.abs_diff(pos) < 2 {
            self.renumber();
            return;
        }
        // No overflow: the midpoint of two i64s, in i128.
        let middle = ((i128::from(pos) + i128::from(next)) / 2) as i64;
        let chunk = self.chunks.get_mut(&pos).expect("chunk to split exists");
        let tail = chunk.split_off(chunk.len() / 2);
        self.chunks.insert(middle, tail);
        self.dirty.insert(middle);
    }

    /// Positions near the end of `i64` (2^31 chunks pushed one way): give
    /// every chunk a fresh position. Every part changes; it is that rare.
    fn renumber_if_crowded(&mut self, pos: i64) {
        if pos == i64::MIN || pos == i64::MAX {
            self.renumber();
        }
    }

    fn renumber(&mut self) {
        let old = std::mem::take(&mut self.chunks);
        for &pos in old.keys() {
            self.dirty.insert(pos);
        }
        let count = old.len() as i64;
        for (i, (_, chunk)) in old.into_iter().enumerate() {
            let pos = (i as i64 - count / 2).saturating_mul(CHUNK_GAP / 4);
            self.dirty.insert(pos);
            self.chunks.insert(pos, chunk);
        }
    }
}

/// A value of one of Redis's types.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string.
    Str(Vec<u8>),
    /// A hash: field to value.
    Hash(Parted<Vec<u8>>),
    /// A list.
    List(List),
    /// A set.
    Set(Parted<()>),
    /// A sorted set.
    ZSet(ZSet),
}

impl Value {
    /// Redis's name of the type, as `TYPE` answers.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    fn type_byte(&self) -> u8 {
        match self {
            Value::Str(_) => 0,
            Value::Hash(_) => 1,
            Value::List(_) => 2,
            Value::Set(_) => 3,
            Value::ZSet(_) => 4,
        }
    }

    fn empty_of(type_byte: u8) -> Option<Value> {
        Some(match type_byte {
            0 => Value::Str(Vec::new()),
            1 => Value::Hash(Parted::default()),
            2 => Value::List(List::default()),
            3 => Value::Set(Parted::default()),
            4 => Value::ZSet(ZSet::default()),
            _ => return None,
        })
    }

    /// Marks every part changed: for a copy, whose parts are all new.
    pub fn mark_all_dirty(&mut self) {
        let parts = self.part_ids();
        match self {
            Value::Str(_) => {}
            Value::Hash(h) => h.dirty.extend(parts),
            Value::List(l) => l.dirty.extend(parts),
            Value::Set(s) => s.dirty.extend(parts),
            Value::ZSet(z) => z.members.dirty.extend(parts),
        }
    }

    /// Whether a collection has no elements left (Redis then deletes it).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::List(l) => l.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
        }
    }

    /// The parts a collection has now.
    fn part_ids(&self) -> Vec<i64> {
        match self {
            Value::Str(_) => Vec::new(),
            Value::Hash(h) => h.part_ids().collect(),
            Value::List(l) => l.chunks.keys().copied().collect(),
            Value::Set(s) => s.part_ids().collect(),
            Value::ZSet(z) => z.members.part_ids().collect(),
        }
    }

    fn take_dirty_parts(&mut self) -> BTreeSet<i64> {
        match self {
            Value::Str(_) => BTreeSet::new(),
            Value::Hash(h) => std::mem::take(&mut h.dirty),
            Value::List(l) => std::mem::take(&mut l.dirty),
            Value::Set(s) => std::mem::take(&mut s.dirty),
            Value::ZSet(z) => std::mem::take(&mut z.members.dirty),
        }
    }

    fn has_part(&self, part: i64) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(h) => h.parts.contains_key(&part),
            Value::List(l) => l.chunks.contains_key(&part),
            Value::Set(s) => s.parts.contains_key(&part),
            Value::ZSet(z) => z.members.parts.contains_key(&part),
        }
    }
}

/// A key's value and what goes with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The value.
    pub value: Value,
    /// The log time (ms since the Unix epoch) at which the key expires.
    /// Change it through [`Db::set_expiry`] only (it is indexed).
    expire_at: Option<u64>,
    /// The write sequence number of the last change, for `WATCH`.
    pub version: u64,
}

impl Entry {
    /// When the key expires, if it does.
    pub fn expire_at(&self) -> Option<u64> {
        self.expire_at
    }
}

/// The keyspace; see the module docs.
#[derive(Clone, Default)]
pub struct Db {
    keys: Vec<BTreeMap<Vec<u8>, Entry>>,
    /// Per key page: the write sequence at which a key of the page was
    /// last deleted, for `WATCH` of a key that is gone.
    tombstones: Vec<u64>,
    len: usize,
    /// (deadline, key) of every key with an expiry.
    expiries: BTreeSet<(u64, Vec<u8>)>,
    /// Which (key, part) each element page holds.
    element_index: Vec<BTreeSet<(Vec<u8>, i64)>>,
    /// The log time: reads see keys whose deadline is after it. A cell, so
    /// a read-only query may look at the state at a later time without
    /// changing it ([`crate::store`]).
    now: std::cell::Cell<u64>,
    /// The sequence number of the command being executed.
    pub seq: u64,
    /// The longest string `APPEND`, `SETRANGE` may build (Redis's
    /// `proto-max-bulk-len`); the same on every replica.
    pub value_bytes_max: usize,
    /// Keys changed since [`Db::settle`].
    touched: BTreeSet<Vec<u8>>,
    /// Pages changed since the last checkpoint, by global page index.
    dirty_pages: BTreeSet<u64>,
}

impl std::fmt::Debug for Db {
    /// A summary: the keyspace itself is too large to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("keys", &self.len)
            .field("expiring", &self.expiries.len())
            .field("now", &self.now.get())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Db {
    fn eq(&self, other: &Db) -> bool {
        self.keys == other.keys
            && self.tombstones == other.tombstones
            && self.now == other.now
            && self.seq == other.seq
    }
}

impl Db {
    /// An empty keyspace.
    pub fn new() -> Db {
        Db {
            keys: vec![BTreeMap::new(); KEY_PAGES as usize],
            tombstones: vec![0; KEY_PAGES as usize],
            element_index: vec![BTreeSet::new(); ELEMENT_PAGES as usize],
            ..Db::default()
        }
    }

    /// The log time, ms since the Unix epoch.
    pub fn now(&self) -> u64 {
        self.now.get()
    }

    /// Sets the time reads and writes see.
    pub fn set_now(&self, now: u64) {
        self.now.set(now);
    }

    /// Whether some key is due at `time`.
    pub fn any_due_at(&self, time: u64) -> bool {
        self.expiries.first().is_some_and(|(at, _)| *at <= time)
    }

    /// Whether `key` is held with a deadline at or before `time`.
    pub fn due_at(&self, key: &[u8], time: u64) -> bool {
        self.keys[key_page(key) as usize]
            .get(key)
            .and_then(|e| e.expire_at)
            .is_some_and(|at| at <= time)
    }

    fn due(&self, entry: &Entry) -> bool {
        entry.expire_at.is_some_and(|at| at <= self.now.get())
    }

    /// The live entry at `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.keys[key_page(key) as usize]
            .get(key)
            .filter(|e| !self.due(e))
    }

    /// The live value at `key`.
    pub fn value(&self, key: &[u8]) -> Option<&Value> {
        self.get(key).map(|e| &e.value)
    }

    /// Whether `key` exists now.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Whether `key` is held but due: the next write to it, or a sweep,
    /// deletes it.
    pub fn is_due(&self, key: &[u8]) -> bool {
        self.keys[key_page(key) as usize]
            .get(key)
            .is_some_and(|e| self.due(e))
    }

    /// Deletes `key` if it is due.
    pub fn expire_if_due(&mut self, key: &[u8]) {
        if self.is_due(key) {
            self.remove(key);
        }
    }

    /// The entry at `key` to change (a due key is deleted first).
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.expire_if_due(key);
        let seq = self.seq;
        let entry = self.keys[key_page(key) as usize].get_mut(key)?;
        entry.version = seq;
        self.touched.insert(key.to_vec());
        Some(entry)
    }

    /// The value at `key` to change.
    pub fn value_mut(&mut self, key: &[u8]) -> Option<&mut Value> {
        self.get_mut(key).map(|e| &mut e.value)
    }

    /// Stores `value` at `key`, with no expiry, replacing whatever was
    /// there. Returns the old entry.
    pub fn insert(&mut self, key: &[u8], mut value: Value) -> Option<Entry> {
        let old = self.remove(key);
        // Every part of the value is new at this key (a renamed or copied
        // collection brings its parts): all go on the key's element pages.
        value.mark_all_dirty();
        let page = key_page(key);
        self.keys[page as usize].insert(
            key.to_vec(),
            Entry {
                value,
                expire_at: None,
                version: self.seq,
            },
        );
        self.len += 1;
        self.touched.insert(key.to_vec());
        self.dirty_pages.insert(page);
        old.filter(|e| !self.due(e))
    }

    /// Stores `value` at `key` keeping its expiry (`SET ... KEEPTTL`).
    pub fn replace_value(&mut self, key: &[u8], value: Value) {
        let expire_at = self.get(key).and_then(|e| e.expire_at);
        self.insert(key, value);
        if expire_at.is_some() {
            self.set_expiry(key, expire_at);
        }
    }

    /// Deletes `key`, live or due; returns its entry.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let page = key_page(key);
        let mut entry = self.keys[page as usize].remove(key)?;
        self.len -= 1;
        self.tombstones[page as usize] = self.seq;
        self.dirty_pages.insert(page);
        if let Some(at) = entry.expire_at {
            self.expiries.remove(&(at, key.to_vec()));
        }
        let mut parts = entry.value.part_ids();
        parts.extend(entry.value.take_dirty_parts());
        for part in parts {
            let element = element_page(key, part);
            self.element_index[element as usize].remove(&(key.to_vec(), part));
            self.dirty_pages.insert(KEY_PAGES + element);
        }
        self.touched.remove(key);
        Some(entry)
    }

    /// Deletes `key` if it is live; returns whether it was.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        self.expire_if_due(key);
        self.remove(key).is_some()
    }

    /// Sets or clears the expiry of a live `key`; false if there is none.
    pub fn set_expiry(&mut self, key: &[u8], at: Option<u64>) -> bool {
        let Some(entry) = self.get_mut(key) else {
            return false;
        };
        let old = std::mem::replace(&mut entry.expire_at, at);
        if let Some(old) = old {
            self.expiries.remove(&(old, key.to_vec()));
        }
        if let Some(at) = at {
            self.expiries.insert((at, key.to_vec()));
        }
        self.dirty_pages.insert(key_page(key));
        true
    }

    /// The sequence number at which `key` last changed, or, if it does
    /// not exist, at which a key of its page was last deleted.
    pub fn version(&self, key: &[u8]) -> u64 {
        match self.keys[key_page(key) as usize].get(key) {
            Some(entry) if !self.due(entry) => entry.version,
            // Due: it is deleted when next touched, which is a change.
            Some(_) => self.seq,
            None => self.tombstones[key_page(key) as usize],
        }
    }

    /// Deletes up to `max` keys whose deadline has passed, earliest first;
    /// returns how many.
    pub fn sweep(&mut self, max: usize) -> usize {
        let mut swept = 0;
        while swept < max {
            let Some((at, key)) = self.expiries.first().cloned() else {
                break;
            };
            if at > self.now.get() {
                break;
            }
            self.remove(&key);
            swept += 1;
        }
        swept
    }

    /// The number of keys held, expired ones not yet deleted included (as
    /// Redis's `DBSIZE`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of keys with an expiry.
    pub fn expiring(&self) -> usize {
        self.expiries.len()
    }

    /// Live keys, in page order then byte order, starting at key page
    /// `from_page`: `(page, key, entry)`.
    pub fn iter_from(&self, from_page: usize) -> impl Iterator<Item = (usize, &Vec<u8>, &Entry)> {
        self.keys
            .iter()
            .enumerate()
            .skip(from_page)
            .flat_map(|(page, map)| map.iter().map(move |(k, e)| (page, k, e)))
            .filter(|(_, _, e)| !self.due(e))
    }

    /// Deletes every key.
    pub fn clear(&mut self) {
        let keys: Vec<Vec<u8>> = self.keys.iter().flat_map(|m| m.keys().cloned()).collect();
        for key in keys {
            self.remove(&key);
        }
    }

    /// After a command: deletes collections it emptied, and brings the
    /// element index and the changed pages up to date.
    pub fn settle(&mut self) {
        for key in std::mem::take(&mut self.touched) {
            let page = key_page(&key);
            let Some(entry) = self.keys[page as usize].get_mut(&key) else {
                continue;
            };
            self.dirty_pages.insert(page);
            let parts = entry.value.take_dirty_parts();
            let empty = entry.value.is_empty_collection();
            for part in parts {
                let element = element_page(&key, part);
                self.dirty_pages.insert(KEY_PAGES + element);
                let index = &mut self.element_index[element as usize];
                if entry.value.has_part(part) {
                    index.insert((key.clone(), part));
                } else {
                    index.remove(&(key.clone(), part));
                }
            }
            if empty {
                self.remove(&key);
            }
        }
    }

    /// Pages changed since the last call, by global index (key pages
    /// first, then element pages).
    pub fn take_dirty_pages(&mut self) -> BTreeSet<u64> {
        std::mem::take(&mut self.dirty_pages)
    }

    /// Appends key page `index`.
    pub fn write_key_page(&self, index: usize, out: &mut Vec<u8>) {
        let Some(map) = self.keys.get(index) else {
            return;
        };
        out.extend_from_slice(&self.tombstones[index].to_le_bytes());
        for (key, entry) in map {
            put_bytes(out, key);
            out.push(entry.value.type_byte());
            out.extend_from_slice(&entry.expire_at.unwrap_or(u64::MAX).to_le_bytes());
            out.extend_from_slice(&entry.version.to_le_bytes());
            if let Value::Str(s) = &entry.value {
                put_bytes(out, s);
            }
        }
    }

    /// Appends element page `index`: per (key, part), in order, the key,
    /// the part, the element count and the elements.
    pub fn write_element_page(&self, index: usize, out: &mut Vec<u8>) {
        let Some(set) = self.element_index.get(index) else {
            return;
        };
        for (key, part) in set {
            let Some(entry) = self.keys[key_page(key) as usize].get(key) else {
                continue;
            };
            put_bytes(out, key);
            out.extend_from_slice(&part.to_le_bytes());
            match &entry.value {
                Value::Str(_) => put_len(out, 0),
                Value::Hash(h) => {
                    let map = h.parts.get(part);
                    put_len(out, map.map_or(0, BTreeMap::len));
                    for (f, v) in map.into_iter().flatten() {
                        put_bytes(out, f);
                        put_bytes(out, v);
                    }
                }
                Value::Set(s) => {
                    let map = s.parts.get(part);
                    put_len(out, map.map_or(0, BTreeMap::len));
                    for f in map.into_iter().flat_map(BTreeMap::keys) {
                        put_bytes(out, f);
                    }
                }
                Value::ZSet(z) => {
                    let map = z.members.parts.get(part);
                    put_len(out, map.map_or(0, BTreeMap::len));
                    for (f, s) in map.into_iter().flatten() {
                        put_bytes(out, f);
                        out.extend_from_slice(&s.to_bits().to_le_bytes());
                    }
                }
                Value::List(l) => {
                    let chunk = l.chunks.get(part);
                    put_len(out, chunk.map_or(0, VecDeque::len));
                    for v in chunk.into_iter().flatten() {
                        put_bytes(out, v);
                    }
                }
            }
        }
    }

    /// Rebuilds the keyspace from key pages and element pages as written
    /// by [`Db::write_key_page`] and [`Db::write_element_page`]. Returns
    /// false if a page did not parse (what parsed is kept).
    pub fn install(&mut self, key_pages: &[&[u8]], element_pages: &[&[u8]]) -> bool {
        let mut db = Db::new();
        db.value_bytes_max = self.value_bytes_max;
        db.now = self.now.clone();
        db.seq = self.seq;
        let mut whole = true;
        for (index, page) in key_pages.iter().enumerate().take(KEY_PAGES as usize) {
            let mut r = PageReader { page, at: 0 };
            if page.is_empty() {
                continue;
            }
            let Some(tombstone) = r.u64() else {
                whole = false;
                continue;
            };
            db.tombstones[index] = tombstone;
            while !r.done() {
                let Some(()) = (|| {
                    let key = r.bytes()?.to_vec();
                    let mut value = Value::empty_of(r.u8()?)?;
                    let expire = r.u64()?;
                    let version = r.u64()?;
                    if let Value::Str(s) = &mut value {
                        *s = r.bytes()?.to_vec();
                    }
                    let expire_at = (expire != u64::MAX).then_some(expire);
                    if let Some(at) = expire_at {
                        db.expiries.insert((at, key.clone()));
                    }
                    db.keys[index].insert(
                        key,
                        Entry {
                            value,
                            expire_at,
                            version,
                        },
                    );
                    db.len += 1;
                    Some(())
                })() else {
                    whole = false;
                    break;
                };
            }
        }
        for (index, page) in element_pages
            .iter()
            .enumerate()
            .take(ELEMENT_PAGES as usize)
        {
            let mut r = PageReader { page, at: 0 };
            while !r.done() {
                let Some(()) = (|| {
                    let key = r.bytes()?.to_vec();
                    let part = r.u64()? as i64;
                    let count = r.u32()?;
                    let entry = db.keys[key_page(&key) as usize].get_mut(&key)?;
                    for _ in 0..count {
                        match &mut entry.value {
                            Value::Str(_) => return None,
                            Value::Hash(h) => {
                                let f = r.bytes()?.to_vec();
                                let v = r.bytes()?.to_vec();
                                h.insert(f, v);
                            }
                            Value::Set(s) => {
                                s.insert(r.bytes()?.to_vec(), ());
                            }
                            Value::ZSet(z) => {
                                let f = r.bytes()?.to_vec();
                                let score = f64::from_bits(r.u64()?);
                                z.insert(f, score);
                            }
                            Value::List(l) => {
                                let v = r.bytes()?.to_vec();
                                l.chunks.entry(part).or_default().push_back(v);
                                l.len += 1;
                            }
                        }
                    }
                    entry.value.take_dirty_parts();
                    db.element_index[index].insert((key, part));
                    Some(())
                })() else {
                    whole = false;
                    break;
                };
            }
        }
        *self = db;
        whole
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

struct PageReader<'a> {
    page: &'a [u8],
    at: usize,
}

impl PageReader<'_> {
    fn done(&self) -> bool {
        self.at >= self.page.len()
    }
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let bytes = self.page.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(bytes)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&[u8]> {
        let n = self.u32()?;
        self.take(n)
    }
}
