//! Frame payloads: a postcard [`Header`], then the body.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::frame::{FrameCodec, FrameError};

/// The header of every frame after the handshake.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Header<'a> {
    /// Run a method. The body holds the encoded arguments.
    Request {
        #[serde(with = "postcard::fixint::le")]
        id: u64,
        #[serde(borrow)]
        service: &'a str,
        // Hashes use every bit: fixed width is shorter and faster than varints.
        #[serde(with = "postcard::fixint::le")]
        method: u32,
        /// 0: a dynamic call that skips the signature check.
        #[serde(with = "postcard::fixint::le")]
        signature: u64,
        /// Time left to the caller's deadline, in microseconds.
        deadline_us: u64,
        format: Format,
    },
    /// The answer to request `id`. The body holds the encoded reply if
    /// `status` is `Ok`.
    Response {
        #[serde(with = "postcard::fixint::le")]
        id: u64,
        status: Status,
    },
    /// The caller gave up on request `id`: stop running it.
    Cancel { id: u64 },
    /// Nothing to say; proves the connection is alive.
    Ping,
    /// The sender will send no new requests on this connection.
    Goodbye(Goodbye),
}

/// Why a node stops sending requests on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Goodbye {
    /// Both nodes dialed at once; this is the connection both drop. The
    /// receiver keeps using it until it has adopted the other one.
    Duplicate,
    /// The sender is leaving the cluster.
    Leaving,
}

/// Encoding of a request's arguments and reply, on the wire and in the
/// generated dispatchers alike.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// The default: compact, not self-describing.
    Postcard,
    /// For tools (`malla call`): self-describing, slower.
    Json,
}

/// Outcome of a request, as the serving node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Status {
    Ok,
    /// The service is not served here, not global, or not active.
    NotAvailable,
    /// No method has this id.
    UnknownMethod,
    /// The method exists with another signature.
    SignatureMismatch,
    /// The arguments could not be decoded.
    BadRequest(String),
    /// The handler panicked, or its reply could not be encoded or sent.
    Failed(String),
    /// The deadline passed on the serving node.
    Timeout,
    /// The serving node runs as many handlers for this connection as it
    /// allows: the request was refused before it ran.
    Overloaded,
}

/// Writes postcard output straight into the connection's buffer.
struct BytesMutFlavor<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BytesMutFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Room for any header whose service name fits the usual 255 bytes.
const HEADER_SCRATCH: usize = 320;

/// Appends a frame holding `header` and `body` to `out`, unless it would
/// exceed `max` bytes (then `out` is unchanged).
pub(crate) fn encode(out: &mut BytesMut, max: usize, header: &Header<'_>, body: &[u8]) -> Result<(), FrameError> {
    let written = FrameCodec::write_in_place(out, max, |out| {
        // Serializing into a stack buffer and copying once is much cheaper
        // than growing the `BytesMut` one varint byte at a time.
        let mut scratch = [0u8; HEADER_SCRATCH];
        match postcard::to_slice(header, &mut scratch) {
            Ok(bytes) => out.extend_from_slice(bytes),
            Err(_) => postcard::serialize_with_flavor(header, BytesMutFlavor(out))?,
        }
        out.extend_from_slice(body);
        Ok::<(), postcard::Error>(())
    });
    match written {
        Ok(result) => result,
        // Headers are plain data: postcard cannot fail on them.
        Err(err) => Err(FrameError::Io(std::io::Error::other(err))),
    }
}

/// Splits a frame into its header and body; the body shares the frame's memory.
pub(crate) fn decode(frame: &Bytes) -> Result<(Header<'_>, Bytes), postcard::Error> {
    let (header, rest) = postcard::take_from_bytes::<Header<'_>>(frame)?;
    let body = frame.slice_ref(rest);
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Decoder;

    use super::*;

    #[test]
    fn headers_and_bodies_round_trip() {
        let mut out = BytesMut::new();
        let request = Header::Request {
            id: 7,
            service: "Calculator",
            method: 0xda6c_24dd,
            signature: 42,
            deadline_us: 15_000_000,
            format: Format::Postcard,
        };
        encode(&mut out, 1024, &request, &[1, 2, 3]).unwrap();
        encode(
            &mut out,
            1024,
            &Header::Response {
                id: 7,
                status: Status::Failed("boom".into()),
            },
            &[],
        )
        .unwrap();
        let mut codec = FrameCodec::new(1024);
        let first = codec.decode(&mut out).unwrap().unwrap();
        let (header, body) = decode(&first).unwrap();
        assert_eq!(header, request);
        assert_eq!(&body[..], [1, 2, 3]);
        let second = codec.decode(&mut out).unwrap().unwrap();
        assert_eq!(
            decode(&second).unwrap().0,
            Header::Response {
                id: 7,
                status: Status::Failed("boom".into())
            }
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for garbage in [&[][..], &[0xff; 3], &[0, 1], &[9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]] {
            assert!(decode(&Bytes::copy_from_slice(garbage)).is_err(), "{garbage:?}");
        }
    }
}
