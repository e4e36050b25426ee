//! `[endpoints.<name>]` with `type = "amqp"` (alias `jms`): AMQP 1.0 brokers.
//!
//! Every field is public and the struct has a [`Default`], so that other endpoint
//! types that speak AMQP 1.0 (Solace over `transport = "amqp"`) build one in code and
//! call [`super::spawn`].

use std::collections::BTreeMap;

use rustls_pki_types::ServerName;
use serde::Deserialize;

use tokio::task::JoinHandle;

use crate::adapter::AdapterSource;
use crate::component::{Component, ComponentContext, StartError};
use crate::config::{Problems, Secret, redact_url};
use crate::endpoints::tls::TlsFiles;
use crate::endpoints::{ConsumerMode, Endpoint};
use crate::pipeline::TargetSender;

/// The AMQP 1.0 endpoint's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// The broker: `amqp://host:5672`, or `amqps://host:5671` for TLS. It may carry
    /// `user:password@` (then `username`/`password` are not needed). Give it as
    /// `${ENV}`; it is logged with the password redacted.
    pub url: Secret,
    /// The SASL PLAIN user. Unset (and none in the URL): SASL ANONYMOUS.
    #[serde(default)]
    pub username: Option<String>,
    /// The SASL PLAIN password; never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The `hostname` of the AMQP `open` frame (a virtual host; the message VPN on
    /// Solace). Unset: the URL's host.
    #[serde(default)]
    pub virtual_host: Option<String>,
    /// The container id, which the broker uses as the JMS client id: durable
    /// subscriptions of `consumer = "broadcast"` are named after it. Unset:
    /// `mediation-host.<instance_id>.<endpoint>`, stable per host instance.
    #[serde(default)]
    pub container_id: Option<String>,
    /// The endpoint adapter mapping events to records and back.
    #[serde(default = "default_adapter")]
    pub adapter: AdapterSource,
    /// Settings passed to the adapter's `configure`.
    #[serde(default)]
    pub adapter_settings: BTreeMap<String, String>,
    /// What marks a queue (anycast) address; given to the default adapter too.
    #[serde(default = "default_queue_prefix")]
    pub queue_prefix: String,
    /// What marks a topic (multicast) address; given to the default adapter too.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// `unsettled` (default): each send waits for the broker's outcome and succeeds
    /// only on `accepted`. `settled`: sent pre-settled, at most once, without waiting
    /// (Solace "direct" messaging).
    #[serde(default)]
    pub delivery: DeliveryMode,
    /// Messages are sent `durable` (JMS `PERSISTENT`): the broker keeps them across a
    /// restart.
    #[serde(default = "default_true")]
    pub durable: bool,
    /// Deliveries queued before the pipeline waits (and then answers busy).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// The most events mapped in one adapter call and sent before their outcomes are
    /// awaited together; also the most consumed messages handed over at once.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long a sent message may wait for its outcome before its event fails (it may
    /// or may not have been delivered).
    #[serde(default = "default_send_timeout_ms")]
    pub send_timeout_ms: u64,
    /// How long one attempt to connect and attach the receivers may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// The AMQP idle timeout: the broker is considered gone after this long without a
    /// frame (heartbeats are sent at half of it). 0 disables it.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u32,
    /// The largest message body sent or received. A larger record fails with this limit
    /// named (502); a larger received message is rejected with it. The broker's own
    /// limit (the link's `max-message-size`) applies to the whole encoded message too.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// Queues consumed when routes leave the endpoint (bare names; `queue_prefix` is
    /// put before them). Queue consumers always compete, across host instances too.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Topics subscribed to when routes leave the endpoint (bare names, `topic_prefix`
    /// put before them; broker wildcards allowed).
    #[serde(default)]
    pub topics: Vec<String>,
    /// How host instances subscribe to `topics`: `broadcast` (each instance has its own
    /// subscription and gets every message) or `shared` (one shared subscription whose
    /// messages the instances compete for).
    #[serde(default)]
    pub consumer: ConsumerMode,
    /// The subscription name (the link name). Unset: the endpoint's name.
    #[serde(default)]
    pub subscription: Option<String>,
    /// Topic subscriptions are durable: they keep messages while the host is
    /// disconnected, and stay on the broker after the host stops (a broadcast
    /// subscription belongs to its `container_id`).
    #[serde(default = "default_true")]
    pub durable_subscription: bool,
    /// Link credit of each receiver: unsettled messages the broker may send ahead.
    /// Bounds what the host holds while the bus is full.
    #[serde(default = "default_prefetch")]
    pub prefetch: u32,
    /// Certificates for `amqps://`.
    #[serde(default)]
    pub tls: TlsFiles,
    /// The name the server certificate must carry. Unset: the URL's host.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// How logs and `/readyz` name the broker instead of the redacted URL: set by
    /// endpoints built on this one (Solace names its VPN). Not a configuration field.
    #[serde(skip)]
    pub broker_label: Option<String>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("amqp://127.0.0.1:5672"),
            username: None,
            password: None,
            virtual_host: None,
            container_id: None,
            adapter: default_adapter(),
            adapter_settings: BTreeMap::new(),
            queue_prefix: default_queue_prefix(),
            topic_prefix: default_topic_prefix(),
            delivery: DeliveryMode::default(),
            durable: true,
            queue_capacity: default_queue_capacity(),
            max_batch: default_max_batch(),
            send_timeout_ms: default_send_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_message_bytes: default_max_message_bytes(),
            queues: Vec::new(),
            topics: Vec::new(),
            consumer: ConsumerMode::default(),
            subscription: None,
            durable_subscription: true,
            prefetch: default_prefetch(),
            broker_label: None,
            tls: TlsFiles::default(),
            tls_server_name: None,
        }
    }
}

