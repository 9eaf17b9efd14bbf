//! Handlers running for a peer's requests on one connection, by request id,
//! so that a cancel or the connection's end can abort them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustc_hash::FxHashMap;
use tokio::task::AbortHandle;

use crate::sync::lock;

#[derive(Default)]
pub(super) struct RunningHandlers {
    tasks: Mutex<FxHashMap<u64, AbortHandle>>,
    /// How many `tasks` holds, readable without the lock: every request
    /// checks the limit, and almost none starts a task.
    count: AtomicUsize,
}

impl RunningHandlers {
    /// Records the task that `spawn` starts for request `id`. The table is
    /// held across the spawn, so that the task cannot finish (and remove its
    /// entry) before it is inserted.
    pub(super) fn start(&self, id: u64, spawn: impl FnOnce() -> AbortHandle) {
        let mut tasks = lock(&self.tasks);
        tasks.insert(id, spawn());
        self.count.store(tasks.len(), Ordering::Relaxed);
    }

    /// The handler of `id` finished on its own.
    pub(super) fn finish(&self, id: u64) {
        self.remove(id);
    }

    /// The caller gave up on `id`: stop its handler.
    pub(super) fn cancel(&self, id: u64) {
        if let Some(task) = self.remove(id) {
            task.abort();
        }
    }

    fn remove(&self, id: u64) -> Option<AbortHandle> {
        let mut tasks = lock(&self.tasks);
        let task = tasks.remove(&id);
        self.count.store(tasks.len(), Ordering::Relaxed);
        task
    }

    /// The connection is gone: stop every handler.
    pub(super) fn abort_all(&self) {
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        self.count.store(0, Ordering::Relaxed);
        for task in tasks.into_values() {
            task.abort();
        }
    }

    /// How many run, as of the last change; a request racing a handler's
    /// end may see one more, which the limit tolerates.
    pub(super) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(super) fn is_empty(&self) -> bool {
        lock(&self.tasks).is_empty()
    }
}
