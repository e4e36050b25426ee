//! The source side: consume in a consumer group, hand each record to the bus, and
//! store an offset for commit only once every record up to it was settled.
//!
//! What the consumer has ready (up to `max_batch` records, across partitions) is mapped
//! in one adapter call and published onto the bus in order, each event carrying an
//! [`Ack`](crate::event::Ack); each partition keeps its own ordering key, so its order
//! holds through the bus. Then, per partition, in offset order:
//!
//! - every target accepted the event: the offset after it is stored for commit;
//! - the adapter refused the record: a retry cannot help, so it is logged and committed
//!   past, like an accepted one (Kafka has no dead-letter of its own);
//! - anything else (a target busy or down, no route, shutdown): the partition is sought
//!   back to that record, which is read again after a short pause, and nothing from it
//!   on is committed. Later records of that partition in the batch are read again too.
//!
//! librdkafka commits the stored offsets every `commit_interval_ms`, on a rebalance and
//! when the consumer closes: one request for many batches. Records handed over since
//! the last commit are delivered again after a crash (at least once, never lost).
//!
//! While the bus is full, the hand-over waits and the consumer reads nothing more. So
//! that the group does not take its partitions away for not reading (`max.poll.interval.ms`),
//! a hand-over that lasts a third of that interval pauses the assigned partitions and
//! reads anyway: paused partitions return nothing new, and anything that was already on
//! its way is kept for the next batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{Endpoint, KafkaContext, message};
use crate::endpoints::source::{self, Settle};
use crate::event::Event;

/// Why consuming ended.
pub(super) enum End {
    /// The host stops its sources.
    Stop,
    /// No route takes the endpoint's records any more.
    RoutesGone,
}

/// Where a consumed record was read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    /// Its topic.
    topic: String,
    /// Its partition.
    partition: i32,
    /// Its offset.
    offset: i64,
}

/// Consumes the endpoint's topics with one consumer.
pub(super) struct Consumer<'a> {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// The consumer, subscribed.
    consumer: &'a StreamConsumer<KafkaContext>,
    /// Records read while a hand-over kept the consumer alive, for the next batch.
    held: Vec<(Event, Position)>,
    /// The last consumer error logged, so that one that repeats is logged once.
    last_error: String,
}

impl<'a> Consumer<'a> {
    pub(super) fn new(endpoint: Arc<Endpoint>, consumer: &'a StreamConsumer<KafkaContext>) -> Self {
        Self { endpoint, consumer, held: Vec::new(), last_error: String::new() }
    }

    /// Consumes until the host stops its sources or the routes go.
    pub(super) async fn run(mut self) -> End {
        let sources = self.endpoint.ctx.shutdown.sources.clone();
        let max_batch = self.endpoint.config.max_batch;
        loop {
            let mut batch = std::mem::take(&mut self.held);
            if batch.is_empty() {
                let first = tokio::select! {
                    biased;
                    () = sources.cancelled() => return End::Stop,
                    first = self.consumer.recv() => first.map(|m| self.record(&m)),
                };
                match first {
                    Ok(first) => batch.push(first),
                    Err(e) => {
                        self.consumer_error(&e);
                        continue;
                    }
                }
            }
            // Take what is already here, without waiting to fill the batch.
            while batch.len() < max_batch {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(self.record(&m)),
                    Some(Err(e)) => {
                        self.consumer_error(&e);
                        break;
                    }
                    None => break,
                }
            }
            if self.hand_over(batch).await {
                return End::RoutesGone;
            }
        }
    }

    /// The record for a consumed message, and where it was read.
    fn record(&self, m: &BorrowedMessage<'_>) -> (Event, Position) {
        let key = self.endpoint.ordering_key(m.topic(), m.partition());
        let position = Position { topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset() };
        (message::from_message(m, self.endpoint.ctx.id, key), position)
    }

    /// Logs a consumer error (a missing topic, a lost connection) once while it repeats.
    /// librdkafka recovers from these by itself; the health check reports them.
    fn consumer_error(&mut self, error: &rdkafka::error::KafkaError) {
        let text = error.to_string();
        if text == self.last_error {
            tracing::debug!(error = %text, "kafka consumer error");
        } else {
            tracing::warn!(error = %text, "kafka consumer error");
            self.last_error = text;
        }
    }

    /// Hands `batch` over, keeping the consumer in its group meanwhile, then commits and
    /// seeks. True when no route takes the records any more.
    async fn hand_over(&mut self, batch: Vec<(Event, Position)>) -> bool {
        let endpoint = Arc::clone(&self.endpoint);
        let (records, positions): (Vec<Event>, Vec<Position>) = batch.into_iter().unzip();
        let what = describe(&positions);
        let handing = source::hand_over(&endpoint.ctx, &endpoint.adapter, &what, records);
        tokio::pin!(handing);
        let keep_alive = Duration::from_millis(endpoint.config.max_poll_interval_ms / 3);
        let mut paused: Option<TopicPartitionList> = None;
        let settles = loop {
            tokio::select! {
                settles = &mut handing => break settles,
                () = tokio::time::sleep(keep_alive) => {
                    if paused.is_none() {
                        paused = self.consumer.assignment().ok();
                        if let Some(assigned) = &paused
                            && let Err(e) = self.consumer.pause(assigned)
                        {
                            tracing::warn!(error = %e, "pausing the consumed partitions failed");
                        }
                        tracing::debug!("the hand-over waits; consumption paused");
                    }
                    // A read is what tells librdkafka the consumer is alive.
                    while let Some(Ok(m)) = self.consumer.recv().now_or_never() {
                        let held = self.record(&m);
                        self.held.push(held);
                    }
                }
            }
        };
        if let Some(assigned) = paused
            && let Err(e) = self.consumer.resume(&assigned)
        {
            tracing::warn!(error = %e, "resuming the consumed partitions failed");
        }
        source::pause_before_retry(&endpoint.ctx, &settles).await;
        let routes_gone = settles.iter().any(Settle::routes_gone);
        self.settle(&positions, &settles);
        routes_gone
    }

    /// Stores for commit, per partition, the offset past every record settled before the
    /// first one to retry, and seeks each partition with a record to retry back to it.
    fn settle(&mut self, positions: &[Position], settles: &[Settle]) {
        let plan = plan(positions, settles);
        if !plan.commit.is_empty() {
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), next) in &plan.commit {
                if let Err(e) = offsets.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                    tracing::warn!(topic = %topic, partition, error = %e, "cannot store this offset");
                }
            }
            // Fails for a partition this member no longer holds (a rebalance meanwhile):
            // its new holder reads those records again.
            if let Err(e) = self.consumer.store_offsets(&offsets) {
                tracing::debug!(error = %e, "storing offsets failed; the records will be delivered again");
            }
        }
        for ((topic, partition), offset) in &plan.rewind {
            // Records of that partition read meanwhile are read again after the seek.
            self.held.retain(|(_, p)| !(p.topic == *topic && p.partition == *partition));
            // A zero timeout starts the seek without waiting for it.
            if let Err(e) = self.consumer.seek(topic, *partition, Offset::Offset(*offset), Duration::ZERO) {
                tracing::warn!(topic = %topic, partition, offset, error = %e, "seeking back to redeliver failed");
            }
        }
    }
}

