//! `[endpoints.<name>]` with `type = "kafka"`, and the librdkafka settings it becomes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use serde::Deserialize;

use tokio::task::JoinHandle;

use crate::adapter::AdapterSource;
use crate::component::{Component, ComponentContext, StartError};
use crate::config::{Problems, Secret};
use crate::endpoints::tls::TlsFiles;
use crate::endpoints::{ConsumerMode, Endpoint};
use crate::pipeline::TargetSender;

/// The longest topic name Kafka accepts.
const MAX_TOPIC_CHARS: usize = 249;

/// Settings the endpoint derives from its own fields; a `properties` table that sets
/// one of them too is refused, so that each is decided in one place.
const OWN_PROPERTIES: [&str; 14] = [
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
    "enable.idempotence",
    "acks",
    "message.timeout.ms",
    "max.poll.interval.ms",
];

/// `type = "kafka"`: a Kafka cluster, as a target (an idempotent producer, each event
/// succeeding on its delivery report) and, when routes leave it, as a source (a consumer
/// group committing offsets only after hand-off).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port` separated by commas (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// The endpoint adapter mapping events to records and back.
    #[serde(default = "default_adapter")]
    pub adapter: AdapterSource,
    /// Settings passed to the adapter's `configure`.
    #[serde(default)]
    pub adapter_settings: BTreeMap<String, String>,
    /// The topic of records that name none. Given to the default adapter as its `topic`
    /// setting, and checked to exist at every connect.
    #[serde(default)]
    pub topic: Option<String>,
    /// The topics consumed when routes leave the endpoint; unset means `topic`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// How this host consumes: `broadcast` (a consumer group per host instance, so every
    /// replica reads every record) or `shared` (one group, `group_id`, for all replicas).
    #[serde(default)]
    pub consumer: ConsumerMode,
    /// The consumer group of `shared` mode; in `broadcast` mode the prefix of the group
    /// per instance (default `mediation.<endpoint>`), to which `.<instance id>` is added.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Where a group without a committed offset starts: `latest` or `earliest`.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// Acknowledgements the producer waits for: `all` (every in-sync replica), `1`
    /// (the leader) or `0` (none: an event then succeeds once sent).
    #[serde(default)]
    pub acks: Acks,
    /// The idempotent producer: no duplicates from the producer's own retries, order kept
    /// per partition. Needs `acks = "all"`.
    #[serde(default = "default_idempotent")]
    pub idempotent: bool,
    /// How long the producer waits to fill a batch (librdkafka `linger.ms`).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// The most bytes of one partition's batch (librdkafka `batch.size`).
    #[serde(default = "default_batch_size_bytes")]
    pub batch_size_bytes: u64,
    /// Batch compression: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// How long a record may wait for its delivery report before its event fails as a
    /// timeout (librdkafka `message.timeout.ms`); it may or may not have been written.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// How long one metadata request (the connection and readiness check) may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How often the offsets of handed-over records are committed (librdkafka
    /// `auto.commit.interval.ms`; also on a rebalance and when the host stops). Records
    /// handed over since the last commit are delivered again after a crash.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// How long the consumer may go without reading before the group gives its
    /// partitions to another member (librdkafka `max.poll.interval.ms`). While the bus is
    /// full the consumer pauses its partitions and keeps reading well within this.
    #[serde(default = "default_max_poll_interval_ms")]
    pub max_poll_interval_ms: u64,
    /// Deliveries queued before the pipeline waits (and then answers busy).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// The most events mapped in one adapter call and produced before their delivery
    /// reports are awaited together; also the most consumed records handed over at once.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// SASL authentication; its presence selects `SASL_PLAINTEXT` (or `SASL_SSL` with `tls`).
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// TLS; its presence (even `tls = {}`) selects `SSL` (or `SASL_SSL` with `sasl`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// librdkafka properties for the producer and the consumer, passed through as they are
    /// (`{ "socket.keepalive.enable" = "true" }`). Values may be `${ENV}` references.
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
    /// librdkafka properties for the producer only.
    #[serde(default)]
    pub producer_properties: BTreeMap<String, Secret>,
    /// librdkafka properties for the consumer only.
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, Secret>,
}

/// `auto.offset.reset`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// Only records written after the group first joined.
    #[default]
    Latest,
    /// Everything the topic still holds.
    Earliest,
}

/// `acks`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Acks {
    /// Every in-sync replica wrote the record.
    #[default]
    #[serde(rename = "all")]
    All,
    /// The partition leader wrote it.
    #[serde(rename = "1")]
    Leader,
    /// Nobody confirms: success means sent.
    #[serde(rename = "0")]
    None,
}

