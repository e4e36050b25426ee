//! The `mqtt` endpoint: MQTT 5 through `rumqttc`'s v5 client.
//!
//! As a **target** it drains its queue in batches, maps each batch through its adapter
//! and publishes the records, then awaits their acknowledgements together: an event
//! succeeds on PUBACK (QoS 1) or PUBCOMP (QoS 2) with a success reason code, and on
//! QoS 0 as soon as the client wrote it (at-most-once: MQTT confirms nothing). A
//! failure reason code fails the event as refused by the broker, no answer within
//! `confirm_timeout_ms` as a timeout. While the broker is unreachable, deliveries fail
//! at once as *unavailable* (HTTP 503), not after a timeout.
//!
//! As a **source**, only while routes leave it, it subscribes to its topic filters
//! (`$share/<group>/` in shared mode) with manual acknowledgements (see `consume.rs`):
//! a message is acknowledged only after every target accepted its event.
//!
//! One supervisor task owns the connection. Each attempt builds a new client and event
//! loop, waits for CONNACK and, when consuming, SUBACK, and then reports the endpoint
//! ready; a driver task polls the event loop from then on. When the connection breaks,
//! the supervisor reports why on `/readyz`, fails what waits for an acknowledgement as
//! unavailable, and connects again with backoff, subscribing again (a broker that lost
//! the session has lost the subscriptions too).

mod config;
mod consume;
mod message;
mod publish;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Filter, Packet, PubAckReason, PubCompReason, PubRecReason, Publish,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::{NetworkOptions, Outgoing, TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::{BrokerAddress, MqttConfig, check_filter, parse_url, qos};
use publish::{Answer, Inflight};

use crate::adapter::{self, Adapter};
use crate::component::{ComponentContext, StartError};
use crate::endpoints::link::{self, Ended, Health};
use crate::pipeline::TargetSender;

/// How often a connected session checks whether the routes still want it to consume.
const ROUTES_TICK: Duration = Duration::from_millis(200);
/// How long a clean DISCONNECT may take at shutdown before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Room in the packet size the client accepts beyond `max_message_bytes`, for the
/// topic and properties of a received message.
const PACKET_OVERHEAD_BYTES: usize = 128 * 1024;

/// What the supervisor, the publisher and the consumer share.
struct Endpoint {
    /// Everything a component needs from the host.
    ctx: ComponentContext,
    /// The endpoint's settings.
    config: MqttConfig,
    /// The broker as logs show it: scheme, user, host and port, never the password.
    url: String,
    /// Where to connect.
    address: BrokerAddress,
    /// The TLS settings of `mqtts://`, read at startup.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// This instance's client id.
    client_id: String,
    /// The filters subscribed to, as sent (with `$share/<group>/` in shared mode).
    filters: Vec<String>,
    /// The mapping, both directions.
    adapter: Adapter,
    /// Whether it is connected, and why not.
    health: Health,
    /// The ordering key of everything received: one session delivers in one order.
    ordering_key: u64,
}

/// One connection: what the publisher and the consumer send requests through.
struct Session {
    /// The client handle of this connection's event loop.
    client: AsyncClient,
    /// The publishes waiting for the broker's acknowledgement.
    inflight: Inflight,
    /// The broker's maximum packet size (CONNACK), if it named one.
    max_packet_bytes: Option<usize>,
}

/// A connected, subscribed session, before its driver starts.
struct Opened {
    /// What the tasks share.
    session: Session,
    /// The event loop, polled by the driver from now on.
    eventloop: EventLoop,
    /// Messages that arrived before SUBACK (a resumed session's), in order.
    received: Vec<Publish>,
}

/// The endpoint as [`link::supervise`] drives it.
struct Supervisor {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// Carries the live session to the publisher.
    link: watch::Sender<Option<Arc<Session>>>,
}

impl link::Connector for Supervisor {
    /// The session, and whether it subscribed.
    type Connection = (Opened, bool);

    fn endpoint(&self) -> (&ComponentContext, &Health, &str) {
        (&self.endpoint.ctx, &self.endpoint.health, &self.endpoint.url)
    }

    fn wants_consumer(&self) -> bool {
        self.endpoint.wants_consumer()
    }

