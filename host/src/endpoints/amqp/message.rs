//! Records to AMQP 1.0 messages and back, by the record convention of
//! `docs/mappings/endpoints.md`: `destination` is the address (`queue://orders`), `id`
//! the `message-id`, headers starting with `:` are message properties (`:annotation:<name>`
//! a message annotation) and every other header is an application property.
//!
//! A record flagged binary is sent as one `data` section (a JMS `BytesMessage`); any
//! other record as an `amqp-value` string when its payload is UTF-8 (a JMS
//! `TextMessage`), else as `data`. Consumed bodies become the payload: a string or
//! binary `amqp-value`, or the `data` sections joined.

use bytes::Bytes;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Batch, Body, Data, Header as AmqpHeader, Message, MessageAnnotations, MessageId,
    Properties,
};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Timestamp};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use mediation_adapter_sdk::layout::FLAG_BINARY;

use crate::event::{Event, EventId, Header, Text};
use crate::routing::ComponentId;

/// The annotations JMS clients read as `byte` values: Qpid JMS casts them.
const BYTE_ANNOTATIONS: [&str; 2] = ["x-opt-jms-msg-type", "x-opt-jms-dest"];

/// The address and the message for `record`, an adapter's output. `durable` sets the
/// header's `durable` flag (a persistent JMS message, kept across broker restarts).
///
/// # Errors
/// A record without an address, or a property AMQP 1.0 cannot carry (a priority that is
/// not a number from 0 to 255), named. The adapter should have refused such a record.
pub(super) fn to_amqp(record: &Event, durable: bool) -> Result<(String, Message<Body<Value>>), String> {
    let address = match &record.destination {
        Some(address) if !address.as_str().is_empty() => address.as_str().to_owned(),
        _ => return Err(String::from("the record has no address (its destination is unset)")),
    };
    let mut header = AmqpHeader { durable, ..AmqpHeader::default() };
    let mut properties = Properties {
        message_id: Some(MessageId::String(record.id.to_string())),
        to: Some(address.clone()),
        content_type: record.content_type.as_ref().map(|c| Symbol::from(c.as_str())),
        ..Properties::default()
    };
    let mut annotations = MessageAnnotations::default();
    let mut application = ApplicationProperties::default();
    for h in &record.headers {
        let name = h.name.as_str();
        let Some(property) = name.strip_prefix(':') else {
            let value = match std::str::from_utf8(&h.value) {
                Ok(text) => SimpleValue::String(text.to_owned()),
                Err(_) => SimpleValue::Binary(Binary::from(h.value.to_vec())),
            };
            application.0.insert(name.to_owned(), value);
            continue;
        };
        let text = || std::str::from_utf8(&h.value).map_err(|_| format!("property `{name}`: the value is not UTF-8"));
        let number = || -> Result<i64, String> {
            let text = text()?;
            text.parse::<i64>().map_err(|_| format!("property `{name}`: `{text}` is not a whole number"))
        };
        if let Some(annotation) = property.strip_prefix("annotation:") {
            let value = if BYTE_ANNOTATIONS.contains(&annotation) {
                let n = number()?;
                Value::Byte(i8::try_from(n).map_err(|_| format!("property `{name}`: {n} is not a byte"))?)
            } else if let Ok(n) = text()?.parse::<i64>() {
                Value::Long(n)
            } else {
                Value::String(text()?.to_owned())
            };
            annotations.0.insert(OwnedKey::from(annotation), value);
            continue;
        }
        match property {
            "correlation-id" => {
                properties.correlation_id = Some(match std::str::from_utf8(&h.value) {
                    Ok(text) => MessageId::String(text.to_owned()),
                    Err(_) => MessageId::Binary(Binary::from(h.value.to_vec())),
                });
            }
            "reply-to" => properties.reply_to = Some(text()?.to_owned()),
            "subject" => properties.subject = Some(text()?.to_owned()),
            "priority" => {
                let n = number()?;
                let priority = u8::try_from(n).map_err(|_| format!("property `{name}`: {n} is not from 0 to 255"))?;
                header.priority = priority.into();
            }
            "expiration" => {
                let n = number()?;
                header.ttl = Some(u32::try_from(n).map_err(|_| format!("property `{name}`: {n} ms is out of range"))?);
            }
            "timestamp" => properties.creation_time = Some(Timestamp::from_milliseconds(number()?)),
            // Properties of other brokers (`:qos`, `:partition`) mean nothing here.
            _ => {}
        }
    }
    let body = match std::str::from_utf8(&record.payload) {
        Ok(text) if record.flags & FLAG_BINARY == 0 => Body::Value(AmqpValue(Value::String(text.to_owned()))),
        _ => Body::Data(Batch::new(vec![Data(Binary::from(record.payload.to_vec()))])),
    };
    let message = Message {
        header: Some(header),
        delivery_annotations: None,
        message_annotations: (!annotations.0.is_empty()).then_some(annotations),
        properties: Some(properties),
        application_properties: (!application.0.is_empty()).then_some(application),
        body,
        footer: None,
    };
    Ok((address, message))
}

