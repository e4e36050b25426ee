//! The `websocket` entrypoint: both directions on one connection.
//!
//! Upstream, every text or binary message goes through the adapter's `upstream`
//! (decode) and the resulting events onto the bus; control items the adapter
//! decodes (subscribe, unsubscribe, resume, ack) steer this connection's feed.
//! Downstream, the connection's feed reads the hub's ring, where every event is
//! already encoded once for all clients.
//!
//! One task owns the socket's write half: frames from the feed and the host's own
//! control frames (acknowledgements, gaps, pings, the close) all go through it, so no
//! two tasks ever write one socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mediation_adapter_sdk::layout::{FLAG_ACK_REQUESTED, FLAG_BINARY, Kind as ItemKind};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig as WireConfig};
use tokio_tungstenite::tungstenite::{Error as WireError, Message, Utf8Bytes};

use super::hub::{Feed, Filter, Next, Resume, SlowConsumer};
use super::request::{filter_from_query, ordering_key, parse_cursor, session};
use super::{Entrypoint, EntrypointKind};
use crate::adapter::{CallContext, Directions, ErrorKind, Session};
use crate::bus::BusError;
use crate::config::Problems;
use crate::event::{Ack, AckReceiver, Event, EventKind, Text};
use crate::routing::Direction;
use crate::server::{Body, Handler, json_error, respond};

/// The socket read buffer per connection (tungstenite's default is 128 KiB).
const READ_BUFFER_BYTES: usize = 4096;

/// Control frames queued for the writer; a client that floods acks waits.
const OUTBOX_FRAMES: usize = 64;

/// The most messages from one client decoded in one adapter call: those already read
/// when the first arrives.
const MAX_BURST: usize = 64;

/// Bytes tungstenite may buffer for the socket beyond one message: the frames of one
/// write, and the pongs it answers pings with while the client does not read. Past
/// it, further pongs replace the one waiting instead of piling up.
const WRITE_BUFFER_BYTES: usize = 128 * 1024;

/// `type = "websocket"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// The host pings the client this often; a client that sends nothing (pongs
    /// included) for the entrypoint's `idle_timeout_ms` is closed.
    #[serde(default = "default_ping_interval_ms")]
    pub ping_interval_ms: u64,
    /// The destination stamped on published events the adapter leaves without one.
    #[serde(default)]
    pub destination: Option<String>,
    /// How long a message that asked for an acknowledgement waits for the broker's
    /// confirmation before the client gets a negative one.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
}

const fn default_ping_interval_ms() -> u64 {
    30_000
}

const fn default_ack_timeout_ms() -> u64 {
    10_000
}

impl EntrypointKind for WebSocketConfig {
    fn type_name(&self) -> &'static str {
        "websocket"
    }

    fn builtin_adapter(&self) -> &'static str {
        "websocket"
    }

    fn needs(&self) -> (Directions, &'static str) {
        (Directions::all(), "decode messages and encode events (both directions)")
    }

    fn method(&self) -> &'static str {
        "GET"
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(self.ping_interval_ms > 0, format!("{path}.ping_interval_ms"), "must be at least 1");
        problems.check(self.ack_timeout_ms > 0, format!("{path}.ack_timeout_ms"), "must be at least 1");
    }

    fn handler(&self, entrypoint: Entrypoint) -> Handler {
        handler(entrypoint, self)
    }
}

/// Builds the request handler: checks the handshake, answers 101 and hands the
/// upgraded connection to its own task.
#[must_use]
pub fn handler(entrypoint: Entrypoint, config: &WebSocketConfig) -> Handler {
    let config = Arc::new(config.clone());
    Arc::new(move |request, peer| {
        let response = upgrade(&entrypoint, &config, request, peer);
        Box::pin(async move { response })
    })
}

