//! Broker-facing components. Each endpoint type lives in its own folder, implements
//! [`Endpoint`] on its configuration, and has one entry in the registry below.

pub mod amqp;
pub mod kafka;
pub mod link;
pub mod memory;
pub mod mqtt;
pub mod rabbitmq;
pub mod solace;
pub mod source;
pub mod target;
pub mod tls;

use std::collections::BTreeMap;

use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::adapter::AdapterSource;
use crate::component::{Component, ComponentContext, StartError};
use crate::config::Problems;
use crate::pipeline::TargetSender;

/// How the replicas of a host (instances with the same configuration) consume a
/// broker endpoint. Each endpoint documents how its broker does it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerMode {
    /// Every instance gets every message and serves it to its own clients: what a
    /// client sees does not depend on which replica it reached.
    #[default]
    Broadcast,
    /// The instances compete: each message reaches one of them.
    Shared,
}

/// What an endpoint type provides: its configuration says what it is
/// ([`Component`]), which adapter it loads, and starts it. The host wires every
/// endpoint through this trait; only [`EndpointConfig`] names the types.
pub trait Endpoint: Component {
    /// The settings its adapter is configured with: `adapter_settings`, plus what the
    /// default adapter takes from the endpoint's own settings.
    fn adapter_settings(&self) -> BTreeMap<String, String>;

    /// The adapter the endpoint loads when it starts and the settings it configures it
    /// with, so that `check` loads the same; `None` for an endpoint without one.
    ///
    /// # Errors
    /// Settings that do not translate into the adapter's.
    fn adapter_load(&self) -> Result<Option<AdapterLoad>, String> {
        Ok(self.adapter().map(|adapter| (adapter.clone(), self.adapter_settings())))
    }

    /// The adapter reference, for path resolution.
    fn adapter_mut(&mut self) -> Option<&mut AdapterSource>;

    /// Loads the adapter and starts the endpoint: the sender of its target queue and
    /// its task, which ends once the queue closed (the last stage of shutdown).
    ///
    /// # Errors
    /// When the adapter cannot be loaded or the settings cannot be used.
    fn spawn(&self, ctx: ComponentContext) -> Result<(TargetSender, JoinHandle<()>), StartError>;
}

/// An adapter and the settings it is configured with.
pub type AdapterLoad = (AdapterSource, BTreeMap<String, String>);

/// The registry: the one list of endpoint types. It declares [`EndpointConfig`], one
/// variant per type, selected by `type` in the file, and dispatches [`Endpoint`] to
/// the variant's configuration.
macro_rules! registry {
    ($($(#[$meta:meta])* $variant:ident($config:ty),)+) => {
        /// `[endpoints.<name>]`, selected by `type`.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum EndpointConfig {
            $($(#[$meta])* $variant(Box<$config>),)+
        }

        impl EndpointConfig {
            fn endpoint(&self) -> &dyn Endpoint {
                match self {
                    $(Self::$variant(c) => &**c,)+
                }
            }

            fn endpoint_mut(&mut self) -> &mut dyn Endpoint {
                match self {
                    $(Self::$variant(c) => &mut **c,)+
                }
            }
        }
    };
}

registry! {
    /// Named in-process topics: the quickstart default, needing no broker.
    Memory(memory::MemoryConfig),
    /// Kafka: an idempotent producer, and a consumer group committing after hand-off.
    Kafka(kafka::KafkaConfig),
    /// RabbitMQ (AMQP 0-9-1): publishing with confirms, consuming with manual acks.
    #[serde(rename = "rabbitmq")]
    RabbitMq(rabbitmq::RabbitMqConfig),
    /// MQTT 5: publishing confirmed by PUBACK/PUBCOMP, subscribing with manual acks.
    Mqtt(mqtt::MqttConfig),
    /// AMQP 1.0, e.g. JMS brokers such as ActiveMQ Artemis: unsettled sends that succeed
    /// on `accepted`, receivers with link credit. `type = "jms"` is an alias.
    #[serde(rename = "amqp", alias = "jms")]
    Amqp(amqp::AmqpConfig),
    /// Solace PubSub+ over AMQP 1.0 or MQTT 5, with Solace's settings and topic syntax.
    Solace(solace::SolaceConfig),
}

impl Component for EndpointConfig {
    fn type_name(&self) -> &'static str {
        self.endpoint().type_name()
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        self.endpoint().adapter()
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        self.endpoint().validate(path, problems);
    }
}

impl Endpoint for EndpointConfig {
    fn adapter_settings(&self) -> BTreeMap<String, String> {
        self.endpoint().adapter_settings()
    }

    fn adapter_load(&self) -> Result<Option<AdapterLoad>, String> {
        self.endpoint().adapter_load()
    }

    fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        self.endpoint_mut().adapter_mut()
    }

    fn spawn(&self, ctx: ComponentContext) -> Result<(TargetSender, JoinHandle<()>), StartError> {
        self.endpoint().spawn(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_names_itself_as_the_file_does() {
        let types = [
            ("memory", ""),
            ("kafka", r#"brokers = "127.0.0.1:9092""#),
            ("rabbitmq", r#"url = "amqp://127.0.0.1""#),
            ("mqtt", r#"url = "mqtt://127.0.0.1""#),
            ("amqp", r#"url = "amqp://127.0.0.1""#),
            ("solace", "host = \"127.0.0.1\"\nvpn = \"default\""),
        ];
        for (name, fields) in types {
            let config: EndpointConfig =
                toml::from_str(&format!("type = \"{name}\"\n{fields}")).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(config.type_name(), name);
        }
        let jms: EndpointConfig = toml::from_str("type = \"jms\"\nurl = \"amqp://127.0.0.1\"").expect("jms");
        assert_eq!(jms.type_name(), "amqp", "`jms` is another name for `amqp`");
    }
}
