//! Leaving without a caller noticing: [`Node::drain`] and the signal helper
//! for binaries, [`Node::drain_on_terminate`].
//!
//! The order is what makes it graceful:
//! 1. every service served here is paused and published so: gossip takes it
//!    out of every caller's route, and a caller that still routes here gets
//!    `ServiceNotAvailable`, which says the call did not run, so it fails
//!    over to another node (even a call that is not idempotent);
//! 2. handlers already running finish, up to the timeout;
//! 3. the node leaves as [`Node::shutdown`] does: "leaving" in gossip, two
//!    rounds for it to spread, goodbyes on every connection, then they close.

use std::time::Duration;

use tokio::time::Instant;

use super::api::Node;
use crate::{AdminStatus, Error};

/// How a drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Handlers running when the drain began.
    pub in_flight_at_start: u64,
    /// Handlers still running when the timeout passed (cut off by the
    /// shutdown); 0 when every one finished.
    pub unfinished: u64,
    /// Time from the drain's start until no handler ran (or the timeout).
    pub waited: Duration,
}

/// How often a drain looks at the handlers in flight.
const POLL: Duration = Duration::from_millis(5);

impl Node {
    /// Stops taking calls, lets the handlers in flight finish (up to
    /// `timeout`), then leaves the cluster: what a rolling restart does to
    /// each node in turn. See the module's steps; callers see no error as
    /// long as another node serves what they call.
    ///
    /// ```no_run
    /// # async fn demo(node: malla_runtime::Node) -> Result<(), malla_runtime::Error> {
    /// let report = node.drain(std::time::Duration::from_secs(30)).await?;
    /// assert_eq!(report.unfinished, 0);
    /// # Ok(()) }
    /// ```
    pub async fn drain(&self, timeout: Duration) -> Result<DrainReport, Error> {
        let started = Instant::now();
        // Not the runtime's own: `malla stats` may still ask while it drains.
        let locals = self.parts.registry.locals();
        tracing::info!(node = %self.id(), services = locals.len(), ?timeout, "draining");
        for local in &locals {
            if local.admin_status() == AdminStatus::Active {
                self.set_admin_status(local.name(), AdminStatus::Paused).await?;
            }
        }
        let in_flight = || -> u64 { locals.iter().map(|l| l.telemetry.counters.in_flight()).sum() };
        let in_flight_at_start = in_flight();
        let deadline = started + timeout;
        let mut unfinished = in_flight_at_start;
        while unfinished > 0 && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            unfinished = in_flight();
        }
        let waited = started.elapsed();
        if unfinished > 0 {
            tracing::warn!(node = %self.id(), unfinished, "drain timed out with handlers running");
        }
        self.shutdown().await;
        Ok(DrainReport {
            in_flight_at_start,
            unfinished,
            waited,
        })
    }

    /// Waits for SIGTERM (what Kubernetes, systemd and Docker send to stop a
    /// process) or Ctrl-C, then [drains](Self::drain) with `timeout`: the one
    /// line a binary needs for graceful deploys.
    ///
    /// ```no_run
    /// # async fn demo(node: malla_runtime::Node) -> Result<(), malla_runtime::Error> {
    /// // Keep the timeout under the orchestrator's grace period (30 s in Kubernetes).
    /// node.drain_on_terminate(std::time::Duration::from_secs(20)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn drain_on_terminate(&self, timeout: Duration) -> Result<DrainReport, Error> {
        terminate_signal().await?;
        self.drain(timeout).await
    }
}

/// SIGTERM or Ctrl-C, whichever comes first.
#[cfg(unix)]
async fn terminate_signal() -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => Ok(()),
        result = tokio::signal::ctrl_c() => result.map_err(Error::from),
    }
}

/// Ctrl-C (there is no SIGTERM).
#[cfg(not(unix))]
async fn terminate_signal() -> Result<(), Error> {
    tokio::signal::ctrl_c().await.map_err(Error::from)
}
