//! Client-facing components. Entrypoints share one listener and are told apart by
//! `path`; one with a `port` of its own gets a dedicated listener.
//!
//! Each entrypoint type is a module of its own (`http_post`, `sse`, `websocket`,
//! `http_get`) that implements [`EntrypointKind`] and has one line in the registry of
//! [`Kind`]; `config` holds those and the settings every entrypoint has, `cors` the browser policy applied before any of them, and `request`
//! the query and cursor parsing they share. Entrypoints that serve events to clients
//! (SSE, WebSocket, HTTP GET) are also targets: their [`hub::Hub`] takes deliveries from
//! the pipeline.

pub mod http_get;
pub mod http_post;
pub mod hub;
pub mod request;
pub mod sse;
pub mod websocket;

mod config;
mod cors;

pub use config::{Common, EntrypointConfig, EntrypointKind, Kind, validate_paths};
use cors::with_origin_policy;
pub use cors::{Origins, refuse_origin};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::adapter::{self, Adapter};
use crate::component::{ComponentContext, StartError};
use crate::config::HostConfig;
use crate::pipeline::TargetSender;
use crate::server::{self, Body, Handler, json_error};

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
        let adapter = ctx.load_adapter(&e.adapter_source(), adapter::Role::Entrypoint, &e.common.adapter_settings)?;
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
        let kind = e.kind.get();
        let handler = with_origin_policy(&entrypoint, kind.method(), kind.handler(entrypoint.clone()));
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
