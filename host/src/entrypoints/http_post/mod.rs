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
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::{Entrypoint, ordering_key, session};
use crate::adapter::{self, CallContext, ErrorKind, Session};
use crate::bus::BusError;
use crate::config::Problems;
use crate::event::{Ack, DeliveryError, Event, EventId, Text};
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

impl HttpPostConfig {
    pub(crate) fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(self.ack_timeout_ms > 0, format!("{path}.ack_timeout_ms"), "must be at least 1");
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
        let limit = self.entrypoint.ctx.host.max_message_bytes;
        let too_large = || {
            let message = format!("the body is larger than the {limit}-byte limit; nothing was accepted");
            Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
        };
        let declared =
            request.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        let (parts, body) = request.into_parts();
        let session = session(&parts.headers, &parts.uri, peer);
        let frame = self.frame(&parts.headers, &session)?;
        let payload: Bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Err(e) => {
                let message = format!("reading the body failed: {e}");
                return Err(Rejection::new(StatusCode::BAD_REQUEST, "bad_body", message));
            }
        };
        let mut frame = frame;
        frame.payload = payload;

        let ctx = CallContext { route: 0, session: Some(session) };
        let mapped = self
            .entrypoint
            .adapter
            .map(adapter::Direction::Upstream, &ctx, vec![frame])
            .map_err(|(_, e)| Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, "adapter_failed", e.to_string()))?;
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
    async fn publish(&self, mut events: Vec<Event>) -> Result<Vec<String>, Rejection> {
        let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
        let (ack, confirmed) = Ack::new();
        for event in &mut events {
            event.ack = Some(ack.clone());
        }
        // Every event holds its own part now; this one only started the count.
        ack.settle(Ok(()));
        for event in events {
            if let Err(e) = self.entrypoint.ctx.bus.publish(event).await {
                return Err(match e {
                    BusError::Busy { timeout_ms, .. } => {
                        let message = format!("the event bus stayed full for {timeout_ms} ms");
                        Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
                    }
                    BusError::Closed(_) => Rejection::from(&DeliveryError::ShuttingDown),
                });
            }
        }
        match tokio::time::timeout(self.ack_timeout, confirmed).await {
            Ok(Ok(Ok(()))) => Ok(ids),
            Ok(Ok(Err(e))) => Err(Rejection::from(&e)),
            Ok(Err(_)) => Err(Rejection::from(&DeliveryError::ShuttingDown)),
            Err(_) => Err(Rejection::new(
                StatusCode::GATEWAY_TIMEOUT,
                "not_confirmed",
                format!(
                    "not confirmed within {} ms; the event may or may not have been delivered",
                    self.ack_timeout.as_millis()
                ),
            )),
        }
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
}

impl Rejection {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self { status, error, message: message.into() }
    }

    fn into_response(self) -> Response<Body> {
        let mut response = json_error(self.status, self.error, &self.message);
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
            DeliveryError::Adapter { .. } => (StatusCode::BAD_GATEWAY, "adapter_error"),
            DeliveryError::Target { .. } => (StatusCode::BAD_GATEWAY, "target_error"),
            DeliveryError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "target_unavailable"),
            DeliveryError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "target_timeout"),
            DeliveryError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        };
        Self::new(status, code, error.to_string())
    }
}
