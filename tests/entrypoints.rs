//! The entrypoints as their clients see them: real WebSocket, SSE and HTTP clients
//! (and a raw TCP socket for protocol abuse) against an in-process host wired like
//! the quickstart: POST and WebSocket publish to the memory topic `chat`, which SSE,
//! WebSocket and HTTP GET clients read. Every test asserts what arrived: the bytes,
//! headers, order, statuses and close codes.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{SseFrame, SseStream, TestHost, WebSocket, metric, next_data, within, ws_close, ws_json, ws_next};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The quickstart wiring, with extra lines for each entrypoint's table and more
/// TOML at the end.
#[derive(Default)]
struct Chat<'a> {
    /// Added to `[entrypoints.ingest]` (`http_post` on `/ingest`, destination `chat`).
    ingest: &'a str,
    /// Added to `[entrypoints.ws]` (`websocket` on `/ws`, destination `chat`).
    ws: &'a str,
    /// Added to `[entrypoints.events]` (`sse` on `/events`).
    events: &'a str,
    /// Added to `[entrypoints.poll]` (`http_get` on `/poll`).
    poll: &'a str,
    /// Appended after the routes.
    more: &'a str,
}

impl Chat<'_> {
    /// The configuration file (without `[host]`, which the test host adds).
    fn toml(&self) -> String {
        let Self { ingest, ws, events, poll, more } = self;
        format!(
            r#"
[entrypoints.ingest]
type = "http_post"
path = "/ingest"
destination = "chat"
{ingest}

[entrypoints.ws]
type = "websocket"
path = "/ws"
destination = "chat"
{ws}

[entrypoints.events]
type = "sse"
path = "/events"
{events}

[entrypoints.poll]
type = "http_get"
path = "/poll"
{poll}

[endpoints.chat]
type = "memory"

[[routes]]
source = "ingest"
target = "chat"

[[routes]]
source = "ws"
target = "chat"

[[routes]]
source = "chat"
target = "events"

[[routes]]
source = "chat"
target = "ws"

[[routes]]
source = "chat"
target = "poll"

{more}
"#
        )
    }

    /// A host running this configuration.
    async fn start(&self) -> TestHost {
        TestHost::start(&self.toml()).await
    }

    /// A host running this configuration whose adapter calls may take a minute: for a
    /// test about what follows a large decode or a flood, where a call that a loaded
    /// machine stretched past the default deadline would fail events the test counts.
    async fn start_patient(&self) -> TestHost {
        TestHost::start(&format!("[adapters]\ncall_timeout_ms = 60000\n{}", self.toml())).await
    }
}

/// The WebSocket entrypoint setting for the JSON envelope protocol.
const ENVELOPE: &str = r#"adapter_settings = { protocol = "envelope" }"#;

/// POSTs `body` to `/ingest` under the idempotency key `id` and expects it delivered.
async fn publish(t: &TestHost, content_type: &str, id: &str, body: &str) {
    let headers = [("content-type", content_type), ("idempotency-key", id)];
    let reply = t.post("/ingest", &headers, body.to_owned()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
}

/// Opens the SSE stream at `path` (with `headers`) and checks the stream's head and
/// its first frame, the `retry:` hint.
async fn sse(t: &TestHost, path: &str, headers: &[(&str, &str)]) -> SseStream {
    let mut stream =
        t.sse(path, headers).await.unwrap_or_else(|reply| panic!("{path}: {} {}", reply.status, reply.text()));
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["cache-control"], "no-cache");
    let hint = stream.next().await.expect("a first frame");
    assert!(hint.retry.is_some() && hint.data.is_empty(), "the stream opens with the retry hint: {hint:?}");
    stream
}

/// An event's `(id, data)` as an SSE client sees it.
fn id_data(frame: &SseFrame) -> (u64, String) {
    (sequence(frame), frame.joined())
}

/// An SSE event's id, which is its ring sequence. Sequences are not numbered from 1
/// (they do not repeat across restarts), so tests compare them with the first seen.
fn sequence(frame: &SseFrame) -> u64 {
    frame.id.as_deref().and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("an id: {frame:?}"))
}

