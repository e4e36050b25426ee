//! The MQTT 5 endpoint adapter: maps routed events to the PUBLISH records the host's MQTT
//! client sends (upstream) and received PUBLISH records to events (downstream).
//!
//! Records follow the record convention of `docs/mappings/endpoints.md`. MQTT has no
//! message id property and no key: the id travels as user property `message-id`, the
//! record's `id` and `key` fields stay unset.
//!
//! # Settings
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `topic_prefix` | `""` | Put before every topic the adapter publishes to, and removed from every topic it receives. Must not contain `+`, `#` or U+0000. |
//! | `topic` | unset | The topic (before the prefix) of events that have no destination. |
//! | `qos` | `1` | The QoS of every record: `0`, `1` or `2`. |
//! | `retain` | `false` | The retain flag of every record: `true` or `false`. |
//!
//! # Upstream: event to record
//!
//! - `destination` = `topic_prefix` + the event's destination, else `topic_prefix` +
//!   setting `topic`; with neither the event fails as malformed (`no topic: the event has
//!   no destination and setting `topic` is unset`). A topic that is empty, holds `+` or `#`,
//!   holds U+0000 or is longer than 65535 bytes fails the event as malformed, naming it.
//! - `:qos` = setting `qos`, `:retain` = setting `retain`, written first.
//! - Content type, id and headers as [`properties`] describes: `content_type` → Content
//!   Type, id → user property `message-id`, `reply-to` → `:response-topic` (after the
//!   prefix), `correlation-id` → `:correlation-data`, other headers → user properties, which
//!   must be UTF-8 (malformed otherwise, naming the header). Headers starting with `:` are
//!   refused as malformed.
//! - The event key is not carried: MQTT has no key.
//! - The payload is kept.
//!
//! # Downstream: record to event
//!
//! - `destination` = the record's topic without `topic_prefix`. A topic that does not start
//!   with the prefix fails the record as malformed, naming topic and prefix.
//! - `:response-topic` → `reply-to` (prefix removed when present), `:correlation-data` →
//!   `correlation-id`, user property `message-id` → id, Content Type → content type, other
//!   user properties → headers.
//! - `:retain` → event header `mqtt-retain` (`true`/`false`), so a client can tell a retained
//!   message from a live one. `:qos` and every other `:` property are dropped.
//! - The event is flagged binary when the record is, or when its payload is not UTF-8.
//!
//! Items other than data items fail as unsupported in both directions. In both directions
//! the output keeps the input's flags (binary unless a rule above sets it, ack requested),
//! sequence and client id: the host tracks items by them.

use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Role, Settings, data_only};
// The SDK's MQTT 5 property mapping, which the Solace adapter shares.
use mediation_adapter_sdk::mqtt as properties;
use mediation_adapter_sdk::{BatchBuilder, Item};

/// Maps events to MQTT 5 PUBLISH records and back.
#[derive(Debug)]
pub struct Mqtt5 {
    /// The namespace this adapter's topics live in on the broker; clients never see it.
    topic_prefix: String,
    /// The topic (without prefix) of events without a destination.
    topic: Option<String>,
    /// The `:qos` value of every record.
    qos: &'static str,
    /// The `:retain` value of every record.
    retain: &'static str,
}

