//! `[endpoints.<name>]` with `type = "mqtt"`: an MQTT 5 broker, and the TLS settings
//! of its connection.
//!
//! The struct is built from TOML here and in code by endpoints that speak MQTT to
//! their broker (Solace over `transport = "mqtt"`): every field is public and
//! [`MqttConfig::new`] fills the defaults.

use std::collections::BTreeMap;

use rumqttc::v5::mqttbytes::QoS;
use serde::Deserialize;

use tokio::task::JoinHandle;

use crate::adapter::AdapterSource;
use crate::component::{Component, ComponentContext, StartError};
use crate::config::{Problems, Secret};
use crate::endpoints::tls::TlsFiles;
use crate::endpoints::{ConsumerMode, Endpoint};
use crate::pipeline::TargetSender;

/// The port of `mqtt://` without one.
const MQTT_PORT: u16 = 1883;
/// The port of `mqtts://` without one.
const MQTTS_PORT: u16 = 8883;
/// The largest MQTT packet: a four-byte remaining length.
const MAX_PACKET_BYTES: usize = 268_435_455;

/// `type = "mqtt"`: an MQTT 5 broker, as a target (publishing, confirmed by PUBACK or
/// PUBCOMP) and, when routes leave it, as a source (subscribing, acknowledged after
/// hand-off).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker: `mqtt://host:1883` or `mqtts://host:8883` (TLS). Credentials go in
    /// `username` and `password`, not here.
    pub url: String,
    /// The user name of the CONNECT packet.
    #[serde(default)]
    pub username: Option<String>,
    /// The password of the CONNECT packet; give it as `${ENV}`. Never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The client id; unset: `mediation-<endpoint>-<instance_id>`, one per host instance
    /// so that replicas do not take over each other's session.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The endpoint adapter mapping events to PUBLISH records and back.
    #[serde(default = "default_adapter")]
    pub adapter: AdapterSource,
    /// Settings passed to the adapter's `configure`.
    #[serde(default)]
    pub adapter_settings: BTreeMap<String, String>,
    /// The QoS of records that carry no `:qos` (0, 1 or 2).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The retain flag of records that carry no `:retain`.
    #[serde(default)]
    pub retain: bool,
    /// The largest payload published; a bigger record fails, naming this limit.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Deliveries queued before the pipeline waits (and then answers busy).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// The most events mapped in one adapter call and published before their
    /// acknowledgements are awaited together; also the most received messages handed
    /// over at once.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long a batch's publishes may wait for PUBACK (QoS 1) or PUBCOMP (QoS 2).
    #[serde(default = "default_confirm_timeout_ms")]
    pub confirm_timeout_ms: u64,
    /// How long one attempt to connect (CONNACK) and subscribe (SUBACK) may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// The keep-alive interval: a silent connection is noticed after about 1.5 times it.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u16,
    /// How long the broker keeps the session (subscriptions and unacknowledged or queued
    /// messages) after a disconnection; 0 ends it with the connection.
    #[serde(default = "default_session_expiry_s")]
    pub session_expiry_s: u32,
    /// QoS 1 and 2 messages the broker may send before the host acknowledged them;
    /// bounds what the host holds while the bus is full.
    #[serde(default = "default_receive_maximum")]
    pub receive_maximum: u16,
    /// How this host subscribes when routes leave the endpoint: `broadcast` (every
    /// replica gets every message) or `shared` (`$share/<share_group>/<filter>`).
    #[serde(default)]
    pub consumer: ConsumerMode,
    /// The share group of `consumer = "shared"`; unset: the endpoint's name.
    #[serde(default)]
    pub share_group: Option<String>,
    /// The topic filters subscribed to when routes leave the endpoint.
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// The maximum QoS of the subscriptions (0, 1 or 2).
    #[serde(default = "default_qos")]
    pub subscription_qos: u8,
    /// Certificates for `mqtts://`.
    #[serde(default)]
    pub tls: TlsFiles,
    /// How logs and `/readyz` name the broker instead of its address: set by endpoints
    /// built on this one (Solace names its VPN). Not a configuration field.
    #[serde(skip)]
    pub broker_label: Option<String>,
}

