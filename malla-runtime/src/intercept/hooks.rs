//! The client-side interceptor trait and what its hooks see.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::wire::Format;
use crate::{CallOptions, Error, Metadata, MethodManifest, NodeId};

/// A client-side call layer: every hook has a default that does nothing,
/// so an interceptor implements only the ones it needs.
///
/// ```
/// use malla_runtime::{CallInfo, Decision, Interceptor};
///
/// /// Adds the caller's token to every call.
/// struct Token(Vec<u8>);
///
/// impl Interceptor for Token {
///     fn before_call(&self, call: &mut CallInfo<'_>) -> Decision {
///         match call.metadata.insert("authorization", self.0.clone()) {
///             Ok(()) => Decision::Continue,
///             Err(err) => Decision::Refuse(err),
///         }
///     }
/// }
/// ```
pub trait Interceptor: Send + Sync + 'static {
    /// Before the call's first attempt: may read and add metadata, change
    /// the options (deadline, nodes, balance), or answer or refuse the call
    /// itself, in which case no later layer and no attempt runs.
    fn before_call(&self, call: &mut CallInfo<'_>) -> Decision {
        let _ = call;
        Decision::Continue
    }

    /// After the call, past failover, with its outcome: may ask for the
    /// whole call to run again (see [`AfterCall::Retry`] for when it does).
    fn after_call(&self, call: &CallInfo<'_>, outcome: &CallOutcome<'_>) -> AfterCall {
        let _ = (call, outcome);
        AfterCall::Finish
    }

    /// Before each attempt, local or remote: may add metadata for this
    /// attempt, or refuse it; a refused attempt did not run, and the call
    /// moves on to the next node.
    fn before_attempt(&self, attempt: &mut AttemptInfo<'_>) -> Result<(), Error> {
        let _ = attempt;
        Ok(())
    }

    /// After each attempt that was sent (or started locally), with its outcome.
    fn after_attempt(&self, attempt: &AttemptInfo<'_>, outcome: &AttemptOutcome<'_>) {
        let _ = (attempt, outcome);
    }
}

/// A shared interceptor is one too: keep an `Arc` to read what it saw.
impl<T: Interceptor + ?Sized> Interceptor for std::sync::Arc<T> {
    fn before_call(&self, call: &mut CallInfo<'_>) -> Decision {
        (**self).before_call(call)
    }

    fn after_call(&self, call: &CallInfo<'_>, outcome: &CallOutcome<'_>) -> AfterCall {
        (**self).after_call(call, outcome)
    }

    fn before_attempt(&self, attempt: &mut AttemptInfo<'_>) -> Result<(), Error> {
        (**self).before_attempt(attempt)
    }

    fn after_attempt(&self, attempt: &AttemptInfo<'_>, outcome: &AttemptOutcome<'_>) {
        (**self).after_attempt(attempt, outcome)
    }
}

/// What [`Interceptor::before_call`] decides.
#[derive(Debug)]
pub enum Decision {
    /// Go on: the next layer, then the call's attempts.
    Continue,
    /// Answer the call with this reply, encoded as the call's format
    /// ([`CallInfo::encode_reply`]); nothing is sent.
    Answer(Vec<u8>),
    /// Fail the call with this error; nothing is sent.
    Refuse(Error),
}

/// What [`Interceptor::after_call`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCall {
    /// The outcome stands.
    Finish,
    /// Run the whole call again, if it ran nowhere or its method is
    /// idempotent, and its deadline has not passed; otherwise the outcome stands.
    Retry,
}

/// A call, as its interceptors see it.
#[derive(Debug)]
pub struct CallInfo<'a> {
    service: &'a str,
    method: &'a MethodManifest,
    /// The call's options; a change applies to the call's attempts.
    pub options: CallOptions,
    /// Metadata sent with each attempt.
    pub metadata: Metadata,
    started: Instant,
    run: u32,
    format: Format,
}

impl<'a> CallInfo<'a> {
    pub(crate) fn new(service: &'a str, method: &'a MethodManifest, options: CallOptions, format: Format) -> Self {
        CallInfo {
            service,
            method,
            options,
            metadata: Metadata::new(),
            started: Instant::now(),
            run: 0,
            format,
        }
    }

