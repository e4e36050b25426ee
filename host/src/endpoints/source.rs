//! The consuming side every broker endpoint shares: map what was consumed, put the
//! events on the bus in order, and wait until every target accepted or refused each
//! one, so that the endpoint acks a broker message only after its hand-off.
//!
//! How a message is then settled depends on the broker (ack, commit an offset,
//! PUBACK, the AMQP 1.0 `accepted` outcome); [`Settle`] says which of the three
//! answers each message gets.

use std::time::Duration;

use crate::adapter::{self, Adapter};
use crate::bus::BusError;
use crate::component::ComponentContext;
use crate::event::{Ack, DeliveryError, Event};
use crate::routing::Direction;

/// The pause before messages whose events failed are redelivered, so that
/// redelivery does not spin while a target stays busy or down.
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What the broker should be told about one consumed message.
#[derive(Debug)]
pub enum Settle {
    /// Every target accepted its event (an entrypoint stored it in its ring).
    Accept,
    /// An adapter (the source's or a target's) refused the message: a retry cannot
    /// help, and redelivering it would fail forever. Reject it (dead-letter it where
    /// the broker can).
    Reject(DeliveryError),
    /// Not delivered (a target busy or down, no route, shutdown, an adapter's call that
    /// failed as a whole): deliver it again.
    Retry(DeliveryError),
}

impl Settle {
    /// True for [`Settle::Retry`] with no route: the endpoint should stop consuming.
    #[must_use]
    pub fn routes_gone(&self) -> bool {
        matches!(self, Self::Retry(DeliveryError::NoRoute(_)))
    }
}

/// Hands consumed `records` over: maps them (`downstream`), puts the events on the
/// bus in order, waiting while it is full, and waits for each one's outcome. Returns
/// one [`Settle`] per record, in order.
///
/// `what` names where the records came from (a queue, a topic) in logs. When the
/// host stops its sources mid-way, the records not yet handed over are [`Settle::Retry`].
pub async fn hand_over(ctx: &ComponentContext, adapter: &Adapter, what: &str, records: Vec<Event>) -> Vec<Settle> {
    let mut inputs = Vec::with_capacity(records.len());
    let mut waiting = Vec::with_capacity(records.len());
    for mut record in records {
        let (ack, settled) = Ack::new();
        record.ack = Some(ack);
        inputs.push(record);
        waiting.push(settled);
    }
    // Route 0: the mapping happens before routing, as an entrypoint's decode does.
    let mapped = adapter.map(Direction::Downstream, &adapter::route_context(0), inputs);
    for (mut record, error) in mapped.refused {
        let adapter = adapter.name().to_owned();
        record.settle(Err(DeliveryError::Adapter { adapter, message: error.message }));
    }
    // A call that failed as a whole (a trap or a deadline may pass): its messages and
    // the ones after them are delivered again. They are the last of the batch.
    let mut retried = Vec::new();
    if let Some((inputs, error)) = mapped.failed {
        tracing::warn!(source = %what, error = %error, "the adapter failed on consumed messages; they will be redelivered");
        let failed = DeliveryError::AdapterFailed(error.to_string());
        retried = inputs.iter().map(|_| Settle::Retry(failed.clone())).collect();
        waiting.truncate(waiting.len() - inputs.len());
    }
    for event in mapped.outputs {
        if !publish(ctx, what, event).await {
            // Shutdown: the events not handed over drop with their acknowledgement
            // parts, which fail, so their messages are not settled as delivered.
            break;
        }
    }
    let mut settles = Vec::with_capacity(waiting.len());
    for settled in waiting {
        // A dropped acknowledgement means the host lost the event: not delivered.
        settles.push(match settled.await.unwrap_or(Err(DeliveryError::ShuttingDown)) {
            Ok(()) => Settle::Accept,
            Err(error @ DeliveryError::Adapter { .. }) => {
                tracing::warn!(source = %what, error = %error, "a consumed message was refused; rejecting it");
                Settle::Reject(error)
            }
            Err(error) => {
                tracing::debug!(source = %what, error = %error, "a consumed message was not delivered; it will be redelivered");
                Settle::Retry(error)
            }
        });
    }
    settles.append(&mut retried);
    settles
}

/// Waits [`RETRY_PAUSE`] when some of `settles` will be redelivered and the host is
/// not stopping, so that a failing target is not hammered.
pub async fn pause_before_retry(ctx: &ComponentContext, settles: &[Settle]) {
    if settles.iter().any(|s| matches!(s, Settle::Retry(_))) && !ctx.shutdown.sources.is_cancelled() {
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Puts `event` on the bus, waiting as long as the bus is full. False when the host
/// stopped its sources first.
async fn publish(ctx: &ComponentContext, what: &str, mut event: Event) -> bool {
    let sources = &ctx.shutdown.sources;
    let mut waited = false;
    loop {
        let published = tokio::select! {
            biased;
            () = sources.cancelled() => return false,
            published = ctx.bus.publish(event) => published,
        };
        match published {
            Ok(()) => return true,
            Err(BusError::Busy { event: back, .. }) => {
                if !waited {
                    tracing::debug!(source = %what, "the bus is full; consuming waits");
                    waited = true;
                }
                event = *back;
            }
            Err(BusError::Closed(_)) => return false,
        }
    }
}
