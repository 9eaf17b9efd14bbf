//! Frame payloads: a fixed-layout [`Header`] (see [`encode`]), then the body.
//!
//! Who can do what with a header: on a sealed connection (the default) the
//! headers travel inside records, so someone on the path without the cookie
//! can neither read nor alter nor inject one (the record does not open and
//! the connection closes). A peer holding the cookie can send any bytes:
//! every field is checked as it is read (kinds, formats, statuses and
//! goodbyes are closed sets; lengths are checked against what the frame
//! holds; text must be UTF-8), and a header that fails closes the
//! connection with the reason, without a panic or an allocation larger
//! than the frame it came in.

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::frame::{FrameError, LEN_PREFIX};
use crate::metadata::MetadataError;
use crate::telemetry::TraceContext;

/// The header of every frame after the handshake.
#[derive(Debug, PartialEq)]
pub(crate) enum Header<'a> {
    /// Run a method. The body holds the encoded arguments.
    Request {
        id: u64,
        service: &'a str,
        method: u32,
        /// 0: a dynamic call that skips the signature check.
        signature: u64,
        /// Time left to the caller's deadline, in microseconds.
        deadline_us: u64,
        format: Format,
        /// The caller's trace, if it has one: the serving node's span
        /// becomes a child of the caller's attempt.
        trace: Option<TraceContext>,
        /// The call's metadata, encoded (`crate::metadata`); empty: none.
        metadata: &'a [u8],
    },
    /// The answer to request `id`. The body holds the encoded reply if
    /// `status` is `Ok`.
    Response { id: u64, status: Status },
    /// The caller gave up on request `id`: stop running it.
    Cancel { id: u64 },
    /// Nothing to say; proves the connection is alive.
    Ping,
    /// The sender will send no new requests on this connection.
    Goodbye(Goodbye),
}

/// Why a node stops sending requests on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// A server interceptor refused the request before it ran, saying why.
    Refused(String),
}

/// Frame kinds: the first byte of every frame.
mod kind {
    pub(super) const REQUEST: u8 = 0;
    pub(super) const RESPONSE: u8 = 1;
    pub(super) const CANCEL: u8 = 2;
    pub(super) const PING: u8 = 3;
    pub(super) const GOODBYE: u8 = 4;
    /// A request with a trace context after its fixed fields.
    pub(super) const TRACED_REQUEST: u8 = 5;
    /// A request with metadata (and perhaps a trace context).
    pub(super) const REQUEST_WITH_METADATA: u8 = 6;
}

