//! Broker-facing components. Each endpoint type lives in its own folder and is
//! selected by one variant of [`EndpointConfig`].

pub mod kafka;
pub mod link;
pub mod memory;
pub mod rabbitmq;
pub mod source;
pub mod target;

use serde::Deserialize;

use crate::adapter::AdapterSource;
use crate::config::{Component, Problems};

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
}

impl EndpointConfig {
    /// The adapter reference, for path resolution.
    pub fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        match self {
            Self::Memory(c) => c.adapter.as_mut(),
            Self::Kafka(c) => Some(&mut c.adapter),
            Self::RabbitMq(c) => Some(&mut c.adapter),
        }
    }
}

impl Component for EndpointConfig {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Kafka(_) => "kafka",
            Self::RabbitMq(_) => "rabbitmq",
        }
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        match self {
            Self::Memory(c) => c.adapter.as_ref(),
            Self::Kafka(c) => Some(&c.adapter),
            Self::RabbitMq(c) => Some(&c.adapter),
        }
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        match self {
            Self::Memory(c) => c.validate(path, problems),
            Self::Kafka(c) => c.validate(path, problems),
            Self::RabbitMq(c) => c.validate(path, problems),
        }
    }
}
