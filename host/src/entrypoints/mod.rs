//! Client-facing components. Entrypoints share one listener and are told apart by
//! `path`; one with a `port` of its own gets a dedicated listener.
//!
//! Each entrypoint type lives in its own folder and is selected by one variant of
//! [`Kind`]. Entrypoints that serve events to clients (SSE, WebSocket, HTTP GET) are
//! also targets: their [`hub::Hub`] takes deliveries from the pipeline.

pub mod http_get;
pub mod http_post;
pub mod hub;
pub mod request;
pub mod sse;
pub mod websocket;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde::de::Error as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::adapter::{self, Adapter, AdapterSource};
use crate::component::Component;
use crate::component::{ComponentContext, StartError};
use crate::config::{HostConfig, Problems};
use crate::pipeline::TargetSender;
use crate::server::{self, Body, Handler, json_error};

/// Settings every entrypoint has, whatever its type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Common {
    /// The request path, on the shared listener unless `port` is set.
    pub path: String,
    /// A dedicated port instead of the shared listener.
    #[serde(default)]
    pub port: Option<u16>,
    /// The entrypoint adapter; the type's builtin when unset.
    #[serde(default)]
    pub adapter: Option<AdapterSource>,
    /// Settings passed to the adapter's `configure`.
    #[serde(default)]
    pub adapter_settings: BTreeMap<String, String>,
    /// Browser origins allowed besides the page's own (`*` for any): WebSocket
    /// handshakes are checked against it, and CORS answers follow it.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Open client connections (WebSocket, SSE) or concurrent requests at most;
    /// beyond it clients get 503.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A WebSocket connection with no frame from the client (pongs included) for
    /// this long is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// The replay ring of entrypoints that serve events.
    #[serde(default)]
    pub ring: Option<hub::RingConfig>,
}

const fn default_max_connections() -> usize {
    10_000
}

const fn default_idle_timeout_ms() -> u64 {
    120_000
}

/// The keys of [`Common`]; the rest of an entrypoint's table belongs to its type.
const COMMON_KEYS: [&str; 8] =
    ["path", "port", "adapter", "adapter_settings", "allowed_origins", "max_connections", "idle_timeout_ms", "ring"];

/// The type-specific part, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    /// HTTP POST ingest: one request body becomes one event (or one per NDJSON line).
    HttpPost(http_post::HttpPostConfig),
    /// Server-Sent Events: a stream of events, resumable with `Last-Event-ID`.
    Sse(sse::SseConfig),
    /// WebSocket, both directions on one connection.
    Websocket(websocket::WebSocketConfig),
    /// HTTP GET polling with a cursor and long-polling.
    HttpGet(http_get::HttpGetConfig),
}

/// `[entrypoints.<name>]`.
#[derive(Debug, Clone)]
pub struct EntrypointConfig {
    /// What every entrypoint has.
    pub common: Common,
    /// What its type adds.
    pub kind: Kind,
}

impl<'de> Deserialize<'de> for EntrypointConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        let mut common = toml::Table::new();
        for key in COMMON_KEYS {
            if let Some(value) = table.remove(key) {
                common.insert(key.to_owned(), value);
            }
        }
        let common: Common = common.try_into().map_err(|e: toml::de::Error| D::Error::custom(e.message()))?;
        let kind: Kind = table.try_into().map_err(|e: toml::de::Error| {
            D::Error::custom(format!("{} (every entrypoint also takes {})", e.message(), COMMON_KEYS.join(", ")))
        })?;
        Ok(Self { common, kind })
    }
}

