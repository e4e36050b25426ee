//! The host end to end, in process: real HTTP clients against the real listeners,
//! real WebAssembly adapters, the packet log and `/metrics` as an operator reads them.

mod support;

use std::time::Duration;

use support::{TestHost, metric};

const QUICKSTART: &str = r#"
[entrypoints.ingest]
type = "http_post"
path = "/ingest"
destination = "chat"

[endpoints.chat]
type = "memory"

[[routes]]
source = "ingest"
target = "chat"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_answered_once_delivered_and_logged_once() {
    let t = TestHost::start(QUICKSTART).await;
    let reply = t.post("/ingest", &[("content-type", "application/json")], r#"{"text":"hi"}"#).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let ids = reply.json()["ids"].as_array().expect("ids").clone();
    assert_eq!(ids.len(), 1);

    let packets = t.packets();
    assert_eq!(packets.len(), 1, "one line per packet: {packets:?}");
    let p = &packets[0];
    assert_eq!(p["event_id"], ids[0]);
    assert_eq!(p["route"], "ingest->chat");
    assert_eq!(p["direction"], "upstream");
    assert_eq!(p["target"], "chat");
    assert_eq!(p["destination"], "chat");
    assert_eq!(p["bytes"], 13);
    assert_eq!(p["outcome"], "delivered");
    assert!(p.get("payload").is_none(), "never the payload by default");

    let metrics = t.admin("/metrics").await.text();
    assert_eq!(metric(&metrics, r#"mediation_events_total{route="ingest->chat",outcome="delivered"}"#), 1.0);
    assert_eq!(metric(&metrics, r#"mediation_delivery_latency_seconds_count{route="ingest->chat"}"#), 1.0);
    let ready = t.admin("/readyz").await;
    assert_eq!((ready.status, ready.json()["ready"].clone()), (200, serde_json::json!(true)));
    assert_eq!(t.admin("/healthz").await.text(), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_becomes_one_event_per_line_in_order_under_the_idempotency_key() {
    let t = TestHost::start(QUICKSTART).await;
    let body = "{\"n\":1}\n{\"n\":2}\n\n{\"n\":3}\n";
    let headers = [("content-type", "application/x-ndjson"), ("idempotency-key", "order-7")];
    let reply = t.post("/ingest", &headers, body).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json()["ids"], serde_json::json!(["order-7:1", "order-7:2", "order-7:4"]));
    let logged: Vec<_> = t.packets().iter().map(|p| p["event_id"].as_str().map(String::from)).collect();
    assert_eq!(logged, vec![Some("order-7:1".into()), Some("order-7:2".into()), Some("order-7:4".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_statuses_and_nothing_is_delivered() {
    let t = TestHost::start(&format!("{QUICKSTART}\n")).await;
    let json = [("content-type", "application/json")];

    let malformed = t.post("/ingest", &json, r#"{"text":"#).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"], "malformed");
    assert!(malformed.json()["message"].as_str().expect("message").contains("line 1 column 8"), "{}", malformed.text());

    let unsupported = t.post("/ingest", &[("content-type", "application/xml")], "<a/>").await;
    assert_eq!(unsupported.status, 415);
    assert!(unsupported.text().contains("application/xml"), "{}", unsupported.text());

    // The host answers 413 from the declared length without reading the body, so the
    // request goes over a raw socket: a client still writing a megabyte could see
    // its write fail before it reads the answer.
    let mut raw = tokio::net::TcpStream::connect(t.listen()).await.expect("connect");
    let head = "POST /ingest HTTP/1.1\r\nhost: h\r\ncontent-type: text/plain\r\ncontent-length: 1048577\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut answer))
        .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("1048576-byte limit"), "{answer}");

    // A body that declares no length is cut at the limit while it streams, with the same answer.
    let big = vec![b'x'; 1024 * 1024 + 1];
    let mut streamed = tokio::net::TcpStream::connect(t.listen()).await.expect("connect");
    let head = "POST /ingest HTTP/1.1\r\nhost: h\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut streamed, head.as_bytes()).await.expect("write");
    let chunk = format!("{:x}\r\n", big.len());
    let _ = tokio::io::AsyncWriteExt::write_all(&mut streamed, chunk.as_bytes()).await;
    let _ = tokio::io::AsyncWriteExt::write_all(&mut streamed, &big).await;
    let mut answer = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut streamed, &mut answer))
            .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 413"), "never anything but 413: {answer}");

    let key = "k".repeat(300);
    let bad_key = t.post("/ingest", &[("content-type", "text/plain"), ("idempotency-key", &key)], "x").await;
    assert_eq!(bad_key.status, 400);
    assert_eq!(bad_key.json()["error"], "bad_idempotency_key");

    let get = support::request(t.listen(), "GET", "/ingest", &[], bytes::Bytes::new()).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.headers["allow"], "POST");

    let missing = t.post("/nowhere", &json, "{}").await;
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("/ingest"), "names the paths that exist: {}", missing.text());

    assert!(t.packets().is_empty(), "nothing refused reached the topic");
    let ok = t.post("/ingest", &json, "{}").await;
    assert_eq!(ok.status, 202, "the host keeps serving");
}

/// The misbehaving adapter stalls a memory topic (`loop` runs into its deadline), so
/// the topic's queue fills and delivery waits; the wait reaches the clients as 503
/// with `Retry-After`. After the stall the host serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_reaches_the_client_and_a_looping_guest_is_cut_off() {
    let adapter = env!("MEDIATION_MISBEHAVE_ADAPTER");
    let t = TestHost::start(&format!(
        r#"
        [bus]
        shards = 1
        queue_capacity = 1
        publish_timeout_ms = 20

        [adapters]
        call_timeout_ms = 400

        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"

        [endpoints.slow]
        type = "memory"
        adapter = "{adapter}"
        queue_capacity = 1
        max_batch = 1

        [[routes]]
        source = "ingest"
        target = "slow"
        "#
    ))
    .await;
    let text = [("content-type", "text/plain")];
    let looping = {
        let addr = t.listen();
        tokio::spawn(async move {
            support::request(addr, "POST", "/ingest", &[("content-type", "text/plain")], "loop".into()).await
        })
    };
    // Let the looping event reach the adapter before the others queue behind it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut others = Vec::new();
    for i in 0..6 {
        let addr = t.listen();
        others.push(tokio::spawn(async move {
            support::request(addr, "POST", "/ingest", &[("content-type", "text/plain")], format!("ok {i}").into()).await
        }));
    }
    let mut busy = 0;
    for other in others {
        let reply = other.await.expect("request task");
        match reply.status {
            202 => {}
            503 => {
                assert_eq!(reply.json()["error"], "busy", "{}", reply.text());
                assert_eq!(reply.headers["retry-after"], "1");
                busy += 1;
            }
            status => panic!("unexpected {status}: {}", reply.text()),
        }
    }
    assert!(busy > 0, "a stalled target must push back on its senders");

    let looped = looping.await.expect("request task");
    assert_eq!(looped.status, 502, "{}", looped.text());
    assert!(looped.text().contains("ran past its 400 ms deadline"), "{}", looped.text());

    let after = t.post("/ingest", &text, "fine").await;
    assert_eq!(after.status, 202, "the host keeps serving: {}", after.text());
    let metrics = t.admin("/metrics").await.text();
    assert_eq!(metric(&metrics, r#"mediation_adapter_failures_total{adapter="slow",reason="timeout"}"#), 1.0);
    assert!(metric(&metrics, r#"mediation_events_total{route="ingest->slow",outcome="busy"}"#) >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_adapter_file_replaces_the_mapping() {
    let adapter = env!("MEDIATION_EXAMPLE_ADAPTER");
    let t = TestHost::start(&format!(
        r#"
        [packet_log]
        include_payload = true
        include_headers = true

        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"

        [endpoints.loud]
        type = "memory"
        adapter = "{adapter}"
        adapter_settings = {{ header = "x-volume", value = "11" }}

        [[routes]]
        source = "ingest"
        target = "loud"
        "#
    ))
    .await;
    let reply = t.post("/ingest", &[("content-type", "text/plain")], "hello, world").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let p = &t.packets()[0];
    assert_eq!(p["payload"], "HELLO, WORLD");
    assert_eq!(p["headers"]["x-volume"], "11");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_keeps_the_running_routes() {
    let t = TestHost::start(QUICKSTART).await;
    let path = t.config_path();
    let json = [("content-type", "application/json")];

    let broken = format!("{}{}", support::PORTS, QUICKSTART.replace("target = \"chat\"", "target = \"nowhere\""));
    std::fs::write(&path, broken).expect("write");
    mediation_host::reload::reload(&t.host, &path, "test");
    assert_eq!(t.post("/ingest", &json, "{}").await.status, 202, "the old route still delivers");

    let without_routes = format!("{}{}", support::PORTS, QUICKSTART.split("[[routes]]").next().expect("head"));
    std::fs::write(&path, without_routes).expect("write");
    mediation_host::reload::reload(&t.host, &path, "test");
    let unrouted = t.post("/ingest", &json, "{}").await;
    assert_eq!(unrouted.status, 503, "{}", unrouted.text());
    assert_eq!(unrouted.json()["error"], "no_route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_an_adapter_that_keeps_failing() {
    let adapter = env!("MEDIATION_MISBEHAVE_ADAPTER");
    let t = TestHost::start(&format!(
        r#"
        [adapters]
        failing_after = 2

        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"

        [endpoints.fragile]
        type = "memory"
        adapter = "{adapter}"

        [[routes]]
        source = "ingest"
        target = "fragile"
        "#
    ))
    .await;
    let text = [("content-type", "text/plain")];
    for _ in 0..2 {
        let reply = t.post("/ingest", &text, "panic").await;
        assert_eq!(reply.status, 502);
        assert!(reply.text().contains("asked to panic"), "the guest's panic message is reported: {}", reply.text());
    }
    let ready = t.admin("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["problems"], serde_json::json!(["fragile: adapter keeps failing"]));

    assert_eq!(t.post("/ingest", &text, "calm").await.status, 202);
    assert_eq!(t.admin("/readyz").await.status, 200, "a success clears the streak");
}
