//! The publishing side every broker endpoint shares: read the endpoint's queue in
//! batches mapped through the adapter (`upstream`), hand each batch to the
//! broker-specific [`Sender`], and record each record's outcome when the broker answers,
//! with a few batches in flight.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, join_all};
use futures_util::stream::FuturesOrdered;

use crate::adapter::Adapter;
use crate::component::ComponentContext;
use crate::event::{DeliveryError, Event};
use crate::mapping;
use crate::pipeline::{Delivery, TargetReceiver};
use crate::routing::{Direction, Route};

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
    /// stage of shutdown). The records returned must each be finished (see [`publish`]); events the
    /// adapter refused, and records over `max_message_bytes`, were finished here,
    /// their packet lines appended to `log`.
    pub async fn next(&mut self, ctx: &ComponentContext, adapter: &Adapter, log: &mut Vec<u8>) -> Option<Vec<Pending>> {
        if self.queue.recv_many(&mut self.batch, self.max_batch).await == 0 {
            return None;
        }
        let mut pending = Vec::with_capacity(self.batch.len());
        let runs = mapping::map_batch(&ctx.recorder, Some(adapter), Direction::Upstream, &mut self.batch, log);
        for (route, records) in runs {
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

/// Mapped batches handed to the broker's client whose outcomes are still awaited, at
/// most this many at once. The next batch goes out while earlier ones wait for the
/// broker's acknowledgements, so the connection does not idle for a round trip
/// between batches; records still leave in order, and outcomes are recorded batch by
/// batch in that order.
pub const IN_FLIGHT_BATCHES: usize = 4;

/// The outcome of one record at the broker, once it answers.
pub type Outcome = BoxFuture<'static, Result<(), DeliveryError>>;

/// A broker endpoint's publishing side: how it hands a mapped batch to its client.
pub trait Sender {
    /// Hands every record of `pending` to the broker's client, in order, and returns
    /// the outcome of each, in the same order: the broker's acknowledgement, or an
    /// error already known (a record that could not be sent is a ready failure).
    fn start(&mut self, pending: &[Pending]) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// Runs a publishing task until the queue closes (the last stage of shutdown): each
/// mapped batch goes to `sender`, with up to [`IN_FLIGHT_BATCHES`] awaiting their
/// outcomes. Each batch's outcomes are recorded, its packet lines written and its
/// acknowledgements settled once all of them are in, batch after batch.
pub async fn publish(ctx: &ComponentContext, adapter: &Adapter, mut batches: Batches, sender: &mut impl Sender) {
    let mut log = Vec::new();
    let mut in_flight = FuturesOrdered::new();
    loop {
        let taken = if in_flight.len() < IN_FLIGHT_BATCHES {
            tokio::select! {
                biased;
                Some(done) = in_flight.next() => {
                    finish_batch(ctx, done, &mut log);
                    continue;
                }
                taken = batches.next(ctx, adapter, &mut log) => taken,
            }
        } else {
            if let Some(done) = in_flight.next().await {
                finish_batch(ctx, done, &mut log);
            }
            continue;
        };
        let Some(pending) = taken else { break };
        if pending.is_empty() {
            ctx.recorder.flush(&mut log);
            continue;
        }
        let outcomes = sender.start(&pending).await;
        in_flight.push_back(async move { (pending, join_all(outcomes).await) });
    }
    while let Some(done) = in_flight.next().await {
        finish_batch(ctx, done, &mut log);
    }
}

/// Records each outcome of a batch, then writes the batch's packet lines.
fn finish_batch(
    ctx: &ComponentContext,
    (pending, results): (Vec<Pending>, Vec<Result<(), DeliveryError>>),
    log: &mut Vec<u8>,
) {
    for (p, result) in pending.into_iter().zip(results) {
        ctx.recorder.finish(p.record, &p.route, result, log);
    }
    ctx.recorder.flush(log);
}

/// A ready failure with `error` for each of `n` records: the endpoint cannot send them.
#[must_use]
pub fn failed(n: usize, error: &DeliveryError) -> Vec<Outcome> {
    (0..n).map(|_| std::future::ready(Err(error.clone())).boxed()).collect()
}

/// A ready failure with `error`, for one record that could not be sent.
#[must_use]
pub fn refused(error: DeliveryError) -> Outcome {
    std::future::ready(Err(error)).boxed()
}
