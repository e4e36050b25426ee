//! Records to AMQP 0-9-1 messages and back, by the record convention of
//! `docs/mappings/endpoints.md`: `destination` is the exchange, `key` the routing
//! key, `id` the `message-id`, and headers starting with `:` are message properties.

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::event::{Event, EventId, Header, Text};
use crate::routing::ComponentId;

/// A message ready for `basic.publish`.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// The exchange; `""` is the default exchange.
    pub exchange: ShortString,
    /// The routing key.
    pub routing_key: ShortString,
    /// Properties and the headers table.
    pub properties: BasicProperties,
}

/// Where a message goes, in words, for errors: "exchange `orders`, routing key `eu`".
pub(super) fn describe(exchange: &str, routing_key: &str) -> String {
    if exchange.is_empty() {
        format!("the default exchange, routing key `{routing_key}`")
    } else {
        format!("exchange `{exchange}`, routing key `{routing_key}`")
    }
}

/// The message for `record`, an adapter's output. A record without a destination
/// goes to `default_exchange`.
///
/// # Errors
/// A field AMQP cannot carry (a name over 255 bytes, a property that is not a number
/// where one is needed), named. The adapter should have refused such a record.
pub(super) fn to_amqp(record: &Event, default_exchange: &str) -> Result<Outgoing, String> {
    let exchange = record.destination.as_ref().map_or(default_exchange, Text::as_str);
    let exchange = short(exchange, "the exchange")?;
    let routing_key = match &record.key {
        Some(key) => std::str::from_utf8(key).map_err(|_| String::from("the routing key is not UTF-8"))?,
        None => "",
    };
    let routing_key = short(routing_key, "the routing key")?;
    let mut properties = BasicProperties::default().with_message_id(short(&record.id.to_string(), "the id")?);
    if let Some(content_type) = &record.content_type {
        properties = properties.with_content_type(short(content_type.as_str(), "the content type")?);
    }
    let mut table = FieldTable::default();
    for header in &record.headers {
        let name = header.name.as_str();
        let Some(property) = name.strip_prefix(':') else {
            table.insert(short(name, "a header name")?, AMQPValue::LongString(LongString::from(header.value.to_vec())));
            continue;
        };
        let text =
            || std::str::from_utf8(&header.value).map_err(|_| format!("property `{name}`: the value is not UTF-8"));
        let number = |what: &str| -> Result<u64, String> {
            text()?.parse::<u64>().map_err(|_| format!("property `{name}`: `{}` is not {what}", text().unwrap_or("")))
        };
        let octet = |what: &str| -> Result<u8, String> {
            u8::try_from(number(what)?).map_err(|_| format!("property `{name}`: the value is not {what}"))
        };
        properties = match property {
            "correlation-id" => properties.with_correlation_id(short(text()?, name)?),
            "reply-to" => properties.with_reply_to(short(text()?, name)?),
            "delivery-mode" => match octet("1 or 2")? {
                mode @ (1 | 2) => properties.with_delivery_mode(mode),
                _ => return Err(format!("property `{name}`: the value is not 1 or 2")),
            },
            "priority" => properties.with_priority(octet("a priority from 0 to 255")?),
            "expiration" => properties.with_expiration(short(&number("a number of milliseconds")?.to_string(), name)?),
            "type" => properties.with_type(short(text()?, name)?),
            // AMQP 0-9-1 timestamps are seconds; the convention's are milliseconds.
            "timestamp" => properties.with_timestamp(number("milliseconds since the Unix epoch")? / 1000),
            // Properties of other brokers (`:qos`, `:partition`) mean nothing here.
            _ => properties,
        };
    }
    if !table.inner().is_empty() {
        properties = properties.with_headers(table);
    }
    Ok(Outgoing { exchange, routing_key, properties })
}

/// `value` as a short string, or why it cannot be one.
fn short(value: &str, what: &str) -> Result<ShortString, String> {
    ShortString::try_new(value).map_err(|_| format!("{what} is longer than 255 bytes"))
}

