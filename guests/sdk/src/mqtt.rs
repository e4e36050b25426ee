//! MQTT 5 PUBLISH properties on records: how an event's id, content type and headers
//! become record fields and `:` properties, and back. The record mapping that the
//! endpoint adapters sending through the host's MQTT 5 client share (MQTT 5, and Solace
//! over `transport = mqtt`).
//!
//! To a record:
//! - content type → the record's `content_type` (the Content Type property);
//! - id → user property [`ID_PROPERTY`] (MQTT 5 has no message id property; the packet
//!   identifier belongs to the transport);
//! - header `reply-to` → `:response-topic`, after the topic prefix; it must be a legal topic
//!   name;
//! - header `correlation-id` → `:correlation-data`, bytes as they are;
//! - every other header → a user property. Names and values must be UTF-8 without U+0000
//!   and at most 65535 bytes long, as MQTT strings are. A header named like
//!   [`ID_PROPERTY`] is left out when the event has an id.
//!
//! From a record, the reverse: `:response-topic` → `reply-to` (the topic prefix removed when
//! present), `:correlation-data` → `correlation-id`, the first [`ID_PROPERTY`] user property
//! → the id (else the record's `id`), `content_type` → the content type, other user
//! properties → headers. The caller names the other `:` properties it keeps; the rest are
//! dropped.

use crate::guest::ItemError;
use crate::layout::{Item, ItemWriter};

/// The user property that carries the event id.
pub const ID_PROPERTY: &str = "message-id";

/// The longest string MQTT can encode behind its two-byte length prefix.
const MAX_STRING_BYTES: usize = 65_535;

/// Checks a topic name that a PUBLISH packet may carry: not empty, no wildcard, no U+0000,
/// at most 65535 bytes.
///
/// # Errors
/// A message naming the topic and what is wrong with it.
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    let problem = if topic.is_empty() {
        "is empty"
    } else if topic.contains(['+', '#']) {
        "contains a wildcard (`+` or `#`), which only subscriptions may use"
    } else if topic.contains('\0') {
        "contains U+0000"
    } else if topic.len() > MAX_STRING_BYTES {
        "is longer than 65535 bytes"
    } else {
        return Ok(());
    };
    Err(format!("topic `{}` {problem}", topic.escape_debug()))
}

/// `bytes` as an MQTT UTF-8 string, or what disqualifies it.
fn mqtt_string(bytes: &[u8]) -> Result<&str, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8")?;
    if text.contains('\0') {
        Err("contains U+0000")
    } else if text.len() > MAX_STRING_BYTES {
        Err("is longer than 65535 bytes")
    } else {
        Ok(text)
    }
}

/// Writes the event's content type, id and headers as MQTT 5 properties of the record `w`.
///
/// # Errors
/// Malformed, naming the header (or field) that MQTT cannot carry.
pub fn write(item: &Item<'_>, topic_prefix: &str, w: &mut ItemWriter<'_>) -> Result<(), ItemError> {
    if let Some(content_type) = item.content_type() {
        mqtt_string(content_type.as_bytes())
            .map_err(|problem| ItemError::malformed(format!("content type {problem}")))?;
        w.content_type(content_type);
    }
    if let Some(id) = item.id() {
        mqtt_string(id.as_bytes()).map_err(|problem| ItemError::malformed(format!("id {problem}")))?;
        w.header(ID_PROPERTY, id.as_bytes());
    }
    for (name, value) in item.headers() {
        if name.starts_with(':') {
            return Err(ItemError::malformed(format!(
                "header `{name}`: names starting with `:` are reserved for broker properties"
            )));
        }
        if name.eq_ignore_ascii_case("reply-to") {
            let reply_to = mqtt_string(value)
                .map_err(|problem| ItemError::malformed(format!("header `reply-to`: the value {problem}")))?;
            let topic = format!("{topic_prefix}{reply_to}");
            check_topic_name(&topic).map_err(|e| ItemError::malformed(format!("header `reply-to`: {e}")))?;
            w.header(":response-topic", topic.as_bytes());
        } else if name.eq_ignore_ascii_case("correlation-id") {
            if value.len() > MAX_STRING_BYTES {
                return Err(ItemError::malformed("header `correlation-id`: the value is longer than 65535 bytes"));
            }
            w.header(":correlation-data", value);
        } else if item.id().is_some() && name.eq_ignore_ascii_case(ID_PROPERTY) {
            // The event id is already written under this name.
        } else {
            mqtt_string(name.as_bytes()).map_err(|problem| {
                ItemError::malformed(format!("header `{}`: the name {problem}", name.escape_debug()))
            })?;
            mqtt_string(value).map_err(|problem| {
                ItemError::malformed(format!(
                    "header `{name}`: the value {problem}; MQTT user properties are UTF-8 strings"
                ))
            })?;
            w.header(name, value);
        }
    }
    Ok(())
}

/// Writes a consumed record's MQTT 5 properties as the event's id, content type and headers.
/// `kept` lists the other `:` properties the event keeps, as `(property, event header)`.
///
/// # Errors
/// Malformed when the [`ID_PROPERTY`] user property is not UTF-8.
pub fn read(
    item: &Item<'_>,
    topic_prefix: &str,
    kept: &[(&str, &str)],
    w: &mut ItemWriter<'_>,
) -> Result<(), ItemError> {
    let id = match item.header(ID_PROPERTY) {
        Some(value) => Some(
            std::str::from_utf8(value)
                .map_err(|_| ItemError::malformed(format!("user property `{ID_PROPERTY}`: the value is not UTF-8")))?,
        ),
        None => item.id(),
    };
    if let Some(id) = id {
        w.id(id);
    }
    if let Some(content_type) = item.content_type() {
        w.content_type(content_type);
    }
    let mut id_seen = false;
    for (name, value) in item.headers() {
        if name == ":response-topic" {
            w.header("reply-to", value.strip_prefix(topic_prefix.as_bytes()).unwrap_or(value));
        } else if name == ":correlation-data" {
            w.header("correlation-id", value);
        } else if let Some((_, event_header)) = kept.iter().find(|(property, _)| *property == name) {
            w.header(event_header, value);
        } else if name.starts_with(':') {
            // Transport-only: QoS, message expiry and the like steer delivery, not the event.
        } else if !id_seen && name.eq_ignore_ascii_case(ID_PROPERTY) {
            id_seen = true;
        } else {
            w.header(name, value);
        }
    }
    Ok(())
}
