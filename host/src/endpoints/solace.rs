//! `type = "solace"`: Solace PubSub+ over its open protocols, AMQP 1.0 (the default)
//! or MQTT 5, with Solace's own settings and topic syntax.
//!
//! Solace's SMF protocol needs Solace's closed C library, so the endpoint speaks the
//! protocols every Solace broker serves beside SMF. It is a translation layer: the
//! settings become an [`AmqpConfig`] or an [`MqttConfig`] and that endpoint runs, so
//! reconnecting, readiness, confirms and acks after hand-off are theirs.
//!
//! - A Message VPN is reached through that VPN's AMQP or MQTT service port, so `host`
//!   names the port and `vpn` goes into the AMQP `open` frame's hostname, the client
//!   id, and every readiness message (a wrong port shows up as the VPN unreachable).
//! - Subscriptions are written in Solace syntax (`/` levels, `*` one level or a
//!   prefix within one, `>` one or more trailing levels). Over AMQP they are
//!   `topic://` addresses as written; over MQTT they are translated to `+`/`#` filters
//!   by the same code as the `solace` adapter, and what MQTT cannot express (a prefix
//!   `a*`, an exception `!a`) is refused when the configuration is checked.
//! - `delivery = "guaranteed"` sends unsettled over AMQP and with QoS 1 over MQTT,
//!   awaiting the broker's outcome or PUBACK; `"direct"` is QoS 0 over MQTT, and is
//!   refused over AMQP, which Solace serves as guaranteed messaging only.

use std::collections::BTreeMap;

use mediation_adapter_sdk::solace::{check_queue, check_subscription, check_topic, solace_subscription_to_mqtt};
use serde::Deserialize;

use tokio::task::JoinHandle;

use super::ConsumerMode;
use super::amqp::{self, AmqpConfig};
use super::mqtt::{self, MqttConfig};
use super::tls::TlsFiles;
use crate::adapter::AdapterSource;
use crate::component::{Component, ComponentContext, StartError};
use crate::config::{Problems, Secret};
use crate::endpoints::{AdapterLoad, Endpoint};
use crate::pipeline::TargetSender;

/// Starts the transport's endpoint with the translated settings.
///
/// # Errors
/// As the transport's endpoint, and when the settings do not translate (which the
/// configuration check reports first).
pub fn spawn(ctx: ComponentContext, config: &SolaceConfig) -> Result<(TargetSender, JoinHandle<()>), StartError> {
    match config.transport {
        Transport::Amqp => {
            let amqp = config.to_amqp().map_err(|e| ctx.refuse(e))?;
            amqp::spawn(ctx, &amqp)
        }
        Transport::Mqtt => {
            let mqtt = config.to_mqtt().map_err(|e| ctx.refuse(e))?;
            mqtt::spawn(ctx, &mqtt)
        }
    }
}

impl Component for SolaceConfig {
    fn type_name(&self) -> &'static str {
        "solace"
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        Some(&self.adapter)
    }

    /// Reports every problem under `path`.
    fn validate(&self, path: &str, problems: &mut Problems) {
        if let Err(e) = self.service() {
            problems.add(format!("{path}.host"), e);
        }
        problems.check(!self.vpn.is_empty(), format!("{path}.vpn"), "must not be empty");
        problems.check(self.max_message_bytes > 0, format!("{path}.max_message_bytes"), "must be at least 1");
        let mqtt = self.transport == Transport::Mqtt;
        if self.topic_out.is_some() && self.queue_out.is_some() {
            problems.add(format!("{path}.queue_out"), "set `topic_out` or `queue_out`, not both");
        }
        if let Some(topic) = &self.topic_out
            && let Err(e) = check_topic(topic)
        {
            problems.add(format!("{path}.topic_out"), e);
        }
        if let Some(queue) = &self.queue_out {
            if mqtt {
                problems
                    .add(format!("{path}.queue_out"), "needs `transport = \"amqp\"`: MQTT publishes to topics only");
            } else if let Err(e) = check_queue(queue) {
                problems.add(format!("{path}.queue_out"), e);
            }
        }
        if let Some(queue) = &self.queue_in {
            if mqtt {
                problems.add(
                    format!("{path}.queue_in"),
                    "needs `transport = \"amqp\"`: an MQTT client cannot bind to a Solace queue",
                );
            } else if let Err(e) = check_queue(queue) {
                problems.add(format!("{path}.queue_in"), e);
            }
        }
        for (i, subscription) in self.subscriptions.iter().enumerate() {
            let checked = if mqtt {
                solace_subscription_to_mqtt(subscription).map(drop)
            } else {
                check_subscription(subscription)
            };
            if let Err(e) = checked {
                problems.add(format!("{path}.subscriptions[{i}]"), format!("`{subscription}`: {e}"));
            }
        }
        let tls = self.service().ok().map(|s| s.tls);
        self.tls.validate(&format!("{path}.tls"), tls, "tcps", problems);
        if self.delivery == Delivery::Direct && !mqtt {
            problems.add(
                format!("{path}.delivery"),
                "`direct` needs `transport = \"mqtt\"`: Solace's AMQP service carries guaranteed messages only",
            );
        }
    }
}