/// How sends are settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Unsettled: the event succeeds only on the broker's `accepted` outcome.
    #[default]
    Unsettled,
    /// Pre-settled: at most once; the event succeeds once the message is written.
    Settled,
}

/// Not `const`: an adapter source owns its name.
fn default_adapter() -> AdapterSource {
    AdapterSource::Builtin(String::from("jms"))
}

fn default_queue_prefix() -> String {
    String::from("queue://")
}

fn default_topic_prefix() -> String {
    String::from("topic://")
}

const fn default_true() -> bool {
    true
}

const fn default_queue_capacity() -> usize {
    1024
}

const fn default_max_batch() -> usize {
    256
}

const fn default_send_timeout_ms() -> u64 {
    5_000
}

const fn default_connect_timeout_ms() -> u64 {
    10_000
}

const fn default_idle_timeout_ms() -> u32 {
    30_000
}

const fn default_max_message_bytes() -> u64 {
    1024 * 1024
}

const fn default_prefetch() -> u32 {
    256
}

/// Where and how to connect, parsed from the URL and the credentials.
#[derive(Clone)]
pub(super) struct Broker {
    /// The host name or IP address.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The TLS client, for `amqps://`.
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// SASL PLAIN user and password; `None` for ANONYMOUS.
    pub login: Option<(String, Secret)>,
}

impl AmqpConfig {
    /// True when the adapter is the default `builtin:jms`.
    fn is_default_adapter(&self) -> bool {
        matches!(&self.adapter, AdapterSource::Builtin(name) if name == "jms")
    }

    /// The broker address as logs may show it.
    #[must_use]
    pub fn display_url(&self) -> String {
        redact_url(self.url.expose())
    }

    /// The addresses consumed, with their prefixes: queues, then topics.
    #[must_use]
    pub fn sources(&self) -> Vec<(String, bool)> {
        let queues = self.queues.iter().map(|q| (format!("{}{q}", self.queue_prefix), false));
        queues.chain(self.topics.iter().map(|t| (format!("{}{t}", self.topic_prefix), true))).collect()
    }

    /// Parses the URL, the credentials and the TLS files.
    ///
    /// # Errors
    /// What is wrong, without the password.
    pub(super) fn broker(&self) -> Result<Broker, String> {
        let url = parse_url(self.url.expose())?;
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("no host in {}", self.display_url())),
        };
        let tls = url.scheme() == "amqps";
        let port = url.port().unwrap_or(if tls { 5671 } else { 5672 });
        let decode = |s: &str| percent_decode(s);
        let login = match (&self.username, &self.password) {
            (Some(user), password) => {
                Some((user.clone(), password.clone().unwrap_or_else(|| Secret::new(String::new()))))
            }
            (None, _) if !url.username().is_empty() => {
                Some((decode(url.username()), Secret::new(decode(url.password().unwrap_or("")))))
            }
            (None, _) => None,
        };
        let tls = if tls { Some(connector(&self.tls, self.tls_server_name.as_deref(), &host)?) } else { None };
        Ok(Broker { host, port, tls, login })
    }
}

