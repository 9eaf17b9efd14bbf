//! How a connection ends: open and usable, retired (it takes no new calls
//! and closes once idle and both sides have said goodbye), closed. The
//! states and their rules live here, as decisions the link carries out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sync::lock;
use crate::wire::Goodbye;

/// Where a connection is in its life.
#[derive(Default)]
pub(super) struct Lifecycle {
    closed: AtomicBool,
    /// Cleared when the connection is retired: one load tells a connection
    /// in use (every reply settles) that there is nothing to do.
    retired_flag: AtomicBool,
    /// Why it was retired (a duplicate that lost the tie-break, or a leave).
    retired: Mutex<Option<Goodbye>>,
    goodbye_sent: AtomicBool,
    goodbye_received: AtomicBool,
}

/// What settling asks of the connection.
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use]
pub(super) struct Settle {
    /// Say goodbye, giving this reason.
    pub(super) goodbye: Option<Goodbye>,
    /// Close: both sides have said goodbye.
    pub(super) close: bool,
}

impl Lifecycle {
    /// Whether new calls may use the connection.
    pub(super) fn is_usable(&self) -> bool {
        !self.retired_flag.load(Ordering::Acquire) && !self.is_closed()
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Takes no new calls from now on, for `why`; false if it was retired
    /// already (the first reason stays).
    pub(super) fn retire(&self, why: Goodbye) -> bool {
        let mut retired = lock(&self.retired);
        if retired.is_some() {
            return false;
        }
        *retired = Some(why);
        self.retired_flag.store(true, Ordering::Release);
        true
    }

    /// The peer said goodbye.
    pub(super) fn goodbye_received(&self) {
        self.goodbye_received.store(true, Ordering::Release);
    }

    /// What to do now that the connection may have become idle; `idle`
    /// says whether nothing waits on the peer and nothing runs for it, and
    /// is asked only of a retired, open connection.
    pub(super) fn settle(&self, idle: impl FnOnce() -> bool) -> Settle {
        if !self.retired_flag.load(Ordering::Acquire) {
            return Settle::default();
        }
        let Some(why) = *lock(&self.retired) else {
            return Settle::default();
        };
        if self.is_closed() || !idle() {
            return Settle::default();
        }
        let goodbye = (!self.goodbye_sent.swap(true, Ordering::AcqRel)).then_some(why);
        Settle {
            goodbye,
            close: self.goodbye_received.load(Ordering::Acquire),
        }
    }

    /// Marks the connection closed; true the first time.
    pub(super) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_connection_has_nothing_to_settle() {
        let life = Lifecycle::default();
        assert!(life.is_usable());
        assert_eq!(life.settle(|| panic!("not asked")), Settle::default());
    }

    #[test]
    fn a_retired_connection_says_goodbye_once_idle_and_closes_once_both_have() {
        let life = Lifecycle::default();
        assert!(life.retire(Goodbye::Duplicate));
        assert!(!life.retire(Goodbye::Leaving), "retired once");
        assert!(!life.is_usable());
        assert_eq!(life.settle(|| false), Settle::default(), "busy: nothing yet");
        let said = life.settle(|| true);
        assert_eq!((said.goodbye, said.close), (Some(Goodbye::Duplicate), false));
        assert_eq!(life.settle(|| true), Settle::default(), "said once; the peer has not");
        life.goodbye_received();
        assert_eq!(
            life.settle(|| true),
            Settle {
                goodbye: None,
                close: true
            }
        );
    }

    #[test]
    fn a_goodbye_received_first_closes_as_soon_as_ours_is_sent() {
        let life = Lifecycle::default();
        life.goodbye_received();
        assert_eq!(life.settle(|| true), Settle::default(), "still usable here");
        life.retire(Goodbye::Leaving);
        assert_eq!(
            life.settle(|| true),
            Settle {
                goodbye: Some(Goodbye::Leaving),
                close: true
            }
        );
    }

    #[test]
    fn a_closed_connection_closes_once_and_settles_nothing() {
        let life = Lifecycle::default();
        assert!(life.close());
        assert!(!life.close());
        life.retire(Goodbye::Leaving);
        assert!(!life.is_usable());
        assert_eq!(life.settle(|| true), Settle::default());
    }
}