impl Endpoint for SolaceConfig {
    /// The settings of the `builtin:solace` adapter that follow from the endpoint's,
    /// with the operator's `adapter_settings` on top.
    fn adapter_settings(&self) -> BTreeMap<String, String> {
        let mut settings = BTreeMap::new();
        settings.insert(String::from("transport"), String::from(self.transport.as_str()));
        if let Some(topic) = &self.topic_out {
            settings.insert(String::from("topic"), topic.clone());
        }
        if let Some(queue) = &self.queue_out {
            settings.insert(String::from("destination_kind"), String::from("queue"));
            settings.insert(String::from("queue"), queue.clone());
        }
        let mode = match self.delivery {
            Delivery::Guaranteed => "persistent",
            Delivery::Direct => "direct",
        };
        settings.insert(String::from("delivery_mode"), String::from(mode));
        if self.adapter == default_adapter() {
            settings.extend(self.adapter_settings.clone());
            settings
        } else {
            self.adapter_settings.clone()
        }
    }

    fn adapter_load(&self) -> Result<Option<AdapterLoad>, String> {
        Ok(Some(match self.transport {
            Transport::Amqp => self.to_amqp().map(|a| (a.adapter.clone(), a.adapter_settings()))?,
            Transport::Mqtt => self.to_mqtt().map(|m| (m.adapter, m.adapter_settings))?,
        }))
    }

    fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        Some(&mut self.adapter)
    }

    fn spawn(&self, ctx: ComponentContext) -> Result<(TargetSender, JoinHandle<()>), StartError> {
        spawn(ctx, self)
    }
}

/// `type = "solace"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolaceConfig {
    /// The protocol spoken to the broker.
    #[serde(default)]
    pub transport: Transport,
    /// The VPN's service: `host:port`, or a URL `tcp://`/`tcps://` (either transport),
    /// `amqp://`/`amqps://` or `mqtt://`/`mqtts://`. `tcps`, `amqps` and `mqtts` use
    /// TLS. Without a port: 5672/5671 (AMQP) or 1883/8883 (MQTT), Solace's defaults
    /// for the `default` VPN.
    pub host: String,
    /// The Message VPN the port belongs to.
    pub vpn: String,
    /// The client username.
    #[serde(default)]
    pub username: Option<String>,
    /// Its password; give it as `${ENV}`. Never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The topic events without a destination are published to.
    #[serde(default)]
    pub topic_out: Option<String>,
    /// The queue events without a destination are sent to (AMQP only).
    #[serde(default)]
    pub queue_out: Option<String>,
    /// Topic subscriptions consumed when routes leave the endpoint, in Solace syntax.
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// A queue consumed when routes leave the endpoint (AMQP only). Its consumers
    /// compete, across host instances too.
    #[serde(default)]
    pub queue_in: Option<String>,
    /// `guaranteed` (default) or `direct` (MQTT only).
    #[serde(default)]
    pub delivery: Delivery,
    /// How host instances share `subscriptions`: `broadcast` (each gets every
    /// message) or `shared` (each message reaches one instance).
    #[serde(default)]
    pub consumer: ConsumerMode,
    /// Certificates for TLS.
    #[serde(default)]
    pub tls: TlsFiles,
    /// The largest message sent or received; a larger record fails naming it.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// The endpoint adapter; `builtin:solace` gets its settings from the ones above.
    #[serde(default = "default_adapter")]
    pub adapter: AdapterSource,
    /// Extra settings for the adapter's `configure`.
    #[serde(default)]
    pub adapter_settings: BTreeMap<String, String>,
}

/// The protocol spoken to Solace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// AMQP 1.0: `topic://` and `queue://` addresses, unsettled sends.
    #[default]
    Amqp,
    /// MQTT 5: topics and translated filters, QoS 1 (or 0 for direct).
    Mqtt,
}

/// Solace's two delivery modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Persistent messages, confirmed by the broker before an event succeeds.
    #[default]
    Guaranteed,
    /// At most once: sent without waiting for the broker.
    Direct,
}

fn default_adapter() -> AdapterSource {
    AdapterSource::Builtin(String::from("solace"))
}

/// 10 MB: Solace's default maximum message size for guaranteed messages.
const fn default_max_message_bytes() -> usize {
    10_000_000
}

/// Where the broker is, parsed from `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Service {
    /// Host name or address.
    name: String,
    /// Port.
    port: u16,
    /// Whether TLS is used.
    tls: bool,
}

