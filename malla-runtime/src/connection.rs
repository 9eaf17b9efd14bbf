//! Connections between nodes: one authenticated stream per pair of nodes,
//! multiplexing every service and every concurrent call (request ids), in
//! both directions.
//!
//! Frames wait in an outbox; at most one party writes it at a time. A lone
//! caller writes its request itself (no task hop on the way out); concurrent
//! callers hand the outbox to the writer task, which sends them in one batch.
//! The reader task reads frames where they lie in its buffer, puts replies
//! in their callers' slots of the pending calls and wakes them, and runs
//! requests, first polling each handler inline (most finish at once); when
//! more frames follow a request it holds the outbox, so the replies to a
//! batch leave a kilobyte at a time rather than one write each. The writer
//! task also sends pings when idle and closes the connection when the peer
//! falls silent (Erlang's net tick).
//!
//! | file | what it owns |
//! |---|---|
//! | `link` | the [`Connection`]: its parts, calls out, retiring and closing |
//! | `outbox` | queued frames and who writes them: rules as values, no I/O |
//! | `output` | the outbox, its socket and its sealer |
//! | `writing` | writing the outbox on the task that queued a frame |
//! | `errors` | why a call has no reply, why a connection closed |
//! | `lifecycle` | usable, retired, closed: when to say goodbye and close |
//! | `events` | [`LinkEvent`]s, handed to their one owner in order |
//! | `serving` | [`Request`], and what the connection may run for its peer ([`Services`]) |
//! | `known` | the services a connection's peer has called, found once |
//! | `deadline` | a call's deadline, and the time left the peer is told |
//! | `pending` | calls waiting for a reply, and their deadlines |
//! | `running` | handlers running for the peer |
//! | `reader` | frames in: replies to callers, requests to [`Services`] |
//! | `writer` | the writer task: batches, deadlines, pings, liveness |
//! | `transport` | the byte streams (TCP, Unix sockets) |

mod deadline;
mod errors;
mod events;
mod known;
mod lifecycle;
mod link;
mod outbox;
mod output;
mod pending;
mod reader;
mod running;
mod serving;
mod transport;
mod writer;
mod writing;

use std::sync::Arc;

use bytes::BytesMut;

pub(crate) use deadline::Deadline;
/// What happens to links, as values; see `events`.
pub(crate) type LinkEvent = events::LinkEvent<Connection>;
/// The queue of link events in front of their owner.
pub(crate) type LinkEvents = events::LinkEvents<Connection>;
pub(crate) use errors::{CallError, CloseReason};
pub(crate) use events::LinkOwner;
pub(crate) use link::{Connection, ConnectionConfig, Initiator};
pub(crate) use pending::ReplyBody;
pub(crate) use serving::{Caller, Request, ServedToPeers, Services};
pub(crate) use transport::Transport;

use crate::handshake::{Identity, SessionKeys};
use crate::wire::{RecordOpener, RecordSealer};

/// Starts the reader and writer tasks of an established stream; `read_buf`
/// holds what the handshake read past its last message; with `sealing`,
/// every byte from now on is in sealed records.
#[allow(clippy::too_many_arguments)] // what a handshake establishes, and what the connection is given
pub(crate) fn spawn<T: Transport>(
    stream: T,
    read_buf: BytesMut,
    sealing: Option<SessionKeys>,
    peer: Identity,
    initiator: Initiator,
    services: Arc<dyn Services>,
    events: Arc<LinkEvents>,
    config: ConnectionConfig,
) -> Arc<Connection> {
    let (read, write) = stream.split();
    let (sealer, opener) = match &sealing {
        Some(keys) => (
            Some(RecordSealer::new(&keys.send, keys.rekey_every)),
            Some(RecordOpener::new(&keys.receive, keys.rekey_every)),
        ),
        None => (None, None),
    };
    let conn = Connection::new(Box::new(write), sealer, peer, initiator, services, events, config);
    let reader = tokio::spawn(reader::run(Arc::clone(&conn), read, read_buf, opener));
    conn.set_reader(reader.abort_handle());
    tokio::spawn(writer::run(Arc::clone(&conn)));
    conn
}

#[cfg(test)]
mod tests;
