//! The source side: consume with manual acks, hand each message to the bus, and ack
//! it only once every target accepted its event.
//!
//! What one poll of the consumer has ready (up to `max_batch`) is mapped in one adapter
//! call and published onto the bus in order, each event carrying an [`Ack`]. The
//! messages are then settled in order:
//!
//! - every target accepted the event (an entrypoint hub stored it in its ring): `ack`;
//! - the adapter refused the message: `nack` without requeue, so the broker
//!   dead-letters it when the queue has a dead-letter exchange. A retry cannot help,
//!   and requeueing would deliver the same message again forever;
//! - anything else (a target busy or down, no route, shutdown): `nack` with requeue,
//!   after a short pause so that a failing target is not hammered.
//!
//! While the bus is full the consumer keeps retrying the event it holds and reads
//! nothing more; the broker stops sending at `prefetch` unacked messages. At shutdown
//! it stops reading, settles what it handed over, and drops its consumer: messages
//! not handed over stay unacked and the broker requeues them when the connection closes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};

use super::{Endpoint, message};
use crate::adapter::{self, Direction};
use crate::bus::BusError;
use crate::event::{Ack, AckReceiver, DeliveryError, Event};

/// The pause before requeueing messages whose events failed, so that redelivery does
/// not spin while a target stays busy or down.
const REQUEUE_PAUSE: Duration = Duration::from_millis(200);

/// Why consuming ended.
pub(super) enum End {
    /// The channel or connection broke, or the broker cancelled the consumer.
    Broken(String),
    /// No route takes the endpoint's events any more.
    RoutesGone,
}

/// What happened to one handed-over batch.
enum Step {
    /// Settled; consume on.
    Next,
    /// Consume no more: see [`End`].
    End(End),
}

/// Consumes one queue for the endpoint.
pub(super) struct Consumer {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// The queue consumed, for messages.
    queue: String,
}

impl Consumer {
    pub(super) fn new(endpoint: Arc<Endpoint>, queue: &str) -> Self {
        Self { endpoint, queue: queue.to_owned() }
    }

    /// Consumes until the session breaks or the routes go. When the host stops its
    /// sources, it stops consuming and then waits for the session to be closed.
    pub(super) async fn run(self, mut stream: lapin::Consumer) -> End {
        let sources = self.endpoint.ctx.shutdown.sources.clone();
        let max_batch = self.endpoint.config.max_batch;
        loop {
            let first = tokio::select! {
                biased;
                () = sources.cancelled() => None,
                next = stream.next() => Some(next),
            };
            let Some(first) = first else {
                // Dropping the consumer cancels it; what it had prefetched stays
                // unacked and is requeued when the connection closes.
                drop(stream);
                tracing::debug!(queue = %self.queue, "stopped consuming for shutdown");
                return std::future::pending().await;
            };
            let mut deliveries = match first {
                Some(Ok(delivery)) => vec![delivery],
                Some(Err(e)) => return End::Broken(format!("consuming queue `{}`: {e}", self.queue)),
                None => return End::Broken(format!("the broker cancelled the consumer of queue `{}`", self.queue)),
            };
            // Take what is already here, without waiting to fill the batch.
            let mut ended = None;
            while deliveries.len() < max_batch {
                match stream.next().now_or_never() {
                    Some(Some(Ok(delivery))) => deliveries.push(delivery),
                    Some(Some(Err(e))) => {
                        ended = Some(End::Broken(format!("consuming queue `{}`: {e}", self.queue)));
                        break;
                    }
                    Some(None) => {
                        ended =
                            Some(End::Broken(format!("the broker cancelled the consumer of queue `{}`", self.queue)));
                        break;
                    }
                    None => break,
                }
            }
            if let Step::End(end) = self.hand_over(deliveries).await {
                return end;
            }
            if let Some(end) = ended {
                return end;
            }
        }
    }

