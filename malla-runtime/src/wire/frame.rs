//! Length-delimited frames: a big-endian `u32` length, then that many bytes.
//!
//! tokio-util's `LengthDelimitedCodec` reserves the announced length as soon
//! as it reads a header; this codec grows the buffer only as bytes arrive, so
//! a peer announcing 16 MiB and sending nothing costs nothing.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Size of the length prefix.
pub(crate) const LEN_PREFIX: usize = 4;
/// Largest frame accepted during the handshake, before the peer is trusted.
pub(crate) const HANDSHAKE_MAX_FRAME: usize = 4 * 1024;
/// How far ahead of the received bytes the read buffer may grow.
const RESERVE_STEP: usize = 64 * 1024;

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads and writes frames of at most `max` bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    pub(crate) fn new(max: usize) -> Self {
        FrameCodec { max }
    }

    /// The length of the frame at the front of `src` (after its prefix), if
    /// all of it is there; `src[LEN_PREFIX..LEN_PREFIX + len]` is the frame.
    /// Lets a reader look at frames where they lie, without splitting the
    /// buffer (which makes it shared and counts references).
    pub(crate) fn complete(&self, src: &mut BytesMut) -> Result<Option<usize>, FrameError> {
        if src.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        let total = LEN_PREFIX + len;
        if src.len() < total {
            src.reserve((total - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        Ok(Some(len))
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(len) = self.complete(src)? else {
            return Ok(None);
        };
        src.advance(LEN_PREFIX);
        Ok(Some(src.split_to(len).freeze()))
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        if item.len() > self.max {
            return Err(FrameError::TooLarge {
                len: item.len(),
                max: self.max,
            });
        }
        dst.reserve(LEN_PREFIX + item.len());
        dst.put_u32(item.len() as u32);
        dst.extend_from_slice(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let mut codec = FrameCodec::new(1024);
        let mut wire = BytesMut::new();
        codec.encode(b"hello".as_slice(), &mut wire).unwrap();
        codec.encode(b"".as_slice(), &mut wire).unwrap();
        codec.encode(b"world!".as_slice(), &mut wire).unwrap();
        let all = wire.freeze();
        for cut in 0..all.len() {
            let mut src = BytesMut::from(&all[..cut]);
            let mut frames = Vec::new();
            while let Some(f) = codec.decode(&mut src).unwrap() {
                frames.push(f);
            }
            src.extend_from_slice(&all[cut..]);
            while let Some(f) = codec.decode(&mut src).unwrap() {
                frames.push(f);
            }
            assert_eq!(frames, [&b"hello"[..], b"", b"world!"]);
        }
    }

    #[test]
    fn an_announced_length_is_not_allocated_up_front() {
        let mut codec = FrameCodec::new(usize::MAX);
        let mut src = BytesMut::from(&(u32::MAX).to_be_bytes()[..]);
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert!(src.capacity() <= LEN_PREFIX + RESERVE_STEP + 64, "{}", src.capacity());
    }

    #[test]
    fn oversized_frames_are_refused_in_both_directions() {
        let mut codec = FrameCodec::new(8);
        let mut src = BytesMut::from(&9u32.to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::TooLarge { len: 9, max: 8 })
        ));
        assert!(codec.encode(&[0u8; 9][..], &mut BytesMut::new()).is_err());
    }
}