// ---------------------------------------------------------------------------------
// Server-Sent Events

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_posted_events_with_sequence_ids_after_a_retry_hint() {
    let t = Chat {
        ingest: r#"adapter_settings = { forward_headers = "sse-event" }"#,
        events: "retry_ms = 1500",
        ..Chat::default()
    }
    .start()
    .await;
    let mut stream = t.sse("/events", &[]).await.expect("SSE opens");
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["cache-control"], "no-cache");
    assert_eq!(stream.next().await.expect("a frame").raw, "retry: 1500\n\n", "the reconnect hint comes first");

    publish(&t, "application/json", "a", r#"{"text":"hi"}"#).await;
    publish(&t, "text/plain", "b", "first line\nsecond line\r\nthird line\rfourth").await;
    publish(&t, "text/plain", "c", "ends with a break\n").await;
    let headers = [("content-type", "text/plain"), ("sse-event", "greeting")];
    assert_eq!(t.post("/ingest", &headers, "hello").await.status, 202);

    let first = stream.next().await.expect("event 1");
    let s = sequence(&first);
    assert_eq!(first.raw, format!("id: {s}\ndata: {{\"text\":\"hi\"}}\n\n"));
    let lines = stream.next().await.expect("event 2");
    let expected = format!("id: {}\ndata: first line\ndata: second line\ndata: third line\ndata: fourth\n\n", s + 1);
    assert_eq!(lines.raw, expected, "one data line per payload line, whatever the line break");
    assert_eq!(lines.joined(), "first line\nsecond line\nthird line\nfourth", "what EventSource hands the page");
    let trailing = stream.next().await.expect("event 3");
    assert_eq!(trailing.raw, format!("id: {}\ndata: ends with a break\ndata: \n\n", s + 2));
    assert_eq!(trailing.joined(), "ends with a break\n");
    let named = stream.next().await.expect("event 4");
    assert_eq!(named.raw, format!("id: {}\nevent: greeting\ndata: hello\n\n", s + 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_last_event_id_resumes_after_that_event_without_loss_or_duplicates() {
    let t = Chat::default().start().await;
    let mut first = sse(&t, "/events", &[]).await;
    for (id, body) in [("1", "one"), ("2", "two"), ("3", "three")] {
        publish(&t, "text/plain", id, body).await;
    }
    let one = first.next_event().await;
    let s = sequence(&one);
    assert_eq!(one.joined(), "one");
    drop(first);

    let mut resumed = sse(&t, "/events", &[("last-event-id", &s.to_string())]).await;
    assert_eq!(id_data(&resumed.next_event().await), (s + 1, "two".into()));
    assert_eq!(id_data(&resumed.next_event().await), (s + 2, "three".into()));
    publish(&t, "text/plain", "4", "four").await;
    assert_eq!(id_data(&resumed.next_event().await), (s + 3, "four".into()), "nothing repeated in between");

    // The same through the query, for clients that cannot set headers.
    let mut by_query = sse(&t, &format!("/events?last_event_id={}", s + 2), &[]).await;
    assert_eq!(id_data(&by_query.next_event().await), (s + 3, "four".into()));

    let bad = t.sse("/events", &[("last-event-id", "abc")]).await.expect_err("refused");
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.json(),
        json!({"error": "bad_cursor", "message": "Last-Event-ID must be a whole number, not `abc`"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_topic_filter_selects_events_by_destination() {
    let t = Chat {
        ws: ENVELOPE,
        more: r#"
[entrypoints.news]
type = "http_post"
path = "/news"
destination = "news/sport"

[[routes]]
source = "news"
target = "chat"
"#,
        ..Chat::default()
    }
    .start()
    .await;
    let mut everything = sse(&t, "/events", &[]).await;
    let mut news = sse(&t, "/events?topic=news/*", &[]).await;
    let mut chat = sse(&t, "/events?topic=chat", &[]).await;
    let mut ws = t.ws("/ws").await;
    let text = [("content-type", "text/plain")];

    assert_eq!(t.post("/ingest", &text, "c1").await.status, 202);
    assert_eq!(t.post("/news", &text, "n1").await.status, 202);
    let publish = json!({"type": "publish", "topic": "news/weather", "id": "w1", "data": "w1", "ack": true});
    ws.send(Message::text(publish.to_string())).await.expect("send");
    wait_for_ack(&mut ws, "w1").await;
    assert_eq!(t.post("/ingest", &text, "c2").await.status, 202);
    assert_eq!(t.post("/news", &text, "n2").await.status, 202);

    let mut all = Vec::new();
    for _ in 0..5 {
        all.push(everything.next_event().await.joined());
    }
    assert_eq!(all, ["c1", "n1", "w1", "c2", "n2"], "no filter: every topic");
    let mut matched = Vec::new();
    for _ in 0..3 {
        matched.push(news.next_event().await.joined());
    }
    assert_eq!(matched, ["n1", "w1", "n2"], "`news/*`: both news topics, no chat");
    let mut matched = Vec::new();
    for _ in 0..2 {
        matched.push(chat.next_event().await.joined());
    }
    assert_eq!(matched, ["c1", "c2"], "`chat`: only chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sends_heartbeat_comments_while_idle() {
    let t = Chat { events: "heartbeat_ms = 50", ..Chat::default() }.start().await;
    let mut stream = sse(&t, "/events", &[]).await;
    for _ in 0..3 {
        let frame = stream.next().await.expect("the stream stays open");
        assert_eq!(frame.raw, ":\n\n", "a comment line, which EventSource ignores");
    }
    publish(&t, "text/plain", "x", "after the quiet").await;
    assert_eq!(stream.next_event().await.joined(), "after the quiet", "and events still come");
}

// ---------------------------------------------------------------------------------
// WebSocket

/// Reads `socket` until the envelope acknowledgement of `id`, which must be `ok`;
/// other messages on the way are returned.
async fn wait_for_ack(socket: &mut WebSocket, id: &str) -> Vec<serde_json::Value> {
    let mut others = Vec::new();
    loop {
        let message = ws_json(socket).await;
        if message["type"] == "ack" && message["id"] == id {
            assert_eq!(message, json!({"type": "ack", "id": id, "status": "ok"}));
            return others;
        }
        others.push(message);
    }
}

/// Publishes an envelope message with an acknowledgement and waits for it.
async fn publish_acked(socket: &mut WebSocket, topic: &str, id: &str) -> Vec<serde_json::Value> {
    let message = json!({"type": "publish", "topic": topic, "id": id, "data": id, "ack": true});
    socket.send(Message::text(message.to_string())).await.expect("send");
    wait_for_ack(socket, id).await
}

/// Publishes with an acknowledgement from a client whose filter lets the event
/// back to it, and waits for both the acknowledgement and the event, which it returns.
async fn publish_and_see(socket: &mut WebSocket, topic: &str, id: &str) -> serde_json::Value {
    let mut seen = publish_acked(socket, topic, id).await;
    if seen.is_empty() {
        seen.push(ws_json(socket).await);
    }
    assert_eq!(seen.len(), 1, "only its own event: {seen:?}");
    let event = seen.remove(0);
    assert_eq!((&event["type"], &event["id"]), (&json!("message"), &json!(id)));
    event
}

/// The next `message` frame's id.
async fn next_message_id(socket: &mut WebSocket) -> String {
    let message = ws_json(socket).await;
    assert_eq!(message["type"], "message", "{message}");
    message["id"].as_str().expect("an id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_raw_frames_reach_other_clients_text_as_text_and_binary_as_binary() {
    let t = Chat { events: r#"adapter_settings = { binary = "base64" }"#, ..Chat::default() }.start().await;
    let mut alice = t.ws("/ws").await;
    let mut bob = t.ws("/ws").await;
    let mut stream = sse(&t, "/events", &[]).await;

    alice.send(Message::text("hello from alice")).await.expect("send");
    assert_eq!(ws_next(&mut bob).await, Some(Message::text("hello from alice")));
    let hello = stream.next_event().await;
    let s = sequence(&hello);
    assert_eq!(hello.raw, format!("id: {s}\ndata: hello from alice\n\n"));

    let bytes = vec![0_u8, 159, 146, 150, 255];
    alice.send(Message::binary(bytes.clone())).await.expect("send");
    assert_eq!(ws_next(&mut bob).await, Some(Message::binary(bytes.clone())), "binary stays binary");
    let base64 = stream.next_event().await;
    assert_eq!(base64.raw, format!("id: {}\ndata: AJ+Slv8=\n\n", s + 1), "SSE carries it base64-encoded");

    bob.send(Message::text("hi alice")).await.expect("send");
    assert_eq!(ws_next(&mut bob).await, Some(Message::text("hi alice")));
    // Alice, who published first, also receives every event of the topic, in order.
    assert_eq!(ws_next(&mut alice).await, Some(Message::text("hello from alice")));
    assert_eq!(ws_next(&mut alice).await, Some(Message::binary(bytes)));
    assert_eq!(ws_next(&mut alice).await, Some(Message::text("hi alice")));
    assert_eq!(id_data(&stream.next_event().await), (s + 2, "hi alice".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_envelope_acknowledges_publishes_and_follows_subscriptions() {
    let t = Chat { ws: ENVELOPE, ..Chat::default() }.start().await;
    let mut alice = t.ws("/ws").await;
    let publish = r#"{"type":"publish","topic":"chat","id":"m1","data":{"text":"hi"},"ack":true}"#;
    alice.send(Message::text(publish)).await.expect("send");
    // The acknowledgement and the event itself (Alice reads the topic too) race.
    let (mut ack, mut message) = (None, None);
    for _ in 0..2 {
        let text = match ws_next(&mut alice).await {
            Some(Message::Text(text)) => text.to_string(),
            other => panic!("expected text frames, got {other:?}"),
        };
        let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        if json["type"] == "ack" { ack = Some(json) } else { message = Some((json["seq"].as_u64(), text)) }
    }
    assert_eq!(ack, Some(json!({"type": "ack", "id": "m1", "status": "ok"})));
    let (seq, text) = message.expect("the event");
    let seq = seq.expect("a sequence");
    assert_eq!(
        text,
        format!(
            r#"{{"type":"message","seq":{seq},"id":"m1","topic":"chat","content_type":"application/json","data":{{"text":"hi"}}}}"#
        ),
        "the documented fields, in the documented order"
    );

    let mut bob = t.ws("/ws").await;
    for topic in ["news", "sport/#"] {
        let subscribe = json!({"type": "subscribe", "topic": topic});
        bob.send(Message::text(subscribe.to_string())).await.expect("send");
    }
    // Bob's frames are handled in order: once his own event to a subscribed topic is
    // back, his filter is in place.
    publish_and_see(&mut bob, "news", "b0").await;
    for (topic, id) in [("chat", "c1"), ("sport/tennis", "s1"), ("news", "n1")] {
        publish_acked(&mut alice, topic, id).await;
    }
    assert_eq!(next_message_id(&mut bob).await, "s1", "`sport/#` matched, `chat` did not");
    assert_eq!(next_message_id(&mut bob).await, "n1");

    bob.send(Message::text(json!({"type": "unsubscribe", "topic": "sport/#"}).to_string())).await.expect("send");
    publish_and_see(&mut bob, "news", "b1").await;
    for (topic, id) in [("sport/golf", "s2"), ("chat", "c2"), ("news", "n2")] {
        publish_acked(&mut alice, topic, id).await;
    }
    assert_eq!(next_message_id(&mut bob).await, "n2", "no sport after unsubscribing, still no chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_envelope_resume_replays_after_the_given_sequence() {
    let t = Chat { ws: ENVELOPE, ..Chat::default() }.start().await;
    let mut alice = t.ws("/ws").await;
    let mut seen = Vec::new();
    for id in ["p1", "p2", "p3"] {
        seen.extend(publish_acked(&mut alice, "chat", id).await);
    }
    while seen.len() < 3 {
        seen.push(ws_json(&mut alice).await);
    }
    let ids: Vec<_> = seen.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, [json!("p1"), json!("p2"), json!("p3")]);

    let mut carol = t.ws("/ws").await;
    let resume = json!({"type": "resume", "seq": seen[0]["seq"]});
    carol.send(Message::text(resume.to_string())).await.expect("send");
    assert_eq!(ws_json(&mut carol).await, seen[1], "the same frame, from the ring");
    assert_eq!(ws_json(&mut carol).await, seen[2]);
    publish_acked(&mut alice, "chat", "p4").await;
    assert_eq!(next_message_id(&mut carol).await, "p4", "then live events, nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_envelope_refusals_close_with_1007_and_the_adapter_message() {
    let t = Chat { ws: ENVELOPE, ..Chat::default() }.start().await;
    for (frame, reason) in [
        (Message::text("{not json"), "text frame is not JSON: key must be a string at line 1 column 2"),
        (
            Message::text(r#"{"type":"shout","data":1}"#),
            "unknown message type `shout` (expected publish, subscribe, unsubscribe, ack, resume)",
        ),
        (
            Message::text(r#"{"type":"publish","topc":"chat","data":1}"#),
            "unknown field `topc` in a `publish` message (expected type, topic, data, id, key, ack, headers, content_type)",
        ),
        (
            Message::binary(b"{}".to_vec()),
            "binary frames are not accepted with protocol `envelope`; send a JSON text frame",
        ),
    ] {
        let mut ws = t.ws("/ws").await;
        ws.send(frame.clone()).await.expect("send");
        let (code, got) = ws_close(&mut ws).await;
        assert_eq!(code, 1007, "{frame:?}: {got}");
        assert_eq!(got, reason, "{frame:?}: the reason is the adapter's message");
        assert_eq!(ws_next(&mut ws).await, None, "then the connection ends");
    }
    // The host keeps serving.
    let mut ws = t.ws("/ws").await;
    publish_acked(&mut ws, "chat", "fine").await;
}

/// Messages that arrive together are decoded together; a refused one among them still
/// closes the connection exactly there: those before it are published, those after
/// it are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_refusal_in_a_burst_publishes_what_came_before_and_nothing_after() {
    let t = Chat { ws: ENVELOPE, ..Chat::default() }.start().await;
    let mut stream = sse(&t, "/events", &[]).await;
    let mut ws = t.ws("/ws").await;
    let message =
        |id: &str| Message::text(json!({"type": "publish", "topic": "chat", "id": id, "data": id}).to_string());
    // Fed without flushing, then flushed at once: one write, read by the host together.
    for frame in [message("b1"), message("b2"), message("b3"), Message::text("{not json"), message("b5")] {
        ws.feed(frame).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    // The client is subscribed to `chat` too: its own events may come back before the close.
    let mut echoed = Vec::new();
    let (code, reason) = loop {
        match ws_next(&mut ws).await {
            Some(Message::Close(Some(frame))) => break (u16::from(frame.code), frame.reason.to_string()),
            Some(Message::Text(text)) => {
                let event: serde_json::Value = serde_json::from_str(&text).expect("a JSON frame");
                echoed.push(event["id"].as_str().expect("an id").to_owned());
            }
            other => panic!("expected its own events, then a close frame; got {other:?}"),
        }
    };
    assert_eq!((code, reason.as_str()), (1007, "text frame is not JSON: key must be a string at line 1 column 2"));
    let before = ["b1", "b2", "b3"].map(String::from);
    assert!(before.starts_with(&echoed), "only what came before the refusal came back: {echoed:?}");
    publish(&t, "text/plain", "after", "after the burst").await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(stream.next_event().await.joined());
    }
    assert_eq!(seen, ["b1", "b2", "b3", "after the burst"], "b5 came after the refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_message_over_the_limit_closes_with_1009() {
    let t = TestHost::start_with("max_message_bytes = 1024", &Chat::default().toml()).await;
    let mut ws = t.ws("/ws").await;
    let fits = "a".repeat(1024);
    ws.send(Message::text(fits.clone())).await.expect("send");
    assert_eq!(ws_next(&mut ws).await, Some(Message::text(fits)), "exactly the limit passes");
    ws.send(Message::text("a".repeat(1025))).await.expect("send");
    assert_eq!(ws_close(&mut ws).await, (1009, String::from("message larger than the 1024-byte limit")));
}

/// A client speaking the WebSocket framing by hand: the handshake, then one masked
/// text frame whose payload is not UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_text_frame_that_is_not_utf8_closes_with_1007() {
    let t = Chat::default().start().await;
    let mut tcp = TcpStream::connect(t.listen()).await.expect("connect");
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = within("the handshake answer", tcp.read_u8()).await.expect("a byte");
        head.push(byte);
    }
    let head = String::from_utf8(head).expect("an HTTP head").to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"), "RFC 6455's example: {head}");

    let payload = b"ok\xc3\x28";
    let mask = [0x37_u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | 4];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    tcp.write_all(&frame).await.expect("write");

    let mut close = [0_u8; 2];
    within("the close frame", tcp.read_exact(&mut close)).await.expect("read");
    assert_eq!(close[0], 0x88, "a final close frame");
    assert_eq!(close[1] & 0x80, 0, "servers do not mask");
    let mut body = vec![0_u8; usize::from(close[1] & 0x7f)];
    within("the close frame", tcp.read_exact(&mut body)).await.expect("read");
    assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1007);
    assert_eq!(std::str::from_utf8(&body[2..]), Ok("text message is not valid UTF-8"));
    let mut rest = Vec::new();
    let read = within("the server to close the socket", tcp.read_to_end(&mut rest)).await;
    assert!(read.is_err() || rest.is_empty(), "nothing after the close frame: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_refuses_origins_that_are_not_allowed() {
    let t = Chat { ws: r#"allowed_origins = ["https://app.example"]"#, ..Chat::default() }.start().await;
    match t.ws_with("/ws", &[("origin", "https://evil.example")]).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).expect("UTF-8");
            assert!(body.contains("origin `https://evil.example` is not in allowed_origins"), "{body}");
        }
        Err(e) => panic!("expected a 403 answer, got {e}"),
        Ok(_) => panic!("a foreign origin was let in"),
    }
    let mut allowed = t.ws_with("/ws", &[("origin", "https://app.example")]).await.expect("an allowed origin");
    let same = format!("http://{}", t.listen());
    let mut same_origin = t.ws_with("/ws", &[("origin", &same)]).await.expect("the page's own origin");
    allowed.send(Message::text("from the app")).await.expect("send");
    assert_eq!(ws_next(&mut same_origin).await, Some(Message::text("from the app")));
}

// ---------------------------------------------------------------------------------
// HTTP GET

/// Waits until the poll ring holds `count` events, long-polling as a client would,
/// and returns the first one's sequence.
async fn await_polled(t: &TestHost, count: usize) -> u64 {
    let (mut cursor, mut sequences) = (0, Vec::new());
    while sequences.len() < count {
        let reply = t.get(&format!("/poll?cursor={cursor}&wait_ms=10000"), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let page = reply.json();
        sequences.extend(page["events"].as_array().expect("events").iter().map(|e| e["seq"].as_u64().expect("seq")));
        cursor = page["next_cursor"].as_u64().expect("next_cursor");
    }
    sequences[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_pages_through_the_ring_with_next_cursor() {
    let t = Chat::default().start().await;
    for n in 1..=3 {
        publish(&t, "application/json", &format!("k{n}"), &format!(r#"{{"n":{n}}}"#)).await;
    }
    let s = await_polled(&t, 3).await;

    let all = t.get("/poll?cursor=0", &[]).await;
    assert_eq!(all.status, 200);
    assert_eq!(all.headers["content-type"], "application/json");
    assert_eq!(all.headers["cache-control"], "no-store");
    assert_eq!(all.headers["x-next-cursor"], (s + 3).to_string().as_str());
    let event = |i: u64| {
        format!(
            r#"{{"seq":{},"id":"k{i}","topic":"chat","content_type":"application/json","data":{{"n":{i}}}}}"#,
            s + i - 1
        )
    };
    let expected = format!(r#"{{"events":[{},{},{}],"next_cursor":{}}}"#, event(1), event(2), event(3), s + 3);
    assert_eq!(all.text(), expected, "the http-get adapter's objects, in order");

    let mut cursor = 0;
    let mut pages = Vec::new();
    loop {
        let page = t.get(&format!("/poll?cursor={cursor}&limit=2"), &[]).await.json();
        let events = page["events"].as_array().expect("events").clone();
        if events.is_empty() {
            assert_eq!(page["next_cursor"], cursor, "an empty page keeps the cursor");
            break;
        }
        pages.push(events.iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect::<Vec<_>>());
        cursor = page["next_cursor"].as_u64().expect("next_cursor");
    }
    assert_eq!(pages, [vec!["k1", "k2"], vec!["k3"]], "every event once, in order");
    assert_eq!(cursor, s + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_long_poll_answers_as_soon_as_an_event_arrives() {
    let t = Chat::default().start().await;
    let now = t.get("/poll?cursor=0", &[]).await.json();
    assert_eq!(now["events"], json!([]), "nothing yet");
    let head = now["next_cursor"].as_u64().expect("next_cursor");
    let empty = t.get(&format!("/poll?cursor={head}&wait_ms=50"), &[]).await;
    assert_eq!(empty.text(), format!(r#"{{"events":[],"next_cursor":{head}}}"#), "a poll that runs out answers empty");

    let addr = t.listen();
    let path = format!("/poll?cursor={head}&wait_ms=30000");
    let mut poll = tokio::spawn(async move { support::request(addr, "GET", &path, &[], bytes::Bytes::new()).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut poll).await.is_err(),
        "with nothing to answer, the poll waits"
    );
    publish(&t, "text/plain", "late", "at last").await;
    // `within` allows 10 s: the poll answered well before its 30 s ran out.
    let reply = within("the long poll", poll).await.expect("the poll task");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        format!(
            r#"{{"events":[{{"seq":{head},"id":"late","topic":"chat","content_type":"text/plain","data":"at last"}}],"next_cursor":{}}}"#,
            head + 1
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_negotiates_ndjson_and_text_and_refuses_what_it_cannot_write() {
    let t = Chat::default().start().await;
    publish(&t, "application/json", "j", r#"{"n":1}"#).await;
    publish(&t, "text/plain", "t", "plain words").await;
    let s = await_polled(&t, 2).await;

    let ndjson = t.get("/poll?cursor=0", &[("accept", "application/x-ndjson")]).await;
    assert_eq!(ndjson.status, 200);
    assert_eq!(ndjson.headers["content-type"], "application/x-ndjson");
    assert_eq!(ndjson.headers["x-next-cursor"], (s + 2).to_string().as_str());
    assert_eq!(
        ndjson.text(),
        format!(
            "{}\n{}\n",
            format_args!(r#"{{"seq":{s},"id":"j","topic":"chat","content_type":"application/json","data":{{"n":1}}}}"#),
            format_args!(
                r#"{{"seq":{},"id":"t","topic":"chat","content_type":"text/plain","data":"plain words"}}"#,
                s + 1
            ),
        )
    );

    let text = t.get("/poll?cursor=0", &[("accept", "text/html, text/plain;q=0.5")]).await;
    assert_eq!(text.status, 200);
    assert_eq!(text.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(text.text(), "{\"n\":1}\nplain words\n", "the payloads as posted, one per line");

    let png = t.get("/poll?cursor=0", &[("accept", "image/png")]).await;
    assert_eq!(png.status, 406);
    assert_eq!(png.json()["error"], "not_acceptable");

    let bad = t.get("/poll?cursor=abc", &[]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json(), json!({"error": "bad_query", "message": "`cursor` must be a whole number, not `abc`"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_cursor_older_than_the_ring_is_410_with_the_oldest_cursor() {
    let t = Chat { poll: "ring = { messages = 2 }", ..Chat::default() }.start().await;
    let s = t.get("/poll?cursor=0", &[]).await.json()["next_cursor"].as_u64().expect("the head");
    for n in 1..=5 {
        publish(&t, "text/plain", &format!("e{n}"), &format!("event {n}")).await;
    }
    // All five are in once three were evicted.
    t.await_metric(r#"mediation_ring_evictions_total{component="poll"}"#, 3.0).await;

    let gone = t.get(&format!("/poll?cursor={s}"), &[]).await;
    assert_eq!(gone.status, 410);
    assert_eq!(
        gone.json(),
        json!({
            "error": "cursor_expired",
            "message": format!("cursor {s} is older than the replay window: 3 events are gone"),
            "oldest_cursor": s + 3,
            "missed": 3,
        })
    );
    let rest = t.get(&format!("/poll?cursor={}", s + 3), &[("accept", "text/plain")]).await;
    assert_eq!(rest.text(), "event 4\nevent 5\n", "the oldest cursor is where the ring starts");
}

// ---------------------------------------------------------------------------------
// CORS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_answers_follow_allowed_origins() {
    let allowed = r#"allowed_origins = ["https://app.example"]"#;
    let t = Chat { ingest: allowed, poll: allowed, ..Chat::default() }.start().await;
    let addr = t.listen();
    let preflight = |origin: &'static str| {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, idempotency-key"),
        ];
        async move { support::request(addr, "OPTIONS", "/ingest", &headers, bytes::Bytes::new()).await }
    };

    let ok = preflight("https://app.example").await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.headers["access-control-allow-origin"], "https://app.example");
    assert_eq!(ok.headers["access-control-allow-methods"], "POST");
    assert_eq!(ok.headers["access-control-allow-headers"], "content-type, idempotency-key");
    assert_eq!(ok.headers["access-control-max-age"], "600");
    assert_eq!(ok.headers["vary"], "origin");

    let refused = preflight("https://evil.example").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "origin_not_allowed");
    assert!(refused.headers.get("access-control-allow-origin").is_none());

    let from_app = [("origin", "https://app.example"), ("content-type", "text/plain"), ("idempotency-key", "app")];
    let posted = t.post("/ingest", &from_app, "from the app").await;
    assert_eq!(posted.status, 202, "{}", posted.text());
    assert_eq!(posted.headers["access-control-allow-origin"], "https://app.example");
    assert_eq!(posted.headers["access-control-expose-headers"], "retry-after");

    let from_evil = [("origin", "https://evil.example"), ("content-type", "text/plain")];
    let refused = t.post("/ingest", &from_evil, "from elsewhere").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "origin_not_allowed");

    let polled = t.get("/poll?cursor=0&wait_ms=10000", &[("origin", "https://app.example")]).await;
    assert_eq!(polled.headers["access-control-allow-origin"], "https://app.example");
    let events = polled.json()["events"].clone();
    assert_eq!(events.as_array().map(Vec::len), Some(1), "only the allowed origin's event: {events}");
    assert_eq!(events[0]["id"], "app");
}

// ---------------------------------------------------------------------------------
// Slow consumers

/// Size of each event in the slow-consumer tests: a client that does not read
/// blocks only once the kernel's socket buffers (hundreds of KiB on loopback) are full.
const BIG: usize = 64 * 1024;

/// The most events a flood publishes before giving up (here 32 MiB).
const MAX_FLOOD: usize = 512;

/// Event `n` of a flood: its number, then padding to [`BIG`] bytes.
fn big(n: usize) -> String {
    let mut payload = format!("{n:06}:");
    payload.extend(std::iter::repeat_n('x', BIG - payload.len()));
    payload
}

/// The number of a flood event.
fn number(payload: &str) -> usize {
    assert_eq!(payload.len(), BIG, "a whole flood event");
    payload[..6].parse().expect("a flood event")
}

/// What a client received of a flood.
#[derive(Debug)]
enum Flood {
    /// Flood event `n`, with its ring sequence.
    Event { n: usize, seq: u64 },
    /// A gap notice.
    Gap { missed: u64, resume: u64 },
}

impl Flood {
    /// An envelope text frame: a flood event or a gap notice.
    fn from_ws(text: &str) -> Self {
        let json: serde_json::Value = serde_json::from_str(text).expect("an envelope frame");
        let head: String = text.chars().take(120).collect();
        let field = |name: &str| json[name].as_u64().unwrap_or_else(|| panic!("`{name}` in {head}"));
        match json["type"].as_str() {
            Some("message") => Self::Event { n: number(json["data"].as_str().expect("data")), seq: field("seq") },
            Some("gap") => Self::Gap { missed: field("missed"), resume: field("resume") },
            other => panic!("unexpected frame type {other:?}"),
        }
    }

    /// An SSE frame: a flood event or an `event: gap`.
    fn from_sse(frame: &SseFrame) -> Self {
        if frame.event.as_deref() == Some("gap") {
            let gap: serde_json::Value = serde_json::from_str(&frame.joined()).expect("a gap notice");
            let field = |name: &str| gap[name].as_u64().unwrap_or_else(|| panic!("`{name}` in {gap}"));
            return Self::Gap { missed: field("missed"), resume: field("resume") };
        }
        Self::Event { n: number(&frame.joined()), seq: sequence(frame) }
    }
}

/// Checks what a lagging client receives, as it comes: every flood event either
/// arrives, in order, or is counted by a gap notice, which says where the stream
/// continues.
#[derive(Debug, Default)]
struct Ledger {
    /// The flood event expected next.
    next: usize,
    /// The sequence of flood event 0, learnt from the first event received.
    base: Option<u64>,
    /// Where the last gap notice said the stream continues.
    resume: Option<u64>,
    /// Gap notices received.
    gaps: usize,
    /// The last sequence received.
    last_seq: Option<u64>,
}

impl Ledger {
    /// Checks the next thing the client received.
    fn record(&mut self, item: Flood) {
        match item {
            Flood::Event { n, seq } => {
                assert_eq!(n, self.next, "events arrive in order, and a skip is always announced");
                if let Some(resume) = self.resume.take() {
                    assert_eq!(seq, resume, "the stream continues where the gap notice said");
                }
                let base = *self.base.get_or_insert(seq - n as u64);
                assert_eq!(seq, base + n as u64, "one sequence per event");
                self.next += 1;
                self.last_seq = Some(seq);
            }
            Flood::Gap { missed, resume } => {
                assert!(missed > 0, "a gap notice counts what was missed");
                self.next += usize::try_from(missed).expect("a count");
                if let Some(base) = self.base {
                    assert_eq!(resume, base + self.next as u64, "missed and resume agree");
                }
                self.resume = Some(resume);
                self.gaps += 1;
            }
        }
    }
}

/// Publishes [`big`] events one at a time, each read by `reader` (an envelope
/// WebSocket client) before the next is posted, so that the reader never lags, until
/// the host counts a slow consumer on `component`. Returns how many were published.
async fn flood_until_slow(t: &TestHost, reader: &mut WebSocket, component: &str) -> usize {
    let sample = format!("mediation_slow_consumers_total{{component=\"{component}\"}}");
    let mut ledger = Ledger::default();
    for n in 0..MAX_FLOOD {
        publish(t, "text/plain", &format!("big-{n}"), &big(n)).await;
        match ws_next(reader).await {
            Some(Message::Text(text)) => ledger.record(Flood::from_ws(&text)),
            other => panic!("expected flood event {n}, got {other:?}"),
        }
        if n % 8 == 7 && metric(&t.admin("/metrics").await.text(), &sample) >= 1.0 {
            assert_eq!((ledger.next, ledger.gaps), (n + 1, 0), "the reader got every event");
            return n + 1;
        }
    }
    panic!("no slow consumer on {component} after {MAX_FLOOD} events of {BIG} bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_stops_reading_is_let_go_with_1013_while_a_reader_gets_everything() {
    let t = Chat { ws: &format!("{ENVELOPE}\nring = {{ messages = 4 }}"), ..Chat::default() }.start_patient().await;
    let mut stalled = t.ws("/ws").await;
    let mut reader = t.ws("/ws").await;
    let published = flood_until_slow(&t, &mut reader, "ws").await;

    // Reading again, it gets what was already on its way, in order, then the 1013
    // close, which waited behind those frames.
    let mut ledger = Ledger::default();
    let close = loop {
        match within("the stalled client's next message", stalled.next()).await {
            Some(Ok(Message::Text(text))) => match Flood::from_ws(&text) {
                event @ Flood::Event { .. } => ledger.record(event),
                gap => panic!("no gap notices under `disconnect`: {gap:?}"),
            },
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected flood events, then the close, got {other:?}"),
        }
    };
    println!("the stalled client received {} of {published} events, then {close:?}", ledger.next);
    assert!(ledger.next < published, "it fell behind");
    assert_eq!(u16::from(close.code), 1013, "{}", close.reason);
    let resume: u64 = close
        .reason
        .split_once("behind the replay window; resume from ")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("the reason says where to resume: {}", close.reason));
    assert!(ledger.last_seq.is_none_or(|last| resume > last), "past what it received: {}", close.reason);
    t.await_metric(r#"mediation_connections{component="ws"}"#, 1.0).await;
    let metrics = t.admin("/metrics").await.text();
    assert!(metric(&metrics, r#"mediation_slow_consumers_total{component="ws"}"#) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_stops_reading_is_ended_and_resumes_after_a_gap_notice() {
    let t = Chat { events: "ring = { messages = 4 }", ws: ENVELOPE, ..Chat::default() }.start_patient().await;
    let mut stalled = sse(&t, "/events", &[]).await;
    let mut reader = t.ws("/ws").await;
    let published = flood_until_slow(&t, &mut reader, "events").await;

    // Reading again, it gets what was already on its way, then a gap notice, and the
    // stream ends.
    let mut ledger = Ledger::default();
    let mut last_frame = None;
    while let Some(frame) = stalled.next().await {
        if frame.data.is_empty() {
            continue;
        }
        if let Flood::Event { .. } = Flood::from_sse(&frame) {
            ledger.record(Flood::from_sse(&frame));
        }
        last_frame = Some(frame);
    }
    assert!(ledger.next < published, "the stream ended once it fell behind");
    let last_frame = last_frame.expect("frames arrived");
    assert_eq!(last_frame.event.as_deref(), Some("gap"), "the stream ends with a gap notice: {last_frame:?}");
    let last = ledger.last_seq.expect("some events arrived before it stalled");

    // EventSource reconnects with the last id it saw: it is told what it missed.
    let mut resumed = sse(&t, "/events", &[("last-event-id", &last.to_string())]).await;
    let gap = resumed.next_event().await;
    assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
    ledger.record(Flood::from_sse(&gap));
    while ledger.next < published {
        ledger.record(Flood::from_sse(&resumed.next_event().await));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_tells_a_lagging_websocket_client_what_it_missed_and_keeps_it() {
    let ws = format!("{ENVELOPE}\nring = {{ messages = 4, slow_consumer = \"drop_oldest\" }}");
    let t = Chat { ws: &ws, ..Chat::default() }.start_patient().await;
    let mut stalled = t.ws("/ws").await;
    let mut reader = t.ws("/ws").await;
    let published = flood_until_slow(&t, &mut reader, "ws").await;
    publish(&t, "text/plain", "last", &big(published)).await;

    let mut ledger = Ledger::default();
    while ledger.next <= published {
        match ws_next(&mut stalled).await {
            Some(Message::Text(text)) => ledger.record(Flood::from_ws(&text)),
            other => panic!("expected flood events and gap notices, got {other:?}"),
        }
    }
    assert!(ledger.gaps >= 1, "it was told that it fell behind");
    assert_eq!(ledger.next, published + 1, "and it received the last event");
    let metrics = t.admin("/metrics").await.text();
    assert_eq!(metric(&metrics, r#"mediation_connections{component="ws"}"#), 2.0, "both clients are connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_tells_a_lagging_sse_client_what_it_missed_and_keeps_it() {
    let events = r#"ring = { messages = 4, slow_consumer = "drop_oldest" }"#;
    let t = Chat { events, ws: ENVELOPE, ..Chat::default() }.start_patient().await;
    let mut stalled = sse(&t, "/events", &[]).await;
    let mut reader = t.ws("/ws").await;
    let published = flood_until_slow(&t, &mut reader, "events").await;
    publish(&t, "text/plain", "last", &big(published)).await;

    let mut ledger = Ledger::default();
    while ledger.next <= published {
        ledger.record(Flood::from_sse(&stalled.next_event().await));
    }
    assert!(ledger.gaps >= 1, "it was told that it fell behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_before_the_ring_is_answered_with_a_gap_notice() {
    let t = Chat {
        ws: &format!("{ENVELOPE}\nring = {{ messages = 2, slow_consumer = \"drop_oldest\" }}"),
        events: "ring = { messages = 2 }",
        more: r#"
[entrypoints.strict]
type = "websocket"
path = "/strict"
adapter_settings = { protocol = "envelope" }
ring = { messages = 2 }

[[routes]]
source = "chat"
target = "strict"
"#,
        ..Chat::default()
    }
    .start()
    .await;
    // Each entrypoint numbers events in its own ring; the first event tells where.
    let mut observer = sse(&t, "/events", &[]).await;
    let mut strict_observer = t.ws("/strict").await;
    let mut alice = t.ws("/ws").await;
    let first = publish_and_see(&mut alice, "chat", "e1").await["seq"].as_u64().expect("seq");
    let ws_seq: Vec<u64> = (first..first + 5).collect();
    let first = sequence(&observer.next_event().await);
    let sse_seq: Vec<u64> = (first..first + 5).collect();
    let first = ws_json(&mut strict_observer).await["seq"].as_u64().expect("seq");
    let strict_seq: Vec<u64> = (first..first + 5).collect();
    // One at a time, so that Alice never falls out of her two-event ring.
    for (id, seq) in [("e2", ws_seq[1]), ("e3", ws_seq[2]), ("e4", ws_seq[3]), ("e5", ws_seq[4])] {
        assert_eq!(publish_and_see(&mut alice, "chat", id).await["seq"], seq);
    }
    for ring in ["events", "strict"] {
        t.await_metric(&format!("mediation_ring_evictions_total{{component=\"{ring}\"}}"), 3.0).await;
    }

    // SSE: the Last-Event-ID of e1; e2 and e3 are gone.
    let mut late = sse(&t, "/events", &[("last-event-id", &sse_seq[0].to_string())]).await;
    let gap = late.next_event().await;
    assert_eq!(gap.raw, format!("event: gap\ndata: {{\"missed\":2,\"resume\":{}}}\n\n", sse_seq[3]));
    assert_eq!(id_data(&late.next_event().await), (sse_seq[3], "e4".into()));
    assert_eq!(id_data(&late.next_event().await), (sse_seq[4], "e5".into()));

    // WebSocket, on an open connection: `resume` after e1.
    let mut bob = t.ws("/ws").await;
    bob.send(Message::text(json!({"type": "resume", "seq": ws_seq[0]}).to_string())).await.expect("send");
    assert_eq!(ws_json(&mut bob).await, json!({"type": "gap", "missed": 2, "resume": ws_seq[3]}));
    assert_eq!(next_message_id(&mut bob).await, "e4");
    assert_eq!(next_message_id(&mut bob).await, "e5");

    // WebSocket, at the handshake: `?cursor=` names the next event to read, e2.
    let mut carol = t.ws(&format!("/ws?cursor={}", ws_seq[1])).await;
    assert_eq!(ws_json(&mut carol).await, json!({"type": "gap", "missed": 2, "resume": ws_seq[3]}));
    assert_eq!(next_message_id(&mut carol).await, "e4");
    assert_eq!(next_message_id(&mut carol).await, "e5");

    // Under `disconnect` too, resuming before the ring is answered with the gap, then
    // the events: a resume is not a client falling behind.
    let mut dave = t.ws("/strict").await;
    dave.send(Message::text(json!({"type": "resume", "seq": strict_seq[0]}).to_string())).await.expect("send");
    assert_eq!(ws_json(&mut dave).await, json!({"type": "gap", "missed": 2, "resume": strict_seq[3]}));
    assert_eq!(next_message_id(&mut dave).await, "e4");
    assert_eq!(next_message_id(&mut dave).await, "e5");
    let mut again = t.ws(&format!("/strict?cursor={}", strict_seq[1])).await;
    assert_eq!(ws_json(&mut again).await, json!({"type": "gap", "missed": 2, "resume": strict_seq[3]}));
    assert_eq!(next_message_id(&mut again).await, "e4");
    assert_eq!(next_message_id(&mut again).await, "e5");

    match t.ws_with("/ws?cursor=abc", &[]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected 400 for a malformed cursor, got {:?}", other.map(|_| "a connection")),
    }
}

// ---------------------------------------------------------------------------------
// Connection abuse and leaks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_connection_is_cut_after_the_header_timeout_while_others_are_served() {
    let t = TestHost::start_with("header_read_timeout_ms = 300", &Chat::default().toml()).await;
    // A legitimate request that takes longer than the header timeout is not cut.
    let addr = t.listen();
    let long_poll = tokio::spawn(async move {
        support::request(addr, "GET", "/poll?cursor=0&wait_ms=1000", &[], bytes::Bytes::new()).await
    });

    let mut slow = TcpStream::connect(t.listen()).await.expect("connect");
    slow.write_all(b"GET /poll?cursor=0 HTTP/1.1\r\nHost: gate").await.expect("write");
    let served = t.get("/poll?cursor=0", &[]).await;
    assert_eq!(served.status, 200, "another connection is served meanwhile");
    assert_eq!(served.json()["events"], json!([]));

    // The server closes the connection without an answer (a reset is as good).
    let mut answer = Vec::new();
    let _ = within("the server to drop the slow connection", slow.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    let polled = within("the long poll", long_poll).await.expect("the poll task");
    assert_eq!((polled.status, polled.json()["events"].clone()), (200, json!([])), "it ran its full second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_websocket_connections_leave_nothing_behind() {
    const TASKS: usize = 4;
    const CYCLES: usize = 2_500;
    let t = Chat::default().start().await;
    let rss = |text: &str| metric(text, "process_resident_memory_bytes");
    let before = rss(&t.admin("/metrics").await.text());

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let url = format!("ws://{}/ws", t.listen());
        tasks.spawn(async move {
            for cycle in 0..CYCLES {
                let connect = tokio_tungstenite::connect_async(url.as_str());
                let (mut ws, _) = within("a handshake", connect).await.expect("handshake");
                if (task + cycle) % 2 == 0 {
                    // A polite client: the closing handshake.
                    within("a close", ws.close(None)).await.expect("close");
                    within("the server's close", async { while let Some(Ok(_)) = ws.next().await {} }).await;
                } else {
                    // An abrupt one: the socket just goes away.
                    drop(ws);
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a cycle task");
    }

    let total = (TASKS * CYCLES) as f64;
    t.await_metric(r#"mediation_connections{component="ws"}"#, 0.0).await;
    t.await_metric(r#"mediation_client_connects_total{component="ws"}"#, total).await;
    let metrics = t.await_metric(r#"mediation_client_disconnects_total{component="ws"}"#, total).await;
    let after = rss(&metrics);
    println!("resident memory: {before} bytes before, {after} bytes after {total} connections");
    assert!(after - before < 64.0 * 1024.0 * 1024.0, "resident memory grew from {before} to {after} bytes");

    let mut ws = t.ws("/ws").await;
    ws.send(Message::text("still here")).await.expect("send");
    assert_eq!(ws_next(&mut ws).await, Some(Message::text("still here")));
}

// ---------------------------------------------------------------------------------
// Hardening: defects found by probing the host from outside, one test each

/// `Chat` with the POST entrypoint copying `client-id` and `lang` request headers into
/// its events, as a gateway would for a request/reply service.
const FORWARD: &str = r#"adapter_settings = { forward_headers = "client-id,lang" }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_ndjson_post_is_delivered_whole_and_the_host_serves_at_once_after_it() {
    const LINES: usize = 100_000;
    let t = Chat::default().start_patient().await;
    let body: String = (0..LINES).map(|n| format!("{n}\n")).collect();
    let reply = t.post("/ingest", &[("content-type", "application/x-ndjson")], body).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let ids = reply.json()["ids"].as_array().expect("ids").len();
    assert_eq!(ids, LINES, "one event per line");
    let delivered = t.packets().iter().filter(|p| p["route"] == "ingest->chat" && p["outcome"] == "delivered").count();
    assert_eq!(delivered, LINES, "every line has its delivered packet line");

    // No wedge: the next request is served at once, and the host says it is ready.
    let next = t.post("/ingest", &[("content-type", "application/json")], "{}").await;
    assert_eq!(next.status, 202, "{}", next.text());
    assert_eq!(t.admin("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_events_partly_fail_says_exactly_which_were_delivered() {
    let adapter = env!("MEDIATION_MISBEHAVE_ADAPTER");
    let t = TestHost::start(&format!(
        r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"

        [endpoints.checked]
        type = "memory"
        adapter = "{adapter}"

        [[routes]]
        source = "ingest"
        target = "checked"
        "#
    ))
    .await;
    // The endpoint's adapter refuses the third line alone.
    let body = "\"one\"\n\"two\"\n\"refuse\"\n\"four\"\n";
    let reply = t.post("/ingest", &[("content-type", "application/x-ndjson")], body).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["error"], "adapter_error");
    let delivered: Vec<String> =
        serde_json::from_value(answer["delivered"].clone()).expect("the ids of the delivered events");
    assert_eq!(delivered.len(), 3, "{answer}");
    assert!(answer["message"].as_str().expect("a message").contains("3 of the 4 events were delivered"), "{answer}");

    let packets = t.packets();
    let ids = |outcome: &str| -> Vec<String> {
        packets
            .iter()
            .filter(|p| p["outcome"] == outcome)
            .map(|p| p["event_id"].as_str().expect("an id").to_owned())
            .collect()
    };
    assert_eq!(ids("delivered"), delivered, "the answer names exactly the events that were delivered, in order");
    assert_eq!(ids("adapter_error").len(), 1, "the refused one failed alone");
    assert!(!delivered.contains(&ids("adapter_error")[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_event_reaches_only_the_client_it_names_on_every_entrypoint() {
    let t = Chat { ingest: FORWARD, ..Chat::default() }.start().await;
    let alice = [("x-client-id", "alice")];
    let mut alice_sse = sse(&t, "/events", &alice).await;
    let mut bob_sse = sse(&t, "/events", &[("x-client-id", "bob")]).await;
    let mut anonymous_sse = sse(&t, "/events", &[]).await;
    let mut alice_ws = t.ws_with("/ws", &alice).await.expect("a WebSocket");
    let mut bob_ws = t.ws_with("/ws", &[("x-client-id", "bob")]).await.expect("a WebSocket");
    let start = t.get("/poll", &[]).await.json()["next_cursor"].as_u64().expect("a cursor");

    let text = [("content-type", "text/plain"), ("client-id", "alice")];
    assert_eq!(t.post("/ingest", &text, "for alice").await.status, 202);
    assert_eq!(t.post("/ingest", &[("content-type", "text/plain")], "for all").await.status, 202);

    assert_eq!(next_data(&mut alice_sse).await, "for alice");
    assert_eq!(next_data(&mut alice_sse).await, "for all");
    assert_eq!(ws_next(&mut alice_ws).await, Some(Message::text("for alice")));
    assert_eq!(ws_next(&mut alice_ws).await, Some(Message::text("for all")));
    // The others get the broadcast event first: the targeted one never came.
    assert_eq!(next_data(&mut bob_sse).await, "for all");
    assert_eq!(next_data(&mut anonymous_sse).await, "for all");
    assert_eq!(ws_next(&mut bob_ws).await, Some(Message::text("for all")));
    let t = &t;
    let poll = |client: &'static str| {
        let path = format!("/poll?cursor={start}");
        async move { t.get(&path, &[("x-client-id", client), ("accept", "text/plain")]).await.text() }
    };
    assert_eq!(poll("alice").await, "for alice\nfor all\n");
    assert_eq!(poll("bob").await, "for all\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_filters_select_events_by_their_headers() {
    let t = Chat { ingest: FORWARD, ..Chat::default() }.start().await;
    let mut english = sse(&t, "/events?header.lang=en", &[]).await;
    let mut french_ws = t.ws("/ws?header.lang=fr").await;
    for (lang, text) in [("fr", "bonjour"), ("en", "hello"), ("de", "hallo"), ("fr", "salut")] {
        let headers = [("content-type", "text/plain"), ("lang", lang)];
        assert_eq!(t.post("/ingest", &headers, text).await.status, 202);
    }
    assert_eq!(next_data(&mut english).await, "hello");
    assert_eq!(ws_next(&mut french_ws).await, Some(Message::text("bonjour")));
    assert_eq!(ws_next(&mut french_ws).await, Some(Message::text("salut")));
    let english_poll = t.get("/poll?cursor=0&header.lang=en", &[("accept", "text/plain")]).await;
    assert_eq!(english_poll.text(), "hello\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_queries_are_refused_with_400_naming_the_problem() {
    let t = Chat::default().start().await;
    for (query, expected) in [
        ("topic=", "must not be empty"),
        ("header.=x", "needs a header name"),
        ("topic=a%zz", "`%zz` in the query is not a percent escape"),
        ("topic=a/%23/b", "`#` must be a whole level, and the last one"),
        ("topic=a%2", "`%2` in the query is not a percent escape"),
    ] {
        for path in ["/poll", "/events"] {
            let reply = t.get(&format!("{path}?{query}"), &[]).await;
            assert_eq!(reply.status, 400, "{path}?{query}: {}", reply.text());
            assert_eq!(reply.json()["error"], "bad_query");
            assert!(reply.json()["message"].as_str().expect("a message").contains(expected), "{}", reply.text());
        }
        match t.ws_with(&format!("/ws?{query}"), &[]).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 400, "/ws?{query}"),
            other => panic!("/ws?{query}: expected 400, got {:?}", other.map(|_| "a connection")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_the_ring_did_not_issue_get_the_same_gap_on_every_entrypoint() {
    let t = Chat { ws: ENVELOPE, ..Chat::default() }.start().await;
    let mut observer = sse(&t, "/events", &[]).await;
    publish(&t, "text/plain", "e1", "one").await;
    let first = sequence(&observer.next_event().await);
    // Every ring numbers from the process's start, in microseconds: an id a day
    // earlier comes from an earlier run, one far ahead from nowhere.
    let earlier_run = first - 86_400_000_000;
    let ahead = first + 1_000_000_000;
    for cursor in [earlier_run, ahead] {
        // SSE: the gap, with what was missed unknown, then the oldest event held.
        let mut resumed = sse(&t, "/events", &[("last-event-id", &(cursor - 1).to_string())]).await;
        let gap = resumed.next_event().await;
        assert_eq!(gap.raw, format!("event: gap\ndata: {{\"missed\":null,\"resume\":{first}}}\n\n"));
        assert_eq!(id_data(&resumed.next_event().await), (first, "one".into()));

        // WebSocket, at the handshake and on an open connection: the same gap.
        let mut at_handshake = t.ws(&format!("/ws?cursor={cursor}")).await;
        assert_eq!(ws_json(&mut at_handshake).await, json!({"type": "gap", "missed": null, "resume": first}));
        assert_eq!(next_message_id(&mut at_handshake).await, "e1");
        let mut resuming = t.ws("/ws").await;
        let resume = json!({"type": "resume", "seq": cursor - 1}).to_string();
        resuming.send(Message::text(resume)).await.expect("send");
        assert_eq!(ws_json(&mut resuming).await, json!({"type": "gap", "missed": null, "resume": first}));
        assert_eq!(next_message_id(&mut resuming).await, "e1");

        // Polling: 410 with the same facts.
        let reply = t.get(&format!("/poll?cursor={cursor}"), &[]).await;
        assert_eq!(reply.status, 410, "{}", reply.text());
        assert_eq!(
            (reply.json()["missed"].clone(), reply.json()["oldest_cursor"].clone()),
            (json!(null), json!(first))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_refuses_an_adapter_that_cannot_decode_at_startup() {
    let toml = r#"
        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        adapter = "builtin:sse"
    "#;
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("{}{toml}", support::PORTS)).expect("config written");
    let config = mediation_host::host::Config::load(&path).expect("a valid file");
    let error = mediation_host::host::Host::start(config, mediation_host::packet_log::Sink::Discard)
        .await
        .expect_err("the host refuses to start");
    assert_eq!(
        error.to_string(),
        "adapter ingest (builtin:sse): does not map what a http_post entrypoint needs: it must decode request \
         bodies (upstream)"
    );
}

/// Sends `request` on a fresh connection and returns all the server wrote until it
/// closed the connection.
async fn raw(t: &TestHost, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(t.listen()).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = within("the server's answer", stream.read_to_end(&mut answer)).await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_are_held_to_http_and_to_the_gateways_limits() {
    let t = Chat::default().start().await;
    // A request head past Envoy's 60 KiB gets 431, one within it is served.
    let header = |kib: usize| format!("x-big: {}\r\n", "a".repeat(kib * 1024));
    let big = format!("GET /poll HTTP/1.1\r\nhost: gw\r\n{}connection: close\r\n\r\n", header(64));
    let answer = String::from_utf8_lossy(&raw(&t, big.as_bytes()).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    let fits = format!("GET /poll HTTP/1.1\r\nhost: gw\r\n{}connection: close\r\n\r\n", header(50));
    let answer = String::from_utf8_lossy(&raw(&t, fits.as_bytes()).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    // HTTP/1.1 without Host is a bad request (RFC 9112); HTTP/1.0 needs none.
    let answer =
        String::from_utf8_lossy(&raw(&t, b"GET /poll HTTP/1.1\r\nconnection: close\r\n\r\n").await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400 ") && answer.contains("\"missing_host\""), "{answer}");
    let answer = String::from_utf8_lossy(&raw(&t, b"GET /poll HTTP/1.0\r\n\r\n").await).into_owned();
    assert!(answer.starts_with("HTTP/1.0 200 ") || answer.starts_with("HTTP/1.1 200 "), "{answer}");

    // HTTP/2 with prior knowledge: the server's SETTINGS, then GOAWAY with
    // HTTP_1_1_REQUIRED (0xd) and a reason, then the end: no reset, no hang.
    let answer = raw(&t, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert_eq!(&answer[..9], &[0, 0, 0, 0x4, 0, 0, 0, 0, 0], "an empty SETTINGS frame: {answer:?}");
    let goaway = &answer[9..];
    assert_eq!(goaway[3], 0x7, "a GOAWAY frame: {answer:?}");
    assert_eq!(&goaway[13..17], &[0, 0, 0, 0xd], "HTTP_1_1_REQUIRED");
    assert_eq!(String::from_utf8_lossy(&goaway[17..]), "this server speaks HTTP/1.1 only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_adapter_runs_past_its_deadline_gets_502_on_a_cold_and_a_warm_instance() {
    let adapter = env!("MEDIATION_PACE_ADAPTER");
    let t = TestHost::start(&format!(
        r#"
        [adapters]
        call_timeout_ms = 50
        pool_size = 1

        [entrypoints.ingest]
        type = "http_post"
        path = "/ingest"
        adapter = "{adapter}"
        adapter_settings = {{ pause_ms = "1000" }}
        "#
    ))
    .await;
    // The first call finds the instance the host loaded; the one after it a new one,
    // since an instance stopped at its deadline is not reused.
    for attempt in ["warm", "cold"] {
        let reply = t.post("/ingest", &[("content-type", "text/plain")], "slow").await;
        assert_eq!(reply.status, 502, "{attempt}: {}", reply.text());
        assert_eq!(reply.json()["error"], "adapter_error", "{attempt}");
        let message = reply.json()["message"].as_str().expect("a message").to_owned();
        assert_eq!(message, "adapter ingest ran past its 50 ms deadline and was stopped", "{attempt}");
    }
}