impl Adapter for Mqtt5 {
    const ROLE: Role = Role::Endpoint;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["topic_prefix", "topic", "qos", "retain"])?;
        let topic_prefix = settings.get_or("topic_prefix", "").to_owned();
        if topic_prefix.contains(['+', '#', '\0']) {
            return Err(format!(
                "setting `topic_prefix`: `{}` must not contain `+`, `#` or U+0000",
                topic_prefix.escape_debug()
            ));
        }
        let topic = settings.get("topic").map(str::to_owned);
        if let Some(topic) = &topic {
            properties::check_topic_name(&format!("{topic_prefix}{topic}"))
                .map_err(|e| format!("setting `topic`: {e}"))?;
        }
        Ok(Self {
            topic_prefix,
            topic,
            qos: settings.choice("qos", &["0", "1", "2"], "1")?,
            retain: settings.choice("retain", &["true", "false"], "false")?,
        })
    }

    fn upstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        data_only(item, "the MQTT 5 endpoint")?;
        let name = item.destination().or(self.topic.as_deref()).ok_or_else(|| {
            ItemError::malformed("no topic: the event has no destination and setting `topic` is unset")
        })?;
        let topic = format!("{}{name}", self.topic_prefix);
        properties::check_topic_name(&topic).map_err(ItemError::malformed)?;

        let mut w = out.copy_tracking(item);
        w.destination(&topic)
            .payload(item.payload())
            .header(":qos", self.qos.as_bytes())
            .header(":retain", self.retain.as_bytes());
        properties::write(item, &self.topic_prefix, &mut w)
    }

    fn downstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        data_only(item, "the MQTT 5 endpoint")?;
        let destination = item
            .destination()
            .map(|topic| {
                topic.strip_prefix(self.topic_prefix.as_str()).ok_or_else(|| {
                    ItemError::malformed(format!(
                        "topic `{topic}` lies outside setting `topic_prefix` (`{}`)",
                        self.topic_prefix
                    ))
                })
            })
            .transpose()?;
        let binary = item.is_binary() || std::str::from_utf8(item.payload()).is_err();

        let mut w = out.copy_tracking(item);
        w.binary(binary).payload(item.payload());
        if let Some(destination) = destination {
            w.destination(destination);
        }
        properties::read(item, &self.topic_prefix, &[(":retain", "mqtt-retain")], &mut w)
    }
}

mediation_adapter_sdk::export_adapter!(Mqtt5);

#[cfg(test)]
mod tests {
    use super::*;
    use mediation_adapter_sdk::guest::testing::{self, errors, map, round_trip};
    use mediation_adapter_sdk::guest::{Direction, ErrorKind};
    use mediation_adapter_sdk::{Batch, Kind};

    fn mqtt(settings: &[(&str, &str)]) -> Mqtt5 {
        configure(settings).expect("valid settings")
    }

    fn configure(settings: &[(&str, &str)]) -> Result<Mqtt5, String> {
        testing::configure(settings)
    }

    /// The error of a single event with `destination` and `header`.
    fn upstream_error(adapter: &Mqtt5, destination: &str, header: (&str, &[u8])) -> (ErrorKind, String) {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination(destination).header(header.0, header.1);
        let (_, _, outcome) = map(adapter, Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![0]);
        let error = &outcome.errors[0];
        (error.kind, error.message.clone())
    }

