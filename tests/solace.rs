//! The `solace` endpoint against the project's brokers as Solace's protocol peers:
//! ActiveMQ Artemis for AMQP 1.0 (`scripts/brokers.sh up artemis`, 127.0.0.1:5673,
//! `queue://`/`topic://` addresses) and Mosquitto for MQTT 5 (`scripts/brokers.sh up
//! mosquitto`, 127.0.0.1:1884 with a password). A broker that cannot
//! be reached fails the tests: they never skip.
//!
//! Every test uses its own topics, queues and endpoint names. The test that restarts
//! Mosquitto holds [`BROKER`] exclusively; the others share it.

mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use support::{BrokerBackUp, TestHost, broker_script, next_data, start_instance, unique, ws_json};
use tokio::sync::RwLock;
use tokio_tungstenite::tungstenite::Message;

/// Shared by tests that need the brokers up; held exclusively by the restart test.
static BROKER: RwLock<()> = RwLock::const_new(());

/// The Artemis AMQP service standing in for a Solace VPN's AMQP port.
const AMQP_SERVICE: &str = "127.0.0.1:5673";
/// Mosquitto's listener that requires a password, standing in for a Solace VPN's MQTT port.
const MQTT_AUTH_SERVICE: &str = "tcp://127.0.0.1:1884";
/// The test user of both brokers (docs/brokers.md).
const USER: (&str, &str) = ("mediation", "mediation-secret");

/// A Solace endpoint `name` over `transport` with `settings` (TOML lines).
fn solace(name: &str, transport: &str, host: &str, settings: &str) -> String {
    format!(
        "[endpoints.{name}]\ntype = \"solace\"\ntransport = \"{transport}\"\nhost = \"{host}\"\nvpn = \"default\"\n\
         username = \"{}\"\npassword = \"{}\"\n{settings}\n",
        USER.0, USER.1
    )
}

/// Waits until the host is ready, naming what is not when it never is.
async fn ready(t: &TestHost) {
    let reply = t.await_ready(200, Duration::from_secs(10)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Publishes `data` to `topic` through a WebSocket envelope client and waits for the
/// broker's confirmation (the ack frame).
async fn publish_acked(ws: &mut support::WebSocket, topic: &str, id: &str) {
    let frame = json!({"type": "publish", "topic": topic, "id": id, "data": {"id": id}, "ack": true});
    ws.send(Message::text(frame.to_string())).await.expect("sent");
    let ack = ws_json(ws).await;
    assert_eq!(ack, json!({"type": "ack", "id": id, "status": "ok"}), "publishing to `{topic}`");
}

/// The round trip through one Solace endpoint over AMQP: POST → `topic://orders/eu`
/// (the endpoint's `topic_out`) → its own subscription → SSE, bytes, headers and order
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_round_trip_through_a_topic_keeps_bytes_headers_and_order() {
    let _broker = BROKER.read().await;
    let topic = format!("orders/{}", unique("eu"));
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        adapter_settings = {{ forward_headers = "correlation-id,x-tenant" }}

        [entrypoints.events]
        type = "http_get"
        path = "/events"

        {endpoint}

        [[routes]]
        source = "ingest"
        target = "pubsub"

        [[routes]]
        source = "pubsub"
        target = "events"
        "#,
        endpoint =
            solace("pubsub", "amqp", AMQP_SERVICE, &format!("topic_out = \"{topic}\"\nsubscriptions = [\"{topic}\"]")),
    ))
    .await;
    ready(&t).await;
    for i in 0..5 {
        let key = format!("order-{i}");
        let body = format!("{{\"n\":{i},\"text\":\"grüße\"}}");
        let headers = [
            ("content-type", "application/json"),
            ("idempotency-key", key.as_str()),
            ("correlation-id", "c-1"),
            ("x-tenant", "acme"),
        ];
        let reply = t.post("/ingest", &headers, body).await;
        assert_eq!(reply.status, 202, "accepted by the broker before 2xx: {}", reply.text());
    }
    let got = poll(&t, 5).await;
    let ids: Vec<&str> = got.iter().map(|m| m["id"].as_str().expect("an id")).collect();
    assert_eq!(ids, ["order-0", "order-1", "order-2", "order-3", "order-4"], "in order: {got:#?}");
    let first = &got[0];
    assert_eq!(first["data"], json!({"n": 0, "text": "grüße"}));
    assert_eq!(first["topic"], topic.as_str(), "the address without `topic://`");
    assert_eq!(first["headers"]["correlation-id"], "c-1", "correlation id carried across");
    assert_eq!(first["headers"]["x-tenant"], "acme", "user properties carried across");
    assert_eq!(first["headers"]["solace-destination-kind"], "topic");
    t.host.shutdown().await;
}