impl EntrypointConfig {
    /// The adapter reference, for path resolution.
    pub fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        self.common.adapter.as_mut()
    }

    /// The adapter: configured, else the type's builtin.
    #[must_use]
    pub fn adapter_source(&self) -> AdapterSource {
        self.common.adapter.clone().unwrap_or_else(|| AdapterSource::Builtin(self.builtin().to_owned()))
    }

    fn builtin(&self) -> &'static str {
        match self.kind {
            Kind::HttpPost(_) => "http-post",
            Kind::Sse(_) => "sse",
            Kind::Websocket(_) => "websocket",
            Kind::HttpGet(_) => "http-get",
        }
    }

    /// Checks that a loaded `adapter` can serve this entrypoint, at startup and in
    /// `check`.
    ///
    /// # Errors
    /// Why it cannot.
    pub fn fit(&self, adapter: &Adapter) -> Result<(), String> {
        // Client frames are decoded (upstream) by every type that takes them, and
        // events are encoded (downstream) by every type that serves them.
        let (needed, what) = match self.kind {
            Kind::HttpPost(_) => (adapter::Directions::UPSTREAM, "decode request bodies (upstream)"),
            Kind::Sse(_) | Kind::HttpGet(_) => (adapter::Directions::DOWNSTREAM, "encode events (downstream)"),
            Kind::Websocket(_) => (adapter::Directions::all(), "decode messages and encode events (both directions)"),
        };
        if !adapter.maps(needed) {
            return Err(format!("does not map what a {} entrypoint needs: it must {what}", self.type_name()));
        }
        if self.serves_events() && adapter.session_dependent() {
            // The ring holds frames encoded once for every client; an encoding that
            // differs per session would need the writers to encode, which they do not.
            return Err(String::from(
                "declares session-dependent output, which this host does not support on entrypoints that \
                 serve events: frames are encoded once for all clients",
            ));
        }
        Ok(())
    }

    /// True for the types that serve events to clients and so hold a ring.
    #[must_use]
    pub fn serves_events(&self) -> bool {
        !matches!(self.kind, Kind::HttpPost(_))
    }
}

impl Component for EntrypointConfig {
    fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::HttpPost(_) => "http_post",
            Kind::Sse(_) => "sse",
            Kind::Websocket(_) => "websocket",
            Kind::HttpGet(_) => "http_get",
        }
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        self.common.adapter.as_ref()
    }

    fn port(&self) -> Option<u16> {
        self.common.port
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        let c = &self.common;
        problems.check(
            c.path.starts_with('/') && !c.path.contains(['?', '#']),
            format!("{path}.path"),
            format!("`{}` must start with `/` and hold no query or fragment", c.path),
        );
        problems.check(c.max_connections > 0, format!("{path}.max_connections"), "must be at least 1");
        problems.check(c.idle_timeout_ms > 0, format!("{path}.idle_timeout_ms"), "must be at least 1");
        match (&c.ring, self.serves_events()) {
            (Some(ring), true) => ring.validate(path, problems),
            (Some(_), false) => problems.add(
                format!("{path}.ring"),
                "only entrypoints that serve events (sse, websocket, http_get) have a ring",
            ),
            (None, _) => {}
        }
        match &self.kind {
            Kind::HttpPost(k) => k.validate(path, problems),
            Kind::Sse(k) => k.validate(path, problems),
            Kind::Websocket(k) => k.validate(path, problems),
            Kind::HttpGet(k) => k.validate(path, problems),
        }
    }
}

/// Checks what spans entrypoints: two on one listener may not share a path.
pub fn validate_paths(entrypoints: &BTreeMap<String, EntrypointConfig>, problems: &mut Problems) {
    let mut seen: BTreeMap<(Option<u16>, &str), &str> = BTreeMap::new();
    for (name, e) in entrypoints {
        if let Some(other) = seen.insert((e.common.port, &e.common.path), name) {
            problems
                .add(format!("entrypoints.{name}.path"), format!("`{}` is already served by `{other}`", e.common.path));
        }
    }
}

/// What a transport gets: its wiring, settings, adapter, ring and limits.
#[derive(Debug, Clone)]
pub struct Entrypoint {
    /// The component's wiring.
    pub ctx: ComponentContext,
    /// Its common settings.
    pub common: Common,
    /// Its adapter (decode for what clients send, encode for what they receive).
    pub adapter: Adapter,
    /// Its ring, for the types that serve events.
    pub hub: Option<Arc<hub::Hub>>,
    /// Connection slots, `max_connections` of them.
    pub slots: Arc<Semaphore>,
    /// The CORS and origin policy.
    pub origins: Arc<Origins>,
    /// Bytes of request bodies still arriving, shared by every entrypoint
    /// (`host.body_memory_bytes`).
    pub body_budget: Arc<Semaphore>,
}

impl Entrypoint {
    /// Takes a connection slot, or answers 503 when all are taken.
    ///
    /// # Errors
    /// The 503 response to send.
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, Box<Response<Body>>> {
        Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            let message =
                format!("{} connections are open, the most this entrypoint takes", self.common.max_connections);
            let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, "too_many_connections", &message);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Box::new(response)
        })
    }

    /// Counts a client's connect or disconnect and publishes it as a lifecycle event.
    pub async fn lifecycle(&self, kind: crate::event::EventKind, client_id: &str) {
        let ctx = &self.ctx;
        if let Some(stats) = ctx.recorder.stats(ctx.id) {
            let delta = if kind == crate::event::EventKind::Connect { 1 } else { -1 };
            stats.connections.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        }
        let mut event = crate::event::Event::new(ctx.id, bytes::Bytes::new());
        event.kind = kind;
        event.ordering_key = request::ordering_key(client_id);
        event.client_id = Some(crate::event::Text::from(client_id));
        // A lifecycle event the bus cannot take is only a missed count: nothing waits on it.
        let _ = ctx.bus.publish(event).await;
    }

    /// The hub; only entrypoints that serve events have one.
    ///
    /// # Panics
    /// When called on an entrypoint without a ring, which is a wiring bug.
    #[must_use]
    pub fn hub(&self) -> &Arc<hub::Hub> {
        self.hub.as_ref().expect("entrypoints that serve events are built with a hub")
    }
}

