//! The `kafka` endpoint against the real broker that `scripts/brokers.sh up kafka`
//! starts. The addresses come from `MEDIATION_KAFKA_BROKERS` (default `127.0.0.1:9092`,
//! PLAINTEXT) and `MEDIATION_KAFKA_SASL_BROKERS` (default `127.0.0.1:9094`, SASL PLAIN
//! with `mediation`/`mediation-secret`), `MEDIATION_KAFKA_TLS_BROKERS` (default
//! `127.0.0.1:9095`, SASL_SSL, the same user) and `MEDIATION_KAFKA_TLS_CA` (default the test
//! CA that `brokers.sh` made, `~/.cache/mediation-host/brokers/kafka/tls/ca.pem`). A broker that cannot be reached fails the
//! tests, in CI and out of it: they never skip.
//!
//! Every test uses its own topics, groups and instance ids. The test that restarts the
//! broker holds [`BROKER`] exclusively; the others share it.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use support::{Restart, TestHost, assert_arrived_in_order, start_as, start_instance, unique, ws_next};
use tokio::sync::RwLock;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Shared by tests that need the broker up; held exclusively by the restart test.
static BROKER: RwLock<()> = RwLock::const_new(());

/// The PLAINTEXT listener.
fn brokers() -> String {
    std::env::var("MEDIATION_KAFKA_BROKERS").unwrap_or_else(|_| String::from("127.0.0.1:9092"))
}

/// The SASL_PLAINTEXT (PLAIN) listener.
fn sasl_brokers() -> String {
    std::env::var("MEDIATION_KAFKA_SASL_BROKERS").unwrap_or_else(|_| String::from("127.0.0.1:9094"))
}

/// The SASL_SSL (PLAIN) listener.
fn tls_brokers() -> String {
    std::env::var("MEDIATION_KAFKA_TLS_BROKERS").unwrap_or_else(|_| String::from("127.0.0.1:9095"))
}

/// The CA that signed the SASL_SSL listener's certificate.
fn tls_ca() -> String {
    std::env::var("MEDIATION_KAFKA_TLS_CA").unwrap_or_else(|_| {
        let home = std::env::var("HOME").expect("HOME is set");
        format!("{home}/.cache/mediation-host/brokers/kafka/tls/ca.pem")
    })
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers());
    config
}

/// Creates `topic` with `partitions`, failing clearly when the broker is missing.
async fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("an admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = tokio::time::timeout(
        Duration::from_secs(15),
        admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &options),
    )
    .await
    .map_err(|_| String::from("no answer in 15 s"))
    .and_then(|r| r.map_err(|e| e.to_string()));
    match created {
        Ok(results) => {
            for result in results {
                result.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
            }
        }
        Err(e) => panic!(
            "Kafka is not reachable at {} ({e}); start it with `scripts/brokers.sh up kafka` \
             (tests never skip a missing broker)",
            brokers()
        ),
    }
}

/// The broker's own producer.
fn producer() -> FutureProducer {
    client_config().set("acks", "all").create().expect("a producer")
}

/// Produces one record with `key` and `headers` and waits for its delivery report.
async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8], headers: &[(&str, &[u8])]) {
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header { key: name, value: Some(*value) });
    }
    let record = FutureRecord::to(topic).key(key).payload(payload).headers(owned);
    producer.send(record, Duration::from_secs(10)).await.unwrap_or_else(|(e, _)| panic!("produced: {e}"));
}

/// Reads every record of `topic` from the beginning until `n` arrived or `wait` passed,
/// with the broker's own consumer.
fn read_topic(topic: &str, n: usize, wait: Duration) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client_config()
        .set("group.id", unique("mh-test-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning).expect("a partition");
        }
    }
    consumer.assign(&assignment).expect("assigned");
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            got.push(message.expect("a record").detach());
        }
    }
    got
}

/// The value of header `name` of `message`.
fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a [u8]> {
    message.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value)
}

/// Polls the HTTP GET entrypoint `path` until `n` events arrived or `wait` passed.
async fn poll_events(t: &TestHost, path: &str, n: usize, wait: Duration) -> Vec<serde_json::Value> {
    poll_addr(t.listen(), path, n, wait).await
}

