//! The `kafka` endpoint: Kafka through `rdkafka` (librdkafka, built from source).
//!
//! As a **target** it drains its queue in batches, maps each batch through its adapter
//! and hands the records to an idempotent producer (`acks=all` by default), then awaits
//! their delivery reports together: an event succeeds only on its report. A record
//! librdkafka refuses at once (over `message.max.bytes`), a failed report, or no report
//! within `delivery_timeout_ms` fail that event, naming the topic. While no broker is
//! reachable, deliveries fail at once as *unavailable* (HTTP 503), not after a timeout.
//!
//! As a **source**, only while routes leave the endpoint, it consumes in a consumer group
//! (see `consume.rs`) and commits an offset only after every record up to it was handed
//! over (librdkafka commits the offsets the endpoint stores, every `commit_interval_ms`).
//!
//! librdkafka connects and reconnects by itself, so there is no connection to supervise;
//! what this module supervises is the endpoint's **health**, which librdkafka does not
//! report as such. Two signals make it: the client's error callback, which says at once
//! when every broker connection is down or authentication failed (the endpoint turns
//! unready), and a metadata request every [`HEALTH_TICK`] (with backoff while failing),
//! which proves that a broker answers (ready again) and that the configured topics
//! exist. The metadata request is also what makes an idle producer reconnect. A producer
//! that librdkafka reports failed fatally (the idempotent producer's guarantee broken)
//! accepts nothing more; the check replaces it with a new one.

mod config;
mod consume;
mod message;
mod publish;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer as _};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::{Acks, Compression, KafkaConfig, OffsetReset, SaslConfig, SaslMechanism, TlsConfig};

use crate::endpoints::ConsumerMode;

use crate::adapter::{self, Adapter};
use crate::component::{ComponentContext, StartError};
use crate::endpoints::Endpoint as _;
use crate::endpoints::link::{Backoff, Health};
use crate::pipeline::TargetSender;

/// How often a healthy endpoint proves with a metadata request that a broker answers.
const HEALTH_TICK: Duration = Duration::from_secs(1);
/// How often an endpoint that does not consume checks whether routes now leave it.
const ROUTES_TICK: Duration = Duration::from_millis(500);

/// What the health supervisor, the publisher and the consumer share.
struct Endpoint {
    /// Everything a component needs from the host.
    ctx: ComponentContext,
    /// The endpoint's settings.
    config: KafkaConfig,
    /// The producer; replaced by a new one when librdkafka reports it failed fatally
    /// (an idempotent producer that can no longer guarantee its sequence).
    producer: ArcSwap<FutureProducer<KafkaContext>>,
    /// The mapping, both directions.
    adapter: Adapter,
    /// Whether a broker answers, and why not.
    health: Arc<Health>,
    /// Woken when the error callback saw the brokers go, so the supervisor checks at once.
    woken: Arc<Notify>,
    /// The consumer group this instance consumes in.
    group: String,
    /// The most bytes librdkafka accepts for one record, for the error that names it.
    max_message_bytes: u64,
    /// The last error the producer's client reported, so that a failed metadata request
    /// says why (connection refused, authentication failed).
    producer_error: LastError,
}

/// The last error a client reported other than "all brokers are down" (which says
/// nothing of why), and when: shared between its context and the endpoint.
type LastError = Arc<Mutex<Option<(String, Instant)>>>;

/// How long a client's last error still explains a failure: librdkafka reports a
/// failure once, then retries quietly.
const LAST_ERROR_RELEVANT: Duration = Duration::from_secs(30);

/// The librdkafka client context: logs through `tracing` and turns the client's errors
/// into the endpoint's health.
struct KafkaContext {
    /// Which client this is (`producer`, `consumer`), in logs.
    role: &'static str,
    /// The bootstrap servers, as errors name them.
    brokers: String,
    /// Where a lost connection or failed authentication is reported.
    health: Arc<Health>,
    /// Wakes the supervisor after such an error.
    woken: Arc<Notify>,
    /// The last error the client reported.
    last_error: LastError,
}

