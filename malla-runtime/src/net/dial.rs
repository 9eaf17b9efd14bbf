//! Opening TCP connections, and the errors a failed handshake becomes.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use crate::handshake::HandshakeError;
use crate::telemetry::metrics;
use crate::{Error, NodeId};

/// Opens a TCP connection to `addr`, from `from` when that is an address of
/// the same family and scope, so the traffic comes from where this node
/// listens (multi-homed hosts, firewall rules).
pub(super) async fn open_tcp(addr: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let from = from.filter(|ip| {
        !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4() && ip.is_loopback() == addr.ip().is_loopback()
    });
    let Some(from) = from else {
        return TcpStream::connect(addr).await;
    };
    let socket = if from.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// Logs a failed outgoing handshake and turns it into the public error.
pub(super) fn handshake_error(node: &NodeId, peer: &str, err: HandshakeError) -> Error {
    metrics::handshake_refused(node.as_str(), false, err.is_unauthorized());
    if err.is_unauthorized() {
        tracing::warn!(%node, %peer, "connection refused: {err}");
        Error::Unauthorized {
            peer: peer.to_owned(),
            reason: err.to_string(),
        }
    } else {
        tracing::info!(%node, %peer, "handshake failed: {err}");
        Error::Handshake {
            peer: peer.to_owned(),
            reason: err.to_string(),
        }
    }
}