    async fn open(&self, consume: bool) -> Result<Self::Connection, String> {
        let timeout = Duration::from_millis(self.endpoint.config.connect_timeout_ms);
        match tokio::time::timeout(timeout, self.endpoint.open(consume)).await {
            Ok(opened) => opened.map(|opened| (opened, consume)),
            Err(_) => {
                let what = if consume { "CONNACK or SUBACK" } else { "CONNACK" };
                Err(format!("no {what} within {} ms", timeout.as_millis()))
            }
        }
    }

    async fn serve(&self, (opened, consuming): Self::Connection, stop: &CancellationToken) -> Ended {
        let endpoint = &self.endpoint;
        let Opened { session, eventloop, received } = opened;
        tracing::info!(url = %endpoint.url, client_id = %endpoint.client_id, consuming, "connected to the mqtt broker");
        let session = Arc::new(session);
        self.link.send_replace(Some(Arc::clone(&session)));
        let ended = endpoint.serve(&session, eventloop, received, consuming, stop).await;
        self.link.send_replace(None);
        let lost = ended.reason(&endpoint.url);
        session.inflight.lose(lost.as_deref().unwrap_or("the host closed the connection"));
        ended
    }
}

/// Loads the adapter and the TLS settings, and starts the supervisor and the
/// publishing task. `config` may come from TOML or be built in code.
///
/// # Errors
/// When the adapter cannot be loaded, the URL is invalid, the TLS files cannot be read,
/// or routes leave the endpoint but it has no subscriptions.
pub fn spawn(ctx: ComponentContext, config: &MqttConfig) -> Result<(TargetSender, JoinHandle<()>), StartError> {
    let span = ctx.endpoint_span("mqtt");
    let adapter = ctx.load_adapter(&config.adapter, adapter::Role::Endpoint, &config.adapter_settings)?;
    let address = parse_url(&config.url).map_err(|e| ctx.refuse(format!("url: {e}")))?;
    let tls =
        if address.tls { Some(config.tls.client_config().map_err(|e| ctx.refuse(format!("tls: {e}")))?) } else { None };
    let routed = ctx.is_routed();
    if routed && config.subscriptions.is_empty() {
        return Err(ctx.refuse(String::from(
            "routes leave this endpoint, so it consumes, but it has nothing to subscribe to: set `subscriptions`",
        )));
    }
    let scheme = if address.tls { "mqtts" } else { "mqtt" };
    let user = config.username.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
    let url =
        config.broker_label.clone().unwrap_or_else(|| format!("{scheme}://{user}{}:{}", address.host, address.port));
    let client_id = config.client_id(&ctx.name, &ctx.host.instance_id());
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let endpoint = Arc::new(Endpoint {
        ordering_key: ctx.ordering_key(&client_id),
        health: Health::connecting(Arc::clone(&ctx.name), Arc::clone(&ctx.readiness), format!("connecting to {url}")),
        filters: config.subscribed_filters(&ctx.name),
        ctx,
        config: config.clone(),
        url,
        address,
        tls,
        client_id,
        adapter,
    });
    let task = link::run(
        {
            let endpoint = Arc::clone(&endpoint);
            move |link| Supervisor { endpoint, link }
        },
        move |watching| publish::Publisher::new(endpoint, watching).run(rx),
    );
    Ok((tx, tokio::spawn(task.instrument(span))))
}

impl Endpoint {
    /// True when the endpoint consumes: it has filters and routes leave it. Its
    /// session is then kept, also while the host stops its sources.
    fn routed(&self) -> bool {
        !self.filters.is_empty() && self.ctx.is_routed()
    }

    /// True when the endpoint should subscribe: it is [`routed`](Self::routed) and the
    /// host is not stopping its sources.
    fn wants_consumer(&self) -> bool {
        self.routed() && !self.ctx.shutdown.sources.is_cancelled()
    }

