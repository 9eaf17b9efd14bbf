//! Why a call on a connection has no reply, and why a connection closed.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::wire::{FrameError, Status};

/// Why a call on this connection has no reply.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The connection was closed or retired before the request was queued:
    /// it did not run.
    NotSent,
    /// The connection was lost while the request was in flight: it may have run.
    Lost,
    /// The deadline passed; a cancel was sent.
    TimedOut,
    /// The serving node answered with an error status.
    Remote(Status),
    /// The request is larger than the peer accepts; it was not sent.
    TooLarge(FrameError),
}

/// Why a connection closed.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// The peer closed it (end of stream).
    PeerClosed,
    /// Reading or writing failed.
    Io(io::Error),
    /// The peer sent a frame we cannot read; we stop trusting the stream.
    BadFrame(String),
    /// Nothing arrived for several ticks: the peer is gone or partitioned.
    Silent(Duration),
    /// Both sides said goodbye: a duplicate retired, or a graceful leave.
    Goodbye,
    /// This node closed it (shutdown, or the peer was declared dead).
    Local(&'static str),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::BadFrame(why) => write!(f, "malformed frame: {why}"),
            CloseReason::Silent(d) => write!(f, "nothing received for {d:?}"),
            CloseReason::Goodbye => f.write_str("both sides said goodbye"),
            CloseReason::Local(why) => f.write_str(why),
        }
    }
}