/// Where the broker is, parsed from [`MqttConfig::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or IP address; the name TLS checks.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

/// Not `const`: an adapter source owns its name.
fn default_adapter() -> AdapterSource {
    AdapterSource::Builtin(String::from("mqtt5"))
}

const fn default_qos() -> u8 {
    1
}

const fn default_max_message_bytes() -> usize {
    1024 * 1024
}

const fn default_queue_capacity() -> usize {
    1024
}

const fn default_max_batch() -> usize {
    256
}

const fn default_confirm_timeout_ms() -> u64 {
    5_000
}

const fn default_connect_timeout_ms() -> u64 {
    10_000
}

const fn default_keep_alive_s() -> u16 {
    30
}

const fn default_session_expiry_s() -> u32 {
    300
}

const fn default_receive_maximum() -> u16 {
    256
}

impl MqttConfig {
    /// A configuration for the broker at `url` with every other setting at its default.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            client_id: None,
            adapter: default_adapter(),
            adapter_settings: BTreeMap::new(),
            qos: default_qos(),
            retain: false,
            max_message_bytes: default_max_message_bytes(),
            queue_capacity: default_queue_capacity(),
            max_batch: default_max_batch(),
            confirm_timeout_ms: default_confirm_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            keep_alive_s: default_keep_alive_s(),
            session_expiry_s: default_session_expiry_s(),
            receive_maximum: default_receive_maximum(),
            consumer: ConsumerMode::default(),
            share_group: None,
            subscriptions: Vec::new(),
            subscription_qos: default_qos(),
            tls: TlsFiles::default(),
            broker_label: None,
        }
    }

    /// The client id of this host instance.
    #[must_use]
    pub fn client_id(&self, endpoint: &str, instance_id: &str) -> String {
        self.client_id.clone().unwrap_or_else(|| format!("mediation-{endpoint}-{instance_id}"))
    }

    /// The filters as subscribed: with `$share/<group>/` in shared mode.
    #[must_use]
    pub fn subscribed_filters(&self, endpoint: &str) -> Vec<String> {
        match self.consumer {
            ConsumerMode::Broadcast => self.subscriptions.clone(),
            ConsumerMode::Shared => {
                let group = self.share_group.as_deref().unwrap_or(endpoint);
                self.subscriptions.iter().map(|filter| format!("$share/{group}/{filter}")).collect()
            }
        }
    }
}

/// The QoS of a validated number (0, 1 or 2; above 2 is read as 2).
#[must_use]
pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Checks an MQTT topic filter: not empty, no U+0000, at most 65535 bytes, `#` only as
/// the whole last level, `+` only as a whole level.
///
/// # Errors
/// A message naming the filter and what is wrong with it.
pub fn check_filter(filter: &str) -> Result<(), String> {
    let levels: Vec<&str> = filter.split('/').collect();
    let problem = if filter.is_empty() {
        Some("is empty")
    } else if filter.contains('\0') {
        Some("contains U+0000")
    } else if filter.len() > 65_535 {
        Some("is longer than 65535 bytes")
    } else if levels.iter().enumerate().any(|(i, l)| l.contains('#') && (*l != "#" || i + 1 != levels.len())) {
        Some("has `#` somewhere else than as the whole last level")
    } else if levels.iter().any(|l| l.contains('+') && *l != "+") {
        Some("has `+` inside a level; it must be a whole level")
    } else if filter.starts_with("$share/") {
        Some("is already a shared subscription; set `consumer = \"shared\"` instead")
    } else {
        None
    };
    problem.map_or(Ok(()), |problem| Err(format!("topic filter `{}` {problem}", filter.escape_debug())))
}