/// What HTTP GET has for `/events`, once it holds `n` messages (or after the wait).
async fn poll(t: &TestHost, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = t.get("/events?limit=1000", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let messages = reply.json()["events"].as_array().cloned().unwrap_or_default();
        if messages.len() >= n || Instant::now() > deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Over MQTT, Solace wildcards are translated: `prices/*/eur` and `news/>` deliver what
/// they match on Solace, and only that (`news/>` does not match `news` itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_wildcard_subscriptions_deliver_what_solace_would_and_only_that() {
    let _broker = BROKER.read().await;
    let root = unique("solace");
    let subscriptions = format!("subscriptions = [\"{root}/prices/*/eur\", \"{root}/news/>\"]");
    let t = start_instance(&format!(
        r#"
        [entrypoints.ws]
        type = "websocket"
        path = "/ws"
        adapter_settings = {{ protocol = "envelope" }}

        [entrypoints.events]
        type = "sse"
        path = "/events"

        {endpoint}

        [[routes]]
        source = "ws"
        target = "pubsub"

        [[routes]]
        source = "pubsub"
        target = "events"
        "#,
        endpoint = solace("pubsub", "mqtt", MQTT_AUTH_SERVICE, &subscriptions),
    ))
    .await;
    ready(&t).await;
    let mut sse = t.sse("/events", &[]).await.expect("an SSE stream");
    let mut ws = t.ws("/ws").await;
    let published = [
        ("prices/fx/eur", true),
        ("prices/fx/usd", false),
        ("prices/fx/spot/eur", false),
        ("news", false),
        ("news/world", true),
        ("news/world/europe", true),
        ("newsletter/x", false),
    ];
    for (i, (topic, _)) in published.iter().enumerate() {
        publish_acked(&mut ws, &format!("{root}/{topic}"), &format!("m{i}")).await;
    }
    // A last message to a matching topic marks the end: everything before it that
    // matched has arrived by then.
    publish_acked(&mut ws, &format!("{root}/news/end"), "end").await;
    let mut arrived = Vec::new();
    loop {
        let data: serde_json::Value = serde_json::from_str(&next_data(&mut sse).await).expect("JSON data");
        if data["id"] == "end" {
            break;
        }
        arrived.push(data["id"].as_str().expect("an id").to_owned());
    }
    let expected: Vec<String> =
        published.iter().enumerate().filter(|(_, (_, matches))| *matches).map(|(i, _)| format!("m{i}")).collect();
    assert_eq!(arrived, expected);
    t.host.shutdown().await;
}

/// Guaranteed delivery over MQTT survives a broker restart: every POST answered 2xx
/// reaches the subscriber, POSTs during the outage are refused, and the flow resumes
/// without restarting the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guaranteed_delivery_survives_a_broker_restart_with_nothing_confirmed_lost() {
    let _broker = BROKER.write().await;
    let topic = format!("{}/orders", unique("solace"));
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"

        [entrypoints.events]
        type = "http_get"
        path = "/events"
        ring = {{ messages = 100000 }}

        {endpoint}

        [[routes]]
        source = "ingest"
        target = "pubsub"

        [[routes]]
        source = "pubsub"
        target = "events"
        "#,
        endpoint = solace(
            "pubsub",
            "mqtt",
            MQTT_AUTH_SERVICE,
            &format!("topic_out = \"{topic}\"\nsubscriptions = [\"{topic}\"]\ndelivery = \"guaranteed\"")
        ),
    ))
    .await;
    ready(&t).await;
    let guard = BrokerBackUp("mosquitto");
    let mut confirmed = Vec::new();
    let mut refused = 0;
    let send = async |i: usize, confirmed: &mut Vec<String>, refused: &mut usize| {
        let key = format!("g-{i:04}");
        let reply = t.post("/ingest", &[("content-type", "text/plain"), ("idempotency-key", &key)], key.clone()).await;
        match reply.status {
            202 => confirmed.push(key),
            503 | 504 => *refused += 1,
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    };
    for i in 0..20 {
        send(i, &mut confirmed, &mut refused).await;
    }
    tokio::task::spawn_blocking(|| broker_script("down", "mosquitto")).await.expect("down");
    let down = t.await_ready(503, Duration::from_secs(10)).await;
    assert_eq!(down.status, 503, "/readyz went false while the broker was down");
    assert!(down.text().contains("pubsub"), "{}", down.text());
    for i in 20..30 {
        send(i, &mut confirmed, &mut refused).await;
    }
    assert_eq!(refused, 10, "every POST during the outage was refused");
    tokio::task::spawn_blocking(|| broker_script("up", "mosquitto")).await.expect("up");
    drop(guard);
    ready(&t).await;
    for i in 30..50 {
        send(i, &mut confirmed, &mut refused).await;
    }
    assert_eq!(confirmed.len(), 40, "the flow resumed without restarting the host");
    let got = poll(&t, confirmed.len()).await;
    let mut ids: Vec<String> = got.iter().map(|m| m["id"].as_str().expect("an id").to_owned()).collect();
    ids.dedup();
    let missing: Vec<&String> = confirmed.iter().filter(|c| !ids.contains(c)).collect();
    assert!(missing.is_empty(), "confirmed but never delivered: {missing:?}");
    t.host.shutdown().await;
}

