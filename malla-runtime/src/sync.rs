//! Poison-tolerant locking. The runtime's locks are held for a few statements
//! that do not panic, or that leave the guarded value consistent if they do
//! (a panicking handler never runs under one), so a poisoned lock still holds
//! a valid value and taking it is better than spreading the panic.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
