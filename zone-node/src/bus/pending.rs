//! What both transports share about pending calls: the map lock, and the guard that removes a
//! pending call however the call ends.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks one of the bus's maps. They guard short, non-awaiting map updates, so a lock poisoned by
/// a panic elsewhere still holds consistent data: keep going rather than take the node down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a pending call however the call ends (reply, error, or the caller dropping it).
pub(crate) struct PendingGuard<'a, T> {
    pub(crate) pending: &'a Mutex<HashMap<u64, T>>,
    pub(crate) id: u64,
}

impl<T> Drop for PendingGuard<'_, T> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}
