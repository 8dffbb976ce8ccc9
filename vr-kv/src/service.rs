//! The [`vr_core::Service`] every replica runs, whatever its runtime: the
//! [`Store`], shared with the RESP front end so that a `READONLY`
//! connection can read the replica's state without going through the log.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vr_core::Service;

use crate::store::Store;

/// The service the replica runs: the [`Store`] behind a lock that the front
/// end also holds, for `READONLY` reads.
pub struct SharedStore(pub Arc<Mutex<Store>>);

impl Service for SharedStore {
    fn execute(&mut self, op_number: u64, op: &[u8]) -> Vec<u8> {
        lock(&self.0).execute(op_number, op)
    }
    fn page_count(&self) -> u64 {
        lock(&self.0).page_count()
    }
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        lock(&self.0).read_page(index, out);
    }
    fn install_pages(&mut self, pages: &[&[u8]]) {
        lock(&self.0).install_pages(pages);
    }
    fn take_changed_pages(&mut self, changed: &mut Vec<u64>) -> bool {
        lock(&self.0).take_changed_pages(changed)
    }
    fn is_read_only(&self, op: &[u8]) -> bool {
        lock(&self.0).is_read_only(op)
    }
    fn query(&self, op: &[u8]) -> Vec<u8> {
        lock(&self.0).query(op)
    }
}

/// Locks the store. The store never panics mid-command, so a lock poisoned
/// by a panic elsewhere still guards a consistent state.
pub fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}