/// Parses the broker URL: `mqtt://host[:port]` or `mqtts://host[:port]`.
///
/// # Errors
/// What is wrong with it. A URL with credentials is refused without repeating them.
pub fn parse_url(text: &str) -> Result<BrokerAddress, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(String::from("must not carry credentials; set `username` and `password` instead"));
    }
    let tls = match url.scheme() {
        "mqtt" => false,
        "mqtts" => true,
        other => return Err(format!("scheme `{other}`: use `mqtt://` or `mqtts://` (TLS)")),
    };
    let host = match url.host() {
        Some(url::Host::Domain(domain)) => domain.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(format!("`{text}` has no host")),
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(format!("`{text}`: an MQTT URL has no path or query"));
    }
    let port = url.port().unwrap_or(if tls { MQTTS_PORT } else { MQTT_PORT });
    Ok(BrokerAddress { host, port, tls })
}

impl Component for MqttConfig {
    fn type_name(&self) -> &'static str {
        "mqtt"
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        Some(&self.adapter)
    }

    /// Reports every problem of the settings under the TOML path `path`.
    fn validate(&self, path: &str, problems: &mut Problems) {
        let tls = match parse_url(&self.url) {
            Ok(address) => Some(address.tls),
            Err(message) => {
                problems.add(format!("{path}.url"), message);
                None
            }
        };
        problems.check(self.qos <= 2, format!("{path}.qos"), "must be 0, 1 or 2");
        problems.check(self.subscription_qos <= 2, format!("{path}.subscription_qos"), "must be 0, 1 or 2");
        problems.check(
            (1..=MAX_PACKET_BYTES).contains(&self.max_message_bytes),
            format!("{path}.max_message_bytes"),
            format!("must be from 1 to {MAX_PACKET_BYTES} (the largest MQTT packet)"),
        );
        problems.check(self.queue_capacity > 0, format!("{path}.queue_capacity"), "must be at least 1");
        problems.check(self.max_batch > 0, format!("{path}.max_batch"), "must be at least 1");
        problems.check(self.confirm_timeout_ms > 0, format!("{path}.confirm_timeout_ms"), "must be at least 1");
        problems.check(self.connect_timeout_ms > 0, format!("{path}.connect_timeout_ms"), "must be at least 1");
        problems.check(self.keep_alive_s >= 5, format!("{path}.keep_alive_s"), "must be at least 5");
        problems.check(
            self.receive_maximum > 0,
            format!("{path}.receive_maximum"),
            "must be at least 1: MQTT 5 forbids 0",
        );
        problems.check(
            self.password.is_none() || self.username.is_some(),
            format!("{path}.password"),
            "needs `username`",
        );
        if let Some(client_id) = &self.client_id {
            problems.check(
                !client_id.is_empty() && !client_id.contains('\0'),
                format!("{path}.client_id"),
                "must not be empty or contain U+0000",
            );
        }
        if let Some(group) = &self.share_group {
            problems.check(
                !group.is_empty() && !group.contains(['/', '+', '#', '\0']),
                format!("{path}.share_group"),
                format!("`{group}` must not be empty or contain `/`, `+`, `#` or U+0000"),
            );
        }
        problems.check(
            self.consumer == ConsumerMode::Shared || self.share_group.is_none(),
            format!("{path}.share_group"),
            "is for `consumer = \"shared\"`",
        );
        for (i, filter) in self.subscriptions.iter().enumerate() {
            if let Err(message) = check_filter(filter) {
                problems.add(format!("{path}.subscriptions[{i}]"), message);
            }
        }
        self.tls.validate(&format!("{path}.tls"), tls, "mqtts", problems);
    }
}

