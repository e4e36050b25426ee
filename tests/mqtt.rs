//! The `mqtt` endpoint against the real Mosquitto that `scripts/brokers.sh up mosquitto`
//! starts. Addresses come from `MEDIATION_MQTT_URL` (default `mqtt://127.0.0.1:1883`,
//! anonymous) and `MEDIATION_MQTT_AUTH_URL` (default `mqtt://127.0.0.1:1884`, user
//! `mediation`, password `mediation-secret`), and `MEDIATION_MQTT_TLS_URL` (default
//! `mqtts://127.0.0.1:8883`) with `MEDIATION_MQTT_CA` (default the test CA that
//! `brokers.sh` made). A broker that cannot be reached fails the
//! tests, in CI and out of it: they never skip. What the host sent is checked with the
//! broker's own protocol through an independent client (`rumqttc`, auto-acknowledging).
//!
//! Every test uses its own topics, client ids and instance ids. The test that restarts
//! the broker holds [`BROKER`] exclusively; the others share it.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use mediation_host::endpoints::mqtt::parse_url;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::json;
use support::{Restart, TestHost, assert_arrived_in_order, next_data, start_as, start_instance, unique, within};
use tokio::sync::{RwLock, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// Shared by tests that need the broker up; held exclusively by the restart test.
static BROKER: RwLock<()> = RwLock::const_new(());

const USER: &str = "mediation";
const PASSWORD: &str = "mediation-secret";

fn broker_url() -> String {
    std::env::var("MEDIATION_MQTT_URL").unwrap_or_else(|_| String::from("mqtt://127.0.0.1:1883"))
}

fn auth_url() -> String {
    std::env::var("MEDIATION_MQTT_AUTH_URL").unwrap_or_else(|_| String::from("mqtt://127.0.0.1:1884"))
}

/// Options of a test client of the anonymous listener.
fn options(client_id: &str) -> MqttOptions {
    let url = broker_url();
    let address = parse_url(&url).unwrap_or_else(|e| panic!("MEDIATION_MQTT_URL: {e}"));
    let mut options = MqttOptions::new(client_id, address.host, address.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(Some(16 * 1024 * 1024));
    options
}

/// Fails the test with how to start the broker when it does not answer.
fn unreachable(error: &dyn std::fmt::Display) -> ! {
    panic!(
        "Mosquitto is not reachable at {} ({error}); start it with `scripts/brokers.sh up mosquitto` \
         (tests never skip a missing broker)",
        broker_url()
    )
}

/// The broker's own client, publishing: the event loop runs in a task of its own.
struct Publisher {
    /// The client.
    client: AsyncClient,
    /// How many PUBACKs arrived.
    acked: tokio::sync::watch::Receiver<usize>,
}

impl Publisher {
    /// Waits until the broker acknowledged `n` publishes in all.
    async fn acked(&mut self, n: usize) {
        within("the broker's PUBACKs", self.acked.wait_for(|acked| *acked >= n)).await.expect("the client runs");
    }
}

impl std::ops::Deref for Publisher {
    type Target = AsyncClient;

    fn deref(&self) -> &AsyncClient {
        &self.client
    }
}

async fn publisher() -> Publisher {
    let (client, mut eventloop) = AsyncClient::new(options(&unique("mh-test-pub")), 1024);
    match within("CONNACK", eventloop.poll()).await {
        Ok(Event::Incoming(Packet::ConnAck(_))) => {}
        Ok(other) => panic!("expected CONNACK, got {other:?}"),
        Err(e) => unreachable(&e),
    }
    let (tx, acked) = tokio::sync::watch::channel(0);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => tx.send_modify(|n| *n += 1),
                Ok(_) => {}
                Err(e) => panic!("the test publisher failed: {e}"),
            }
        }
    });
    Publisher { client, acked }
}

/// Publishes `payload` to `topic` with QoS 1 and `properties`.
async fn publish(client: &AsyncClient, topic: &str, payload: impl Into<Bytes>, properties: PublishProperties) {
    client.publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), properties).await.expect("queued");
}

/// User properties `message-id` = `id` (the event id, by the mqtt5 adapter's convention).
fn with_id(id: &str) -> PublishProperties {
    PublishProperties {
        user_properties: vec![(String::from("message-id"), id.to_owned())],
        ..PublishProperties::default()
    }
}

