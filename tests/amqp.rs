//! The `amqp` endpoint (AMQP 1.0, JMS brokers) against the real ActiveMQ Artemis that
//! `scripts/brokers.sh up artemis` starts. The address comes from
//! `MEDIATION_ARTEMIS_URL` (default `amqp://mediation:mediation-secret@127.0.0.1:5673`).
//! A broker that cannot be reached fails the tests, in CI and out of it: they never skip.
//!
//! The broker's own side is played by a real AMQP 1.0 client (fe2o3-amqp, as Qpid JMS
//! would: the JMS annotations are checked on what it receives). Every test uses its own
//! queue, topic and subscription names. The restart test holds [`BROKER`] exclusively;
//! the others share it. Addresses under `mh-strict.` are never auto-created (brokers.sh
//! configures Artemis so), for the tests of a missing address.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Batch, Body, Data, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use futures_util::SinkExt;
use serde_json::json;
use support::{Restart, TestHost, assert_arrived_in_order, next_data, start_instance, unique, ws_json};
use tokio::sync::RwLock;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Shared by tests that need the broker up; held exclusively by the restart test.
static BROKER: RwLock<()> = RwLock::const_new(());

fn broker_url() -> String {
    std::env::var("MEDIATION_ARTEMIS_URL")
        .unwrap_or_else(|_| String::from("amqp://mediation:mediation-secret@127.0.0.1:5673"))
}

/// The broker's own side: a connection and a session of a real AMQP 1.0 client.
struct Client {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
}