/// `compression.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Uncompressed batches.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// `sasl = { mechanism, username, password }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// The user.
    pub username: String,
    /// The password; give it as `${ENV}`. Never logged.
    pub password: Secret,
}

/// `sasl.mechanism`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// The password in the clear (use it with TLS outside a trusted network).
    #[default]
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// `tls = { ... }`: the broker's certificate is checked against the system trust store
/// plus `ca_file`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of further CA certificates to trust (`ssl.ca.location`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate presented to the broker (mutual TLS); needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// The password of an encrypted `client_key_file`; never logged.
    #[serde(default)]
    pub client_key_password: Option<Secret>,
}

/// Not `const`: an adapter source owns its name.
fn default_adapter() -> AdapterSource {
    AdapterSource::Builtin(String::from("kafka"))
}

const fn default_idempotent() -> bool {
    true
}

/// 1 ms, not librdkafka's 5: every record's sender waits for its delivery report, so
/// the linger is paid by each request; under load batches fill within 1 ms anyway
/// (docs/benchmarks.md, "Brokers": 64 POST connections made 3.0 × the rate).
const fn default_linger_ms() -> u64 {
    1
}

const fn default_batch_size_bytes() -> u64 {
    1_000_000
}

const fn default_delivery_timeout_ms() -> u64 {
    5_000
}

const fn default_connect_timeout_ms() -> u64 {
    5_000
}

const fn default_commit_interval_ms() -> u64 {
    1_000
}

const fn default_max_poll_interval_ms() -> u64 {
    300_000
}

const fn default_queue_capacity() -> usize {
    1024
}

const fn default_max_batch() -> usize {
    256
}

impl KafkaConfig {
    /// True when the adapter is the default `builtin:kafka`.
    fn is_default_adapter(&self) -> bool {
        matches!(&self.adapter, AdapterSource::Builtin(name) if name == "kafka")
    }

    /// The topics consumed: `topics`, else `topic`.
    #[must_use]
    pub fn consumed_topics(&self) -> Vec<String> {
        if self.topics.is_empty() { self.topic.iter().cloned().collect() } else { self.topics.clone() }
    }

    /// `security.protocol`, from whether `sasl` and `tls` are set.
    fn security_protocol(&self) -> &'static str {
        match (self.sasl.is_some(), self.tls.is_some()) {
            (false, false) => "plaintext",
            (false, true) => "ssl",
            (true, false) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    /// What the producer and the consumer share: the brokers, security, and `properties`.
    fn common(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers).set("security.protocol", self.security_protocol());
        if let Some(sasl) = &self.sasl {
            let mechanism = match sasl.mechanism {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            };
            config
                .set("sasl.mechanism", mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        if let Some(tls) = &self.tls {
            let path = |file: &PathBuf| file.display().to_string();
            if let Some(ca) = &tls.ca_file {
                config.set("ssl.ca.location", path(ca));
            }
            if let Some(cert) = &tls.client_cert_file {
                config.set("ssl.certificate.location", path(cert));
            }
            if let Some(key) = &tls.client_key_file {
                config.set("ssl.key.location", path(key));
            }
            if let Some(password) = &tls.client_key_password {
                config.set("ssl.key.password", password.expose());
            }
        }
        for (name, value) in &self.properties {
            config.set(name, value.expose());
        }
        config
    }

    /// The producer's librdkafka settings.
    #[must_use]
    pub fn producer(&self) -> ClientConfig {
        let mut config = self.common();
        let acks = match self.acks {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        };
        let compression = match self.compression {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        };
        config
            .set("enable.idempotence", self.idempotent.to_string())
            .set("acks", acks)
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_size_bytes.to_string())
            .set("compression.type", compression)
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string());
        for (name, value) in &self.producer_properties {
            config.set(name, value.expose());
        }
        config
    }

    /// The consumer's librdkafka settings, in the consumer group `group`. librdkafka
    /// commits every `commit_interval_ms`, but only the offsets the endpoint stored after
    /// hand-over: never one of a record still on its way.
    #[must_use]
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let mut config = self.common();
        let reset = match self.auto_offset_reset {
            OffsetReset::Latest => "latest",
            OffsetReset::Earliest => "earliest",
        };
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", self.commit_interval_ms.to_string())
            .set("auto.offset.reset", reset)
            .set("max.poll.interval.ms", self.max_poll_interval_ms.to_string());
        for (name, value) in &self.consumer_properties {
            config.set(name, value.expose());
        }
        config
    }
}

