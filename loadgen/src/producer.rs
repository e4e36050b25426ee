//! Publishers that learn when each message was confirmed: the host's WebSocket
//! envelope protocol (`"ack": true`) and the brokers' own protocols, so that the
//! host path and a direct client are driven by the same windowed loop
//! ([`crate::publish`]) and the same fan-out publisher ([`crate::fanout`]).
//!
//! Each [`Producer::send`] hands one message to the connection and returns a
//! [`Confirm`] that resolves when the other side confirmed it: the host's `ack`
//! frame, RabbitMQ's publisher confirm, MQTT 5's PUBACK (QoS 1) or AMQP 1.0's
//! `accepted` outcome. Every address must be `127.0.0.1`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use fe2o3_amqp::types::messaging::{Header, Message, Outcome};
use fe2o3_amqp::types::primitives::Binary;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

use lapin::{BasicProperties, Confirmation, ConnectionProperties};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Error;
use crate::target::Target;

/// The WebSocket read buffer (see `subscriber.rs`: tungstenite zero-fills its default 128 KiB per read).
const WS_READ_BUFFER_BYTES: usize = 4096;
/// Requests rumqttc's client may queue for its event loop.
const MQTT_REQUEST_CAPACITY: usize = 1024;
/// How long a broker connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a message sent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The other side confirmed it.
    Confirmed,
    /// The other side answered with a refusal (a nack, an error or timeout status,
    /// another outcome), and why.
    Refused(String),
    /// No answer will come: the connection failed first, and how.
    Lost(String),
}

/// Resolves once the message is settled.
pub type Confirm = Pin<Box<dyn Future<Output = Settled> + Send>>;

/// Which protocol a direct client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// RabbitMQ, AMQP 0-9-1 (lapin): persistent messages, publisher confirms.
    Rabbitmq,
    /// MQTT 5 (rumqttc): QoS 1, confirmed by PUBACK.
    Mqtt,
    /// AMQP 1.0 (fe2o3-amqp), e.g. Artemis: durable, unsettled, confirmed by `accepted`.
    Amqp,
}

/// Where producers connect: the host's WebSocket envelope entrypoint or a broker.
#[derive(Debug, Clone)]
pub enum Destination {
    /// `ws://127.0.0.1:PORT/PATH` with `protocol = "envelope"`; `topic` goes into every publish when set.
    WebSocket {
        /// The entrypoint.
        target: Target,
        /// The envelope's `topic`; unset: the entrypoint's `destination`.
        topic: Option<String>,
    },
    /// A broker spoken to directly.
    Broker {
        /// The protocol.
        protocol: Protocol,
        /// The broker URL, host `127.0.0.1` (`amqp://user:pass@127.0.0.1:5672/%2f`,
        /// `mqtt://127.0.0.1:1883`, `amqp://user:pass@127.0.0.1:5673`).
        url: String,
        /// RabbitMQ: the routing key; MQTT: the topic; AMQP 1.0: the target address.
        to: String,
        /// RabbitMQ only: the exchange (`""`, the default exchange, routes by queue name).
        exchange: String,
    },
}