/// The record for a consumed `delivery`, the input of the adapter's downstream call.
/// Properties become `:` headers (the timestamp in milliseconds), the headers table
/// user headers. Returns the record and what acknowledges the delivery.
pub(super) fn from_delivery(delivery: Delivery, source: ComponentId, ordering_key: u64) -> (Event, lapin::Acker) {
    let Delivery { exchange, routing_key, properties, data, acker, .. } = delivery;
    let mut record = Event::new(source, Bytes::from(data));
    record.ordering_key = ordering_key;
    record.destination = Some(Text::from(String::from(exchange)));
    record.key = Some(Bytes::from(String::from(routing_key)));
    if let Some(id) = properties.message_id() {
        record.id = EventId::Given(Text::from(id.as_str()));
    }
    record.content_type = properties.content_type().as_ref().map(|c| Text::from(c.as_str()));
    let mut property = |name: &'static str, value: Option<String>| {
        if let Some(value) = value {
            record.headers.push(Header::new(Text::from_static(name), value));
        }
    };
    property(":correlation-id", properties.correlation_id().as_ref().map(ToString::to_string));
    property(":reply-to", properties.reply_to().as_ref().map(ToString::to_string));
    property(":delivery-mode", properties.delivery_mode().map(|m| m.to_string()));
    property(":priority", properties.priority().map(|p| p.to_string()));
    property(":expiration", properties.expiration().as_ref().map(ToString::to_string));
    property(":type", properties.kind().as_ref().map(ToString::to_string));
    property(":timestamp", properties.timestamp().map(|s| s.saturating_mul(1000).to_string()));
    if let Some(table) = properties.headers() {
        for (name, value) in table {
            if let Some(value) = value_bytes(value) {
                record.headers.push(Header::new(name.as_str(), value));
            }
        }
    }
    (record, acker)
}