/// A frame whose header cannot be read. The connection that carried it is
/// closed: a peer holding the cookie sent it, so it runs other code than
/// ours or has a bug, and nothing after it can be trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HeaderError {
    #[error("the frame ends inside its header")]
    Truncated,
    #[error("unknown {what} {code}")]
    Unknown { what: &'static str, code: u8 },
    #[error("a service name or status message is not UTF-8")]
    NotUtf8,
    #[error("a service name of {0} bytes is longer than 65535")]
    NameTooLong(usize),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Appends a frame holding `header` and `body` to `out`, unless it would
/// exceed `max` bytes (then `out` is unchanged).
///
/// The header has a fixed layout, all integers little-endian:
///
/// | kind | fields |
/// |---|---|
/// | 0 request | `id u64, method u32, signature u64, deadline_us u64, format u8, service_len u16, service` |
/// | 1 response | `id u64, status u8` and, for a status with a message, `len u32, message` |
/// | 2 cancel | `id u64` |
/// | 3 ping | |
/// | 4 goodbye | `why u8` |
/// | 5 traced request | as a request, with `trace_id [u8; 16], span_id [u8; 8], flags u8` before `service` |
/// | 6 request with metadata | as a request, with `traced u8`, the trace fields if `traced` is 1, and `metadata_len u16` before `service`; the metadata after `service` |
///
/// It is written and read field by field with no intermediate buffer: a
/// request header is a few stores, where a serde encoding cost a tenth of a
/// call's instructions. A request without metadata is kind 0 or 5, as it was
/// before metadata existed.
pub(crate) fn encode(out: &mut BytesMut, max: usize, header: &Header<'_>, body: &[u8]) -> Result<(), FrameError> {
    let (mut fixed, text, extra) = layout(header).map_err(|err| FrameError::Io(std::io::Error::other(err)))?;
    let len = fixed.len - LEN_PREFIX + text.len() + extra.len() + body.len();
    if len > max || len > u32::MAX as usize {
        return Err(FrameError::TooLarge { len, max });
    }
    fixed.buf[..LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    // The prefix and fixed fields in one copy: a `put_*` per field costs a
    // capacity check and a call to `memcpy` each.
    out.reserve(LEN_PREFIX + len);
    out.extend_from_slice(fixed.bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(extra);
    out.extend_from_slice(body);
    Ok(())
}

/// The frame's length prefix (left for `encode` to fill) and the header's
/// fixed fields, the text that follows them, and the bytes after the text.
fn layout<'h>(header: &'h Header<'_>) -> Result<(Fixed, &'h str, &'h [u8]), HeaderError> {
    let mut fixed = Fixed {
        buf: [0; FIXED_MAX],
        len: LEN_PREFIX,
    };
    let text = match *header {
        Header::Request {
            id,
            service,
            method,
            signature,
            deadline_us,
            format,
            trace,
            metadata,
        } => {
            let name_len = u16::try_from(service.len()).map_err(|_| HeaderError::NameTooLong(service.len()))?;
            let kind = match (metadata.is_empty(), trace.is_some()) {
                (false, _) => kind::REQUEST_WITH_METADATA,
                (true, true) => kind::TRACED_REQUEST,
                (true, false) => kind::REQUEST,
            };
            fixed.put(&[kind]);
            fixed.put(&id.to_le_bytes());
            fixed.put(&method.to_le_bytes());
            fixed.put(&signature.to_le_bytes());
            fixed.put(&deadline_us.to_le_bytes());
            fixed.put(&[format.code()]);
            fixed.put(&name_len.to_le_bytes());
            if kind == kind::REQUEST_WITH_METADATA {
                fixed.put(&[u8::from(trace.is_some())]);
            }
            if let Some(trace) = trace {
                fixed.put(&trace.to_bytes());
            }
            if kind == kind::REQUEST_WITH_METADATA {
                // Bounded by MAX_ENCODED_LEN when the metadata was built.
                let len = u16::try_from(metadata.len()).map_err(|_| MetadataError::TooLarge(metadata.len()))?;
                fixed.put(&len.to_le_bytes());
            }
            return Ok((fixed, service, metadata));
        }
        Header::Response { id, ref status } => {
            fixed.put(&[kind::RESPONSE]);
            fixed.put(&id.to_le_bytes());
            fixed.put(&[status.code()]);
            match status {
                Status::BadRequest(message) | Status::Failed(message) | Status::Refused(message) => {
                    // Longer than a frame is refused by the frame's own limit.
                    fixed.put(&(message.len().min(u32::MAX as usize) as u32).to_le_bytes());
                    message
                }
                _ => "",
            }
        }
        Header::Cancel { id } => {
            fixed.put(&[kind::CANCEL]);
            fixed.put(&id.to_le_bytes());
            ""
        }
        Header::Ping => {
            fixed.put(&[kind::PING]);
            ""
        }
        Header::Goodbye(why) => {
            fixed.put(&[kind::GOODBYE, why.code()]);
            ""
        }
    };
    Ok((fixed, text, &[]))
}

/// The longest fixed part: a traced request's with metadata.
const FIXED_MAX: usize = LEN_PREFIX + 1 + 31 + 1 + TraceContext::LEN + 2;

/// The fixed-size part of a frame, assembled on the stack.
struct Fixed {
    buf: [u8; FIXED_MAX],
    len: usize,
}

impl Fixed {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Splits a frame into its header and body, both borrowed from it.
#[inline]
pub(crate) fn decode(frame: &[u8]) -> Result<(Header<'_>, &[u8]), HeaderError> {
    let mut input = Input(frame);
    let header = match input.u8()? {
        code @ (kind::REQUEST | kind::TRACED_REQUEST | kind::REQUEST_WITH_METADATA) => {
            // One length check for the fixed fields, then reads at fixed
            // offsets.
            let fixed: [u8; 31] = input.take()?;
            let format = Format::from_code(fixed[28])?;
            let with_metadata = code == kind::REQUEST_WITH_METADATA;
            let traced = match with_metadata {
                true => match input.u8()? {
                    0 => false,
                    1 => true,
                    code => {
                        return Err(HeaderError::Unknown {
                            what: "trace flag",
                            code,
                        });
                    }
                },
                false => code == kind::TRACED_REQUEST,
            };
            let trace = if traced {
                TraceContext::from_bytes(&input.take()?)
            } else {
                None
            };
            let metadata_len = if with_metadata {
                usize::from(u16::from_le_bytes(input.take()?))
            } else {
                0
            };
            let service = input.text(u16::from_le_bytes([fixed[29], fixed[30]]) as usize)?;
            let metadata = input.bytes(metadata_len)?;
            if with_metadata {
                crate::metadata::validate(metadata)?;
            }
            Header::Request {
                id: u64::from_le_bytes(array(&fixed[0..8])),
                service,
                method: u32::from_le_bytes(array(&fixed[8..12])),
                signature: u64::from_le_bytes(array(&fixed[12..20])),
                deadline_us: u64::from_le_bytes(array(&fixed[20..28])),
                format,
                trace,
                metadata,
            }
        }
        kind::RESPONSE => {
            let fixed: [u8; 9] = input.take()?;
            let id = u64::from_le_bytes(array(&fixed[0..8]));
            let status = match fixed[8] {
                status::BAD_REQUEST => Status::BadRequest(input.message()?),
                status::FAILED => Status::Failed(input.message()?),
                status::REFUSED => Status::Refused(input.message()?),
                code => Status::plain(code)?,
            };
            Header::Response { id, status }
        }
        kind::CANCEL => Header::Cancel { id: input.u64()? },
        kind::PING => Header::Ping,
        kind::GOODBYE => Header::Goodbye(Goodbye::from_code(input.u8()?)?),
        code => {
            return Err(HeaderError::Unknown {
                what: "frame kind",
                code,
            });
        }
    };
    Ok((header, input.0))
}

/// `N` bytes taken at a constant offset of a fixed-size array: the length
/// is known when compiling, so nothing is checked at run time.
#[inline(always)]
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().unwrap_or([0; N])
}

/// The unread rest of a frame.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(HeaderError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, HeaderError> {
        self.take::<1>().map(|[b]| b)
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        self.take().map(u64::from_le_bytes)
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], HeaderError> {
        let (bytes, rest) = self.0.split_at_checked(len).ok_or(HeaderError::Truncated)?;
        self.0 = rest;
        Ok(bytes)
    }

    fn text(&mut self, len: usize) -> Result<&'a str, HeaderError> {
        std::str::from_utf8(self.bytes(len)?).map_err(|_| HeaderError::NotUtf8)
    }

    fn message(&mut self) -> Result<String, HeaderError> {
        let len = self.u32()? as usize;
        self.text(len).map(str::to_owned)
    }
}