impl Client {
    async fn connect() -> Self {
        let url = broker_url();
        let opened = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::builder().container_id(unique("mh-test-client")).open(url.as_str()),
        )
        .await
        .map_err(|_| String::from("no answer in 10 s"))
        .and_then(|c| c.map_err(|e| e.to_string()));
        let mut connection = opened.unwrap_or_else(|e| {
            panic!(
                "Artemis is not reachable at {} ({e}); start it with `scripts/brokers.sh up artemis` (tests never \
                 skip a missing broker)",
                mediation_host::config::redact_url(&url)
            )
        });
        let session = Session::begin(&mut connection).await.expect("a session");
        Self { connection, session }
    }

    /// Sends `message` to `address` and expects `accepted`.
    async fn send(&mut self, address: &str, messages: Vec<Message<Body<Value>>>) {
        let mut sender = Sender::attach(&mut self.session, unique("mh-test-sender"), address).await.expect("a sender");
        for message in messages {
            let outcome = sender.send(message).await.expect("sent");
            assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
        }
        sender.close().await.expect("closed");
    }

    /// Receives (and accepts) messages from `address` until `done` says it has all it
    /// needs, or nothing more comes for `quiet`.
    async fn receive_until(
        &mut self,
        address: &str,
        quiet: Duration,
        done: impl Fn(&[Delivery<Body<Value>>]) -> bool,
    ) -> Vec<Delivery<Body<Value>>> {
        let mut receiver =
            Receiver::attach(&mut self.session, unique("mh-test-receiver"), address).await.expect("a receiver");
        let mut got = Vec::new();
        while !done(&got) {
            match tokio::time::timeout(quiet, receiver.recv::<Body<Value>>()).await {
                Ok(delivery) => {
                    let delivery = delivery.expect("a message");
                    receiver.accept(&delivery).await.expect("accepted");
                    got.push(delivery);
                }
                Err(_) => break,
            }
        }
        receiver.close().await.expect("closed");
        got
    }

    /// Receives `n` messages, waiting up to 10 s for each.
    async fn receive(&mut self, address: &str, n: usize) -> Vec<Delivery<Body<Value>>> {
        self.receive_until(address, Duration::from_secs(10), |got| got.len() >= n).await
    }

    /// Reads attribute `attribute` (`messageCount`, `deliveringCount`) of queue `queue`
    /// through the broker's management address, as Artemis's own tools do.
    async fn queue_attribute(&mut self, queue: &str, attribute: &str) -> i64 {
        let reply_to = unique("mh-test-reply");
        let mut replies = Receiver::attach(&mut self.session, unique("mh-test-replies"), format!("queue://{reply_to}"))
            .await
            .expect("a reply receiver");
        let request = Message::builder()
            .properties(Properties::builder().reply_to(reply_to).build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("_AMQ_ResourceName", format!("queue.{queue}"))
                    .insert("_AMQ_Attribute", attribute)
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::String(String::from("[]")))))
            .build();
        self.send("activemq.management", vec![request]).await;
        let reply = support::within("the management reply", replies.recv::<Body<Value>>()).await.expect("a reply");
        replies.accept(&reply).await.expect("accepted");
        replies.close().await.expect("closed");
        let text = match reply.body() {
            Body::Value(AmqpValue(Value::String(text))) => text.clone(),
            other => panic!("a management reply holds JSON text, not {other:?}"),
        };
        let values: Vec<serde_json::Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("management reply {text:?}: {e}"));
        values.first().and_then(serde_json::Value::as_i64).unwrap_or_else(|| panic!("{attribute} of {queue}: {text}"))
    }

    async fn close(mut self) {
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

/// A message as a JMS `TextMessage` producer sends it, with an id and properties.
fn text_message(id: &str, text: &str, properties: &[(&str, &str)]) -> Message<Body<Value>> {
    let mut message = Message::from(Body::Value(AmqpValue(Value::String(text.to_owned()))));
    message.properties =
        Some(Properties { message_id: Some(MessageId::String(id.to_owned())), ..Properties::default() });
    if !properties.is_empty() {
        let mut application = ApplicationProperties::default();
        for (name, value) in properties {
            application.0.insert((*name).to_owned(), SimpleValue::String((*value).to_owned()));
        }
        message.application_properties = Some(application);
    }
    message
}

/// The message's body as bytes: text or data.
fn body(delivery: &Delivery<Body<Value>>) -> Vec<u8> {
    match delivery.body() {
        Body::Value(AmqpValue(Value::String(s))) => s.clone().into_bytes(),
        Body::Data(sections) => sections.iter().flat_map(|Data(b)| b.to_vec()).collect(),
        other => panic!("not text or data: {other:?}"),
    }
}

fn message_id(delivery: &Delivery<Body<Value>>) -> String {
    match delivery.message().properties.as_ref().and_then(|p| p.message_id.clone()) {
        Some(MessageId::String(id)) => id,
        other => panic!("no string message id: {other:?}"),
    }
}

fn annotation(delivery: &Delivery<Body<Value>>, name: &str) -> Option<Value> {
    delivery.message().message_annotations.as_ref()?.0.get(&OwnedKey::from(name)).cloned()
}

fn application(delivery: &Delivery<Body<Value>>, name: &str) -> Option<SimpleValue> {
    delivery.message().application_properties.as_ref()?.0.get(name).cloned()
}

/// The `[endpoints.<name>]` table head and connection lines for the test broker.
fn endpoint(name: &str) -> String {
    format!("[endpoints.{name}]\ntype = \"amqp\"\nurl = \"{}\"\n", broker_url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_answered_202_once_accepted_and_a_jms_client_sees_destination_type_and_properties() {
    let _broker = BROKER.read().await;
    let queue = unique("mh-test-q");
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{queue}"
        adapter_settings = {{ forward_headers = "correlation-id,reply-to,jms-type,x-tenant", content_types = "*/*" }}

        {endpoint}
        [[routes]]
        source = "ingest"
        target = "jms"
        "#,
        endpoint = endpoint("jms"),
    ))
    .await;
    let ready = t.await_ready(200, support::WAIT).await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    let binary: Vec<u8> = (0..=255).collect();
    let headers = [
        ("content-type", "application/octet-stream"),
        ("idempotency-key", "order-0"),
        ("correlation-id", "corr-0"),
        ("reply-to", "queue://replies"),
        ("jms-type", "OrderCreated"),
        ("x-tenant", "acme"),
    ];
    let reply = t.post("/ingest", &headers, binary.clone()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    for i in 1..20 {
        let key = format!("order-{i}");
        let body = format!("{{\"n\":{i},\"text\":\"grüße\"}}");
        let reply = t.post("/ingest", &[("content-type", "application/json"), ("idempotency-key", &key)], body).await;
        assert_eq!(reply.status, 202, "{}", reply.text());
    }

    let mut client = Client::connect().await;
    let got = client.receive(&format!("queue://{queue}"), 20).await;
    assert_eq!(got.len(), 20, "every accepted POST is in the queue");
    let first = &got[0];
    assert_eq!(body(first), binary, "bytes arrive exactly");
    assert!(first.body().is_data(), "bytes travel as a data section (a JMS BytesMessage)");
    assert_eq!(annotation(first, "x-opt-jms-msg-type"), Some(Value::Byte(3)), "JMSType BytesMessage");
    assert_eq!(annotation(first, "x-opt-jms-dest"), Some(Value::Byte(0)), "JMSDestination is a queue");
    let properties = first.message().properties.clone().expect("properties");
    assert_eq!(
        properties.message_id,
        Some(MessageId::String(String::from("order-0"))),
        "Idempotency-Key → JMSMessageID"
    );
    assert_eq!(properties.correlation_id, Some(MessageId::String(String::from("corr-0"))), "JMSCorrelationID");
    assert_eq!(properties.reply_to.as_deref(), Some("queue://replies"), "JMSReplyTo");
    assert_eq!(properties.subject.as_deref(), Some("OrderCreated"), "jms-type → subject (JMSType)");
    assert_eq!(properties.content_type.map(|c| c.0), Some(String::from("application/octet-stream")));
    assert_eq!(application(first, "x-tenant"), Some(SimpleValue::String(String::from("acme"))), "a JMS property");
    assert_eq!(application(first, "correlation-id"), None, "a property is not also an application property");
    assert!(first.message().header.as_ref().is_some_and(|h| h.durable), "PERSISTENT by default");
    for (i, message) in (1..).zip(&got[1..]) {
        assert_eq!(message_id(message), format!("order-{i}"), "in order");
        assert_eq!(body(message), format!("{{\"n\":{i},\"text\":\"grüße\"}}").into_bytes());
        assert!(matches!(message.body(), Body::Value(AmqpValue(Value::String(_)))), "text is an amqp-value string");
        assert_eq!(annotation(message, "x-opt-jms-msg-type"), Some(Value::Byte(5)), "a TextMessage");
    }
    let packets = t.packets();
    assert_eq!(packets.len(), 20);
    assert!(packets.iter().all(|p| p["outcome"] == "delivered" && p["target"] == "jms"), "{packets:?}");
    t.host.shutdown().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_come_back_through_a_queue_to_sse_and_http_get_in_order_with_their_properties() {
    let _broker = BROKER.read().await;
    let queue = unique("mh-test-q");
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{queue}"
        adapter_settings = {{ forward_headers = "correlation-id,x-site" }}

        [entrypoints.events]
        type = "sse"
        path = "/events"

        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        {endpoint}queues = ["{queue}"]

        [[routes]]
        source = "ingest"
        target = "jms"

        [[routes]]
        source = "jms"
        target = "events"

        [[routes]]
        source = "jms"
        target = "poll"
        "#,
        endpoint = endpoint("jms"),
    ))
    .await;
    let ready = t.await_ready(200, support::WAIT).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let mut sse = t.sse("/events", &[]).await.expect("an SSE stream");
    let payloads = ["temp=21.5 °C", r#"{"temp":22,"unit":"°C"}"#, "", "last"];
    for (i, payload) in payloads.iter().enumerate() {
        let id = format!("m-{i}");
        let headers =
            [("content-type", "text/plain"), ("idempotency-key", &id), ("correlation-id", "c-7"), ("x-site", "north")];
        let reply = t.post("/ingest", &headers, payload.to_string()).await;
        assert_eq!(reply.status, 202, "{}", reply.text());
    }
    for payload in payloads {
        assert_eq!(next_data(&mut sse).await, payload, "the exact payload, in order");
    }
    let polled = t.get("/poll?cursor=0", &[]).await.json();
    let events = polled["events"].as_array().expect("events");
    assert_eq!(events.len(), 4, "{polled}");
    let first = &events[0];
    assert_eq!((&first["id"], &first["topic"]), (&json!("m-0"), &json!(queue)), "{first}");
    assert_eq!(first["content_type"], "text/plain", "{first}");
    assert_eq!(first["headers"]["correlation-id"], "c-7", "{first}");
    assert_eq!(first["headers"]["x-site"], "north", "{first}");
    assert_eq!(first["headers"]["jms-destination-kind"], "queue", "{first}");
    assert_eq!(first["headers"]["jms-message-type"], "text", "{first}");
    let delivered: Vec<_> = t.packets().into_iter().filter(|p| p["route"] == "jms->events").collect();
    let ids: Vec<_> = delivered.iter().map(|p| p["event_id"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(ids, ["m-0", "m-1", "m-2", "m-3"], "the message id is the event id, in order");
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_publishes_are_acked_after_the_broker_accepted_and_come_back_to_websocket_clients() {
    let _broker = BROKER.read().await;
    let queue = unique("mh-test-q");
    let t = start_instance(&format!(
        r#"
        [entrypoints.ws]
        type = "websocket"
        path = "/ws"
        adapter_settings = {{ protocol = "envelope" }}

        {endpoint}queues = ["{queue}"]

        [[routes]]
        source = "ws"
        target = "jms"

        [[routes]]
        source = "jms"
        target = "ws"
        "#,
        endpoint = endpoint("jms"),
    ))
    .await;
    let ready = t.await_ready(200, support::WAIT).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let mut alice = t.ws("/ws").await;
    let mut bob = t.ws("/ws").await;
    let ids = ["w-0", "w-1", "w-2"];
    for id in ids {
        let publish =
            json!({"type": "publish", "topic": queue, "id": id, "data": {"id": id, "text": "hé"}, "ack": true});
        alice.send(WsMessage::text(publish.to_string())).await.expect("send");
    }
    // Alice gets three acks and three messages, in whatever interleaving.
    let mut acks = Vec::new();
    let mut alice_saw = Vec::new();
    while acks.len() < 3 || alice_saw.len() < 3 {
        let frame = ws_json(&mut alice).await;
        if frame["type"] == "ack" {
            assert_eq!(frame["status"], "ok", "{frame}");
            acks.push(frame["id"].as_str().expect("an id").to_owned());
        } else {
            alice_saw.push(frame);
        }
    }
    // Each ack is sent once its own outcome is known: acks of one batch may cross.
    acks.sort_unstable();
    assert_eq!(acks, ids, "every publish acked ok, after the broker accepted it");
    for (i, id) in ids.iter().enumerate() {
        let frame = ws_json(&mut bob).await;
        assert_eq!((&frame["type"], &frame["id"], &frame["topic"]), (&json!("message"), &json!(id), &json!(queue)));
        assert_eq!(frame["data"], json!({"id": id, "text": "hé"}), "the exact JSON, in order");
        assert_eq!(frame, alice_saw[i], "both clients see the same frames");
    }
    t.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_jms_producer_sends_to_a_topic_reach_http_get_with_bytes_and_properties() {
    let _broker = BROKER.read().await;
    let topic = unique("mh-test-t");
    let t = start_instance(&format!(
        r#"
        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        {endpoint}topics = ["{topic}"]
        subscription = "{subscription}"
        durable_subscription = false

        [[routes]]
        source = "jms"
        target = "poll"
        "#,
        endpoint = endpoint("jms"),
        subscription = unique("mh-test-sub"),
    ))
    .await;
    let ready = t.await_ready(200, support::WAIT).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let mut client = Client::connect().await;
    let mut messages = vec![text_message("p-0", "price=12.5", &[("symbol", "ACME")])];
    let mut bytes = Message::from(Body::Data(Batch::new(vec![Data(Binary::from(vec![0u8, 1, 0xfe, 0xff]))])));
    bytes.properties =
        Some(Properties { message_id: Some(MessageId::String(String::from("p-1"))), ..Properties::default() });
    messages.push(bytes);
    messages.push(text_message("p-2", "last", &[]));
    client.send(&format!("topic://{topic}"), messages).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let polled = t.get("/poll?cursor=0", &[]).await.json();
        let events = polled["events"].as_array().cloned().unwrap_or_default();
        if events.len() >= 3 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ids: Vec<_> = events.iter().map(|e| e["id"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(ids, ["p-0", "p-1", "p-2"], "in order: {events:?}");
    assert_eq!((&events[0]["topic"], &events[0]["data"]), (&json!(topic), &json!("price=12.5")), "{:?}", events[0]);
    assert_eq!(events[0]["headers"]["symbol"], "ACME", "an application property is a header");
    assert_eq!(events[0]["headers"]["jms-destination-kind"], "topic");
    let raw = t.get("/poll?cursor=0&limit=3", &[("accept", "application/x-ndjson")]).await.text();
    assert!(raw.lines().count() >= 3, "{raw}");
    let packets = t.packets();
    assert!(packets.iter().all(|p| p["outcome"] == "delivered"), "{packets:?}");
    t.host.shutdown().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_adapter_refuses_is_rejected_alone_and_never_redelivered() {
    let _broker = BROKER.read().await;
    let queue = unique("mh-test-q");
    let mut client = Client::connect().await;
    let mut poison = Message::from(Body::Data(Batch::new(vec![Data(Binary::from(vec![0xffu8, 0xfe]))])));
    poison.properties =
        Some(Properties { message_id: Some(MessageId::String(String::from("poison"))), ..Properties::default() });
    let oversized = text_message("big", &"x".repeat(65), &[]);
    client
        .send(
            &format!("queue://{queue}"),
            vec![text_message("s-1", "first", &[]), poison, oversized, text_message("s-2", "second", &[])],
        )
        .await;
    // An SSE client reads text: the SSE adapter refuses a payload that is not UTF-8. A
    // body over `max_message_bytes` is rejected before it is mapped (no packet line).
    let t = start_instance(&format!(
        r#"
        [entrypoints.events]
        type = "sse"
        path = "/events"

        {endpoint}queues = ["{queue}"]
        max_message_bytes = 64

        [[routes]]
        source = "jms"
        target = "events"
        "#,
        endpoint = endpoint("jms"),
    ))
    .await;
    let packets = t.await_packets(3).await;
    let mut outcomes: Vec<_> = packets.iter().map(|p| (p["event_id"].as_str(), p["outcome"].as_str())).collect();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        [(Some("poison"), Some("adapter_error")), (Some("s-1"), Some("delivered")), (Some("s-2"), Some("delivered"))],
    );
    let TestHost { host, packets, dir: _dir } = t;
    host.shutdown().await;
    let lines = String::from_utf8(packets.lock().expect("not poisoned").clone()).expect("UTF-8");
    assert_eq!(lines.lines().count(), 3, "the rejected message did not come back: {lines}");
    let left =
        client.receive_until(&format!("queue://{queue}"), Duration::from_millis(500), |got| !got.is_empty()).await;
    assert!(left.is_empty(), "accepted or rejected, nothing is left or redelivered: {left:?}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_address_or_an_oversized_message_fails_naming_it_and_wrong_credentials_leave_the_host_unready() {
    let _broker = BROKER.read().await;
    let missing = unique("mh-strict.missing");
    let queue = unique("mh-test-q");
    let url = broker_url();
    let wrong = url.replacen("mediation-secret", "not-the-password", 1);
    assert_ne!(wrong, url, "MEDIATION_ARTEMIS_URL must carry the password to test a wrong one");
    let t = start_instance(&format!(
        r#"
        [entrypoints.lost]
        type = "http_post"
        path = "/lost"
        destination = "{missing}"

        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{queue}"

        [entrypoints.denied]
        type = "http_post"
        path = "/denied"
        destination = "{queue}"

        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        {endpoint}max_message_bytes = 1024

        [endpoints.orders-broker]
        type = "jms"
        url = "{wrong}"

        [endpoints.strict-in]
        type = "amqp"
        url = "{url}"
        queues = ["{missing}"]

        [[routes]]
        source = "lost"
        target = "jms"

        [[routes]]
        source = "ingest"
        target = "jms"

        [[routes]]
        source = "denied"
        target = "orders-broker"

        [[routes]]
        source = "strict-in"
        target = "poll"
        "#,
        endpoint = endpoint("jms"),
    ))
    .await;
    let text = [("content-type", "text/plain")];
    let deadline = Instant::now() + Duration::from_secs(10);
    let lost = loop {
        let reply = t.post("/lost", &text, "nobody has this queue").await;
        if reply.status != 503 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // `jms` is still connecting
    };
    assert_eq!(lost.status, 502, "{}", lost.text());
    assert_eq!(lost.json()["error"], "target_error");
    let message = lost.json()["message"].as_str().expect("a message").to_owned();
    assert!(message.contains(&format!("address `queue://{missing}`")) && message.contains("not-found"), "{message}");

    let big = "x".repeat(1025);
    let oversized = t.post("/ingest", &text, big).await;
    assert_eq!(oversized.status, 413, "{}", oversized.text());
    assert_eq!(oversized.json()["error"], "too_large");
    let message = oversized.json()["message"].as_str().expect("a message").to_owned();
    assert!(message.contains("the payload is 1025 bytes, over the endpoint's max_message_bytes of 1024"), "{message}");
    let fits = t.post("/ingest", &text, "x".repeat(1024)).await;
    assert_eq!(fits.status, 202, "{}", fits.text());

    let deadline = Instant::now() + Duration::from_secs(10);
    let problems = loop {
        let reply = t.admin("/readyz").await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        let problems = reply.json()["problems"].to_string();
        if (problems.contains("orders-broker: not connected") && problems.contains("strict-in: not connected"))
            || Instant::now() > deadline
        {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(problems.contains("orders-broker: not connected to amqp://mediation:[redacted]@"), "{problems}");
    assert!(problems.contains("SASL authentication failed"), "{problems}");
    assert!(!problems.contains("not-the-password"), "the password is redacted: {problems}");
    assert!(
        problems.contains("strict-in: not connected to amqp://mediation:[redacted]@")
            && problems
                .contains(&format!("attaching a receiver to `queue://{missing}`: the broker refused: amqp:not-found")),
        "{problems}"
    );
    assert!(!problems.contains("\"jms:"), "`jms` itself is connected: {problems}");
    let denied = t.post("/denied", &text, "x").await;
    assert_eq!(denied.status, 503, "{}", denied.text());
    assert_eq!(denied.json()["error"], "target_unavailable");
    assert!(!denied.text().contains("not-the-password"), "{}", denied.text());
    assert_eq!(t.admin("/healthz").await.status, 200, "the host runs");
    t.host.shutdown().await;
    let mut client = Client::connect().await;
    let kept = client.receive(&format!("queue://{queue}"), 1).await;
    assert_eq!(body(&kept[0]), "x".repeat(1024).into_bytes(), "the message at the limit was sent whole");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_keeps_what_was_published_while_the_host_was_stopped() {
    let _broker = BROKER.read().await;
    let topic = unique("mh-test-t");
    // The same container id and subscription name on both runs: the same subscription.
    let config = format!(
        r#"
        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        {endpoint}topics = ["{topic}"]
        container_id = "{container}"
        subscription = "{subscription}"

        [[routes]]
        source = "jms"
        target = "poll"
        "#,
        endpoint = endpoint("jms"),
        container = unique("mh-test-container"),
        subscription = unique("mh-test-sub"),
    );
    let t = start_instance(&config).await;
    let ready = t.await_ready(200, support::WAIT).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    t.host.shutdown().await;

    let mut client = Client::connect().await;
    let messages = (0..3).map(|i| text_message(&format!("d-{i}"), &format!("while away {i}"), &[])).collect();
    client.send(&format!("topic://{topic}"), messages).await;
    let t = start_instance(&config).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = t.get("/poll?cursor=0", &[]).await.json()["events"].as_array().cloned().unwrap_or_default();
        if events.len() >= 3 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got: Vec<_> =
        events.iter().map(|e| (e["id"].as_str().unwrap_or(""), e["data"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        got,
        [("d-0", "while away 0"), ("d-1", "while away 1"), ("d-2", "while away 2")],
        "published while no host ran, kept by the durable subscription, in order"
    );
    t.host.shutdown().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_delivery_sends_at_most_once_without_waiting_for_an_outcome() {
    let _broker = BROKER.read().await;
    let queue = unique("mh-test-q");
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{queue}"

        {endpoint}delivery = "settled"

        [[routes]]
        source = "ingest"
        target = "jms"
        "#,
        endpoint = endpoint("jms"),
    ))
    .await;
    let ready = t.await_ready(200, support::WAIT).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    for i in 0..3 {
        let key = format!("direct-{i}");
        let reply = t.post("/ingest", &[("content-type", "text/plain"), ("idempotency-key", &key)], key.clone()).await;
        assert_eq!(reply.status, 202, "{}", reply.text());
    }
    let mut client = Client::connect().await;
    let got = client.receive(&format!("queue://{queue}"), 3).await;
    let ids: Vec<String> = got.iter().map(message_id).collect();
    assert_eq!(ids, ["direct-0", "direct-1", "direct-2"]);
    t.host.shutdown().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_its_target_does_not_accept_is_released_and_redelivered_never_accepted() {
    let _broker = BROKER.read().await;
    let queue = unique("mh-test-q");
    let mut client = Client::connect().await;
    client.send(&format!("queue://{queue}"), vec![text_message("u-1", "undeliverable", &[])]).await;
    // An HTTP POST entrypoint serves no events, so it refuses every delivery.
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"

        {endpoint}queues = ["{queue}"]

        [[routes]]
        source = "jms"
        target = "ingest"
        "#,
        endpoint = endpoint("jms"),
    ))
    .await;
    let packets = t.await_packets(2).await;
    assert!(packets.len() >= 2, "the message came back after it failed: {packets:?}");
    assert!(packets.iter().all(|p| p["event_id"] == "u-1" && p["outcome"] == "target_error"), "{packets:?}");
    assert!(packets.len() < 20, "redelivery pauses instead of spinning: {} attempts", packets.len());
    t.host.shutdown().await;
    let left = client.receive(&format!("queue://{queue}"), 1).await;
    assert_eq!(left.len(), 1, "released, never accepted, so still in the queue");
    assert_eq!(body(&left[0]), b"undeliverable");
    client.close().await;
}

/// Two hosts with the same endpoint, each with its own SSE client; returns what each
/// client received once `n` messages were sent to `topic`.
async fn two_instances(consumer: &str, topic: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let subscription = unique("mh-test-sub");
    // The shared subscription is durable (the default), the broadcast ones are not, so
    // that both kinds are exercised.
    let durable = consumer == "shared";
    let config = format!(
        r#"
        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        {endpoint}topics = ["{topic}"]
        consumer = "{consumer}"
        subscription = "{subscription}"
        durable_subscription = {durable}

        [[routes]]
        source = "jms"
        target = "poll"
        "#,
        endpoint = endpoint("jms"),
    );
    let one = start_instance(&config).await;
    let two = start_instance(&config).await;
    for t in [&one, &two] {
        let ready = t.await_ready(200, support::WAIT).await;
        assert_eq!(ready.status, 200, "{}", ready.text());
    }
    let mut client = Client::connect().await;
    let messages = (0..n).map(|i| text_message(&format!("b-{i}"), &format!("tick {i}"), &[])).collect();
    client.send(&format!("topic://{topic}"), messages).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let ids = |t: &TestHost| {
        t.packets()
            .iter()
            .filter(|p| p["outcome"] == "delivered")
            .map(|p| p["event_id"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    let expected = if consumer == "broadcast" { 2 * n } else { n };
    while ids(&one).len() + ids(&two).len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything more would arrive now: give it the same chance once more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = (ids(&one), ids(&two));
    one.host.shutdown().await;
    two.host.shutdown().await;
    client.close().await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_subscriptions_give_every_instance_every_message_and_a_shared_one_gives_each_to_one() {
    let _broker = BROKER.read().await;
    let n = 40;
    let all: Vec<String> = (0..n).map(|i| format!("b-{i}")).collect();
    let (one, two) = two_instances("broadcast", &unique("mh-test-t"), n).await;
    assert_eq!(one, all, "instance one got every message, in order");
    assert_eq!(two, all, "instance two got every message, in order");

    let (one, two) = two_instances("shared", &unique("mh-test-t"), n).await;
    let mut both: Vec<String> = one.iter().chain(&two).cloned().collect();
    both.sort_unstable_by_key(|id| id[2..].parse::<usize>().unwrap_or(usize::MAX));
    assert_eq!(both, all, "each message reached exactly one instance: {one:?} {two:?}");
    assert!(!one.is_empty() && !two.is_empty(), "both instances consumed: {one:?} {two:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_fails_posts_fast_then_resumes_without_losing_accepted_ones() {
    let _broker = BROKER.write().await;
    let queue = unique("mh-test-durable");
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{queue}"

        {endpoint}send_timeout_ms = 1500

        [[routes]]
        source = "ingest"
        target = "jms"
        "#,
        endpoint = endpoint("jms"),
    ))
    .await;
    let ready = t.await_ready(200, support::WAIT).await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    let accepted = Restart {
        broker: "artemis",
        component: "jms",
        recovery: Duration::from_secs(30),
        unavailable_within: Duration::from_secs(3),
        timed_out_within: Duration::from_secs(3),
        flaps: false,
    }
    .run(t)
    .await;

    // Every POST answered 202 is in the durable queue, in order.
    let mut client = Client::connect().await;
    let want: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    let got = client
        .receive_until(&format!("queue://{queue}"), Duration::from_secs(2), |got| {
            let ids: HashSet<String> = got.iter().map(message_id).collect();
            want.iter().all(|k| ids.contains(*k))
        })
        .await;
    let ids: Vec<String> = got.iter().map(message_id).collect();
    assert_arrived_in_order(&accepted, &ids, "the queue");
    client.close().await;
}

/// SIGKILL mid-stream: every message comes, before the kill or after the restart. A
/// message is accepted only after the hub took it, which its packet line shows; the first
/// host's hub holds the hand-over ([`support::hub_until_killed`]), so the kill finds
/// messages not handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_while_consuming_loses_nothing_it_did_not_hand_over() {
    let _broker = BROKER.read().await;
    let queue = unique("mh-test-in");
    const TOTAL: usize = 1000;
    let mut client = Client::connect().await;
    let messages = (0..TOTAL).map(|i| text_message(&format!("n-{i}"), &format!("{i}"), &[])).collect();
    client.send(&format!("queue://{queue}"), messages).await;
    let consume_into = |target: &str| {
        format!(
            r#"
            [endpoints.in]
            type = "amqp"
            url = "{url}"
            queues = ["{queue}"]
            prefetch = 1
            max_batch = 1

            [[routes]]
            source = "in"
            target = "{target}"
            "#,
            url = broker_url(),
        )
    };
    let host = format!("instance_id = \"{}\"\nreload_poll_ms = 0", unique("test"));
    let first = support::HostProcess::start(&host, &(support::hub_until_killed(TOTAL) + &consume_into("slow"))).await;
    first.await_delivered(20).await;
    let before: HashSet<String> = support::delivered(&first.kill()).into_iter().collect();
    assert!(before.len() < TOTAL, "the hub held the hand-over until the kill");

    // The restarted host hands over at full speed.
    let events = "[entrypoints.events]\ntype = \"sse\"\npath = \"/events\"\n";
    let second = support::HostProcess::start(&host, &(events.to_owned() + &consume_into("events"))).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = |after: &[String]| before.len() + after.iter().filter(|id| !before.contains(*id)).count() >= TOTAL;
    while !all(&support::delivered(&second.packets())) {
        assert!(Instant::now() < deadline, "the restarted host did not deliver the rest; its log:\n{}", second.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = support::delivered(&second.packets());
    let again = after.iter().filter(|id| before.contains(*id)).count();
    eprintln!("killed mid-stream: {} delivered before, {} after ({again} of them again)", before.len(), after.len());
    for i in 0..TOTAL {
        let id = format!("n-{i}");
        assert!(before.contains(&id) || after.contains(&id), "{id} was lost: delivered neither before nor after");
    }
    // Everything delivered is accepted: the queue empties while the second host runs.
    let deadline = Instant::now() + support::WAIT;
    while client.queue_attribute(&queue, "messageCount").await > 0 {
        assert!(Instant::now() < deadline, "everything delivered was accepted on the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
    client.close().await;
}

/// Backpressure: behind a hub slower than the broker, the endpoint holds at most its
/// link credit (`prefetch`) in deliveries it has not accepted, the queue keeps the
/// rest, and every message arrives once and in order when the hub catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_slow_client_hub_consuming_waits_and_the_queue_keeps_the_rest() {
    let _broker = BROKER.read().await;
    let queue = unique("mh-test-slow");
    let (total, prefetch) = (1500, 10);
    let mut client = Client::connect().await;
    let t = start_instance(&format!(
        r#"
        {slow}

        [endpoints.in]
        type = "amqp"
        url = "{url}"
        queues = ["{queue}"]
        prefetch = {prefetch}

        [[routes]]
        source = "in"
        target = "slow"
        "#,
        slow = support::slow_hub(2, total),
        url = broker_url()
    ))
    .await;
    let ready = t.await_ready(200, support::WAIT).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let received = support::Received::spawn(t.ws("/slow").await, total);
    let texts: Vec<String> = (0..total).map(|i| format!("slow-{i:05}")).collect();
    let messages = texts.iter().map(|text| text_message(text, text, &[])).collect();
    client.send(&format!("queue://{queue}"), messages).await;

    received.reached(total / 10).await;
    let delivering = client.queue_attribute(&queue, "deliveringCount").await;
    let in_queue = client.queue_attribute(&queue, "messageCount").await;
    assert!(delivering <= prefetch, "{delivering} deliveries not yet accepted, more than the credit {prefetch}");
    assert!(in_queue > delivering, "the queue was drained ahead of the hub: {in_queue} left, {delivering} out");

    assert_eq!(received.all().await, texts, "every message once, in order");
    assert_eq!(client.queue_attribute(&queue, "messageCount").await, 0, "every message accepted");
    t.host.shutdown().await;
    client.close().await;
}

/// The test CA of the broker's TLS acceptor (`scripts/brokers.sh` makes it once).
fn tls_ca() -> String {
    std::env::var("MEDIATION_ARTEMIS_TLS_CA").unwrap_or_else(|_| {
        let home = std::env::var("HOME").expect("HOME is set");
        format!("{home}/.cache/mediation-host/brokers/artemis/tls/ca.pem")
    })
}

/// `amqps://` with the test CA in `ca_file` connects and delivers; without it the
/// handshake fails and `/readyz` names why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_trusted_ca_delivers_and_an_untrusted_certificate_is_named() {
    let _broker = BROKER.read().await;
    let ca = tls_ca();
    assert!(
        std::path::Path::new(&ca).is_file(),
        "the test CA {ca} is missing; start Artemis with `scripts/brokers.sh up artemis` (tests never skip a missing broker)"
    );
    let tls_url = std::env::var("MEDIATION_ARTEMIS_TLS_URL")
        .unwrap_or_else(|_| String::from("amqps://mediation:mediation-secret@127.0.0.1:5674"));
    let queue = unique("mh-test-tls");
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{queue}"

        [endpoints.secure]
        type = "amqp"
        url = "{tls_url}"
        tls = {{ ca_file = "{ca}" }}

        # The system roots do not trust the test CA.
        [endpoints.untrusted]
        type = "amqp"
        url = "{tls_url}"

        [[routes]]
        source = "ingest"
        target = "secure"
        "#
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let problems = loop {
        let problems = t.admin("/readyz").await.json()["problems"].to_string();
        if (!problems.contains("secure:") && problems.contains("untrusted: not connected")) || Instant::now() > deadline
        {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!problems.contains("secure:"), "TLS with the test CA connects: {problems}");
    assert!(problems.contains("UnknownIssuer"), "the TLS failure is named: {problems}");
    assert!(!problems.contains("mediation-secret"), "the password is never shown: {problems}");
    let reply = t.post("/ingest", &[("content-type", "text/plain"), ("idempotency-key", "tls-1")], "over TLS").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let mut client = Client::connect().await;
    let got = client.receive(&format!("queue://{queue}"), 1).await;
    assert_eq!(body(&got[0]), b"over TLS");
    assert_eq!(message_id(&got[0]), "tls-1");
    client.close().await;
    t.host.shutdown().await;
}
