//! The Kafka endpoint adapter: maps routed events to the records the host's Kafka client
//! produces (upstream) and consumed Kafka records to events (downstream).
//!
//! Records follow the record convention of `docs/mappings/endpoints.md`. Kafka has no
//! message id or content type property, so this adapter carries both as Kafka headers
//! and leaves the record's `id` and `content_type` fields unset; the Kafka client reads
//! `destination`, `key`, headers and payload only.
//!
//! # Settings
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `topic` | unset | The topic of events that have no destination. Must be a legal topic name. |
//! | `key_header` | unset | The event header the record key is taken from when the event has no key. |
//! | `id_header` | `message-id` | The Kafka header that carries the event id. |
//! | `content_type_header` | `content-type` | The Kafka header that carries the event content type. |
//!
//! Header names must not be empty or start with `:`, and `id_header` and
//! `content_type_header` must differ (compared ASCII case-insensitively).
//!
//! # Upstream: event to record
//!
//! - `destination` = the event's destination, else setting `topic`; with neither the event
//!   fails as malformed (`no topic: the event has no destination and setting `topic` is
//!   unset`). The topic must be 1 to 249 characters of `a-z A-Z 0-9 . _ -` and not `.` or
//!   `..`; otherwise the event fails as malformed, naming the topic.
//! - `key` = the event's key, else the value of header `key_header` (the header is also
//!   kept as a Kafka header), else no key.
//! - The event id becomes header `id_header`, the content type header `content_type_header`,
//!   written first. An event header with the same name (ASCII case-insensitive) is left out
//!   when the event has that field, so the record carries one value.
//! - Every other event header becomes a Kafka header, in order, with its bytes as they are.
//!   `correlation-id` and `reply-to` stay ordinary headers: Kafka has no such properties.
//! - An event header whose name starts with `:` fails the event as malformed: that prefix is
//!   reserved for broker properties.
//! - The payload is kept.
//!
//! # Downstream: record to event
//!
//! - `destination` = the record's topic; `key` = the record's key.
//! - `id` = the first header named `id_header` (must be UTF-8, else the record fails as
//!   malformed), else the record's `id`. `content_type` likewise from `content_type_header`.
//!   A repeat of either header stays an ordinary event header.
//! - `:partition`, `:offset` and `:timestamp` become event headers `kafka-partition`,
//!   `kafka-offset` and `kafka-timestamp`. Every other `:` property is dropped.
//! - Every other header becomes an event header.
//! - The event is flagged binary when the record is, or when its payload is not UTF-8.
//!
//! Items other than data items fail as unsupported in both directions. In both directions
//! the output keeps the input's flags (binary unless a rule above sets it, ack requested),
//! sequence and client id: the host tracks items by them.

use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Role, Settings, data_only};
use mediation_adapter_sdk::{BatchBuilder, Item};

/// The longest topic name Kafka accepts.
const MAX_TOPIC_CHARS: usize = 249;

/// Record properties kept on the event, as `(record property, event header)`.
const KEPT_PROPERTIES: [(&str, &str); 3] =
    [(":partition", "kafka-partition"), (":offset", "kafka-offset"), (":timestamp", "kafka-timestamp")];

/// Maps events to Kafka records and back.
#[derive(Debug)]
pub struct Kafka {
    /// The topic of events without a destination; `None` makes such events fail.
    topic: Option<String>,
    /// The event header that supplies the key of events without one.
    key_header: Option<String>,
    /// The Kafka header that carries the event id.
    id_header: String,
    /// The Kafka header that carries the content type.
    content_type_header: String,
}

