//! The RabbitMQ endpoint adapter: maps routed events to the AMQP 0-9-1 records the host's
//! RabbitMQ client publishes (upstream), and delivered messages to events (downstream).
//!
//! Records follow the record convention of `docs/mappings/endpoints.md`: the record's
//! `destination` is the exchange and its `key` the routing key. `mandatory` is a setting of
//! the host's client, not of this adapter.
//!
//! # Settings
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `exchange` | `""` | The exchange every record is published to; `""` is the default exchange, which routes by queue name. |
//! | `routing_key` | unset | The routing key of every record. Unset: the event's destination, else its key. |
//! | `persistent` | `true` | `true` writes `:delivery-mode` `2` (persistent), `false` writes `1` (transient). |
//!
//! `exchange` and `routing_key` are AMQP short strings: at most 255 bytes.
//!
//! # Upstream: event to record
//!
//! - `destination` = setting `exchange`.
//! - `key` = setting `routing_key`, else the event's destination, else the event's key
//!   (which must then be UTF-8). With none of them, the routing key is empty when `exchange`
//!   is set (fanout and headers exchanges ignore it); on the default exchange the event fails
//!   as malformed, because the broker would route it nowhere. A routing key longer than 255
//!   bytes fails as malformed.
//! - id → `id` (`message-id`), content type → `content_type` (`content-type`); both at most
//!   255 bytes.
//! - `:delivery-mode` = `2` or `1` from setting `persistent`, written first.
//! - `correlation-id` → `:correlation-id`, `reply-to` → `:reply-to`; UTF-8, at most 255 bytes.
//! - Every other header → an entry of the headers table (name at most 255 bytes, value the
//!   bytes as they are). A header whose name starts with `:` fails the event as malformed.
//! - When the routing key comes from the setting or the destination, the event key is not
//!   carried. The payload is kept.
//!
//! # Downstream: record to event
//!
//! - `destination` = the routing key (so that an event published to destination `orders`
//!   comes back from destination `orders`); a routing key that is not UTF-8 fails the record
//!   as malformed. The event has no key.
//! - The exchange (the record's `destination`), when not empty → event header
//!   `rabbitmq-exchange`.
//! - `id`, `content_type` → the event's id and content type; `:correlation-id` →
//!   `correlation-id`, `:reply-to` → `reply-to`, `:type` → `rabbitmq-type`, `:timestamp` →
//!   `rabbitmq-timestamp`. `:delivery-mode`, `:priority`, `:expiration` and every other `:`
//!   property are dropped: they steered delivery and mean nothing to a client.
//! - Headers table entries → headers.
//! - The event is flagged binary when the record is, or when its payload is not UTF-8.
//!
//! Items other than data items fail as unsupported in both directions. In both directions
//! the output keeps the input's flags (binary unless a rule above sets it, ack requested),
//! sequence and client id: the host tracks items by them.

use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Role, Settings, data_only};
use mediation_adapter_sdk::{BatchBuilder, Item};

/// The longest AMQP 0-9-1 short string: one length byte.
const MAX_SHORT_STRING: usize = 255;

/// Event headers carried as message properties, as `(event header, record property)`.
const PROPERTIES: [(&str, &str); 2] = [("correlation-id", ":correlation-id"), ("reply-to", ":reply-to")];

/// Record properties kept on the event, as `(record property, event header)`.
const KEPT_PROPERTIES: [(&str, &str); 4] = [
    (":correlation-id", "correlation-id"),
    (":reply-to", "reply-to"),
    (":type", "rabbitmq-type"),
    (":timestamp", "rabbitmq-timestamp"),
];

/// Maps events to RabbitMQ records and back.
#[derive(Debug)]
pub struct RabbitMq {
    /// The exchange every record is published to.
    exchange: String,
    /// The routing key of every record, replacing the per-event one.
    routing_key: Option<String>,
    /// The `:delivery-mode` value of every record.
    delivery_mode: &'static str,
}

