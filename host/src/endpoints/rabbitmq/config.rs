//! `[endpoints.<name>]` with `type = "rabbitmq"`, and the broker address it names.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use serde::Deserialize;

use tokio::task::JoinHandle;

use crate::adapter::AdapterSource;
use crate::component::{Component, ComponentContext, StartError};
use crate::config::{Problems, Secret, redact_url};
use crate::endpoints::tls::TlsFiles;
use crate::endpoints::{ConsumerMode, Endpoint};
use crate::pipeline::TargetSender;

/// The longest AMQP 0-9-1 short string (exchange, queue and routing key names).
const MAX_SHORT_STRING: usize = 255;

/// `type = "rabbitmq"`: an AMQP 0-9-1 broker, as a target (publishing with publisher
/// confirms) and, when routes leave it, as a source (consuming with manual acks).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqConfig {
    /// The broker: `amqp://user:password@host:5672/vhost` (`%2f` is the vhost `/`), or
    /// `amqps://` for TLS. Query parameters `heartbeat`, `frame_max`, `channel_max` and
    /// `connection_timeout` are passed on. Give it as `${ENV}`; it is never logged.
    pub url: Secret,
    /// The endpoint adapter mapping events to records and back.
    #[serde(default = "default_adapter")]
    pub adapter: AdapterSource,
    /// Settings passed to the adapter's `configure`.
    #[serde(default)]
    pub adapter_settings: BTreeMap<String, String>,
    /// The exchange to publish to. It is checked to exist at every connect, given to
    /// the default adapter as its `exchange` setting, and used for records that name
    /// no exchange. Unset: the adapter decides, else the default exchange (`""`).
    #[serde(default)]
    pub exchange: Option<String>,
    /// Publish with the `mandatory` flag: a message no queue is bound for is returned
    /// by the broker, and that event fails instead of vanishing.
    #[serde(default = "default_mandatory")]
    pub mandatory: bool,
    /// Deliveries queued before the pipeline waits (and then answers busy).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// The most events mapped in one adapter call and published before their confirms
    /// are awaited together; also the most consumed messages handed over at once.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// The largest payload published; a larger record fails with
    /// outcome `too_large` (HTTP 413) naming this limit. RabbitMQ's own default limit
    /// is 128 MiB (`max_message_size`); large messages also hold the broker's memory.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How long a published message may wait for the broker's confirm before its
    /// event fails (it may or may not have been delivered).
    #[serde(default = "default_confirm_timeout_ms")]
    pub confirm_timeout_ms: u64,
    /// How long one attempt to connect and declare the topology may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How this host consumes when routes leave the endpoint: `broadcast` (an
    /// exclusive, auto-delete queue per host instance, bound to `bind_exchange`;
    /// messages published while an instance is disconnected are not kept for it) or
    /// `shared` (the durable queue `queue`, consumed competitively; messages wait in it
    /// while no instance is connected).
    #[serde(default)]
    pub consumer: ConsumerMode,
    /// The exchange the consumed queue is bound to. Required to consume in `broadcast`
    /// mode; optional in `shared` mode, whose queue may be fed otherwise.
    #[serde(default)]
    pub bind_exchange: Option<String>,
    /// The binding key of that binding; unset means `#` (everything, on a topic
    /// exchange; fanout and headers exchanges ignore it).
    #[serde(default)]
    pub binding_key: Option<String>,
    /// The durable queue consumed in `shared` mode (declared if missing).
    #[serde(default)]
    pub queue: Option<String>,
    /// Unacknowledged messages the broker may send ahead; bounds what the host holds
    /// while the bus is full.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Certificates for `amqps://` URLs.
    #[serde(default)]
    pub tls: TlsFiles,
}

/// Not `const`: an adapter source owns its name.
fn default_adapter() -> AdapterSource {
    AdapterSource::Builtin(String::from("rabbitmq"))
}

const fn default_mandatory() -> bool {
    true
}

const fn default_queue_capacity() -> usize {
    1024
}

const fn default_max_batch() -> usize {
    256
}

/// 16 MiB: well under the broker's 128 MiB, and as much as one event usually carries.
const fn default_max_message_bytes() -> usize {
    16 * 1024 * 1024
}

const fn default_confirm_timeout_ms() -> u64 {
    5_000
}

const fn default_connect_timeout_ms() -> u64 {
    10_000
}

const fn default_prefetch() -> u16 {
    256
}

impl RabbitMqConfig {
    /// True when the adapter is the default `builtin:rabbitmq`.
    fn is_default_adapter(&self) -> bool {
        matches!(&self.adapter, AdapterSource::Builtin(name) if name == "rabbitmq")
    }

    /// The broker address as logs may show it.
    #[must_use]
    pub fn display_url(&self) -> String {
        redact_url(self.url.expose())
    }
}