impl TlsConfig {
    /// The files, checked as every endpoint checks them (TLS is on whenever `tls` is set).
    fn validate(&self, path: &str, problems: &mut Problems) {
        let files = TlsFiles {
            ca_file: self.ca_file.clone(),
            client_cert_file: self.client_cert_file.clone(),
            client_key_file: self.client_key_file.clone(),
        };
        files.validate(path, Some(true), "SSL", problems);
    }
}

/// Checks a topic name against Kafka's rules.
fn check_topic(topic: &str) -> Result<(), String> {
    let legal = (1..=MAX_TOPIC_CHARS).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if legal {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a legal Kafka topic name (1 to {MAX_TOPIC_CHARS} characters of a-z, A-Z, 0-9, `.`, `_` and \
             `-`, and not `.` or `..`)",
            topic.escape_debug()
        ))
    }
}

impl Component for KafkaConfig {
    fn type_name(&self) -> &'static str {
        "kafka"
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        Some(&self.adapter)
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(
            self.brokers.split(',').any(|b| !b.trim().is_empty()),
            format!("{path}.brokers"),
            "must name at least one `host:port`",
        );
        if let Some(topic) = &self.topic
            && let Err(e) = check_topic(topic)
        {
            problems.add(format!("{path}.topic"), e);
        }
        for (i, topic) in self.topics.iter().enumerate() {
            if let Err(e) = check_topic(topic) {
                problems.add(format!("{path}.topics[{i}]"), e);
            }
        }
        problems.check(self.queue_capacity > 0, format!("{path}.queue_capacity"), "must be at least 1");
        problems.check(self.max_batch > 0, format!("{path}.max_batch"), "must be at least 1");
        problems.check(self.delivery_timeout_ms > 0, format!("{path}.delivery_timeout_ms"), "must be at least 1");
        problems.check(self.connect_timeout_ms > 0, format!("{path}.connect_timeout_ms"), "must be at least 1");
        problems.check(self.commit_interval_ms > 0, format!("{path}.commit_interval_ms"), "must be at least 1");
        problems.check(
            self.max_poll_interval_ms >= 3_000,
            format!("{path}.max_poll_interval_ms"),
            "must be at least 3000: the consumer polls at a third of it while paused",
        );
        problems.check(
            !self.idempotent || self.acks == Acks::All,
            format!("{path}.idempotent"),
            "the idempotent producer needs `acks = \"all\"`; set `idempotent = false` to use fewer acks",
        );
        match (self.consumer, &self.group_id) {
            (ConsumerMode::Shared, None) => problems.add(
                format!("{path}.group_id"),
                "`consumer = \"shared\"` consumes in one group across replicas; set `group_id`",
            ),
            (_, Some(group)) => problems.check(!group.is_empty(), format!("{path}.group_id"), "must not be empty"),
            (ConsumerMode::Broadcast, None) => {}
        }
        for (table, properties) in [
            ("properties", &self.properties),
            ("producer_properties", &self.producer_properties),
            ("consumer_properties", &self.consumer_properties),
        ] {
            for name in properties.keys().filter(|name| OWN_PROPERTIES.contains(&name.as_str())) {
                problems.add(
                    format!("{path}.{table}.{name}"),
                    "is set by the endpoint's own settings (brokers, sasl, tls, consumer, group_id, acks, \
                     idempotent, delivery_timeout_ms, commit_interval_ms, max_poll_interval_ms); set it there",
                );
            }
        }
        if self.topic.is_some() && self.is_default_adapter() && self.adapter_settings.contains_key("topic") {
            problems.add(
                format!("{path}.adapter_settings.topic"),
                "the endpoint's `topic` is already the default adapter's `topic` setting; set only one",
            );
        }
        if let Some(sasl) = &self.sasl {
            problems.check(!sasl.username.is_empty(), format!("{path}.sasl.username"), "must not be empty");
        }
        if let Some(tls) = &self.tls {
            tls.validate(&format!("{path}.tls"), problems);
        }
    }
}