fn upgrade(
    entrypoint: &Entrypoint,
    config: &Arc<WebSocketConfig>,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let headers = request.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    if request.method() != Method::GET || !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        let mut response = json_error(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this path speaks WebSocket: GET with Upgrade: websocket",
        );
        response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return response;
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        let mut response = json_error(StatusCode::BAD_REQUEST, "bad_handshake", "Sec-WebSocket-Version must be 13");
        response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.as_bytes())) else {
        return json_error(StatusCode::BAD_REQUEST, "bad_handshake", "Sec-WebSocket-Key is missing");
    };
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|p| HeaderValue::from_str(p.trim()).ok());
    let checked = session(request.headers(), request.uri(), peer).and_then(|session| {
        let filter = filter_from_query(&session.query, &session.client_id)?;
        Ok((session, filter))
    });
    let (session, filter) = match checked {
        Ok(checked) => checked,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, "bad_query", &message),
    };
    let resume = match session.query.iter().find(|(k, _)| k == "cursor") {
        None => Resume::At(entrypoint.hub().head()),
        Some((_, cursor)) => match parse_cursor("`cursor`", cursor) {
            Ok(cursor) => entrypoint.hub().resume(cursor),
            Err(message) => return json_error(StatusCode::BAD_REQUEST, "bad_cursor", &message),
        },
    };
    let slot = match entrypoint.slot() {
        Ok(slot) => slot,
        Err(response) => return *response,
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (entrypoint, config) = (entrypoint.clone(), Arc::clone(config));
    tokio::spawn(async move {
        let _slot = slot;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "websocket upgrade failed");
                return;
            }
        };
        let limit = entrypoint.ctx.host.max_message_bytes;
        let wire = WireConfig::default()
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit))
            // A client that pings and never reads would otherwise make tungstenite
            // queue its pongs without bound.
            .write_buffer_size(WRITE_BUFFER_BYTES)
            .max_write_buffer_size(WRITE_BUFFER_BYTES + limit + 16)
            // The default 128 KiB read buffer is zero-filled per connection: 140 KiB per idle
            // client. Reads grow past 4 KiB only while a large message arrives.
            .read_buffer_size(READ_BUFFER_BYTES);
        let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(wire)).await;
        Connection::new(entrypoint, config, session).run(socket, filter, resume).await;
    });
    let mut response = respond(StatusCode::SWITCHING_PROTOCOLS, "text/plain", "");
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// What the reader asks of the writer.
#[derive(Debug)]
enum Command {
    /// Answer the publish with this id once its acknowledgement settles.
    Confirm(String, AckReceiver),
    /// Add a topic pattern to the feed's filter.
    Subscribe(String),
    /// Remove a topic pattern.
    Unsubscribe(String),
    /// Continue the feed after this sequence.
    Resume(u64),
    /// Close with this code and reason, then stop.
    Close(CloseCode, String),
}

/// One client connection.
struct Connection {
    /// The entrypoint it belongs to.
    entrypoint: Entrypoint,
    /// Its settings.
    config: Arc<WebSocketConfig>,
    /// The adapter's context for this client's frames: route 0 and the client's
    /// session. Built once: a session is several strings, and cloning it for every
    /// frame cost as much as decoding the frame.
    call: CallContext,
    /// The client's id, stamped on every event it sends.
    client_id: Text,
    /// The ordering key of the client's events.
    ordering_key: u64,
}

impl Connection {
    fn new(entrypoint: Entrypoint, config: Arc<WebSocketConfig>, session: Session) -> Self {
        let client_id = Text::from(session.client_id.as_str());
        let ordering_key = ordering_key(&session.client_id);
        Self { entrypoint, config, call: CallContext { route: 0, session: Some(session) }, client_id, ordering_key }
    }

    async fn run(self, socket: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>, filter: Filter, resume: Resume) {
        let client_id = self.client_id.as_str().to_owned();
        self.entrypoint.lifecycle(EventKind::Connect, &client_id).await;
        let (sink, mut stream) = socket.split();
        let (commands, outbox) = mpsc::channel(OUTBOX_FRAMES);
        let feed = Feed::new(Arc::clone(self.entrypoint.hub()), resume.cursor(), filter);
        let mut writer = tokio::spawn(write(
            sink,
            feed,
            resume,
            outbox,
            self.entrypoint.clone(),
            Duration::from_millis(self.config.ping_interval_ms),
            Duration::from_millis(self.config.ack_timeout_ms),
        ));
        let idle = Duration::from_millis(self.entrypoint.common.idle_timeout_ms);
        let shutdown = self.entrypoint.ctx.shutdown.accept.clone();
        let mut writer_done = false;
        // A message read behind a burst that is not part of it: handled next.
        let mut ahead = None;
        loop {
            let message = if let Some(message) = ahead.take() {
                Ok(message)
            } else {
                tokio::select! {
                    message = tokio::time::timeout(idle, stream.next()) => message,
                    () = shutdown.cancelled() => {
                        let _ = commands.send(Command::Close(CloseCode::Away, String::from("the host is shutting down"))).await;
                        break;
                    }
                    // The writer closed the connection (the client fell behind, or the
                    // socket failed): nothing more can be sent, so stop reading too
                    // rather than hold the connection for a client that may never send.
                    _ = &mut writer => {
                        writer_done = true;
                        break;
                    }
                }
            };
            let close = match message {
                Err(_) => Some((CloseCode::Away, String::from("idle timeout"))),
                Ok(None) => break,
                Ok(Some(Ok(first @ (Message::Text(_) | Message::Binary(_))))) => {
                    let burst = burst(first, &mut stream, &mut ahead);
                    self.receive(burst, &commands).await
                }
                Ok(Some(Ok(Message::Close(_)))) => break,
                Ok(Some(Ok(_))) => None,
                Ok(Some(Err(e))) => Some(close_for(&e, self.entrypoint.ctx.host.max_message_bytes)),
            };
            if let Some((code, reason)) = close {
                let _ = commands.send(Command::Close(code, reason)).await;
                break;
            }
        }
        drop(commands);
        // The writer ends once the reader is gone and its close (if any) is sent.
        if !writer_done {
            let _ = writer.await;
        }
        self.entrypoint.lifecycle(EventKind::Disconnect, &client_id).await;
    }

