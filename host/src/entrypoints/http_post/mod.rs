//! The `http_post` entrypoint: ingest over plain HTTP.
//!
//! One request body is decoded by the adapter into one or more events (the default
//! adapter splits NDJSON into one per line). The answer waits until every event has
//! been confirmed by every target, so a 2xx means delivered; failures get a status
//! and a JSON body that say what to do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::request::{ordering_key, session};
use super::{Entrypoint, EntrypointKind};
use crate::adapter::{CallContext, Directions, ErrorKind, Session};
use crate::bus::RunError;
use crate::config::Problems;
use crate::event::{Ack, DeliveryError, Event, EventId, Text};
use crate::routing::Direction;
use crate::server::{Body, Handler, json_error, respond};

/// The longest `Idempotency-Key` accepted; brokers store it as a message id.
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// `type = "http_post"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPostConfig {
    /// The destination (topic, queue) stamped on every event, unless the adapter sets one.
    #[serde(default)]
    pub destination: Option<String>,
    /// How long a request waits for its events to be confirmed before it gets 504.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
}

const fn default_ack_timeout_ms() -> u64 {
    10_000
}

impl EntrypointKind for HttpPostConfig {
    fn type_name(&self) -> &'static str {
        "http_post"
    }

    fn builtin_adapter(&self) -> &'static str {
        "http-post"
    }

    fn needs(&self) -> (Directions, &'static str) {
        (Directions::UPSTREAM, "decode request bodies (upstream)")
    }

    fn method(&self) -> &'static str {
        "POST"
    }

    fn serves_events(&self) -> bool {
        false
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(self.ack_timeout_ms > 0, format!("{path}.ack_timeout_ms"), "must be at least 1");
    }

    fn handler(&self, entrypoint: Entrypoint) -> Handler {
        handler(entrypoint, self)
    }
}

/// What the handler keeps between requests.
struct Ingest {
    /// The entrypoint's wiring and adapter.
    entrypoint: Entrypoint,
    /// Stamped on events the adapter leaves without a destination.
    destination: Option<Text>,
    /// How long to wait for confirmation.
    ack_timeout: Duration,
}

/// Builds the request handler.
#[must_use]
pub fn handler(entrypoint: Entrypoint, config: &HttpPostConfig) -> Handler {
    let ingest = Arc::new(Ingest {
        entrypoint,
        destination: config.destination.as_deref().map(Text::from),
        ack_timeout: Duration::from_millis(config.ack_timeout_ms),
    });
    Arc::new(move |request, peer| {
        let ingest = Arc::clone(&ingest);
        Box::pin(async move { ingest.handle(request, peer).await })
    })
}

impl Ingest {
    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if request.method() != Method::POST {
            let mut response = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        match self.ingest(request, peer).await {
            Ok(ids) => {
                let body = serde_json::json!({ "status": "delivered", "ids": ids }).to_string();
                respond(StatusCode::ACCEPTED, "application/json", body)
            }
            Err(rejection) => rejection.into_response(),
        }
    }

    async fn ingest(&self, request: Request<Incoming>, peer: SocketAddr) -> Result<Vec<String>, Rejection> {
        let (parts, body) = request.into_parts();
        let session = session(&parts.headers, &parts.uri, peer)
            .map_err(|message| Rejection::new(StatusCode::BAD_REQUEST, "bad_query", message))?;
        let mut frame = self.frame(&parts.headers, &session)?;
        frame.payload = self.read_body(&parts.headers, body).await?;

        let ctx = CallContext { route: 0, session: Some(session) };
        // A failed call (trap, deadline, memory) is the adapter's fault, not the
        // client's: 502, as for an endpoint's adapter.
        let mapped = self.entrypoint.adapter.map(Direction::Upstream, &ctx, vec![frame]);
        if let Some((_, e)) = mapped.failed {
            return Err(Rejection::new(StatusCode::BAD_GATEWAY, "adapter_error", e.to_string()));
        }
        if let Some((_, error)) = mapped.refused.into_iter().next() {
            let (status, code) = match error.kind {
                ErrorKind::Malformed => (StatusCode::BAD_REQUEST, "malformed"),
                ErrorKind::Unsupported => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported"),
                ErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            };
            return Err(Rejection::new(status, code, error.message));
        }
        self.publish(mapped.outputs).await
    }

