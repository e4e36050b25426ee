//! The source side: hand each received message to the bus, and acknowledge it (PUBACK
//! for QoS 1, PUBREC for QoS 2) only once every target accepted its event.
//!
//! What the driver has received (up to `max_batch`) is mapped in one adapter call and
//! published onto the bus in order. MQTT has no negative acknowledgement, and a broker
//! redelivers an unacknowledged message only when the session is resumed on a new
//! connection. So:
//!
//! - every target accepted the event: acknowledge;
//! - the adapter refused the message: acknowledge it too (a retry cannot help, and an
//!   unacknowledged message would be redelivered forever); the refusal is logged and
//!   in the packet log;
//! - anything else (a target busy or down, shutdown): keep the message unacknowledged
//!   and hand it over again after a pause, for as long as the session lasts. If the
//!   connection ends first, the broker redelivers it on the next one (when the session
//!   is persistent: `session_expiry_s` > 0).
//!
//! While the bus is full the consumer waits and takes nothing more; the broker should
//! send at most `receive_maximum` unacknowledged QoS 1 and 2 messages, which the driver
//! holds meanwhile (it keeps polling, so that publishing, pings and acknowledgements go
//! on). At shutdown it stops
//! reading and leaves what it did not hand over unacknowledged, for the broker to
//! deliver again when the session resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::v5::Publish;
use tokio::sync::mpsc;

use super::{Endpoint, message};
use crate::endpoints::source::{self, Settle};

/// Why consuming ended.
pub(super) enum End {
    /// The connection ended, or an acknowledgement could not be sent.
    Broken(String),
    /// No route takes the endpoint's events any more.
    RoutesGone,
}

/// Consumes one session's messages for the endpoint.
pub(super) struct Consumer {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// The session's client, through which acknowledgements go.
    client: AsyncClient,
    /// The subscriptions, for logs.
    what: String,
}

impl Consumer {
    pub(super) fn new(endpoint: Arc<Endpoint>, client: AsyncClient) -> Self {
        let what = format!("mqtt {}", endpoint.filters.join(", "));
        Self { endpoint, client, what }
    }

    /// Consumes until the connection ends or the routes go. When the host stops its
    /// sources, it stops consuming and then waits for the session to be closed.
    pub(super) async fn run(self, mut received: mpsc::UnboundedReceiver<Publish>, held: Arc<AtomicUsize>) -> End {
        let sources = self.endpoint.ctx.shutdown.sources.clone();
        let max_batch = self.endpoint.config.max_batch;
        loop {
            let first = tokio::select! {
                biased;
                () = sources.cancelled() => None,
                next = received.recv() => Some(next),
            };
            let Some(first) = first else {
                tracing::debug!(source = %self.what, "stopped consuming for shutdown");
                return std::future::pending().await;
            };
            let Some(first) = first else { return End::Broken(String::from("the connection ended")) };
            let mut batch = vec![first];
            // Take what is already here, without waiting to fill the batch.
            while batch.len() < max_batch {
                match received.try_recv() {
                    Ok(publish) => batch.push(publish),
                    Err(_) => break,
                }
            }
            held.fetch_sub(batch.len(), Ordering::Relaxed);
            if let Some(end) = self.hand_over(batch).await {
                return end;
            }
        }
    }

    /// Hands `batch` over until each message is accepted or refused, acknowledging
    /// each then. `Some` when consuming must end.
    async fn hand_over(&self, mut batch: Vec<Publish>) -> Option<End> {
        let endpoint = &self.endpoint;
        let (ctx, id, key) = (&endpoint.ctx, endpoint.ctx.id, endpoint.ordering_key);
        loop {
            let records = batch.iter().map(|publish| message::from_publish(publish, id, key)).collect();
            let settles = source::hand_over(ctx, &endpoint.adapter, &self.what, records).await;
            if settles.iter().any(Settle::routes_gone) {
                // Unacknowledged: the session keeps them for when routes come back.
                return Some(End::RoutesGone);
            }
            source::pause_before_retry(ctx, &settles).await;
            let mut again = Vec::new();
            for (publish, settle) in batch.into_iter().zip(settles) {
                match settle {
                    Settle::Accept | Settle::Reject(_) => {
                        if let Err(e) = self.client.ack(&publish).await {
                            return Some(End::Broken(format!("acknowledging a message: {e}")));
                        }
                    }
                    Settle::Retry(_) => again.push(publish),
                }
            }
            if again.is_empty() {
                return None;
            }
            if ctx.shutdown.sources.is_cancelled() {
                // Left unacknowledged for the broker to deliver again.
                return Some(std::future::pending().await);
            }
            batch = again;
        }
    }
}