    /// Maps `deliveries`, publishes their events onto the bus and settles each message.
    async fn hand_over(&self, deliveries: Vec<Delivery>) -> Step {
        let ctx = &self.endpoint.ctx;
        let mut records = Vec::with_capacity(deliveries.len());
        let mut waiting = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let (mut record, acker) = message::from_delivery(delivery, ctx.id, self.endpoint.ordering_key);
            let (ack, settled) = Ack::new();
            record.ack = Some(ack);
            records.push(record);
            waiting.push((acker, settled));
        }
        // Route 0: the mapping happens before routing, as an entrypoint's decode does.
        let mapped = match self.endpoint.adapter.map(Direction::Downstream, &adapter::route_context(0), records) {
            Ok(mapped) => mapped,
            Err((_, error)) => {
                // A trap or deadline may pass; the messages go back to the queue.
                tracing::warn!(queue = %self.queue, error = %error, "the adapter failed on consumed messages; requeueing them");
                tokio::time::sleep(REQUEUE_PAUSE).await;
                for (acker, _) in waiting {
                    let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                    if let Err(e) = acker.nack(requeue).await {
                        return Step::End(End::Broken(format!("requeueing on queue `{}`: {e}", self.queue)));
                    }
                }
                return Step::Next;
            }
        };
        for (mut record, error) in mapped.refused {
            let adapter = self.endpoint.adapter.name().to_owned();
            record.settle(Err(DeliveryError::Adapter { adapter, message: error.message }));
        }
        for event in mapped.outputs {
            if !self.publish(event).await {
                // Shutdown: the events not handed over drop with their acknowledgement
                // parts, which fail, so their messages are not acked.
                break;
            }
        }
        self.settle(waiting).await
    }

    /// Puts `event` on the bus, waiting as long as the bus is full. False when the host
    /// stopped its sources first.
    async fn publish(&self, mut event: Event) -> bool {
        let sources = &self.endpoint.ctx.shutdown.sources;
        let mut waited = false;
        loop {
            let published = tokio::select! {
                biased;
                () = sources.cancelled() => return false,
                published = self.endpoint.ctx.bus.publish(event) => published,
            };
            match published {
                Ok(()) => return true,
                Err(BusError::Busy { event: back, .. }) => {
                    if !waited {
                        tracing::debug!(queue = %self.queue, "the bus is full; consuming waits");
                        waited = true;
                    }
                    event = *back;
                }
                Err(BusError::Closed(_)) => return false,
            }
        }
    }

    /// Waits for every message's acknowledgement, then acks, rejects or requeues it.
    async fn settle(&self, waiting: Vec<(lapin::Acker, AckReceiver)>) -> Step {
        let mut outcomes = Vec::with_capacity(waiting.len());
        for (acker, settled) in waiting {
            // A dropped acknowledgement means the host lost the event: not delivered.
            outcomes.push((acker, settled.await.unwrap_or(Err(DeliveryError::ShuttingDown))));
        }
        let retried = outcomes.iter().any(|(_, o)| matches!(o, Err(e) if !matches!(e, DeliveryError::Adapter { .. })));
        if retried && !self.endpoint.ctx.shutdown.sources.is_cancelled() {
            tokio::time::sleep(REQUEUE_PAUSE).await;
        }
        let mut routes_gone = false;
        for (acker, outcome) in outcomes {
            let done = match outcome {
                Ok(()) => acker.ack(BasicAckOptions::default()).await,
                Err(error @ DeliveryError::Adapter { .. }) => {
                    tracing::warn!(queue = %self.queue, error = %error, "a consumed message was refused; rejecting it without requeue (dead-lettered if the queue has a dead-letter exchange)");
                    acker.nack(BasicNackOptions { requeue: false, ..BasicNackOptions::default() }).await
                }
                Err(error) => {
                    routes_gone |= matches!(error, DeliveryError::NoRoute(_));
                    tracing::debug!(queue = %self.queue, error = %error, "a consumed message was not delivered; requeueing it");
                    acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await
                }
            };
            if let Err(e) = done {
                return Step::End(End::Broken(format!("acknowledging on queue `{}`: {e}", self.queue)));
            }
        }
        if routes_gone { Step::End(End::RoutesGone) } else { Step::Next }
    }
}