    /// Reads the body into one buffer of its own size. Each piece is copied out of
    /// the connection's read buffer as it arrives: a piece kept as it came would pin a
    /// whole read buffer, so a body sent a few bytes per packet would cost kilobytes
    /// per byte. The pieces must keep coming (`body_read_timeout_ms`), and the bodies
    /// of all requests in progress share one memory budget (`body_memory_bytes`).
    async fn read_body(&self, headers: &hyper::HeaderMap, mut body: Incoming) -> Result<Bytes, Rejection> {
        let host = &self.entrypoint.ctx.host;
        let limit = host.max_message_bytes;
        let too_large = || {
            let message = format!("the body is larger than the {limit}-byte limit; nothing was accepted");
            Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
        };
        let declared = headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        let pause = Duration::from_millis(host.body_read_timeout_ms);
        let mut budget = BodyBudget { semaphore: &self.entrypoint.body_budget, held: Vec::new(), bytes: 0 };
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let frame = match tokio::time::timeout(pause, body.frame()).await {
                Err(_) => {
                    let message = format!(
                        "the body stalled for {} ms after {} bytes; nothing was accepted",
                        pause.as_millis(),
                        buffer.len()
                    );
                    return Err(Rejection::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", message));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    let message = format!("reading the body failed: {e}");
                    return Err(Rejection::new(StatusCode::BAD_REQUEST, "bad_body", message));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else { continue };
            let wanted = buffer.len() + data.len();
            if wanted > limit {
                return Err(too_large());
            }
            if wanted > budget.bytes {
                // The declared length at once, else steps of at least 64 KiB, so that a
                // trickle of small pieces takes the budget (and reallocates) rarely.
                let target = declared.map_or(wanted.max(budget.bytes + BODY_STEP_BYTES), |len| {
                    usize::try_from(len).unwrap_or(limit).max(wanted)
                });
                budget.grow(target.min(limit))?;
                buffer.reserve_exact(budget.bytes - buffer.len());
            }
            buffer.extend_from_slice(&data);
        }
        Ok(Bytes::from(buffer))
    }

    /// The input item for the adapter: everything but the body.
    fn frame(&self, headers: &hyper::HeaderMap, session: &Session) -> Result<Event, Rejection> {
        let mut frame = Event::new(self.entrypoint.ctx.id, Bytes::new());
        frame.ordering_key = ordering_key(&session.client_id);
        frame.client_id = Some(Text::from(session.client_id.as_str()));
        frame.destination.clone_from(&self.destination);
        frame.content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(Text::from);
        if let Some(key) = headers.get("idempotency-key") {
            let key =
                key.to_str().ok().filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY).ok_or_else(|| {
                    let message =
                        format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters");
                    Rejection::new(StatusCode::BAD_REQUEST, "bad_idempotency_key", message)
                })?;
            frame.id = EventId::Given(Text::from(key));
        }
        Ok(frame)
    }

    /// Publishes the decoded events and waits until every target confirmed them all.
    ///
    /// The events go onto the bus in runs of at most a shard's capacity, each queued
    /// whole or not at all, and each event is confirmed on its own. A request is
    /// answered 2xx only when every event was delivered; otherwise the answer says
    /// why, and, when some of them were delivered all the same, exactly which
    /// (`delivered`), so that a client resends only the rest.
    async fn publish(&self, events: Vec<Event>) -> Result<Vec<String>, Rejection> {
        let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
        let bus = &self.entrypoint.ctx.bus;
        let mut outcomes = Vec::with_capacity(ids.len());
        let mut failure = None;
        let mut pending = events.into_iter();
        while outcomes.len() < ids.len() {
            let run = (ids.len() - outcomes.len()).min(bus.shard_capacity());
            // Every event of a request has its client's ordering key.
            let Some(key) = pending.as_slice().first().map(|e| e.ordering_key) else { break };
            match bus.reserve(key, run).await {
                Ok(permits) => {
                    for (permit, mut event) in permits.zip(pending.by_ref()) {
                        let (ack, confirmed) = Ack::new();
                        event.ack = Some(ack);
                        outcomes.push(confirmed);
                        permit.send(event);
                    }
                }
                Err(RunError::Busy { timeout_ms }) => {
                    let message = format!("the event bus stayed full for {timeout_ms} ms");
                    failure = Some(Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message));
                    break;
                }
                Err(RunError::Closed) => {
                    failure = Some(Rejection::from(&DeliveryError::ShuttingDown));
                    break;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        let mut delivered = Vec::with_capacity(outcomes.len());
        for (i, confirmed) in outcomes.into_iter().enumerate() {
            let error = match tokio::time::timeout_at(deadline, confirmed).await {
                Ok(Ok(Ok(()))) => {
                    delivered.push(i);
                    continue;
                }
                Ok(Ok(Err(e))) => Rejection::from(&e),
                Ok(Err(_)) => Rejection::from(&DeliveryError::ShuttingDown),
                Err(_) => Rejection::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "not_confirmed",
                    format!(
                        "not confirmed within {} ms; the event may or may not have been delivered",
                        self.ack_timeout.as_millis()
                    ),
                ),
            };
            // The first failure in the request's order is the one the answer names.
            failure = Some(failure.unwrap_or(error));
        }
        let Some(mut rejection) = failure else { return Ok(ids) };
        if !delivered.is_empty() {
            rejection.message = format!(
                "{}; {} of the {} events were delivered (`delivered`), the others were not",
                rejection.message,
                delivered.len(),
                ids.len()
            );
            rejection.delivered = Some(delivered.iter().map(|&i| ids[i].clone()).collect());
        } else if ids.len() > 1 {
            rejection.message = format!("{}; none of the {} events was delivered", rejection.message, ids.len());
        }
        Err(rejection)
    }
}

/// How much a body's memory grows at a time when its length was not declared.
const BODY_STEP_BYTES: usize = 64 * 1024;

/// The share of `body_memory_bytes` one body holds while it arrives; given back when
/// it is dropped.
struct BodyBudget<'a> {
    /// The host-wide budget.
    semaphore: &'a Arc<Semaphore>,
    /// What this body took so far.
    held: Vec<OwnedSemaphorePermit>,
    /// Bytes held, the sum of `held`.
    bytes: usize,
}

impl BodyBudget<'_> {
    /// Takes more of the budget so that this body holds `bytes`.
    fn grow(&mut self, bytes: usize) -> Result<(), Rejection> {
        let more = bytes.saturating_sub(self.bytes);
        let permit = u32::try_from(more)
            .ok()
            .and_then(|more| Arc::clone(self.semaphore).try_acquire_many_owned(more).ok())
            .ok_or_else(|| {
                let message = "request bodies in progress hold all of the memory set aside for them \
                               (host.body_memory_bytes); nothing was accepted";
                Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
            })?;
        self.held.push(permit);
        self.bytes = bytes;
        Ok(())
    }
}