impl SolaceConfig {
    /// Parses `host` into the service to connect to.
    fn service(&self) -> Result<Service, String> {
        let (scheme, rest) = match self.host.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => (String::from("tcp"), self.host.as_str()),
        };
        let tls = match (scheme.as_str(), self.transport) {
            ("tcp", _) | ("amqp", Transport::Amqp) | ("mqtt", Transport::Mqtt) => false,
            ("tcps", _) | ("amqps", Transport::Amqp) | ("mqtts" | "ssl", Transport::Mqtt) => true,
            (other, transport) => {
                return Err(format!(
                    "scheme `{other}://` does not fit `transport = \"{}\"`: use `tcp://`, `tcps://` or {}",
                    transport.as_str(),
                    match transport {
                        Transport::Amqp => "`amqp://`, `amqps://`",
                        Transport::Mqtt => "`mqtt://`, `mqtts://`",
                    }
                ));
            }
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '@', '?']) {
            return Err(format!(
                "`{}` must be `host:port` (credentials go in `username`/`password`, the VPN in `vpn`)",
                self.host
            ));
        }
        let (name, port) = match rest.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(']') || rest.starts_with('[') => {
                let port = port.parse::<u16>().map_err(|_| format!("port `{port}` is not a number from 1 to 65535"))?;
                (name, port)
            }
            _ => (rest, self.transport.default_port(tls)),
        };
        if name.is_empty() || port == 0 {
            return Err(format!("`{}` has no host name or a port 0", self.host));
        }
        Ok(Service { name: name.to_owned(), port, tls })
    }

    /// How logs and `/readyz` name the broker: the VPN and where its service is.
    fn label(&self, service: &Service, scheme: &str) -> String {
        let user = self.username.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
        format!("Solace VPN `{}` at {scheme}://{user}{}:{}", self.vpn, service.name, service.port)
    }

    /// The AMQP 1.0 endpoint that serves this one (`transport = "amqp"`).
    ///
    /// # Errors
    /// When `host` is not valid (the configuration check reports it first).
    pub fn to_amqp(&self) -> Result<AmqpConfig, String> {
        let service = self.service()?;
        let scheme = if service.tls { "amqps" } else { "amqp" };
        Ok(AmqpConfig {
            url: Secret::new(format!("{scheme}://{}:{}", service.name, service.port)),
            username: self.username.clone(),
            password: self.password.clone(),
            virtual_host: Some(self.vpn.clone()),
            broker_label: Some(self.label(&service, scheme)),
            adapter: self.adapter.clone(),
            adapter_settings: self.adapter_settings(),
            delivery: amqp::DeliveryMode::Unsettled,
            max_message_bytes: self.max_message_bytes as u64,
            queues: self.queue_in.iter().cloned().collect(),
            topics: self.subscriptions.clone(),
            consumer: self.consumer,
            tls: self.tls.clone(),
            ..AmqpConfig::default()
        })
    }

    /// The MQTT 5 endpoint that serves this one (`transport = "mqtt"`).
    ///
    /// # Errors
    /// When `host` or a subscription is not valid (the configuration check reports
    /// them first).
    pub fn to_mqtt(&self) -> Result<MqttConfig, String> {
        let service = self.service()?;
        let scheme = if service.tls { "mqtts" } else { "mqtt" };
        let subscriptions = self
            .subscriptions
            .iter()
            .map(|s| solace_subscription_to_mqtt(s).map_err(|e| format!("subscription `{s}`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let qos = match self.delivery {
            Delivery::Guaranteed => 1,
            Delivery::Direct => 0,
        };
        let mut config = MqttConfig::new(format!("{scheme}://{}:{}", service.name, service.port));
        config.username = self.username.clone();
        config.password = self.password.clone();
        config.adapter = self.adapter.clone();
        config.adapter_settings = self.adapter_settings();
        config.qos = qos;
        config.subscription_qos = qos;
        config.max_message_bytes = self.max_message_bytes;
        config.subscriptions = subscriptions;
        config.consumer = self.consumer;
        config.broker_label = Some(self.label(&service, scheme));
        config.tls = self.tls.clone();
        Ok(config)
    }
}

impl Transport {
    /// The name in the configuration.
    fn as_str(self) -> &'static str {
        match self {
            Self::Amqp => "amqp",
            Self::Mqtt => "mqtt",
        }
    }

    /// Solace's default port of the service.
    fn default_port(self, tls: bool) -> u16 {
        match (self, tls) {
            (Self::Amqp, false) => 5672,
            (Self::Amqp, true) => 5671,
            (Self::Mqtt, false) => 1883,
            (Self::Mqtt, true) => 8883,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> SolaceConfig {
        toml::from_str(toml).unwrap_or_else(|e| panic!("parses: {e}"))
    }

    /// The problems of `[endpoints.s]` with `fields`, found the way the host finds them.
    fn problems(fields: &str) -> Vec<String> {
        crate::host::endpoint_problems("s", "solace", fields)
    }

    #[test]
    fn host_takes_solace_and_protocol_urls_with_default_ports() {
        let cases = [
            ("amqp", "broker:5673", ("broker", 5673, false)),
            ("amqp", "broker", ("broker", 5672, false)),
            ("amqp", "tcps://broker", ("broker", 5671, true)),
            ("amqp", "amqps://broker:5999/", ("broker", 5999, true)),
            ("mqtt", "tcp://broker", ("broker", 1883, false)),
            ("mqtt", "ssl://broker", ("broker", 8883, true)),
            ("mqtt", "mqtts://10.0.0.1:18883", ("10.0.0.1", 18883, true)),
        ];
        for (transport, host, (name, port, tls)) in cases {
            let c = config(&format!("transport = \"{transport}\"\nhost = \"{host}\"\nvpn = \"v\""));
            assert_eq!(c.service(), Ok(Service { name: name.to_owned(), port, tls }), "{transport} {host}");
        }
    }

    #[test]
    fn settings_that_do_not_fit_the_transport_are_refused_with_their_path() {
        let found = problems(
            r#"
            transport = "mqtt"
            host = "amqp://broker"
            vpn = ""
            queue_out = "q"
            queue_in = "q"
            subscriptions = ["a/*/c", "a/b*", "!x/y", "a/>"]
            delivery = "direct"
            "#,
        );
        assert_eq!(
            found,
            [
                "endpoints.s.host: scheme `amqp://` does not fit `transport = \"mqtt\"`: use `tcp://`, `tcps://` or \
                 `mqtt://`, `mqtts://`",
                "endpoints.s.vpn: must not be empty",
                "endpoints.s.queue_out: needs `transport = \"amqp\"`: MQTT publishes to topics only",
                "endpoints.s.queue_in: needs `transport = \"amqp\"`: an MQTT client cannot bind to a Solace queue",
                "endpoints.s.subscriptions[1]: `a/b*`: level `b*` is a prefix wildcard, which MQTT cannot express: \
                 its wildcards match whole levels",
                "endpoints.s.subscriptions[2]: `!x/y`: a subscription exception (leading `!`) has no MQTT equivalent",
            ]
        );
        let amqp = problems(
            r#"
            host = "broker:1"
            vpn = "default"
            topic_out = "a/*"
            subscriptions = ["a/b*", "a/b*c"]
            delivery = "direct"
            "#,
        );
        assert_eq!(
            amqp,
            [
                "endpoints.s.topic_out: topic `a/*` has a wildcard level (`*`, `abc*` or `>`), which only \
                 subscriptions may use",
                "endpoints.s.subscriptions[1]: `a/b*c`: level `b*c`: `*` may only end a level",
                "endpoints.s.delivery: `direct` needs `transport = \"mqtt\"`: Solace's AMQP service carries \
                 guaranteed messages only",
            ],
            "a prefix wildcard is fine over AMQP, where Solace reads the subscription itself"
        );
    }

    #[test]
    fn mqtt_gets_translated_filters_and_qos_from_the_delivery_mode() {
        let c = config(
            r#"
            transport = "mqtt"
            host = "broker:1884"
            vpn = "prod"
            username = "u"
            topic_out = "orders/eu"
            subscriptions = ["orders/*/new", "prices/>"]
            "#,
        );
        let mqtt = c.to_mqtt().expect("valid");
        assert_eq!(mqtt.url, "mqtt://broker:1884");
        assert_eq!(mqtt.subscriptions, ["orders/+/new", "prices/+/#"]);
        assert_eq!((mqtt.qos, mqtt.subscription_qos), (1, 1));
        assert_eq!(mqtt.adapter_settings["transport"], "mqtt");
        assert_eq!(mqtt.adapter_settings["topic"], "orders/eu");
        assert_eq!(mqtt.adapter_settings["delivery_mode"], "persistent");
    }

    #[test]
    fn amqp_keeps_solace_subscriptions_and_names_the_vpn() {
        let c = config(
            r#"
            host = "tcps://broker"
            vpn = "prod"
            queue_out = "orders"
            queue_in = "work"
            subscriptions = ["prices/>", "a/b*"]
            "#,
        );
        let amqp = c.to_amqp().expect("valid");
        assert_eq!(amqp.url.expose(), "amqps://broker:5671");
        assert_eq!(amqp.virtual_host.as_deref(), Some("prod"));
        assert_eq!(amqp.topics, ["prices/>", "a/b*"]);
        assert_eq!(amqp.queues, ["work"]);
        assert_eq!(amqp.adapter_settings["destination_kind"], "queue");
        assert_eq!(amqp.adapter_settings["queue"], "orders");
    }
}