impl Endpoint for KafkaConfig {
    fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        Some(&mut self.adapter)
    }

    fn spawn(&self, ctx: ComponentContext) -> Result<(TargetSender, JoinHandle<()>), StartError> {
        super::spawn(ctx, self)
    }

    /// The adapter's settings: `adapter_settings`, plus `topic` for the default adapter.
    fn adapter_settings(&self) -> BTreeMap<String, String> {
        let mut settings = self.adapter_settings.clone();
        if let Some(topic) = &self.topic
            && self.is_default_adapter()
        {
            settings.entry(String::from("topic")).or_insert_with(|| topic.clone());
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> KafkaConfig {
        toml::from_str(toml).unwrap_or_else(|e| panic!("valid: {e}"))
    }

    /// The problems of `[endpoints.k]` with `fields`, found the way the host finds them.
    fn problems(fields: &str) -> Vec<String> {
        crate::host::endpoint_problems("k", "kafka", fields)
    }

    #[test]
    fn defaults_produce_idempotently_with_all_acks_and_consume_broadcast() {
        let config = parse(r#"brokers = "127.0.0.1:9092""#);
        assert_eq!(config.adapter, AdapterSource::Builtin(String::from("kafka")));
        assert_eq!((config.acks, config.idempotent, config.consumer), (Acks::All, true, ConsumerMode::Broadcast));
        assert_eq!(config.auto_offset_reset, OffsetReset::Latest);
        assert_eq!(problems(r#"brokers = "127.0.0.1:9092""#), Vec::<String>::new());
        let producer = config.producer();
        for (name, value) in [
            ("bootstrap.servers", "127.0.0.1:9092"),
            ("security.protocol", "plaintext"),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "1"),
            ("compression.type", "none"),
            ("message.timeout.ms", "5000"),
        ] {
            assert_eq!(producer.get(name), Some(value), "{name}");
        }
        let consumer = config.consumer("g");
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"), "only handed-over offsets");
        assert_eq!(consumer.get("auto.commit.interval.ms"), Some("1000"));
        assert_eq!(consumer.get("group.id"), Some("g"));
        assert_eq!(consumer.get("auto.offset.reset"), Some("latest"));
    }

    #[test]
    fn sasl_tls_and_passed_through_properties_reach_librdkafka_and_the_password_is_never_shown() {
        let config = parse(
            r#"
            brokers = "b1:9094,b2:9094"
            sasl = { mechanism = "SCRAM-SHA-512", username = "u", password = "hunter2" }
            tls = {}
            compression = "zstd"
            properties = { "socket.keepalive.enable" = "true" }
            producer_properties = { "batch.num.messages" = "500" }
            consumer_properties = { "fetch.min.bytes" = "10" }
            "#,
        );
        let producer = config.producer();
        assert_eq!(producer.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(producer.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(producer.get("sasl.password"), Some("hunter2"));
        assert_eq!(producer.get("compression.type"), Some("zstd"));
        assert_eq!(producer.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(producer.get("batch.num.messages"), Some("500"));
        assert_eq!(producer.get("fetch.min.bytes"), None);
        assert_eq!(config.consumer("g").get("fetch.min.bytes"), Some("10"));
        assert_eq!(config.consumer("g").get("batch.num.messages"), None);
        assert!(!format!("{config:?}").contains("hunter2"), "Debug never shows the password");
    }

    #[test]
    fn every_problem_is_reported_by_path() {
        let found = problems(
            r#"
            brokers = " , "
            topic = "a/b"
            topics = ["ok", ""]
            consumer = "shared"
            acks = "1"
            queue_capacity = 0
            max_poll_interval_ms = 10
            properties = { "group.id" = "x", "acks" = "0" }
            adapter_settings = { topic = "y" }
            tls = { ca_file = "/nonexistent/ca.pem" }
            "#,
        );
        for want in [
            "endpoints.k.brokers: must name at least one `host:port`",
            "endpoints.k.topic: `a/b` is not a legal Kafka topic name",
            "endpoints.k.topics[1]: `` is not a legal Kafka topic name",
            "endpoints.k.group_id: `consumer = \"shared\"` consumes in one group",
            "endpoints.k.idempotent: the idempotent producer needs `acks = \"all\"`",
            "endpoints.k.queue_capacity: must be at least 1",
            "endpoints.k.max_poll_interval_ms: must be at least 3000",
            "endpoints.k.properties.group.id: is set by the endpoint's own settings",
            "endpoints.k.properties.acks: is set by the endpoint's own settings",
            "endpoints.k.adapter_settings.topic: the endpoint's `topic`",
            "endpoints.k.tls.ca_file: /nonexistent/ca.pem does not exist",
        ] {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing `{want}` in {found:#?}");
        }
    }

    #[test]
    fn the_endpoint_topic_becomes_the_default_adapter_setting_and_the_consumed_topic() {
        let config = parse("brokers = \"b:9092\"\ntopic = \"events\"");
        assert_eq!(config.adapter_settings().get("topic").map(String::as_str), Some("events"));
        assert_eq!(config.consumed_topics(), ["events"]);
        let both = parse("brokers = \"b:9092\"\ntopic = \"events\"\ntopics = [\"a\", \"b\"]");
        assert_eq!(both.consumed_topics(), ["a", "b"]);
        let custom = parse("brokers = \"b:9092\"\ntopic = \"events\"\nadapter = \"/x.wasm\"");
        assert!(custom.adapter_settings().is_empty(), "another adapter gets only its own settings");
    }
}
