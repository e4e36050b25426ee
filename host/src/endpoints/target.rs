//! The publishing side every broker endpoint shares: read the endpoint's queue in
//! batches mapped through the adapter (`upstream`), for the broker-specific send,
//! which finishes each record with its outcome.

use std::sync::Arc;

use crate::adapter::{self, Adapter};
use crate::event::{DeliveryError, Event};
use crate::host::ComponentContext;
use crate::pipeline::{Delivery, TargetReceiver, runs_by_route};
use crate::routing::Route;

/// One record on its way to the broker.
#[derive(Debug)]
pub struct Pending {
    /// The record, which carries its event's acknowledgement.
    pub record: Event,
    /// The route it travels on, for the packet log and metrics.
    pub route: Arc<Route>,
}

/// The endpoint's queue, read in mapped batches.
#[derive(Debug)]
pub struct Batches {
    /// What the pipeline delivers to the endpoint.
    queue: TargetReceiver,
    /// The most deliveries taken at once.
    max_batch: usize,
    /// The largest payload the endpoint sends.
    max_message_bytes: usize,
    /// The deliveries taken, reused between batches.
    batch: Vec<Delivery>,
}

impl Batches {
    #[must_use]
    pub fn new(queue: TargetReceiver, max_batch: usize, max_message_bytes: usize) -> Self {
        Self { queue, max_batch, max_message_bytes, batch: Vec::with_capacity(max_batch) }
    }

    /// Waits for deliveries, takes up to `max_batch` of them and maps them, one
    /// adapter call per run of one route. `None` once the queue closed (the last
    /// stage of shutdown). The records returned must each be [`finish`]ed; events the
    /// adapter refused, and records over `max_message_bytes`, were finished here,
    /// their packet lines appended to `log`.
    pub async fn next(&mut self, ctx: &ComponentContext, adapter: &Adapter, log: &mut Vec<u8>) -> Option<Vec<Pending>> {
        if self.queue.recv_many(&mut self.batch, self.max_batch).await == 0 {
            return None;
        }
        let mut pending = Vec::with_capacity(self.batch.len());
        for (route, events) in runs_by_route(&mut self.batch) {
            let call = adapter::route_context(route.index);
            let records =
                ctx.recorder.map_deliveries(adapter, adapter::Direction::Upstream, &call, &route, events, log);
            for record in records {
                // The body, as brokers and their clients count a message's size limit.
                let size = record.payload.len();
                if size > self.max_message_bytes {
                    let message = format!(
                        "the payload is {size} bytes, over the endpoint's max_message_bytes of {}",
                        self.max_message_bytes
                    );
                    let target = ctx.name.to_string();
                    ctx.recorder.finish(record, &route, Err(DeliveryError::TooLarge { target, message }), log);
                } else {
                    pending.push(Pending { record, route: Arc::clone(&route) });
                }
            }
        }
        Some(pending)
    }
}

/// Records the outcome of sending `pending` and settles its acknowledgement.
pub fn finish(ctx: &ComponentContext, pending: Pending, result: Result<(), DeliveryError>, log: &mut Vec<u8>) {
    ctx.recorder.finish(pending.record, &pending.route, result, log);
}

/// Fails every record of `pending` with `error`: the endpoint could not send them.
pub fn fail_all(ctx: &ComponentContext, pending: Vec<Pending>, error: &DeliveryError, log: &mut Vec<u8>) {
    for p in pending {
        finish(ctx, p, Err(error.clone()), log);
    }
}
