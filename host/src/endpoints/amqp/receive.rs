//! The source side: receive with link credit, hand each message to the bus, and settle
//! it only once every target accepted its event.
//!
//! The receiver grants `prefetch` messages of link credit, and grants the next
//! `prefetch` only once every message of the last grant was received and settled: the
//! broker never has more than `prefetch` unsettled messages out to the host, which
//! bounds what the host holds while the bus is full. (The client's automatic credit
//! renews the full credit after half of it is settled, counted from the messages
//! received, not settled, so unsettled messages could pile up beyond it.) What one
//! receiver has ready (up to
//! `max_batch`) is mapped in one adapter call and published onto the bus in order. The
//! messages are then settled in order:
//!
//! - every target accepted the event (an entrypoint hub stored it in its ring): `accepted`;
//! - the adapter refused the message, or it has a body the host cannot carry:
//!   `rejected` with the error, so that the broker dead-letters it. A retry cannot help;
//! - anything else (a target busy or down, no route, shutdown): `released`, after a
//!   short pause, so that the broker delivers it again.
//!
//! At shutdown a receiver stops reading, settles what it handed over, and detaches (a
//! detach, not a close, keeps a durable subscription): messages not handed over stay
//! unsettled and the broker redelivers them.

use std::sync::Arc;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::link::RecvError;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::types::definitions::{self, AmqpError};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use futures_util::FutureExt;

use super::{CLOSE_TIMEOUT, Endpoint, message};
use crate::endpoints::source::{self, Settle};
use crate::event::DeliveryError;

/// Why receiving ended.
pub(super) enum End {
    /// The link or the connection broke.
    Broken(String),
    /// No route takes the endpoint's events any more.
    RoutesGone,
}

/// Receives from one address for the endpoint.
pub(super) struct Consumer {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// The address received from, for records and messages.
    address: String,
    /// The ordering key of everything received here: one link keeps one order.
    ordering_key: u64,
}

impl Consumer {
    pub(super) fn new(endpoint: Arc<Endpoint>, address: String, ordering_key: u64) -> Self {
        Self { endpoint, address, ordering_key }
    }

    /// Receives until the link breaks or the routes go. When the host stops its
    /// sources, it detaches and then waits for the connection to be closed.
    pub(super) async fn run(self, mut receiver: Receiver) -> End {
        let sources = self.endpoint.ctx.shutdown.sources.clone();
        let (max_batch, prefetch) = (self.endpoint.config.max_batch, self.endpoint.config.prefetch);
        // Messages the broker may send so far, and messages taken from the link.
        let (mut granted, mut taken) = (u64::from(prefetch), 0u64);
        if let Err(e) = receiver.set_credit(prefetch).await {
            return End::Broken(format!("granting link credit on `{}`: {e}", self.address));
        }
        loop {
            let first = tokio::select! {
                biased;
                () = sources.cancelled() => None,
                next = receiver.recv::<Body<Value>>() => Some(next),
            };
            let Some(first) = first else {
                self.detach(receiver).await;
                tracing::debug!(address = %self.address, "stopped receiving for shutdown");
                return std::future::pending().await;
            };
            let mut deliveries = match first {
                Ok(delivery) => vec![delivery],
                Err(e) => return End::Broken(self.broken(&e)),
            };
            // Take what is already here, without waiting to fill the batch.
            let mut ended = None;
            while deliveries.len() < max_batch {
                match receiver.recv::<Body<Value>>().now_or_never() {
                    Some(Ok(delivery)) => deliveries.push(delivery),
                    Some(Err(e)) => {
                        ended = Some(End::Broken(self.broken(&e)));
                        break;
                    }
                    None => break,
                }
            }
            taken += deliveries.len() as u64;
            let routes_gone = match self.hand_over(&receiver, deliveries).await {
                Ok(routes_gone) => routes_gone,
                Err(reason) => return End::Broken(reason),
            };
            // Everything granted arrived and is settled now: nothing is out, so the
            // next grant keeps the bound.
            if taken == granted && ended.is_none() && !routes_gone {
                if let Err(e) = receiver.set_credit(prefetch).await {
                    return End::Broken(format!("granting link credit on `{}`: {e}", self.address));
                }
                granted += u64::from(prefetch);
            }
            if let Some(end) = ended {
                return end;
            }
            if routes_gone {
                self.detach(receiver).await;
                return End::RoutesGone;
            }
        }
    }

    /// Why the link broke, in words.
    fn broken(&self, error: &RecvError) -> String {
        let why = match error {
            RecvError::LinkStateError(e) => super::link_error(e),
            other => other.to_string(),
        };
        format!("receiving from `{}`: {why}", self.address)
    }

    /// Detaches the link, keeping a durable subscription on the broker.
    async fn detach(&self, receiver: Receiver) {
        if tokio::time::timeout(CLOSE_TIMEOUT, receiver.detach()).await.is_err() {
            tracing::debug!(address = %self.address, "the broker did not answer the detach in time");
        }
    }

    /// Hands `deliveries` over and settles each one. True when no route takes the
    /// events any more.
    async fn hand_over(
        &self,
        receiver: &Receiver,
        deliveries: Vec<fe2o3_amqp::link::delivery::Delivery<Body<Value>>>,
    ) -> Result<bool, String> {
        let endpoint = &self.endpoint;
        let mut infos = Vec::with_capacity(deliveries.len());
        let mut records = Vec::with_capacity(deliveries.len());
        let mut unreadable = Vec::new();
        for delivery in deliveries {
            let (info, message) = delivery.into_parts();
            let limit = endpoint.config.max_message_bytes;
            let received = message::from_amqp(message, &self.address, endpoint.ctx.id, self.ordering_key);
            match received.and_then(|record| match record.payload.len() as u64 {
                n if n > limit => {
                    Err(format!("the message body is {n} bytes, over the limit of {limit} bytes (`max_message_bytes`)"))
                }
                _ => Ok(record),
            }) {
                Ok(record) => {
                    infos.push(info);
                    records.push(record);
                }
                Err(error) => unreadable.push((info, error)),
            }
        }
        for (info, error) in unreadable {
            tracing::warn!(address = %self.address, error = %error, "a received message cannot be carried; rejecting it");
            let error = definitions::Error::new(AmqpError::DecodeError, Some(error), None);
            receiver.reject(info, error).await.map_err(|e| self.settle_failed(&e))?;
        }
        let settles = source::hand_over(&endpoint.ctx, &endpoint.adapter, &self.address, records).await;
        source::pause_before_retry(&endpoint.ctx, &settles).await;
        let routes_gone = settles.iter().any(Settle::routes_gone);
        for (info, settle) in infos.into_iter().zip(settles) {
            let settled: DeliveryInfo = info;
            let done = match settle {
                Settle::Accept => receiver.accept(settled).await,
                Settle::Reject(error) => {
                    let reason = match error {
                        DeliveryError::Adapter { message, .. } => message,
                        other => other.to_string(),
                    };
                    let error = definitions::Error::new(AmqpError::InternalError, Some(reason), None);
                    receiver.reject(settled, error).await
                }
                Settle::Retry(_) => receiver.release(settled).await,
            };
            done.map_err(|e| self.settle_failed(&e))?;
        }
        Ok(routes_gone)
    }

    /// Why settling failed, in words.
    fn settle_failed(&self, error: &impl std::fmt::Display) -> String {
        format!("settling a message from `{}`: {error}", self.address)
    }
}
