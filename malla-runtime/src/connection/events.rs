//! What happens to links, as values: a connection was adopted, a connection
//! closed, a dial failed. Every event goes to one owner (the node), which
//! acts on it; none calls back into the layer that raised it.
//!
//! Events are handled at once, on the task that raised them, so that a
//! broken connection takes its node out of every route before the next
//! call; but never nested: an event raised while another is being handled
//! (closing a duplicate while adopting its replacement, say) waits in the
//! queue and is handled next, in order, by the task already handling.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use super::errors::CloseReason;
use crate::NodeId;
use crate::sync::lock;

/// Something that happened to a link (`C` is the connection: generic only
/// so that this file does not depend on the one that defines it).
#[derive(Debug)]
pub(crate) enum LinkEvent<C> {
    /// A connection was adopted as the one calls to its peer use.
    Up(Arc<C>),
    /// A connection closed; its pending calls have failed.
    Closed(Arc<C>, CloseReason),
    /// Dialing the node failed, or its address answered as another node.
    DialFailed(NodeId),
}

/// The one owner of link events.
pub(crate) trait LinkOwner<C>: Send + Sync + 'static {
    fn handle(&self, event: LinkEvent<C>);
}

/// The queue in front of the owner, shared by everything that raises link
/// events.
pub(crate) struct LinkEvents<C> {
    owner: Weak<dyn LinkOwner<C>>,
    queue: Mutex<Queue<C>>,
}

struct Queue<C> {
    events: VecDeque<LinkEvent<C>>,
    /// A task is handling events: new ones wait for it.
    handling: bool,
}

impl<C: 'static> LinkEvents<C> {
    pub(crate) fn new(owner: Weak<dyn LinkOwner<C>>) -> Arc<Self> {
        Arc::new(LinkEvents {
            owner,
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                handling: false,
            }),
        })
    }

    /// Hands `event` to the owner: now, on this task, unless a task is
    /// already handling events, which then handles this one after its own.
    pub(crate) fn post(&self, event: LinkEvent<C>) {
        {
            let mut queue = lock(&self.queue);
            queue.events.push_back(event);
            if queue.handling {
                return;
            }
            queue.handling = true;
        }
        // Released even if the owner panics, so events are not stuck.
        let _handling = Handling(&self.queue);
        loop {
            let next = lock(&self.queue).events.pop_front();
            let Some(event) = next else { return };
            if let Some(owner) = self.owner.upgrade() {
                owner.handle(event);
            }
        }
    }
}

struct Handling<'a, C>(&'a Mutex<Queue<C>>);

impl<C> Drop for Handling<'_, C> {
    fn drop(&mut self) {
        let mut queue = lock(self.0);
        queue.handling = false;
        if std::thread::panicking() {
            queue.events.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it handles, raising one more event while handling the
    /// first, as adopting a connection does when it closes a duplicate.
    struct Recorder {
        events: Arc<LinkEvents<()>>,
        handled: Mutex<Vec<String>>,
        depth: Mutex<usize>,
    }

    impl LinkOwner<()> for Recorder {
        fn handle(&self, event: LinkEvent<()>) {
            *lock(&self.depth) += 1;
            assert_eq!(*lock(&self.depth), 1, "never nested");
            let LinkEvent::DialFailed(node) = event else {
                unreachable!()
            };
            if node.as_str() == "first" {
                self.events.post(LinkEvent::DialFailed("raised while handling".into()));
            }
            lock(&self.handled).push(node.to_string());
            *lock(&self.depth) -= 1;
        }
    }

    #[test]
    fn an_event_raised_while_handling_is_handled_next_not_nested() {
        let recorder = Arc::new_cyclic(|me: &Weak<Recorder>| Recorder {
            events: LinkEvents::new(me.clone() as Weak<dyn LinkOwner<()>>),
            handled: Mutex::new(Vec::new()),
            depth: Mutex::new(0),
        });
        recorder.events.post(LinkEvent::DialFailed("first".into()));
        recorder.events.post(LinkEvent::DialFailed("second".into()));
        assert_eq!(*lock(&recorder.handled), ["first", "raised while handling", "second"]);
    }
}