/// `%XX` escapes of a URL's user or password decoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The TLS client for a broker at `host`, checking the certificate for `server_name`
/// (else `host`).
///
/// # Errors
/// A file that cannot be read or parsed, or a bad server name, named.
fn connector(
    files: &TlsFiles,
    server_name: Option<&str>,
    host: &str,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), String> {
    let config = files.client_config()?;
    let name = server_name.unwrap_or(host);
    let server = ServerName::try_from(name.to_owned()).map_err(|e| format!("server name `{name}`: {e}"))?;
    Ok((tokio_rustls::TlsConnector::from(config), server))
}

/// Parses an AMQP 1.0 URL. Errors never repeat its password.
///
/// # Errors
/// What is wrong with the URL, for the configuration report.
pub fn parse_url(text: &str) -> Result<url::Url, String> {
    let redacted = redact_url(text);
    let url = url::Url::parse(text)
        .map_err(|e| format!("not a valid AMQP URL ({}): {redacted}", e.to_string().replace(text, &redacted)))?;
    if !matches!(url.scheme(), "amqp" | "amqps") {
        return Err(format!("not an AMQP URL (the scheme must be amqp or amqps): {redacted}"));
    }
    if url.host().is_none() {
        return Err(format!("not a valid AMQP URL (no host): {redacted}"));
    }
    Ok(url)
}

impl Component for AmqpConfig {
    fn type_name(&self) -> &'static str {
        "amqp"
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        Some(&self.adapter)
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        let tls = match parse_url(self.url.expose()) {
            Ok(url) => Some(url.scheme() == "amqps"),
            Err(message) => {
                problems.add(format!("{path}.url"), message);
                None
            }
        };
        problems.check(
            self.password.is_none() || self.username.is_some(),
            format!("{path}.password"),
            "needs `username`",
        );
        for (field, value) in [
            ("queue_capacity", self.queue_capacity as u64),
            ("max_batch", self.max_batch as u64),
            ("send_timeout_ms", self.send_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("max_message_bytes", self.max_message_bytes),
            ("prefetch", u64::from(self.prefetch)),
        ] {
            problems.check(value > 0, format!("{path}.{field}"), "must be at least 1");
        }
        let overlap = !self.queue_prefix.is_empty()
            && !self.topic_prefix.is_empty()
            && (self.queue_prefix.starts_with(&self.topic_prefix) || self.topic_prefix.starts_with(&self.queue_prefix));
        problems.check(
            !overlap,
            format!("{path}.topic_prefix"),
            format!("`{}` and `queue_prefix` `{}` overlap", self.topic_prefix, self.queue_prefix),
        );
        for (field, names) in [("queues", &self.queues), ("topics", &self.topics)] {
            for (i, name) in names.iter().enumerate() {
                problems.check(!name.is_empty(), format!("{path}.{field}[{i}]"), "must not be empty");
            }
        }
        if let Some(subscription) = &self.subscription {
            problems.check(!subscription.is_empty(), format!("{path}.subscription"), "must not be empty");
        }
        if self.is_default_adapter() {
            for field in ["queue_prefix", "topic_prefix"] {
                problems.check(
                    !self.adapter_settings.contains_key(field),
                    format!("{path}.adapter_settings.{field}"),
                    format!("the endpoint's `{field}` is already the default adapter's; set only that one"),
                );
            }
        }
        self.tls.validate(&format!("{path}.tls"), tls, "amqps", problems);
        problems.check(
            self.tls_server_name.is_none() || tls != Some(false),
            format!("{path}.tls_server_name"),
            "TLS settings need a TLS url (`amqps://`)",
        );
    }
}