/// Reads the TLS files into the client library's settings (lapin takes PEM text).
///
/// # Errors
/// A file that cannot be read, named.
pub fn load_tls(files: &TlsFiles) -> Result<OwnedTLSConfig, String> {
    let read =
        |file: &PathBuf| std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()));
    let cert_chain = files.ca_file.as_ref().map(read).transpose()?;
    let identity = match (&files.client_cert_file, &files.client_key_file) {
        (Some(cert), Some(key)) => {
            Some(OwnedIdentity::PKCS8 { pem: read(cert)?.into_bytes(), key: read(key)?.into_bytes() })
        }
        _ => None,
    };
    Ok(OwnedTLSConfig { identity, cert_chain })
}

/// Parses an AMQP URL. Errors never repeat the URL's password.
///
/// The host is taken from the URL as written: the client library reads only domain
/// names and would replace an IP address (`127.0.0.1`, `[::1]`) with `localhost`.
///
/// # Errors
/// What is wrong with the URL, for the configuration report.
pub fn parse_url(text: &str) -> Result<AMQPUri, String> {
    let redacted = redact_url(text);
    let explain = |message: String| {
        // The library's messages may quote the URL whole.
        format!("not a valid AMQP URL ({}): {redacted}", message.replace(text, &redacted))
    };
    let url = url::Url::parse(text).map_err(|e| explain(e.to_string()))?;
    let mut uri = AMQPUri::from_str(text).map_err(explain)?;
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.clone_into(&mut uri.authority.host),
        Some(url::Host::Ipv4(ip)) => uri.authority.host = ip.to_string(),
        Some(url::Host::Ipv6(ip)) => uri.authority.host = ip.to_string(),
        None => return Err(explain(String::from("no host"))),
    }
    Ok(uri)
}

impl Component for RabbitMqConfig {
    fn type_name(&self) -> &'static str {
        "rabbitmq"
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        Some(&self.adapter)
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        let scheme = match parse_url(self.url.expose()) {
            Ok(uri) => Some(uri.scheme),
            Err(message) => {
                problems.add(format!("{path}.url"), message);
                None
            }
        };
        problems.check(self.queue_capacity > 0, format!("{path}.queue_capacity"), "must be at least 1");
        problems.check(self.max_batch > 0, format!("{path}.max_batch"), "must be at least 1");
        problems.check(self.max_message_bytes > 0, format!("{path}.max_message_bytes"), "must be at least 1");
        problems.check(self.confirm_timeout_ms > 0, format!("{path}.confirm_timeout_ms"), "must be at least 1");
        problems.check(self.connect_timeout_ms > 0, format!("{path}.connect_timeout_ms"), "must be at least 1");
        problems.check(
            self.prefetch > 0,
            format!("{path}.prefetch"),
            "must be at least 1: 0 would let the broker send without limit",
        );
        for (field, value) in [
            ("exchange", &self.exchange),
            ("bind_exchange", &self.bind_exchange),
            ("binding_key", &self.binding_key),
            ("queue", &self.queue),
        ] {
            if let Some(value) = value {
                problems.check(
                    value.len() <= MAX_SHORT_STRING,
                    format!("{path}.{field}"),
                    format!("is {} bytes long; AMQP names are at most {MAX_SHORT_STRING}", value.len()),
                );
            }
        }
        match (self.consumer, &self.queue) {
            (ConsumerMode::Shared, None) => problems
                .add(format!("{path}.queue"), "`consumer = \"shared\"` consumes a named durable queue; set `queue`"),
            (ConsumerMode::Broadcast, Some(_)) => problems.add(
                format!("{path}.queue"),
                "is for `consumer = \"shared\"`; a broadcast queue is named after the host instance",
            ),
            (ConsumerMode::Shared, Some(queue)) => problems.check(
                !queue.is_empty() && !queue.starts_with("amq."),
                format!("{path}.queue"),
                format!("`{queue}` cannot be declared: names starting with `amq.` are the broker's, and one is needed"),
            ),
            (ConsumerMode::Broadcast, None) => {}
        }
        if self.exchange.is_some() && self.is_default_adapter() && self.adapter_settings.contains_key("exchange") {
            problems.add(
                format!("{path}.adapter_settings.exchange"),
                "the endpoint's `exchange` is already the default adapter's `exchange` setting; set only one",
            );
        }
        let tls = scheme.map(|scheme| scheme == AMQPScheme::AMQPS);
        self.tls.validate(&format!("{path}.tls"), tls, "amqps", problems);
    }
}

