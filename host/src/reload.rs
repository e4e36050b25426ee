//! Route hot reload: on SIGHUP and whenever the config file changes, the file is
//! loaded and checked again; valid routes replace the running ones in one atomic
//! swap, and an invalid file leaves them as they are and logs why.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;

use crate::host::Config;
use crate::host::Host;

/// Watches `path` (every `poll` when not zero) and SIGHUP until `stop`, reloading the
/// routes of `host`. `loaded` is the file's modification time when the running
/// configuration was read, so that a change made while the host was starting is
/// not missed.
///
/// `hangup` is the SIGHUP handler, installed before the host started so that a
/// SIGHUP during startup is a reload, not the default action (which kills the
/// process).
pub async fn watch(
    host: &Host,
    path: PathBuf,
    poll: Duration,
    loaded: Option<SystemTime>,
    mut hangup: Signal,
    stop: CancellationToken,
) {
    let mut seen = loaded;
    let mut ticker = tokio::time::interval(if poll.is_zero() { Duration::from_secs(3600) } else { poll });
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let cause = tokio::select! {
            () = stop.cancelled() => return,
            _ = hangup.recv() => "SIGHUP",
            _ = ticker.tick(), if !poll.is_zero() => {
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                "file change"
            }
        };
        reload(host, &path, cause);
    }
}

/// The file's modification time, if it can be read.
#[must_use]
pub fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Loads `path` and applies its routes to `host`, logging the result.
pub fn reload(host: &Host, path: &std::path::Path, cause: &str) {
    match Config::load(path).and_then(|config| host.reload_routes(&config)) {
        Ok(routes) => tracing::info!(cause, routes, "routes reloaded"),
        Err(e) => tracing::warn!(cause, error = %e.inline(), "reload refused; the running routes stay"),
    }
}