    /// Decodes a burst of data messages (payload, binary) in one adapter call and acts
    /// on what they hold, in order. Returns a close for a message the adapter refuses:
    /// the messages before it take effect, the ones after it do not.
    async fn receive(
        &self,
        burst: Vec<(Bytes, bool)>,
        commands: &mpsc::Sender<Command>,
    ) -> Option<(CloseCode, String)> {
        let frames = burst.iter().map(|(payload, binary)| self.frame(payload, *binary)).collect();
        match self.decode(frames) {
            Ok(events) => self.act(events, commands).await,
            Err(close) if burst.len() == 1 => Some(close),
            Err(_) => {
                // Which message failed is not known from a batch: decode them one by one,
                // so that the connection closes exactly at it.
                for (payload, binary) in &burst {
                    let events = match self.decode(vec![self.frame(payload, *binary)]) {
                        Ok(events) => events,
                        Err(close) => return Some(close),
                    };
                    if let Some(close) = self.act(events, commands).await {
                        return Some(close);
                    }
                }
                None
            }
        }
    }

    /// The frame event for one message from the client.
    fn frame(&self, payload: &Bytes, binary: bool) -> Event {
        let mut frame = Event::new(self.entrypoint.ctx.id, payload.clone());
        frame.ordering_key = self.ordering_key;
        frame.client_id = Some(self.client_id.clone());
        frame.destination = self.config.destination.as_deref().map(Text::from);
        if binary {
            frame.flags |= FLAG_BINARY;
        }
        frame
    }

    /// Maps `frames` through the adapter in one call: the events they hold, or the
    /// close for the first one it refused (or for a failed call).
    fn decode(&self, frames: Vec<Event>) -> Result<Vec<Event>, (CloseCode, String)> {
        let mapped = self.entrypoint.adapter.map(Direction::Upstream, &self.call, frames);
        // What the adapter refused precedes what a failed call held.
        if let Some((_, error)) = mapped.refused.into_iter().next() {
            let code = match error.kind {
                ErrorKind::Malformed => CloseCode::Invalid,
                ErrorKind::Unsupported => CloseCode::Unsupported,
                ErrorKind::TooLarge => CloseCode::Size,
            };
            return Err((code, error.message));
        }
        if let Some((_, error)) = mapped.failed {
            return Err((CloseCode::Error, error.to_string()));
        }
        Ok(mapped.outputs)
    }

    /// Acts on decoded events in order: publishes data, passes control items to the
    /// writer.
    async fn act(&self, events: Vec<Event>, commands: &mpsc::Sender<Command>) -> Option<(CloseCode, String)> {
        for event in events {
            let command = match ItemKind::from_flags(event.flags) {
                Some(ItemKind::Subscribe) => event.destination.map(|d| Command::Subscribe(d.to_string())),
                Some(ItemKind::Unsubscribe) => event.destination.map(|d| Command::Unsubscribe(d.to_string())),
                Some(ItemKind::Resume) => Some(Command::Resume(event.sequence)),
                // Downstream delivery to WebSocket clients is at-most-once: a client's
                // ack is accepted and needs nothing more.
                Some(ItemKind::Ack) => None,
                Some(ItemKind::Data) | None => {
                    self.publish(event, commands).await;
                    None
                }
            };
            if let Some(command) = command
                && commands.send(command).await.is_err()
            {
                break;
            }
        }
        None
    }

