//! AMQP 1.0 messages on records: addresses that carry their kind in a prefix
//! (`queue://orders`, `topic://prices`), message properties and application properties.
//! The record mapping that the endpoint adapters sending through the host's AMQP 1.0
//! client share (JMS, and Solace over `transport = amqp`). RabbitMQ's AMQP 0-9-1 is a
//! different protocol with properties of its own, and does not use this module.
//!
//! To a record:
//! - id → the record's `id` (message-id), content type → `content_type`;
//! - header `correlation-id` → `:correlation-id`, bytes as they are;
//! - header `reply-to` → `:reply-to`, as it is: a full address such as `queue://replies`,
//!   which must be UTF-8;
//! - the caller's extra renames (JMS: `jms-type` → `:subject`), whose values must be UTF-8;
//! - every other header → an application property, name and bytes as they are;
//! - a header whose name starts with `:` fails the event as malformed.
//!
//! From a record, the reverse: `id` and `content_type` stay fields, `:correlation-id` →
//! `correlation-id`, `:reply-to` → `reply-to`, the caller's kept properties under the
//! caller's names, every other `:` property dropped, application properties → headers.

use crate::guest::ItemError;
use crate::layout::{Item, ItemWriter};

/// Whether an address names a queue (point to point) or a topic (publish and subscribe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    /// Point to point: one consumer gets each message.
    Queue,
    /// Publish and subscribe: every subscriber gets each message.
    Topic,
}

impl AddressKind {
    /// `queue` or `topic`, as settings and event headers spell it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Topic => "topic",
        }
    }
}

/// The prefixes that mark an address's kind. An empty prefix marks nothing: names without a
/// prefix get the configured kind.
#[derive(Debug, Clone)]
pub struct Addressing {
    /// Put before a queue name.
    queue_prefix: String,
    /// Put before a topic name.
    topic_prefix: String,
}

impl Default for Addressing {
    /// `queue://` and `topic://`, the prefixes ActiveMQ Artemis and Solace understand.
    fn default() -> Self {
        Self { queue_prefix: String::from("queue://"), topic_prefix: String::from("topic://") }
    }
}

impl Addressing {
    /// Addressing with the given prefixes.
    ///
    /// # Errors
    /// When both prefixes are set and one starts with the other, which would make an
    /// address's kind ambiguous.
    pub fn new(queue_prefix: &str, topic_prefix: &str) -> Result<Self, String> {
        let overlap = !queue_prefix.is_empty()
            && !topic_prefix.is_empty()
            && (queue_prefix.starts_with(topic_prefix) || topic_prefix.starts_with(queue_prefix));
        if overlap {
            return Err(format!(
                "the prefixes `{queue_prefix}` and `{topic_prefix}` overlap, so an address's kind would be ambiguous"
            ));
        }
        Ok(Self { queue_prefix: queue_prefix.to_owned(), topic_prefix: topic_prefix.to_owned() })
    }

    /// Splits `address` into the kind its prefix marks, if any, and the bare name.
    #[must_use]
    pub fn split<'a>(&self, address: &'a str) -> (Option<AddressKind>, &'a str) {
        for (kind, prefix) in [(AddressKind::Queue, &self.queue_prefix), (AddressKind::Topic, &self.topic_prefix)] {
            if let Some(name) = address.strip_prefix(prefix.as_str()).filter(|_| !prefix.is_empty()) {
                return (Some(kind), name);
            }
        }
        (None, address)
    }

    /// The address of the `kind` named `name`.
    #[must_use]
    pub fn address(&self, kind: AddressKind, name: &str) -> String {
        let prefix = match kind {
            AddressKind::Queue => &self.queue_prefix,
            AddressKind::Topic => &self.topic_prefix,
        };
        format!("{prefix}{name}")
    }
}

/// Writes the event's id, content type and headers as AMQP 1.0 properties of the record `w`.
/// `renames` lists further event headers carried as message properties, as
/// `(event header, record property)`.
///
/// # Errors
/// Malformed, naming the header AMQP 1.0 cannot carry.
pub fn write(item: &Item<'_>, renames: &[(&str, &str)], w: &mut ItemWriter<'_>) -> Result<(), ItemError> {
    if let Some(id) = item.id() {
        w.id(id);
    }
    if let Some(content_type) = item.content_type() {
        w.content_type(content_type);
    }
    for (name, value) in item.headers() {
        if name.starts_with(':') {
            return Err(ItemError::malformed(format!(
                "header `{name}`: names starting with `:` are reserved for broker properties"
            )));
        }
        if name.eq_ignore_ascii_case("correlation-id") {
            w.header(":correlation-id", value);
            continue;
        }
        let property = if name.eq_ignore_ascii_case("reply-to") {
            Some(":reply-to")
        } else {
            renames.iter().find(|(header, _)| name.eq_ignore_ascii_case(header)).map(|(_, property)| *property)
        };
        let Some(property) = property else {
            w.header(name, value);
            continue;
        };
        if std::str::from_utf8(value).is_err() {
            return Err(ItemError::malformed(format!(
                "header `{name}`: the value is not UTF-8, and `{property}` is an AMQP string"
            )));
        }
        w.header(property, value);
    }
    Ok(())
}

/// Writes a consumed record's AMQP 1.0 properties as the event's id, content type and
/// headers. `kept` lists the other `:` properties the event keeps, as
/// `(record property, event header)`.
pub fn read(item: &Item<'_>, kept: &[(&str, &str)], w: &mut ItemWriter<'_>) {
    if let Some(id) = item.id() {
        w.id(id);
    }
    if let Some(content_type) = item.content_type() {
        w.content_type(content_type);
    }
    for (name, value) in item.headers() {
        if name == ":correlation-id" {
            w.header("correlation-id", value);
        } else if name == ":reply-to" {
            w.header("reply-to", value);
        } else if let Some((_, event_header)) = kept.iter().find(|(property, _)| *property == name) {
            w.header(event_header, value);
        } else if !name.starts_with(':') {
            w.header(name, value);
        }
    }
}