async fn poll_addr(addr: SocketAddr, path: &str, n: usize, wait: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + wait;
    let mut events = Vec::new();
    let mut cursor = 0u64;
    while events.len() < n && Instant::now() < deadline {
        let query = format!("{path}?cursor={cursor}&limit=1000&wait_ms=200");
        let reply = support::request(addr, "GET", &query, &[], Bytes::new()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        events.extend(body["events"].as_array().expect("events").iter().cloned());
        cursor = body["next_cursor"].as_u64().expect("a cursor");
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_answered_only_once_acknowledged_and_reaches_kafka_and_sse_whole_and_in_order() {
    let _broker = BROKER.read().await;
    let topic = unique("mh-test-post");
    create_topic(&topic, 3).await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{topic}"
        adapter_settings = {{ forward_headers = "x-order,x-tenant", content_types = "*/*" }}

        [entrypoints.events]
        type = "sse"
        path = "/events"

        [endpoints.kafka]
        type = "kafka"
        brokers = "{brokers}"
        topic = "{topic}"
        auto_offset_reset = "earliest"
        adapter_settings = {{ key_header = "x-order" }}

        [[routes]]
        source = "ingest"
        target = "kafka"

        [[routes]]
        source = "kafka"
        target = "events"
        "#,
        brokers = brokers()
    ))
    .await;
    let ready = t.await_ready(200, Duration::from_secs(15)).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let mut sse = t.sse("/events", &[]).await.expect("an SSE stream");

    let body = |i: usize| format!("{{\"n\":{i},\"text\":\"grüße\"}}");
    for i in 0..20 {
        let key = format!("order-{i}");
        let headers = [
            ("content-type", "application/json"),
            ("idempotency-key", key.as_str()),
            ("x-order", "customer-7"),
            ("x-tenant", "acme"),
        ];
        let reply = t.post("/ingest", &headers, body(i)).await;
        assert_eq!(reply.status, 202, "{}", reply.text());
        assert_eq!(reply.json()["ids"], json!([key]));
    }

    // The broker's own consumer sees every record, with key and headers, in order (one
    // key, one partition).
    let got = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || read_topic(&topic, 20, Duration::from_secs(10))
    })
    .await
    .expect("read");
    assert_eq!(got.len(), 20, "every acknowledged POST is in the topic");
    for (i, message) in got.iter().enumerate() {
        assert_eq!(message.topic(), topic);
        assert_eq!(message.key(), Some(&b"customer-7"[..]), "the key comes from `key_header`");
        assert_eq!(message.payload(), Some(body(i).as_bytes()), "bytes arrive exactly, in order");
        assert_eq!(header(message, "message-id"), Some(format!("order-{i}").as_bytes()), "Idempotency-Key");
        assert_eq!(header(message, "content-type"), Some(&b"application/json"[..]));
        assert_eq!(header(message, "x-tenant"), Some(&b"acme"[..]));
        assert_eq!(header(message, "x-order"), Some(&b"customer-7"[..]));
    }
    assert!(got.iter().all(|m| m.partition() == got[0].partition()), "one key, one partition");

    // And the host consumed them back to the SSE client, in the same order.
    for i in 0..20 {
        let frame = loop {
            let frame = sse.next_event().await;
            if !frame.data.is_empty() {
                break frame;
            }
        };
        assert_eq!(frame.joined(), body(i));
    }
    let packets = t.packets();
    let to_kafka: Vec<_> = packets.iter().filter(|p| p["target"] == "kafka").collect();
    assert_eq!(to_kafka.len(), 20);
    assert!(to_kafka.iter().all(|p| p["outcome"] == "delivered"), "{to_kafka:?}");
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_publishes_are_acked_after_kafka_and_come_back_to_websocket_clients_in_order() {
    let _broker = BROKER.read().await;
    let topic = unique("mh-test-ws");
    create_topic(&topic, 3).await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ws]
        type = "websocket"
        path = "/ws"
        destination = "{topic}"
        adapter_settings = {{ protocol = "envelope" }}

        [endpoints.kafka]
        type = "kafka"
        brokers = "{brokers}"
        topic = "{topic}"
        auto_offset_reset = "earliest"

        [[routes]]
        source = "ws"
        target = "kafka"

        [[routes]]
        source = "kafka"
        target = "ws"
        "#,
        brokers = brokers()
    ))
    .await;
    let ready = t.await_ready(200, Duration::from_secs(15)).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let mut alice = t.ws("/ws").await;
    let mut bob = t.ws("/ws").await;
    for i in 0..10 {
        let publish = json!({
            "type": "publish", "id": format!("w-{i}"), "key": "device-1", "ack": true,
            "headers": {"x-site": "north"}, "data": {"n": i},
        });
        alice.send(WsMessage::text(publish.to_string())).await.expect("send");
    }
    // Alice reads her acks and the events; Bob only the events.
    let mut acks = Vec::new();
    let mut alice_events = Vec::new();
    while acks.len() < 10 || alice_events.len() < 10 {
        let Some(WsMessage::Text(text)) = ws_next(&mut alice).await else { panic!("a text frame") };
        let frame: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        if frame["type"] == "ack" { acks.push(frame) } else { alice_events.push(frame) }
    }
    let expected_acks: Vec<_> =
        (0..10).map(|i| json!({"type": "ack", "id": format!("w-{i}"), "status": "ok"})).collect();
    // Acks answer each publish once its own confirmation came; the entrypoint does not
    // promise they reach the client in publish order.
    acks.sort_by_key(|ack| ack["id"].as_str().map(String::from));
    assert_eq!(acks, expected_acks, "each publish acked once, after Kafka confirmed it");
    let mut bob_events = Vec::new();
    while bob_events.len() < 10 {
        let Some(WsMessage::Text(text)) = ws_next(&mut bob).await else { panic!("a text frame") };
        bob_events.push(serde_json::from_str::<serde_json::Value>(&text).expect("JSON"));
    }
    for events in [&alice_events, &bob_events] {
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event["type"], "message");
            assert_eq!(event["id"], format!("w-{i}"), "in order, the id carried as a Kafka header");
            assert_eq!(event["topic"], topic.as_str());
            assert_eq!(event["data"], json!({"n": i}));
            assert_eq!(event["headers"]["x-site"], "north");
            assert!(event["headers"]["kafka-offset"].is_string(), "{event}");
        }
    }
    let got = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || read_topic(&topic, 10, Duration::from_secs(10))
    })
    .await
    .expect("read");
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|m| m.key() == Some(&b"device-1"[..])), "the envelope's key is the record key");
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_a_kafka_client_reach_http_get_with_key_headers_and_order() {
    let _broker = BROKER.read().await;
    let topic = unique("mh-test-get");
    create_topic(&topic, 3).await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        [endpoints.kafka]
        type = "kafka"
        brokers = "{brokers}"
        topics = ["{topic}"]
        auto_offset_reset = "earliest"

        [[routes]]
        source = "kafka"
        target = "poll"
        "#,
        brokers = brokers()
    ))
    .await;
    let ready = t.await_ready(200, Duration::from_secs(15)).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let producer = producer();
    let binary: Vec<u8> = (0..=255).collect();
    produce(&producer, &topic, "sensor-9", &binary, &[("message-id", b"m-0"), ("x-unit", b"raw")]).await;
    for i in 1..8 {
        let id = format!("m-{i}");
        let payload = format!("temp={i} °C");
        let headers: [(&str, &[u8]); 3] =
            [("message-id", id.as_bytes()), ("content-type", b"text/plain"), ("x-unit", b"celsius")];
        produce(&producer, &topic, "sensor-9", payload.as_bytes(), &headers).await;
    }
    let events = poll_events(&t, "/poll", 8, Duration::from_secs(15)).await;
    assert_eq!(events.len(), 8, "{events:?}");
    let first = &events[0];
    assert_eq!(first["id"], "m-0");
    assert_eq!(first["topic"], topic.as_str());
    use base64_check::decode;
    assert_eq!(decode(first["data_base64"].as_str().expect("binary data")), binary, "bytes arrive exactly");
    assert_eq!(first["headers"]["x-unit"], "raw");
    let partition = first["headers"]["kafka-partition"].clone();
    for (i, event) in (1..).zip(&events[1..]) {
        assert_eq!(event["id"], format!("m-{i}"), "in partition order");
        assert_eq!(event["content_type"], "text/plain");
        assert_eq!(event["data"], format!("temp={i} °C"));
        assert_eq!(event["headers"]["x-unit"], "celsius");
        assert_eq!(event["headers"]["kafka-partition"], partition, "one key, one partition");
        assert_eq!(event["headers"]["kafka-offset"], i.to_string());
        assert!(event["headers"]["message-id"].is_null(), "the id header became the id");
    }
    t.host.shutdown().await;
}

