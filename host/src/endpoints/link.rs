//! What every broker endpoint's connection supervisor shares: the loop that connects,
//! serves and reconnects ([`supervise`]), the backoff between attempts, and the
//! endpoint's health as `/readyz` and failing deliveries see it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::component::ComponentContext;
use crate::event::DeliveryError;
use crate::readiness::Readiness;

/// How one served connection ended.
#[derive(Debug)]
pub enum Ended {
    /// The host is stopping.
    Stop,
    /// The connection broke, for this reason.
    Broken(String),
    /// Routes from the endpoint appeared or went: consuming starts or stops, on a new
    /// connection.
    RoutesChanged,
}

impl Ended {
    /// Why the connection to `url` is gone, for readiness and for what was in flight on
    /// it. `None` for [`Ended::Stop`].
    #[must_use]
    pub fn reason(&self, url: &str) -> Option<String> {
        match self {
            Self::Stop => None,
            Self::Broken(reason) => Some(format!("lost the connection to {url}: {reason}")),
            Self::RoutesChanged => Some(format!("reconnecting to {url}: routes changed")),
        }
    }
}

/// A broker endpoint's protocol, as [`supervise`] drives it.
pub trait Connector: Send + Sync + 'static {
    /// An open connection, subscribed when it consumes.
    type Connection: Send;

    /// The endpoint's context (for its reconnect counter), its health, and the
    /// broker's redacted address.
    fn endpoint(&self) -> (&ComponentContext, &Health, &str);

    /// True when the next connection should consume: routes take the endpoint's
    /// events, and the host is not stopping its sources.
    fn wants_consumer(&self) -> bool;

    /// Connects (within the endpoint's connect timeout), consuming when `consume`.
    /// The error says what failed, as readiness reports it.
    fn open(&self, consume: bool) -> impl Future<Output = Result<Self::Connection, String>> + Send;

    /// Offers `connection` to the publisher and serves it until it ends or `stop`,
    /// then withdraws and closes it.
    fn serve(&self, connection: Self::Connection, stop: &CancellationToken) -> impl Future<Output = Ended> + Send;
}

/// Runs a broker endpoint with a supervised connection: [`supervise`] in a task of
/// its own, while `publish` (given what the supervisor offers through `link`: the
/// live connection, or `None`) drains the endpoint's queue. The queue closes in the
/// last shutdown stage, after the bus drained, so the connection stays up until then
/// and drained deliveries are still sent; then the supervisor stops.
pub async fn run<T, C, P>(
    connector: impl FnOnce(watch::Sender<Option<T>>) -> C,
    publish: impl FnOnce(watch::Receiver<Option<T>>) -> P,
) where
    C: Connector,
    P: Future<Output = ()>,
{
    let (link, watching) = watch::channel(None);
    let stop = CancellationToken::new();
    let connector = connector(link);
    let supervisor = {
        let stop = stop.clone();
        tokio::spawn(async move { supervise(&connector, &stop).await }.in_current_span())
    };
    publish(watching).await;
    stop.cancel();
    if let Err(e) = supervisor.await {
        tracing::error!(error = %e, "the connection supervisor failed");
    }
}

/// Connects, serves and reconnects with [`Backoff`] until `stop`, keeping the
/// endpoint's health (and so `/readyz`) up to date and counting reconnects.
pub async fn supervise(connector: &impl Connector, stop: &CancellationToken) {
    let (ctx, health, url) = connector.endpoint();
    let mut backoff = Backoff::default();
    let mut connected_before = false;
    while !stop.is_cancelled() {
        let attempt = tokio::select! {
            attempt = connector.open(connector.wants_consumer()) => attempt,
            () = stop.cancelled() => return,
        };
        match attempt {
            Ok(connection) => {
                if connected_before && let Some(stats) = ctx.recorder.stats(ctx.id) {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                connected_before = true;
                backoff.reset();
                health.report(None);
                let ended = connector.serve(connection, stop).await;
                let Some(reason) = ended.reason(url) else { return };
                health.report(Some(reason.clone()));
                if matches!(ended, Ended::RoutesChanged) {
                    tracing::info!("routes from the endpoint changed; reconnecting to start or stop consuming");
                    continue;
                }
                tracing::warn!(reason = %reason, "the broker connection broke; reconnecting");
            }
            Err(e) => health.attempt_failed(url, &e, backoff.pause()),
        }
        if !backoff.wait(stop).await {
            return;
        }
    }
}

/// The first pause before reconnecting; it doubles on every failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Exponential backoff between connection attempts, capped at [`MAX_BACKOFF`].
#[derive(Debug)]
pub struct Backoff {
    /// The next pause.
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_BACKOFF }
    }
}