/// The origin policy of one entrypoint: requests without `Origin` (not from a
/// browser) pass; a browser's request passes when it comes from the page's own origin
/// (its host equals the `Host` header) or from one of `allowed_origins`.
#[derive(Debug, Default)]
pub struct Origins {
    /// Allowed origins, exactly as browsers send them (`https://app.example.com`), or `*`.
    allowed: Vec<String>,
}

impl Origins {
    /// The policy for `allowed`.
    #[must_use]
    pub fn new(allowed: &[String]) -> Self {
        Self { allowed: allowed.to_vec() }
    }

    /// `Ok(None)` for a request without `Origin`, `Ok(Some(origin))` for an allowed
    /// browser origin (to echo in CORS answers).
    ///
    /// # Errors
    /// The origin that is not allowed.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, String> {
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(None) };
        let text = origin.to_str().unwrap_or_default();
        let same_origin = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| text.split_once("://").is_some_and(|(_, rest)| rest == host));
        if same_origin || self.allowed.iter().any(|a| a == "*" || a == text) {
            Ok(Some(origin.clone()))
        } else {
            Err(text.to_owned())
        }
    }

    /// Adds the CORS headers for an allowed browser origin to `response`.
    pub fn decorate(origin: Option<HeaderValue>, response: &mut Response<Body>) {
        if let Some(origin) = origin {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::VARY, HeaderValue::from_static("origin"));
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after"));
        }
    }

    /// The answer to a CORS preflight for an entrypoint serving `methods`.
    #[must_use]
    pub fn preflight(&self, request: &Request<hyper::body::Incoming>, methods: &'static str) -> Response<Body> {
        match self.check(request.headers()) {
            Ok(origin) => {
                let mut response = server::respond(StatusCode::NO_CONTENT, "text/plain", "");
                Self::decorate(origin, &mut response);
                let headers = response.headers_mut();
                headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
                if let Some(asked) = request.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
                }
                headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                response
            }
            Err(origin) => refuse_origin(&origin),
        }
    }
}

/// 403 for a browser origin that is not allowed.
#[must_use]
pub fn refuse_origin(origin: &str) -> Response<Body> {
    json_error(StatusCode::FORBIDDEN, "origin_not_allowed", &format!("origin `{origin}` is not in allowed_origins"))
}

/// Wraps a transport's handler with what every entrypoint does first: CORS
/// preflights, the origin check, and the CORS headers on the answer.
fn with_origin_policy(entrypoint: &Entrypoint, methods: &'static str, handler: Handler) -> Handler {
    let origins = Arc::clone(&entrypoint.origins);
    Arc::new(move |request, peer| {
        if request.method() == Method::OPTIONS {
            let response = origins.preflight(&request, methods);
            return Box::pin(async move { response });
        }
        match origins.check(request.headers()) {
            Err(origin) => {
                let response = refuse_origin(&origin);
                Box::pin(async move { response })
            }
            Ok(origin) => {
                let answer = handler(request, peer);
                Box::pin(async move {
                    let mut response = answer.await;
                    Origins::decorate(origin, &mut response);
                    response
                })
            }
        }
    })
}