impl KafkaContext {
    fn new(
        role: &'static str,
        brokers: &str,
        health: &Arc<Health>,
        woken: &Arc<Notify>,
        last_error: LastError,
    ) -> Self {
        Self { role, brokers: brokers.to_owned(), health: Arc::clone(health), woken: Arc::clone(woken), last_error }
    }
}

/// The last error a client reported, while it is recent enough to explain a failure.
fn recent(last_error: &LastError) -> Option<String> {
    let last = last_error.lock().unwrap_or_else(PoisonError::into_inner);
    last.as_ref().filter(|(_, when)| when.elapsed() < LAST_ERROR_RELEVANT).map(|(error, _)| error.clone())
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let role = self.role;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::warn!(client = role, facility, "librdkafka: {message}");
            }
            RDKafkaLogLevel::Warning | RDKafkaLogLevel::Notice => {
                tracing::info!(client = role, facility, "librdkafka: {message}");
            }
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                tracing::debug!(client = role, facility, "librdkafka: {message}");
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code != Some(RDKafkaErrorCode::AllBrokersDown) {
            *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some((reason.to_owned(), Instant::now()));
        }
        if matches!(
            code,
            Some(
                RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::Fatal
            )
        ) {
            let why = match recent(&self.last_error) {
                Some(last) if last != reason => format!("{reason} (last error: {last})"),
                _ => reason.to_owned(),
            };
            self.health.report(Some(format!("not connected to {}: {why}", self.brokers)));
            self.woken.notify_one();
        }
        // A broker that went away is logged by the supervisor, once; the rest here.
        if matches!(code, Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)) {
            tracing::debug!(client = self.role, error = %error, reason, "kafka client error");
        } else {
            tracing::warn!(client = self.role, error = %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for KafkaContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // The records stay uncommitted and are delivered again after a rebalance or
            // restart: at least once, never lost.
            tracing::warn!(error = %e, offsets = ?offsets.to_topic_map(), "committing offsets failed");
        }
    }
}

/// A producer with the endpoint's settings, reporting into `health`.
fn create_producer(
    config: &KafkaConfig,
    health: &Arc<Health>,
    woken: &Arc<Notify>,
    last_error: &LastError,
) -> KafkaResult<FutureProducer<KafkaContext>> {
    let context = KafkaContext::new("producer", &config.brokers, health, woken, Arc::clone(last_error));
    config.producer().create_with_context(context)
}

