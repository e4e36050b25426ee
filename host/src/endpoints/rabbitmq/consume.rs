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

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};

use super::{Endpoint, message};
use crate::endpoints::source::{self, Settle};

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

    /// Hands `deliveries` over and then acks, rejects or requeues each message.
    async fn hand_over(&self, deliveries: Vec<Delivery>) -> Step {
        let endpoint = &self.endpoint;
        let (records, ackers): (Vec<_>, Vec<_>) = deliveries
            .into_iter()
            .map(|delivery| message::from_delivery(delivery, endpoint.ctx.id, endpoint.ordering_key))
            .unzip();
        let settles = source::hand_over(&endpoint.ctx, &endpoint.adapter, &self.queue, records).await;
        source::pause_before_retry(&endpoint.ctx, &settles).await;
        let routes_gone = settles.iter().any(Settle::routes_gone);
        for (acker, settle) in ackers.into_iter().zip(settles) {
            let done = match settle {
                Settle::Accept => acker.ack(BasicAckOptions::default()).await,
                // Dead-lettered when the queue has a dead-letter exchange.
                Settle::Reject(_) => {
                    acker.nack(BasicNackOptions { requeue: false, ..BasicNackOptions::default() }).await
                }
                Settle::Retry(_) => acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await,
            };
            if let Err(e) = done {
                return Step::End(End::Broken(format!("acknowledging on queue `{}`: {e}", self.queue)));
            }
        }
        if routes_gone { Step::End(End::RoutesGone) } else { Step::Next }
    }
}