impl Adapter for Kafka {
    const ROLE: Role = Role::Endpoint;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["topic", "key_header", "id_header", "content_type_header"])?;
        let topic = match settings.get("topic") {
            Some(topic) => {
                check_topic(topic).map_err(|e| format!("setting `topic`: {e}"))?;
                Some(topic.to_owned())
            }
            None => None,
        };
        let header = |key: &str, default: Option<&str>| -> Result<Option<String>, String> {
            match settings.get(key).or(default) {
                Some("") => Err(format!("setting `{key}`: must not be empty")),
                Some(name) if name.starts_with(':') => {
                    Err(format!("setting `{key}`: `{name}` starts with `:`, which is reserved for broker properties"))
                }
                name => Ok(name.map(str::to_owned)),
            }
        };
        let key_header = header("key_header", None)?;
        let id_header = header("id_header", Some("message-id"))?.unwrap_or_default();
        let content_type_header = header("content_type_header", Some("content-type"))?.unwrap_or_default();
        if id_header.eq_ignore_ascii_case(&content_type_header) {
            return Err(format!("setting `content_type_header`: `{content_type_header}` is also the `id_header`"));
        }
        Ok(Self { topic, key_header, id_header, content_type_header })
    }

    fn upstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        data_only(item, "the Kafka endpoint")?;
        let topic = match (item.destination(), &self.topic) {
            (Some(destination), _) => destination,
            (None, Some(topic)) => topic,
            (None, None) => {
                return Err(ItemError::malformed(
                    "no topic: the event has no destination and setting `topic` is unset",
                ));
            }
        };
        check_topic(topic).map_err(ItemError::malformed)?;
        let key = item.key().or_else(|| self.key_header.as_deref().and_then(|name| item.header(name)));

        let mut w = out.copy_tracking(item);
        w.destination(topic).payload(item.payload());
        if let Some(key) = key {
            w.key(key);
        }
        if let Some(id) = item.id() {
            w.header(&self.id_header, id.as_bytes());
        }
        if let Some(content_type) = item.content_type() {
            w.header(&self.content_type_header, content_type.as_bytes());
        }
        for (name, value) in item.headers() {
            if name.starts_with(':') {
                return Err(ItemError::malformed(format!(
                    "header `{name}`: names starting with `:` are reserved for broker properties"
                )));
            }
            let replaced = (item.id().is_some() && name.eq_ignore_ascii_case(&self.id_header))
                || (item.content_type().is_some() && name.eq_ignore_ascii_case(&self.content_type_header));
            if !replaced {
                w.header(name, value);
            }
        }
        Ok(())
    }

    fn downstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        data_only(item, "the Kafka endpoint")?;
        let text_header = |name: &str| -> Result<Option<&str>, ItemError> {
            item.header(name)
                .map(|value| {
                    std::str::from_utf8(value)
                        .map_err(|_| ItemError::malformed(format!("header `{name}`: the value is not UTF-8")))
                })
                .transpose()
        };
        let id = text_header(&self.id_header)?.or(item.id());
        let content_type = text_header(&self.content_type_header)?.or(item.content_type());
        let binary = item.is_binary() || std::str::from_utf8(item.payload()).is_err();

        let mut w = out.copy_tracking(item);
        w.binary(binary).payload(item.payload());
        if let Some(topic) = item.destination() {
            w.destination(topic);
        }
        if let Some(key) = item.key() {
            w.key(key);
        }
        if let Some(id) = id {
            w.id(id);
        }
        if let Some(content_type) = content_type {
            w.content_type(content_type);
        }
        let (mut id_seen, mut content_type_seen) = (false, false);
        for (name, value) in item.headers() {
            if let Some((_, event_header)) = KEPT_PROPERTIES.iter().find(|(property, _)| *property == name) {
                w.header(event_header, value);
            } else if name.starts_with(':') {
                // A transport-only property of another kind; the event has no use for it.
            } else if !id_seen && name.eq_ignore_ascii_case(&self.id_header) {
                id_seen = true;
            } else if !content_type_seen && name.eq_ignore_ascii_case(&self.content_type_header) {
                content_type_seen = true;
            } else {
                w.header(name, value);
            }
        }
        Ok(())
    }
}

