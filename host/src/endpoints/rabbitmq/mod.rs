//! The `rabbitmq` endpoint: AMQP 0-9-1 through `lapin`.
//!
//! As a **target** it drains its queue in batches, maps each batch through its adapter
//! and publishes the records on a channel with publisher confirms, awaiting the
//! confirms of the whole batch together: an event succeeds only on the broker's ack. A
//! nack, a message returned as unroutable (`mandatory`), a timeout or a lost
//! connection fail that event, naming the exchange and routing key. While the broker
//! is unreachable, deliveries fail at once as *unavailable* (HTTP 503), not after a
//! timeout.
//!
//! As a **source**, only while routes leave the endpoint, it consumes with manual
//! acks (see `consume.rs`): a message is acked only after every target accepted its
//! event, and requeued when one did not.
//!
//! One supervisor task owns the connection. It connects, opens the publishing channel
//! and, when consuming, declares and binds the queue; then it reports the endpoint
//! ready. When anything breaks it reports why on `/readyz`, closes the connection and
//! builds everything again, with exponential backoff (see [`link::supervise`]).

mod config;
mod consume;
mod message;
mod publish;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::{RabbitMqConfig, load_tls, parse_url};

use crate::adapter::{self, Adapter};
use crate::component::{ComponentContext, StartError};
use crate::endpoints::ConsumerMode;
use crate::endpoints::Endpoint as _;
use crate::endpoints::link::{self, Ended, Health};
use crate::pipeline::TargetSender;

/// How often a connected session checks that its connection and channel are alive.
/// A broken publish wakes the check at once; this bounds how long an idle endpoint
/// looks ready after the broker went away.
const HEALTH_TICK: Duration = Duration::from_millis(200);
/// How long closing a connection may take before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the supervisor, the publisher and the consumer share.
struct Endpoint {
    /// Everything a component needs from the host.
    ctx: ComponentContext,
    /// The endpoint's settings.
    config: RabbitMqConfig,
    /// The broker address with the password redacted: the only form logged.
    url: String,
    /// The parsed address, password included; never printed.
    uri: AMQPUri,
    /// Certificates for `amqps://`.
    tls: OwnedTLSConfig,
    /// The mapping, both directions.
    adapter: Adapter,
    /// Whether it is connected, and why not.
    health: Health,
    /// Woken when a publish finds the session broken, so the supervisor acts at once.
    broken: Notify,
    /// The ordering key of everything consumed: one queue keeps one order.
    ordering_key: u64,
}

/// One connection and what was opened on it.
struct Session {
    /// The connection; closing it closes every channel.
    connection: Connection,
    /// The publishing channel, in confirm mode.
    publisher: Channel,
    /// Whether this session consumes (set when it was opened).
    consuming: bool,
}

impl Session {
    /// Why the session can no longer serve, if it cannot.
    fn broken(&self) -> Option<String> {
        if !self.connection.status().connected() {
            let how = if self.connection.status().errored() { "failed" } else { "was closed" };
            return Some(format!("the connection {how}"));
        }
        (!self.publisher.status().connected()).then(|| String::from("the broker closed the publishing channel"))
    }
}

/// The endpoint as [`link::supervise`] drives it.
struct Supervisor {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// Carries the live session to the publisher.
    link: watch::Sender<Option<Arc<Session>>>,
    /// The queue to consume.
    queue: String,
}

impl link::Connector for Supervisor {
    type Connection = (Session, Option<lapin::Consumer>);

    fn endpoint(&self) -> (&ComponentContext, &Health, &str) {
        (&self.endpoint.ctx, &self.endpoint.health, &self.endpoint.url)
    }

    fn wants_consumer(&self) -> bool {
        self.endpoint.wants_consumer()
    }

    async fn open(&self, consume: bool) -> Result<Self::Connection, String> {
        let ms = self.endpoint.config.connect_timeout_ms;
        let attempt = tokio::time::timeout(Duration::from_millis(ms), self.endpoint.open(consume, &self.queue)).await;
        attempt.unwrap_or(Err(OpenError::Timeout(ms))).map_err(|e| e.to_string())
    }

