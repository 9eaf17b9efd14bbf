//! Buffers of encoded replies, handed back once their bytes are queued, so
//! that a busy connection encodes replies without an allocation each. One
//! small pool per thread: a reply is encoded and queued in the same poll.

use std::cell::RefCell;

/// Buffers kept per thread.
const KEEP: usize = 16;
/// Larger buffers go back to the allocator: one large reply must not
/// pin its memory.
const KEEP_CAPACITY: usize = 64 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn take() -> Vec<u8> {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub(crate) fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > KEEP_CAPACITY {
        return;
    }
    buf.clear();
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEEP {
            spare.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_large_or_surplus_ones_are_dropped() {
        let mut buf = take();
        buf.extend_from_slice(b"reply");
        let capacity = buf.capacity();
        give_back(buf);
        let again = take();
        assert!(
            again.is_empty() && again.capacity() == capacity,
            "the same buffer, cleared"
        );

        give_back(Vec::with_capacity(KEEP_CAPACITY + 1));
        assert_eq!(take().capacity(), 0, "a large buffer is not kept");

        for _ in 0..2 * KEEP {
            give_back(Vec::with_capacity(16));
        }
        assert_eq!(SPARE.with(|spare| spare.borrow().len()), KEEP);
    }
}