/// A standard base64 decoder, for `data_base64`.
mod base64_check {
    pub fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        };
        let mut out = Vec::new();
        for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                n |= value(*c) << (18 - 6 * i);
            }
            let bytes = n.to_be_bytes();
            out.extend_from_slice(&bytes[1..chunk.len()]);
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_name_and_one_bad_record_fails_alone() {
    let _broker = BROKER.read().await;
    let topic = unique("mh-test-bad");
    create_topic(&topic, 1).await;
    let missing = unique("mh-test-missing");
    let instance = unique("bad");
    let t = start_as(
        &instance,
        &format!(
            r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{topic}"
        adapter_settings = {{ content_types = "*/*" }}

        [entrypoints.lost]
        type = "http_post"
        path = "/lost"

        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        [endpoints.kafka]
        type = "kafka"
        brokers = "{brokers}"
        topic = "{topic}"
        auto_offset_reset = "earliest"
        producer_properties = {{ "message.max.bytes" = "10000" }}

        # The topic does not exist, and this client may not create it.
        [endpoints.nowhere]
        type = "kafka"
        brokers = "{brokers}"
        topic = "{missing}"
        properties = {{ "allow.auto.create.topics" = "false" }}

        [[routes]]
        source = "ingest"
        target = "kafka"

        [[routes]]
        source = "lost"
        target = "nowhere"

        [[routes]]
        source = "kafka"
        target = "poll"
        "#,
            brokers = brokers()
        ),
    )
    .await;
    // `nowhere` never gets ready, and says which topic is missing.
    let deadline = Instant::now() + Duration::from_secs(15);
    let problems = loop {
        let reply = t.admin("/readyz").await;
        let problems = reply.json()["problems"].to_string();
        if (problems.contains("does not exist") && !problems.contains("kafka:")) || Instant::now() > deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(problems.contains(&format!("nowhere: not connected to {}", brokers())), "{problems}");
    assert!(problems.contains(&format!("topic `{missing}` does not exist")), "{problems}");
    assert!(!problems.contains("kafka:"), "`kafka` itself is ready: {problems}");
    let lost = t.post("/lost", &[("content-type", "text/plain")], "x").await;
    assert_eq!(lost.status, 503, "fails at once as unavailable, not after a timeout: {}", lost.text());
    assert!(lost.text().contains(&format!("topic `{missing}` does not exist")), "{}", lost.text());

    // Over `message.max.bytes`: refused, naming the limit.
    let big = vec![b'x'; 20_000];
    let reply = t.post("/ingest", &[("content-type", "application/octet-stream")], big).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.json()["error"], "too_large");
    let message = reply.json()["message"].as_str().expect("a message").to_owned();
    assert!(
        message.contains("the payload is 20000 bytes, over the endpoint's max_message_bytes of 10000"),
        "{message}"
    );

    // Three records in one batch, the middle one with an id header that is not UTF-8:
    // the adapter refuses that one only; it is committed past, the others delivered.
    let producer = producer();
    produce(&producer, &topic, "k", b"first", &[("message-id", b"r-1")]).await;
    produce(&producer, &topic, "k", b"poison", &[("message-id", &[0xc3])]).await;
    produce(&producer, &topic, "k", b"third", &[("message-id", b"r-3")]).await;
    let events = poll_events(&t, "/poll", 2, Duration::from_secs(15)).await;
    let got: Vec<(&str, &str)> =
        events.iter().map(|e| (e["id"].as_str().unwrap_or(""), e["data"].as_str().unwrap_or(""))).collect();
    assert_eq!(got, [("r-1", "first"), ("r-3", "third")]);
    t.host.shutdown().await;
    // The refused record was committed past with the others: nothing waits to come again.
    let committed =
        tokio::task::spawn_blocking(move || committed_offsets(&format!("mediation.kafka.{instance}"), &topic, 1))
            .await
            .expect("committed");
    assert_eq!(committed, [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sasl_credentials_leave_the_host_up_but_unready_naming_the_endpoint() {
    let _broker = BROKER.read().await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "anything"

        [endpoints.orders-broker]
        type = "kafka"
        brokers = "{sasl}"
        sasl = {{ mechanism = "PLAIN", username = "mediation", password = "not-the-password" }}

        [endpoints.good-broker]
        type = "kafka"
        brokers = "{sasl}"
        sasl = {{ mechanism = "PLAIN", username = "mediation", password = "mediation-secret" }}

        [[routes]]
        source = "ingest"
        target = "orders-broker"
        "#,
        sasl = sasl_brokers()
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let problems = loop {
        let reply = t.admin("/readyz").await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        let problems = reply.json()["problems"].to_string();
        let settled = problems.contains("Authentication failed") && !problems.contains("good-broker");
        if settled || Instant::now() > deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(problems.contains(&format!("orders-broker: not connected to {}", sasl_brokers())), "{problems}");
    assert!(problems.contains("Authentication failed"), "{problems}");
    assert!(!problems.contains("good-broker"), "the right credentials connect: {problems}");
    assert!(!problems.contains("not-the-password"), "the password is never shown: {problems}");
    assert_eq!(t.admin("/healthz").await.status, 200, "the host runs");
    let reply = t.post("/ingest", &[("content-type", "text/plain")], "x").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["error"], "target_unavailable");
    assert!(!reply.text().contains("not-the-password"), "{}", reply.text());
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_fails_posts_fast_then_resumes_without_losing_acknowledged_ones() {
    let _broker = BROKER.write().await;
    let topic = unique("mh-test-restart");
    create_topic(&topic, 1).await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{topic}"

        [endpoints.kafka]
        type = "kafka"
        brokers = "{brokers}"
        topic = "{topic}"
        delivery_timeout_ms = 3000
        connect_timeout_ms = 1000

        [[routes]]
        source = "ingest"
        target = "kafka"
        "#,
        brokers = brokers()
    ))
    .await;
    let ready = t.await_ready(200, Duration::from_secs(15)).await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    let acknowledged = Restart {
        broker: "kafka",
        component: "kafka",
        recovery: Duration::from_secs(30),
        unavailable_within: Duration::from_secs(2),
        timed_out_within: Duration::from_secs(6),
        flaps: true,
    }
    .run(t)
    .await;

    // Every POST answered 202 is in the topic, in order.
    let got = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || read_topic(&topic, usize::MAX, Duration::from_secs(5))
    })
    .await
    .expect("read");
    let ids: Vec<String> =
        got.iter().filter_map(|m| header(m, "message-id").map(|v| String::from_utf8_lossy(v).into_owned())).collect();
    assert_arrived_in_order(&acknowledged, &ids, "the topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_both_get_every_record_in_broadcast_and_split_them_in_shared_mode() {
    let _broker = BROKER.read().await;
    let topic = unique("mh-test-replicas");
    create_topic(&topic, 3).await;
    let group = unique("mh-test-shared");
    let config = |mode: &str| {
        let shared =
            if mode == "shared" { format!("consumer = \"shared\"\ngroup_id = \"{group}\"") } else { String::new() };
        format!(
            r#"
            [entrypoints.poll]
            type = "http_get"
            path = "/poll"

            [endpoints.kafka]
            type = "kafka"
            brokers = "{brokers}"
            topics = ["{topic}"]
            auto_offset_reset = "earliest"
            {shared}

            [[routes]]
            source = "kafka"
            target = "poll"
            "#,
            brokers = brokers()
        )
    };
    let producer = producer();
    for i in 0..30 {
        let id = format!("b-{i}");
        produce(&producer, &topic, &format!("key-{i}"), id.as_bytes(), &[("message-id", id.as_bytes())]).await;
    }
    // Broadcast: a group per instance, each reads everything.
    let a = start_instance(&config("broadcast")).await;
    let b = start_instance(&config("broadcast")).await;
    for t in [&a, &b] {
        let events = poll_events(t, "/poll", 30, Duration::from_secs(20)).await;
        let ids: HashSet<String> = events.iter().filter_map(|e| e["id"].as_str().map(String::from)).collect();
        assert_eq!((events.len(), ids.len()), (30, 30), "every record once to each instance");
    }
    a.host.shutdown().await;
    b.host.shutdown().await;

    // Shared: one group; once both are members, each record reaches exactly one.
    let a = start_instance(&config("shared")).await;
    let b = start_instance(&config("shared")).await;
    tokio::task::spawn_blocking({
        let group = group.clone();
        move || await_group_members(&group, 2)
    })
    .await
    .expect("members");
    for i in 0..30 {
        let id = format!("s-{i}");
        produce(&producer, &topic, &format!("key-{i}"), id.as_bytes(), &[("message-id", id.as_bytes())]).await;
    }
    // Each instance's events; the first 30 (`b-`) were consumed by whichever instance
    // held their partition first, and count too.
    let (mut events_a, mut events_b) = (Vec::new(), Vec::new());
    let (mut cursor_a, mut cursor_b) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(20);
    while events_a.len() + events_b.len() < 60 && Instant::now() < deadline {
        poll_once(&a, &mut cursor_a, &mut events_a).await;
        poll_once(&b, &mut cursor_b, &mut events_b).await;
    }
    let ids = |events: &[serde_json::Value]| -> Vec<String> {
        events.iter().filter_map(|e| e["id"].as_str().map(String::from)).collect()
    };
    let (ids_a, ids_b) = (ids(&events_a), ids(&events_b));
    eprintln!("shared: {} to one instance, {} to the other", ids_a.len(), ids_b.len());
    let mut all: Vec<&String> = ids_a.iter().chain(&ids_b).collect();
    all.sort();
    let mut expected: Vec<String> = (0..30).flat_map(|i| [format!("b-{i}"), format!("s-{i}")]).collect();
    expected.sort();
    assert_eq!(all, expected.iter().collect::<Vec<_>>(), "each record exactly once across the two");
    let split = |ids: &[String]| ids.iter().any(|id| id.starts_with("s-"));
    assert!(split(&ids_a) && split(&ids_b), "both instances got partitions: {ids_a:?} {ids_b:?}");
    a.host.shutdown().await;
    b.host.shutdown().await;
}

/// One short poll of the HTTP GET entrypoint `/poll` of `t` from `cursor`, adding what
/// came to `events`.
async fn poll_once(t: &TestHost, cursor: &mut u64, events: &mut Vec<serde_json::Value>) {
    let reply = t.get(&format!("/poll?cursor={cursor}&limit=1000&wait_ms=100"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    events.extend(body["events"].as_array().expect("events").iter().cloned());
    *cursor = body["next_cursor"].as_u64().expect("a cursor");
}

/// Waits until consumer group `group` has `n` members in a stable state.
fn await_group_members(group: &str, n: usize) {
    let consumer: BaseConsumer = client_config().create().expect("a client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = consumer.fetch_group_list(Some(group), Duration::from_secs(5)).expect("groups");
        let stable = list.groups().iter().any(|g| g.state() == "Stable" && g.members().len() == n);
        if stable {
            return;
        }
        assert!(Instant::now() < deadline, "group {group} did not reach {n} stable members");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The offsets group `group` committed on partitions `0..partitions` of `topic` (0
/// where it committed none).
fn committed_offsets(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = client_config().set("group.id", group).create().expect("a client");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let offsets = consumer.committed_offsets(list, Duration::from_secs(10)).expect("committed");
    (0..partitions)
        .map(|p| match offsets.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        })
        .collect()
}

/// Waits until group `group` committed an offset on one of partitions `0..partitions` of
/// `topic`, within [`support::BEFORE_KILL`].
fn await_committed_some(group: &str, topic: &str, partitions: i32) {
    let deadline = Instant::now() + support::BEFORE_KILL;
    while committed_offsets(group, topic, partitions).iter().all(|o| *o == 0) {
        assert!(Instant::now() < deadline, "the group committed nothing within {:?}", support::BEFORE_KILL);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILL mid-stream: a restarted host with the same instance id (so the same group)
/// delivers every record at or after the committed offsets again, and every record
/// before them had been handed over (its packet line is written before its offset is
/// stored). The first host's hub holds the hand-over ([`support::hub_until_killed`]), so
/// the kill finds records neither handed over nor committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_while_consuming_gets_every_record_not_committed_again_after_its_restart() {
    let _broker = BROKER.read().await;
    let topic = unique("mh-test-kill");
    create_topic(&topic, 3).await;
    const TOTAL: usize = 2_000;
    let producer = producer();
    let mut reports = Vec::with_capacity(TOTAL);
    for i in 0..TOTAL {
        let id = format!("n-{i}");
        let headers = OwnedHeaders::new().insert(Header { key: "message-id", value: Some(&id) });
        let record = FutureRecord::to(&topic).key(&id).payload(&id).headers(headers);
        reports.push(producer.send_result(record).map_err(|(e, _)| e).expect("queued"));
    }
    // Where each record was written: (partition, offset) by id.
    let mut written: BTreeMap<String, (i32, i64)> = BTreeMap::new();
    for (i, report) in reports.into_iter().enumerate() {
        let delivery = report.await.expect("reported").unwrap_or_else(|(e, _)| panic!("written: {e}"));
        written.insert(format!("n-{i}"), (delivery.partition, delivery.offset));
    }
    let endpoint = format!(
        r#"
        [endpoints.kafka]
        type = "kafka"
        brokers = "{brokers}"
        topics = ["{topic}"]
        auto_offset_reset = "earliest"
        commit_interval_ms = 200
        consumer_properties = {{ "session.timeout.ms" = "6000" }}
        "#,
        brokers = brokers()
    );
    let instance = unique("killed");
    let host = format!("instance_id = \"{instance}\"\nreload_poll_ms = 0");
    let first = support::HostProcess::start(
        &host,
        &format!(
            "{}\n{endpoint}\n[[routes]]\nsource = \"kafka\"\ntarget = \"slow\"\n",
            support::hub_until_killed(TOTAL)
        ),
    )
    .await;
    first.await_delivered(50).await;
    // Mid-stream, once the group committed something (every `commit_interval_ms`).
    let group = format!("mediation.kafka.{instance}");
    tokio::task::spawn_blocking({
        let (topic, group) = (topic.clone(), group.clone());
        move || await_committed_some(&group, &topic, 3)
    })
    .await
    .expect("the committed-offset watcher");
    let handed_over: HashSet<String> = support::delivered(&first.kill()).into_iter().collect();

    // What the group committed: everything from there on must come again.
    let committed = tokio::task::spawn_blocking({
        let (topic, group) = (topic.clone(), group.clone());
        move || committed_offsets(&group, &topic, 3)
    })
    .await
    .expect("committed offsets");
    let not_committed: BTreeSet<&String> = written
        .iter()
        .filter(|(_, (p, o))| *o >= committed[usize::try_from(*p).expect("a partition")])
        .map(|(id, _)| id)
        .collect();
    eprintln!(
        "killed after {} records handed over; committed {committed:?}: {} to come again",
        handed_over.len(),
        not_committed.len()
    );
    assert!(handed_over.len() < TOTAL, "the hub held the hand-over until the kill");
    assert!(!not_committed.is_empty(), "the host was killed mid-stream, with records not committed");

    // The restarted host hands over at full speed; it joins the group once the killed
    // one's session expired (`session.timeout.ms`, 6 s here).
    let second = support::HostProcess::start(
        &host,
        &format!(
            "[entrypoints.events]\ntype = \"sse\"\npath = \"/events\"\nring = {{ messages = {TOTAL} }}\n{endpoint}\n\
             [[routes]]\nsource = \"kafka\"\ntarget = \"events\"\n"
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let after: HashSet<String> = loop {
        let after: HashSet<String> = support::delivered(&second.packets()).into_iter().collect();
        if not_committed.iter().all(|id| after.contains(*id)) {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} records not committed came again",
            after.len(),
            not_committed.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (id, (p, o)) in &written {
        if *o < committed[usize::try_from(*p).expect("a partition")] {
            assert!(handed_over.contains(id), "{id} (partition {p}, offset {o}) was committed but never handed over");
        }
    }
    assert!(after.len() < TOTAL, "the restarted host resumed from the committed offsets, not from the start");
    drop(second);
}

/// Backpressure: behind a hub slower than the broker, one hand-over lasts longer than
/// `max.poll.interval.ms`. The endpoint pauses its partitions and keeps reading, so the
/// group keeps it as a member: every record arrives once and in order, and no offset is
/// committed ahead of what was handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_longer_than_the_poll_interval_keeps_the_group_and_the_order() {
    let _broker = BROKER.read().await;
    let topic = unique("mh-test-slow");
    create_topic(&topic, 1).await;
    let total = 1500;
    let ids: Vec<String> = (0..total).map(|i| format!("slow-{i:05}")).collect();
    // Produced before the host starts, so that its first batch takes them all and the
    // hub needs about 7.5 s (5 ms each) for it: past the 6 s poll interval.
    let producer = producer();
    let sends = ids.iter().map(|id| produce(&producer, &topic, "one-key", id.as_bytes(), &[]));
    futures_util::future::join_all(sends).await;
    let instance = unique("slow");
    let t = start_as(
        &instance,
        &format!(
            r#"
            {slow}

            [endpoints.kafka]
            type = "kafka"
            brokers = "{brokers}"
            topics = ["{topic}"]
            auto_offset_reset = "earliest"
            max_batch = {total}
            max_poll_interval_ms = 6000
            consumer_properties = {{ "session.timeout.ms" = "6000" }}

            [[routes]]
            source = "kafka"
            target = "slow"
            "#,
            slow = support::slow_hub(5, total),
            brokers = brokers()
        ),
    )
    .await;
    let received = support::Received::spawn(t.ws("/slow").await, total);
    let group = format!("mediation.kafka.{instance}");

    received.reached(total / 2).await;
    let committed = {
        let (group, topic) = (group.clone(), topic.clone());
        tokio::task::spawn_blocking(move || committed_offsets(&group, &topic, 1)).await.expect("committed")[0]
    };
    // Read after the offsets: the hand-over only moves forward.
    let handed_over = t.packets().iter().filter(|p| p["outcome"] == "delivered").count();
    assert!(committed <= handed_over as i64, "offset {committed} committed with {handed_over} records handed over");

    assert_eq!(received.all().await, ids, "every record once, in order");
    let (group_, topic_) = (group.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        await_group_members(&group_, 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while committed_offsets(&group_, &topic_, 1) != [total as i64] {
            assert!(Instant::now() < deadline, "the offsets of every handed-over record are committed");
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .expect("the group");
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_its_target_does_not_accept_is_read_again_and_never_committed() {
    let _broker = BROKER.read().await;
    let topic = unique("mh-test-retry");
    create_topic(&topic, 1).await;
    produce(&producer(), &topic, "k", b"undeliverable", &[("message-id", b"u-1")]).await;
    // An HTTP POST entrypoint serves no events, so it refuses every delivery.
    let instance = unique("retry");
    let t = start_as(
        &instance,
        &format!(
            r#"
            [entrypoints.ingest]
            type = "http_post"
            path = "/ingest"

            [endpoints.kafka]
            type = "kafka"
            brokers = "{brokers}"
            topics = ["{topic}"]
            auto_offset_reset = "earliest"

            [[routes]]
            source = "kafka"
            target = "ingest"
            "#,
            brokers = brokers()
        ),
    )
    .await;
    let packets = t.await_packets(3).await;
    assert!(packets.len() >= 3, "the record was read again after it failed: {packets:?}");
    assert!(packets.iter().all(|p| p["event_id"] == "u-1" && p["outcome"] == "target_error"), "{packets:?}");
    assert!(packets.len() < 30, "reading again pauses instead of spinning: {} attempts", packets.len());
    t.host.shutdown().await;
    let committed =
        tokio::task::spawn_blocking(move || committed_offsets(&format!("mediation.kafka.{instance}"), &topic, 1))
            .await
            .expect("committed");
    assert_eq!(committed, [0], "never committed, so it waits in the topic for the group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_over_tls_connects_with_the_trusted_ca_and_an_untrusted_certificate_is_named() {
    let _broker = BROKER.read().await;
    let ca = tls_ca();
    assert!(
        std::path::Path::new(&ca).is_file(),
        "the test CA {ca} is missing; start Kafka with `scripts/brokers.sh up kafka` (tests never skip a missing broker)"
    );
    let topic = unique("mh-test-tls");
    create_topic(&topic, 1).await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{topic}"

        [endpoints.secure]
        type = "kafka"
        brokers = "{tls}"
        sasl = {{ username = "mediation", password = "mediation-secret" }}
        tls = {{ ca_file = "{ca}" }}

        # The system roots do not trust the test CA.
        [endpoints.untrusted]
        type = "kafka"
        brokers = "{tls}"
        sasl = {{ username = "mediation", password = "mediation-secret" }}
        tls = {{}}

        [[routes]]
        source = "ingest"
        target = "secure"
        "#,
        tls = tls_brokers()
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let problems = loop {
        let reply = t.admin("/readyz").await;
        let problems = reply.json()["problems"].to_string();
        if (!problems.contains("secure:") && problems.contains("untrusted: not connected")) || Instant::now() > deadline
        {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!problems.contains("secure:"), "SASL_SSL with the test CA connects: {problems}");
    assert!(problems.contains(&format!("untrusted: not connected to {}", tls_brokers())), "{problems}");
    assert!(problems.contains("certificate verify failed"), "the TLS failure is named: {problems}");
    let reply = t.post("/ingest", &[("content-type", "text/plain"), ("idempotency-key", "tls-1")], "over TLS").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    t.host.shutdown().await;
    let got = tokio::task::spawn_blocking(move || read_topic(&topic, 1, Duration::from_secs(10))).await.expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload(), Some(&b"over TLS"[..]));
    assert_eq!(header(&got[0], "message-id"), Some(&b"tls-1"[..]));
}
