//! The shutdown tree. SIGTERM or SIGINT starts it; each stage is a token that the
//! components of that stage `select!` on, and the host awaits each stage before
//! cancelling the next (see `Host::shutdown`):
//!
//! 1. `accept`: listeners stop accepting; client connections close (WS 1001, SSE end).
//! 2. `sources`: consumers and memory topics stop publishing into the bus, without
//!    acknowledging what they did not hand over.
//! 3. The bus drains once its last publisher is gone; the pipeline workers finish.
//! 4. Target queues close; endpoints flush their producers and stop.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The tokens of the shutdown stages.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled first: stop accepting clients and close open connections.
    pub accept: CancellationToken,
    /// Cancelled once clients are gone: stop publishing broker and memory events.
    pub sources: CancellationToken,
}

/// The handlers of SIGTERM and SIGINT. Installed before the host starts, so that a
/// signal that comes during startup (or just after the host logged that it started)
/// is a shutdown rather than the default action, which kills the process.
#[derive(Debug)]
pub struct StopSignals {
    /// SIGTERM.
    term: Signal,
    /// SIGINT.
    int: Signal,
}

impl StopSignals {
    /// Installs the handlers; signals are caught from now on.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Resolves on the next SIGTERM or SIGINT (one caught before this was called
    /// included), naming it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