impl Destination {
    /// A broker destination, after checking that `url` names `127.0.0.1`.
    ///
    /// # Errors
    /// When the URL cannot be parsed or names another host.
    pub fn broker(protocol: Protocol, url: String, to: String, exchange: String) -> Result<Self, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if uri.host() != Some("127.0.0.1") {
            return Err(format!("`{url}`: the load generator only sends to 127.0.0.1"));
        }
        Ok(Self::Broker { protocol, url, to, exchange })
    }

    /// Opens one producer; `index` tells the producers of one run apart (client ids).
    ///
    /// # Errors
    /// When the connection or the protocol's handshake fails.
    pub async fn open(&self, index: usize) -> Result<Producer, Error> {
        let opening = async {
            match self {
                Self::WebSocket { target, topic } => {
                    WsProducer::open(target, topic.clone()).await.map(Producer::WebSocket)
                }
                Self::Broker { protocol: Protocol::Rabbitmq, url, to, exchange } => {
                    let connection = lapin::Connection::connect(url, ConnectionProperties::default()).await?;
                    let channel = connection.create_channel().await?;
                    channel.confirm_select(ConfirmSelectOptions::default()).await?;
                    let (exchange, key) = (exchange.as_str().into(), to.as_str().into());
                    Ok(Producer::Rabbitmq(Box::new(RabbitmqProducer {
                        _connection: connection,
                        channel,
                        exchange,
                        key,
                    })))
                }
                Self::Broker { protocol: Protocol::Mqtt, url, to, .. } => {
                    MqttProducer::open(url, to, index).await.map(Producer::Mqtt)
                }
                Self::Broker { protocol: Protocol::Amqp, url, to, .. } => {
                    let id = format!("loadgen-{}-{index}", std::process::id());
                    let mut connection = fe2o3_amqp::Connection::open(id.as_str(), url.as_str()).await?;
                    let mut session = fe2o3_amqp::Session::begin(&mut connection).await?;
                    let sender = fe2o3_amqp::Sender::attach(&mut session, id.as_str(), to.as_str()).await?;
                    Ok(Producer::Amqp(Box::new(AmqpProducer { _connection: connection, _session: session, sender })))
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, opening).await.map_err(|_| "no connection within 10 s")?
    }
}

/// One open connection that publishes.
#[derive(Debug)]
pub enum Producer {
    /// The host's WebSocket envelope entrypoint.
    WebSocket(WsProducer),
    /// A RabbitMQ channel in confirm mode.
    Rabbitmq(Box<RabbitmqProducer>),
    /// An MQTT 5 client.
    Mqtt(MqttProducer),
    /// An AMQP 1.0 sender link.
    Amqp(Box<AmqpProducer>),
}

/// A RabbitMQ channel in confirm mode, publishing persistent messages.
#[derive(Debug)]
pub struct RabbitmqProducer {
    /// Kept so that the connection lives as long as the channel.
    _connection: lapin::Connection,
    /// The channel publishes go to.
    channel: lapin::Channel,
    /// The exchange.
    exchange: lapin::types::ShortString,
    /// The routing key.
    key: lapin::types::ShortString,
}

/// An AMQP 1.0 sender link sending durable, unsettled messages.
#[derive(Debug)]
pub struct AmqpProducer {
    /// Kept open for the sender; closed with it when dropped.
    _connection: fe2o3_amqp::connection::ConnectionHandle<()>,
    /// See `_connection`.
    _session: fe2o3_amqp::session::SessionHandle<()>,
    /// The link messages go out on.
    sender: fe2o3_amqp::Sender,
}

impl Producer {
    /// Hands `payload` to the connection (a WebSocket publish waits for [`Self::flush`]).
    ///
    /// # Errors
    /// When the connection failed.
    pub async fn send(&mut self, seq: u64, payload: Vec<u8>) -> Result<Confirm, Error> {
        match self {
            Self::WebSocket(ws) => ws.send(seq, payload).await,
            Self::Rabbitmq(rabbitmq) => {
                let properties = BasicProperties::default().with_delivery_mode(2);
                let options = BasicPublishOptions::default();
                let RabbitmqProducer { channel, exchange, key, .. } = rabbitmq.as_ref();
                let confirm =
                    channel.basic_publish(exchange.clone(), key.clone(), options, &payload, properties).await?;
                Ok(async move {
                    match confirm.await {
                        Ok(Confirmation::Ack(None)) => Settled::Confirmed,
                        Ok(Confirmation::Ack(Some(_))) => Settled::Refused(String::from("returned as unroutable")),
                        Ok(other) => Settled::Refused(format!("not confirmed: {other:?}")),
                        Err(e) => Settled::Lost(e.to_string()),
                    }
                }
                .boxed())
            }
            Self::Mqtt(mqtt) => mqtt.send(payload).await,
            Self::Amqp(amqp) => {
                let message = Message::builder()
                    .header(Header { durable: true, ..Header::default() })
                    .data(Binary::from(payload))
                    .build();
                let outcome = amqp.sender.send_batchable(message).await?;
                Ok(async move {
                    match outcome.await {
                        Ok(Outcome::Accepted(_)) => Settled::Confirmed,
                        Ok(other) => Settled::Refused(format!("outcome {other:?}")),
                        Err(e) => Settled::Lost(e.to_string()),
                    }
                }
                .boxed())
            }
        }
    }

    /// Writes out what [`Self::send`] buffered (the WebSocket frames); the other
    /// clients write on their own.
    ///
    /// # Errors
    /// When the connection failed.
    pub async fn flush(&mut self) -> Result<(), Error> {
        match self {
            Self::WebSocket(ws) => Ok(ws.sink.flush().await?),
            Self::Rabbitmq(_) | Self::Mqtt(_) | Self::Amqp(_) => Ok(()),
        }
    }
}

/// Publishes waiting for their acknowledgement, by id.
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Settled>>>>;

/// A WebSocket envelope client: the sink writes publishes, a reader task matches
/// the host's `ack` frames to them by id.
#[derive(Debug)]
pub struct WsProducer {
    /// The writing half.
    sink: SplitSink<WebSocketStream<TcpStream>, WsMessage>,
    /// Publishes sent and not yet acknowledged; the reader settles them.
    waiting: Waiting,
    /// The envelope's `topic`, JSON-encoded with its quotes, when set.
    topic: Option<String>,
}

impl WsProducer {
    async fn open(target: &Target, topic: Option<String>) -> Result<Self, Error> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER_BYTES);
        let (socket, _) = tokio_tungstenite::client_async_with_config(target.to_string(), stream, Some(config)).await?;
        let (sink, stream) = socket.split();
        let waiting = Waiting::default();
        tokio::spawn(read_acks(stream, Arc::clone(&waiting)));
        Ok(Self { sink, waiting, topic: topic.map(|t| Value::String(t).to_string()) })
    }

    async fn send(&mut self, seq: u64, payload: Vec<u8>) -> Result<Confirm, Error> {
        // The payload is the JSON object of `payload::build`, so it goes in as `data` unquoted.
        let data = String::from_utf8(payload)?;
        let frame = match &self.topic {
            Some(topic) => format!(r#"{{"type":"publish","id":"{seq}","topic":{topic},"ack":true,"data":{data}}}"#),
            None => format!(r#"{{"type":"publish","id":"{seq}","ack":true,"data":{data}}}"#),
        };
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).insert(seq, tx);
        self.sink.feed(WsMessage::text(frame)).await?;
        Ok(async move { rx.await.unwrap_or_else(|_| Settled::Lost(String::from("connection ended before the ack"))) }
            .boxed())
    }
}

