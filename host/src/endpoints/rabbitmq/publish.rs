//! The target side: publish each mapped batch; its publisher confirms are its outcomes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::FutureExt;
use lapin::Confirmation;
use lapin::options::BasicPublishOptions;
use tokio::sync::watch;
use tokio::time::Instant;

use super::message::{self, describe};
use super::{Endpoint, Session};
use crate::endpoints::target::{self, Pending};
use crate::event::{DeliveryError, Event};
use crate::pipeline::TargetReceiver;

/// Publishes what the pipeline delivers to the endpoint.
pub(super) struct Publisher {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// The live session, `None` while disconnected.
    link: watch::Receiver<Option<Arc<Session>>>,
    /// How long a batch's publishes and confirms may take.
    confirm_timeout: Duration,
}

impl Publisher {
    pub(super) fn new(endpoint: Arc<Endpoint>, link: watch::Receiver<Option<Arc<Session>>>) -> Self {
        let confirm_timeout = Duration::from_millis(endpoint.config.confirm_timeout_ms);
        Self { endpoint, link, confirm_timeout }
    }

    /// Runs until the queue closes (the last stage of shutdown).
    pub(super) async fn run(mut self, queue: TargetReceiver) {
        let endpoint = Arc::clone(&self.endpoint);
        let config = &endpoint.config;
        let batches = target::Batches::new(queue, config.max_batch, config.max_message_bytes);
        target::publish(&endpoint.ctx, &endpoint.adapter, batches, &mut self).await;
    }

    /// Publishes every record and returns the future of each one's confirm.
    async fn start_batch(&self, pending: &[Pending]) -> Vec<target::Outcome> {
        let session = self.link.borrow().clone();
        let Some(session) = session else {
            // Fail fast: a client waiting on a broker that is down should hear so now.
            return target::failed(pending.len(), &self.endpoint.health.unavailable());
        };
        let deadline = Instant::now() + self.confirm_timeout;
        let mut confirms = Vec::with_capacity(pending.len());
        for p in pending {
            confirms.push(self.publish(&session, &p.record, deadline).await);
        }
        confirms
    }

    /// Publishes `record` and returns the future of its outcome: the broker's confirm,
    /// or an error that is already known.
    async fn publish(&self, session: &Session, record: &Event, deadline: Instant) -> target::Outcome {
        let target = self.target();
        let outgoing = match message::to_amqp(record, self.endpoint.config.exchange.as_deref().unwrap_or("")) {
            Ok(outgoing) => outgoing,
            Err(message) => return target::refused(DeliveryError::Target { target, message }),
        };
        let place = describe(outgoing.exchange.as_str(), outgoing.routing_key.as_str());
        let options = BasicPublishOptions { mandatory: self.endpoint.config.mandatory, immediate: false };
        let published = tokio::time::timeout_at(
            deadline,
            session.publisher.basic_publish(
                outgoing.exchange,
                outgoing.routing_key,
                options,
                &record.payload,
                outgoing.properties,
            ),
        )
        .await;
        let confirm = match published {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(e)) => {
                self.endpoint.broken.notify_one();
                let message = format!("{place}: not sent, the connection to {} failed: {e}", self.endpoint.url);
                return target::refused(DeliveryError::Unavailable { target, message });
            }
            Err(_) => {
                let message = format!("{place}: not sent within {} ms", self.confirm_timeout.as_millis());
                return target::refused(DeliveryError::Timeout { target, message });
            }
        };
        let timeout_ms = self.confirm_timeout.as_millis();
        let url = self.endpoint.url.clone();
        let endpoint = Arc::clone(&self.endpoint);
        async move {
            let confirmed = tokio::time::timeout_at(deadline, confirm).await;
            let failed = |message: String| Err(DeliveryError::Target { target: target.clone(), message });
            match confirmed {
                Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                Ok(Ok(Confirmation::Ack(Some(returned)))) => failed(format!(
                    "{place}: returned by the broker as unroutable ({} {}): no queue is bound for it",
                    returned.reply_code, returned.reply_text
                )),
                Ok(Ok(Confirmation::Nack(_))) => failed(format!("{place}: refused by the broker (nack)")),
                Ok(Ok(Confirmation::NotRequested)) => {
                    failed(format!("{place}: the channel is not in confirm mode, so delivery is unknown"))
                }
                // A channel-level refusal: the broker answered for this message.
                Ok(Err(e)) if e.is_amqp_soft_error() => {
                    endpoint.broken.notify_one();
                    failed(format!("{place}: {e}"))
                }
                Ok(Err(e)) => {
                    endpoint.broken.notify_one();
                    let message = format!("{place}: the connection to {url} failed before the broker confirmed: {e}");
                    Err(DeliveryError::Unavailable { target, message })
                }
                Err(_) => Err(DeliveryError::Timeout {
                    target,
                    message: format!(
                        "{place}: not confirmed by the broker within {timeout_ms} ms; it may or may not have been delivered"
                    ),
                }),
            }
        }
        .boxed()
    }

    /// The endpoint's name, as errors name the target.
    fn target(&self) -> String {
        self.endpoint.ctx.name.to_string()
    }
}

impl target::Sender for Publisher {
    fn start(&mut self, pending: &[Pending]) -> impl Future<Output = Vec<target::Outcome>> + Send {
        self.start_batch(pending)
    }
}
