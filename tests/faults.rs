//! Network faults between the host and each broker, through a real Toxiproxy
//! (`scripts/brokers.sh up toxiproxy`, its API at `MEDIATION_TOXIPROXY`, default
//! `127.0.0.1:8474`): latency, a reset mid-publish, a 30 s black hole and a bandwidth
//! limit, each run against RabbitMQ, Kafka, Mosquitto and Artemis. The scenarios are
//! written once, in `support::faults`; this file says how each broker is reached and read.
//!
//! The brokers are the ones the broker tests use, at the same addresses and environment
//! variables. What arrived is read with each broker's own client on the broker's own
//! address, never through the proxy. A missing broker or Toxiproxy fails the tests: they
//! never skip.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use support::faults::{self, Broker};
use support::unique;
use tokio::sync::{Mutex, MutexGuard, mpsc};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// `host:port` of a URL such as `amqp://user:password@host:port/vhost`.
fn authority(url: &str) -> String {
    let url = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    format!("{}:{}", url.host_str().expect("a host"), url.port().expect("a port"))
}

/// `url` with its `host:port` replaced by `proxy`.
fn through(url: &str, proxy: SocketAddr) -> String {
    url.replacen(&authority(url), &proxy.to_string(), 1)
}

/// RabbitMQ: the endpoint publishes to the default exchange, routed to a durable queue
/// of the test's own; heartbeats every 2 s make it notice a silent connection.
struct RabbitMq {
    url: String,
    queue: String,
    /// The broker's own client; the connection must outlive the channel.
    _connection: Connection,
    channel: Channel,
}

impl RabbitMq {
    async fn new() -> Self {
        let url = env_or("MEDIATION_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        let connection = Connection::connect(&url, ConnectionProperties::default()).await.unwrap_or_else(|e| {
            panic!("RabbitMQ is not reachable ({e}); start it with `scripts/brokers.sh up rabbitmq`")
        });
        let channel = connection.create_channel().await.expect("a channel");
        let queue = unique("mh-test-faults");
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(short(&queue), durable, FieldTable::default()).await.expect("a queue");
        Self { url, queue, _connection: connection, channel }
    }
}

fn short(s: &str) -> ShortString {
    ShortString::try_new(s).expect("a short string")
}

impl Broker for RabbitMq {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn upstream(&self) -> String {
        authority(&self.url)
    }

    fn destination(&self) -> String {
        self.queue.clone()
    }

    fn endpoint(&self, proxy: SocketAddr) -> String {
        let url = through(&self.url, proxy);
        let separator = if url.contains('?') { '&' } else { '?' };
        format!(
            "[endpoints.target]\ntype = \"rabbitmq\"\nurl = \"{url}{separator}heartbeat=2\"\n\
             confirm_timeout_ms = 5000\nconnect_timeout_ms = 2000\n"
        )
    }

    async fn arrived(&mut self) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + faults::READ_FOR;
        let mut got = Vec::new();
        while Instant::now() < deadline
            && let Some(message) =
                self.channel.basic_get(short(&self.queue), BasicGetOptions { no_ack: true }).await.expect("basic.get")
        {
            got.push(message.delivery.data);
        }
        got
    }
}

/// Kafka's proxy listens on the fixed address the broker's FAULTS listener advertises, so
/// one Kafka fault test runs at a time.
static KAFKA_PROXY: Mutex<()> = Mutex::const_new(());

/// Kafka: the endpoint bootstraps from the proxy, in front of the FAULTS listener, which
/// advertises the proxy's address, so that every connection librdkafka opens goes
/// through it. A topic of one partition keeps the order of the answers.
struct Kafka {
    topic: String,
    /// The broker's own consumer, on the PLAINTEXT listener, reading from the beginning.
    consumer: BaseConsumer,
    _proxy: MutexGuard<'static, ()>,
}