/// Checks a topic name against Kafka's rules.
fn check_topic(topic: &str) -> Result<(), String> {
    let legal = (1..=MAX_TOPIC_CHARS).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if legal {
        Ok(())
    } else {
        Err(format!(
            "topic `{}` is not a legal Kafka topic name (1 to {MAX_TOPIC_CHARS} characters of a-z, A-Z, 0-9, \
             `.`, `_` and `-`, and not `.` or `..`)",
            topic.escape_debug()
        ))
    }
}

mediation_adapter_sdk::export_adapter!(Kafka);

#[cfg(test)]
mod tests {
    use super::*;
    use mediation_adapter_sdk::guest::testing::{self, errors, map, round_trip};
    use mediation_adapter_sdk::guest::{Direction, ErrorKind};
    use mediation_adapter_sdk::layout::{FLAG_ACK_REQUESTED, FLAG_BINARY};
    use mediation_adapter_sdk::{Batch, Kind};

    fn kafka(settings: &[(&str, &str)]) -> Kafka {
        configure(settings).expect("valid settings")
    }

    fn configure(settings: &[(&str, &str)]) -> Result<Kafka, String> {
        testing::configure(settings)
    }

    #[test]
    fn maps_an_event_to_a_record_with_id_and_content_type_headers() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .id("e1")
            .client_id("c-9")
            .destination("orders")
            .key(b"k1")
            .content_type("application/json")
            .header("x-region", b"eu")
            .header("correlation-id", b"corr-1")
            .header("reply-to", b"replies")
            .payload(br#"{"n":1}"#)
            .sequence(7)
            .ack_requested();
        let (data, index, outcome) = map(&kafka(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1]);
        assert!(outcome.errors.is_empty());
        let records = Batch::parse(&data, &index).expect("output parses");
        let record = records.get(0);
        assert_eq!(record.kind(), Kind::Data);
        assert_eq!(record.destination(), Some("orders"));
        assert_eq!(record.key(), Some(&b"k1"[..]));
        assert_eq!(record.id(), None, "Kafka carries the id as a header");
        assert_eq!(record.content_type(), None, "Kafka carries the content type as a header");
        assert_eq!(
            record.headers().collect::<Vec<_>>(),
            vec![
                ("message-id", &b"e1"[..]),
                ("content-type", &b"application/json"[..]),
                ("x-region", &b"eu"[..]),
                ("correlation-id", &b"corr-1"[..]),
                ("reply-to", &b"replies"[..]),
            ]
        );
        assert_eq!(record.payload(), br#"{"n":1}"#);
        assert_eq!(record.sequence(), 7);
        assert!(record.ack_requested());
        assert_eq!(record.client_id(), Some("c-9"));
    }

    #[test]
    fn the_topic_setting_serves_events_without_a_destination() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"a");
        input.item(Kind::Data).destination("explicit").payload(b"b");
        let (data, index, outcome) = map(&kafka(&[("topic", "fallback")]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 1]);
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.get(0).destination(), Some("fallback"));
        assert_eq!(records.get(1).destination(), Some("explicit"));
    }

    #[test]
    fn an_event_without_any_topic_fails() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"a");
        let (_, _, outcome) = map(&kafka(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![0]);
        assert_eq!(
            errors(&outcome),
            vec![(0, ErrorKind::Malformed, "no topic: the event has no destination and setting `topic` is unset")]
        );
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        let longest = "t".repeat(249);
        for legal in ["a", "orders.v1_eu-2", "...", longest.as_str()] {
            assert_eq!(check_topic(legal), Ok(()), "{legal}");
        }
        let too_long = "t".repeat(250);
        for illegal in ["", ".", "..", "a b", "a/b", "ordérs", "a\0b", too_long.as_str()] {
            assert!(check_topic(illegal).is_err(), "{illegal:?} should be refused");
        }
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("orders/eu").payload(b"a");
        let (_, _, outcome) = map(&kafka(&[]), Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(
                0,
                ErrorKind::Malformed,
                "topic `orders/eu` is not a legal Kafka topic name (1 to 249 characters of a-z, A-Z, 0-9, `.`, \
                 `_` and `-`, and not `.` or `..`)"
            )]
        );
    }

    #[test]
    fn the_key_comes_from_the_key_header_only_when_the_event_has_none() {
        let adapter = kafka(&[("key_header", "customer")]);
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("t").header("Customer", b"c-42");
        input.item(Kind::Data).destination("t").key(b"own").header("customer", b"c-42");
        input.item(Kind::Data).destination("t");
        let (data, index, outcome) = map(&adapter, Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 1, 1]);
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.get(0).key(), Some(&b"c-42"[..]));
        assert_eq!(records.get(0).header("customer"), Some(&b"c-42"[..]), "the header stays");
        assert_eq!(records.get(1).key(), Some(&b"own"[..]));
        assert_eq!(records.get(2).key(), None);
    }

    #[test]
    fn the_event_id_replaces_a_header_of_the_same_name() {
        let adapter = kafka(&[("id_header", "x-id"), ("content_type_header", "x-type")]);
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("t").id("e1").header("X-Id", b"stale").header("x-type", b"text/plain");
        let (data, index, outcome) = map(&adapter, Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1]);
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(
            records.get(0).headers().collect::<Vec<_>>(),
            vec![("x-id", &b"e1"[..]), ("x-type", &b"text/plain"[..])],
            "the id wins over header X-Id; x-type passes because the event has no content type"
        );
    }

    #[test]
    fn reserved_header_names_are_refused() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("t").header(":partition", b"3");
        let (_, _, outcome) = map(&kafka(&[]), Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(
                0,
                ErrorKind::Malformed,
                "header `:partition`: names starting with `:` are reserved for broker properties"
            )]
        );
    }

    #[test]
    fn one_bad_event_fails_alone() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("first").id("1").payload(b"one");
        input.item(Kind::Data).destination("bad topic").id("2").header("x", b"y").payload(b"two");
        input.item(Kind::Data).destination("third").id("3").payload(b"three");
        let (data, index, outcome) = map(&kafka(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 0, 1]);
        assert_eq!(outcome.errors.len(), 1);
        assert_eq!(outcome.errors[0].item, 1);
        assert_eq!(outcome.errors[0].kind, ErrorKind::Malformed);
        assert!(outcome.errors[0].message.starts_with("topic `bad topic`"));
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.len(), 2);
        assert_eq!(records.get(0).destination(), Some("first"));
        assert_eq!(records.get(0).headers().collect::<Vec<_>>(), vec![("message-id", &b"1"[..])]);
        assert_eq!(records.get(1).destination(), Some("third"));
        assert_eq!(records.get(1).payload(), b"three");
        assert_eq!(records.get(1).headers().collect::<Vec<_>>(), vec![("message-id", &b"3"[..])]);
    }

    #[test]
    fn control_items_are_unsupported() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Subscribe).destination("orders");
        let (_, _, outcome) = map(&kafka(&[]), Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(0, ErrorKind::Unsupported, "the Kafka endpoint maps data items only, not Subscribe items")]
        );
    }

    #[test]
    fn maps_a_record_to_an_event() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .destination("orders")
            .key(b"k1")
            .header(":partition", b"2")
            .header(":offset", b"1041")
            .header(":timestamp", b"1700000000000")
            .header(":leader-epoch", b"5")
            .header("message-id", b"e1")
            .header("x-region", b"eu")
            .header("Content-Type", b"application/json")
            .header("message-id", b"second")
            .payload(br#"{"n":1}"#)
            .client_id("c-2")
            .sequence(11);
        let (data, index, outcome) = map(&kafka(&[]), Direction::Downstream, input);
        assert_eq!(outcome.produced, vec![1]);
        let events = Batch::parse(&data, &index).expect("output parses");
        let event = events.get(0);
        assert_eq!(event.destination(), Some("orders"));
        assert_eq!(event.key(), Some(&b"k1"[..]));
        assert_eq!(event.id(), Some("e1"));
        assert_eq!(event.content_type(), Some("application/json"));
        assert_eq!(
            event.headers().collect::<Vec<_>>(),
            vec![
                ("kafka-partition", &b"2"[..]),
                ("kafka-offset", &b"1041"[..]),
                ("kafka-timestamp", &b"1700000000000"[..]),
                ("x-region", &b"eu"[..]),
                ("message-id", &b"second"[..]),
            ]
        );
        assert_eq!(event.payload(), br#"{"n":1}"#);
        assert_eq!(event.sequence(), 11);
        assert_eq!(event.client_id(), Some("c-2"));
        assert!(!event.is_binary());
    }

    #[test]
    fn a_record_payload_that_is_not_utf8_makes_a_binary_event() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("t").payload(&[0xff, 0x00]);
        let (data, index, _) = map(&kafka(&[]), Direction::Downstream, input);
        let events = Batch::parse(&data, &index).expect("output parses");
        assert!(events.get(0).is_binary());
        assert_eq!(events.get(0).flags() & FLAG_BINARY, FLAG_BINARY);
        assert_eq!(events.get(0).flags() & FLAG_ACK_REQUESTED, 0);
    }

    #[test]
    fn a_record_id_that_is_not_utf8_fails_alone() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("t").header("message-id", &[0xc3]);
        input.item(Kind::Data).destination("t").header("message-id", b"ok");
        let (data, index, outcome) = map(&kafka(&[]), Direction::Downstream, input);
        assert_eq!(outcome.produced, vec![0, 1]);
        assert_eq!(errors(&outcome), vec![(0, ErrorKind::Malformed, "header `message-id`: the value is not UTF-8")]);
        let events = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(events.get(0).id(), Some("ok"));
    }

    #[test]
    fn the_record_id_field_is_the_fallback() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("t").id("from-client").content_type("text/plain");
        let (data, index, _) = map(&kafka(&[]), Direction::Downstream, input);
        let events = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(events.get(0).id(), Some("from-client"));
        assert_eq!(events.get(0).content_type(), Some("text/plain"));
    }

    #[test]
    fn an_event_survives_the_round_trip() {
        let adapter = kafka(&[]);
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .id("e1")
            .destination("orders")
            .key(b"k")
            .content_type("text/plain")
            .header("correlation-id", b"c1")
            .payload(b"hello");
        let (data, index, _) = round_trip(&adapter, input);
        let events = Batch::parse(&data, &index).expect("output parses");
        let event = events.get(0);
        assert_eq!(event.id(), Some("e1"));
        assert_eq!(event.destination(), Some("orders"));
        assert_eq!(event.key(), Some(&b"k"[..]));
        assert_eq!(event.content_type(), Some("text/plain"));
        assert_eq!(event.headers().collect::<Vec<_>>(), vec![("correlation-id", &b"c1"[..])]);
        assert_eq!(event.payload(), b"hello");
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        assert_eq!(
            configure(&[("partition", "1")]).expect_err("refused"),
            "unknown setting `partition` (known: topic, key_header, id_header, content_type_header)"
        );
        assert!(configure(&[("topic", "a b")]).expect_err("refused").starts_with("setting `topic`: topic `a b`"));
        assert_eq!(configure(&[("id_header", "")]).expect_err("refused"), "setting `id_header`: must not be empty");
        assert_eq!(
            configure(&[("key_header", ":key")]).expect_err("refused"),
            "setting `key_header`: `:key` starts with `:`, which is reserved for broker properties"
        );
        assert_eq!(
            configure(&[("content_type_header", "Message-ID")]).expect_err("refused"),
            "setting `content_type_header`: `Message-ID` is also the `id_header`"
        );
    }
}
