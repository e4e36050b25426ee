//! The JMS endpoint adapter: maps routed events to the AMQP 1.0 records the host's AMQP
//! client sends to JMS brokers such as ActiveMQ Artemis (upstream), and received AMQP 1.0
//! records to events (downstream). The annotations it writes are the ones the Qpid JMS
//! client reads, so JMS consumers see the right destination type and message class.
//!
//! Records follow the record convention of `docs/mappings/endpoints.md`.
//!
//! # Settings
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `destination_kind` | `queue` | The kind of destinations that carry no prefix: `queue` or `topic`. |
//! | `queue_prefix` | `queue://` | Put before queue names. May be empty. |
//! | `topic_prefix` | `topic://` | Put before topic names. May be empty. |
//! | `destination` | unset | The destination of events that have none (a bare name, or one with a prefix). |
//! | `message_type` | `auto` | `auto`, `text` or `bytes`: the JMS message class of records. |
//!
//! When both prefixes are set, neither may start with the other.
//!
//! # Upstream: event to record
//!
//! - The name is the event's destination, else setting `destination`; with neither the event
//!   fails as malformed (`no destination: the event has no destination and setting
//!   `destination` is unset`).
//! - A name that already starts with `topic_prefix` or `queue_prefix` (when set) keeps its
//!   prefix, which decides its kind; any other name gets the prefix of `destination_kind`.
//!   `destination` = prefix + bare name; a bare name that is empty fails as malformed.
//! - `:annotation:x-opt-jms-dest` = `0` for a queue, `1` for a topic.
//! - `:annotation:x-opt-jms-msg-type` = `5` (`TextMessage`) or `3` (`BytesMessage`), and the
//!   record is flagged binary for bytes. With `message_type = auto` a record is text when the
//!   event is not flagged binary and its payload is UTF-8, bytes otherwise; `text` makes
//!   every record text and fails events whose payload is not UTF-8 as malformed; `bytes`
//!   makes every record bytes. Qpid JMS reads both annotations as AMQP `byte` values.
//! - id → `id` (`JMSMessageID`), content type → `content_type`, `correlation-id` →
//!   `:correlation-id` (`JMSCorrelationID`), `reply-to` → `:reply-to` (`JMSReplyTo`, a full
//!   address such as `queue://replies`, passed as it is), `jms-type` → `:subject`
//!   (`JMSType`). `reply-to` and `jms-type` must be UTF-8.
//! - Every other header → an application property (a JMS property), name and value as they
//!   are. Names are not checked against Java identifier rules: a JMS consumer can read any
//!   name with `getObjectProperty`, but a message selector can only refer to names that are
//!   Java identifiers (`x-region` is not; `xRegion` is).
//! - A header whose name starts with `:` fails the event as malformed. The key is not
//!   carried: AMQP 1.0 has no key. The payload is kept.
//!
//! # Downstream: record to event
//!
//! - `destination` = the record's address without its prefix. Event header
//!   `jms-destination-kind` = `queue` or `topic`, from the prefix, else from
//!   `:annotation:x-opt-jms-dest` (`0`/`2` queue, `1`/`3` topic), else absent.
//! - `:annotation:x-opt-jms-msg-type` → event header `jms-message-type` = `message` (0),
//!   `object` (1), `map` (2), `bytes` (3), `stream` (4) or `text` (5). The event is flagged
//!   binary for `bytes`, not for `text`, otherwise as the record is; and always when its
//!   payload is not UTF-8.
//! - `id`, `content_type` → the event's id and content type; `:correlation-id` →
//!   `correlation-id`, `:reply-to` → `reply-to`, `:subject` → `jms-type`, `:timestamp` →
//!   `jms-timestamp`, `:priority` → `jms-priority`. Every other `:` property, including all
//!   annotations, is dropped.
//! - Application properties → headers.
//!
//! Items other than data items fail as unsupported in both directions. In both directions
//! the output keeps the input's flags (binary unless a rule above sets it, ack requested),
//! sequence and client id: the host tracks items by them.

use mediation_adapter_sdk::amqp::{self, AddressKind, Addressing};
use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Role, Settings, data_only};
use mediation_adapter_sdk::{BatchBuilder, Item};

