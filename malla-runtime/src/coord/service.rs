//! `malla.Raft`, the service every node serves for the group: openraft's
//! RPCs to this node's member, and the requests other nodes send the leader.

use std::sync::Weak;

use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;

use super::coordinator::Coordinator;
use super::types::TypeConfig;
use super::wire::{Admin, MANIFEST, Method, Query, WriteRequest};
use crate::service::{DispatchError, DispatchErrorKind, DispatchFuture, Format, encode_reply};
use crate::{Service, ServiceManifest};

/// The service, reaching the node's coordination weakly (the node's
/// registry holds the service).
pub(crate) struct RaftService {
    pub(crate) coordinator: Weak<Coordinator>,
}

impl Service for RaftService {
    fn manifest(&self) -> &'static ServiceManifest {
        &MANIFEST
    }

    fn dispatch(&self, index: usize, format: Format, args: &[u8]) -> Result<DispatchFuture, DispatchError> {
        let method = Method::from_index(index).ok_or_else(|| DispatchError::unknown_method(index))?;
        if format != Format::Postcard {
            return Err(bad("the consensus group speaks postcard only"));
        }
        let coordinator = self.coordinator.clone();
        let gone = || bad("the node has stopped");
        Ok(match method {
            Method::Append => {
                let request: AppendEntriesRequest<TypeConfig> = decode(args)?;
                Box::pin(async move {
                    let coord = coordinator.upgrade().ok_or_else(gone)?;
                    let reply = match coord.member_for_rpc().await {
                        Ok(member) => member.raft.append_entries(request).await,
                        Err(err) => Err(stopped(err)),
                    };
                    encode_reply(format, &reply)
                })
            }
            Method::Vote => {
                let request: VoteRequest<u64> = decode(args)?;
                Box::pin(async move {
                    let coord = coordinator.upgrade().ok_or_else(gone)?;
                    let reply = match coord.member_for_rpc().await {
                        Ok(member) => member.raft.vote(request).await,
                        Err(err) => Err(stopped(err)),
                    };
                    encode_reply(format, &reply)
                })
            }
            Method::Snapshot => {
                let request: InstallSnapshotRequest<TypeConfig> = decode(args)?;
                Box::pin(async move {
                    let coord = coordinator.upgrade().ok_or_else(gone)?;
                    let reply = match coord.member_for_rpc().await {
                        Ok(member) => member.raft.install_snapshot(request).await,
                        Err(err) => Err(stopped::<InstallSnapshotError>(err)),
                    };
                    encode_reply(format, &reply)
                })
            }
            Method::Write => {
                let command: WriteRequest = decode(args)?;
                Box::pin(async move {
                    let coord = coordinator.upgrade().ok_or_else(gone)?;
                    encode_reply(format, &coord.serve_write(command).await)
                })
            }
            Method::Read => {
                let query: Query = decode(args)?;
                Box::pin(async move {
                    let coord = coordinator.upgrade().ok_or_else(gone)?;
                    encode_reply(format, &coord.serve_read(query).await)
                })
            }
            Method::Admin => {
                let change: Admin = decode(args)?;
                Box::pin(async move {
                    let coord = coordinator.upgrade().ok_or_else(gone)?;
                    encode_reply(format, &coord.serve_admin(change).await)
                })
            }
        })
    }
}

fn decode<T: DeserializeOwned>(args: &[u8]) -> Result<T, DispatchError> {
    crate::wire::bounded::from_bytes(args).map_err(|e| bad(&format!("a malformed consensus request: {e}")))
}

fn bad(why: &str) -> DispatchError {
    DispatchError(DispatchErrorKind::BadArguments(why.to_owned()))
}

/// openraft's answer for a member that cannot run here.
fn stopped<E: std::error::Error>(err: crate::Error) -> RaftError<u64, E> {
    tracing::warn!("cannot take part in the consensus group: {err}");
    RaftError::Fatal(Fatal::Stopped)
}
