//! The byte streams a connection runs on: TCP between nodes, and (on Unix) a
//! Unix socket pair as the in-memory transport of tests (no ports, no
//! network).
//!
//! The write half is used through a shared reference, so whoever has a frame
//! to send while nothing else is being written can write it at once with a
//! non-blocking `try_write`, without waking a writer task.

use std::io;
use std::task::{Context, Poll};

use tokio::io::AsyncRead;

/// A stream split into an owned read half and a shareable write half.
pub(crate) trait Transport: Send + 'static {
    type Read: AsyncRead + Send + Unpin + 'static;
    type Write: WriteHalf;
    fn split(self) -> (Self::Read, Self::Write);
}

/// The write half of a stream, usable from any task.
pub(crate) trait WriteHalf: Send + Sync + 'static {
    /// Writes what the socket buffer takes now; `WouldBlock` if nothing.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Ready when `try_write` may make progress.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Shuts both directions down: the peer, and our own reader, see the end
    /// of the stream.
    fn shutdown(&self);
}

/// TCP and Unix streams split the same way: owned halves, the write half
/// shut down through its socket.
macro_rules! stream_transport {
    ($stream:ty, $read:ty, $write:ty) => {
        impl Transport for $stream {
            type Read = $read;
            type Write = $write;

            fn split(self) -> (Self::Read, Self::Write) {
                self.into_split()
            }
        }

        impl WriteHalf for $write {
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                self.as_ref().try_write(buf)
            }

            fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.as_ref().poll_write_ready(cx)
            }

            fn shutdown(&self) {
                let _ = socket2::SockRef::from(self.as_ref()).shutdown(std::net::Shutdown::Both);
            }
        }
    };
}

stream_transport!(
    tokio::net::TcpStream,
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf
);
#[cfg(unix)]
stream_transport!(
    tokio::net::UnixStream,
    tokio::net::unix::OwnedReadHalf,
    tokio::net::unix::OwnedWriteHalf
);