    /// Publishes one decoded event. While the bus is full, reading pauses (the
    /// client meets TCP backpressure); nothing is dropped. A message that asked for
    /// an acknowledgement gets one once every target confirmed it.
    async fn publish(&self, mut event: Event, commands: &mpsc::Sender<Command>) {
        let confirmed = (event.flags & FLAG_ACK_REQUESTED != 0).then(|| {
            let (ack, confirmed) = Ack::new();
            event.ack = Some(ack);
            (event.id.to_string(), confirmed)
        });
        let bus = &self.entrypoint.ctx.bus;
        let mut pending = event;
        loop {
            match bus.publish(pending).await {
                Ok(()) => break,
                Err(BusError::Busy { event, .. }) => pending = *event,
                Err(BusError::Closed(_)) => return,
            }
        }
        if let Some((id, confirmed)) = confirmed {
            let _ = commands.send(Command::Confirm(id, confirmed)).await;
        }
    }
}

/// The `ack` frame for the publish with `id`, once `confirmed` settles or `timeout`
/// passes.
async fn confirm(id: String, confirmed: AckReceiver, timeout: Duration) -> Message {
    let answer = match tokio::time::timeout(timeout, confirmed).await {
        Ok(Ok(Ok(()))) => serde_json::json!({ "type": "ack", "id": id, "status": "ok" }),
        Ok(Ok(Err(e))) => serde_json::json!({ "type": "ack", "id": id, "status": "error", "error": e.to_string() }),
        Ok(Err(_)) => {
            serde_json::json!({ "type": "ack", "id": id, "status": "error", "error": "the host is shutting down" })
        }
        Err(_) => serde_json::json!({ "type": "ack", "id": id, "status": "timeout" }),
    };
    Message::text(answer.to_string())
}

/// A message as the client's stream yields it: `None` once the stream ended.
type Read = Option<Result<Message, WireError>>;

/// The data message `first` and the data messages already read behind it, up to
/// [`MAX_BURST`], as (payload, binary), for one adapter call. Reading stops at the
/// first message that is not data, which goes to `ahead`; it never waits.
fn burst<S>(first: Message, stream: &mut S, ahead: &mut Option<Read>) -> Vec<(Bytes, bool)>
where
    S: futures_util::Stream<Item = Result<Message, WireError>> + Unpin,
{
    let mut burst = Vec::new();
    let mut next = Some(Some(Ok(first)));
    while let Some(read) = next.take() {
        match read {
            Some(Ok(Message::Text(text))) => burst.push((Bytes::from(text), false)),
            Some(Ok(Message::Binary(bytes))) => burst.push((bytes, true)),
            other => {
                *ahead = Some(other);
                break;
            }
        }
        if burst.len() < MAX_BURST {
            next = stream.next().now_or_never();
        }
    }
    burst
}

/// The close code and reason for a read error.
fn close_for(error: &WireError, limit: usize) -> (CloseCode, String) {
    match error {
        WireError::Capacity(_) => (CloseCode::Size, format!("message larger than the {limit}-byte limit")),
        WireError::Utf8(_) => (CloseCode::Invalid, String::from("text message is not valid UTF-8")),
        e => (CloseCode::Protocol, format!("protocol error: {e}")),
    }
}