impl Backoff {
    /// After a success: the next failure waits the first pause again.
    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }

    /// The pause the next [`Backoff::wait`] takes.
    #[must_use]
    pub fn pause(&self) -> Duration {
        self.next
    }

    /// Waits the current pause and doubles it. False when `stop` came first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = tokio::time::sleep(pause) => true,
            () = stop.cancelled() => false,
        }
    }
}

/// Whether an endpoint is connected, and why not: reported on `/readyz` and given to
/// deliveries that fail fast while it is down.
#[derive(Debug)]
pub struct Health {
    /// The endpoint's name, as `/readyz` and errors name it.
    name: Arc<str>,
    /// Where readiness is reported.
    readiness: Arc<Readiness>,
    /// Why the endpoint is not connected; empty while it is.
    down_reason: Mutex<String>,
    /// The last connection error logged, so that a broker that stays down is logged
    /// once at `warn` and then at `debug`.
    last_error: Mutex<String>,
}

impl Health {
    /// An endpoint not yet connected: `connecting` says where to.
    #[must_use]
    pub fn connecting(name: Arc<str>, readiness: Arc<Readiness>, connecting: String) -> Self {
        readiness.report(&name, Some(connecting.clone()));
        Self { name, readiness, down_reason: Mutex::new(connecting), last_error: Mutex::new(String::new()) }
    }

    /// Reports the endpoint down (with why) or up with `None`.
    pub fn report(&self, reason: Option<String>) {
        match &reason {
            Some(reason) => reason.clone_into(&mut lock(&self.down_reason)),
            None => {
                lock(&self.down_reason).clear();
                lock(&self.last_error).clear();
            }
        }
        self.readiness.report(&self.name, reason);
    }

    /// Reports a failed connection attempt: `error` is the client's message, `broker`
    /// the redacted address. Logged at `warn` when it differs from the previous one.
    pub fn attempt_failed(&self, broker: &str, error: &str, retry_in: Duration) {
        let reason = format!("not connected to {broker}: {error}");
        let mut last = lock(&self.last_error);
        if *last == error {
            tracing::debug!(reason = %reason, retry_in_ms = retry_in.as_millis(), "still not connected");
        } else {
            tracing::warn!(reason = %reason, retry_in_ms = retry_in.as_millis(), "cannot connect");
            error.clone_into(&mut last);
        }
        drop(last);
        self.report(Some(reason));
    }

    /// True while the endpoint is not connected: for endpoints whose client library
    /// has no connection state of its own to look at before sending.
    #[must_use]
    pub fn is_down(&self) -> bool {
        !lock(&self.down_reason).is_empty()
    }

    /// The error for a delivery that cannot be sent because the endpoint is down.
    #[must_use]
    pub fn unavailable(&self) -> DeliveryError {
        DeliveryError::Unavailable { target: self.name.to_string(), message: lock(&self.down_reason).clone() }
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked.
fn lock(mutex: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap_and_resets() {
        let stop = CancellationToken::new();
        let mut backoff = Backoff::default();
        let mut pauses = Vec::new();
        for _ in 0..8 {
            pauses.push(backoff.pause());
            assert!(backoff.wait(&stop).await);
        }
        let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.pause(), FIRST_BACKOFF);
        stop.cancel();
        assert!(!backoff.wait(&stop).await, "a stopped host does not wait");
    }

    #[test]
    fn health_reports_down_and_up_and_names_the_reason() {
        let readiness = Arc::new(Readiness::default());
        let health = Health::connecting(Arc::from("orders"), Arc::clone(&readiness), String::from("connecting to x"));
        readiness.set_started();
        assert_eq!(readiness.problems(), ["orders: connecting to x"]);
        assert!(health.is_down());
        health.attempt_failed("amqp://u:***@h", "refused", FIRST_BACKOFF);
        let DeliveryError::Unavailable { target, message } = health.unavailable() else { panic!("not unavailable") };
        assert_eq!(target, "orders");
        assert_eq!(message, "not connected to amqp://u:***@h: refused");
        health.report(None);
        assert!(readiness.problems().is_empty());
        assert!(!health.is_down());
    }
}
