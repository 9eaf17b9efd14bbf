//! The trace context a request carries: W3C Trace Context's `traceparent`
//! (version 00) in binary, so that a trace follows a call to the node that
//! runs it.

/// A trace id, the id of the caller's span (the parent of the serving
/// node's span) and the trace flags (bit 0: sampled).
///
/// Who can do what with it: it travels inside sealed records, so nobody on
/// the path can read or change it. A peer holding the cookie can put any
/// value here; the worst it does is make the serving node's span a child of
/// a trace of its choosing (what any W3C `traceparent` header allows). An
/// all-zero trace or span id is invalid in W3C and is dropped, not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) flags: u8,
}

impl TraceContext {
    /// Bytes on the wire: trace id, span id, flags.
    pub(crate) const LEN: usize = 25;

    /// The context, if both ids are valid (not all zero).
    pub(crate) fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<Self> {
        let valid = trace_id != [0; 16] && span_id != [0; 8];
        valid.then_some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    pub(crate) fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.span_id);
        out[24] = self.flags;
        out
    }

    /// The context in `bytes`; `None` if an id is all zero.
    pub(crate) fn from_bytes(bytes: &[u8; Self::LEN]) -> Option<Self> {
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        trace_id.copy_from_slice(&bytes[..16]);
        span_id.copy_from_slice(&bytes[16..24]);
        Self::new(trace_id, span_id, bytes[24])
    }

    /// The trace id in lowercase hex, as `traceparent` and trace viewers
    /// write it.
    pub(crate) fn trace_id_hex(&self) -> String {
        self.trace_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_zero_ids_are_dropped() {
        let context = TraceContext::new([7; 16], [9; 8], 1).unwrap();
        assert_eq!(TraceContext::from_bytes(&context.to_bytes()), Some(context));
        assert_eq!(context.trace_id_hex(), "07".repeat(16));
        assert_eq!(TraceContext::new([0; 16], [9; 8], 1), None);
        assert_eq!(TraceContext::new([7; 16], [0; 8], 1), None);
        let mut bytes = context.to_bytes();
        bytes[16..24].fill(0);
        assert_eq!(TraceContext::from_bytes(&bytes), None);
    }
}