/// The writer task: the only one that writes this socket. It also awaits the
/// acknowledgements clients asked for, so that those that settle together (a batch's
/// broker confirms) leave in one write. Once the reader is gone it still answers the
/// acknowledgements it awaits, then ends.
async fn write<S>(
    mut sink: S,
    mut feed: Feed,
    resume: Resume,
    mut outbox: mpsc::Receiver<Command>,
    entrypoint: Entrypoint,
    ping: Duration,
    ack_timeout: Duration,
) where
    S: futures_util::Sink<Message, Error = WireError> + Unpin,
{
    let mut ping_timer = tokio::time::interval(ping);
    ping_timer.tick().await;
    // A resume point outside the ring (evicted, or from another run) is answered with
    // a gap frame; the feed already starts at the oldest event held.
    if let Some(frame) = gap_frame(resume)
        && sink.send(frame).await.is_err()
    {
        return;
    }
    let mut confirming = FuturesUnordered::new();
    let mut reading = true;
    loop {
        let outcome = tokio::select! {
            Some(answer) = confirming.next() => {
                let mut fed = sink.feed(answer).await;
                while fed.is_ok()
                    && let Some(Some(answer)) = confirming.next().now_or_never()
                {
                    fed = sink.feed(answer).await;
                }
                match fed {
                    Ok(()) => sink.flush().await.map(|()| None),
                    Err(e) => Err(e),
                }
            }
            command = outbox.recv(), if reading => match command {
                None => {
                    reading = false;
                    Ok(None)
                }
                Some(Command::Confirm(id, confirmed)) => {
                    confirming.push(confirm(id, confirmed, ack_timeout));
                    Ok(None)
                }
                Some(Command::Subscribe(pattern)) => {
                    if !feed.filter.topics.contains(&pattern) {
                        feed.filter.topics.push(pattern);
                    }
                    Ok(None)
                }
                Some(Command::Unsubscribe(pattern)) => {
                    feed.filter.topics.retain(|p| *p != pattern);
                    Ok(None)
                }
                Some(Command::Resume(after)) => {
                    let resume = entrypoint.hub().resume(after.saturating_add(1));
                    feed.seek(resume.cursor());
                    match gap_frame(resume) {
                        Some(frame) => sink.send(frame).await.map(|()| None),
                        None => Ok(None),
                    }
                }
                Some(Command::Close(code, reason)) => Ok(Some((code, reason))),
            },
            next = feed.next() => match next {
                Next::Entries(entries) => {
                    send_entries(&mut sink, &mut feed, &entries, entrypoint.hub().slow_consumer()).await
                }
                Next::Skipped { missed } => {
                    let gap = serde_json::json!({ "type": "gap", "missed": missed, "resume": feed.cursor() });
                    sink.send(Message::text(gap.to_string())).await.map(|()| None)
                }
                Next::Behind { .. } => Ok(Some((
                    CloseCode::Again,
                    format!("fell behind the replay window; resume from {}", feed.cursor()),
                ))),
                Next::Closed => Ok(Some((CloseCode::Away, String::from("the host is shutting down")))),
            },
            _ = ping_timer.tick() => sink.send(Message::Ping(Bytes::new())).await.map(|()| None),
        };
        match outcome {
            Ok(None) if !reading && confirming.is_empty() => return,
            Ok(None) => {}
            Ok(Some((code, reason))) => {
                if code == CloseCode::Again {
                    entrypoint.hub().count_slow_consumer();
                }
                // The close goes after the frames already written, once the client reads
                // them: a client that does not is cut off by the connection's write timeout.
                let reason = truncate(&reason, 120);
                let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                let _ = sink.close().await;
                return;
            }
            Err(_) => return,
        }
    }
}

/// The gap frame for a resume point the ring does not hold.
fn gap_frame(resume: Resume) -> Option<Message> {
    let mut gap = resume.gap_json()?;
    gap["type"] = serde_json::Value::from("gap");
    Some(Message::text(gap.to_string()))
}

/// Sends a batch of frames, feeding them all before one flush. When the ring moves
/// past the batch while the socket is blocked, the client has stopped reading:
/// under `disconnect` it is closed; under `drop_oldest` the frames not yet handed to
/// the socket are skipped, and the feed's next read tells the client what it missed.
async fn send_entries<S>(
    sink: &mut S,
    feed: &mut Feed,
    entries: &[Arc<super::hub::Entry>],
    policy: SlowConsumer,
) -> Result<Option<(CloseCode, String)>, WireError>
where
    S: futures_util::Sink<Message, Error = WireError> + Unpin,
{
    let Some(last) = entries.last() else { return Ok(None) };
    // Frames handed to the socket; they reach the client even if the rest are skipped.
    let mut fed = 0;
    let send = async {
        for entry in entries {
            // Text frames share the ring's bytes: checking UTF-8 reads them, nothing copies them.
            let message = match Utf8Bytes::try_from(entry.frame.clone()) {
                Ok(text) if !entry.binary => Message::Text(text),
                _ => Message::Binary(entry.frame.clone()),
            };
            sink.feed(message).await?;
            fed += 1;
        }
        sink.flush().await
    };
    tokio::select! {
        sent = send => return sent.map(|()| None),
        () = feed.overtaken(last.sequence) => {}
    }
    if policy == SlowConsumer::DropOldest {
        if let Some(unsent) = entries.get(fed) {
            feed.seek(unsent.sequence);
        }
        return Ok(None);
    }
    Ok(Some((
        CloseCode::Again,
        format!("stopped reading and fell behind the replay window; resume from {}", feed.cursor()),
    )))
}

/// `s` cut to at most `max` bytes on a character boundary (close reasons are short).
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
