//! Handlers running for a peer's requests on one connection, by request id,
//! so that a cancel or the connection's end can abort them.

use rustc_hash::FxHashMap;
use tokio::task::AbortHandle;

#[derive(Default)]
pub(super) struct RunningHandlers {
    tasks: FxHashMap<u64, AbortHandle>,
}

impl RunningHandlers {
    /// Records the task running request `id`.
    pub(super) fn insert(&mut self, id: u64, task: AbortHandle) {
        self.tasks.insert(id, task);
    }

    /// The handler of `id` finished on its own.
    pub(super) fn finish(&mut self, id: u64) {
        self.tasks.remove(&id);
    }

    /// The caller gave up on `id`: stop its handler.
    pub(super) fn cancel(&mut self, id: u64) {
        if let Some(task) = self.tasks.remove(&id) {
            task.abort();
        }
    }

    /// The connection is gone: stop every handler.
    pub(super) fn abort_all(&mut self) {
        for task in std::mem::take(&mut self.tasks).into_values() {
            task.abort();
        }
    }

    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}