    /// The client options of one connection attempt.
    fn options(&self) -> MqttOptions {
        let config = &self.config;
        let mut options = MqttOptions::new(self.client_id.clone(), self.address.host.clone(), self.address.port);
        options.set_keep_alive(Duration::from_secs(u64::from(config.keep_alive_s)));
        // A session is kept only while the endpoint consumes: without subscriptions
        // there is nothing to keep, and an old session's subscriptions would deliver
        // messages nobody takes. A host stopping its sources keeps it for the next start.
        let persistent = self.routed() && config.session_expiry_s > 0;
        options.set_clean_start(!persistent);
        options.set_session_expiry_interval(persistent.then_some(config.session_expiry_s));
        options.set_receive_maximum(Some(config.receive_maximum));
        let max_packet = config.max_message_bytes.saturating_add(PACKET_OVERHEAD_BYTES);
        options.set_max_packet_size(Some(u32::try_from(max_packet).unwrap_or(u32::MAX)));
        options.set_manual_acks(true);
        // Room for a whole batch of publishes and every acknowledgement of the messages
        // the broker may send ahead, so that queueing a request never waits.
        options.set_request_channel_capacity(2 * (config.max_batch + usize::from(config.receive_maximum)) + 64);
        // Without Nagle's algorithm: a batch's publishes and the acknowledgements of
        // received messages go out at once instead of waiting for the broker's ACK.
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        options.set_connection_timeout(config.connect_timeout_ms.div_ceil(1000));
        if let Some(username) = &config.username {
            let password = config.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
            options.set_credentials(username.clone(), password);
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::clone(tls))));
        }
        options
    }

    /// Connects and waits for CONNACK; when `consume`, subscribes and waits for SUBACK.
    async fn open(&self, consume: bool) -> Result<Opened, String> {
        // The capacity given here is the one rumqttc uses (not the options' own).
        let options = self.options();
        let capacity = options.request_channel_capacity();
        let (client, mut eventloop) = AsyncClient::new(options, capacity);
        let connack = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => connack,
            Ok(other) => return Err(format!("expected CONNACK, got {other:?}")),
            Err(e) => return Err(describe(&e)),
        };
        let max_packet_bytes =
            connack.properties.as_ref().and_then(|p| p.max_packet_size).and_then(|m| usize::try_from(m).ok());
        let session = Session { client, inflight: Inflight::default(), max_packet_bytes };
        let mut received = Vec::new();
        if consume {
            let level = qos(self.config.subscription_qos);
            let filters = self.filters.iter().map(|f| Filter::new(f.clone(), level));
            session.client.subscribe_many(filters).await.map_err(|e| format!("subscribing: {e}"))?;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => received.push(publish),
                    Ok(Event::Incoming(Packet::SubAck(suback))) => {
                        let refused: Vec<String> = self
                            .filters
                            .iter()
                            .zip(&suback.return_codes)
                            .filter(|(_, code)| {
                                !matches!(code, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_))
                            })
                            .map(|(filter, code)| format!("`{filter}` ({code:?})"))
                            .collect();
                        if !refused.is_empty() {
                            return Err(format!("the broker refused the subscription to {}", refused.join(", ")));
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("subscribing: {}", describe(&e))),
                }
            }
        }
        Ok(Opened { session, eventloop, received })
    }

    /// Serves a session: a driver task polls the event loop, the consumer (when
    /// `consuming`) hands received messages over, until the connection breaks, the
    /// routes change whether it should consume, or `stop`.
    async fn serve(
        self: &Arc<Self>,
        session: &Arc<Session>,
        eventloop: EventLoop,
        received: Vec<Publish>,
        consuming: bool,
        stop: &CancellationToken,
    ) -> Ended {
        // Unbounded, so that the driver never waits for the consumer: it must keep
        // polling to send acknowledgements and pings and to settle publishes. What it
        // holds is bounded by `receive_maximum` for QoS 1 and 2 (when the broker keeps
        // to it) and by `held` below for QoS 0.
        let (to_consumer, from_driver) = mpsc::unbounded_channel();
        let inbox = Inbox {
            sender: to_consumer,
            held: Arc::default(),
            qos0_room: usize::from(self.config.receive_maximum) + self.config.max_batch,
        };
        for publish in received {
            inbox.push(publish);
        }
        let held = Arc::clone(&inbox.held);
        // Polled only here, never cancelled mid-way: a cancelled poll could lose a
        // packet it was writing.
        let mut driver =
            tokio::spawn(drive(eventloop, Arc::clone(session), consuming.then_some(inbox)).in_current_span());
        let consumer = async {
            if consuming {
                consume::Consumer::new(Arc::clone(self), session.client.clone()).run(from_driver, held).await
            } else {
                drop(from_driver);
                std::future::pending().await
            }
        };
        tokio::pin!(consumer);
        let mut tick = tokio::time::interval(ROUTES_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            tokio::select! {
                () = stop.cancelled() => {
                    // A clean DISCONNECT keeps the session (and what was not acknowledged)
                    // on the broker for the next start.
                    let _ = session.client.try_disconnect();
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut driver).await;
                    break Ended::Stop;
                }
                reason = &mut driver => break Ended::Broken(reason.unwrap_or_else(|e| format!("the client failed: {e}"))),
                end = &mut consumer => break match end {
                    consume::End::Broken(reason) => Ended::Broken(reason),
                    consume::End::RoutesGone => Ended::RoutesChanged,
                },
                _ = tick.tick() => {
                    if !self.ctx.shutdown.sources.is_cancelled() && self.wants_consumer() != consuming {
                        break Ended::RoutesChanged;
                    }
                }
            }
        };
        driver.abort();
        ended
    }
}

