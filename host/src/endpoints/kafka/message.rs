//! Records to Kafka messages and back, by the record convention of
//! `docs/mappings/endpoints.md`: `destination` is the topic, `key` the message key,
//! headers are Kafka headers, and of the `:` properties only `:timestamp` means
//! something when producing; consuming writes `:partition`, `:offset` and `:timestamp`.
//! A record's `id` and `content_type` are ignored: the Kafka adapter carries both as
//! headers.

use bytes::Bytes;
use rdkafka::Timestamp;
use rdkafka::message::{BorrowedMessage, Header as KafkaHeader, Headers, Message, OwnedHeaders};

use crate::event::{Event, Header, Text};
use crate::routing::ComponentId;

/// What `FutureRecord` needs from a record besides its payload and key.
#[derive(Debug)]
pub(super) struct Outgoing<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The user headers; `None` when there are none.
    pub headers: Option<OwnedHeaders>,
    /// The record's `:timestamp`, milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
}

/// The message for `record`, an adapter's output. A record without a destination goes
/// to `default_topic`.
///
/// # Errors
/// No topic at all, or a `:timestamp` that is not a number, named. The adapter should
/// have refused such a record.
pub(super) fn to_kafka<'a>(record: &'a Event, default_topic: Option<&'a str>) -> Result<Outgoing<'a>, String> {
    let topic = record
        .destination
        .as_ref()
        .map(Text::as_str)
        .or(default_topic)
        .ok_or_else(|| String::from("no topic: the record has no destination and the endpoint has no `topic`"))?;
    let mut timestamp = None;
    let mut headers: Option<OwnedHeaders> = None;
    for header in &record.headers {
        let name = header.name.as_str();
        match name {
            ":timestamp" => {
                let text = std::str::from_utf8(&header.value).unwrap_or("");
                let millis = text
                    .parse::<i64>()
                    .map_err(|_| format!("property `:timestamp`: `{text}` is not milliseconds since the Unix epoch"))?;
                timestamp = Some(millis);
            }
            // Properties of other brokers (`:qos`, `:reply-to`) mean nothing here.
            _ if name.starts_with(':') => {}
            _ => {
                let value: &[u8] = &header.value;
                let kafka = KafkaHeader { key: name, value: Some(value) };
                headers = Some(
                    headers.unwrap_or_else(|| OwnedHeaders::new_with_capacity(record.headers.len())).insert(kafka),
                );
            }
        }
    }
    Ok(Outgoing { topic, headers, timestamp })
}

/// The record for a consumed `message`, the input of the adapter's downstream call:
/// `:partition`, `:offset` and `:timestamp` (when the broker gave one) first, then the
/// Kafka headers in order (a header without a value becomes an empty one).
pub(super) fn from_message(message: &BorrowedMessage<'_>, source: ComponentId, ordering_key: u64) -> Event {
    let payload = message.payload().map_or_else(Bytes::new, Bytes::copy_from_slice);
    let mut record = Event::new(source, payload);
    record.ordering_key = ordering_key;
    record.destination = Some(Text::from(message.topic()));
    record.key = message.key().map(Bytes::copy_from_slice);
    record.headers.push(Header::new(":partition", message.partition().to_string()));
    record.headers.push(Header::new(":offset", message.offset().to_string()));
    if let Timestamp::CreateTime(millis) | Timestamp::LogAppendTime(millis) = message.timestamp() {
        record.headers.push(Header::new(":timestamp", millis.to_string()));
    }
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let value = header.value.map_or_else(Bytes::new, Bytes::copy_from_slice);
            record.headers.push(Header::new(header.key, value));
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_headers_and_the_timestamp_follow_the_record_convention() {
        let mut r = Event::new(ComponentId(0), Bytes::from_static(b"hello"));
        r.destination = Some(Text::from("orders"));
        for (name, value) in [
            ("message-id", &b"e-1"[..]),
            (":timestamp", b"1700000000123"),
            (":qos", b"1"),
            ("x-region", b"eu"),
            ("blob", &[0u8, 0xff]),
        ] {
            r.headers.push(Header::new(name, Bytes::copy_from_slice(value)));
        }
        let out = to_kafka(&r, Some("ignored")).expect("maps");
        assert_eq!(out.topic, "orders");
        assert_eq!(out.timestamp, Some(1_700_000_000_123));
        let headers = out.headers.expect("headers");
        let got: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(
            got,
            [("message-id", Some(&b"e-1"[..])), ("x-region", Some(&b"eu"[..])), ("blob", Some(&[0u8, 0xff][..]))],
            "user headers in order; other brokers' properties dropped"
        );
    }

    #[test]
    fn the_default_topic_serves_records_without_one_and_bad_fields_are_named() {
        let mut r = Event::new(ComponentId(0), Bytes::new());
        let out = to_kafka(&r, Some("events")).expect("maps");
        assert_eq!((out.topic, out.timestamp), ("events", None));
        assert!(out.headers.is_none());
        assert_eq!(
            to_kafka(&r, None).expect_err("no topic"),
            "no topic: the record has no destination and the endpoint has no `topic`"
        );
        r.headers.push(Header::new(":timestamp", "yesterday"));
        assert_eq!(
            to_kafka(&r, Some("t")).expect_err("refused"),
            "property `:timestamp`: `yesterday` is not milliseconds since the Unix epoch"
        );
    }
}