/// Loads the adapter, creates the producer, starts the health supervisor, the consumer
/// (while routes leave the endpoint) and the publishing task.
///
/// # Errors
/// When the adapter cannot be loaded, or librdkafka refuses the settings (an unknown or
/// invalid property, named).
pub fn spawn(ctx: ComponentContext, config: &KafkaConfig) -> Result<(TargetSender, JoinHandle<()>), StartError> {
    let span = ctx.endpoint_span("kafka");
    let adapter = ctx.load_adapter(&config.adapter, adapter::Role::Endpoint, &config.adapter_settings())?;
    let routed = ctx.is_routed();
    if routed && config.consumed_topics().is_empty() {
        return Err(ctx.refuse(String::from(
            "routes leave this endpoint, so it consumes, but it has no topic to consume: set `topics` or `topic`",
        )));
    }
    let group = match config.consumer {
        ConsumerMode::Broadcast => {
            let prefix = config.group_id.clone().unwrap_or_else(|| format!("mediation.{}", ctx.name));
            format!("{prefix}.{}", ctx.host.instance_id())
        }
        ConsumerMode::Shared => config.group_id.clone().unwrap_or_default(),
    };
    // The consumer is created only when routes leave the endpoint; its settings are
    // checked now so that a bad property stops the host at startup either way.
    config.consumer(&group).create_native_config().map_err(|e| ctx.refuse(format!("consumer settings: {e}")))?;
    let health = Arc::new(Health::connecting(
        Arc::clone(&ctx.name),
        Arc::clone(&ctx.readiness),
        format!("connecting to {}", config.brokers),
    ));
    let woken = Arc::new(Notify::new());
    let max_message_bytes =
        config.producer().get("message.max.bytes").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let producer_error = LastError::default();
    let producer = create_producer(config, &health, &woken, &producer_error)
        .map_err(|e| ctx.refuse(format!("producer settings: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(config.queue_capacity);
    let endpoint = Arc::new(Endpoint {
        ctx,
        config: config.clone(),
        producer: ArcSwap::from_pointee(producer),
        adapter,
        health,
        woken,
        group,
        max_message_bytes,
        producer_error,
    });
    let task = async move {
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(Arc::clone(&endpoint).supervise(stop.clone()).in_current_span());
        let consumer = tokio::spawn(Arc::clone(&endpoint).consume(stop.clone()).in_current_span());
        // The queue closes in the last shutdown stage, after the bus drained; the
        // producer stays until then so that drained deliveries are produced.
        publish::Publisher::new(Arc::clone(&endpoint)).run(rx).await;
        stop.cancel();
        for task in [supervisor, consumer] {
            if let Err(e) = task.await {
                tracing::error!(endpoint = %endpoint.ctx.name, error = %e, "kafka endpoint task failed");
            }
        }
    };
    Ok((tx, tokio::spawn(task.instrument(span))))
}

impl Endpoint {
    /// True when the endpoint should consume: routes leave it and the host is not
    /// stopping its sources.
    fn wants_consumer(&self) -> bool {
        !self.ctx.shutdown.sources.is_cancelled() && self.ctx.is_routed()
    }

    /// Checks the brokers until `stop`: every [`HEALTH_TICK`] while they answer, with
    /// backoff while they do not, and at once when the error callback saw them go.
    async fn supervise(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        let mut connected_before = false;
        let mut connected = false;
        while !stop.is_cancelled() {
            let checked = tokio::select! {
                checked = self.check() => checked,
                () = stop.cancelled() => return,
            };
            match checked {
                Ok(()) => {
                    if !connected {
                        if connected_before && let Some(stats) = self.ctx.recorder.stats(self.ctx.id) {
                            stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::info!(brokers = %self.config.brokers, "connected to kafka");
                    }
                    (connected, connected_before) = (true, true);
                    backoff.reset();
                    self.health.report(None);
                    tokio::select! {
                        () = tokio::time::sleep(HEALTH_TICK) => {}
                        () = self.woken.notified() => {}
                        () = stop.cancelled() => return,
                    }
                }
                Err(reason) => {
                    if connected {
                        tracing::warn!(brokers = %self.config.brokers, reason = %reason, "lost kafka");
                    }
                    connected = false;
                    self.health.attempt_failed(&self.config.brokers, &reason, backoff.pause());
                    if !backoff.wait(&stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// One metadata request per configured topic (or, when none is, a description of
    /// the endpoint's consumer group): a broker answers, and every topic the endpoint
    /// names exists (or was created by auto-creation).
    async fn check(&self) -> Result<(), String> {
        let producer = self.producer.load_full();
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Err(self.replace_producer(producer, code, &reason).await);
        }
        let last_error = Arc::clone(&self.producer_error);
        let group = self.group.clone();
        let mut topics = self.config.consumed_topics();
        if let Some(topic) = &self.config.topic
            && !topics.contains(topic)
        {
            topics.push(topic.clone());
        }
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let checked = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let client = producer.client();
            let failed = |e: KafkaError| {
                // The error callback usually knows better why (refused, authentication).
                let why = recent(&last_error);
                why.map_or_else(|| e.to_string(), |why| format!("{why} ({e})"))
            };
            if topics.is_empty() {
                // Metadata without a topic would list every topic of the cluster, every
                // second; describing the endpoint's own group is one small request.
                client.fetch_group_list(Some(&group), timeout).map_err(failed)?;
            }
            for topic in &topics {
                let metadata = client.fetch_metadata(Some(topic), timeout).map_err(failed)?;
                let error = metadata.topics().iter().find(|t| t.name() == topic).and_then(|t| t.error());
                if let Some(error) = error {
                    let code = RDKafkaErrorCode::from(error);
                    return Err(if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                        format!("topic `{topic}` does not exist ({code})")
                    } else {
                        format!("topic `{topic}`: {code}")
                    });
                }
            }
            Ok(())
        })
        .await;
        checked.unwrap_or_else(|e| Err(format!("the metadata check failed: {e}")))
    }

    /// Replaces `failed`, which librdkafka reported failed fatally with `code`: it
    /// accepts nothing more, so the endpoint creates a new one (with a new producer id).
    /// Returns the reason the endpoint reports until the next check.
    async fn replace_producer(
        &self,
        failed: Arc<FutureProducer<KafkaContext>>,
        code: RDKafkaErrorCode,
        reason: &str,
    ) -> String {
        let why = format!("the producer failed fatally ({code}: {reason})");
        match create_producer(&self.config, &self.health, &self.woken, &self.producer_error) {
            Ok(producer) => {
                tracing::error!(reason = %why, "replacing the kafka producer");
                self.producer.store(Arc::new(producer));
                // Destroying a client can wait on its threads: not on a runtime thread.
                let _ = tokio::task::spawn_blocking(move || drop(failed)).await;
                format!("{why}; a new producer replaced it")
            }
            Err(e) => format!("{why}, and a new one cannot be created: {e}"),
        }
    }

    /// Consumes while routes leave the endpoint, until `stop` or the host stops its
    /// sources; then closes the consumer, leaving the group.
    async fn consume(self: Arc<Self>, stop: CancellationToken) {
        let sources = self.ctx.shutdown.sources.clone();
        while !stop.is_cancelled() && !sources.is_cancelled() {
            if !self.wants_consumer() {
                tokio::select! {
                    () = tokio::time::sleep(ROUTES_TICK) => {}
                    () = stop.cancelled() => return,
                    () = sources.cancelled() => return,
                }
                continue;
            }
            let consumer = match self.subscribe() {
                Ok(consumer) => consumer,
                Err(e) => {
                    // The settings were checked at startup; this is unexpected.
                    tracing::error!(error = %e, "cannot create the kafka consumer");
                    return;
                }
            };
            tracing::info!(group = %self.group, topics = ?self.config.consumed_topics(), "consuming");
            let end = consume::Consumer::new(Arc::clone(&self), &consumer).run().await;
            // Closing leaves the group, which can take a moment: not on a runtime thread.
            let closed = tokio::task::spawn_blocking(move || drop(consumer)).await;
            if let Err(e) = closed {
                tracing::warn!(error = %e, "closing the kafka consumer failed");
            }
            match end {
                consume::End::Stop => return,
                consume::End::RoutesGone => tracing::info!("no route takes the endpoint's records any more"),
            }
        }
    }

    /// A consumer in the endpoint's group, subscribed to its topics.
    fn subscribe(&self) -> KafkaResult<StreamConsumer<KafkaContext>> {
        let context =
            KafkaContext::new("consumer", &self.config.brokers, &self.health, &self.woken, LastError::default());
        let consumer: StreamConsumer<KafkaContext> = self.config.consumer(&self.group).create_with_context(context)?;
        let topics = self.config.consumed_topics();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(consumer)
    }

    /// The ordering key of what is consumed from one partition: a partition keeps one order.
    fn ordering_key(&self, topic: &str, partition: i32) -> u64 {
        self.ctx.ordering_key((topic, partition))
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;

    use super::*;

    /// Whether librdkafka accepts `config`, as at startup.
    fn create_native(config: &ClientConfig) -> Result<(), String> {
        config.create_native_config().map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn librdkafka_accepts_the_default_settings_and_names_an_unknown_property() {
        let config: KafkaConfig = toml::from_str(r#"brokers = "127.0.0.1:9092""#).expect("valid");
        assert_eq!(create_native(&config.producer()), Ok(()));
        assert_eq!(create_native(&config.consumer("g")), Ok(()));
        let bad: KafkaConfig =
            toml::from_str("brokers = \"127.0.0.1:9092\"\nproperties = { \"no.such.property\" = \"1\" }")
                .expect("valid");
        let error = create_native(&bad.producer()).expect_err("refused");
        assert!(error.contains("no.such.property"), "{error}");
    }
}