/// The record for a consumed `message`, the input of the adapter's downstream call.
/// `address` is where it was consumed, for a message whose `to` is unset.
///
/// # Errors
/// A body that is neither text nor bytes (an AMQP map, list or number: a JMS
/// `MapMessage`, `StreamMessage` or `ObjectMessage`), which the host cannot carry.
pub(super) fn from_amqp(
    message: Message<Body<Value>>,
    address: &str,
    source: ComponentId,
    ordering_key: u64,
) -> Result<Event, String> {
    let (payload, binary) = match message.body {
        Body::Value(AmqpValue(Value::String(text))) => (Bytes::from(text), false),
        Body::Value(AmqpValue(Value::Binary(bytes))) => (Bytes::from(bytes.into_vec()), true),
        Body::Value(AmqpValue(Value::Null)) | Body::Empty => (Bytes::new(), false),
        Body::Data(sections) => {
            let mut joined = Vec::new();
            for Data(bytes) in sections {
                joined.extend_from_slice(&bytes);
            }
            (Bytes::from(joined), true)
        }
        Body::Value(AmqpValue(other)) => {
            return Err(format!("the body is an AMQP {}, not text or bytes", kind(&other)));
        }
        Body::Sequence(_) => return Err(String::from("the body is an AMQP sequence, not text or bytes")),
    };
    let mut record = Event::new(source, payload);
    record.ordering_key = ordering_key;
    if binary {
        record.flags |= FLAG_BINARY;
    }
    let mut push = |name: String, value: Bytes| record.headers.push(Header::new(name.as_str(), value));
    let mut destination = address.to_owned();
    let mut id = None;
    let mut content_type = None;
    if let Some(header) = &message.header {
        let priority: u8 = header.priority.into();
        push(String::from(":priority"), Bytes::from(priority.to_string()));
        if let Some(ttl) = header.ttl {
            push(String::from(":expiration"), Bytes::from(ttl.to_string()));
        }
    }
    if let Some(p) = message.properties {
        if let Some(message_id) = p.message_id {
            id = Some(id_text(message_id));
        }
        if let Some(to) = p.to.filter(|to| !to.is_empty()) {
            destination = to;
        }
        if let Some(correlation) = p.correlation_id {
            let value = match correlation {
                MessageId::Binary(bytes) => Bytes::from(bytes.into_vec()),
                other => Bytes::from(id_text(other)),
            };
            push(String::from(":correlation-id"), value);
        }
        if let Some(reply_to) = p.reply_to {
            push(String::from(":reply-to"), Bytes::from(reply_to));
        }
        if let Some(subject) = p.subject {
            push(String::from(":subject"), Bytes::from(subject));
        }
        if let Some(created) = p.creation_time {
            push(String::from(":timestamp"), Bytes::from(created.milliseconds().to_string()));
        }
        content_type = p.content_type.map(|c| c.0);
    }
    if let Some(annotations) = message.message_annotations {
        for (key, value) in annotations.0 {
            if let (OwnedKey::Symbol(Symbol(name)), Some(value)) = (key, value_text(&value)) {
                push(format!(":annotation:{name}"), value);
            }
        }
    }
    if let Some(application) = message.application_properties {
        for (name, value) in application.0 {
            if let Some(value) = simple_text(value) {
                push(name, value);
            }
        }
    }
    record.destination = Some(Text::from(destination));
    record.content_type = content_type.map(Text::from);
    if let Some(id) = id {
        record.id = EventId::Given(Text::from(id));
    }
    Ok(record)
}

/// A message id as text: strings as they are, numbers in decimal, UUIDs hyphenated,
/// binary ids in hexadecimal.
fn id_text(id: MessageId) -> String {
    match id {
        MessageId::String(s) => s,
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(u.into_inner()).hyphenated().to_string(),
        MessageId::Binary(b) => b.iter().map(|byte| format!("{byte:02x}")).collect(),
    }
}

