//! What travels on a connection once the handshake is done: length-delimited
//! frames, each a fixed-layout header followed by a body (encoded arguments or
//! reply). Decoding never trusts a length it has not received.

pub(crate) mod bounded;
mod frame;
mod message;
mod record;
pub(crate) mod reply_buffers;
mod rewind;

pub(crate) use frame::{FrameCodec, FrameError, HANDSHAKE_MAX_FRAME, LEN_PREFIX};
pub use message::Format;
pub(crate) use message::{Goodbye, Header, Status, decode, encode};
pub(crate) use record::{REKEY_EVERY, RecordError, RecordOpener, RecordSealer, SessionKey};
pub(crate) use rewind::rewind;