/// The annotation Qpid JMS reads the destination type from.
const DEST_ANNOTATION: &str = ":annotation:x-opt-jms-dest";
/// The annotation Qpid JMS reads the message class from.
const MSG_TYPE_ANNOTATION: &str = ":annotation:x-opt-jms-msg-type";
/// The JMS message classes by their `x-opt-jms-msg-type` value.
const MESSAGE_TYPES: [&str; 6] = ["message", "object", "map", "bytes", "stream", "text"];
/// Record properties kept on the event, as `(record property, event header)`.
const KEPT_PROPERTIES: [(&str, &str); 3] =
    [(":subject", "jms-type"), (":timestamp", "jms-timestamp"), (":priority", "jms-priority")];

/// Which JMS message class records get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageType {
    /// Text when the event is text, bytes otherwise.
    Auto,
    /// Always `TextMessage`.
    Text,
    /// Always `BytesMessage`.
    Bytes,
}

/// Maps events to AMQP 1.0 records for JMS brokers and back.
#[derive(Debug)]
pub struct Jms {
    /// The kind of destinations that carry no prefix.
    kind: AddressKind,
    /// The prefixes that mark queues and topics.
    addressing: Addressing,
    /// The destination of events without one.
    destination: Option<String>,
    /// The message class of records.
    message_type: MessageType,
}

impl Adapter for Jms {
    const ROLE: Role = Role::Endpoint;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["destination_kind", "queue_prefix", "topic_prefix", "destination", "message_type"])?;
        let kind = match settings.choice("destination_kind", &["queue", "topic"], "queue")? {
            "topic" => AddressKind::Topic,
            _ => AddressKind::Queue,
        };
        let addressing =
            Addressing::new(settings.get_or("queue_prefix", "queue://"), settings.get_or("topic_prefix", "topic://"))
                .map_err(|e| format!("settings `queue_prefix` and `topic_prefix`: {e}"))?;
        let destination = settings.get("destination").map(str::to_owned);
        if let Some(destination) = &destination
            && addressing.split(destination).1.is_empty()
        {
            return Err(format!("setting `destination`: `{destination}` names no queue or topic"));
        }
        let message_type = match settings.choice("message_type", &["auto", "text", "bytes"], "auto")? {
            "text" => MessageType::Text,
            "bytes" => MessageType::Bytes,
            _ => MessageType::Auto,
        };
        Ok(Self { kind, addressing, destination, message_type })
    }

    fn upstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        data_only(item, "the JMS endpoint")?;
        let given = item.destination().or(self.destination.as_deref()).ok_or_else(|| {
            ItemError::malformed("no destination: the event has no destination and setting `destination` is unset")
        })?;
        let (prefixed, name) = self.addressing.split(given);
        if name.is_empty() {
            return Err(ItemError::malformed(format!("destination `{given}` names no queue or topic")));
        }
        let kind = prefixed.unwrap_or(self.kind);
        let utf8 = std::str::from_utf8(item.payload()).is_ok();
        let text = match self.message_type {
            MessageType::Auto => utf8 && !item.is_binary(),
            MessageType::Bytes => false,
            MessageType::Text if utf8 => true,
            MessageType::Text => {
                return Err(ItemError::malformed("the payload is not UTF-8, and setting `message_type` is `text`"));
            }
        };

        let mut w = out.copy_tracking(item);
        w.binary(!text)
            .destination(&self.addressing.address(kind, name))
            .payload(item.payload())
            .header(
                DEST_ANNOTATION,
                match kind {
                    AddressKind::Queue => b"0",
                    AddressKind::Topic => b"1",
                },
            )
            .header(MSG_TYPE_ANNOTATION, if text { b"5" } else { b"3" });
        amqp::write(item, &[("jms-type", ":subject")], &mut w)
    }

    fn downstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        data_only(item, "the JMS endpoint")?;
        let (prefixed, name) = match item.destination() {
            Some(address) => self.addressing.split(address),
            None => (None, ""),
        };
        let kind = prefixed.or_else(|| match item.header(DEST_ANNOTATION)? {
            b"0" | b"2" => Some(AddressKind::Queue),
            b"1" | b"3" => Some(AddressKind::Topic),
            _ => None,
        });
        let message_type = item
            .header(MSG_TYPE_ANNOTATION)
            .and_then(|value| std::str::from_utf8(value).ok()?.parse::<usize>().ok())
            .and_then(|code| MESSAGE_TYPES.get(code).copied());
        let binary = std::str::from_utf8(item.payload()).is_err()
            || match message_type {
                Some("text") => false,
                Some("bytes") => true,
                _ => item.is_binary(),
            };

        let mut w = out.copy_tracking(item);
        w.binary(binary).payload(item.payload());
        if item.destination().is_some() {
            w.destination(name);
        }
        if let Some(kind) = kind {
            w.header("jms-destination-kind", kind.as_str().as_bytes());
        }
        if let Some(message_type) = message_type {
            w.header("jms-message-type", message_type.as_bytes());
        }
        amqp::read(item, &KEPT_PROPERTIES, &mut w);
        Ok(())
    }
}