/// The name of an AMQP value's type, for errors.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Map(_) => "map",
        Value::List(_) | Value::Array(_) => "list",
        Value::Described(_) => "described value",
        _ => "scalar that is neither string nor binary",
    }
}

/// An annotation value as header bytes: numbers in decimal, strings and symbols as they
/// are. Anything else has no flat form and is left out.
fn value_text(value: &Value) -> Option<Bytes> {
    let text = |t: String| Some(Bytes::from(t));
    match value {
        Value::Bool(b) => text(b.to_string()),
        Value::Ubyte(n) => text(n.to_string()),
        Value::Ushort(n) => text(n.to_string()),
        Value::Uint(n) => text(n.to_string()),
        Value::Ulong(n) => text(n.to_string()),
        Value::Byte(n) => text(n.to_string()),
        Value::Short(n) => text(n.to_string()),
        Value::Int(n) => text(n.to_string()),
        Value::Long(n) => text(n.to_string()),
        Value::Timestamp(t) => text(t.milliseconds().to_string()),
        Value::String(s) => text(s.clone()),
        Value::Symbol(s) => text(s.0.clone()),
        Value::Binary(b) => Some(Bytes::from(b.to_vec())),
        _ => None,
    }
}

/// An application property as header bytes, like [`value_text`].
fn simple_text(value: SimpleValue) -> Option<Bytes> {
    let text = |t: String| Some(Bytes::from(t));
    match value {
        SimpleValue::Null => Some(Bytes::new()),
        SimpleValue::Bool(b) => text(b.to_string()),
        SimpleValue::Ubyte(n) => text(n.to_string()),
        SimpleValue::Ushort(n) => text(n.to_string()),
        SimpleValue::Uint(n) => text(n.to_string()),
        SimpleValue::Ulong(n) => text(n.to_string()),
        SimpleValue::Byte(n) => text(n.to_string()),
        SimpleValue::Short(n) => text(n.to_string()),
        SimpleValue::Int(n) => text(n.to_string()),
        SimpleValue::Long(n) => text(n.to_string()),
        SimpleValue::Float(n) => text(n.to_string()),
        SimpleValue::Double(n) => text(n.to_string()),
        SimpleValue::Char(c) => text(c.to_string()),
        SimpleValue::Timestamp(t) => text(t.milliseconds().to_string()),
        SimpleValue::String(s) => text(s),
        SimpleValue::Symbol(s) => text(s.0),
        SimpleValue::Binary(b) => Some(Bytes::from(b.into_vec())),
        SimpleValue::Uuid(u) => text(uuid::Uuid::from_bytes(u.into_inner()).hyphenated().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Event {
        let mut e = Event::new(ComponentId(0), Bytes::from_static(b"hello"));
        e.id = EventId::Given(Text::from("k-1"));
        e.destination = Some(Text::from("queue://orders"));
        e.content_type = Some(Text::from("text/plain"));
        e
    }

    #[test]
    fn properties_annotations_and_application_properties_follow_the_record_convention() {
        let mut r = record();
        for (name, value) in [
            (":annotation:x-opt-jms-dest", "0"),
            (":annotation:x-opt-jms-msg-type", "5"),
            (":annotation:x-custom", "big"),
            (":correlation-id", "c-9"),
            (":reply-to", "queue://replies"),
            (":subject", "OrderCreated"),
            (":priority", "7"),
            (":expiration", "60000"),
            (":timestamp", "1700000000123"),
            (":qos", "1"),
            ("x-region", "eu"),
        ] {
            r.headers.push(Header::new(name, value));
        }
        r.headers.push(Header::new("blob", vec![0u8, 0xff]));
        let (address, m) = to_amqp(&r, true).expect("maps");
        assert_eq!(address, "queue://orders");
        let header = m.header.as_ref().expect("a header");
        assert!(header.durable);
        assert_eq!((u8::from(header.priority), header.ttl), (7, Some(60_000)));
        let p = m.properties.as_ref().expect("properties");
        assert_eq!(p.message_id, Some(MessageId::String(String::from("k-1"))));
        assert_eq!(p.to.as_deref(), Some("queue://orders"));
        assert_eq!(p.correlation_id, Some(MessageId::String(String::from("c-9"))));
        assert_eq!((p.reply_to.as_deref(), p.subject.as_deref()), (Some("queue://replies"), Some("OrderCreated")));
        assert_eq!(p.content_type, Some(Symbol::from("text/plain")));
        assert_eq!(p.creation_time.as_ref().map(Timestamp::milliseconds), Some(1_700_000_000_123));
        let annotations: Vec<_> = m.message_annotations.as_ref().expect("annotations").0.iter().collect();
        assert_eq!(
            annotations,
            [
                (&OwnedKey::from("x-opt-jms-dest"), &Value::Byte(0)),
                (&OwnedKey::from("x-opt-jms-msg-type"), &Value::Byte(5)),
                (&OwnedKey::from("x-custom"), &Value::String(String::from("big"))),
            ]
        );
        let application: Vec<_> = m.application_properties.as_ref().expect("properties").0.iter().collect();
        assert_eq!(
            application,
            [
                (&String::from("x-region"), &SimpleValue::String(String::from("eu"))),
                (&String::from("blob"), &SimpleValue::Binary(Binary::from(vec![0u8, 0xff]))),
            ],
            "user headers only; `:qos` is another broker's"
        );
        assert_eq!(m.body, Body::Value(AmqpValue(Value::String(String::from("hello")))), "text is an amqp-value");
    }

    #[test]
    fn binary_records_are_data_and_bad_fields_are_named() {
        let mut r = record();
        r.flags |= FLAG_BINARY;
        let (_, m) = to_amqp(&r, false).expect("maps");
        assert_eq!(m.body, Body::Data(Batch::new(vec![Data(Binary::from(b"hello".to_vec()))])));
        assert!(!m.header.expect("a header").durable);
        let mut bad = record();
        bad.headers.push(Header::new(":priority", "high"));
        assert_eq!(to_amqp(&bad, true).expect_err("refused"), "property `:priority`: `high` is not a whole number");
        let mut nowhere = record();
        nowhere.destination = None;
        assert!(to_amqp(&nowhere, true).expect_err("refused").contains("no address"));
    }

    #[test]
    fn a_sent_message_comes_back_as_the_same_record() {
        let mut r = record();
        for (name, value) in [
            (":annotation:x-opt-jms-msg-type", "5"),
            (":correlation-id", "c-1"),
            (":subject", "Tick"),
            ("symbol", "ACME"),
        ] {
            r.headers.push(Header::new(name, value));
        }
        let (_, m) = to_amqp(&r, true).expect("maps");
        let back = from_amqp(m, "queue://other", ComponentId(3), 42).expect("a record");
        assert_eq!((back.source, back.ordering_key), (ComponentId(3), 42));
        assert_eq!(back.id.to_string(), "k-1");
        assert_eq!(back.destination.as_ref().map(Text::as_str), Some("queue://orders"), "`to` wins");
        assert_eq!(back.content_type.as_ref().map(Text::as_str), Some("text/plain"));
        assert_eq!(&back.payload[..], b"hello");
        assert_eq!(back.flags & FLAG_BINARY, 0);
        let headers: Vec<(&str, &[u8])> = back.headers.iter().map(|h| (h.name.as_str(), &h.value[..])).collect();
        assert_eq!(
            headers,
            [
                (":priority", &b"4"[..]),
                (":correlation-id", b"c-1"),
                (":subject", b"Tick"),
                (":annotation:x-opt-jms-msg-type", b"5"),
                ("symbol", b"ACME"),
            ]
        );
    }

    #[test]
    fn bodies_other_than_text_and_bytes_are_refused() {
        let mut message = Message::<Body<Value>>::from(Body::Value(AmqpValue(Value::Long(1))));
        message.properties = None;
        let error = from_amqp(message, "queue://q", ComponentId(0), 0).expect_err("refused");
        assert!(error.contains("not text or bytes"), "{error}");
        let data = Message::<Body<Value>>::from(Body::Data(Batch::new(vec![
            Data(Binary::from(b"ab".to_vec())),
            Data(Binary::from(b"c".to_vec())),
        ])));
        let record = from_amqp(data, "queue://q", ComponentId(0), 0).expect("bytes");
        assert_eq!((&record.payload[..], record.flags & FLAG_BINARY != 0), (&b"abc"[..], true));
        assert_eq!(record.destination.as_ref().map(Text::as_str), Some("queue://q"), "no `to`: the address consumed");
    }
}
