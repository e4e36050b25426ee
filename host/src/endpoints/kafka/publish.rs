//! The target side: produce each mapped batch; its delivery reports are its outcomes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::time::Instant;

use super::message;
use super::{Endpoint, KafkaContext};
use crate::endpoints::target::{self, Pending};
use crate::event::{DeliveryError, Event};
use crate::pipeline::TargetReceiver;

/// How much longer than librdkafka's own `message.timeout.ms` the endpoint waits for a
/// delivery report before giving up on it: librdkafka times records out itself, so this
/// only guards against a report that never comes.
const REPORT_GRACE: Duration = Duration::from_secs(1);
/// The pause before producing again when librdkafka's local queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Produces what the pipeline delivers to the endpoint.
pub(super) struct Publisher {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// How long a record may wait for its delivery report.
    delivery_timeout: Duration,
}

impl Publisher {
    pub(super) fn new(endpoint: Arc<Endpoint>) -> Self {
        let delivery_timeout = Duration::from_millis(endpoint.config.delivery_timeout_ms);
        Self { endpoint, delivery_timeout }
    }

    /// Runs until the queue closes (the last stage of shutdown).
    pub(super) async fn run(mut self, queue: TargetReceiver) {
        let endpoint = Arc::clone(&self.endpoint);
        let limit = usize::try_from(endpoint.max_message_bytes).unwrap_or(usize::MAX);
        let batches = target::Batches::new(queue, endpoint.config.max_batch, limit);
        target::publish(&endpoint.ctx, &endpoint.adapter, batches, &mut self).await;
    }

    /// Produces every record and returns the future of each one's delivery report.
    async fn start_batch(&self, pending: &[Pending]) -> Vec<target::Outcome> {
        if self.endpoint.health.is_down() {
            // Fail fast: a client waiting on a broker that is down should hear so now.
            return target::failed(pending.len(), &self.endpoint.health.unavailable());
        }
        let deadline = Instant::now() + self.delivery_timeout + REPORT_GRACE;
        let producer = self.endpoint.producer.load_full();
        let mut reports = Vec::with_capacity(pending.len());
        for p in pending {
            reports.push(self.produce(&producer, &p.record, deadline).await);
        }
        reports
    }

    /// Hands `record` to the producer and returns the future of its outcome: the
    /// delivery report, or an error that is already known.
    async fn produce(
        &self,
        producer: &FutureProducer<KafkaContext>,
        record: &Event,
        deadline: Instant,
    ) -> target::Outcome {
        let target = self.endpoint.ctx.name.to_string();
        let outgoing = match message::to_kafka(record, self.endpoint.config.topic.as_deref()) {
            Ok(outgoing) => outgoing,
            Err(message) => return target::refused(DeliveryError::Target { target, message }),
        };
        let topic = outgoing.topic.to_owned();
        let mut kafka = FutureRecord::<[u8], [u8]>::to(outgoing.topic).payload(&record.payload[..]);
        if let Some(key) = &record.key {
            kafka = kafka.key(&key[..]);
        }
        if let Some(headers) = outgoing.headers {
            kafka = kafka.headers(headers);
        }
        if let Some(timestamp) = outgoing.timestamp {
            kafka = kafka.timestamp(timestamp);
        }
        let delivery = loop {
            match producer.send_result(kafka) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    // librdkafka's local queue is full: wait for it to drain, which is the
                    // backpressure the pipeline passes on.
                    kafka = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, _)) => {
                    return target::refused(self.refused(&topic, record, &error));
                }
            }
        };
        let timeout_ms = self.delivery_timeout.as_millis();
        async move {
            let report = tokio::time::timeout_at(deadline, delivery).await;
            match report {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err((error, _)))) => Err(failed(target, &topic, &error, timeout_ms)),
                Ok(Err(_)) => Err(DeliveryError::Unavailable {
                    target,
                    message: format!("topic `{topic}`: the producer closed before the delivery report"),
                }),
                Err(_) => Err(DeliveryError::Timeout {
                    target,
                    message: format!(
                        "topic `{topic}`: no delivery report within {timeout_ms} ms; it may or may not have been written"
                    ),
                }),
            }
        }
        .boxed()
    }

    /// The error for a record librdkafka refused to take.
    fn refused(&self, topic: &str, record: &Event, error: &KafkaError) -> DeliveryError {
        let target = self.endpoint.ctx.name.to_string();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
            let size = record.payload.len() + record.key.as_ref().map_or(0, |k| k.len());
            return DeliveryError::Target {
                target,
                message: format!(
                    "topic `{topic}`: the record ({size} bytes of key and payload, plus headers) is larger than the \
                     producer's limit `message.max.bytes` = {} bytes",
                    self.endpoint.max_message_bytes
                ),
            };
        }
        DeliveryError::Target { target, message: format!("topic `{topic}`: not produced: {error}") }
    }
}

/// The error for a failed delivery report.
fn failed(target: String, topic: &str, error: &KafkaError, timeout_ms: u128) -> DeliveryError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) => DeliveryError::Timeout {
            target,
            message: format!(
                "topic `{topic}`: not acknowledged by the brokers within {timeout_ms} ms; it may or may not have \
                 been written"
            ),
        },
        Some(
            RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed,
        ) => DeliveryError::Unavailable { target, message: format!("topic `{topic}`: {error}") },
        _ => DeliveryError::Target { target, message: format!("topic `{topic}`: {error}") },
    }
}

impl target::Sender for Publisher {
    fn start(&mut self, pending: &[Pending]) -> impl Future<Output = Vec<target::Outcome>> + Send {
        self.start_batch(pending)
    }
}