/// Status codes on the wire.
mod status {
    pub(super) const OK: u8 = 0;
    pub(super) const NOT_AVAILABLE: u8 = 1;
    pub(super) const UNKNOWN_METHOD: u8 = 2;
    pub(super) const SIGNATURE_MISMATCH: u8 = 3;
    pub(super) const BAD_REQUEST: u8 = 4;
    pub(super) const FAILED: u8 = 5;
    pub(super) const TIMEOUT: u8 = 6;
    pub(super) const OVERLOADED: u8 = 7;
    pub(super) const REFUSED: u8 = 8;
}

impl Status {
    fn code(&self) -> u8 {
        match self {
            Status::Ok => status::OK,
            Status::NotAvailable => status::NOT_AVAILABLE,
            Status::UnknownMethod => status::UNKNOWN_METHOD,
            Status::SignatureMismatch => status::SIGNATURE_MISMATCH,
            Status::BadRequest(_) => status::BAD_REQUEST,
            Status::Failed(_) => status::FAILED,
            Status::Timeout => status::TIMEOUT,
            Status::Overloaded => status::OVERLOADED,
            Status::Refused(_) => status::REFUSED,
        }
    }

    /// A status without a message.
    fn plain(code: u8) -> Result<Status, HeaderError> {
        Ok(match code {
            status::OK => Status::Ok,
            status::NOT_AVAILABLE => Status::NotAvailable,
            status::UNKNOWN_METHOD => Status::UnknownMethod,
            status::SIGNATURE_MISMATCH => Status::SignatureMismatch,
            status::TIMEOUT => Status::Timeout,
            status::OVERLOADED => Status::Overloaded,
            code => return Err(HeaderError::Unknown { what: "status", code }),
        })
    }
}