/// Polls the event loop until the connection ends, and returns why: settles publishes
/// with the broker's answers and passes received messages to the consumer.
async fn drive(mut eventloop: EventLoop, session: Arc<Session>, inbox: Option<Inbox>) -> String {
    loop {
        let event = match eventloop.poll().await {
            Ok(event) => event,
            // Polling again would reconnect inside the client; the supervisor does that.
            Err(e) => return describe(&e),
        };
        let inflight = &session.inflight;
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => inflight.sent(pkid),
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => inflight.collided(pkid),
            Event::Incoming(Packet::PubAck(ack)) => {
                let answer = match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Answer::Confirmed,
                    reason => Answer::Refused(format!("PUBACK {reason:?}")),
                };
                inflight.answered(ack.pkid, answer);
            }
            Event::Incoming(Packet::PubRec(rec))
                if !matches!(rec.reason, PubRecReason::Success | PubRecReason::NoMatchingSubscribers) =>
            {
                inflight.answered(rec.pkid, Answer::Refused(format!("PUBREC {:?}", rec.reason)));
            }
            Event::Incoming(Packet::PubComp(comp)) => {
                let answer = match comp.reason {
                    PubCompReason::Success => Answer::Confirmed,
                    reason => Answer::Refused(format!("PUBCOMP {reason:?}")),
                };
                inflight.answered(comp.pkid, answer);
            }
            Event::Incoming(Packet::Publish(publish)) => {
                if let Some(inbox) = &inbox
                    && !inbox.push(publish)
                {
                    return String::from("the consumer stopped");
                }
            }
            _ => {}
        }
    }
}

/// Received messages on their way from the driver to the consumer.
struct Inbox {
    /// To the consumer.
    sender: mpsc::UnboundedSender<Publish>,
    /// Messages sent and not yet taken by the consumer.
    held: Arc<AtomicUsize>,
    /// How many may be held before a QoS 0 message is dropped.
    qos0_room: usize,
}

impl Inbox {
    /// Passes `publish` on. False when the consumer is gone.
    fn push(&self, publish: Publish) -> bool {
        if publish.qos == QoS::AtMostOnce && self.held.load(Ordering::Relaxed) >= self.qos0_room {
            // The broker does not flow-control QoS 0: at most once, such a message is
            // dropped (and said so) while the consumer is this far behind.
            tracing::warn!(held = self.qos0_room, "a QoS 0 message arrived while the consumer was full; dropped");
            return true;
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        self.sender.send(publish).is_ok()
    }
}

/// A client error in words, naming CONNACK refusals and what usually causes them.
fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => {
            format!("the broker refused the connection (CONNACK {code:?}): check `username` and `password`")
        }
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection (CONNACK {code:?})"),
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, reason_string }) => {
            match reason_string {
                Some(text) => format!("the broker disconnected (DISCONNECT {reason_code:?}: {text})"),
                None => format!("the broker disconnected (DISCONNECT {reason_code:?})"),
            }
        }
        ConnectionError::Timeout(_) => String::from("no answer from the broker in time"),
        other => other.to_string(),
    }
}
