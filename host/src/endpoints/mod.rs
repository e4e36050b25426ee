//! Broker-facing components. Each endpoint type lives in its own folder and is
//! selected by one variant of [`EndpointConfig`].

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

use crate::adapter::AdapterSource;
use crate::component::Component;
use crate::config::Problems;

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

/// `[endpoints.<name>]`, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EndpointConfig {
    /// Named in-process topics: the quickstart default, needing no broker.
    Memory(memory::MemoryConfig),
    /// Kafka: an idempotent producer, and a consumer group committing after hand-off.
    Kafka(Box<kafka::KafkaConfig>),
    /// RabbitMQ (AMQP 0-9-1): publishing with confirms, consuming with manual acks.
    #[serde(rename = "rabbitmq")]
    RabbitMq(Box<rabbitmq::RabbitMqConfig>),
    /// MQTT 5: publishing confirmed by PUBACK/PUBCOMP, subscribing with manual acks.
    Mqtt(Box<mqtt::MqttConfig>),
    /// AMQP 1.0, e.g. JMS brokers such as ActiveMQ Artemis: unsettled sends that succeed
    /// on `accepted`, receivers with link credit. `type = "jms"` is an alias.
    #[serde(rename = "amqp", alias = "jms")]
    Amqp(Box<amqp::AmqpConfig>),
    /// Solace PubSub+ over AMQP 1.0 or MQTT 5, with Solace's settings and topic syntax.
    Solace(Box<solace::SolaceConfig>),
}

impl EndpointConfig {
    /// The adapter reference, for path resolution.
    pub fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        match self {
            Self::Memory(c) => c.adapter.as_mut(),
            Self::Kafka(c) => Some(&mut c.adapter),
            Self::RabbitMq(c) => Some(&mut c.adapter),
            Self::Mqtt(c) => Some(&mut c.adapter),
            Self::Amqp(c) => Some(&mut c.adapter),
            Self::Solace(c) => Some(&mut c.adapter),
        }
    }
}

/// An adapter and the settings it is configured with.
pub type AdapterLoad = (AdapterSource, BTreeMap<String, String>);

impl EndpointConfig {
    /// The adapter the endpoint loads when it starts and the settings it configures it
    /// with, so that `check` loads the same; `None` for an endpoint without one.
    ///
    /// # Errors
    /// A Solace endpoint whose transport settings do not translate.
    pub fn adapter_load(&self) -> Result<Option<AdapterLoad>, String> {
        Ok(match self {
            Self::Memory(c) => c.adapter.clone().map(|a| (a, c.adapter_settings.clone())),
            Self::Kafka(c) => Some((c.adapter.clone(), c.adapter_settings())),
            Self::RabbitMq(c) => Some((c.adapter.clone(), c.adapter_settings())),
            Self::Mqtt(c) => Some((c.adapter.clone(), c.adapter_settings.clone())),
            Self::Amqp(c) => Some((c.adapter.clone(), c.adapter_settings())),
            Self::Solace(c) => Some(match c.transport {
                solace::Transport::Amqp => c.to_amqp().map(|a| (a.adapter.clone(), a.adapter_settings()))?,
                solace::Transport::Mqtt => c.to_mqtt().map(|m| (m.adapter, m.adapter_settings))?,
            }),
        })
    }
}

impl Component for EndpointConfig {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Kafka(_) => "kafka",
            Self::RabbitMq(_) => "rabbitmq",
            Self::Mqtt(_) => "mqtt",
            Self::Amqp(_) => "amqp",
            Self::Solace(_) => "solace",
        }
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        match self {
            Self::Memory(c) => c.adapter.as_ref(),
            Self::Kafka(c) => Some(&c.adapter),
            Self::RabbitMq(c) => Some(&c.adapter),
            Self::Mqtt(c) => Some(&c.adapter),
            Self::Amqp(c) => Some(&c.adapter),
            Self::Solace(c) => Some(&c.adapter),
        }
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        match self {
            Self::Memory(c) => c.validate(path, problems),
            Self::Kafka(c) => c.validate(path, problems),
            Self::RabbitMq(c) => c.validate(path, problems),
            Self::Mqtt(c) => c.validate(path, problems),
            Self::Amqp(c) => c.validate(path, problems),
            Self::Solace(c) => c.validate(path, problems),
        }
    }
}
