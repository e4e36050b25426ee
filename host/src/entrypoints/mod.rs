//! Client-facing components. Entrypoints share one listener and are told apart by
//! `path`; one with a `port` of its own gets a dedicated listener.
//!
//! Each entrypoint type lives in its own folder and is selected by one variant of
//! [`EntrypointConfig`].

pub mod http_post;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::StatusCode;
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::adapter::{Adapter, AdapterSource};
use crate::config::{Component, Config, Problems};
use crate::host::{ComponentContext, StartError};
use crate::pipeline::TargetSender;
use crate::server::{self, Handler, json_error};

/// `[entrypoints.<name>]`, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntrypointConfig {
    /// HTTP POST ingest: one request body becomes one event (or one per NDJSON line).
    HttpPost(http_post::HttpPostConfig),
}

impl EntrypointConfig {
    /// The adapter reference, for path resolution.
    pub fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        match self {
            Self::HttpPost(c) => Some(&mut c.adapter),
        }
    }

    /// The request path the entrypoint serves.
    #[must_use]
    pub fn path(&self) -> &str {
        match self {
            Self::HttpPost(c) => &c.path,
        }
    }
}

impl Component for EntrypointConfig {
    fn type_name(&self) -> &'static str {
        match self {
            Self::HttpPost(_) => "http_post",
        }
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        match self {
            Self::HttpPost(c) => Some(&c.adapter),
        }
    }

    fn port(&self) -> Option<u16> {
        match self {
            Self::HttpPost(c) => c.port,
        }
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        let route_path = self.path();
        problems.check(
            route_path.starts_with('/') && !route_path.contains(['?', '#']),
            format!("{path}.path"),
            format!("`{route_path}` must start with `/` and hold no query or fragment"),
        );
        match self {
            Self::HttpPost(c) => c.validate(path, problems),
        }
    }
}

/// Checks what spans entrypoints: two on one listener may not share a path.
pub fn validate_paths(entrypoints: &BTreeMap<String, EntrypointConfig>, problems: &mut Problems) {
    let mut seen: BTreeMap<(Option<u16>, &str), &str> = BTreeMap::new();
    for (name, e) in entrypoints {
        if let Some(other) = seen.insert((e.port(), e.path()), name) {
            problems.add(format!("entrypoints.{name}.path"), format!("`{}` is already served by `{other}`", e.path()));
        }
    }
}

/// Starts every entrypoint and its listener. Returns the shared listener's address,
/// when any entrypoint uses it.
///
/// # Errors
/// When an adapter cannot be loaded or a listener cannot bind.
pub async fn start(
    config: &Config,
    context: &dyn Fn(&str) -> ComponentContext,
    _targets: &mut [Option<TargetSender>],
    adapters: &mut Vec<Adapter>,
    listeners: &mut JoinSet<()>,
) -> Result<Option<SocketAddr>, StartError> {
    let mut by_listener: BTreeMap<Option<u16>, BTreeMap<String, Handler>> = BTreeMap::new();
    for (name, entrypoint) in &config.entrypoints {
        let ctx = context(name);
        let (handler, adapter) = match entrypoint {
            EntrypointConfig::HttpPost(c) => http_post::handler(ctx, c)?,
        };
        adapters.push(adapter);
        by_listener.entry(entrypoint.port()).or_default().insert(entrypoint.path().to_owned(), handler);
    }
    let mut shared_addr = None;
    for (port, routes) in by_listener {
        let addr = port.map_or(config.host.listen, |p| SocketAddr::new(config.host.listen.ip(), p));
        let listener = server::bind(addr).await.map_err(|source| StartError::Listen {
            addr,
            what: format!("entrypoints {}", routes.keys().cloned().collect::<Vec<_>>().join(", ")),
            source,
        })?;
        let bound = listener.local_addr().map_err(|source| StartError::Listen {
            addr,
            what: String::from("entrypoints"),
            source,
        })?;
        if port.is_none() {
            shared_addr = Some(bound);
        }
        tracing::info!(%bound, paths = ?routes.keys().collect::<Vec<_>>(), "entrypoint listener bound");
        let shutdown = context("").shutdown.accept;
        server::spawn(listener, by_path(routes), server::Limits::default(), shutdown, listeners);
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
