//! Memory under abuse: the host binary, as a process of its own so that its resident
//! memory is its alone, against clients that send slowly, ping without reading, or
//! stop reading. Each test bounds what the abuse may cost and checks that the host
//! lets go of the abuser and keeps serving.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use support::{HostProcess, metric, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Ingest into a memory topic that an SSE entrypoint serves, with a short send timeout
/// so that a client that stops reading is let go quickly.
const CHAT: &str = r#"
[entrypoints.ingest]
type = "http_post"
path = "/ingest"
destination = "chat"

[entrypoints.ws]
type = "websocket"
path = "/ws"

[entrypoints.events]
type = "sse"
path = "/events"
ring = { messages = 100000 }

[endpoints.chat]
type = "memory"

[[routes]]
source = "ingest"
target = "chat"

[[routes]]
source = "chat"
target = "events"
"#;

const MIB: f64 = 1024.0 * 1024.0;

async fn metrics(host: &HostProcess) -> String {
    host.admin("/metrics").await.text()
}

async fn resident(host: &HostProcess) -> f64 {
    metric(&metrics(host).await, "process_resident_memory_bytes")
}

/// Waits until `sample` in the host's `/metrics` is at least `at_least`.
async fn await_at_least(host: &HostProcess, sample: &str, at_least: f64) -> String {
    within(&format!("{sample} to reach {at_least}"), async {
        loop {
            let text = metrics(host).await;
            if metric(&text, sample) >= at_least {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Reads the answer's status line.
async fn status(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = within("the answer", stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_sent_a_few_bytes_at_a_time_cost_their_size_and_a_stalled_one_gets_408() {
    const CONNECTIONS: usize = 4;
    const BODY: usize = 32 * 1024;
    const PIECE: usize = 4;
    let host = HostProcess::start("body_read_timeout_ms = 500", CHAT).await;
    let before = resident(&host).await;

    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let addr = host.listen;
        senders.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let head = format!(
                "POST /ingest HTTP/1.1\r\nhost: gw\r\ncontent-type: text/plain\r\ncontent-length: {BODY}\r\n\
                 connection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.expect("head");
            // A pause after each piece makes it a segment, and a read, of its own.
            for _ in 0..BODY / PIECE {
                stream.write_all(&[b'a'; PIECE]).await.expect("a piece");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            status(&mut stream).await
        });
    }
    while let Some(answer) = senders.join_next().await {
        let answer = answer.expect("a sender");
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    }
    let after = resident(&host).await;
    println!("resident memory: {before} bytes before, {after} after {CONNECTIONS} bodies of {BODY} bytes");
    // Each piece kept as it came would pin a read buffer of kilobytes: about 128 MiB.
    assert!(after - before < 16.0 * MIB, "resident memory grew from {before} to {after} bytes");

    // A body that stops arriving is answered 408 once it paused for the timeout.
    let mut stalled = TcpStream::connect(host.listen).await.expect("connect");
    let head = "POST /ingest HTTP/1.1\r\nhost: gw\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nhalf";
    stalled.write_all(head.as_bytes()).await.expect("write");
    assert!(status(&mut stalled).await.starts_with("HTTP/1.1 408"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pings_and_never_reads_is_let_go_with_bounded_memory() {
    let host = HostProcess::start("send_timeout_ms = 1000", CHAT).await;
    let before = resident(&host).await;
    let url = format!("ws://{}/ws", host.listen);
    let (mut socket, _) = within("a handshake", tokio_tungstenite::connect_async(url.as_str())).await.expect("ws");
    // The largest pings a client may send; it never reads the pongs. The host answers
    // each, until the socket buffers are full and it gives up on the client.
    let ping = bytes::Bytes::from(vec![b'p'; 125]);
    let mut sent = 0u64;
    let flood = async {
        while sent < 3_000_000 && socket.send(Message::Ping(ping.clone())).await.is_ok() {
            sent += 1;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), flood).await;
    let text = await_at_least(&host, "mediation_client_write_timeouts_total", 1.0).await;
    let after = metric(&text, "process_resident_memory_bytes");
    println!("resident memory: {before} bytes before, {after} after {sent} pings");
    assert!(after - before < 32.0 * MIB, "resident memory grew from {before} to {after} bytes");
    await_at_least(&host, r#"mediation_client_disconnects_total{component="ws"}"#, 1.0).await;
    assert_eq!(host.admin("/readyz").await.status, 200, "the host keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_stops_reading_is_cut_by_the_write_timeout_before_the_ring_overtakes_it() {
    const EVENTS: usize = 2000;
    const SIZE: usize = 8 * 1024;
    let host = HostProcess::start("send_timeout_ms = 1000", CHAT).await;
    let before = resident(&host).await;
    let mut stuck = TcpStream::connect(host.listen).await.expect("connect");
    stuck.write_all(b"GET /events HTTP/1.1\r\nhost: gw\r\n\r\n").await.expect("write");
    await_at_least(&host, r#"mediation_connections{component="events"}"#, 1.0).await;

    // 16 MiB of events: far more than the socket buffers hold, far less than the ring.
    let body = "x".repeat(SIZE);
    for _ in 0..EVENTS {
        let reply = host_post(&host, &body).await;
        assert_eq!(reply, 202);
    }
    let text = await_at_least(&host, "mediation_client_write_timeouts_total", 1.0).await;
    let after = metric(&text, "process_resident_memory_bytes");
    println!("resident memory: {before} bytes before, {after} after {EVENTS} events of {SIZE} bytes");
    // The ring holds each event once as its frame and once as its payload (32 MiB);
    // the stuck client costs no copy of them.
    assert!(after - before < 64.0 * MIB, "resident memory grew from {before} to {after} bytes");
    let text = await_at_least(&host, r#"mediation_client_disconnects_total{component="events"}"#, 1.0).await;
    assert_eq!(metric(&text, r#"mediation_slow_consumers_total{component="events"}"#), 0.0, "not overtaken");
    assert_eq!(metric(&text, r#"mediation_connections{component="events"}"#), 0.0);

    // Reading at last, it finds what was on its way and then the end of the connection.
    let mut received = Vec::new();
    let _ = within("the cut connection's end", stuck.read_to_end(&mut received)).await;
    assert!(received.len() < EVENTS * SIZE, "the stream ended before the last event");
}

async fn host_post(host: &HostProcess, body: &str) -> u16 {
    let headers = [("content-type", "text/plain")];
    support::request(host.listen, "POST", "/ingest", &headers, bytes::Bytes::from(body.to_owned())).await.status
}
