//! The shutdown tree. SIGTERM or SIGINT starts it; each stage is a token that the
//! components of that stage `select!` on, and the host awaits each stage before
//! cancelling the next (see `Host::shutdown`):
//!
//! 1. `accept`: listeners stop accepting; client connections close (WS 1001, SSE end).
//! 2. `sources`: consumers and memory topics stop publishing into the bus, without
//!    acknowledging what they did not hand over.
//! 3. The bus drains once its last publisher is gone; the pipeline workers finish.
//! 4. Target queues close; endpoints flush their producers and stop.

use tokio_util::sync::CancellationToken;

/// The tokens of the shutdown stages.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled first: stop accepting clients and close open connections.
    pub accept: CancellationToken,
    /// Cancelled once clients are gone: stop publishing broker and memory events.
    pub sources: CancellationToken,
}

/// Resolves on SIGTERM or SIGINT.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
