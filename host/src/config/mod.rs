//! The vocabulary every component's configuration shares: problems reported at a TOML
//! path, secrets, `${ENV}` expansion, and the host-wide sections (`[host]`, `[bus]`,
//! `[adapters]`, `[packet_log]`). It names no component: the whole file, which does, is
//! [`crate::host::Config`].

pub(crate) mod env;
mod secret;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use secret::{Secret, redact_url};

/// One thing wrong with a configuration, at a TOML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `endpoints.orders.queue_capacity`, `routes[2].target`.
    pub path: String,
    /// What is wrong, and where it can, what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the problems are in, when it came from one.
    pub file: Option<PathBuf>,
    /// The problems, in file order where that is known.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{} has {} problem(s):", file.display(), self.problems.len())?,
            None => write!(f, "configuration has {} problem(s):", self.problems.len())?,
        }
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Every problem on one line, for a log field.
    #[must_use]
    pub fn inline(&self) -> String {
        let problems: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        match &self.file {
            Some(file) => format!("{}: {}", file.display(), problems.join("; ")),
            None => problems.join("; "),
        }
    }
}

/// Collects problems while a configuration is checked.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records that `path` is wrong because of `message`.
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), message: message.into() });
    }

    /// Records a problem when `ok` is false.
    pub fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.add(path, message);
        }
    }

    /// True when nothing was found wrong.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `value` when nothing was found, otherwise every problem found, in `file` if given.
    pub(crate) fn into_result<T>(self, value: T, file: Option<&Path>) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError { file: file.map(Path::to_path_buf), problems: self.0 })
        }
    }
}

/// `[host]`: listeners, identity and process-wide limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// This replica's id, which keeps broker client ids and per-instance queues apart
    /// across replicas. Defaults to `$HOSTNAME`, then to `mediation-host`.
    pub instance_id: Option<String>,
    /// The shared listener of every entrypoint without a port of its own. Loopback by
    /// default: Envoy runs in the same container.
    pub listen: SocketAddr,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen: SocketAddr,
    /// The largest message or request body accepted; larger ones are refused whole
    /// (HTTP 413, WebSocket close 1009), never truncated.
    pub max_message_bytes: usize,
    /// Time a client has to send a request's headers; slower clients (slowloris) are
    /// disconnected.
    pub header_read_timeout_ms: u64,
    /// The largest request head (request line and headers) accepted; larger ones get
    /// 431. Envoy's default limit (60 KiB), so that whatever Envoy forwards fits, and
    /// nothing larger is buffered.
    pub max_header_bytes: usize,
    /// The longest pause between two reads of a request body (nginx's
    /// `client_body_timeout`); a body that stalls longer gets 408.
    pub body_read_timeout_ms: u64,
    /// Bytes that request bodies still arriving may hold in memory, across every
    /// connection; a body that would go past it gets 503 with `Retry-After`.
    pub body_memory_bytes: usize,
    /// The longest a streaming client (SSE, WebSocket) may take to accept more bytes
    /// (nginx's `send_timeout`); a client that stops reading for longer is cut off
    /// and counted, whether or not the replay ring has moved past it yet.
    pub send_timeout_ms: u64,
    /// How long shutdown may take to drain the bus and flush producers.
    pub shutdown_timeout_ms: u64,
    /// How often the config file is checked for changes to hot-reload routes; 0 turns
    /// file watching off (SIGHUP still reloads).
    pub reload_poll_ms: u64,
    /// Operational log format on stderr: `text` or `json`. The packet log on stdout is
    /// always JSON.
    pub log_format: LogFormat,
}

/// How operational logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

const fn default_listen() -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080)
}

const fn default_admin_listen() -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090)
}

/// 1 MiB: the largest message by default, as most brokers' own defaults are about that size.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// 60 KiB, Envoy's default `max_request_headers_kb`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 60 * 1024;

/// The smallest `max_header_bytes`: below it, ordinary browser requests do not fit.
pub(crate) const MIN_HEADER_BYTES: usize = 8192;

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            instance_id: None,
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            header_read_timeout_ms: 10_000,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            body_read_timeout_ms: 10_000,
            body_memory_bytes: 64 * 1024 * 1024,
            send_timeout_ms: 30_000,
            shutdown_timeout_ms: 10_000,
            reload_poll_ms: 2_000,
            log_format: LogFormat::Text,
        }
    }
}

impl HostConfig {
    /// The instance id: configured, else `$HOSTNAME`, else `mediation-host`.
    #[must_use]
    pub fn instance_id(&self) -> String {
        self.instance_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| String::from("mediation-host"))
    }
}

/// `[bus]`: the bounded queue between ingress and the pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Pipeline workers, each owning one shard; events with the same ordering key
    /// always land on the same shard. 0 means one per CPU.
    pub shards: usize,
    /// Events each shard queues before publishers wait.
    pub queue_capacity: usize,
    /// How long a publisher waits for queue space before it gets `Busy` (HTTP 503 with
    /// `Retry-After`, a paused consumer).
    pub publish_timeout_ms: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self { shards: 0, queue_capacity: 4096, publish_timeout_ms: 1_000 }
    }
}

/// `[adapters]`: the sandbox every WebAssembly adapter runs in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterRuntimeConfig {
    /// Wall-clock budget of one adapter call; a guest still running then is stopped
    /// and only that batch fails.
    pub call_timeout_ms: u64,
    /// The most linear memory one adapter instance may grow to.
    pub memory_limit_bytes: usize,
    /// The most input one call takes: a larger batch is mapped in several calls, so
    /// that the deadline and the memory cap bound one call's work, not a burst's.
    pub max_call_bytes: usize,
    /// Idle instances kept per adapter for reuse.
    pub pool_size: usize,
    /// Calls after which an instance is replaced by a fresh one, so a guest that leaks
    /// cannot grow forever.
    pub recycle_after_calls: u64,
    /// Failed batches in a row after which `/readyz` reports the adapter as failing.
    pub failing_after: u32,
}

impl Default for AdapterRuntimeConfig {
    fn default() -> Self {
        Self {
            call_timeout_ms: 100,
            memory_limit_bytes: 64 * 1024 * 1024,
            max_call_bytes: 1024 * 1024,
            pool_size: 8,
            recycle_after_calls: 100_000,
            failing_after: 16,
        }
    }
}

/// `[packet_log]`: one JSON line per delivered packet (docs/packet-log.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacketLogConfig {
    /// Off writes no packet lines at all.
    pub enabled: bool,
    /// The share of successful deliveries logged, 0.0 to 1.0. Failures are always logged.
    pub sample_rate: f64,
    /// Adds the event's headers, with sensitive ones redacted.
    pub include_headers: bool,
    /// Adds the payload as text. Off by default: payloads are customer data.
    pub include_payload: bool,
    /// Header names (case-insensitive) whose values are replaced by `[redacted]`.
    pub redact_headers: Vec<String>,
}

impl Default for PacketLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_rate: 1.0,
            include_headers: false,
            include_payload: false,
            redact_headers: ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Whether `name` may name a component or an instance.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// What [`valid_name`] requires, said of `name`.
pub(crate) fn name_rule(name: &str) -> String {
    format!("`{name}` is not a valid name: use 1 to 128 letters, digits, `-`, `_` or `.`")
}