/// A subscriber of `filter` with QoS 1 that survives broker restarts: with
/// `session_expiry` its session (and what is queued for it) outlives a disconnection.
/// Returns once SUBACK arrived; the messages come through the channel.
async fn subscriber(filter: &str, session_expiry: Option<u32>) -> mpsc::UnboundedReceiver<Publish> {
    let mut options = options(&unique("mh-test-sub"));
    options.set_clean_start(session_expiry.is_none());
    options.set_session_expiry_interval(session_expiry);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client.subscribe_many([Filter::new(filter, QoS::AtLeastOnce)]).await.expect("queued");
    loop {
        match within("SUBACK", eventloop.poll()).await {
            Ok(Event::Incoming(Packet::SubAck(_))) => break,
            Ok(_) => {}
            Err(e) => unreachable(&e),
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if tx.send(publish).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // The client reconnects on the next poll; the broker may be restarting.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    rx
}

/// The next message of a subscriber.
async fn next(rx: &mut mpsc::UnboundedReceiver<Publish>) -> Publish {
    within("a message at the test subscriber", rx.recv()).await.expect("the subscriber runs")
}

fn user_property<'a>(publish: &'a Publish, name: &str) -> Option<&'a str> {
    let properties = publish.properties.as_ref()?;
    properties.user_properties.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Waits until the host is ready, failing with its problems.
async fn ready(t: &TestHost) {
    let reply = t.await_ready(200, Duration::from_secs(10)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// The events an HTTP GET entrypoint at `path` holds, once it holds at least `n`
/// (or whatever it holds after 10 s).
async fn polled(t: &TestHost, path: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    let mut cursor = 0;
    loop {
        let page = t.get(&format!("{path}?cursor={cursor}&limit=1000"), &[]).await.json();
        let got = page["events"].as_array().cloned().unwrap_or_default();
        cursor = page["next_cursor"].as_u64().unwrap_or(cursor);
        let empty = got.is_empty();
        events.extend(got);
        if events.len() >= n || Instant::now() > deadline {
            return events;
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The ids an HTTP GET entrypoint at `path` holds (every page) once, together with
/// `before`, they cover every id of `all` (or whatever it holds after 10 s). Counting
/// would not do: redelivered messages arrive twice.
async fn polled_covering(t: &TestHost, path: &str, before: &[String], all: &BTreeSet<String>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut got = Vec::new();
        let mut cursor = 0;
        loop {
            let page = t.get(&format!("{path}?cursor={cursor}&limit=1000"), &[]).await.json();
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                break;
            }
            got.extend(ids(&events));
            cursor = page["next_cursor"].as_u64().unwrap_or(cursor);
        }
        let covered = all.iter().all(|id| before.contains(id) || got.contains(id));
        if covered || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(events: &[serde_json::Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_answered_202_once_acknowledged_and_comes_back_through_the_broker_to_sse() {
    let _broker = BROKER.read().await;
    let prefix = unique("mh-test");
    let mut seen = subscriber(&format!("{prefix}/#"), None).await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "orders/eu"
        adapter_settings = {{ forward_headers = "correlation-id,reply-to,x-tenant", content_types = "*/*" }}

        [entrypoints.events]
        type = "sse"
        path = "/events"

        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        [endpoints.mq]
        type = "mqtt"
        url = "{url}"
        adapter_settings = {{ topic_prefix = "{prefix}/" }}
        subscriptions = ["{prefix}/orders/#"]

        [[routes]]
        source = "ingest"
        target = "mq"

        [[routes]]
        source = "mq"
        target = "events"

        [[routes]]
        source = "mq"
        target = "poll"
        "#,
        url = broker_url()
    ))
    .await;
    ready(&t).await;
    let mut sse = t.sse("/events", &[]).await.expect("an SSE stream");

    let binary: Vec<u8> = (0..=255).collect();
    let headers = [
        ("content-type", "application/octet-stream"),
        ("idempotency-key", "order-0"),
        ("correlation-id", "corr-0"),
        ("reply-to", "replies/c0"),
        ("x-tenant", "acme"),
    ];
    let reply = t.post("/ingest", &headers, binary.clone()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    for i in 1..20 {
        let key = format!("order-{i}");
        let body = format!("{{\"n\":{i},\"text\":\"grüße\"}}");
        let reply = t.post("/ingest", &[("content-type", "application/json"), ("idempotency-key", &key)], body).await;
        assert_eq!(reply.status, 202, "{}", reply.text());
        assert_eq!(reply.json()["ids"], json!([key]));
    }

    // What the broker's own subscriber got: bytes, QoS, properties, in order.
    let first = next(&mut seen).await;
    assert_eq!(&first.topic[..], format!("{prefix}/orders/eu").as_bytes());
    assert_eq!(&first.payload[..], &binary[..], "bytes arrive exactly");
    assert_eq!((first.qos, first.retain), (QoS::AtLeastOnce, false), "QoS 1 by default, not retained");
    let properties = first.properties.as_ref().expect("properties");
    assert_eq!(properties.content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(properties.correlation_data.as_deref(), Some(&b"corr-0"[..]), "correlation-id is Correlation Data");
    assert_eq!(properties.response_topic.as_deref(), Some(format!("{prefix}/replies/c0").as_str()));
    assert_eq!(
        properties.user_properties,
        [(String::from("message-id"), String::from("order-0")), (String::from("x-tenant"), String::from("acme"))],
        "the Idempotency-Key and the other headers are user properties"
    );
    for i in 1..20 {
        let message = next(&mut seen).await;
        assert_eq!(user_property(&message, "message-id"), Some(format!("order-{i}").as_str()), "in order");
        assert_eq!(message.payload, format!("{{\"n\":{i},\"text\":\"grüße\"}}").into_bytes());
        let content_type = message.properties.as_ref().and_then(|p| p.content_type.as_deref());
        assert_eq!(content_type, Some("application/json"));
    }

    // And back through the host's own subscription: SSE gets the payloads in order.
    // The SSE adapter refuses the binary payload (not UTF-8); HTTP GET serves it.
    for i in 1..20 {
        assert_eq!(next_data(&mut sse).await, format!("{{\"n\":{i},\"text\":\"grüße\"}}"), "in order");
    }
    let events = polled(&t, "/poll", 20).await;
    assert_eq!(ids(&events), (0..20).map(|i| format!("order-{i}")).collect::<Vec<_>>());
    let first = &events[0];
    assert_eq!(first["topic"], "orders/eu", "the topic without the prefix: {first}");
    assert_eq!(first["content_type"], "application/octet-stream", "{first}");
    assert_eq!(first["headers"]["correlation-id"], "corr-0", "{first}");
    assert_eq!(first["headers"]["reply-to"], "replies/c0", "{first}");
    assert_eq!(first["headers"]["x-tenant"], "acme", "{first}");
    assert_eq!(first["headers"]["mqtt-retain"], "false", "{first}");
    assert_eq!(
        first["data_base64"],
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w==",
        "{first}"
    );
    let refused: Vec<_> =
        t.packets().into_iter().filter(|p| p["route"] == "mq->events" && p["outcome"] != "delivered").collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!((&refused[0]["event_id"], &refused[0]["outcome"]), (&json!("order-0"), &json!("adapter_error")));
    let upstream: Vec<_> = t.packets().into_iter().filter(|p| p["route"] == "ingest->mq").collect();
    assert_eq!(upstream.len(), 20);
    assert!(upstream.iter().all(|p| p["outcome"] == "delivered"), "{upstream:?}");
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_publishes_are_acknowledged_after_the_broker_and_reach_another_websocket() {
    let _broker = BROKER.read().await;
    let prefix = unique("mh-test");
    let t = start_instance(&format!(
        r#"
        [entrypoints.ws]
        type = "websocket"
        path = "/ws"
        adapter_settings = {{ protocol = "envelope" }}

        [endpoints.mq]
        type = "mqtt"
        url = "{url}"
        adapter_settings = {{ topic_prefix = "{prefix}/", qos = "2" }}
        subscriptions = ["{prefix}/#"]
        subscription_qos = 2

        [[routes]]
        source = "ws"
        target = "mq"

        [[routes]]
        source = "mq"
        target = "ws"
        "#,
        url = broker_url()
    ))
    .await;
    ready(&t).await;
    let mut seen = subscriber(&format!("{prefix}/#"), None).await;
    let mut alice = t.ws("/ws").await;
    let mut bob = t.ws("/ws").await;
    for i in 0..5 {
        let id = format!("w-{i}");
        let message = json!({"type": "publish", "topic": "chat/room", "id": id, "data": {"n": i}, "ack": true,
                             "headers": {"x-user": "alice"}});
        alice.send(Message::text(message.to_string())).await.expect("send");
        // The acknowledgement comes after PUBCOMP; Alice also gets the event back.
        loop {
            let frame = support::ws_json(&mut alice).await;
            if frame["type"] == "ack" {
                assert_eq!(frame, json!({"type": "ack", "id": id, "status": "ok"}));
                break;
            }
        }
        let published = next(&mut seen).await;
        assert_eq!(published.qos, QoS::AtLeastOnce, "the test subscriber asked for QoS 1");
        assert_eq!(user_property(&published, "message-id"), Some(id.as_str()));
        assert_eq!(user_property(&published, "x-user"), Some("alice"));
        assert_eq!(&published.payload[..], format!("{{\"n\":{i}}}").as_bytes());
    }
    for i in 0..5 {
        let frame = support::ws_json(&mut bob).await;
        assert_eq!(frame["type"], "message", "{frame}");
        assert_eq!(frame["id"], format!("w-{i}"), "in order: {frame}");
        assert_eq!(frame["topic"], "chat/room", "{frame}");
        assert_eq!(frame["data"], json!({"n": i}), "{frame}");
        assert_eq!(frame["headers"]["x-user"], "alice", "{frame}");
    }
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_a_real_client_reach_http_get_with_their_properties_and_order() {
    let _broker = BROKER.read().await;
    let prefix = unique("mh-test");
    let t = start_instance(&format!(
        r#"
        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        [endpoints.mq]
        type = "mqtt"
        url = "{url}"
        adapter_settings = {{ topic_prefix = "{prefix}/" }}
        subscriptions = ["{prefix}/sensors/+", "{prefix}/alerts"]

        [[routes]]
        source = "mq"
        target = "poll"
        "#,
        url = broker_url()
    ))
    .await;
    ready(&t).await;
    let client = publisher().await;
    let properties = PublishProperties {
        content_type: Some(String::from("text/plain")),
        response_topic: Some(format!("{prefix}/replies/r1")),
        correlation_data: Some(Bytes::from_static(b"c-1")),
        user_properties: vec![
            (String::from("message-id"), String::from("m-0")),
            (String::from("x-site"), String::from("north")),
        ],
        ..PublishProperties::default()
    };
    publish(&client, &format!("{prefix}/sensors/t1"), "temp=21.5 °C", properties).await;
    for i in 1..10 {
        publish(&client, &format!("{prefix}/sensors/t{i}"), format!("reading {i}"), with_id(&format!("m-{i}"))).await;
    }
    publish(&client, &format!("{prefix}/other"), "not subscribed", with_id("x")).await;
    publish(&client, &format!("{prefix}/alerts"), "last", with_id("m-10")).await;

    let events = polled(&t, "/poll", 11).await;
    assert_eq!(ids(&events), (0..=10).map(|i| format!("m-{i}")).collect::<Vec<_>>(), "in order, `other` not");
    let first = &events[0];
    assert_eq!(first["topic"], "sensors/t1", "{first}");
    assert_eq!(first["content_type"], "text/plain", "{first}");
    assert_eq!(first["data"], "temp=21.5 °C", "{first}");
    assert_eq!(first["headers"]["reply-to"], "replies/r1", "the prefix is removed: {first}");
    assert_eq!(first["headers"]["correlation-id"], "c-1", "{first}");
    assert_eq!(first["headers"]["x-site"], "north", "{first}");
    assert_eq!(first["headers"]["mqtt-retain"], "false", "{first}");
    assert_eq!(events[10]["data"], "last");
    let packets: Vec<_> = t.packets().into_iter().filter(|p| p["route"] == "mq->poll").collect();
    assert_eq!(packets.len(), 11, "{packets:?}");
    assert!(packets.iter().all(|p| p["outcome"] == "delivered"), "{packets:?}");
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_leave_the_host_up_but_unready_naming_the_endpoint() {
    let _broker = BROKER.read().await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "t"

        [entrypoints.good]
        type = "http_post"
        path = "/good"
        destination = "{topic}"

        [endpoints.wrong]
        type = "mqtt"
        url = "{url}"
        username = "{USER}"
        password = "not-the-password"

        [endpoints.right]
        type = "mqtt"
        url = "{url}"
        username = "{USER}"
        password = "{PASSWORD}"

        [[routes]]
        source = "ingest"
        target = "wrong"

        [[routes]]
        source = "good"
        target = "right"
        "#,
        url = auth_url(),
        topic = unique("mh-test"),
    ))
    .await;
    let unready = t.await_ready(503, Duration::from_secs(10)).await;
    let problems = unready.json()["problems"].to_string();
    let auth = auth_url().trim_start_matches("mqtt://").to_owned();
    assert!(problems.contains(&format!("wrong: not connected to mqtt://{USER}@{auth}")), "{problems}");
    assert!(problems.contains("CONNACK") && problems.contains("check `username` and `password`"), "{problems}");
    assert!(!problems.contains("not-the-password"), "{problems}");
    // The right credentials on the same listener connect.
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.admin("/readyz").await.text().contains("right:") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let problems = t.admin("/readyz").await.json()["problems"].to_string();
    assert!(!problems.contains("right:"), "{problems}");
    assert_eq!(t.post("/good", &[("content-type", "text/plain")], "hello").await.status, 202);

    assert_eq!(t.admin("/healthz").await.status, 200, "the host runs");
    let reply = t.post("/ingest", &[("content-type", "text/plain")], "x").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["error"], "target_unavailable");
    assert!(reply.text().contains("wrong is unavailable") && reply.text().contains("CONNACK"), "{}", reply.text());
    assert!(!reply.text().contains("not-the-password"), "{}", reply.text());
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_topic_and_an_oversized_payload_are_refused_by_name_and_fail_alone() {
    let _broker = BROKER.read().await;
    let prefix = unique("mh-test");
    let mut seen = subscriber(&format!("{prefix}/#"), None).await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "lines"

        [entrypoints.wild]
        type = "http_post"
        path = "/wild"
        destination = "a/+/b"

        [endpoints.mq]
        type = "mqtt"
        url = "{url}"
        max_message_bytes = 1000
        adapter_settings = {{ topic_prefix = "{prefix}/" }}

        [[routes]]
        source = "ingest"
        target = "mq"

        [[routes]]
        source = "wild"
        target = "mq"
        "#,
        url = broker_url()
    ))
    .await;
    ready(&t).await;
    let wild = t.post("/wild", &[("content-type", "text/plain")], "x").await;
    assert_eq!(wild.status, 502, "{}", wild.text());
    assert!(wild.text().contains(&format!("topic `{prefix}/a/+/b` contains a wildcard")), "{}", wild.text());

    // Three NDJSON lines are three events in one batch; the middle one is too big.
    let big = format!("\"{}\"", "x".repeat(1200));
    let body = format!("{{\"n\":1}}\n{big}\n{{\"n\":3}}\n");
    let reply = t.post("/ingest", &[("content-type", "application/x-ndjson"), ("idempotency-key", "nd")], body).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(
        reply.text().contains("the payload is 1202 bytes, over the endpoint's max_message_bytes of 1000"),
        "{}",
        reply.text()
    );
    let first = next(&mut seen).await;
    assert_eq!((user_property(&first, "message-id"), &first.payload[..]), (Some("nd:1"), &b"{\"n\":1}"[..]));
    let third = next(&mut seen).await;
    assert_eq!((user_property(&third, "message-id"), &third.payload[..]), (Some("nd:3"), &b"{\"n\":3}"[..]));
    let mut outcomes: Vec<(String, String)> = t
        .packets()
        .iter()
        .filter(|p| p["route"] == "ingest->mq")
        .map(|p| {
            (
                p["event_id"].as_str().unwrap_or_default().to_owned(),
                p["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    outcomes.sort();
    let expected = [("nd:1", "delivered"), ("nd:2", "too_large"), ("nd:3", "delivered")];
    assert_eq!(outcomes, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_adapter_refuses_fails_alone_and_is_not_redelivered() {
    let _broker = BROKER.read().await;
    let prefix = unique("mh-test");
    let t = start_instance(&format!(
        r#"
        [entrypoints.events]
        type = "sse"
        path = "/events"

        [endpoints.mq]
        type = "mqtt"
        url = "{url}"
        adapter_settings = {{ topic_prefix = "{prefix}/in/" }}
        subscriptions = ["{prefix}/#"]
        session_expiry_s = 60

        [[routes]]
        source = "mq"
        target = "events"
        "#,
        url = broker_url()
    ))
    .await;
    ready(&t).await;
    let mut sse = t.sse("/events", &[]).await.expect("an SSE stream");
    let client = publisher().await;
    // Queued back to back, so that the host usually maps them in one adapter call.
    publish(&client, &format!("{prefix}/in/a"), "first", with_id("a")).await;
    publish(&client, &format!("{prefix}/outside"), "refused", with_id("bad")).await;
    publish(&client, &format!("{prefix}/in/b"), "second", with_id("b")).await;
    assert_eq!(next_data(&mut sse).await, "first");
    assert_eq!(next_data(&mut sse).await, "second", "the refused record failed alone");
    publish(&client, &format!("{prefix}/in/c"), "third", with_id("c")).await;
    assert_eq!(next_data(&mut sse).await, "third", "the refused message is not delivered again");
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivered = loop {
        let delivered: Vec<_> =
            t.packets().into_iter().filter(|p| p["outcome"] == "delivered").map(|p| p["event_id"].clone()).collect();
        if delivered.len() >= 3 || Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(delivered, [json!("a"), json!("b"), json!("c")]);
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_broadcast_to_both_or_share_one_stream() {
    let _broker = BROKER.read().await;
    let prefix = unique("mh-test");
    let config = |consumer: &str| {
        format!(
            r#"
            [entrypoints.poll]
            type = "http_get"
            path = "/poll"

            [endpoints.mq]
            type = "mqtt"
            url = "{url}"
            adapter_settings = {{ topic_prefix = "{prefix}/" }}
            subscriptions = ["{prefix}/{consumer}/#"]
            consumer = "{consumer}"
            share_group = "{group}"

            [[routes]]
            source = "mq"
            target = "poll"
            "#,
            url = broker_url(),
            group = if consumer == "shared" { format!("g{}", uuid::Uuid::now_v7().simple()) } else { String::new() },
        )
        .replace("share_group = \"\"\n", "")
    };
    let client = publisher().await;

    let (a, b) = (start_instance(&config("broadcast")).await, start_instance(&config("broadcast")).await);
    ready(&a).await;
    ready(&b).await;
    for i in 0..10 {
        publish(&client, &format!("{prefix}/broadcast/x"), format!("b{i}"), with_id(&format!("b-{i}"))).await;
    }
    let want: Vec<String> = (0..10).map(|i| format!("b-{i}")).collect();
    assert_eq!(ids(&polled(&a, "/poll", 10).await), want, "instance a got every message");
    assert_eq!(ids(&polled(&b, "/poll", 10).await), want, "instance b got every message");
    a.host.shutdown().await;
    b.host.shutdown().await;

    let shared = config("shared");
    let (a, b) = (start_instance(&shared).await, start_instance(&shared).await);
    ready(&a).await;
    ready(&b).await;
    for i in 0..40 {
        publish(&client, &format!("{prefix}/shared/x"), format!("s{i}"), with_id(&format!("s-{i}"))).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (got_a, got_b) = loop {
        let (got_a, got_b) = (ids(&polled(&a, "/poll", 0).await), ids(&polled(&b, "/poll", 0).await));
        if got_a.len() + got_b.len() >= 40 || Instant::now() > deadline {
            break (got_a, got_b);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let set_a: BTreeSet<&String> = got_a.iter().collect();
    let set_b: BTreeSet<&String> = got_b.iter().collect();
    assert!(set_a.is_disjoint(&set_b), "no message reached both: {got_a:?} {got_b:?}");
    assert_eq!(got_a.len() + got_b.len(), 40, "each message reached exactly one: {got_a:?} {got_b:?}");
    let all: BTreeSet<String> = (0..40).map(|i| format!("s-{i}")).collect();
    assert_eq!(set_a.union(&set_b).map(|s| (*s).clone()).collect::<BTreeSet<_>>(), all);
    eprintln!("shared: a got {}, b got {}", got_a.len(), got_b.len());
    a.host.shutdown().await;
    b.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_fails_posts_fast_then_resumes_without_losing_acknowledged_ones() {
    let _broker = BROKER.write().await;
    let prefix = unique("mh-test");
    // A persistent session: what is published while it is away waits for it.
    let mut seen = subscriber(&format!("{prefix}/#"), Some(600)).await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "orders"

        [endpoints.mq]
        type = "mqtt"
        url = "{url}"
        adapter_settings = {{ topic_prefix = "{prefix}/" }}

        [[routes]]
        source = "ingest"
        target = "mq"
        "#,
        url = broker_url()
    ))
    .await;
    ready(&t).await;

    let confirmed = Restart {
        broker: "mosquitto",
        component: "mq",
        recovery: Duration::from_secs(15),
        unavailable_within: Duration::from_secs(6),
        timed_out_within: Duration::from_secs(6),
        flaps: false,
    }
    .run(t)
    .await;

    // Every POST answered 202 reached the persistent subscriber, in order; what was
    // unconfirmed may have arrived too.
    let mut got: Vec<String> = Vec::new();
    let last_key = confirmed.last().expect("some confirmed").to_string();
    while !got.contains(&last_key) {
        let message = next(&mut seen).await;
        got.push(user_property(&message, "message-id").unwrap_or_default().to_owned());
    }
    assert_arrived_in_order(&confirmed, &got, "what the subscriber received");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_while_consuming_gets_what_it_did_not_hand_over_after_its_restart() {
    let _broker = BROKER.read().await;
    let prefix = unique("mh-test");
    let instance = unique("killed");
    let consume_into = |target: &str| {
        format!(
            r#"
            [endpoints.mq]
            type = "mqtt"
            url = "{url}"
            adapter_settings = {{ topic_prefix = "{prefix}/" }}
            subscriptions = ["{prefix}/#"]
            session_expiry_s = 600
            receive_maximum = 20

            [[routes]]
            source = "mq"
            target = "{target}"
            "#,
            url = broker_url()
        )
    };
    // The hub holds the hand-over until the kill.
    let first = support::HostProcess::start(
        &format!("instance_id = \"{instance}\"\nreload_poll_ms = 0"),
        &(support::hub_until_killed(2000) + &consume_into("slow")),
    )
    .await;
    first.await_ready().await;
    let mut client = publisher().await;
    for i in 0..2000 {
        publish(&client, &format!("{prefix}/k"), format!("k{i}"), with_id(&format!("k-{i}"))).await;
    }
    first.await_delivered(20).await;
    let handed_over = support::delivered(&first.kill());
    assert!(handed_over.len() < 2000, "the hub held the hand-over until the kill");
    client.acked(2000).await;
    // Published while no host runs: the session keeps them.
    for i in 2000..2100 {
        publish(&client, &format!("{prefix}/k"), format!("k{i}"), with_id(&format!("k-{i}"))).await;
    }
    client.acked(2100).await;

    let poll = "[entrypoints.poll]\ntype = \"http_get\"\npath = \"/poll\"\n";
    let second = start_as(&instance, &(poll.to_owned() + &consume_into("poll"))).await;
    ready(&second).await;
    let all: BTreeSet<String> = (0..2100).map(|i| format!("k-{i}")).collect();
    let after = polled_covering(&second, "/poll", &handed_over, &all).await;
    let seen: BTreeSet<String> = handed_over.iter().chain(&after).cloned().collect();
    let lost: Vec<&String> = all.difference(&seen).collect();
    eprintln!("killed after handing over {}; the restarted host got {}", handed_over.len(), after.len());
    assert!(lost.is_empty(), "at least once: never handed over {lost:?}");
    assert!(after.iter().any(|id| id == "k-2099"), "what came while no host ran arrived");
    let positions: Vec<usize> =
        (2000..2100).filter_map(|i| after.iter().position(|id| *id == format!("k-{i}"))).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order: {after:?}");
    second.host.shutdown().await;
}

/// Where `scripts/brokers.sh` keeps Mosquitto's files.
fn mosquitto_dir() -> String {
    let cache = std::env::var("MEDIATION_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/mediation-host", std::env::var("HOME").expect("HOME is set")));
    format!("{cache}/brokers/mosquitto")
}

/// The pid of the Mosquitto that `scripts/brokers.sh` started.
fn mosquitto_pid() -> String {
    let file = format!("{}/mosquitto.pid", mosquitto_dir());
    let pid = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}; is Mosquitto up?"));
    pid.trim().to_owned()
}

/// Sends `signal` to Mosquitto.
fn signal_mosquitto(signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &mosquitto_pid()]).status().expect("kill runs");
    assert!(status.success(), "kill -{signal} mosquitto");
}

/// Lets a stopped Mosquitto go on however the test ends.
struct Continue;

impl Drop for Continue {
    fn drop(&mut self) {
        signal_mosquitto("CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_does_not_acknowledge_in_time_gets_posts_answered_504() {
    let _broker = BROKER.write().await;
    let prefix = unique("mh-test");
    let mut seen = subscriber(&format!("{prefix}/#"), None).await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "slow"

        [endpoints.mq]
        type = "mqtt"
        url = "{url}"
        confirm_timeout_ms = 500
        adapter_settings = {{ topic_prefix = "{prefix}/" }}

        [[routes]]
        source = "ingest"
        target = "mq"
        "#,
        url = broker_url()
    ))
    .await;
    ready(&t).await;
    let text = [("content-type", "text/plain")];
    assert_eq!(t.post("/ingest", &text, "before").await.status, 202);

    // The broker process stops: the connection stays open, nothing is acknowledged.
    let resume = Continue;
    signal_mosquitto("STOP");
    let reply = t.post("/ingest", &[("content-type", "text/plain"), ("idempotency-key", "late")], "late").await;
    drop(resume);
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.json()["error"], "target_timeout");
    let message = reply.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains(&format!("topic `{prefix}/slow`: not acknowledged by the broker within 500 ms")),
        "{message}"
    );

    // Going on, the broker takes it after all (it may or may not arrive, the 504 said),
    // and the flow goes on on the same connection.
    let after = t.post("/ingest", &text, "after").await;
    assert_eq!(after.status, 202, "{}", after.text());
    let payloads: Vec<Bytes> =
        vec![next(&mut seen).await.payload, next(&mut seen).await.payload, next(&mut seen).await.payload];
    assert_eq!(payloads, [&b"before"[..], b"late", b"after"]);
    let outcomes: Vec<_> = t.packets().iter().map(|p| p["outcome"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(outcomes, ["delivered", "timeout", "delivered"]);
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_stopped_mid_stream_leaves_what_it_did_not_hand_over_in_its_session() {
    let _broker = BROKER.read().await;
    let prefix = unique("mh-test");
    let instance = unique("stopped");
    let config = format!(
        r#"
        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        [endpoints.mq]
        type = "mqtt"
        url = "{url}"
        adapter_settings = {{ topic_prefix = "{prefix}/" }}
        subscriptions = ["{prefix}/#"]

        [[routes]]
        source = "mq"
        target = "poll"
        "#,
        url = broker_url()
    );
    let first = start_as(&instance, &config).await;
    ready(&first).await;
    let mut client = publisher().await;
    for i in 0..2000 {
        publish(&client, &format!("{prefix}/s"), format!("s{i}"), with_id(&format!("s-{i}"))).await;
    }
    polled(&first, "/poll", 100).await;
    let log = std::sync::Arc::clone(&first.packets);
    first.host.shutdown().await;
    let log = String::from_utf8(log.lock().expect("not poisoned").clone()).expect("UTF-8");
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).expect("a packet line is JSON")).collect();
    let handed_over = support::delivered(&lines);
    client.acked(2000).await;

    let second = start_as(&instance, &config).await;
    ready(&second).await;
    let everything: BTreeSet<String> = (0..2000).map(|i| format!("s-{i}")).collect();
    let after = polled_covering(&second, "/poll", &handed_over, &everything).await;
    eprintln!("stopped after handing over {}; the next host got {}", handed_over.len(), after.len());
    let seen: BTreeSet<String> = handed_over.iter().chain(&after).cloned().collect();
    let lost: Vec<&String> = everything.difference(&seen).collect();
    assert!(lost.is_empty(), "neither handed over nor kept in the session: {lost:?}");
    second.host.shutdown().await;
}

/// Backpressure: behind a hub slower than the broker, one hand-over of a full
/// `receive_maximum` of messages lasts longer than the keep-alive allows a silent
/// client (1.5 × 5 s). The endpoint keeps its connection serviced meanwhile, so the
/// broker does not drop it: every message arrives once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_longer_than_the_keep_alive_keeps_the_session_and_the_order() {
    let _broker = BROKER.read().await;
    let prefix = unique("mh-test");
    let total = 256;
    let t = start_instance(&format!(
        r#"
        {slow}

        [endpoints.mq]
        type = "mqtt"
        url = "{url}"
        subscriptions = ["{prefix}/#"]
        keep_alive_s = 5
        receive_maximum = {total}
        max_batch = {total}

        [[routes]]
        source = "mq"
        target = "slow"
        "#,
        // 40 ms each: about 10 s for a batch of 256.
        slow = support::slow_hub(40, total),
        url = broker_url()
    ))
    .await;
    ready(&t).await;
    let received = support::Received::spawn(t.ws("/slow").await, total);
    let mut client = publisher().await;
    let payloads: Vec<String> = (0..total).map(|i| format!("p-{i:05}")).collect();
    for payload in &payloads {
        publish(&client, &format!("{prefix}/slow"), payload.clone(), PublishProperties::default()).await;
    }
    client.acked(total).await;
    assert_eq!(received.all().await, payloads, "every message once, in order");
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connects_with_the_test_ca_and_an_unknown_issuer_is_named() {
    let _broker = BROKER.read().await;
    let prefix = unique("mh-test");
    let url = std::env::var("MEDIATION_MQTT_TLS_URL").unwrap_or_else(|_| String::from("mqtts://127.0.0.1:8883"));
    let ca = std::env::var("MEDIATION_MQTT_CA").unwrap_or_else(|_| format!("{}/tls/ca.pem", mosquitto_dir()));
    assert!(std::path::Path::new(&ca).is_file(), "{ca} is missing; `scripts/brokers.sh up mosquitto` makes it");
    let mut seen = subscriber(&format!("{prefix}/#"), None).await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.secure]
        type = "http_post"
        path = "/secure"
        destination = "tls"

        [entrypoints.untrusted]
        type = "http_post"
        path = "/untrusted"
        destination = "tls"

        [endpoints.safe]
        type = "mqtt"
        url = "{url}"
        adapter_settings = {{ topic_prefix = "{prefix}/" }}
        tls = {{ ca_file = "{ca}" }}

        [endpoints.unsafe]
        type = "mqtt"
        url = "{url}"
        adapter_settings = {{ topic_prefix = "{prefix}/" }}

        [[routes]]
        source = "secure"
        target = "safe"

        [[routes]]
        source = "untrusted"
        target = "unsafe"
        "#
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let problems = loop {
        let problems = t.admin("/readyz").await.json()["problems"].to_string();
        let settled = !problems.contains("safe: connecting") && problems.contains("unsafe: not connected");
        if settled || Instant::now() > deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!problems.contains("\"safe:"), "the endpoint with the CA connects: {problems}");
    assert!(problems.contains(&format!("unsafe: not connected to {url}")), "{problems}");
    assert!(problems.contains("UnknownIssuer"), "the TLS error is named: {problems}");

    let reply = t.post("/secure", &[("content-type", "text/plain")], "over tls").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let message = next(&mut seen).await;
    assert_eq!((&message.topic[..], &message.payload[..]), (format!("{prefix}/tls").as_bytes(), &b"over tls"[..]));
    let refused = t.post("/untrusted", &[("content-type", "text/plain")], "x").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    t.host.shutdown().await;
}