    async fn serve(&self, (session, consumer): Self::Connection, stop: &CancellationToken) -> Ended {
        let endpoint = &self.endpoint;
        tracing::info!(url = %endpoint.url, consuming = session.consuming, "connected to rabbitmq");
        let session = Arc::new(session);
        self.link.send_replace(Some(Arc::clone(&session)));
        let ended = endpoint.serve(&session, consumer, &self.queue, stop).await;
        self.link.send_replace(None);
        close(&session.connection).await;
        ended
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    /// A step of connecting or declaring failed.
    #[error("{step}: {source}")]
    Broker {
        /// What was being done.
        step: String,
        /// The client library's error, with the broker's reply code and text.
        source: lapin::Error,
    },
    /// A name the broker would refuse.
    #[error("{0}")]
    Name(String),
    /// The attempt took longer than `connect_timeout_ms`.
    #[error("no answer within {0} ms")]
    Timeout(u64),
}

/// Attaches the step to a client library error.
fn step(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> OpenError {
    let step = what.into();
    move |source| OpenError::Broker { step, source }
}

/// Loads the adapter, starts the supervisor and the publishing task.
///
/// # Errors
/// When the adapter cannot be loaded, the TLS files cannot be read, or routes leave
/// the endpoint but it has nothing to consume.
pub fn spawn(ctx: ComponentContext, config: &RabbitMqConfig) -> Result<(TargetSender, JoinHandle<()>), StartError> {
    let span = ctx.endpoint_span("rabbitmq");
    let adapter = ctx.load_adapter(&config.adapter, adapter::Role::Endpoint, &config.adapter_settings())?;
    let uri = parse_url(config.url.expose()).map_err(|e| ctx.refuse(e))?;
    let tls = load_tls(&config.tls).map_err(|e| ctx.refuse(format!("tls: {e}")))?;
    let routed = ctx.is_routed();
    if routed && config.consumer == ConsumerMode::Broadcast && config.bind_exchange.is_none() {
        return Err(ctx.refuse(String::from(
            "routes leave this endpoint, so it consumes, but it has nothing to consume: set `bind_exchange` \
             (broadcast), or `consumer = \"shared\"` with `queue`",
        )));
    }
    let url = config.display_url();
    let queue = match config.consumer {
        ConsumerMode::Broadcast => format!("mediation.{}.{}", ctx.name, ctx.host.instance_id()),
        ConsumerMode::Shared => config.queue.clone().unwrap_or_default(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(config.queue_capacity);
    let endpoint = Arc::new(Endpoint {
        ordering_key: ctx.ordering_key(&queue),
        health: Health::connecting(Arc::clone(&ctx.name), Arc::clone(&ctx.readiness), format!("connecting to {url}")),
        ctx,
        config: config.clone(),
        url,
        uri,
        tls,
        adapter,
        broken: Notify::new(),
    });
    let task = link::run(
        {
            let endpoint = Arc::clone(&endpoint);
            move |link| Supervisor { endpoint, link, queue }
        },
        move |watching| publish::Publisher::new(endpoint, watching).run(rx),
    );
    Ok((tx, tokio::spawn(task.instrument(span))))
}

impl Endpoint {
    /// True when the endpoint should consume: routes leave it, it has a queue to
    /// consume, and the host is not stopping its sources.
    fn wants_consumer(&self) -> bool {
        let can = self.config.consumer == ConsumerMode::Shared || self.config.bind_exchange.is_some();
        can && !self.ctx.shutdown.sources.is_cancelled() && self.ctx.is_routed()
    }

    /// Connects and opens the publishing channel and, when `consume`, the consumer of
    /// `queue`, declaring the topology each time (a restarted broker may have lost it).
    async fn open(&self, consume: bool, queue: &str) -> Result<(Session, Option<lapin::Consumer>), OpenError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("mediation-host {} {}", self.ctx.host.instance_id(), self.ctx.name).into());
        let runtime = lapin::runtime::default_runtime().map_err(step("starting the client runtime"))?;
        let connection = Connection::connect_uri_with_config(self.uri.clone(), properties, self.tls.clone(), runtime)
            .await
            .map_err(step("connecting"))?;
        match self.declare(&connection, consume, queue).await {
            Ok((publisher, consumer)) => {
                Ok((Session { connection, publisher, consuming: consumer.is_some() }, consumer))
            }
            Err(e) => {
                close(&connection).await;
                Err(e)
            }
        }
    }

    /// Opens the channels on `connection` and declares what they use.
    async fn declare(
        &self,
        connection: &Connection,
        consume: bool,
        queue: &str,
    ) -> Result<(Channel, Option<lapin::Consumer>), OpenError> {
        let publisher = connection.create_channel().await.map_err(step("opening the publishing channel"))?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(step("enabling publisher confirms"))?;
        if let Some(exchange) = self.config.exchange.as_deref().filter(|e| !e.is_empty()) {
            // Publishing to a missing exchange would close the channel under every
            // event of a batch; checking here reports it on `/readyz` instead.
            let passive = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
            publisher
                .exchange_declare(name(exchange)?, ExchangeKind::Direct, passive, FieldTable::default())
                .await
                .map_err(step(format!("checking exchange `{exchange}`")))?;
        }
        if !consume {
            return Ok((publisher, None));
        }
        let channel = match self.config.consumer {
            ConsumerMode::Broadcast => {
                let channel = self.consuming_channel(connection).await?;
                let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
                channel
                    .queue_declare(name(queue)?, options, FieldTable::default())
                    .await
                    .map_err(step(format!("declaring queue `{queue}`")))?;
                channel
            }
            ConsumerMode::Shared => {
                // An operator's queue may carry arguments (a dead-letter exchange, a
                // quorum type) that a plain declaration would contradict: use it as it
                // is, and declare a plain durable queue only when there is none.
                let channel = self.consuming_channel(connection).await?;
                let passive = QueueDeclareOptions { passive: true, ..Default::default() };
                match channel.queue_declare(name(queue)?, passive, FieldTable::default()).await {
                    Ok(_) => channel,
                    Err(e) if is_not_found(&e) => {
                        // The failed check closed that channel.
                        let channel = self.consuming_channel(connection).await?;
                        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
                        channel
                            .queue_declare(name(queue)?, durable, FieldTable::default())
                            .await
                            .map_err(step(format!("declaring queue `{queue}`")))?;
                        channel
                    }
                    Err(e) => return Err(step(format!("checking queue `{queue}`"))(e)),
                }
            }
        };
        if let Some(exchange) = &self.config.bind_exchange {
            let key = self.config.binding_key.as_deref().unwrap_or("#");
            channel
                .queue_bind(
                    name(queue)?,
                    name(exchange)?,
                    name(key)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(step(format!("binding queue `{queue}` to exchange `{exchange}` with key `{key}`")))?;
        }
        let tag = format!("mediation-host.{}.{}", self.ctx.host.instance_id(), self.ctx.name);
        let consumer = channel
            .basic_consume(name(queue)?, name(&tag)?, BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(step(format!("consuming queue `{queue}`")))?;
        Ok((publisher, Some(consumer)))
    }

    /// Opens a channel for consuming, with the prefetch limit.
    async fn consuming_channel(&self, connection: &Connection) -> Result<Channel, OpenError> {
        let channel = connection.create_channel().await.map_err(step("opening the consuming channel"))?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(step(format!("setting prefetch {}", self.config.prefetch)))?;
        Ok(channel)
    }

    /// Serves `session` (the publisher reads it from the link; `consumer` runs here)
    /// until it breaks, the routes change whether it should consume, or `stop`.
    async fn serve(
        self: &Arc<Self>,
        session: &Session,
        consumer: Option<lapin::Consumer>,
        queue: &str,
        stop: &CancellationToken,
    ) -> Ended {
        let mut events = Box::pin(session.connection.events_listener());
        let mut tick = tokio::time::interval(HEALTH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let consuming = async {
            match consumer {
                Some(consumer) => consume::Consumer::new(Arc::clone(self), queue).run(consumer).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(consuming);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ended::Stop,
                end = &mut consuming => return match end {
                    consume::End::Broken(reason) => Ended::Broken(reason),
                    consume::End::RoutesGone => Ended::RoutesChanged,
                },
                Some(event) = events.next() => match event {
                    lapin::Event::Error(e) => return Ended::Broken(e.to_string()),
                    lapin::Event::ConnectionBlocked(reason) => {
                        tracing::warn!(reason = %reason, "the broker blocked publishing (resource alarm)");
                    }
                    lapin::Event::ConnectionUnblocked => tracing::info!("the broker unblocked publishing"),
                    _ => {}
                },
                () = self.broken.notified() => {}
                _ = tick.tick() => {}
            }
            if let Some(reason) = session.broken() {
                return Ended::Broken(reason);
            }
            if !self.ctx.shutdown.sources.is_cancelled() && self.wants_consumer() != session.consuming {
                return Ended::RoutesChanged;
            }
        }
    }
}

/// `value` as an AMQP short string.
fn name(value: &str) -> Result<ShortString, OpenError> {
    ShortString::try_new(value).map_err(|_| OpenError::Name(format!("`{value}` is longer than 255 bytes")))
}

/// True when the broker answered 404 NOT_FOUND.
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

/// Closes `connection`, which requeues whatever was delivered and not acked.
async fn close(connection: &Connection) {
    if connection.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "mediation host closing".into())).await;
    }
}
