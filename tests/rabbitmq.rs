//! The `rabbitmq` endpoint against the real broker that `scripts/brokers.sh up rabbitmq`
//! starts. The address comes from `MEDIATION_RABBITMQ_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). A broker that cannot be reached fails the
//! tests, in CI and out of it: they never skip.
//!
//! Every test uses its own exchange, queue and endpoint names. The test that restarts
//! the broker holds [`BROKER`] exclusively; the others share it.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use mediation_host::endpoints::rabbitmq::parse_url;
use support::{Restart, TestHost, assert_arrived_in_order, next_data, start_instance, unique};
use tokio::sync::RwLock;

/// Shared by tests that need the broker up; held exclusively by the restart test.
static BROKER: RwLock<()> = RwLock::const_new(());

fn broker_url() -> String {
    std::env::var("MEDIATION_RABBITMQ_URL").unwrap_or_else(|_| String::from("amqp://guest:guest@127.0.0.1:5672/%2f"))
}

/// The broker's own client, for setting up and checking what the host did.
async fn broker() -> (Connection, Channel) {
    let url = broker_url();
    let uri = parse_url(&url).unwrap_or_else(|e| panic!("MEDIATION_RABBITMQ_URL: {e}"));
    let connection =
        tokio::time::timeout(Duration::from_secs(10), Connection::connect_uri(uri, ConnectionProperties::default()))
            .await
            .map_err(|_| String::from("no answer in 10 s"))
            .and_then(|c| c.map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                panic!(
                    "RabbitMQ is not reachable at {} ({e}); start it with `scripts/brokers.sh up rabbitmq` \
                 (tests never skip a missing broker)",
                    mediation_host::config::redact_url(&url)
                )
            });
    let channel = connection.create_channel().await.expect("a channel");
    (connection, channel)
}

fn short(s: &str) -> ShortString {
    ShortString::try_new(s).expect("a short string")
}