    /// The service's wire name.
    pub fn service(&self) -> &str {
        self.service
    }

    /// The method: name, id, whether it is idempotent.
    pub fn method(&self) -> &MethodManifest {
        self.method
    }

    /// When the call started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// How many times the call ran again at an `after_call`'s asking: 0
    /// on its first run.
    pub fn retries(&self) -> u32 {
        self.run
    }

    pub(crate) fn next_run(&mut self) {
        self.run += 1;
    }

    /// `reply` encoded as this call expects its reply, for
    /// [`Decision::Answer`]. The reply must have the method's return type.
    pub fn encode_reply<T: Serialize>(&self, reply: &T) -> Result<Vec<u8>, Error> {
        let encoded = match self.format {
            Format::Postcard => postcard::to_stdvec(reply).map_err(|e| e.to_string()),
            Format::Json => serde_json::to_vec(reply).map_err(|e| e.to_string()),
        };
        encoded.map_err(|message| {
            Error::codec(
                "encode an interceptor's reply to",
                self.service,
                self.method.name(),
                message,
            )
        })
    }
}

/// How a call ended, for [`Interceptor::after_call`].
#[derive(Debug)]
pub struct CallOutcome<'a> {
    pub(crate) result: Result<(), &'a Error>,
    pub(crate) ran: bool,
    pub(crate) timer: Elapsed,
}

impl CallOutcome<'_> {
    /// The call's error, if it failed.
    pub fn error(&self) -> Option<&Error> {
        self.result.err()
    }

    /// Whether it succeeded.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// Whether it ran (or may have run) somewhere: false when every
    /// attempt was refused before running, or none was made.
    pub fn ran(&self) -> bool {
        self.ran
    }

    /// How long the call took, its attempts and failover included.
    pub fn elapsed(&self) -> Duration {
        self.timer.get()
    }
}

/// One attempt of a call, as its interceptors see it.
#[derive(Debug)]
pub struct AttemptInfo<'a> {
    pub(crate) service: &'a str,
    pub(crate) method: &'a MethodManifest,
    pub(crate) node: &'a NodeId,
    pub(crate) local: bool,
    pub(crate) number: u32,
    /// Metadata sent with this attempt: the call's, and what this
    /// attempt's interceptors add.
    pub metadata: Metadata,
}

impl AttemptInfo<'_> {
    /// The service's wire name.
    pub fn service(&self) -> &str {
        self.service
    }

    /// The method.
    pub fn method(&self) -> &MethodManifest {
        self.method
    }

    /// The node this attempt goes to.
    pub fn node(&self) -> &NodeId {
        self.node
    }

    /// Whether it goes to this node's own instance, in-process.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// Its number in the call, from 1.
    pub fn number(&self) -> u32 {
        self.number
    }
}

/// How one attempt ended, for [`Interceptor::after_attempt`].
#[derive(Debug)]
pub struct AttemptOutcome<'a> {
    pub(crate) result: Result<(), &'a Error>,
    pub(crate) ran: bool,
    pub(crate) timer: Elapsed,
}

impl AttemptOutcome<'_> {
    /// The attempt's error, if it failed.
    pub fn error(&self) -> Option<&Error> {
        self.result.err()
    }

    /// Whether it succeeded.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// Whether it ran (or may have run) there: false when it was refused
    /// before running (not connected, not available, overloaded), so the
    /// call moved on.
    pub fn ran(&self) -> bool {
        self.ran
    }

    /// How long the attempt took.
    pub fn elapsed(&self) -> Duration {
        self.timer.get()
    }
}

/// Time since a start, read from the clock only if a hook asks, and then
/// once: every hook of an outcome sees the same duration.
#[derive(Debug)]
pub(crate) struct Elapsed {
    started: Instant,
    read: std::cell::OnceCell<Duration>,
}

impl Elapsed {
    pub(crate) fn since(started: Instant) -> Self {
        Elapsed {
            started,
            read: std::cell::OnceCell::new(),
        }
    }

    fn get(&self) -> Duration {
        *self.read.get_or_init(|| self.started.elapsed())
    }
}