impl Endpoint for RabbitMqConfig {
    fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        Some(&mut self.adapter)
    }

    fn spawn(&self, ctx: ComponentContext) -> Result<(TargetSender, JoinHandle<()>), StartError> {
        super::spawn(ctx, self)
    }

    /// The adapter's settings: `adapter_settings`, plus `exchange` for the default adapter.
    fn adapter_settings(&self) -> BTreeMap<String, String> {
        let mut settings = self.adapter_settings.clone();
        if let Some(exchange) = &self.exchange
            && self.is_default_adapter()
        {
            settings.entry(String::from("exchange")).or_insert_with(|| exchange.clone());
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> RabbitMqConfig {
        toml::from_str(toml).unwrap_or_else(|e| panic!("valid: {e}"))
    }

    /// The problems of `[endpoints.rmq]` with `fields`, found the way the host finds them.
    fn problems(fields: &str) -> Vec<String> {
        crate::host::endpoint_problems("rmq", "rabbitmq", fields)
    }

    #[test]
    fn defaults_publish_with_mandatory_confirms_and_consume_broadcast() {
        let config = parse(r#"url = "amqp://guest:guest@127.0.0.1:5672/%2f""#);
        assert_eq!(config.adapter, AdapterSource::Builtin(String::from("rabbitmq")));
        assert!(config.mandatory);
        assert_eq!(config.consumer, ConsumerMode::Broadcast);
        assert_eq!((config.queue_capacity, config.max_batch, config.prefetch), (1024, 256, 256));
        assert_eq!(problems(r#"url = "amqp://guest:guest@127.0.0.1:5672/%2f""#), Vec::<String>::new());
        assert_eq!(format!("{config:?}").matches("guest:guest").count(), 0, "Debug never shows the URL");
        assert_eq!(config.display_url(), "amqp://guest:[redacted]@127.0.0.1:5672/%2f");
    }

    #[test]
    fn every_problem_is_reported_by_path_without_the_password() {
        let found = problems(
            r#"
            url = "http://user:hunter2@[bad"
            queue_capacity = 0
            prefetch = 0
            consumer = "shared"
            exchange = "x"
            adapter_settings = { exchange = "y" }
            tls = { client_cert_file = "/nonexistent/cert.pem" }
            "#,
        );
        for want in [
            "endpoints.rmq.url: not a valid AMQP URL",
            "endpoints.rmq.queue_capacity: must be at least 1",
            "endpoints.rmq.prefetch: must be at least 1",
            "endpoints.rmq.queue: `consumer = \"shared\"` consumes a named durable queue",
            "endpoints.rmq.adapter_settings.exchange: the endpoint's `exchange`",
            "endpoints.rmq.tls.client_cert_file: /nonexistent/cert.pem does not exist",
            "endpoints.rmq.tls: `client_cert_file` and `client_key_file` go together",
        ] {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing `{want}` in {found:#?}");
        }
        assert!(found.iter().all(|p| !p.contains("hunter2")), "{found:#?}");
    }

    #[test]
    fn urls_keep_ip_hosts_and_need_an_amqp_scheme() {
        let uri = parse_url("amqp://u:p@127.0.0.1:5673/%2f").expect("valid");
        assert_eq!((uri.authority.host.as_str(), uri.authority.port, uri.vhost.as_str()), ("127.0.0.1", 5673, "/"));
        assert_eq!(parse_url("amqps://broker.example/v").expect("valid").authority.port, 5671);
        assert_eq!(parse_url("amqp://[::1]").expect("valid").authority.host, "::1");
        let error = parse_url("http://u:secret@host/").expect_err("not amqp");
        assert!(!error.contains("secret") && error.contains("u:[redacted]@host"), "{error}");
    }

    #[test]
    fn tls_files_are_read_at_startup_and_need_an_amqps_url() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n...\n").expect("written");
        let fields = format!("url = \"amqp://h\"\ntls = {{ ca_file = \"{}\" }}", ca.display());
        assert_eq!(problems(&fields), ["endpoints.rmq.tls: TLS settings need a TLS url (`amqps://`)"]);
        let config = parse(&fields.replace("amqp://", "amqps://"));
        let loaded = load_tls(&config.tls).expect("readable");
        assert!(loaded.cert_chain.is_some_and(|pem| pem.starts_with("-----BEGIN CERTIFICATE-----")));
        assert!(loaded.identity.is_none());
        std::fs::remove_file(&ca).expect("removed");
        assert!(load_tls(&config.tls).expect_err("gone").starts_with(&format!("cannot read {}", ca.display())));
    }

    #[test]
    fn the_endpoint_exchange_becomes_the_default_adapter_setting() {
        let config = parse("url = \"amqp://h\"\nexchange = \"events\"\nadapter_settings = { persistent = \"false\" }");
        let settings = config.adapter_settings();
        assert_eq!(settings.get("exchange").map(String::as_str), Some("events"));
        assert_eq!(settings.get("persistent").map(String::as_str), Some("false"));
        let custom = parse("url = \"amqp://h\"\nexchange = \"events\"\nadapter = \"/x.wasm\"");
        assert!(custom.adapter_settings().is_empty(), "another adapter gets only its own settings");
    }
}