impl Kafka {
    async fn new() -> Self {
        let proxy = KAFKA_PROXY.lock().await;
        let brokers = env_or("MEDIATION_KAFKA_BROKERS", "127.0.0.1:9092");
        let topic = unique("mh-test-faults");
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("an admin client");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let created = support::within(
            "creating the topic (is Kafka up? `scripts/brokers.sh up kafka`)",
            admin.create_topics(&[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))], &options),
        )
        .await
        .unwrap_or_else(|e| {
            panic!("Kafka is not reachable at {brokers} ({e}); start it with `scripts/brokers.sh up kafka`")
        });
        for result in created {
            result.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", unique("mh-test-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("a consumer");
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&topic, 0, Offset::Beginning).expect("a partition");
        consumer.assign(&assignment).expect("assigned");
        Self { topic, consumer, _proxy: proxy }
    }
}

impl Broker for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn upstream(&self) -> String {
        env_or("MEDIATION_KAFKA_FAULTS_LISTENER", "127.0.0.1:9096")
    }

    fn listen(&self) -> String {
        env_or("MEDIATION_KAFKA_FAULTS_PROXY", "127.0.0.1:9097")
    }

    fn destination(&self) -> String {
        self.topic.clone()
    }

    fn endpoint(&self, proxy: SocketAddr) -> String {
        format!(
            "[endpoints.target]\ntype = \"kafka\"\nbrokers = \"{proxy}\"\ntopic = \"{}\"\n\
             delivery_timeout_ms = 5000\nconnect_timeout_ms = 2000\n",
            self.topic
        )
    }

    async fn arrived(&mut self) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + faults::READ_FOR;
        tokio::task::block_in_place(|| {
            let mut got = Vec::new();
            while let Some(left) = deadline.checked_duration_since(Instant::now())
                && let Some(message) = self.consumer.poll(left)
            {
                got.push(message.expect("a record").payload().unwrap_or_default().to_vec());
            }
            got
        })
    }
}

/// Mosquitto: the endpoint publishes with QoS 1 under a prefix of the test's own, which
/// an independent subscriber on the broker's own address reads; a keep-alive of 5 s
/// makes the endpoint notice a silent connection.
struct Mosquitto {
    url: String,
    prefix: String,
    received: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Mosquitto {
    async fn new() -> Self {
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};

        let url = env_or("MEDIATION_MQTT_URL", "mqtt://127.0.0.1:1883");
        let address = mediation_host::endpoints::mqtt::parse_url(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let prefix = unique("mh-test-faults");
        let mut options = MqttOptions::new(unique("mh-test-sub"), address.host, address.port);
        options.set_max_packet_size(Some(16 * 1024 * 1024));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        client.subscribe_many([Filter::new(format!("{prefix}/#"), QoS::AtLeastOnce)]).await.expect("queued");
        loop {
            match support::within("SUBACK", eventloop.poll()).await {
                Ok(Event::Incoming(Packet::SubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("Mosquitto is not reachable ({e}); start it with `scripts/brokers.sh up mosquitto`"),
            }
        }
        let (tx, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if tx.send(publish.payload.to_vec()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("the test subscriber lost Mosquitto: {e}"),
                }
            }
        });
        Self { url, prefix, received }
    }
}

impl Broker for Mosquitto {
    fn name(&self) -> &'static str {
        "mosquitto"
    }

    fn upstream(&self) -> String {
        authority(&self.url)
    }

    fn destination(&self) -> String {
        String::from("orders")
    }

    fn endpoint(&self, proxy: SocketAddr) -> String {
        format!(
            "[endpoints.target]\ntype = \"mqtt\"\nurl = \"{}\"\nkeep_alive_s = 5\nconfirm_timeout_ms = 5000\n\
             connect_timeout_ms = 2000\nadapter_settings = {{ topic_prefix = \"{}/\" }}\n",
            through(&self.url, proxy),
            self.prefix
        )
    }