/// Declares a topic exchange and a queue bound to it with `binding_key`.
async fn exchange_and_queue(channel: &Channel, durable: bool, binding_key: &str) -> (String, String) {
    let exchange = unique("mh-test-x");
    let queue = unique("mh-test-q");
    let options = ExchangeDeclareOptions { durable, ..Default::default() };
    channel
        .exchange_declare(short(&exchange), ExchangeKind::Topic, options, FieldTable::default())
        .await
        .expect("exchange");
    let options = QueueDeclareOptions { durable, ..Default::default() };
    channel.queue_declare(short(&queue), options, FieldTable::default()).await.expect("queue");
    channel
        .queue_bind(
            short(&queue),
            short(&exchange),
            short(binding_key),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("binding");
    (exchange, queue)
}

async fn delete(channel: &Channel, exchange: &str, queue: &str) {
    let _ = channel.queue_delete(short(queue), QueueDeleteOptions::default()).await;
    let _ = channel.exchange_delete(short(exchange), ExchangeDeleteOptions::default()).await;
}

/// Takes up to `n` messages from `queue` (acking them), waiting up to `wait` for them.
async fn take(channel: &Channel, queue: &str, n: usize, wait: Duration) -> Vec<lapin::message::Delivery> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        match channel.basic_get(short(queue), BasicGetOptions { no_ack: true }).await.expect("basic.get") {
            Some(message) => got.push(message.delivery),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    got
}

/// Takes every message ready in `queue` (acking them).
async fn drain(channel: &Channel, queue: &str) -> Vec<lapin::message::Delivery> {
    let mut got = Vec::new();
    while let Some(message) =
        channel.basic_get(short(queue), BasicGetOptions { no_ack: true }).await.expect("basic.get")
    {
        got.push(message.delivery);
    }
    got
}

/// Messages ready in `queue`.
async fn ready(channel: &Channel, queue: &str) -> u32 {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    channel.queue_declare(short(queue), passive, FieldTable::default()).await.expect("queue exists").message_count()
}

fn property(p: &Option<ShortString>) -> Option<&str> {
    p.as_ref().map(ShortString::as_str)
}

fn header<'a>(delivery: &'a lapin::message::Delivery, name: &str) -> Option<&'a [u8]> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        other => panic!("header {name} is not a long string: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_answered_202_only_once_confirmed_and_arrives_whole_and_in_order() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let (exchange, queue) = exchange_and_queue(&channel, false, "orders.#").await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "orders.eu"
        adapter_settings = {{ forward_headers = "correlation-id,x-tenant,traceparent", content_types = "*/*" }}

        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        exchange = "{exchange}"

        [[routes]]
        source = "ingest"
        target = "rmq"
        "#,
        url = broker_url()
    ))
    .await;
    let ready = t.await_ready(200, Duration::from_secs(10)).await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    let binary: Vec<u8> = (0..=255).collect();
    let reply = t
        .post(
            "/ingest",
            &[
                ("content-type", "application/octet-stream"),
                ("idempotency-key", "order-0"),
                ("correlation-id", "corr-0"),
                ("x-tenant", "acme"),
            ],
            binary.clone(),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    for i in 1..20 {
        let key = format!("order-{i}");
        let body = format!("{{\"n\":{i},\"text\":\"grüße\"}}");
        let reply = t.post("/ingest", &[("content-type", "application/json"), ("idempotency-key", &key)], body).await;
        assert_eq!(reply.status, 202, "{}", reply.text());
        assert_eq!(reply.json()["ids"], serde_json::json!([key]));
    }

    let got = take(&channel, &queue, 20, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 20, "every confirmed POST is in the queue");
    let first = &got[0];
    assert_eq!(first.data, binary, "bytes arrive exactly");
    assert_eq!(first.exchange.as_str(), exchange);
    assert_eq!(first.routing_key.as_str(), "orders.eu");
    assert_eq!(property(first.properties.message_id()), Some("order-0"), "the Idempotency-Key is the message id");
    assert_eq!(property(first.properties.content_type()), Some("application/octet-stream"));
    assert_eq!(property(first.properties.correlation_id()), Some("corr-0"), "correlation-id is the AMQP property");
    assert_eq!(*first.properties.delivery_mode(), Some(2), "persistent by default");
    assert_eq!(header(first, "x-tenant"), Some(&b"acme"[..]), "user headers go into the headers table");
    assert_eq!(header(first, "correlation-id"), None, "a property is not also a header");
    for (i, message) in (1..).zip(&got[1..]) {
        assert_eq!(property(message.properties.message_id()), Some(format!("order-{i}").as_str()), "in order");
        assert_eq!(property(message.properties.content_type()), Some("application/json"));
        assert_eq!(message.data, format!("{{\"n\":{i},\"text\":\"grüße\"}}").into_bytes());
    }
    let packets = t.packets();
    assert_eq!(packets.len(), 20);
    assert!(packets.iter().all(|p| p["outcome"] == "delivered" && p["target"] == "rmq"), "{packets:?}");
    t.host.shutdown().await;
    delete(&channel, &exchange, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_post_fails_naming_the_exchange_and_key_and_a_missing_exchange_is_unavailable() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let (exchange, queue) = exchange_and_queue(&channel, false, "bound.#").await;
    let missing = unique("mh-test-missing");
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "nobody.listens"

        [entrypoints.lost]
        type = "http_post"
        path = "/lost"
        destination = "anything"

        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        exchange = "{exchange}"

        [endpoints.nowhere]
        type = "rabbitmq"
        url = "{url}"
        exchange = "{missing}"

        [[routes]]
        source = "ingest"
        target = "rmq"

        [[routes]]
        source = "lost"
        target = "nowhere"
        "#,
        url = broker_url()
    ))
    .await;
    let text = [("content-type", "text/plain")];

    // Mandatory publishing: the broker returns the message, and the POST fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    let unroutable = loop {
        let reply = t.post("/ingest", &text, "no queue wants this").await;
        if reply.status != 503 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // `rmq` is still connecting
    };
    assert_eq!(unroutable.status, 502, "{}", unroutable.text());
    let body = unroutable.json();
    assert_eq!(body["error"], "target_error");
    let message = body["message"].as_str().expect("a message");
    assert!(
        message.contains(&format!("exchange `{exchange}`, routing key `nobody.listens`"))
            && message.contains("unroutable"),
        "{message}"
    );
    assert_eq!(ready(&channel, &queue).await, 0);

    // `nowhere` never gets ready: its exchange does not exist. Its POSTs fail at once.
    let unready = t.await_ready(503, Duration::from_secs(10)).await;
    let problems = unready.json()["problems"].to_string();
    assert!(
        problems.contains(&format!("checking exchange `{missing}`")) && problems.contains("NOT-FOUND"),
        "{problems}"
    );
    assert!(problems.contains("nowhere: not connected to amqp://guest:[redacted]@"), "{problems}");
    assert!(!problems.contains("rmq:"), "`rmq` itself is connected: {problems}");
    let lost = t.post("/lost", &text, "x").await;
    assert_eq!(lost.status, 503, "{}", lost.text());
    assert_eq!(lost.json()["error"], "target_unavailable");
    assert!(lost.text().contains("nowhere is unavailable") && lost.text().contains("NOT-FOUND"), "{}", lost.text());

    let packets = t.packets();
    let outcomes: Vec<_> = packets.iter().filter_map(|p| p["outcome"].as_str()).collect();
    assert!(outcomes.contains(&"target_error") && outcomes.contains(&"unavailable"), "{outcomes:?}");
    t.host.shutdown().await;
    delete(&channel, &exchange, &queue).await;
}