/// Settles publishes as their `{"type":"ack","id":..,"status":..}` frames arrive; when
/// the connection ends, dropping what is left tells their waiters.
async fn read_acks(mut stream: SplitStream<WebSocketStream<TcpStream>>, waiting: Waiting) {
    while let Some(Ok(message)) = stream.next().await {
        let WsMessage::Text(text) = message else { continue };
        let Ok(ack) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        if ack.get("type").and_then(Value::as_str) != Some("ack") {
            continue;
        }
        let Some(id) = ack.get("id").and_then(Value::as_str).and_then(|id| id.parse::<u64>().ok()) else { continue };
        let answer = match ack.get("status").and_then(Value::as_str) {
            Some("ok") => Settled::Confirmed,
            status => Settled::Refused(format!(
                "status {}: {}",
                status.unwrap_or("?"),
                ack.get("error").and_then(Value::as_str).unwrap_or("no reason given")
            )),
        };
        let waiter = waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(answer);
        }
    }
    waiting.lock().unwrap_or_else(PoisonError::into_inner).clear();
}

/// Publishes on their way, in the order rumqttc writes them, then by packet id.
#[derive(Debug, Default)]
struct MqttInflight {
    /// Queued by [`MqttProducer::send`], not yet written: the event loop writes
    /// requests in order, so the next `Outgoing::Publish` is the front's.
    queued: VecDeque<oneshot::Sender<Settled>>,
    /// Written, waiting for their PUBACK.
    sent: HashMap<u16, oneshot::Sender<Settled>>,
}