/// Starts every entrypoint, its hub and its listener. Returns the shared listener's
/// address, when any entrypoint uses it.
///
/// # Errors
/// When an adapter cannot be loaded or a listener cannot bind.
pub async fn start(
    entrypoints: &BTreeMap<String, EntrypointConfig>,
    host: &HostConfig,
    context: &dyn Fn(&str) -> ComponentContext,
    targets: &mut [Option<TargetSender>],
    hubs: &mut JoinSet<()>,
    listeners: &mut JoinSet<()>,
) -> Result<Option<SocketAddr>, StartError> {
    let mut by_listener: BTreeMap<Option<u16>, BTreeMap<String, Handler>> = BTreeMap::new();
    let body_budget = Arc::new(Semaphore::new(host.body_memory_bytes.min(Semaphore::MAX_PERMITS)));
    for (name, e) in entrypoints {
        let ctx = context(name);
        let adapter =
            ctx.adapters.load(name, &e.adapter_source(), adapter::Role::Entrypoint, &e.common.adapter_settings)?;
        ctx.readiness.watch_adapter(adapter.clone());
        e.fit(&adapter).map_err(|message| {
            StartError::Adapter(adapter::AdapterError::Load {
                name: name.clone(),
                source_name: e.adapter_source().to_string(),
                message,
            })
        })?;
        let hub = e.serves_events().then(|| {
            let ring = e.common.ring.clone().unwrap_or_default();
            let (tx, rx) = tokio::sync::mpsc::channel(ring.queue_capacity);
            let hub = Arc::new(hub::Hub::new(ring, Arc::clone(&ctx.recorder), ctx.id));
            targets[ctx.id.0 as usize] = Some(tx);
            hubs.spawn(Arc::clone(&hub).run(adapter.clone(), rx));
            hub
        });
        let entrypoint = Entrypoint {
            slots: Arc::new(Semaphore::new(e.common.max_connections)),
            origins: Arc::new(Origins::new(&e.common.allowed_origins)),
            body_budget: Arc::clone(&body_budget),
            common: e.common.clone(),
            adapter,
            hub,
            ctx,
        };
        let (methods, handler) = match &e.kind {
            Kind::HttpPost(k) => ("POST", http_post::handler(entrypoint.clone(), k)),
            Kind::Sse(k) => ("GET", sse::handler(entrypoint.clone(), k)),
            Kind::Websocket(k) => ("GET", websocket::handler(entrypoint.clone(), k)),
            Kind::HttpGet(k) => ("GET", http_get::handler(entrypoint.clone(), k)),
        };
        let handler = with_origin_policy(&entrypoint, methods, handler);
        by_listener.entry(e.common.port).or_default().insert(e.common.path.clone(), handler);
    }
    let mut shared_addr = None;
    for (port, routes) in by_listener {
        let addr = port.map_or(host.listen, |p| SocketAddr::new(host.listen.ip(), p));
        let what = || format!("entrypoints {}", routes.keys().cloned().collect::<Vec<_>>().join(", "));
        let listener = server::bind(addr).await.map_err(|source| StartError::Listen { addr, what: what(), source })?;
        let bound = listener.local_addr().map_err(|source| StartError::Listen { addr, what: what(), source })?;
        if port.is_none() {
            shared_addr = Some(bound);
        }
        tracing::info!(%bound, paths = ?routes.keys().collect::<Vec<_>>(), "entrypoint listener bound");
        let shutdown = context("").shutdown.accept;
        let limits = server::Limits {
            max_connections: entrypoints.values().map(|e| e.common.max_connections).sum(),
            header_read_timeout: std::time::Duration::from_millis(host.header_read_timeout_ms),
            max_header_bytes: host.max_header_bytes,
            send_timeout: std::time::Duration::from_millis(host.send_timeout_ms),
            write_timeouts: context("").recorder.write_timeouts(),
        };
        server::spawn(listener, by_path(routes), limits, shutdown, listeners);
    }
    Ok(shared_addr)
}

/// One handler that dispatches on the exact request path.
fn by_path(routes: BTreeMap<String, Handler>) -> Handler {
    let routes = Arc::new(routes);
    Arc::new(move |request, peer| match routes.get(request.uri().path()) {
        Some(handler) => handler(request, peer),
        None => {
            let known = routes.keys().cloned().collect::<Vec<_>>().join(", ");
            let message = format!("no entrypoint serves {} (paths: {known})", request.uri().path());
            Box::pin(async move { json_error(StatusCode::NOT_FOUND, "not_found", &message) })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_pass_same_origin_and_listed_ones() {
        let origins = Origins::new(&[String::from("https://app.example.com")]);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert_eq!(origins.check(&headers(&[])), Ok(None), "no Origin: not a browser");
        assert!(origins.check(&headers(&[("origin", "http://gw:8080"), ("host", "gw:8080")])).is_ok(), "same origin");
        assert!(origins.check(&headers(&[("origin", "https://app.example.com"), ("host", "gw")])).is_ok());
        assert_eq!(
            origins.check(&headers(&[("origin", "https://evil.example"), ("host", "gw")])),
            Err(String::from("https://evil.example"))
        );
        assert!(Origins::new(&[String::from("*")]).check(&headers(&[("origin", "https://x"), ("host", "gw")])).is_ok());
    }
}
