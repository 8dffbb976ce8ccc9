//! A hasher for client ids, for the primary's per-client maps.
//!
//! Client ids are 128 random bits chosen by the clients (`ClientConfig`),
//! so a multiply-and-fold of their two halves spreads them well, at a
//! fraction of SipHash's cost, and with no random state: the core stays
//! deterministic (no map it keys with this is ever iterated in a way that
//! reaches an output). A client that picks ids to collide only slows its
//! own lookups down; it cannot change an outcome.

use core::hash::{BuildHasherDefault, Hasher};

use crate::message::ClientId;

/// A map keyed by client id.
pub(crate) type ClientIdMap<V> =
    hashbrown::HashMap<ClientId, V, BuildHasherDefault<ClientIdHasher>>;

/// The hasher of [`ClientIdMap`]: folds a `u128` into 64 bits with one
/// multiplication; other input (never used by the core) falls back to FNV-1a.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClientIdHasher(u64);

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for ClientIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = hash;
    }

    fn write_u128(&mut self, value: u128) {
        let (low, high) = (value as u64, (value >> 64) as u64);
        let mixed = (low ^ high.rotate_left(32) ^ self.0).wrapping_mul(MULTIPLIER);
        // The high bits of a product are the well-mixed ones; hashbrown
        // takes its control bits from the top and its bucket from the
        // bottom, so fold them together.
        self.0 = mixed ^ (mixed >> 29);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map() {
        let mut map: ClientIdMap<u64> = ClientIdMap::default();
        for id in 0..10_000u128 {
            map.insert(id << 64 | id, id as u64);
        }
        for id in 0..10_000u128 {
            assert_eq!(map.get(&(id << 64 | id)), Some(&(id as u64)));
        }
        assert_eq!(map.remove(&5), None);
        assert_eq!(map.remove(&(5u128 << 64 | 5)), Some(5));
        assert_eq!(map.len(), 9_999);
    }

    #[test]
    fn sequential_ids_spread_over_buckets() {
        // The low 7 bits pick a bucket group in a small table: sequential
        // ids (tests, benchmarks) must not all land in a few.
        let mut seen = [0u32; 128];
        for id in 0..1_024u128 {
            let mut h = ClientIdHasher::default();
            h.write_u128(id);
            seen[(h.finish() & 127) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n <= 24), "{seen:?}");
    }
}