/// An MQTT 5 client publishing at QoS 1. rumqttc 0.25 gives no handle per publish,
/// so a task driving its event loop matches each PUBACK to its publish through the
/// order the loop reports writes in ([`MqttInflight`]).
#[derive(Debug)]
pub struct MqttProducer {
    /// Queues publishes for the event loop.
    client: AsyncClient,
    /// The topic.
    topic: String,
    /// Shared with the event-loop task.
    inflight: Arc<Mutex<MqttInflight>>,
}

impl MqttProducer {
    async fn open(url: &str, topic: &str, index: usize) -> Result<Self, Error> {
        let uri: hyper::Uri = url.parse()?;
        let mut options = MqttOptions::new(
            format!("loadgen-{}-{index}", std::process::id()),
            "127.0.0.1",
            uri.port_u16().unwrap_or(1883),
        );
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, MQTT_REQUEST_CAPACITY);
        match eventloop.poll().await? {
            Event::Incoming(Packet::ConnAck(_)) => {}
            other => return Err(format!("expected CONNACK, got {other:?}").into()),
        }
        let inflight = Arc::new(Mutex::new(MqttInflight::default()));
        tokio::spawn(drive_mqtt(eventloop, Arc::clone(&inflight)));
        Ok(Self { client, topic: topic.to_owned(), inflight })
    }

    async fn send(&mut self, payload: Vec<u8>) -> Result<Confirm, Error> {
        let (tx, rx) = oneshot::channel();
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner).queued.push_back(tx);
        self.client.publish(self.topic.clone(), QoS::AtLeastOnce, false, Bytes::from(payload)).await?;
        Ok(async move { rx.await.unwrap_or_else(|_| Settled::Lost(String::from("connection ended before the PUBACK"))) }
            .boxed())
    }
}

/// Polls the event loop until the connection fails, settling publishes as PUBACKs come.
async fn drive_mqtt(mut eventloop: EventLoop, inflight: Arc<Mutex<MqttInflight>>) {
    loop {
        let event = match eventloop.poll().await {
            Ok(event) => event,
            // Polling again would reconnect; a benchmark reports the failure instead.
            Err(_) => break,
        };
        let mut inflight = inflight.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(waiter) = inflight.queued.pop_front() {
                    inflight.sent.insert(pkid, waiter);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let answer = match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Settled::Confirmed,
                    reason => Settled::Refused(format!("PUBACK {reason:?}")),
                };
                if let Some(waiter) = inflight.sent.remove(&ack.pkid) {
                    let _ = waiter.send(answer);
                }
            }
            _ => {}
        }
    }
    let mut inflight = inflight.lock().unwrap_or_else(PoisonError::into_inner);
    inflight.queued.clear();
    inflight.sent.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_only_on_loopback() {
        let ok = Destination::broker(Protocol::Mqtt, "mqtt://127.0.0.1:1883".into(), "t".into(), String::new());
        assert!(ok.is_ok());
        let with_login = "amqp://mediation:secret@127.0.0.1:5672/%2f";
        assert!(Destination::broker(Protocol::Rabbitmq, with_login.into(), "q".into(), String::new()).is_ok());
        for bad in ["mqtt://localhost:1883", "amqp://user:pw@10.0.0.1:5672", "amqp://127.0.0.2:5673", "nope nope"] {
            let refused = Destination::broker(Protocol::Amqp, bad.into(), "q".into(), String::new());
            assert!(refused.is_err(), "{bad} must be refused");
        }
    }
}