impl Endpoint for AmqpConfig {
    fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        Some(&mut self.adapter)
    }

    fn spawn(&self, ctx: ComponentContext) -> Result<(TargetSender, JoinHandle<()>), StartError> {
        super::spawn(ctx, self)
    }

    /// The adapter's settings: `adapter_settings`, plus the prefixes for the default adapter.
    fn adapter_settings(&self) -> BTreeMap<String, String> {
        let mut settings = self.adapter_settings.clone();
        if self.is_default_adapter() {
            settings.insert(String::from("queue_prefix"), self.queue_prefix.clone());
            settings.insert(String::from("topic_prefix"), self.topic_prefix.clone());
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> AmqpConfig {
        toml::from_str(toml).unwrap_or_else(|e| panic!("valid: {e}"))
    }

    /// The problems of `[endpoints.jms]` with `fields`, found the way the host finds them.
    fn problems(fields: &str) -> Vec<String> {
        crate::host::endpoint_problems("jms", "amqp", fields)
    }

    #[test]
    fn defaults_send_unsettled_durable_messages_and_subscribe_per_instance() {
        let config = parse(r#"url = "amqp://127.0.0.1:5673""#);
        assert_eq!(config.adapter, AdapterSource::Builtin(String::from("jms")));
        assert_eq!((config.delivery, config.consumer), (DeliveryMode::Unsettled, ConsumerMode::Broadcast));
        assert!(config.durable && config.durable_subscription);
        assert_eq!((config.queue_prefix.as_str(), config.topic_prefix.as_str()), ("queue://", "topic://"));
        assert_eq!((config.prefetch, config.max_message_bytes), (256, 1_048_576));
        assert_eq!(problems(r#"url = "amqp://127.0.0.1:5673""#), Vec::<String>::new());
        let settings = config.adapter_settings();
        assert_eq!(settings.get("queue_prefix").map(String::as_str), Some("queue://"));
        let jms = "[endpoints.j]\ntype = \"jms\"\nurl = \"amqp://h\"";
        let parsed = crate::host::Config::parse(jms, std::path::Path::new("/nonexistent"), &|_| None);
        assert!(parsed.is_ok(), "`jms` is an alias of `amqp`");
    }

    #[test]
    fn every_problem_is_reported_by_path_without_the_password() {
        let found = problems(
            r#"
            url = "http://user:hunter2@host"
            password = "p"
            prefetch = 0
            topic_prefix = "queue://t/"
            topics = [""]
            adapter_settings = { queue_prefix = "q." }
            tls = { client_cert_file = "/nonexistent/cert.pem" }
            "#,
        );
        for want in [
            "endpoints.jms.url: not an AMQP URL",
            "endpoints.jms.password: needs `username`",
            "endpoints.jms.prefetch: must be at least 1",
            "endpoints.jms.topic_prefix: `queue://t/` and `queue_prefix` `queue://` overlap",
            "endpoints.jms.topics[0]: must not be empty",
            "endpoints.jms.adapter_settings.queue_prefix: the endpoint's `queue_prefix`",
            "endpoints.jms.tls.client_cert_file: /nonexistent/cert.pem does not exist",
            "endpoints.jms.tls: `client_cert_file` and `client_key_file` go together",
        ] {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing `{want}` in {found:#?}");
        }
        assert!(found.iter().all(|p| !p.contains("hunter2")), "{found:#?}");
    }

    #[test]
    fn credentials_come_from_the_fields_or_the_url_and_never_show() {
        let from_url = parse(r#"url = "amqp://us%40er:p%3Ass@127.0.0.1:5673""#);
        let broker = from_url.broker().expect("valid");
        let (user, password) = broker.login.expect("a login");
        assert_eq!((user.as_str(), password.expose(), broker.port), ("us@er", "p:ss", 5673));
        assert_eq!(from_url.display_url(), "amqp://us%40er:[redacted]@127.0.0.1:5673");
        let fields = parse("url = \"amqps://broker.example\"\nusername = \"u\"\npassword = \"secret\"");
        assert!(!format!("{fields:?}").contains("secret"), "Debug never shows the password");
        let broker = fields.broker().expect("valid");
        assert_eq!((broker.host.as_str(), broker.port, broker.tls.is_some()), ("broker.example", 5671, true));
        assert!(parse(r#"url = "amqp://[::1]""#).broker().expect("valid").login.is_none(), "anonymous");
    }

    #[test]
    fn sources_carry_their_prefixes() {
        let config = parse("url = \"amqp://h\"\nqueues = [\"orders\"]\ntopics = [\"prices.#\"]");
        assert_eq!(
            config.sources(),
            [(String::from("queue://orders"), false), (String::from("topic://prices.#"), true)]
        );
    }
}