impl Endpoint for MqttConfig {
    fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        Some(&mut self.adapter)
    }

    fn spawn(&self, ctx: ComponentContext) -> Result<(TargetSender, JoinHandle<()>), StartError> {
        super::spawn(ctx, self)
    }

    fn adapter_settings(&self) -> BTreeMap<String, String> {
        self.adapter_settings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems of `[endpoints.m]` with `fields`, found the way the host finds them.
    fn problems(fields: &str) -> Vec<String> {
        crate::host::endpoint_problems("m", "mqtt", fields)
    }

    #[test]
    fn defaults_match_new_and_publish_qos_1() {
        let parsed: MqttConfig = toml::from_str(r#"url = "mqtt://127.0.0.1""#).expect("valid");
        let built = MqttConfig::new("mqtt://127.0.0.1");
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
        assert_eq!((built.qos, built.retain, built.session_expiry_s, built.receive_maximum), (1, false, 300, 256));
        assert_eq!(built.adapter, AdapterSource::Builtin(String::from("mqtt5")));
        assert_eq!(problems(r#"url = "mqtt://127.0.0.1""#), Vec::<String>::new());
        assert_eq!(built.client_id("events", "pod-1"), "mediation-events-pod-1");
    }

    #[test]
    fn every_problem_is_reported_by_path() {
        let found = problems(
            r#"
            url = "mqtt://user:hunter2@broker"
            qos = 3
            password = "x"
            receive_maximum = 0
            max_message_bytes = 0
            share_group = "a/b"
            subscriptions = ["ok/#", "a/#/b", "a/b+", ""]
            tls = { ca_file = "/nonexistent/ca.pem" }
            "#,
        );
        for want in [
            "endpoints.m.url: must not carry credentials",
            "endpoints.m.qos: must be 0, 1 or 2",
            "endpoints.m.password: needs `username`",
            "endpoints.m.receive_maximum: must be at least 1",
            "endpoints.m.max_message_bytes: must be from 1",
            "endpoints.m.share_group: `a/b` must not be empty",
            "endpoints.m.share_group: is for `consumer = \"shared\"`",
            "endpoints.m.subscriptions[1]: topic filter `a/#/b` has `#` somewhere else",
            "endpoints.m.subscriptions[2]: topic filter `a/b+` has `+` inside a level",
            "endpoints.m.subscriptions[3]: topic filter `` is empty",
            "endpoints.m.tls.ca_file: /nonexistent/ca.pem does not exist",
        ] {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing `{want}` in {found:#?}");
        }
        assert!(found.iter().all(|p| !p.contains("hunter2")), "{found:#?}");
        assert_eq!(found.len(), 11, "{found:#?}");
    }

    #[test]
    fn urls_name_host_port_and_tls() {
        let plain = parse_url("mqtt://127.0.0.1").expect("valid");
        assert_eq!(plain, BrokerAddress { host: String::from("127.0.0.1"), port: 1883, tls: false });
        let secure = parse_url("mqtts://broker.example:9883").expect("valid");
        assert_eq!(secure, BrokerAddress { host: String::from("broker.example"), port: 9883, tls: true });
        assert_eq!(parse_url("mqtts://[::1]").expect("valid").port, 8883);
        assert!(parse_url("tcp://h").expect_err("scheme").starts_with("scheme `tcp`"));
        assert!(parse_url("mqtt://h/topic").expect_err("path").contains("no path"));
    }

    #[test]
    fn shared_filters_carry_the_group() {
        let mut config = MqttConfig::new("mqtt://h");
        config.subscriptions = vec![String::from("a/#"), String::from("b/+")];
        assert_eq!(config.subscribed_filters("ep"), ["a/#", "b/+"]);
        config.consumer = ConsumerMode::Shared;
        assert_eq!(config.subscribed_filters("ep"), ["$share/ep/a/#", "$share/ep/b/+"]);
        config.share_group = Some(String::from("g"));
        assert_eq!(config.subscribed_filters("ep"), ["$share/g/a/#", "$share/g/b/+"]);
        assert_eq!(check_filter("#"), Ok(()));
        assert_eq!(check_filter("+/x/+"), Ok(()));
    }

    #[test]
    fn tls_files_are_read_and_need_an_mqtts_url() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").expect("written");
        let fields = format!("url = \"mqtt://h\"\ntls = {{ ca_file = \"{}\" }}", ca.display());
        assert_eq!(problems(&fields), ["endpoints.m.tls: TLS settings need a TLS url (`mqtts://`)"]);
        let config: MqttConfig = toml::from_str(&fields.replace("mqtt://", "mqtts://")).expect("valid");
        let error = config.tls.client_config().expect_err("no certificate in it");
        assert_eq!(error, format!("{} holds no PEM certificate", ca.display()));
        assert!(TlsFiles::default().client_config().is_ok(), "the system roots alone");
    }
}