impl Adapter for RabbitMq {
    const ROLE: Role = Role::Endpoint;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["exchange", "routing_key", "persistent"])?;
        let exchange = settings.get_or("exchange", "").to_owned();
        short_string(exchange.as_bytes()).map_err(|problem| format!("setting `exchange`: `{exchange}` {problem}"))?;
        let routing_key = settings.get("routing_key").map(str::to_owned);
        if let Some(routing_key) = &routing_key {
            short_string(routing_key.as_bytes())
                .map_err(|problem| format!("setting `routing_key`: `{routing_key}` {problem}"))?;
        }
        let delivery_mode = match settings.choice("persistent", &["true", "false"], "true")? {
            "false" => "1",
            _ => "2",
        };
        Ok(Self { exchange, routing_key, delivery_mode })
    }

    fn upstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        data_only(item, "the RabbitMQ endpoint")?;
        let routing_key = match (&self.routing_key, item.destination(), item.key()) {
            (Some(routing_key), _, _) => routing_key.as_str(),
            (None, Some(destination), _) => short_string(destination.as_bytes())
                .map_err(|problem| ItemError::malformed(format!("routing key `{destination}` {problem}")))?,
            (None, None, Some(key)) => short_string(key)
                .map_err(|problem| ItemError::malformed(format!("the event key, as routing key, {problem}")))?,
            (None, None, None) if !self.exchange.is_empty() => "",
            (None, None, None) => {
                return Err(ItemError::malformed(
                    "no routing key: the event has no destination or key, setting `routing_key` is unset, and the \
                     default exchange routes by queue name",
                ));
            }
        };
        let mut w = out.copy_tracking(item);
        w.destination(&self.exchange)
            .key(routing_key.as_bytes())
            .payload(item.payload())
            .header(":delivery-mode", self.delivery_mode.as_bytes());
        if let Some(id) = item.id() {
            short_string(id.as_bytes()).map_err(|problem| ItemError::malformed(format!("id `{id}` {problem}")))?;
            w.id(id);
        }
        if let Some(content_type) = item.content_type() {
            short_string(content_type.as_bytes())
                .map_err(|problem| ItemError::malformed(format!("content type `{content_type}` {problem}")))?;
            w.content_type(content_type);
        }
        for (name, value) in item.headers() {
            if name.starts_with(':') {
                return Err(ItemError::malformed(format!(
                    "header `{name}`: names starting with `:` are reserved for broker properties"
                )));
            }
            if let Some((header, property)) = PROPERTIES.iter().find(|(header, _)| name.eq_ignore_ascii_case(header)) {
                short_string(value)
                    .map_err(|problem| ItemError::malformed(format!("header `{header}`: the value {problem}")))?;
                w.header(property, value);
            } else if name.len() > MAX_SHORT_STRING {
                return Err(ItemError::malformed(format!(
                    "header `{name}`: the name is longer than {MAX_SHORT_STRING} bytes"
                )));
            } else {
                w.header(name, value);
            }
        }
        Ok(())
    }

    fn downstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        data_only(item, "the RabbitMQ endpoint")?;
        let routing_key = item
            .key()
            .map(|key| std::str::from_utf8(key).map_err(|_| ItemError::malformed("the routing key is not UTF-8")))
            .transpose()?;
        let binary = item.is_binary() || std::str::from_utf8(item.payload()).is_err();

        let mut w = out.copy_tracking(item);
        w.binary(binary).payload(item.payload());
        if let Some(routing_key) = routing_key {
            w.destination(routing_key);
        }
        if let Some(id) = item.id() {
            w.id(id);
        }
        if let Some(content_type) = item.content_type() {
            w.content_type(content_type);
        }
        if let Some(exchange) = item.destination().filter(|exchange| !exchange.is_empty()) {
            w.header("rabbitmq-exchange", exchange.as_bytes());
        }
        for (name, value) in item.headers() {
            if let Some((_, event_header)) = KEPT_PROPERTIES.iter().find(|(property, _)| *property == name) {
                w.header(event_header, value);
            } else if !name.starts_with(':') {
                w.header(name, value);
            }
        }
        Ok(())
    }
}

/// `value` as an AMQP 0-9-1 short string: UTF-8 (the Rust clients hold short strings as
/// `String`) and at most 255 bytes; or what disqualifies it.
fn short_string(value: &[u8]) -> Result<&str, &'static str> {
    let text = std::str::from_utf8(value).map_err(|_| "is not UTF-8")?;
    if text.len() > MAX_SHORT_STRING {
        return Err("is longer than 255 bytes");
    }
    Ok(text)
}

mediation_adapter_sdk::export_adapter!(RabbitMq);

#[cfg(test)]
mod tests {
    use super::*;
    use mediation_adapter_sdk::guest::testing::{self, errors, map, round_trip};
    use mediation_adapter_sdk::guest::{Direction, ErrorKind};
    use mediation_adapter_sdk::{Batch, Kind};

    fn rabbit(settings: &[(&str, &str)]) -> RabbitMq {
        configure(settings).expect("valid settings")
    }

    fn configure(settings: &[(&str, &str)]) -> Result<RabbitMq, String> {
        testing::configure(settings)
    }

