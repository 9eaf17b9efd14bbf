//! Buffers that start over once emptied.
//!
//! A `BytesMut` consumed from the front moves its start forward, and refilled
//! as it is, it walks through its whole allocation: a connection's input
//! (64 KiB) would put each small frame in memory that has left the
//! processor's nearest cache, for the socket's copy and for every read of the
//! frame after it.

use bytes::BytesMut;

/// Empties `buf` and, unless other handles share its allocation, moves its
/// start back to the beginning of it. Never allocates.
pub(crate) fn rewind(buf: &mut BytesMut) {
    buf.clear();
    // Asking for more than the room left makes `bytes` reclaim the consumed
    // front, which for an empty buffer is all of it; it does nothing when
    // the buffer already starts at the beginning or is shared.
    let _ = buf.try_reclaim(buf.capacity() + 1);
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, BufMut};

    use super::*;

    #[test]
    fn an_emptied_buffer_starts_over_at_the_front_of_its_allocation() {
        let mut buf = BytesMut::with_capacity(1024);
        let front = buf.as_ptr();
        buf.put_slice(&[1; 100]);
        buf.advance(100);
        assert_eq!(buf.capacity(), 924);
        rewind(&mut buf);
        assert_eq!((buf.as_ptr(), buf.capacity()), (front, 1024));
        rewind(&mut buf);
        assert_eq!((buf.as_ptr(), buf.capacity()), (front, 1024), "already at the front");
    }

    #[test]
    fn a_shared_buffer_is_only_emptied() {
        let mut buf = BytesMut::with_capacity(1024);
        buf.put_slice(&[1; 100]);
        let kept = buf.split_to(40).freeze();
        let (at, capacity) = (buf.as_ptr(), buf.capacity());
        rewind(&mut buf);
        assert!(buf.is_empty());
        assert_eq!(
            (buf.as_ptr(), buf.capacity()),
            (at, capacity),
            "the front is still in use"
        );
        assert_eq!(&kept[..], &[1; 40]);
    }
}