/// A wrong port (no VPN service there) or wrong credentials leave the host running but
/// unready, naming the endpoint and the VPN, over either transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_port_or_wrong_credentials_give_a_readiness_error_naming_the_endpoint_and_vpn() {
    let _broker = BROKER.read().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr");
    let t = start_instance(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"

        {no_service}
        {wrong_amqp}
        {wrong_mqtt}

        [[routes]]
        source = "ingest"
        target = "no-service"
        "#,
        no_service = solace("no-service", "amqp", &closed.to_string(), "topic_out = \"a/b\""),
        wrong_amqp = solace("wrong-amqp", "amqp", AMQP_SERVICE, "").replace(USER.1, "not-the-password"),
        wrong_mqtt = solace("wrong-mqtt", "mqtt", MQTT_AUTH_SERVICE, "").replace(USER.1, "not-the-password"),
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let reply = t.admin("/readyz").await;
        assert_eq!(reply.status, 503);
        let text = reply.text();
        let named = ["no-service: ", "wrong-amqp: ", "wrong-mqtt: "].iter().all(|n| text.contains(n));
        if (named && text.matches("not connected").count() == 3) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (endpoint, why) in
        [("no-service", closed.to_string()), ("wrong-amqp", String::from("5673")), ("wrong-mqtt", String::from("1884"))]
    {
        let line = text.lines().find(|l| l.contains(&format!("{endpoint}: "))).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("VPN `default`") && line.contains(&why), "{line}");
    }
    assert!(!text.contains("not-the-password"), "the password is never shown: {text}");
    let reply = t.post("/ingest", &[("content-type", "text/plain")], "x").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["error"], "target_unavailable");
    t.host.shutdown().await;
}
