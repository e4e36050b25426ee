//! Helpers shared by the integration tests: a host started from TOML text, a real
//! HTTP/1.1 client, a streaming Server-Sent Events reader, a WebSocket client, and
//! the packet log read back as JSON.

#![allow(dead_code)] // Each test binary uses a different subset.

pub mod faults;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use mediation_host::host::Config;
use mediation_host::host::Host;
use mediation_host::packet_log::Sink;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A running in-process host and what the test needs to observe it.
pub struct TestHost {
    pub host: Host,
    /// The packet log, as written.
    pub packets: Arc<Mutex<Vec<u8>>>,
    /// Holds the config file (and anything next to it) for the test's lifetime.
    pub dir: tempfile::TempDir,
}

/// Listeners on free ports, so tests run in parallel.
pub const PORTS: &str = "[host]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";

impl TestHost {
    /// Starts a host from `toml` (with [`PORTS`] prepended).
    pub async fn start(toml: &str) -> Self {
        Self::start_with("", toml).await
    }

    /// Starts a host from `toml`, with `host` (lines of settings) added to the
    /// `[host]` table that [`PORTS`] opens.
    pub async fn start_with(host: &str, toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, format!("{PORTS}{host}\n{toml}")).expect("config written");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("test config is valid: {e}"));
        let packets = Arc::new(Mutex::new(Vec::new()));
        let host = Host::start(config, Sink::Memory(Arc::clone(&packets))).await.expect("host starts");
        Self { host, packets, dir }
    }

    /// The config file the host was started from.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The entrypoint listener.
    pub fn listen(&self) -> SocketAddr {
        self.host.listen_addr().expect("the config has entrypoints")
    }

    /// The packet log lines so far, parsed.
    pub fn packets(&self) -> Vec<serde_json::Value> {
        let bytes = self.packets.lock().expect("not poisoned").clone();
        String::from_utf8(bytes)
            .expect("the packet log is UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("packet line is JSON ({e}): {l}")))
            .collect()
    }

    /// The packet log once it holds at least `n` lines, or after 10 s, whatever it holds.
    pub async fn await_packets(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.packets().len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.packets()
    }

    /// `GET` on the admin listener.
    pub async fn admin(&self, path: &str) -> Reply {
        request(self.host.admin_addr(), "GET", path, &[], Bytes::new()).await
    }

    /// Waits until `/readyz` answers `status`, or `wait` passed; returns its last answer.
    pub async fn await_ready(&self, status: u16, wait: Duration) -> Reply {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let reply = self.admin("/readyz").await;
            if reply.status == status || tokio::time::Instant::now() > deadline {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST` `body` to `path` on the entrypoint listener.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        request(self.listen(), "POST", path, headers, body.into()).await
    }

    /// `GET` `path` on the entrypoint listener.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.listen(), "GET", path, headers, Bytes::new()).await
    }

    /// Polls `/metrics` until `sample` has the value `expected` and returns that
    /// exposition; panics with the last one after [`WAIT`]. For what the host counts
    /// asynchronously (lifecycle events travel through the bus).
    pub async fn await_metric(&self, sample: &str, expected: f64) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.admin("/metrics").await.text();
            if metric(&text, sample) == expected {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sample} did not reach {expected} within {WAIT:?}; last /metrics:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A WebSocket client connected to `path` on the entrypoint listener.
    pub async fn ws(&self, path: &str) -> WebSocket {
        self.ws_with(path, &[]).await.unwrap_or_else(|e| panic!("WebSocket handshake on {path}: {e}"))
    }

    /// A WebSocket handshake on `path` with extra request headers (`Origin`, say).
    ///
    /// # Errors
    /// The handshake's failure; a refusal carries the HTTP response.
    pub async fn ws_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<WebSocket, WsError> {
        let mut request = format!("ws://{}{path}", self.listen()).into_client_request().expect("a valid URL");
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
            request.headers_mut().insert(name, HeaderValue::from_str(value).expect("a header value"));
        }
        let (socket, response) = within("the WebSocket handshake", tokio_tungstenite::connect_async(request)).await?;
        assert_eq!(response.status(), 101);
        Ok(socket)
    }

    /// A Server-Sent Events stream from `path` on the entrypoint listener.
    ///
    /// # Errors
    /// The whole answer, when it is not 200.
    pub async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> Result<SseStream, Reply> {
        SseStream::open(self.listen(), path, headers).await
    }
}

/// The `mediation-host` binary run as a process of its own, for tests that kill it
/// with SIGKILL. Its packet log (stdout) is gathered line by line; its own log
/// (stderr) goes to a file shown when a wait fails.
pub struct HostProcess {
    child: std::process::Child,
    /// The entrypoint listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Packet-log lines read so far.
    packets: Arc<Mutex<Vec<String>>>,
    /// The thread reading stdout into `packets`; it ends when the process does.
    reader: Option<std::thread::JoinHandle<()>>,
    /// Holds the config and log files.
    dir: tempfile::TempDir,
}

impl HostProcess {
    /// Starts the binary on `toml` (its `[host]` table gets the listeners, on free
    /// ports, and `host` lines) and waits until `/healthz` answers.
    pub async fn start(host: &str, toml: &str) -> Self {
        let (listen, admin) = (free_port(), free_port());
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("config.toml");
        let config = format!("[host]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n{host}\n{toml}");
        std::fs::write(&path, config).expect("config written");
        let stderr = std::fs::File::create(dir.path().join("host.log")).expect("log file");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mediation-host"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("MEDIATION_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the host binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let packets = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&packets);
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().expect("not poisoned").push(line);
            }
        });
        let process = Self { child, listen, admin, packets, reader: Some(reader), dir };
        let deadline = tokio::time::Instant::now() + WAIT;
        while TcpStream::connect(admin).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the host did not start; its log:\n{}", process.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(process.admin("/healthz").await.status, 200, "{}", process.log());
        process
    }

    /// The host's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    /// The packet-log lines so far, parsed.
    pub fn packets(&self) -> Vec<serde_json::Value> {
        let lines = self.packets.lock().expect("not poisoned").clone();
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("packet line is JSON ({e}): {l}")))
            .collect()
    }

    /// `GET` on the admin listener.
    pub async fn admin(&self, path: &str) -> Reply {
        request(self.admin, "GET", path, &[], Bytes::new()).await
    }

    /// Waits until `/readyz` answers 200 (every endpoint connected), within [`WAIT`].
    pub async fn await_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.admin("/readyz").await.status != 200 {
            assert!(tokio::time::Instant::now() < deadline, "the host did not get ready; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the packet log shows `n` events handed over, within [`BEFORE_KILL`].
    pub async fn await_delivered(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + BEFORE_KILL;
        while delivered(&self.packets()).len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the host did not hand over {n} events within {BEFORE_KILL:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the process with SIGKILL (no shutdown, no goodbye to any broker) and
    /// returns every packet-log line it wrote: the pipe is read to its end first, so
    /// a line written just before the kill is there too.
    pub fn kill(mut self) -> Vec<serde_json::Value> {
        self.child.kill().expect("SIGKILL sent");
        self.child.wait().expect("the host exited");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stdout reader");
        }
        self.packets()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

/// A unique name for one test run: `<prefix>-<uuid>`, so that tests sharing a broker
/// never see each other's queues, topics or subscriptions.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Starts a host from `toml` with an instance id of its own (per-instance broker
/// resources are named after it), no reload polling, and free ports.
pub async fn start_instance(toml: &str) -> TestHost {
    start_as(&unique("test"), toml).await
}

/// Starts a host from `toml` as instance `instance` (a restarted replica keeps its
/// id), with no reload polling and free ports.
pub async fn start_as(instance: &str, toml: &str) -> TestHost {
    TestHost::start_with(&format!("instance_id = \"{instance}\"\nreload_poll_ms = 0"), toml).await
}

/// The data of the next SSE event (the `retry:` hint and heartbeats skipped).
pub async fn next_data(sse: &mut SseStream) -> String {
    loop {
        let frame = sse.next_event().await;
        if !frame.data.is_empty() {
            return frame.joined();
        }
    }
}

/// The bound on every wait for something the host should do promptly; generous,
/// so that it only ever ends a test that would otherwise hang.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, panicking when it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("{what} took longer than {WAIT:?}"))
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection, with a real HTTP/1.1 client.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
    let response = send(addr, method, path, headers, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = within("the response body", response.into_body().collect()).await.expect("body").to_bytes();
    Reply { status, headers, body }
}

/// Sends one request on a fresh connection and returns the response as soon as its
/// head arrived, the body still streaming.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> hyper::Response<hyper::body::Incoming> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    let mut builder = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(Full::new(body)).expect("request");
    within("the response head", sender.send_request(request)).await.expect("response")
}

/// One frame of a Server-Sent Events stream, as sent and parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseFrame {
    /// The frame's text, up to and including the blank line that ends it.
    pub raw: String,
    /// The `id:` field.
    pub id: Option<String>,
    /// The `event:` field.
    pub event: Option<String>,
    /// Every `data:` line, in order.
    pub data: Vec<String>,
    /// The `retry:` field.
    pub retry: Option<String>,
    /// True when the frame holds only comments (`:` lines): a heartbeat.
    pub comment: bool,
}

impl SseFrame {
    fn parse(raw: String) -> Self {
        let mut frame = Self { comment: true, ..Self::default() };
        for line in raw.lines().filter(|l| !l.is_empty()) {
            if line.starts_with(':') {
                continue;
            }
            frame.comment = false;
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => frame.id = Some(value),
                "event" => frame.event = Some(value),
                "data" => frame.data.push(value),
                "retry" => frame.retry = Some(value),
                other => panic!("unexpected SSE field `{other}` in {raw:?}"),
            }
        }
        frame.raw = raw;
        frame
    }

    /// The event's data as an SSE client joins it.
    pub fn joined(&self) -> String {
        self.data.join("\n")
    }
}

/// A streaming Server-Sent Events response, read frame by frame as the bytes arrive.
#[derive(Debug)]
pub struct SseStream {
    /// The response head.
    pub headers: hyper::HeaderMap,
    /// The body, read one chunk at a time.
    body: hyper::body::Incoming,
    /// Bytes received but not yet returned as a frame.
    buffer: Vec<u8>,
}

impl SseStream {
    /// Opens the stream.
    ///
    /// # Errors
    /// The whole answer, when it is not 200.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Self, Reply> {
        let response = send(addr, "GET", path, headers, Bytes::new()).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if status != 200 {
            let body = within("the response body", response.into_body().collect()).await.expect("body").to_bytes();
            return Err(Reply { status, headers, body });
        }
        Ok(Self { headers, body: response.into_body(), buffer: Vec::new() })
    }

    /// The next frame, or `None` when the stream ended; panics after [`WAIT`].
    pub async fn next(&mut self) -> Option<SseFrame> {
        within("the next SSE frame", self.read_frame()).await
    }

    /// The next frame that is not a heartbeat comment, waiting up to `wait` (for what
    /// takes longer than [`WAIT`] by design, such as a consumer group rebalance).
    pub async fn next_event_within(&mut self, wait: Duration) -> SseFrame {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.read_frame())
                .await
                .unwrap_or_else(|_| panic!("no SSE event within {wait:?}"))
                .expect("the SSE stream is still open");
            if !frame.comment {
                return frame;
            }
        }
    }

    /// The next frame that is not a heartbeat comment.
    pub async fn next_event(&mut self) -> SseFrame {
        loop {
            let frame = self.next().await.expect("the SSE stream is still open");
            if !frame.comment {
                return frame;
            }
        }
    }

    /// Every frame still to come until the stream ends or breaks (a server that died
    /// mid-stream), each within [`WAIT`] of the previous.
    pub async fn rest(&mut self) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
                frames.push(SseFrame::parse(String::from_utf8(raw).expect("SSE frames are UTF-8")));
                continue;
            }
            match within("the next SSE chunk", self.body.frame()).await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.buffer.extend_from_slice(data);
                    }
                }
                Some(Err(_)) | None => return frames,
            }
        }
    }

    async fn read_frame(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Some(SseFrame::parse(String::from_utf8(raw).expect("SSE frames are UTF-8")));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.buffer.extend_from_slice(data);
                    }
                }
                Some(Err(e)) => panic!("the SSE body failed: {e}"),
                None => {
                    assert!(self.buffer.is_empty(), "the stream ended inside a frame: {:?}", self.buffer);
                    return None;
                }
            }
        }
    }
}

/// A WebSocket client connection.
pub type WebSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next data or close message on `socket` (pings and pongs skipped), or `None`
/// once the connection ended; panics after [`WAIT`].
pub async fn ws_next(socket: &mut WebSocket) -> Option<Message> {
    within("the next WebSocket message", async {
        loop {
            match socket.next().await? {
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(message) => return Some(message),
                Err(e) => panic!("the WebSocket connection failed: {e}"),
            }
        }
    })
    .await
}

/// The next message, which must be a text frame holding JSON.
pub async fn ws_json(socket: &mut WebSocket) -> serde_json::Value {
    match ws_next(socket).await {
        Some(Message::Text(text)) => {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("text frame is JSON ({e}): {text}"))
        }
        other => panic!("expected a JSON text frame, got {other:?}"),
    }
}

/// The next message, which must be the server's close frame: its code and reason.
pub async fn ws_close(socket: &mut WebSocket) -> (u16, String) {
    match ws_next(socket).await {
        Some(Message::Close(Some(frame))) => (u16::from(frame.code), frame.reason.to_string()),
        other => panic!("expected a close frame with a code, got {other:?}"),
    }
}

/// A Prometheus sample's value, or 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// Runs `scripts/brokers.sh <command> <broker>`, panicking with its output on failure.
/// Tests stop and start only the broker of their own endpoint.
pub fn broker_script(command: &str, broker: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/brokers.sh");
    let output =
        std::process::Command::new("bash").arg(script).args([command, broker]).output().expect("brokers.sh runs");
    assert!(
        output.status.success(),
        "brokers.sh {command} {broker} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts the broker it names again when the test that stopped it panics halfway.
pub struct BrokerBackUp(pub &'static str);

impl Drop for BrokerBackUp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            broker_script("up", self.0);
        }
    }
}

/// One answer to a POST made during a broker outage: the `Idempotency-Key` (also the
/// body), the status, how long it took, and the body of the answer.
pub type Answer = (String, u16, Duration, String);

/// What a broker restart or network fault test watches: one client POSTs to an HTTP POST
/// entrypoint all along (keys `restart-<n>`, also the body, one at a time, 20 ms apart),
/// another records every change of `/readyz`.
pub struct Outage {
    /// Ends both.
    stop: tokio_util::sync::CancellationToken,
    /// The poster's answers so far, in order, for a test that acts on the poster's progress.
    answers: Arc<Mutex<Vec<Answer>>>,
    /// The poster.
    poster: tokio::task::JoinHandle<()>,
    /// The watcher, with each readiness it saw (true: 200), repeats left out.
    watcher: tokio::task::JoinHandle<Vec<bool>>,
}

impl Outage {
    /// Starts posting to `path` on `t` and watching its `/readyz`.
    pub fn watch(t: &TestHost, path: &str) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let poster = {
            let (addr, stop, path, answers) = (t.listen(), stop.clone(), path.to_owned(), Arc::clone(&answers));
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.is_cancelled() {
                    let key = format!("restart-{n}");
                    let started = tokio::time::Instant::now();
                    let headers = [("content-type", "text/plain"), ("idempotency-key", key.as_str())];
                    let reply = request(addr, "POST", &path, &headers, Bytes::from(key.clone())).await;
                    let answer = (key, reply.status, started.elapsed(), reply.text());
                    answers.lock().expect("not poisoned").push(answer);
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let watcher = {
            let (admin, stop) = (t.host.admin_addr(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                // One last look after the stop, so that a readiness the test waited for
                // just before it is always seen.
                loop {
                    let stopping = stop.is_cancelled();
                    let ready = request(admin, "GET", "/readyz", &[], Bytes::new()).await.status == 200;
                    if seen.last() != Some(&ready) {
                        seen.push(ready);
                    }
                    if stopping {
                        break seen;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Self { stop, answers, poster, watcher }
    }

    /// The answers so far, in order.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().expect("not poisoned").clone()
    }

    /// Waits until the answers so far satisfy `done`, and returns them; panics naming
    /// `what` after `wait`.
    pub async fn await_answers(&self, what: &str, wait: Duration, done: impl Fn(&[Answer]) -> bool) -> Vec<Answer> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let answers = self.answers();
            if done(&answers) {
                return answers;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {wait:?}; the last answers: {:?}",
                &answers[answers.len().saturating_sub(5)..]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a POST sent after the `answered` first ones was acknowledged (2xx): the
    /// flow goes on; panics after `wait`.
    pub async fn await_acknowledged_after(&self, answered: usize, wait: Duration) {
        // Answers arrive in order, so those after the first `answered` are the later POSTs.
        let acknowledged =
            |a: &[Answer]| a.get(answered..).is_some_and(|later| later.iter().any(|a| (200..300).contains(&a.1)));
        self.await_answers("a POST acknowledged", wait, acknowledged).await;
    }

    /// Stops both: the POST answers and the readiness changes seen.
    pub async fn finish(self) -> (Vec<Answer>, Vec<bool>) {
        let Self { stop, answers, poster, watcher } = self;
        stop.cancel();
        poster.await.expect("the poster");
        let readiness = watcher.await.expect("the watcher");
        let answers = answers.lock().expect("not poisoned").clone();
        (answers, readiness)
    }
}

/// A broker restart under steady POSTs, as every broker endpoint must come through it:
/// `/readyz` goes false and back, the host reconnects by itself, every POST that met
/// the outage fails fast with 503 (or 504 for one in flight), and the flow resumes.
pub struct Restart {
    /// The broker, as `scripts/brokers.sh` names it.
    pub broker: &'static str,
    /// The endpoint, as `/metrics` names it.
    pub component: &'static str,
    /// How long the host may take to be ready again, and a POST to be acknowledged.
    pub recovery: Duration,
    /// How long a POST answered 503 (the endpoint is known to be down) may take.
    pub unavailable_within: Duration,
    /// How long a POST answered 504 (in flight when the broker went) may take: the
    /// endpoint's own timeout.
    pub timed_out_within: Duration,
    /// The broker answers before it can serve again (Kafka's partitions need leaders),
    /// so readiness may go back and forth while it recovers.
    pub flaps: bool,
}

impl Restart {
    /// Restarts the broker while one client POSTs to `/ingest` on `t` all along and
    /// another watches `/readyz`, checks what every broker endpoint must do, stops the
    /// host, and returns the keys acknowledged (202), in order: the test checks that
    /// the broker has them.
    pub async fn run(&self, t: TestHost) -> Vec<String> {
        let outage = Outage::watch(&t, "/ingest");
        outage.await_acknowledged_after(0, WAIT).await;
        let guard = BrokerBackUp(self.broker);
        let broker = self.broker;
        tokio::task::spawn_blocking(move || broker_script("down", broker)).await.expect("down");
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::spawn_blocking(move || broker_script("up", broker)).await.expect("up");
        drop(guard);
        let back = t.await_ready(200, self.recovery).await;
        assert_eq!(back.status, 200, "ready again without a restart of the host: {}", back.text());
        // Until a POST after the outage is acknowledged.
        let answered = outage.answers().len();
        outage.await_acknowledged_after(answered, self.recovery).await;
        let (answers, readiness) = outage.finish().await;

        if self.flaps {
            assert!(
                readiness.first() == Some(&true) && readiness.contains(&false) && readiness.last() == Some(&true),
                "/readyz went false during the outage and back: {readiness:?}"
            );
        } else {
            assert_eq!(readiness, [true, false, true], "/readyz went false during the outage and back");
        }
        let acknowledged: Vec<String> = answers.iter().filter(|a| a.1 == 202).map(|a| a.0.clone()).collect();
        let failed: Vec<_> = answers.iter().filter(|a| a.1 != 202).collect();
        let mut statuses: Vec<u16> = failed.iter().map(|a| a.1).collect();
        statuses.sort_unstable();
        statuses.dedup();
        eprintln!(
            "restart: {} POSTs, {} acknowledged, {} failed with {statuses:?}",
            answers.len(),
            acknowledged.len(),
            failed.len()
        );
        assert!(!failed.is_empty(), "some POSTs met the outage");
        for (key, status, took, body) in &failed {
            let bound = match status {
                503 => self.unavailable_within,
                504 => self.timed_out_within,
                _ => panic!("{key}: {status} {body}"),
            };
            assert!(*took < bound, "{key} failed within {bound:?}, not after {took:?}: {body}");
        }
        let metrics = t.admin("/metrics").await.text();
        let reconnects = format!("mediation_broker_reconnects_total{{component=\"{}\"}}", self.component);
        assert!(metric(&metrics, &reconnects) >= 1.0, "{metrics}");
        t.host.shutdown().await;
        acknowledged
    }
}

/// Checks that every key of `acknowledged` is among `arrived`, in the same order: what
/// the host acknowledged reached the broker, in order (what it did not acknowledge may
/// have arrived too). `place` names where they arrived, for the message.
pub fn assert_arrived_in_order(acknowledged: &[String], arrived: &[impl AsRef<str>], place: &str) {
    let position = |key: &String| arrived.iter().position(|a| a.as_ref() == key);
    for key in acknowledged {
        assert!(position(key).is_some(), "{key} was acknowledged (202) but is not in {place}");
    }
    let positions: Vec<usize> = acknowledged.iter().filter_map(position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "acknowledged messages keep their order in {place}");
}

/// A WebSocket entrypoint `slow` at `/slow` that makes its hub the slowest part of the
/// host, for backpressure tests: the `pace` adapter takes `pause_ms` per event, the hub
/// takes 4 events at a time, and the one bus shard in front of it holds 4 events and
/// waits instead of answering busy. A broker endpoint routed to it has to stop
/// consuming while the hub catches up. `events` sizes the ring. The adapter call
/// deadline is generous: on a loaded machine a waiting guest may be descheduled past
/// the default 100 ms, which would fail its events instead of slowing them.
pub fn slow_hub(pause_ms: u64, events: usize) -> String {
    format!(
        r#"
        [bus]
        shards = 1
        queue_capacity = 4
        publish_timeout_ms = 600000

        [adapters]
        call_timeout_ms = 10000

        [entrypoints.slow]
        type = "websocket"
        path = "/slow"
        adapter = "{adapter}"
        adapter_settings = {{ pause_ms = "{pause_ms}" }}
        ring = {{ messages = {events}, max_batch = 4, queue_capacity = 4 }}
        "#,
        adapter = env!("MEDIATION_PACE_ADAPTER")
    )
}

/// The bound on every wait of a test before it kills a host while it consumes.
pub const BEFORE_KILL: Duration = Duration::from_secs(30);

/// The hub of a host a test kills while it consumes `total` events: [`slow_hub`] at a pace
/// that takes twice [`BEFORE_KILL`] for all of them, so that a test that got to its kill
/// within its bounded waits finds events not handed over yet, however fast the rest of
/// the host is. Its entrypoint is `slow`.
pub fn hub_until_killed(total: usize) -> String {
    let pause_ms = 2 * BEFORE_KILL.as_millis() / u128::try_from(total).expect("a count");
    slow_hub(u64::try_from(pause_ms).expect("a pause").max(1), total)
}

/// The ids of the events the packet lines show handed over (outcome `delivered`).
pub fn delivered(packets: &[serde_json::Value]) -> Vec<String> {
    packets
        .iter()
        .filter(|p| p["outcome"] == "delivered")
        .map(|p| p["event_id"].as_str().expect("an event id").to_owned())
        .collect()
}

/// A WebSocket client reading text messages in the background, counting them as they
/// arrive, so that a test can look at the broker while the stream is under way.
pub struct Received {
    /// How many are awaited.
    n: usize,
    /// How many arrived so far.
    count: Arc<std::sync::atomic::AtomicUsize>,
    /// The reader; it ends after `n` messages.
    reader: tokio::task::JoinHandle<Vec<String>>,
}

impl Received {
    /// Reads `n` text messages from `socket`.
    pub fn spawn(mut socket: WebSocket, n: usize) -> Self {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        let reader = tokio::spawn(async move {
            let mut texts = Vec::with_capacity(n);
            while texts.len() < n {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("{} of {n} messages arrived, then {other:?}", texts.len()),
                }
                counter.store(texts.len(), std::sync::atomic::Ordering::Relaxed);
            }
            texts
        });
        Self { n, count, reader }
    }

    /// Waits until `n` messages arrived; panics when the stream stalls for [`WAIT`].
    pub async fn reached(&self, n: usize) {
        let mut last = (0, tokio::time::Instant::now());
        loop {
            let count = self.count.load(std::sync::atomic::Ordering::Relaxed);
            if count >= n {
                return;
            }
            if count > last.0 {
                last = (count, tokio::time::Instant::now());
            }
            assert!(last.1.elapsed() < WAIT, "the stream stalled at {count} of the {n} messages awaited");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every message, in the order it arrived, once all of them did.
    pub async fn all(self) -> Vec<String> {
        self.reached(self.n).await;
        self.reader.await.expect("the reader")
    }
}