/// A headers-table value as header bytes: strings as they are, numbers and booleans
/// as text. Arrays and nested tables (such as RabbitMQ's `x-death`) have no flat form
/// and are left out.
fn value_bytes(value: &AMQPValue) -> Option<Bytes> {
    let text = |t: String| Some(Bytes::from(t));
    match value {
        AMQPValue::LongString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(Bytes::copy_from_slice(s.as_str().as_bytes())),
        AMQPValue::ByteArray(b) => Some(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Boolean(b) => text(b.to_string()),
        AMQPValue::ShortShortInt(n) => text(n.to_string()),
        AMQPValue::ShortShortUInt(n) => text(n.to_string()),
        AMQPValue::ShortInt(n) => text(n.to_string()),
        AMQPValue::ShortUInt(n) => text(n.to_string()),
        AMQPValue::LongInt(n) => text(n.to_string()),
        AMQPValue::LongUInt(n) => text(n.to_string()),
        AMQPValue::LongLongInt(n) => text(n.to_string()),
        AMQPValue::Timestamp(n) => text(n.to_string()),
        AMQPValue::Float(n) => text(n.to_string()),
        AMQPValue::Double(n) => text(n.to_string()),
        AMQPValue::DecimalValue(d) => text(format!("{}e-{}", d.value, d.scale)),
        AMQPValue::Void => Some(Bytes::new()),
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Event {
        let mut e = Event::new(ComponentId(0), Bytes::from_static(b"hello"));
        e.id = EventId::Given(Text::from("k-1"));
        e.destination = Some(Text::from("orders"));
        e.key = Some(Bytes::from_static(b"eu.1"));
        e.content_type = Some(Text::from("text/plain"));
        e
    }

    #[test]
    fn properties_and_headers_follow_the_record_convention() {
        let mut r = record();
        for (name, value) in [
            (":delivery-mode", "2"),
            (":correlation-id", "c-9"),
            (":reply-to", "replies"),
            (":priority", "7"),
            (":expiration", "60000"),
            (":type", "order.created"),
            (":timestamp", "1700000000123"),
            (":qos", "1"),
            ("x-region", "eu"),
        ] {
            r.headers.push(Header::new(name, value));
        }
        r.headers.push(Header::new("blob", vec![0u8, 0xff]));
        let out = to_amqp(&r, "ignored").expect("maps");
        assert_eq!((out.exchange.as_str(), out.routing_key.as_str()), ("orders", "eu.1"));
        let p = &out.properties;
        assert_eq!(p.message_id().as_ref().map(ShortString::as_str), Some("k-1"));
        assert_eq!(p.content_type().as_ref().map(ShortString::as_str), Some("text/plain"));
        assert_eq!(p.correlation_id().as_ref().map(ShortString::as_str), Some("c-9"));
        assert_eq!(p.reply_to().as_ref().map(ShortString::as_str), Some("replies"));
        assert_eq!((*p.delivery_mode(), *p.priority()), (Some(2), Some(7)));
        assert_eq!(p.expiration().as_ref().map(ShortString::as_str), Some("60000"));
        assert_eq!(p.kind().as_ref().map(ShortString::as_str), Some("order.created"));
        assert_eq!(*p.timestamp(), Some(1_700_000_000), "AMQP timestamps are seconds");
        let table = p.headers().as_ref().expect("a headers table");
        let names: Vec<&str> = table.inner().keys().map(ShortString::as_str).collect();
        assert_eq!(names, ["blob", "x-region"], "user headers only; `:qos` is another broker's");
        assert_eq!(table.inner()["blob"], AMQPValue::LongString(LongString::from(vec![0u8, 0xff])));
    }

    #[test]
    fn records_without_a_destination_use_the_endpoint_exchange_and_bad_fields_are_named() {
        let mut r = record();
        r.destination = None;
        r.key = None;
        let out = to_amqp(&r, "events").expect("maps");
        assert_eq!((out.exchange.as_str(), out.routing_key.as_str()), ("events", ""));
        assert!(out.properties.headers().is_none());

        let mut bad = record();
        bad.headers.push(Header::new(":priority", "high"));
        assert_eq!(
            to_amqp(&bad, "").expect_err("refused"),
            "property `:priority`: `high` is not a priority from 0 to 255"
        );
        let mut long = record();
        long.key = Some(Bytes::from("k".repeat(256)));
        assert_eq!(to_amqp(&long, "").expect_err("refused"), "the routing key is longer than 255 bytes");
        assert_eq!(describe("", "q"), "the default exchange, routing key `q`");
    }

    #[test]
    fn a_delivery_becomes_a_record_with_properties_as_headers() {
        let mut table = FieldTable::default();
        table.insert("x-region".into(), AMQPValue::LongString(LongString::from("eu")));
        table.insert("attempt".into(), AMQPValue::LongInt(3));
        table.insert("x-death".into(), AMQPValue::FieldArray(Vec::new().into()));
        let properties = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_content_type("application/json".into())
            .with_correlation_id("c-1".into())
            .with_timestamp(1_700_000_000)
            .with_headers(table);
        let delivery = Delivery::mock(4, "events".into(), "orders.eu".into(), false, b"{}".to_vec());
        let delivery = Delivery { properties, ..delivery };
        let (r, _acker) = from_delivery(delivery, ComponentId(3), 42);
        assert_eq!((r.source, r.ordering_key), (ComponentId(3), 42));
        assert_eq!(r.id.to_string(), "m-1");
        assert_eq!(r.destination.as_ref().map(Text::as_str), Some("events"));
        assert_eq!(r.key.as_deref(), Some(&b"orders.eu"[..]));
        assert_eq!(r.content_type.as_ref().map(Text::as_str), Some("application/json"));
        let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|h| (h.name.as_str(), &h.value[..])).collect();
        assert_eq!(
            headers,
            [
                (":correlation-id", &b"c-1"[..]),
                (":timestamp", b"1700000000000"),
                ("attempt", b"3"),
                ("x-region", b"eu"),
            ]
        );
        assert_eq!(&r.payload[..], b"{}");
    }
}