/// A refused request: the status and the JSON error body the client gets.
#[derive(Debug)]
struct Rejection {
    /// The HTTP status.
    status: StatusCode,
    /// A stable machine-readable word.
    error: &'static str,
    /// What happened, for people.
    message: String,
    /// When some of a request's events were delivered all the same: their ids, in
    /// the request's order.
    delivered: Option<Vec<String>>,
}

impl Rejection {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self { status, error, message: message.into(), delivered: None }
    }

    fn into_response(self) -> Response<Body> {
        let mut response = match &self.delivered {
            None => json_error(self.status, self.error, &self.message),
            Some(ids) => {
                let body = serde_json::json!({ "error": self.error, "message": self.message, "delivered": ids });
                respond(self.status, "application/json", body.to_string())
            }
        };
        if matches!(self.error, "busy" | "target_unavailable") {
            // A full queue drains and a broker comes back: a retry after a pause is
            // expected to succeed. (A reconnecting endpoint backs off for at most 5 s.)
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<&DeliveryError> for Rejection {
    fn from(error: &DeliveryError) -> Self {
        let (status, code) = match error {
            DeliveryError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            DeliveryError::NoRoute(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_route"),
            DeliveryError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            DeliveryError::Adapter { .. } | DeliveryError::AdapterFailed(_) => {
                (StatusCode::BAD_GATEWAY, "adapter_error")
            }
            DeliveryError::Target { .. } => (StatusCode::BAD_GATEWAY, "target_error"),
            DeliveryError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "target_unavailable"),
            DeliveryError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "target_timeout"),
            DeliveryError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        };
        Self::new(status, code, error.to_string())
    }
}