    #[test]
    fn maps_an_event_to_a_publish_record() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .id("e1")
            .destination("sensors/t1")
            .key(b"ignored")
            .content_type("application/json")
            .header("reply-to", b"replies/c1")
            .header("correlation-id", &[0, 1, 0xff])
            .header("unit", b"celsius")
            .payload(br#"{"t":21.5}"#)
            .sequence(4)
            .client_id("c-4")
            .ack_requested();
        let (data, index, outcome) = map(&mqtt(&[("topic_prefix", "plant/")]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1]);
        assert!(outcome.errors.is_empty());
        let records = Batch::parse(&data, &index).expect("output parses");
        let record = records.get(0);
        assert_eq!(record.destination(), Some("plant/sensors/t1"));
        assert_eq!(record.key(), None);
        assert_eq!(record.id(), None);
        assert_eq!(record.content_type(), Some("application/json"));
        assert_eq!(
            record.headers().collect::<Vec<_>>(),
            vec![
                (":qos", &b"1"[..]),
                (":retain", &b"false"[..]),
                ("message-id", &b"e1"[..]),
                (":response-topic", &b"plant/replies/c1"[..]),
                (":correlation-data", &[0, 1, 0xff][..]),
                ("unit", &b"celsius"[..]),
            ]
        );
        assert_eq!(record.payload(), br#"{"t":21.5}"#);
        assert_eq!(record.sequence(), 4);
        assert_eq!(record.client_id(), Some("c-4"));
        assert!(record.ack_requested());
    }

    #[test]
    fn qos_retain_and_the_default_topic_come_from_settings() {
        let adapter = mqtt(&[("qos", "2"), ("retain", "true"), ("topic", "status"), ("topic_prefix", "x/")]);
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"up");
        let (data, index, outcome) = map(&adapter, Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1]);
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.get(0).destination(), Some("x/status"));
        assert_eq!(records.get(0).headers().collect::<Vec<_>>(), vec![(":qos", &b"2"[..]), (":retain", &b"true"[..])]);
    }

    #[test]
    fn publish_topics_are_checked() {
        let adapter = mqtt(&[]);
        let cases: [(&str, &str); 4] = [
            ("a/+/b", "topic `a/+/b` contains a wildcard (`+` or `#`), which only subscriptions may use"),
            ("a/#", "topic `a/#` contains a wildcard (`+` or `#`), which only subscriptions may use"),
            ("", "topic `` is empty"),
            ("a\0b", "topic `a\\0b` contains U+0000"),
        ];
        for (topic, message) in cases {
            assert_eq!(
                upstream_error(&adapter, topic, ("x", b"y")),
                (ErrorKind::Malformed, message.to_owned()),
                "{topic:?}"
            );
        }
        let long = "t".repeat(65_536);
        assert_eq!(properties::check_topic_name(&long), Err(format!("topic `{long}` is longer than 65535 bytes")));
        assert_eq!(properties::check_topic_name(&long[1..]), Ok(()));

        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"x");
        let (_, _, outcome) = map(&adapter, Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(0, ErrorKind::Malformed, "no topic: the event has no destination and setting `topic` is unset")]
        );
    }

    #[test]
    fn user_properties_must_be_mqtt_strings() {
        let adapter = mqtt(&[]);
        assert_eq!(
            upstream_error(&adapter, "t", ("blob", &[0xff, 0xfe])),
            (
                ErrorKind::Malformed,
                "header `blob`: the value is not UTF-8; MQTT user properties are UTF-8 strings".to_owned()
            )
        );
        assert_eq!(
            upstream_error(&adapter, "t", ("nul", b"a\0")),
            (
                ErrorKind::Malformed,
                "header `nul`: the value contains U+0000; MQTT user properties are UTF-8 strings".to_owned()
            )
        );
        assert_eq!(
            upstream_error(&adapter, "t", ("reply-to", b"replies/#")),
            (
                ErrorKind::Malformed,
                "header `reply-to`: topic `replies/#` contains a wildcard (`+` or `#`), which only subscriptions \
                 may use"
                    .to_owned()
            )
        );
        assert_eq!(
            upstream_error(&adapter, "t", (":retain", b"true")),
            (
                ErrorKind::Malformed,
                "header `:retain`: names starting with `:` are reserved for broker properties".to_owned()
            )
        );
    }

    #[test]
    fn the_event_id_replaces_a_message_id_header() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("t").id("e1").header("Message-Id", b"stale");
        input.item(Kind::Data).destination("t").header("message-id", b"kept");
        let (data, index, outcome) = map(&mqtt(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 1]);
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.get(0).headers().skip(2).collect::<Vec<_>>(), vec![("message-id", &b"e1"[..])]);
        assert_eq!(records.get(1).headers().skip(2).collect::<Vec<_>>(), vec![("message-id", &b"kept"[..])]);
    }

    #[test]
    fn one_bad_event_fails_alone() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("a").payload(b"1");
        input.item(Kind::Data).destination("b").header("bad", &[0xc3]).payload(b"2");
        input.item(Kind::Data).destination("c").payload(b"3");
        let (data, index, outcome) = map(&mqtt(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 0, 1]);
        assert_eq!(
            errors(&outcome),
            vec![(
                1,
                ErrorKind::Malformed,
                "header `bad`: the value is not UTF-8; MQTT user properties are UTF-8 strings"
            )]
        );
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.len(), 2);
        assert_eq!((records.get(0).destination(), records.get(0).payload()), (Some("a"), &b"1"[..]));
        assert_eq!((records.get(1).destination(), records.get(1).payload()), (Some("c"), &b"3"[..]));
        assert_eq!(records.get(1).headers().len(), 2, "only :qos and :retain");
    }

    #[test]
    fn maps_a_publish_record_to_an_event() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .destination("plant/sensors/t1")
            .content_type("application/json")
            .header(":qos", b"1")
            .header(":retain", b"true")
            .header(":message-expiry-interval", b"60")
            .header(":response-topic", b"plant/replies/c1")
            .header(":correlation-data", &[7, 0xff])
            .header("message-id", b"e1")
            .header("unit", b"celsius")
            .payload(br#"{"t":21.5}"#)
            .client_id("c-99")
            .sequence(99);
        let (data, index, outcome) = map(&mqtt(&[("topic_prefix", "plant/")]), Direction::Downstream, input);
        assert_eq!(outcome.produced, vec![1]);
        let events = Batch::parse(&data, &index).expect("output parses");
        let event = events.get(0);
        assert_eq!(event.destination(), Some("sensors/t1"));
        assert_eq!(event.id(), Some("e1"));
        assert_eq!(event.content_type(), Some("application/json"));
        assert_eq!(event.key(), None);
        assert_eq!(
            event.headers().collect::<Vec<_>>(),
            vec![
                ("mqtt-retain", &b"true"[..]),
                ("reply-to", &b"replies/c1"[..]),
                ("correlation-id", &[7, 0xff][..]),
                ("unit", &b"celsius"[..]),
            ]
        );
        assert_eq!(event.sequence(), 99);
        assert_eq!(event.client_id(), Some("c-99"));
        assert!(!event.is_binary());
    }

    #[test]
    fn a_foreign_response_topic_passes_as_it_is() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("plant/t").header(":response-topic", b"other/replies").payload(&[0x80]);
        let (data, index, _) = map(&mqtt(&[("topic_prefix", "plant/")]), Direction::Downstream, input);
        let events = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(events.get(0).header("reply-to"), Some(&b"other/replies"[..]));
        assert!(events.get(0).is_binary(), "the payload is not UTF-8");
    }

    #[test]
    fn a_record_outside_the_prefix_fails_alone() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("elsewhere/t");
        input.item(Kind::Data).destination("plant/t");
        let (data, index, outcome) = map(&mqtt(&[("topic_prefix", "plant/")]), Direction::Downstream, input);
        assert_eq!(outcome.produced, vec![0, 1]);
        assert_eq!(
            errors(&outcome),
            vec![(0, ErrorKind::Malformed, "topic `elsewhere/t` lies outside setting `topic_prefix` (`plant/`)")]
        );
        let events = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(events.get(0).destination(), Some("t"));
    }

    #[test]
    fn an_event_survives_the_round_trip() {
        let adapter = mqtt(&[("topic_prefix", "app/")]);
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .id("e1")
            .destination("orders/eu")
            .content_type("text/plain")
            .header("correlation-id", b"c1")
            .header("reply-to", b"replies/me")
            .header("x", b"y")
            .payload(b"hello");
        let (data, index, _) = round_trip(&adapter, input);
        let events = Batch::parse(&data, &index).expect("output parses");
        let event = events.get(0);
        assert_eq!(event.id(), Some("e1"));
        assert_eq!(event.destination(), Some("orders/eu"));
        assert_eq!(event.content_type(), Some("text/plain"));
        assert_eq!(
            event.headers().collect::<Vec<_>>(),
            vec![
                ("mqtt-retain", &b"false"[..]),
                ("correlation-id", &b"c1"[..]),
                ("reply-to", &b"replies/me"[..]),
                ("x", &b"y"[..]),
            ]
        );
        assert_eq!(event.payload(), b"hello");
    }

    #[test]
    fn control_items_are_unsupported() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Unsubscribe).destination("a/#");
        let (_, _, outcome) = map(&mqtt(&[]), Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(0, ErrorKind::Unsupported, "the MQTT 5 endpoint maps data items only, not Unsubscribe items")]
        );
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        assert_eq!(configure(&[("qos", "3")]).expect_err("refused"), "setting `qos`: `3` is not one of 0, 1, 2");
        assert_eq!(
            configure(&[("retain", "yes")]).expect_err("refused"),
            "setting `retain`: `yes` is not one of true, false"
        );
        assert_eq!(
            configure(&[("topic_prefix", "a/#/")]).expect_err("refused"),
            "setting `topic_prefix`: `a/#/` must not contain `+`, `#` or U+0000"
        );
        assert_eq!(
            configure(&[("topic", "a/+")]).expect_err("refused"),
            "setting `topic`: topic `a/+` contains a wildcard (`+` or `#`), which only subscriptions may use"
        );
        assert_eq!(
            configure(&[("prefix", "a/")]).expect_err("refused"),
            "unknown setting `prefix` (known: topic_prefix, topic, qos, retain)"
        );
    }
}