mediation_adapter_sdk::export_adapter!(Jms);

#[cfg(test)]
mod tests {
    use super::*;
    use mediation_adapter_sdk::guest::testing::{self, errors, map, round_trip};
    use mediation_adapter_sdk::guest::{Direction, ErrorKind};
    use mediation_adapter_sdk::{Batch, Kind};

    fn jms(settings: &[(&str, &str)]) -> Jms {
        configure(settings).expect("valid settings")
    }

    fn configure(settings: &[(&str, &str)]) -> Result<Jms, String> {
        testing::configure(settings)
    }

    /// The destination and the two annotations of the record for one event.
    fn addressed(adapter: &Jms, destination: &str, payload: &[u8], binary: bool) -> (String, String, String, bool) {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination(destination).payload(payload).binary(binary);
        let (data, index, outcome) = map(adapter, Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1], "{:?}", outcome.errors);
        let records = Batch::parse(&data, &index).expect("output parses");
        let record = records.get(0);
        let text = |name| String::from_utf8(record.header(name).expect("annotation").to_vec()).expect("UTF-8");
        (
            record.destination().expect("destination").to_owned(),
            text(DEST_ANNOTATION),
            text(MSG_TYPE_ANNOTATION),
            record.is_binary(),
        )
    }

    #[test]
    fn maps_an_event_to_a_jms_text_message() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .id("e1")
            .destination("orders")
            .key(b"not carried")
            .content_type("application/json")
            .header("correlation-id", b"c1")
            .header("reply-to", b"queue://replies")
            .header("JMS-Type", b"OrderCreated")
            .header("x-region", b"eu")
            .header("amount", b"12")
            .payload(br#"{"n":1}"#)
            .sequence(5)
            .client_id("c-5")
            .ack_requested();
        let (data, index, outcome) = map(&jms(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1]);
        assert!(outcome.errors.is_empty());
        let records = Batch::parse(&data, &index).expect("output parses");
        let record = records.get(0);
        assert_eq!(record.destination(), Some("queue://orders"));
        assert_eq!(record.id(), Some("e1"));
        assert_eq!(record.content_type(), Some("application/json"));
        assert_eq!(record.key(), None);
        assert_eq!(
            record.headers().collect::<Vec<_>>(),
            vec![
                (DEST_ANNOTATION, &b"0"[..]),
                (MSG_TYPE_ANNOTATION, &b"5"[..]),
                (":correlation-id", &b"c1"[..]),
                (":reply-to", &b"queue://replies"[..]),
                (":subject", &b"OrderCreated"[..]),
                ("x-region", &b"eu"[..]),
                ("amount", &b"12"[..]),
            ]
        );
        assert!(!record.is_binary());
        assert!(record.ack_requested());
        assert_eq!(record.sequence(), 5);
        assert_eq!(record.client_id(), Some("c-5"));
        assert_eq!(record.payload(), br#"{"n":1}"#);
    }

    #[test]
    fn destinations_get_one_prefix_and_the_kind_it_marks() {
        let queues = jms(&[]);
        let topics = jms(&[("destination_kind", "topic")]);
        let cases: [(&Jms, &str, &str, &str); 5] = [
            (&queues, "orders", "queue://orders", "0"),
            (&topics, "prices", "topic://prices", "1"),
            (&queues, "topic://prices", "topic://prices", "1"),
            (&topics, "queue://orders", "queue://orders", "0"),
            (&queues, "a/b.c", "queue://a/b.c", "0"),
        ];
        for (adapter, given, address, dest) in cases {
            let (destination, dest_annotation, _, _) = addressed(adapter, given, b"x", false);
            assert_eq!((destination.as_str(), dest_annotation.as_str()), (address, dest), "{given}");
        }
        let artemis = jms(&[("queue_prefix", ""), ("topic_prefix", "jms.topic."), ("destination_kind", "topic")]);
        assert_eq!(addressed(&artemis, "prices", b"x", false).0, "jms.topic.prices");
        assert_eq!(addressed(&artemis, "jms.topic.prices", b"x", false).0, "jms.topic.prices");
        let bare = jms(&[("queue_prefix", ""), ("topic_prefix", "")]);
        assert_eq!(addressed(&bare, "orders", b"x", false).0, "orders");
    }

    #[test]
    fn the_message_type_follows_the_setting() {
        let auto = jms(&[]);
        assert_eq!(addressed(&auto, "q", b"text", false).2, "5");
        assert_eq!(addressed(&auto, "q", b"text", true).2, "3", "flagged binary");
        assert_eq!(addressed(&auto, "q", &[0xff], false).2, "3", "not UTF-8");
        assert!(addressed(&auto, "q", &[0xff], false).3, "bytes records are flagged binary");
        let bytes = jms(&[("message_type", "bytes")]);
        assert_eq!(addressed(&bytes, "q", b"text", false).2, "3");
        let text = jms(&[("message_type", "text")]);
        let (_, _, msg_type, binary) = addressed(&text, "q", b"text", true);
        assert_eq!((msg_type.as_str(), binary), ("5", false));

        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("q").payload(&[0xff]);
        let (_, _, outcome) = map(&text, Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(0, ErrorKind::Malformed, "the payload is not UTF-8, and setting `message_type` is `text`")]
        );
    }

    #[test]
    fn events_without_a_usable_destination_fail() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"x");
        input.item(Kind::Data).destination("topic://").payload(b"x");
        let (_, _, outcome) = map(&jms(&[]), Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![
                (
                    0,
                    ErrorKind::Malformed,
                    "no destination: the event has no destination and setting `destination` is unset"
                ),
                (1, ErrorKind::Malformed, "destination `topic://` names no queue or topic"),
            ]
        );
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"x");
        let (data, index, _) = map(&jms(&[("destination", "topic://audit")]), Direction::Upstream, input);
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.get(0).destination(), Some("topic://audit"));
        assert_eq!(records.get(0).header(DEST_ANNOTATION), Some(&b"1"[..]));
    }

    #[test]
    fn one_bad_event_fails_alone() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("a").id("1");
        input.item(Kind::Data).destination("b").id("2").header("reply-to", &[0xfe]);
        input.item(Kind::Data).destination("c").id("3");
        let (data, index, outcome) = map(&jms(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 0, 1]);
        assert_eq!(
            errors(&outcome),
            vec![(
                1,
                ErrorKind::Malformed,
                "header `reply-to`: the value is not UTF-8, and `:reply-to` is an AMQP string"
            )]
        );
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.len(), 2);
        assert_eq!((records.get(0).destination(), records.get(0).id()), (Some("queue://a"), Some("1")));
        assert_eq!((records.get(1).destination(), records.get(1).id()), (Some("queue://c"), Some("3")));
        assert_eq!(records.get(1).headers().len(), 2, "the two annotations only");
    }

    #[test]
    fn reserved_header_names_are_refused() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("q").header(":annotation:x-opt-jms-dest", b"1");
        let (_, _, outcome) = map(&jms(&[]), Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(
                0,
                ErrorKind::Malformed,
                "header `:annotation:x-opt-jms-dest`: names starting with `:` are reserved for broker properties"
            )]
        );
    }

    #[test]
    fn maps_a_jms_message_to_an_event() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .destination("topic://prices")
            .id("ID:artemis-1")
            .content_type("application/json")
            .header(DEST_ANNOTATION, b"1")
            .header(MSG_TYPE_ANNOTATION, b"5")
            .header(":annotation:x-opt-delivery-delay", b"0")
            .header(":correlation-id", b"c1")
            .header(":reply-to", b"queue://replies")
            .header(":subject", b"PriceTick")
            .header(":timestamp", b"1700000000000")
            .header(":priority", b"4")
            .header(":durable", b"true")
            .header("symbol", b"ACME")
            .payload(br#"{"p":1}"#)
            .client_id("c-12")
            .sequence(12);
        let (data, index, outcome) = map(&jms(&[]), Direction::Downstream, input);
        assert_eq!(outcome.produced, vec![1]);
        let events = Batch::parse(&data, &index).expect("output parses");
        let event = events.get(0);
        assert_eq!(event.destination(), Some("prices"));
        assert_eq!(event.id(), Some("ID:artemis-1"));
        assert_eq!(event.content_type(), Some("application/json"));
        assert_eq!(
            event.headers().collect::<Vec<_>>(),
            vec![
                ("jms-destination-kind", &b"topic"[..]),
                ("jms-message-type", &b"text"[..]),
                ("correlation-id", &b"c1"[..]),
                ("reply-to", &b"queue://replies"[..]),
                ("jms-type", &b"PriceTick"[..]),
                ("jms-timestamp", &b"1700000000000"[..]),
                ("jms-priority", &b"4"[..]),
                ("symbol", &b"ACME"[..]),
            ]
        );
        assert!(!event.is_binary());
        assert_eq!(event.sequence(), 12);
        assert_eq!(event.client_id(), Some("c-12"));
    }

    #[test]
    fn the_kind_and_class_of_unprefixed_records_come_from_annotations() {
        let adapter = jms(&[("queue_prefix", ""), ("topic_prefix", "")]);
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .destination("orders")
            .header(DEST_ANNOTATION, b"2")
            .header(MSG_TYPE_ANNOTATION, b"3")
            .payload(b"utf8 but bytes");
        input.item(Kind::Data).destination("plain").payload(b"x");
        input.item(Kind::Data).destination("mapped").header(MSG_TYPE_ANNOTATION, b"2").binary(true);
        let (data, index, outcome) = map(&adapter, Direction::Downstream, input);
        assert_eq!(outcome.produced, vec![1, 1, 1]);
        let events = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(events.get(0).destination(), Some("orders"));
        assert_eq!(
            events.get(0).headers().collect::<Vec<_>>(),
            vec![("jms-destination-kind", &b"queue"[..]), ("jms-message-type", &b"bytes"[..])]
        );
        assert!(events.get(0).is_binary());
        assert_eq!(events.get(1).headers().len(), 0);
        assert!(!events.get(1).is_binary());
        assert_eq!(events.get(2).header("jms-message-type"), Some(&b"map"[..]));
        assert!(events.get(2).is_binary(), "kept from the record");
    }

    #[test]
    fn an_event_survives_the_round_trip() {
        let adapter = jms(&[("destination_kind", "topic")]);
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .id("e1")
            .destination("prices")
            .content_type("text/plain")
            .header("jms-type", b"Tick")
            .header("correlation-id", b"c1")
            .header("symbol", b"ACME")
            .payload(b"12.5");
        let (data, index, _) = round_trip(&adapter, input);
        let events = Batch::parse(&data, &index).expect("output parses");
        let event = events.get(0);
        assert_eq!(event.id(), Some("e1"));
        assert_eq!(event.destination(), Some("prices"));
        assert_eq!(event.content_type(), Some("text/plain"));
        assert_eq!(
            event.headers().collect::<Vec<_>>(),
            vec![
                ("jms-destination-kind", &b"topic"[..]),
                ("jms-message-type", &b"text"[..]),
                ("jms-type", &b"Tick"[..]),
                ("correlation-id", &b"c1"[..]),
                ("symbol", &b"ACME"[..]),
            ]
        );
        assert_eq!(event.payload(), b"12.5");
    }

    #[test]
    fn control_items_are_unsupported() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Ack).id("e1");
        let (_, _, outcome) = map(&jms(&[]), Direction::Downstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(0, ErrorKind::Unsupported, "the JMS endpoint maps data items only, not Ack items")]
        );
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        assert_eq!(
            configure(&[("destination_kind", "durable")]).expect_err("refused"),
            "setting `destination_kind`: `durable` is not one of queue, topic"
        );
        assert_eq!(
            configure(&[("message_type", "map")]).expect_err("refused"),
            "setting `message_type`: `map` is not one of auto, text, bytes"
        );
        assert_eq!(
            configure(&[("queue_prefix", "jms."), ("topic_prefix", "jms.topic.")]).expect_err("refused"),
            "settings `queue_prefix` and `topic_prefix`: the prefixes `jms.` and `jms.topic.` overlap, so an \
             address's kind would be ambiguous"
        );
        assert_eq!(
            configure(&[("destination", "queue://")]).expect_err("refused"),
            "setting `destination`: `queue://` names no queue or topic"
        );
        assert_eq!(
            configure(&[("address", "q")]).expect_err("refused"),
            "unknown setting `address` (known: destination_kind, queue_prefix, topic_prefix, destination, \
             message_type)"
        );
    }
}