    #[test]
    fn maps_an_event_to_a_record_on_the_default_exchange() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .id("e1")
            .destination("orders")
            .key(b"not carried")
            .content_type("application/json")
            .header("Correlation-Id", b"c1")
            .header("reply-to", b"amq.rabbitmq.reply-to")
            .header("x-region", b"eu")
            .header("blob", &[0, 0xff])
            .payload(br#"{"n":1}"#)
            .sequence(8)
            .client_id("c-8")
            .ack_requested();
        let (data, index, outcome) = map(&rabbit(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1]);
        assert!(outcome.errors.is_empty());
        let records = Batch::parse(&data, &index).expect("output parses");
        let record = records.get(0);
        assert_eq!(record.destination(), Some(""));
        assert_eq!(record.key(), Some(&b"orders"[..]));
        assert_eq!(record.id(), Some("e1"));
        assert_eq!(record.content_type(), Some("application/json"));
        assert_eq!(
            record.headers().collect::<Vec<_>>(),
            vec![
                (":delivery-mode", &b"2"[..]),
                (":correlation-id", &b"c1"[..]),
                (":reply-to", &b"amq.rabbitmq.reply-to"[..]),
                ("x-region", &b"eu"[..]),
                ("blob", &[0, 0xff][..]),
            ]
        );
        assert_eq!(record.payload(), br#"{"n":1}"#);
        assert_eq!(record.sequence(), 8);
        assert_eq!(record.client_id(), Some("c-8"));
        assert!(record.ack_requested());
    }

    #[test]
    fn the_routing_key_comes_from_setting_then_destination_then_key() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("orders.eu").key(b"k");
        input.item(Kind::Data).key(b"by-key");
        input.item(Kind::Data);
        let (data, index, outcome) = map(&rabbit(&[("exchange", "events")]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 1, 1]);
        let records = Batch::parse(&data, &index).expect("output parses");
        let keys: Vec<_> = records.iter().map(|r| (r.destination(), r.key())).collect();
        assert_eq!(
            keys,
            vec![
                (Some("events"), Some(&b"orders.eu"[..])),
                (Some("events"), Some(&b"by-key"[..])),
                (Some("events"), Some(&b""[..])),
            ]
        );

        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("ignored");
        let fixed = rabbit(&[("exchange", "amq.topic"), ("routing_key", "audit.all"), ("persistent", "false")]);
        let (data, index, _) = map(&fixed, Direction::Upstream, input);
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.get(0).key(), Some(&b"audit.all"[..]));
        assert_eq!(records.get(0).header(":delivery-mode"), Some(&b"1"[..]));
    }

    #[test]
    fn the_default_exchange_needs_a_routing_key() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).payload(b"x");
        let (_, _, outcome) = map(&rabbit(&[]), Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(
                0,
                ErrorKind::Malformed,
                "no routing key: the event has no destination or key, setting `routing_key` is unset, and the \
                 default exchange routes by queue name"
            )]
        );
    }

    #[test]
    fn short_strings_are_checked() {
        let long = "r".repeat(256);
        let cases: [(BatchBuilder, String); 4] = [
            (
                {
                    let mut b = BatchBuilder::default();
                    b.item(Kind::Data).destination(&long);
                    b
                },
                format!("routing key `{long}` is longer than 255 bytes"),
            ),
            (
                {
                    let mut b = BatchBuilder::default();
                    b.item(Kind::Data).key(&[0xff]);
                    b
                },
                "the event key, as routing key, is not UTF-8".to_owned(),
            ),
            (
                {
                    let mut b = BatchBuilder::default();
                    b.item(Kind::Data).destination("q").header("reply-to", &[0xc3]);
                    b
                },
                "header `reply-to`: the value is not UTF-8".to_owned(),
            ),
            (
                {
                    let mut b = BatchBuilder::default();
                    b.item(Kind::Data).destination("q").header(&long, b"v");
                    b
                },
                format!("header `{long}`: the name is longer than 255 bytes"),
            ),
        ];
        for (input, message) in cases {
            let (_, _, outcome) = map(&rabbit(&[]), Direction::Upstream, input);
            assert_eq!(errors(&outcome), vec![(0, ErrorKind::Malformed, message.as_str())]);
        }
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination(&long[1..]);
        let (_, _, outcome) = map(&rabbit(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1], "255 bytes fit");
    }

    #[test]
    fn one_bad_event_fails_alone() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("a").id("1");
        input.item(Kind::Data).destination("b").id("2").header(":priority", b"9");
        input.item(Kind::Data).destination("c").id("3");
        let (data, index, outcome) = map(&rabbit(&[]), Direction::Upstream, input);
        assert_eq!(outcome.produced, vec![1, 0, 1]);
        assert_eq!(
            errors(&outcome),
            vec![(
                1,
                ErrorKind::Malformed,
                "header `:priority`: names starting with `:` are reserved for broker properties"
            )]
        );
        let records = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(records.len(), 2);
        assert_eq!((records.get(0).key(), records.get(0).id()), (Some(&b"a"[..]), Some("1")));
        assert_eq!((records.get(1).key(), records.get(1).id()), (Some(&b"c"[..]), Some("3")));
        assert_eq!(records.get(1).headers().collect::<Vec<_>>(), vec![(":delivery-mode", &b"2"[..])]);
    }

    #[test]
    fn maps_a_delivery_to_an_event() {
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .destination("events")
            .key(b"orders.eu")
            .id("m-1")
            .content_type("text/plain")
            .header(":delivery-mode", b"2")
            .header(":priority", b"5")
            .header(":expiration", b"60000")
            .header(":correlation-id", b"c1")
            .header(":reply-to", b"replies")
            .header(":type", b"order.created")
            .header(":timestamp", b"1700000000000")
            .header("x-region", b"eu")
            .payload(b"hello")
            .client_id("c-3")
            .sequence(3);
        let (data, index, outcome) = map(&rabbit(&[]), Direction::Downstream, input);
        assert_eq!(outcome.produced, vec![1]);
        let events = Batch::parse(&data, &index).expect("output parses");
        let event = events.get(0);
        assert_eq!(event.destination(), Some("orders.eu"));
        assert_eq!(event.key(), None);
        assert_eq!(event.id(), Some("m-1"));
        assert_eq!(event.content_type(), Some("text/plain"));
        assert_eq!(
            event.headers().collect::<Vec<_>>(),
            vec![
                ("rabbitmq-exchange", &b"events"[..]),
                ("correlation-id", &b"c1"[..]),
                ("reply-to", &b"replies"[..]),
                ("rabbitmq-type", &b"order.created"[..]),
                ("rabbitmq-timestamp", &b"1700000000000"[..]),
                ("x-region", &b"eu"[..]),
            ]
        );
        assert_eq!(event.sequence(), 3);
        assert_eq!(event.client_id(), Some("c-3"));
        assert!(!event.is_binary());
    }

    #[test]
    fn a_delivery_with_a_binary_routing_key_fails_alone() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).destination("").key(&[0xff]);
        input.item(Kind::Data).destination("").key(b"ok").payload(&[0xfe]);
        let (data, index, outcome) = map(&rabbit(&[]), Direction::Downstream, input);
        assert_eq!(outcome.produced, vec![0, 1]);
        assert_eq!(errors(&outcome), vec![(0, ErrorKind::Malformed, "the routing key is not UTF-8")]);
        let events = Batch::parse(&data, &index).expect("output parses");
        assert_eq!(events.get(0).destination(), Some("ok"));
        assert_eq!(events.get(0).headers().len(), 0, "no header for the default exchange");
        assert!(events.get(0).is_binary());
    }

    #[test]
    fn an_event_survives_the_round_trip() {
        let adapter = rabbit(&[]);
        let mut input = BatchBuilder::default();
        input
            .item(Kind::Data)
            .id("e1")
            .destination("orders")
            .content_type("text/plain")
            .header("correlation-id", b"c1")
            .header("x", b"y")
            .payload(b"hello");
        let (data, index, _) = round_trip(&adapter, input);
        let events = Batch::parse(&data, &index).expect("output parses");
        let event = events.get(0);
        assert_eq!(event.id(), Some("e1"));
        assert_eq!(event.destination(), Some("orders"));
        assert_eq!(event.content_type(), Some("text/plain"));
        assert_eq!(event.headers().collect::<Vec<_>>(), vec![("correlation-id", &b"c1"[..]), ("x", &b"y"[..])]);
        assert_eq!(event.payload(), b"hello");
    }

    #[test]
    fn control_items_are_unsupported() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Resume).destination("q");
        let (_, _, outcome) = map(&rabbit(&[]), Direction::Upstream, input);
        assert_eq!(
            errors(&outcome),
            vec![(0, ErrorKind::Unsupported, "the RabbitMQ endpoint maps data items only, not Resume items")]
        );
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        assert_eq!(
            configure(&[("persistent", "yes")]).expect_err("refused"),
            "setting `persistent`: `yes` is not one of true, false"
        );
        let long = "x".repeat(256);
        assert_eq!(
            configure(&[("exchange", &long)]).expect_err("refused"),
            format!("setting `exchange`: `{long}` is longer than 255 bytes")
        );
        assert_eq!(
            configure(&[("routing_key", &long)]).expect_err("refused"),
            format!("setting `routing_key`: `{long}` is longer than 255 bytes")
        );
        assert_eq!(
            configure(&[("mandatory", "true")]).expect_err("refused"),
            "unknown setting `mandatory` (known: exchange, routing_key, persistent)"
        );
    }
}