    async fn arrived(&mut self) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while let Ok(payload) = self.received.try_recv() {
            got.push(payload);
        }
        got
    }
}

/// Artemis: the endpoint sends to a queue of the test's own, which a real AMQP 1.0
/// receiver on the broker's own address reads; an idle timeout of 2 s (heartbeats every
/// second) makes the endpoint notice a silent connection.
struct Artemis {
    url: String,
    queue: String,
    receiver: fe2o3_amqp::Receiver,
    /// The receiver's session and connection, kept open as long as it is.
    _session: fe2o3_amqp::session::SessionHandle<()>,
    _connection: fe2o3_amqp::connection::ConnectionHandle<()>,
}

impl Artemis {
    async fn new() -> Self {
        let url = env_or("MEDIATION_ARTEMIS_URL", "amqp://mediation:mediation-secret@127.0.0.1:5673");
        let mut connection = support::within(
            "connecting to Artemis",
            fe2o3_amqp::Connection::builder().container_id(unique("mh-test-client")).open(url.as_str()),
        )
        .await
        .unwrap_or_else(|e| panic!("Artemis is not reachable ({e}); start it with `scripts/brokers.sh up artemis`"));
        let mut session = fe2o3_amqp::Session::begin(&mut connection).await.expect("a session");
        let queue = unique("mh-test-faults");
        let receiver =
            fe2o3_amqp::Receiver::attach(&mut session, unique("mh-test-receiver"), format!("queue://{queue}"))
                .await
                .expect("a receiver");
        Self { url, queue, receiver, _session: session, _connection: connection }
    }
}

impl Broker for Artemis {
    fn name(&self) -> &'static str {
        "artemis"
    }

    fn upstream(&self) -> String {
        authority(&self.url)
    }

    fn destination(&self) -> String {
        self.queue.clone()
    }

    fn endpoint(&self, proxy: SocketAddr) -> String {
        format!(
            "[endpoints.target]\ntype = \"amqp\"\nurl = \"{}\"\nidle_timeout_ms = 2000\nsend_timeout_ms = 5000\n\
             connect_timeout_ms = 2000\n",
            through(&self.url, proxy)
        )
    }

    async fn arrived(&mut self) -> Vec<Vec<u8>> {
        use fe2o3_amqp::types::messaging::{AmqpValue, Body, Data};
        use fe2o3_amqp::types::primitives::Value;

        let deadline = tokio::time::Instant::now() + faults::READ_FOR;
        let mut got = Vec::new();
        while let Ok(delivery) = tokio::time::timeout_at(deadline, self.receiver.recv::<Body<Value>>()).await {
            let delivery = delivery.expect("a message");
            self.receiver.accept(&delivery).await.expect("accepted");
            got.push(match delivery.body() {
                Body::Value(AmqpValue(Value::String(s))) => s.clone().into_bytes(),
                Body::Data(sections) => sections.iter().flat_map(|Data(b)| b.to_vec()).collect(),
                other => panic!("not text or data: {other:?}"),
            });
        }
        got
    }
}

/// The four scenarios against one broker, made by `$new`.
macro_rules! faults {
    ($broker:ident, $new:expr) => {
        mod $broker {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn latency_delays_acknowledgements_and_loses_nothing() {
                faults::bounded(faults::latency($new.await)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_bandwidth_limit_delays_acknowledgements_and_loses_nothing() {
                faults::bounded(faults::bandwidth($new.await)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_reset_mid_publish_acknowledges_nothing_unconfirmed_and_recovers() {
                faults::bounded(faults::reset($new.await)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_black_hole_acknowledges_nothing_turns_unready_and_recovers() {
                faults::bounded(faults::black_hole($new.await)).await;
            }
        }
    };
}

faults!(rabbitmq, RabbitMq::new());
faults!(kafka, Kafka::new());
faults!(mosquitto, Mosquitto::new());
faults!(artemis, Artemis::new());