impl Format {
    fn code(self) -> u8 {
        match self {
            Format::Postcard => 0,
            Format::Json => 1,
        }
    }

    fn from_code(code: u8) -> Result<Format, HeaderError> {
        match code {
            0 => Ok(Format::Postcard),
            1 => Ok(Format::Json),
            code => Err(HeaderError::Unknown { what: "format", code }),
        }
    }
}

impl Goodbye {
    fn code(self) -> u8 {
        match self {
            Goodbye::Duplicate => 0,
            Goodbye::Leaving => 1,
        }
    }

    fn from_code(code: u8) -> Result<Goodbye, HeaderError> {
        match code {
            0 => Ok(Goodbye::Duplicate),
            1 => Ok(Goodbye::Leaving),
            code => Err(HeaderError::Unknown { what: "goodbye", code }),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Decoder;

    use super::*;
    use crate::wire::FrameCodec;

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
            trace: None,
            metadata: &[],
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
        assert_eq!(body, [1, 2, 3]);
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
            assert!(decode(garbage).is_err(), "{garbage:?}");
        }
    }

    fn every_kind() -> Vec<Header<'static>> {
        let mut headers = vec![
            Header::Request {
                id: u64::MAX,
                service: "Ünïcode",
                method: 1,
                signature: 0,
                deadline_us: 0,
                format: Format::Json,
                trace: None,
                metadata: &[],
            },
            Header::Request {
                id: 2,
                service: "Traced",
                method: 7,
                signature: 9,
                deadline_us: 1,
                format: Format::Postcard,
                trace: TraceContext::new([1; 16], [2; 8], 1),
                metadata: &[],
            },
            Header::Request {
                id: 4,
                service: "WithMetadata",
                method: 7,
                signature: 9,
                deadline_us: 1,
                format: Format::Postcard,
                trace: None,
                metadata: &[1, 1, b'k', 2, 0, b'v', b'w'],
            },
            Header::Request {
                id: 5,
                service: "TracedWithMetadata",
                method: 7,
                signature: 9,
                deadline_us: 1,
                format: Format::Postcard,
                trace: TraceContext::new([1; 16], [2; 8], 1),
                metadata: &[1, 1, b'k', 0, 0],
            },
            Header::Cancel { id: 3 },
            Header::Ping,
            Header::Goodbye(Goodbye::Duplicate),
            Header::Goodbye(Goodbye::Leaving),
        ];
        for status in [
            Status::Ok,
            Status::NotAvailable,
            Status::UnknownMethod,
            Status::SignatureMismatch,
            Status::BadRequest("bad".into()),
            Status::Failed(String::new()),
            Status::Timeout,
            Status::Overloaded,
            Status::Refused("no token".into()),
        ] {
            headers.push(Header::Response { id: 9, status });
        }
        headers
    }

    /// Every header, and every frame cut short inside its header, reads back
    /// as itself or as an error.
    #[test]
    fn every_header_round_trips_and_every_cut_is_refused() {
        let mut codec = FrameCodec::new(1024);
        for header in every_kind() {
            let mut out = BytesMut::new();
            encode(&mut out, 1024, &header, b"body").unwrap();
            let frame = codec.decode(&mut out).unwrap().unwrap();
            let (read, body) = decode(&frame).unwrap();
            assert_eq!((read, body), (header, &b"body"[..]));
            let header_len = frame.len() - 4;
            for cut in 0..header_len {
                let short = frame.slice(..cut);
                assert_eq!(decode(&short).unwrap_err(), HeaderError::Truncated, "cut at {cut}");
            }
        }
    }

    /// W3C: a context with an all-zero id is ignored, not an error.
    #[test]
    fn a_traced_request_with_zero_ids_reads_as_untraced() {
        let request = |trace| Header::Request {
            id: 1,
            service: "S",
            method: 0,
            signature: 0,
            deadline_us: 0,
            format: Format::Postcard,
            trace,
            metadata: &[],
        };
        let mut out = BytesMut::new();
        encode(&mut out, 1024, &request(TraceContext::new([1; 16], [2; 8], 0)), &[]).unwrap();
        let mut frame = out.split_off(4);
        frame[32..48].fill(0);
        let frame = frame.freeze();
        assert_eq!(decode(&frame).unwrap().0, request(None));
    }

    #[test]
    fn unknown_codes_and_bad_text_are_named() {
        let unknown = |frame: &[u8]| decode(frame).unwrap_err();
        assert_eq!(
            unknown(&[9]),
            HeaderError::Unknown {
                what: "frame kind",
                code: 9
            }
        );
        assert_eq!(
            unknown(&[4, 2]),
            HeaderError::Unknown {
                what: "goodbye",
                code: 2
            }
        );
        let mut response = vec![1];
        response.extend_from_slice(&7u64.to_le_bytes());
        response.push(9);
        assert_eq!(
            unknown(&response),
            HeaderError::Unknown {
                what: "status",
                code: 9
            }
        );
        let mut failed = response.clone();
        *failed.last_mut().unwrap() = 5;
        failed.extend_from_slice(&2u32.to_le_bytes());
        failed.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(unknown(&failed), HeaderError::NotUtf8);

        let mut out = BytesMut::new();
        let long = "x".repeat(70_000);
        let request = Header::Request {
            id: 1,
            service: &long,
            method: 0,
            signature: 0,
            deadline_us: 0,
            format: Format::Postcard,
            trace: None,
            metadata: &[],
        };
        assert!(encode(&mut out, usize::MAX, &request, &[]).is_err());
        assert!(out.is_empty(), "nothing is queued for a header that cannot be written");
        let small = Header::Request {
            id: 1,
            service: "S",
            method: 0,
            signature: 0,
            deadline_us: 0,
            format: Format::Postcard,
            trace: None,
            metadata: &[],
        };
        assert!(matches!(
            encode(&mut out, 40, &small, &[0; 10]),
            Err(FrameError::TooLarge { len: 43, max: 40 })
        ));
        assert!(out.is_empty(), "nothing is queued for a frame too large");
    }

    fn status() -> impl proptest::strategy::Strategy<Value = Status> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Status::Ok),
            Just(Status::NotAvailable),
            Just(Status::UnknownMethod),
            Just(Status::SignatureMismatch),
            ".{0,40}".prop_map(Status::BadRequest),
            ".{0,40}".prop_map(Status::Failed),
            Just(Status::Timeout),
            Just(Status::Overloaded),
            ".{0,40}".prop_map(Status::Refused),
        ]
    }

    proptest::proptest! {
        /// Every header, with any field values, decodes to itself after
        /// its frame is cut from a stream.
        #[test]
        fn every_header_round_trips(
            id: u64,
            method: u32,
            signature: u64,
            deadline_us: u64,
            service in "[A-Za-z0-9_.]{1,64}",
            json: bool,
            trace in proptest::option::of((1u128.., 1u64.., proptest::prelude::any::<u8>())),
            status in status(),
            which in 0u8..6,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let header = match which {
                0 => Header::Request {
                    id,
                    service: &service,
                    method,
                    signature,
                    deadline_us,
                    format: if json { Format::Json } else { Format::Postcard },
                    trace: trace.map(|(t, s, flags)| TraceContext {
                        trace_id: t.to_be_bytes(),
                        span_id: s.to_be_bytes(),
                        flags,
                    }),
                    metadata: &[],
                },
                1 => Header::Response { id, status: status.clone() },
                2 => Header::Cancel { id },
                3 => Header::Ping,
                4 => Header::Goodbye(Goodbye::Duplicate),
                _ => Header::Goodbye(Goodbye::Leaving),
            };
            let mut out = BytesMut::new();
            encode(&mut out, 1 << 20, &header, &body).unwrap();
            let frame = FrameCodec::new(1 << 20).decode(&mut out).unwrap().unwrap();
            let (decoded, rest) = decode(&frame).unwrap();
            proptest::prop_assert_eq!(decoded, header);
            proptest::prop_assert_eq!(rest, &body[..]);
        }
    }
}