/// What to commit and where to seek after a batch, per `(topic, partition)`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// The offset to store for commit: the one after the last record settled in order.
    commit: BTreeMap<(String, i32), i64>,
    /// The offset of the first record to read again.
    rewind: BTreeMap<(String, i32), i64>,
}

/// Works out the [`Plan`] for records read at `positions` and settled as `settles`.
fn plan(positions: &[Position], settles: &[Settle]) -> Plan {
    let mut plan = Plan::default();
    for (position, settle) in positions.iter().zip(settles) {
        let partition = (position.topic.clone(), position.partition);
        if plan.rewind.contains_key(&partition) {
            continue;
        }
        match settle {
            Settle::Accept => {
                plan.commit.insert(partition, position.offset + 1);
            }
            Settle::Reject(error) => {
                tracing::warn!(
                    topic = %position.topic, partition = position.partition, offset = position.offset,
                    error = %error, "a consumed record was refused; committing past it"
                );
                plan.commit.insert(partition, position.offset + 1);
            }
            Settle::Retry(_) => {
                plan.rewind.insert(partition, position.offset);
            }
        }
    }
    plan
}

/// The partitions of a batch, in words for logs: `orders[0,2]`.
fn describe(positions: &[Position]) -> String {
    let mut partitions: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for p in positions {
        let list = partitions.entry(&p.topic).or_default();
        if !list.contains(&p.partition) {
            list.push(p.partition);
        }
    }
    let parts: Vec<String> = partitions
        .into_iter()
        .map(|(topic, list)| {
            let list: Vec<String> = list.iter().map(ToString::to_string).collect();
            format!("{topic}[{}]", list.join(","))
        })
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DeliveryError;

    fn at(topic: &str, partition: i32, offset: i64) -> Position {
        Position { topic: topic.to_owned(), partition, offset }
    }

    #[test]
    fn commits_stop_at_the_first_record_to_retry_in_each_partition_only() {
        let positions = [at("t", 0, 10), at("t", 1, 5), at("t", 0, 11), at("t", 1, 6), at("t", 0, 12), at("u", 0, 1)];
        let refused = DeliveryError::Adapter { adapter: String::from("a"), message: String::from("bad") };
        let settles = [
            Settle::Accept,
            Settle::Retry(DeliveryError::ShuttingDown),
            Settle::Reject(refused),
            Settle::Accept,
            Settle::Accept,
            Settle::Accept,
        ];
        let plan = plan(&positions, &settles);
        let key = |t: &str, p: i32| (t.to_owned(), p);
        assert_eq!(plan.commit, BTreeMap::from([(key("t", 0), 13), (key("u", 0), 2)]), "a refused record is passed");
        assert_eq!(plan.rewind, BTreeMap::from([(key("t", 1), 5)]), "partition 1 is read again from offset 5 on");
        assert_eq!(describe(&positions), "t[0,1] u[0]");
    }
}