async fn publish(channel: &Channel, exchange: &str, key: &str, payload: &[u8], properties: BasicProperties) {
    let confirm = channel
        .basic_publish(short(exchange), short(key), BasicPublishOptions::default(), payload, properties)
        .await
        .expect("published");
    confirm.await.expect("sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_messages_reach_sse_clients_exactly_in_order_and_a_post_comes_back_through_the_broker() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let exchange = unique("mh-test-x");
    channel
        .exchange_declare(
            short(&exchange),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let t = start_instance(&format!(
        r#"
        [entrypoints.events]
        type = "sse"
        path = "/events"

        [entrypoints.poll]
        type = "http_get"
        path = "/poll"

        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "sensors.9"

        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        exchange = "{exchange}"
        bind_exchange = "{exchange}"
        binding_key = "sensors.#"

        [[routes]]
        source = "rmq"
        target = "events"

        [[routes]]
        source = "rmq"
        target = "poll"

        [[routes]]
        source = "ingest"
        target = "rmq"
        "#,
        url = broker_url()
    ))
    .await;
    let ready = t.await_ready(200, Duration::from_secs(10)).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let mut sse = t.sse("/events", &[]).await.expect("an SSE stream");
    let mut table = FieldTable::default();
    table.insert(short("x-site"), AMQPValue::LongString(LongString::from("north")));
    let payloads = ["temp=21.5 °C", r#"{"temp":22,"unit":"°C"}"#, "", "last"];
    for (i, payload) in payloads.iter().enumerate() {
        let properties = BasicProperties::default()
            .with_message_id(short(&format!("m-{i}")))
            .with_content_type(short("text/plain"))
            .with_headers(table.clone());
        publish(&channel, &exchange, "sensors.1", payload.as_bytes(), properties).await;
    }
    publish(&channel, &exchange, "other.1", b"not bound", BasicProperties::default()).await;
    for payload in payloads {
        let data = next_data(&mut sse).await;
        assert_eq!(data, payload, "the exact payload, in order");
    }
    // Only after those: the broker orders messages per publishing channel, and the
    // host publishes on a channel of its own.
    let posted = t.post("/ingest", &[("content-type", "text/plain")], "from http").await;
    assert_eq!(posted.status, 202, "{}", posted.text());
    let posted_id = posted.json()["ids"][0].clone();
    assert_eq!(next_data(&mut sse).await, "from http", "a POST comes back through the broker");
    let packets: Vec<_> = t.packets().into_iter().filter(|p| p["route"] == "rmq->events").collect();
    assert_eq!(packets.len(), 5, "one line per bound message (the unbound key never arrives): {packets:?}");
    assert!(packets.iter().all(|p| p["outcome"] == "delivered"), "{packets:?}");
    for (i, p) in packets.iter().take(4).enumerate() {
        assert_eq!(p["event_id"], format!("m-{i}"), "the message id is the event id");
        assert_eq!(p["destination"], "sensors.1", "the routing key is the destination");
    }
    // HTTP GET shows what the events carried: properties and the headers table.
    let polled = t.get("/poll?cursor=0", &[]).await.json();
    let first = &polled["events"][0];
    assert_eq!(
        (&first["id"], &first["topic"], &first["content_type"]),
        (&serde_json::json!("m-0"), &serde_json::json!("sensors.1"), &serde_json::json!("text/plain")),
        "{first}"
    );
    assert_eq!(first["headers"]["x-site"], "north", "the headers table became event headers: {first}");
    assert_eq!(first["headers"]["rabbitmq-exchange"], exchange.as_str(), "{first}");
    assert_eq!((&packets[4]["event_id"], &packets[4]["destination"]), (&posted_id, &serde_json::json!("sensors.9")));
    t.host.shutdown().await;
    let _ = channel.exchange_delete(short(&exchange), ExchangeDeleteOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_queue_is_acked_only_after_delivery_and_a_refused_message_is_dead_lettered() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let dead = unique("mh-test-dlx");
    channel
        .exchange_declare(short(&dead), ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .expect("dead-letter exchange");
    let dead_letters = unique("mh-test-dlq");
    channel
        .queue_declare(short(&dead_letters), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("dlq");
    channel
        .queue_bind(short(&dead_letters), short(&dead), short(""), QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("dlq binding");
    let queue = unique("mh-test-shared");
    let mut arguments = FieldTable::default();
    arguments.insert(short("x-dead-letter-exchange"), AMQPValue::LongString(LongString::from(dead.as_str())));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(short(&queue), durable, arguments).await.expect("shared queue");
    // Waiting before the host starts: a shared queue keeps messages for it.
    publish(&channel, "", &queue, b"first", BasicProperties::default().with_message_id(short("s-1"))).await;
    publish(&channel, "", &queue, &[0xff, 0xfe], BasicProperties::default().with_message_id(short("poison"))).await;
    publish(&channel, "", &queue, b"second", BasicProperties::default().with_message_id(short("s-2"))).await;

    let t = start_instance(&format!(
        r#"
        [entrypoints.events]
        type = "sse"
        path = "/events"

        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        consumer = "shared"
        queue = "{queue}"

        [[routes]]
        source = "rmq"
        target = "events"
        "#,
        url = broker_url()
    ))
    .await;
    // No client is connected: the hub's ring accepting an event is its delivery.
    let packets = t.await_packets(3).await;
    let mut outcomes: Vec<_> = packets.iter().map(|p| (p["event_id"].as_str(), p["outcome"].as_str())).collect();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        [(Some("poison"), Some("adapter_error")), (Some("s-1"), Some("delivered")), (Some("s-2"), Some("delivered"))],
        "the SSE adapter refuses a payload that is not UTF-8"
    );
    // Settled: nothing waits or is requeued in the shared queue, and the refused
    // message went to the dead-letter queue exactly once.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready(&channel, &dead_letters).await < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.host.shutdown().await;
    assert_eq!(ready(&channel, &queue).await, 0, "the delivered messages were acked, so closing requeued nothing");
    let dead_lettered = take(&channel, &dead_letters, 2, Duration::from_millis(500)).await;
    assert_eq!(dead_lettered.len(), 1);
    assert_eq!(dead_lettered[0].data, [0xff, 0xfe]);
    assert_eq!(property(dead_lettered[0].properties.message_id()), Some("poison"));
    let _ = channel.queue_delete(short(&queue), QueueDeleteOptions::default()).await;
    delete(&channel, &dead, &dead_letters).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_or_a_failed_tls_handshake_leave_the_host_up_but_unready_naming_the_endpoint() {
    let _broker = BROKER.read().await;
    let uri = parse_url(&broker_url()).expect("valid");
    let wrong = format!(
        "amqp://{}:not-the-password@{}:{}/%2f",
        uri.authority.userinfo.username, uri.authority.host, uri.authority.port
    );
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "q"

        [endpoints.orders-broker]
        type = "rabbitmq"
        url = "{wrong}"

        # TLS against the plain-text port: the handshake fails, and says so.
        [endpoints.tls-broker]
        type = "rabbitmq"
        url = "{tls}"

        [[routes]]
        source = "ingest"
        target = "orders-broker"
        "#,
        tls = wrong.replacen("amqp://", "amqps://", 1)
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let problems = loop {
        let reply = t.admin("/readyz").await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        let problems = reply.json()["problems"].to_string();
        if (problems.contains("ACCESS") && problems.contains("tls-broker: not connected")) || Instant::now() > deadline
        {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(problems.contains("orders-broker: not connected to amqp://"), "{problems}");
    assert!(problems.contains("ACCESS_REFUSED") || problems.contains("ACCESS-REFUSED"), "{problems}");
    assert!(!problems.contains("not-the-password"), "the password is redacted: {problems}");
    assert!(problems.contains("tls-broker: not connected to amqps://guest:[redacted]@"), "{problems}");
    assert_eq!(t.admin("/healthz").await.status, 200, "the host runs");
    let reply = t.post("/ingest", &[("content-type", "text/plain")], "x").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(!reply.text().contains("not-the-password"), "{}", reply.text());
    t.host.shutdown().await;
}

/// Runs `scripts/brokers.sh <command> rabbitmq`, panicking with its output on failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_fails_posts_fast_then_resumes_without_losing_confirmed_ones() {
    let _broker = BROKER.write().await;
    let (connection, channel) = broker().await;
    let (exchange, queue) = exchange_and_queue(&channel, true, "#").await;
    drop(connection);
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "orders"

        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        exchange = "{exchange}"

        [[routes]]
        source = "ingest"
        target = "rmq"
        "#,
        url = broker_url()
    ))
    .await;
    let ready = t.await_ready(200, Duration::from_secs(10)).await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    let confirmed = Restart {
        broker: "rabbitmq",
        component: "rmq",
        recovery: Duration::from_secs(15),
        unavailable_within: Duration::from_secs(2),
        timed_out_within: Duration::from_secs(2),
        flaps: false,
    }
    .run(t)
    .await;

    // Every POST answered 202 is in the durable queue, in order.
    let (_connection, channel) = broker().await;
    let got = drain(&channel, &queue).await;
    let ids: Vec<&str> = got.iter().filter_map(|m| property(m.properties.message_id())).collect();
    assert_arrived_in_order(&confirmed, &ids, "the queue");
    delete(&channel, &exchange, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_routes_out_publishes_but_does_not_consume() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let queue = unique("mh-test-shared");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(short(&queue), durable, FieldTable::default()).await.expect("queue");
    // No route takes the endpoint's events back out: it does not consume at all.
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "{queue}"

        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        consumer = "shared"
        queue = "{queue}"

        [[routes]]
        source = "ingest"
        target = "rmq"
        "#,
        url = broker_url()
    ))
    .await;
    let ready_reply = t.await_ready(200, Duration::from_secs(10)).await;
    assert_eq!(ready_reply.status, 200, "{}", ready_reply.text());
    let reply = t.post("/ingest", &[("content-type", "text/plain")], "kept for later").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ready(&channel, &queue).await, 1, "published to the default exchange by queue name, and not consumed");
    let mut consumer = channel
        .basic_consume(
            short(&queue),
            short("test"),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let message = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("in time")
        .expect("one")
        .expect("ok");
    assert_eq!(message.data, b"kept for later");
    t.host.shutdown().await;
    let _ = channel.queue_delete(short(&queue), QueueDeleteOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_its_target_does_not_accept_is_requeued_never_acked() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let queue = unique("mh-test-shared");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(short(&queue), durable, FieldTable::default()).await.expect("queue");
    publish(&channel, "", &queue, b"undeliverable", BasicProperties::default().with_message_id(short("u-1"))).await;
    // An HTTP POST entrypoint serves no events, so it refuses every delivery.
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"

        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        consumer = "shared"
        queue = "{queue}"

        [[routes]]
        source = "rmq"
        target = "ingest"
        "#,
        url = broker_url()
    ))
    .await;
    let packets = t.await_packets(2).await;
    assert!(packets.len() >= 2, "the message came back after it failed: {packets:?}");
    assert!(packets.iter().all(|p| p["event_id"] == "u-1" && p["outcome"] == "target_error"), "{packets:?}");
    assert!(packets.len() < 20, "requeueing pauses instead of spinning: {} attempts", packets.len());
    t.host.shutdown().await;
    let left = take(&channel, &queue, 1, Duration::from_secs(2)).await;
    assert_eq!(left.len(), 1, "never acked, so still in the queue");
    assert_eq!(left[0].data, b"undeliverable");
    assert!(left[0].redelivered);
    let _ = channel.queue_delete(short(&queue), QueueDeleteOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_host_mid_stream_loses_no_message() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let queue = unique("mh-test-shared");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(short(&queue), durable, FieldTable::default()).await.expect("queue");
    const TOTAL: usize = 2000;
    for i in 0..TOTAL {
        let properties = BasicProperties::default().with_message_id(short(&format!("n-{i}")));
        let confirm = channel
            .basic_publish(short(""), short(&queue), BasicPublishOptions::default(), b"x", properties)
            .await
            .expect("published");
        drop(confirm);
    }
    let t = start_instance(&format!(
        r#"
        [entrypoints.events]
        type = "sse"
        path = "/events"

        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        consumer = "shared"
        queue = "{queue}"
        prefetch = 1
        max_batch = 1

        [[routes]]
        source = "rmq"
        target = "events"
        "#,
        url = broker_url()
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.packets().len() < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let TestHost { host, packets, dir: _dir } = t;
    host.shutdown().await;
    let packets = String::from_utf8(packets.lock().expect("not poisoned").clone()).expect("UTF-8");
    let delivered: std::collections::HashSet<String> = packets
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .filter(|p| p["outcome"] == "delivered")
        .filter_map(|p| p["event_id"].as_str().map(String::from))
        .collect();
    let left = drain(&channel, &queue).await;
    let left: std::collections::HashSet<String> =
        left.iter().filter_map(|m| property(m.properties.message_id()).map(String::from)).collect();
    eprintln!("stopped mid-stream: {} delivered, {} left in the queue", delivered.len(), left.len());
    assert!(delivered.len() < TOTAL, "the host stopped mid-stream");
    for i in 0..TOTAL {
        let id = format!("n-{i}");
        assert!(delivered.contains(&id) || left.contains(&id), "{id} was neither delivered nor left in the queue");
    }
    let _ = channel.queue_delete(short(&queue), QueueDeleteOptions::default()).await;
}

/// The ids of the events `packets` show delivered to `target`.
fn delivered_ids(packets: &[serde_json::Value], target: &str) -> Vec<String> {
    packets
        .iter()
        .filter(|p| p["outcome"] == "delivered" && p["target"] == target)
        .map(|p| p["event_id"].as_str().expect("an event id").to_owned())
        .collect()
}

/// A target adapter's call that fails as a whole (here it runs past its deadline; a
/// trap is the same) says nothing against the message: it is requeued and delivered
/// again, never rejected, which without a dead-letter exchange would drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_target_adapter_call_fails_is_requeued_not_rejected() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let queue = unique("mh-test-trap");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(short(&queue), durable, FieldTable::default()).await.expect("queue");
    let properties = BasicProperties::default().with_message_id(short("trap")).with_delivery_mode(2);
    publish(&channel, "", &queue, b"slow", properties).await;
    let t = start_instance(&format!(
        r#"
        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        consumer = "shared"
        queue = "{queue}"

        # Each event takes the adapter a second, ten times its call deadline.
        [entrypoints.slow]
        type = "websocket"
        path = "/slow"
        adapter = "{adapter}"
        adapter_settings = {{ pause_ms = "1000" }}

        [[routes]]
        source = "rmq"
        target = "slow"
        "#,
        url = broker_url(),
        adapter = env!("MEDIATION_PACE_ADAPTER"),
    ))
    .await;
    // Taken, failed, requeued and taken again: two failed lines for the one message.
    let packets = t.await_packets(2).await;
    let outcomes: Vec<_> = packets.iter().map(|p| (p["target"].as_str(), p["outcome"].as_str())).collect();
    assert!(outcomes.len() >= 2, "the message came again: {packets:?}");
    assert!(outcomes.iter().all(|o| *o == (Some("slow"), Some("adapter_error"))), "{packets:?}");
    t.host.shutdown().await;
    let deadline = Instant::now() + support::WAIT;
    while queue_state(&channel, &queue).await != (0, 1) {
        assert!(
            Instant::now() < deadline,
            "the message is back in the queue: {:?}",
            queue_state(&channel, &queue).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = channel.queue_delete(short(&queue), QueueDeleteOptions::default()).await;
}

/// Consumers of `queue` and messages ready in it.
async fn queue_state(channel: &Channel, queue: &str) -> (u32, u32) {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let q = channel.queue_declare(short(queue), passive, FieldTable::default()).await.expect("queue exists");
    (q.consumer_count(), q.message_count())
}

/// Publishes `n` messages with ids `<prefix>-00000`… to the default exchange, routed to
/// `queue`, and returns once the broker confirmed every one: a test that then counts the
/// queue finds all of them there or beyond. (lapin queues message bodies behind later
/// methods, so without the confirms a `queue.declare` sent next can overtake them.)
async fn fill(channel: &Channel, queue: &str, prefix: &str, n: usize) -> Vec<String> {
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms on");
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    let mut confirms = Vec::with_capacity(n);
    for id in &ids {
        let properties = BasicProperties::default().with_message_id(short(id)).with_delivery_mode(2);
        confirms.push(
            channel
                .basic_publish(short(""), short(queue), BasicPublishOptions::default(), id.as_bytes(), properties)
                .await
                .expect("published"),
        );
    }
    for confirm in confirms {
        assert!(confirm.await.expect("a confirm").is_ack(), "the broker took every message");
    }
    ids
}

/// Backpressure: behind a hub slower than the broker, the endpoint takes no more than
/// `prefetch` messages it has not handed over, the queue keeps the rest, and every
/// message arrives once and in order when the hub catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_slow_client_hub_consuming_waits_and_the_queue_keeps_the_rest() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let queue = unique("mh-test-slow");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(short(&queue), durable, FieldTable::default()).await.expect("queue");
    let (total, prefetch) = (1500, 10);
    let t = start_instance(&format!(
        r#"
        {slow}

        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        consumer = "shared"
        queue = "{queue}"
        prefetch = {prefetch}

        [[routes]]
        source = "rmq"
        target = "slow"
        "#,
        slow = support::slow_hub(2, total),
        url = broker_url()
    ))
    .await;
    let received = support::Received::spawn(t.ws("/slow").await, total);
    let ids = fill(&channel, &queue, "bp", total).await;

    received.reached(total / 10).await;
    let (_, ready) = queue_state(&channel, &queue).await;
    // Read after the queue: messages only move from ready to handed over.
    let handed_over = delivered_ids(&t.packets(), "slow").len();
    let held = total - ready as usize - handed_over;
    assert!(ready > 0, "the queue was drained ahead of the hub ({handed_over} of {total} handed over)");
    assert!(held <= prefetch, "the host held {held} messages it had not handed over, more than prefetch {prefetch}");

    assert_eq!(received.all().await, ids, "every message once, in order");
    assert_eq!(queue_state(&channel, &queue).await, (1, 0), "all acked; the consumer stays");
    drop(t);
    let _ = channel.queue_delete(short(&queue), QueueDeleteOptions::default()).await;
}

/// SIGKILL mid-stream: the broker requeues what the host had not acked, the restarted
/// host delivers it, and every message the dead host acked had been handed over (its
/// `delivered` packet line is written before the ack). The first host's hub holds the
/// hand-over ([`support::hub_until_killed`]), so the kill finds the queue not yet drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_while_consuming_loses_nothing_it_acked_and_redelivers_the_rest() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let queue = unique("mh-test-kill");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(short(&queue), durable, FieldTable::default()).await.expect("queue");
    let total = 1_000;
    let ids = fill(&channel, &queue, "k", total).await;
    let prefetch = 20;
    let consume_into = |target: &str| {
        format!(
            r#"
            [endpoints.rmq]
            type = "rabbitmq"
            url = "{url}"
            consumer = "shared"
            queue = "{queue}"
            prefetch = {prefetch}

            [[routes]]
            source = "rmq"
            target = "{target}"
            "#,
            url = broker_url()
        )
    };
    let first =
        support::HostProcess::start("reload_poll_ms = 0", &(support::hub_until_killed(total) + &consume_into("slow")))
            .await;
    first.await_delivered(20).await;
    // Every line written before the kill, the pipe drained.
    let handed_over: std::collections::BTreeSet<String> = support::delivered(&first.kill()).into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let (consumers, ready) = queue_state(&channel, &queue).await;
        if consumers == 0 {
            break ready as usize;
        }
        assert!(Instant::now() < deadline, "the broker did not notice the dead connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(kept > 0 && kept < total, "killed mid-stream: {kept} of {total} messages were still in the queue");

    // The restarted host hands over at full speed.
    let events = format!("[entrypoints.events]\ntype = \"sse\"\npath = \"/events\"\nring = {{ messages = {total} }}\n");
    let second = support::HostProcess::start("reload_poll_ms = 0", &(events + &consume_into("events"))).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let redelivered = loop {
        let got = support::delivered(&second.packets());
        if got.len() >= kept {
            break got;
        }
        assert!(Instant::now() < deadline, "{} of {kept} redelivered; log:\n{}", got.len(), second.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(redelivered.len(), kept, "the restarted host got exactly what the broker kept");
    let redelivered: std::collections::BTreeSet<String> = redelivered.into_iter().collect();
    let missing: Vec<&String> =
        ids.iter().filter(|id| !handed_over.contains(*id) && !redelivered.contains(*id)).collect();
    assert!(missing.is_empty(), "acked but never handed over: {missing:?}");
    let twice = handed_over.intersection(&redelivered).count();
    assert!(twice <= prefetch, "{twice} duplicates: only messages handed over but not yet acked come again");
    drop(second);
    let _ = channel.queue_delete(short(&queue), QueueDeleteOptions::default()).await;
}

/// `broadcast`: every instance has its own queue on the exchange and gets every
/// message. `shared`: instances compete for one queue and each message reaches one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_both_get_broadcast_messages_and_split_a_shared_queue() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let exchange = unique("mh-test-fan");
    channel
        .exchange_declare(
            short(&exchange),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let shared = unique("mh-test-two");
    channel.queue_declare(short(&shared), QueueDeclareOptions::default(), FieldTable::default()).await.expect("queue");
    let config = format!(
        r#"
        [entrypoints.events]
        type = "sse"
        path = "/events"

        [endpoints.everyone]
        type = "rabbitmq"
        url = "{url}"
        bind_exchange = "{exchange}"

        [endpoints.someone]
        type = "rabbitmq"
        url = "{url}"
        consumer = "shared"
        queue = "{shared}"
        prefetch = 5

        [[routes]]
        source = "everyone"
        target = "events"

        [[routes]]
        source = "someone"
        target = "events"
        "#,
        url = broker_url()
    );
    let (a, b) = (start_instance(&config).await, start_instance(&config).await);
    for t in [&a, &b] {
        let ready = t.await_ready(200, Duration::from_secs(10)).await;
        assert_eq!(ready.status, 200, "{}", ready.text());
    }
    let n = 200;
    for i in 0..n {
        let id = format!("b-{i:03}");
        publish(&channel, &exchange, "", id.as_bytes(), BasicProperties::default().with_message_id(short(&id))).await;
    }
    let shared_ids = fill(&channel, &shared, "s", n).await;
    let ids_from = |t: &TestHost, source: &str| -> Vec<String> {
        t.packets()
            .iter()
            .filter(|p| p["outcome"] == "delivered" && p["source"] == source)
            .map(|p| p["event_id"].as_str().expect("an id").to_owned())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while (ids_from(&a, "everyone").len() < n
        || ids_from(&b, "everyone").len() < n
        || ids_from(&a, "someone").len() + ids_from(&b, "someone").len() < n)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let broadcast: Vec<String> = (0..n).map(|i| format!("b-{i:03}")).collect();
    assert_eq!(ids_from(&a, "everyone"), broadcast, "instance A got every broadcast message, in order");
    assert_eq!(ids_from(&b, "everyone"), broadcast, "instance B got every broadcast message, in order");
    let (mut from_a, from_b) = (ids_from(&a, "someone"), ids_from(&b, "someone"));
    assert!(from_a.iter().all(|id| !from_b.contains(id)), "no shared message reached both");
    from_a.extend(from_b);
    from_a.sort_unstable();
    assert_eq!(from_a, shared_ids, "every shared message reached one instance");
    a.host.shutdown().await;
    b.host.shutdown().await;
    let _ = channel.queue_delete(short(&shared), QueueDeleteOptions::default()).await;
    let _ = channel.exchange_delete(short(&exchange), ExchangeDeleteOptions::default()).await;
}

/// A WebSocket envelope client hears `ok` only once the broker confirmed; a record the
/// adapter refuses fails alone, and one over `max_message_bytes` is refused naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_acks_follow_broker_confirms_and_bad_records_fail_alone() {
    let _broker = BROKER.read().await;
    let (_connection, channel) = broker().await;
    let (exchange, queue) = exchange_and_queue(&channel, false, "#").await;
    let t = start_instance(&format!(
        r#"
        [entrypoints.ws]
        type = "websocket"
        path = "/ws"
        adapter_settings = {{ protocol = "envelope" }}

        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        destination = "big"

        [endpoints.rmq]
        type = "rabbitmq"
        url = "{url}"
        exchange = "{exchange}"
        max_message_bytes = 1024

        [[routes]]
        source = "ws"
        target = "rmq"

        [[routes]]
        source = "ingest"
        target = "rmq"
        "#,
        url = broker_url()
    ))
    .await;
    let ready = t.await_ready(200, Duration::from_secs(10)).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let mut ws = t.ws("/ws").await;
    let long_key = "k".repeat(300);
    let frames = [("w1", "orders.eu"), ("w2", long_key.as_str()), ("w3", "orders.us")];
    for (id, topic) in frames {
        let publish = serde_json::json!({"type": "publish", "topic": topic, "id": id, "data": {"id": id}, "ack": true});
        futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(publish.to_string()))
            .await
            .expect("sent");
    }
    let mut acks = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let ack = support::ws_json(&mut ws).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        acks.insert(ack["id"].as_str().expect("an id").to_owned(), ack);
    }
    assert_eq!(acks["w1"]["status"], "ok");
    assert_eq!(acks["w3"]["status"], "ok");
    assert_eq!(acks["w2"]["status"], "error");
    let error = acks["w2"]["error"].as_str().expect("an error message");
    assert!(error.contains("routing key") && error.contains("255"), "{error}");
    // The acks came after the confirms: both messages are already in the queue.
    let got = take(&channel, &queue, 3, Duration::from_millis(500)).await;
    let keys: Vec<&str> = got.iter().map(|d| d.routing_key.as_str()).collect();
    assert_eq!(keys, ["orders.eu", "orders.us"]);
    assert_eq!(got[0].data, br#"{"id":"w1"}"#);

    let reply = t.post("/ingest", &[("content-type", "text/plain")], "x".repeat(2000)).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.json()["error"], "too_large");
    let message = reply.json()["message"].as_str().expect("a message").to_owned();
    assert!(message.contains("max_message_bytes of 1024") && message.contains("rmq"), "{message}");
    assert_eq!(queue_state(&channel, &queue).await.1, 0, "the oversized record was refused before publishing");
    t.host.shutdown().await;
    delete(&channel, &exchange, &queue).await;
}
