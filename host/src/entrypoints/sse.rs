//! The `sse` entrypoint: Server-Sent Events.
//!
//! A `GET` opens a `text/event-stream`. Every frame comes from the hub's ring,
//! already encoded by the adapter (`id:` is the ring sequence), so resuming is
//! `Last-Event-ID`. A `topic=` and `header.<name>=` query filter what a client
//! gets. The stream starts with a `retry:` hint and carries a comment heartbeat so
//! that proxies keep it open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::hub::{Feed, Next, Resume, SlowConsumer};
use super::request::{filter_from_query, parse_cursor, session};
use super::{Entrypoint, EntrypointKind};
use crate::adapter::Directions;
use crate::config::Problems;
use crate::event::EventKind;
use crate::server::{Body, ChannelBody, Handler, json_error};

/// Frames buffered per client between its writer task and the socket. Small: the
/// ring is the buffer; this only smooths writes.
const CLIENT_BUFFER_FRAMES: usize = 32;

/// `type = "sse"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseConfig {
    /// A comment line is sent after this long without events, to keep proxies from
    /// closing an idle stream.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// The `retry:` hint: how long a browser waits before reconnecting.
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
}

const fn default_heartbeat_ms() -> u64 {
    15_000
}

const fn default_retry_ms() -> u64 {
    2_000
}

impl EntrypointKind for SseConfig {
    fn type_name(&self) -> &'static str {
        "sse"
    }

    fn builtin_adapter(&self) -> &'static str {
        "sse"
    }

    fn needs(&self) -> (Directions, &'static str) {
        (Directions::DOWNSTREAM, "encode events (downstream)")
    }

    fn method(&self) -> &'static str {
        "GET"
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(self.heartbeat_ms > 0, format!("{path}.heartbeat_ms"), "must be at least 1");
    }

    fn handler(&self, entrypoint: Entrypoint) -> Handler {
        handler(entrypoint, self)
    }
}

/// Builds the request handler.
#[must_use]
pub fn handler(entrypoint: Entrypoint, config: &SseConfig) -> Handler {
    let config = Arc::new(config.clone());
    Arc::new(move |request, peer| {
        let response = open(&entrypoint, &config, request, peer);
        Box::pin(async move { response })
    })
}

fn open(entrypoint: &Entrypoint, config: &SseConfig, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if request.method() != Method::GET {
        let mut response = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    let (parts, _) = request.into_parts();
    let bad_query = |message: String| json_error(StatusCode::BAD_REQUEST, "bad_query", &message);
    let session = match session(&parts.headers, &parts.uri, peer) {
        Ok(session) => session,
        Err(message) => return bad_query(message),
    };
    let filter = match filter_from_query(&session.query, &session.client_id) {
        Ok(filter) => filter,
        Err(message) => return bad_query(message),
    };
    let last_event_id = parts
        .headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .or_else(|| session.query.iter().find(|(k, _)| k == "last_event_id").map(|(_, v)| v.clone()));
    let hub = Arc::clone(entrypoint.hub());
    // `Last-Event-ID` is the last event the client got: it continues after it.
    let resume = match last_event_id.as_deref().map(str::trim) {
        None | Some("") => Resume::At(hub.head()),
        Some(id) => match parse_cursor("Last-Event-ID", id) {
            Ok(id) => hub.resume(id.saturating_add(1)),
            Err(message) => return json_error(StatusCode::BAD_REQUEST, "bad_cursor", &message),
        },
    };
    let slot = match entrypoint.slot() {
        Ok(slot) => slot,
        Err(response) => return *response,
    };
    let feed = Feed::new(hub, resume.cursor(), filter);
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER_FRAMES);
    let client = Client { entrypoint: entrypoint.clone(), client_id: session.client_id, tx };
    let retry = Bytes::from(format!("retry: {}\n\n", config.retry_ms));
    let heartbeat = Duration::from_millis(config.heartbeat_ms);
    tokio::spawn(async move {
        let _slot = slot;
        client.run(feed, resume, retry, heartbeat).await;
    });
    let mut response = Response::new(ChannelBody(rx).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One connected SSE client: its writer task's state.
struct Client {
    /// The entrypoint it belongs to.
    entrypoint: Entrypoint,
    /// Its id, for lifecycle events and targeted delivery.
    client_id: String,
    /// Frames to the response body.
    tx: mpsc::Sender<Bytes>,
}

impl Client {
    async fn run(self, mut feed: Feed, resume: Resume, retry: Bytes, heartbeat: Duration) {
        self.entrypoint.lifecycle(EventKind::Connect, &self.client_id).await;
        let shutdown = self.entrypoint.ctx.shutdown.accept.clone();
        let mut open = self.tx.send(retry).await.is_ok();
        // A client resuming from an id the ring does not hold is told what it missed
        // before it gets the oldest event held.
        if open && let Some(gap) = resume.gap_json() {
            open = self.tx.send(frame_gap(&gap)).await.is_ok();
        }
        while open {
            let next = tokio::select! {
                next = feed.next() => next,
                () = tokio::time::sleep(heartbeat) => {
                    open = self.tx.send(Bytes::from_static(b":\n\n")).await.is_ok();
                    continue;
                }
                () = shutdown.cancelled() => break,
                () = self.tx.closed() => break,
            };
            open = match next {
                Next::Entries(entries) => self.send(&mut feed, &entries).await,
                Next::Skipped { missed } => self.tx.send(gap(missed, feed.cursor())).await.is_ok(),
                Next::Behind { .. } => {
                    self.cut(feed.cursor()).await;
                    false
                }
                Next::Closed => false,
            };
        }
        self.entrypoint.lifecycle(EventKind::Disconnect, &self.client_id).await;
    }

    /// Sends a batch of frames; false when the client is gone or fell behind while
    /// the frames waited for room and the policy is `disconnect`. Under `drop_oldest`
    /// the frames not sent are skipped, and the feed's next read tells the client
    /// what it missed.
    async fn send(&self, feed: &mut Feed, entries: &[Arc<super::hub::Entry>]) -> bool {
        for entry in entries {
            tokio::select! {
                sent = self.tx.send(entry.frame.clone()) => if sent.is_err() { return false },
                () = feed.overtaken(entry.sequence) => {
                    if self.entrypoint.hub().slow_consumer() == SlowConsumer::DropOldest {
                        feed.seek(entry.sequence);
                        return true;
                    }
                    self.entrypoint.hub().count_slow_consumer();
                    self.cut(entry.sequence).await;
                    return false;
                }
            }
        }
        true
    }

    /// Ends the stream of a client the ring moved past at `cursor`, with an `event:
    /// gap` that says what it missed and where the oldest event held is, so that the page can tell a drop from a
    /// crash. The gap goes after the frames already queued, once the client reads
    /// them; a client that does not read in time is closed by the write timeout.
    async fn cut(&self, cursor: u64) {
        let resume = self.entrypoint.hub().resume(cursor);
        let gap = resume.gap_json().unwrap_or_else(|| serde_json::json!({ "missed": 0, "resume": cursor }));
        let _ = self.tx.send(frame_gap(&gap)).await;
    }
}

/// The frame telling a client that it missed events: an SSE event named `gap`.
fn gap(missed: Option<u64>, resume: u64) -> Bytes {
    frame_gap(&serde_json::json!({ "missed": missed, "resume": resume }))
}

fn frame_gap(gap: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: gap\ndata: {gap}\n\n"))
}
