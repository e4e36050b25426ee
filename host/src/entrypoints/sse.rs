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

use super::hub::{Feed, Next, SlowConsumer};
use super::{Entrypoint, filter_from_query, session};
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

impl SseConfig {
    pub(crate) fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(self.heartbeat_ms > 0, format!("{path}.heartbeat_ms"), "must be at least 1");
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
    let session = session(&parts.headers, &parts.uri, peer);
    let last_event_id = parts
        .headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .or_else(|| session.query.iter().find(|(k, _)| k == "last_event_id").map(|(_, v)| v.clone()));
    let hub = Arc::clone(entrypoint.hub());
    let cursor = match last_event_id.as_deref().map(str::trim) {
        None | Some("") => hub.head(),
        Some(id) => match id.parse::<u64>().ok().and_then(|id| id.checked_add(1)) {
            Some(cursor) => cursor,
            None => {
                let message = format!("Last-Event-ID `{id}` is not a sequence number this host issued");
                return json_error(StatusCode::BAD_REQUEST, "bad_cursor", &message);
            }
        },
    };
    let slot = match entrypoint.slot() {
        Ok(slot) => slot,
        Err(response) => return *response,
    };
    let feed = Feed::new(hub, cursor, filter_from_query(&session.query, &session.client_id));
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER_FRAMES);
    let client = Client { entrypoint: entrypoint.clone(), client_id: session.client_id, tx };
    let retry = Bytes::from(format!("retry: {}\n\n", config.retry_ms));
    let heartbeat = Duration::from_millis(config.heartbeat_ms);
    tokio::spawn(async move {
        let _slot = slot;
        client.run(feed, retry, heartbeat).await;
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
    async fn run(self, mut feed: Feed, retry: Bytes, heartbeat: Duration) {
        self.entrypoint.lifecycle(EventKind::Connect, &self.client_id).await;
        let shutdown = self.entrypoint.ctx.shutdown.accept.clone();
        let mut open = self.tx.send(retry).await.is_ok();
        // A client resuming from an id the ring no longer holds is told what it
        // missed, then continues from the oldest event held.
        let (oldest, head) = (self.entrypoint.hub().oldest(), self.entrypoint.hub().head());
        if open && (feed.cursor() < oldest || feed.cursor() > head) {
            // Below the ring: those events are gone. Above the head: an id from another
            // run or replica, so what was missed is unknown (0).
            let missed = oldest.saturating_sub(feed.cursor());
            open = self.tx.send(gap(missed, oldest)).await.is_ok();
            feed.seek(oldest);
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
                Next::Behind { missed } => {
                    // Say why before ending, so the page can tell a drop from a crash.
                    let _ = self.tx.try_send(gap(missed, feed.cursor()));
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
                    return false;
                }
            }
        }
        true
    }
}

/// The frame telling a client that it missed events: an SSE event named `gap`.
fn gap(missed: u64, resume: u64) -> Bytes {
    Bytes::from(format!("event: gap\ndata: {{\"missed\":{missed},\"resume\":{resume}}}\n\n"))
}
