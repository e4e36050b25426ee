//! `[entrypoints.<name>]`: the settings every entrypoint has ([`Common`]), the part its
//! `type` selects ([`Kind`]), and the checks across entrypoints.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::Error as _;

use super::{Entrypoint, http_get, http_post, hub, sse, websocket};
use crate::adapter::{Adapter, AdapterSource, Directions};
use crate::component::Component;
use crate::config::Problems;
use crate::server::Handler;

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

/// What an entrypoint type provides: its part of the configuration says what the
/// type is and builds its request handler. The host wires every entrypoint through
/// this trait; only the registry below names the types.
pub trait EntrypointKind {
    /// The type as written in the file.
    fn type_name(&self) -> &'static str;

    /// The builtin adapter used when the entrypoint names none: `builtin:<this>`.
    fn builtin_adapter(&self) -> &'static str;

    /// What its adapter must map, and how to say so when it does not.
    fn needs(&self) -> (Directions, &'static str);

    /// The request method it serves (preflights announce it).
    fn method(&self) -> &'static str;

    /// True for the types that serve events to clients and so hold a ring.
    fn serves_events(&self) -> bool {
        true
    }

    /// Type-specific checks, reported under `path`.
    fn validate(&self, path: &str, problems: &mut Problems);

    /// The request handler of `entrypoint`.
    fn handler(&self, entrypoint: Entrypoint) -> Handler;
}

/// The registry: the one list of entrypoint types. It declares [`Kind`], one variant
/// per type, selected by `type` in the file, and dispatches [`EntrypointKind`] to it.
macro_rules! registry {
    ($($(#[$meta:meta])* $variant:ident($config:ty),)+) => {
        /// The type-specific part, selected by `type`.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum Kind {
            $($(#[$meta])* $variant($config),)+
        }

        impl Kind {
            /// The type's side of the contract.
            #[must_use]
            pub fn get(&self) -> &dyn EntrypointKind {
                match self {
                    $(Self::$variant(k) => k,)+
                }
            }
        }
    };
}

registry! {
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
        self.common
            .adapter
            .clone()
            .unwrap_or_else(|| AdapterSource::Builtin(self.kind.get().builtin_adapter().to_owned()))
    }

    /// Checks that a loaded `adapter` can serve this entrypoint, at startup and in
    /// `check`.
    ///
    /// # Errors
    /// Why it cannot.
    pub fn fit(&self, adapter: &Adapter) -> Result<(), String> {
        // Client frames are decoded (upstream) by every type that takes them, and
        // events are encoded (downstream) by every type that serves them.
        let (needed, what) = self.kind.get().needs();
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
        self.kind.get().serves_events()
    }
}

impl Component for EntrypointConfig {
    fn type_name(&self) -> &'static str {
        self.kind.get().type_name()
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
        self.kind.get().validate(path, problems);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_names_itself_as_the_file_does_and_has_its_builtin_adapter() {
        let types = [("http_post", "http-post"), ("sse", "sse"), ("websocket", "websocket"), ("http_get", "http-get")];
        for (name, builtin) in types {
            let config: EntrypointConfig = toml::from_str(&format!("type = \"{name}\"\npath = \"/{name}\""))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(config.type_name(), name);
            assert_eq!(config.adapter_source(), AdapterSource::Builtin(builtin.to_owned()));
            assert_eq!(config.serves_events(), name != "http_post", "{name}");
        }
    }
}
